//! The Grafana dashboard (packaging/grafana/eventsd.json) against a real Prometheus
//! (Debian's `prometheus`, which `scripts/test` installs) scraping a real daemon under a
//! small load: every query of its panels, annotations and variables, with `$job`,
//! `$instance` and `$__rate_interval` as Grafana would substitute them, must return a
//! series, not an error and not nothing. Two nodes are scraped, one of them a cluster
//! node on a real `redis-server`, so that the cluster panels have their families too.
//! The build annotation fires across an upgrade to a binary with another commit label.

mod common;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::redis::RedisServer;
use common::sinks::HttpSink;
use common::{Daemon, SECOND, free_port, request, wait_for};
use serde_json::Value;

const JOB: &str = "eventsd";
/// What Grafana gives `$__rate_interval` at a 1 s scrape interval is 4 s at least; 10 s
/// leaves room for a late scrape on a loaded machine.
const RATE_INTERVAL: &str = "10s";

/// A `prometheus` server on a free loopback port scraping `targets` every second, its
/// database in a temp folder; killed when dropped (also when the test fails).
struct Prometheus {
    address: SocketAddr,
    process: Child,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(targets: &[SocketAddr]) -> Prometheus {
        let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n  - job_name: {JOB}\n    static_configs:\n\
                 \x20     - targets: [{}]\n",
                targets.join(", ")
            ),
        )
        .unwrap();
        let address: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let process = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={address}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("`prometheus` (Debian's package `prometheus`) is installed");
        let prometheus = Prometheus {
            address,
            process,
            _dir: dir,
        };
        wait_for("prometheus to answer", 20 * SECOND, || {
            prometheus
                .get("/-/ready")
                .is_some_and(|(status, _)| status == 200)
        });
        prometheus
    }

    /// `GET path` over HTTP/1.0 (the reply ends with the connection, never chunked).
    fn get(&self, path: &str) -> Option<(u16, String)> {
        let raw = format!("GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", self.address);
        let response = request(self.address, &raw).ok()?;
        Some((response.status, response.body))
    }

    /// The API's answer to an instant query: its result, or the error it gives.
    fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let path = format!("/api/v1/query?query={}", percent_encoded(expr));
        let (_, body) = self.get(&path).ok_or("no answer from prometheus")?;
        let reply: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
        match reply["status"].as_str() {
            Some("success") => Ok(reply["data"]["result"]
                .as_array()
                .cloned()
                .unwrap_or_default()),
            _ => Err(format!("{}: {}", reply["errorType"], reply["error"])),
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

fn percent_encoded(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(byte).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

/// Every PromQL expression of the dashboard, with where it is: panels' targets and
/// annotations as they are, query variables' `label_values(SELECTOR, label)` as
/// `SELECTOR` (Grafana's function lists the label's values among its series).
fn dashboard_queries() -> Vec<(String, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/grafana/eventsd.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap().to_string();
            queries.push((format!("panel {}", panel["title"]), expr));
        }
    }
    for annotation in dashboard["annotations"]["list"].as_array().unwrap() {
        let expr = annotation["expr"].as_str().unwrap().to_string();
        queries.push((format!("annotation {}", annotation["name"]), expr));
    }
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        let Some(definition) = variable["definition"].as_str() else {
            continue;
        };
        let selector = definition
            .strip_prefix("label_values(")
            .and_then(|rest| rest.rsplit_once(','))
            .map(|(selector, _)| selector.to_string())
            .unwrap_or_else(|| panic!("variable {definition} is not label_values(…)"));
        queries.push((format!("variable {}", variable["name"]), selector));
    }
    queries
}

/// Each selector is filtered by both variables and each range is `$__rate_interval`: a
/// panel that ignores `$instance` would show every node while one is picked.
fn assert_filtered_by_the_variables(place: &str, expr: &str) {
    for selector in expr.split('{').skip(1) {
        let selector = selector.split('}').next().unwrap();
        assert!(
            selector.contains("job=~\"$job\"") && selector.contains("instance=~\"$instance\""),
            "{place}: `{expr}` has a selector without $job and $instance"
        );
    }
    for range in expr.split('[').skip(1) {
        assert!(
            range.starts_with("$__rate_interval]"),
            "{place}: `{expr}` has a fixed range"
        );
    }
}

fn substituted(expr: &str, instance: &str) -> String {
    expr.replace("$__rate_interval", RATE_INTERVAL)
        .replace("$job", JOB)
        .replace("$instance", instance)
}

/// A node of a one-Redis cluster, serving with Redis reached.
fn cluster_node(redis: &RedisServer) -> Daemon {
    let daemon = Daemon::run(&format!(
        "[cluster]\nmode = \"standalone\"\nurls = [\"{}\"]\nnode_name = \"a\"\n",
        redis.url()
    ));
    wait_for("the node reaching Redis", 10 * SECOND, || {
        daemon
            .status()
            .is_some_and(|s| s["cluster"]["redis_reachable"] == true)
    });
    daemon
}

/// Acceptance (issue 29): each query of the dashboard returns a series from a real
/// Prometheus scraping two nodes under load; none errs, none stays empty.
#[test]
fn every_dashboard_query_returns_a_series_from_a_real_prometheus() {
    let queries = dashboard_queries();
    // A variable lists what the others let through: `$instance` the instances of `$job`.
    for (place, expr) in queries
        .iter()
        .filter(|(place, _)| !place.starts_with("variable"))
    {
        assert_filtered_by_the_variables(place, expr);
    }
    // Two nodes, as `$instance` = All picks them: a cluster node has the cluster
    // families, and only a node counting alone holds its watchers' keys itself (a
    // cluster's are in Redis: `eventsd_watcher_keys` has no series there).
    let redis = RedisServer::start();
    let nodes = [Daemon::run(""), cluster_node(&redis)];
    let sink = HttpSink::answering(&[("/fail", 500)]);
    let slow = HttpSink::start(600 * SECOND);
    for node in &nodes {
        common::rest::put_under_load(node, &sink, &slow);
    }
    wait_for("deliveries taken and refused", 10 * SECOND, || {
        sink.requests_to("/ok") >= 2 && sink.requests_to("/fail") >= 2
    });
    let targets: Vec<SocketAddr> = nodes.iter().map(Daemon::address).collect();
    let prometheus = Prometheus::start(&targets);
    let instance = targets
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("|");

    let deadline = Instant::now() + 40 * SECOND;
    let mut failures = Vec::new();
    for (place, expr) in &queries {
        let expr = substituted(expr, &instance);
        let outcome = loop {
            match prometheus.query(&expr) {
                Ok(series) if !series.is_empty() => break Ok(()),
                Err(error) => break Err(error),
                Ok(_) if Instant::now() > deadline => break Err("no series".to_string()),
                Ok(_) => std::thread::sleep(Duration::from_millis(250)),
            }
        };
        if let Err(error) = outcome {
            failures.push(format!("{place}: `{expr}`: {error}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The "New build" annotation: a build an instance serves that it did not `offset` ago.
fn build_annotation(offset: &str, instance: &str) -> String {
    let (place, expr) = dashboard_queries()
        .into_iter()
        .find(|(place, _)| place.starts_with("annotation \"New build\""))
        .expect("the dashboard has a \"New build\" annotation");
    assert!(expr.contains("offset 10m"), "{place}: `{expr}`");
    substituted(
        &expr.replace("offset 10m", &format!("offset {offset}")),
        instance,
    )
}

/// The `commit` label of the build `daemon` serves.
fn served_commit(daemon: &Daemon) -> String {
    let metrics = daemon.get("/metrics").unwrap().body;
    let line = metrics
        .lines()
        .find(|line| line.starts_with("eventsd_build_info{"))
        .expect("eventsd_build_info is served");
    let commit = line
        .split("commit=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next());
    commit.expect("eventsd_build_info has a commit").to_string()
}

/// `binary` with every occurrence of `commit` (a git hash: `--version` and
/// `eventsd_build_info` have it) changed to another of the same length: the build of
/// another commit, without a second build of the crate.
fn as_built_from_another_commit(binary: &[u8], commit: &str) -> (Vec<u8>, String) {
    assert!(
        commit.len() >= 7 && commit.bytes().all(|b| b.is_ascii_hexdigit()),
        "the binary under test is built from a git checkout (commit {commit:?})"
    );
    let other: String = commit
        .chars()
        .map(|c| if c == 'f' { '0' } else { 'f' })
        .collect();
    let mut patched = binary.to_vec();
    let mut found = 0;
    let mut at = 0;
    while let Some(i) = patched[at..]
        .windows(commit.len())
        .position(|w| w == commit.as_bytes())
    {
        patched[at + i..at + i + commit.len()].copy_from_slice(other.as_bytes());
        at += i + commit.len();
        found += 1;
    }
    assert!(found > 0, "commit {commit} is not in the binary");
    (patched, other)
}

/// Acceptance (issue 29): the build annotation returns nothing while a node serves the
/// same build, and a series across an upgrade to a binary with another commit label. Its
/// 10-minute window is shortened to 3 s here, so both show within seconds.
#[test]
fn the_build_annotation_fires_across_an_upgrade_to_another_commit() {
    let mut daemon = Daemon::new("");
    daemon.binary = daemon.path("eventsd");
    std::fs::copy(common::BINARY, &daemon.binary).unwrap();
    daemon.spawn_foreground(&[]);
    daemon.wait_ready();
    let prometheus = Prometheus::start(&[daemon.address()]);
    let instance = daemon.address().to_string();
    let annotation = build_annotation("3s", &instance);

    let older = substituted(
        "eventsd_build_info{instance=~\"$instance\"} offset 3s",
        &instance,
    );
    wait_for("3 s of scrapes", 20 * SECOND, || {
        prometheus
            .query(&older)
            .is_ok_and(|series| !series.is_empty())
    });
    assert_eq!(prometheus.query(&annotation), Ok(vec![]), "the same build");

    let (next, commit) = as_built_from_another_commit(
        &std::fs::read(common::BINARY).unwrap(),
        &served_commit(&daemon),
    );
    let staged = daemon.binary.with_extension("next");
    std::fs::write(&staged, next).unwrap();
    std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&staged, &daemon.binary).unwrap();
    let upgrade = daemon.cli(&["upgrade"]);
    assert!(upgrade.status.success(), "{}", common::stderr(&upgrade));
    assert_eq!(served_commit(&daemon), commit);

    wait_for("the annotation on the new build", 20 * SECOND, || {
        prometheus.query(&annotation).is_ok_and(|series| {
            series
                .iter()
                .any(|s| s["metric"]["commit"] == commit.as_str())
        })
    });
}
