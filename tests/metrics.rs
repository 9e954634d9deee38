//! `/metrics` as a dashboard reads it: the families the shipped Grafana dashboard
//! queries, request latency by route, the build, the master's process figures, and worker
//! series that keep their labels when a worker is replaced.

mod common;

use std::collections::BTreeSet;

use common::sinks::HttpSink;
use common::{Daemon, SECOND, wait_for};
use nix::sys::signal::{Signal, kill};

fn metrics(daemon: &Daemon) -> String {
    let response = daemon.get("/metrics").unwrap();
    assert_eq!(response.status, 200);
    response.body
}

/// Every family `/metrics` declares (`# TYPE name kind`).
fn families(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[test]
fn latency_build_and_process_figures_are_served() {
    let daemon = Daemon::run("");
    for _ in 0..3 {
        assert_eq!(daemon.get("/health").unwrap().status, 200);
    }
    wait_for("the requests in the latency histogram", 5 * SECOND, || {
        let text = metrics(&daemon);
        text.lines().any(|l| {
            l.starts_with(
                "eventsd_http_request_duration_seconds_bucket{route=\"/health\",le=\"+Inf\"} ",
            ) && l.rsplit(' ').next().and_then(|n| n.parse::<u64>().ok()) >= Some(3)
        })
    });
    let text = metrics(&daemon);
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        text.contains(&format!(
            "eventsd_build_info{{version=\"{version}\",commit=\""
        )),
        "{text}"
    );
    // CPU seconds may still read 0 (under a clock tick); the others cannot. The workers'
    // are read from /proc by the master, labelled by slot.
    for series in [
        "process_resident_memory_bytes",
        "process_start_time_seconds",
        "process_open_fds",
        "eventsd_worker_start_time_seconds{slot=\"0\"}",
        "eventsd_worker_open_fds{slot=\"1\"}",
    ] {
        let value: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{series} ")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{series} missing: {text}"));
        assert!(value > 0.0, "{series} is {value}");
    }
    for series in [
        "process_cpu_seconds_total ",
        "eventsd_worker_cpu_seconds_total{slot=\"0\"} ",
    ] {
        assert!(text.lines().any(|l| l.starts_with(series)), "{text}");
    }
}

#[test]
fn worker_series_keep_their_slot_when_a_worker_is_replaced() {
    let daemon = Daemon::run("[workers]\nmin = 2\nmax = 2\n");
    let slots = |text: &str| -> BTreeSet<String> {
        text.lines()
            .filter_map(|l| l.strip_prefix("eventsd_worker_resident_bytes{slot=\""))
            .filter_map(|rest| rest.split('"').next())
            .map(str::to_string)
            .collect()
    };
    let before = slots(&metrics(&daemon));
    assert_eq!(before, BTreeSet::from(["0".to_string(), "1".to_string()]));
    let victim = daemon.serving_workers()[0];
    kill(victim, Signal::SIGKILL).unwrap();
    wait_for("the replacement", 10 * SECOND, || {
        let workers = daemon.serving_workers();
        workers.len() == 2 && !workers.contains(&victim)
    });
    assert_eq!(slots(&metrics(&daemon)), before, "the series churned");
}

/// Every metric the shipped dashboard queries is one `/metrics` serves (the cluster
/// panels' `eventsd_cluster_*` only on a node with `[cluster]`: tests/dashboard.rs has one,
/// and a real Prometheus evaluating every query).
#[test]
fn every_metric_the_grafana_dashboard_queries_is_served() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/packaging/grafana/eventsd.json"
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut exprs = Vec::new();
    collect_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() >= 10, "{exprs:?}");
    let daemon = Daemon::run("");
    let served = families(&metrics(&daemon));
    for expr in &exprs {
        let names = metric_names(expr).into_iter();
        for name in names.filter(|name| !name.starts_with("eventsd_cluster_")) {
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix).filter(|f| served.contains(*f)))
                .unwrap_or(&name);
            assert!(
                served.contains(family),
                "`{name}` in `{expr}` is not served"
            );
        }
    }
}

fn collect_exprs(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value.as_str()) {
                    ("expr", Some(expr)) => out.push(expr.to_string()),
                    _ => collect_exprs(value, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

/// The metric names a PromQL expression reads: `eventsd_…` and `process_…` words.
fn metric_names(expr: &str) -> Vec<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("eventsd_") || word.starts_with("process_"))
        .map(str::to_string)
        .collect()
}

/// The exposition passes Prometheus' own linter (`promtool`, Debian's `prometheus`
/// package, which `.ci/run` installs), loaded: watchers with keys and firings, outcomes
/// delivered and failed attempts, firings pending, the delivery histogram observed.
#[test]
fn the_exposition_passes_promtool_check_metrics() {
    let daemon = Daemon::run("");
    let sink = HttpSink::answering(&[("/fail", 500)]);
    let slow = HttpSink::start(60 * SECOND);
    common::rest::put_under_load(&daemon, &sink, &slow);
    let mut text = String::new();
    wait_for("every labelled family with a series", 20 * SECOND, || {
        text = metrics(&daemon);
        [
            "eventsd_watcher_firings_total{",
            "eventsd_watcher_keys{",
            "eventsd_action_outcomes_total{action=\"webhook\",result=\"delivered\"}",
            "eventsd_action_attempts_failed_total{action=\"webhook\",error=\"http_5xx\"}",
            "eventsd_action_pending{",
            "eventsd_action_delivery_seconds_bucket{",
            "eventsd_http_request_duration_seconds_bucket{",
        ]
        .iter()
        .all(|series| {
            text.lines()
                .any(|l| l.starts_with(series) && !l.ends_with(" 0"))
        })
    });
    let findings = common::promtool_findings(&text);
    assert!(findings.is_empty(), "{findings}\n{text}");
}

/// Watcher names are unique only within a type: two types' `storm` watchers are two
/// series (one series for both would have Prometheus keep either at random).
#[test]
fn watchers_of_the_same_name_on_two_types_are_two_series() {
    let daemon = Daemon::run("");
    let storm = serde_json::json!({"name": "storm", "threshold": 1,
        "aggregator": {"type": "single"}, "action": {"type": "null"}});
    for event in ["shop", "blog"] {
        common::rest::register_watcher(&daemon, event, &storm);
    }
    for _ in 0..2 {
        assert_eq!(daemon.post("/event/shop/", "{}").status, 200);
    }
    assert_eq!(daemon.post("/event/blog/", "{}").status, 200);
    wait_for("both watchers counted", 5 * SECOND, || {
        daemon.metric("eventsd_watcher_keys{event=\"shop\",watcher=\"storm\"}") == Some(1)
            && daemon.metric("eventsd_watcher_keys{event=\"blog\",watcher=\"storm\"}") == Some(1)
    });
    assert_eq!(
        daemon.metric("eventsd_watcher_firings_total{event=\"shop\",watcher=\"storm\"}"),
        Some(1)
    );
    assert_eq!(
        daemon.metric("eventsd_watcher_firings_total{event=\"blog\",watcher=\"storm\"}"),
        None,
        "blog's storm never crossed"
    );
    let text = metrics(&daemon);
    let samples: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' ').map(|(series, _)| series))
        .collect();
    let distinct: BTreeSet<&str> = samples.iter().copied().collect();
    assert_eq!(samples.len(), distinct.len(), "a series twice: {text}");
    let findings = common::promtool_findings(&text);
    assert!(findings.is_empty(), "{findings}\n{text}");
}
