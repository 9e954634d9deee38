//! Watchers (watchers.md) against the real binary: workers count, the master decides,
//! once per crossing however many workers saw the events.

mod common;

use std::time::Duration;

use common::rest::{register_watcher, webhook};
use common::sinks::HttpSink;
use common::{Daemon, SECOND, config_text, post_concurrently, wait_for};
use nix::sys::signal::Signal;
use serde_json::{Value, json};

const FOUR_WORKERS: &str = "[workers]\nmin = 4\nmax = 4\n";

fn watched(daemon: &Daemon, watcher: serde_json::Value) {
    assert_eq!(daemon.post("/event/", r#"{"type": "logins"}"#).status, 201);
    let response = daemon.post("/event/logins/watcher/", &watcher.to_string());
    assert_eq!(response.status, 201, "{response:?}");
}

/// Posts every payload, from 8 concurrent clients so that the workers share them.
fn post_events(daemon: &Daemon, payloads: &[serde_json::Value]) {
    let bodies: Vec<String> = payloads.iter().map(|p| p.to_string()).collect();
    post_concurrently(daemon.address(), "logins", &bodies, 8);
}

/// Waits until the master has counted `total` events of `logins`.
/// 60 s: a million events take the master seconds on a loaded two-core machine.
fn wait_counted(daemon: &Daemon, total: u64) {
    wait_counted_within(daemon, total, 60 * SECOND);
}

fn wait_counted_within(daemon: &Daemon, total: u64, deadline: Duration) {
    wait_for(&format!("{total} events counted"), deadline, || {
        daemon.metric("eventsd_events_counted_total{type=\"logins\"}") == Some(total)
    });
}

fn firings(daemon: &Daemon, watcher: &str) -> u64 {
    daemon
        .metric(&format!(
            "eventsd_watcher_firings_total{{event=\"logins\",watcher=\"{watcher}\"}}"
        ))
        .unwrap_or(0)
}

#[test]
fn fifty_one_events_over_four_workers_fire_once_fifty_do_not_and_the_count_restarts() {
    let daemon = Daemon::run(FOUR_WORKERS);
    watched(
        &daemon,
        json!({"name": "storm", "threshold": 50, "aggregator": {"type": "single"}, "action": {"type": "null"}}),
    );
    let event = json!({"user": "x"});

    post_events(&daemon, &vec![event.clone(); 50]);
    wait_counted(&daemon, 50);
    assert_eq!(firings(&daemon, "storm"), 0, "50 events do not exceed 50");

    post_events(&daemon, std::slice::from_ref(&event));
    wait_counted(&daemon, 51);
    assert_eq!(firings(&daemon, "storm"), 1);

    post_events(&daemon, &vec![event.clone(); 50]);
    wait_counted(&daemon, 101);
    assert_eq!(
        firings(&daemon, "storm"),
        1,
        "the count restarted after the firing"
    );
    post_events(&daemon, &[event]);
    wait_counted(&daemon, 102);
    assert_eq!(firings(&daemon, "storm"), 2);

    // Per-worker figures come with heartbeats: wait until they cover every event.
    wait_for("heartbeats to report every event", 5 * SECOND, || {
        daemon.metric("eventsd_events_collected_total{type=\"logins\"}") == Some(102)
    });
    let served = daemon.get("/metrics").unwrap().body;
    let busy_workers = served
        .lines()
        .filter(|l| l.starts_with("eventsd_worker_requests_total") && !l.ends_with(" 0"))
        .count();
    assert!(
        busy_workers > 1,
        "the events did not spread over the workers"
    );
}

#[test]
fn a_fields_watcher_fires_only_for_the_key_that_crossed_naming_its_values() {
    let daemon = Daemon::run(FOUR_WORKERS);
    watched(
        &daemon,
        json!({"name": "per-ip", "threshold": 2,
        "aggregator": {"type": "fields", "fields": ["ip", "user.id"]}, "action": {"type": "null"}}),
    );
    let a = json!({"ip": "10.0.0.1", "user": {"id": 7}});
    let b = json!({"ip": "10.0.0.2", "user": {"id": 7}});
    post_events(&daemon, &[a.clone(), b.clone(), a.clone(), b, a]);
    wait_counted(&daemon, 5);
    assert_eq!(firings(&daemon, "per-ip"), 1);
    let log = daemon.log();
    assert!(
        log.contains(
            "watcher `per-ip` fired: Event `logins` repeated 3 times for ip=\"10.0.0.1\", user.id=7"
        ),
        "{log}"
    );
    assert!(
        !log.contains("10.0.0.2\", user.id=7"),
        "the other key fired"
    );
}

/// Watchers counting by the same fields travel together from the workers to the master
/// (a key once for its set), and each keeps its own count and threshold.
#[test]
fn watchers_that_share_their_fields_keep_their_own_counts_and_thresholds() {
    let daemon = Daemon::run(FOUR_WORKERS);
    let watcher = |name: &str, threshold: u64, field: &str| {
        json!({"name": name, "threshold": threshold,
               "aggregator": {"type": "fields", "fields": [field]}, "action": {"type": "null"}})
    };
    watched(&daemon, watcher("ip-over-2", 2, "ip"));
    for also in [
        watcher("ip-over-4", 4, "ip"),
        watcher("user-over-2", 2, "user"),
    ] {
        let response = daemon.post("/event/logins/watcher/", &also.to_string());
        assert_eq!(response.status, 201, "{response:?}");
    }
    let a = json!({"ip": "10.0.0.1", "user": "u1"});
    let b = json!({"ip": "10.0.0.2", "user": "u2"});
    let mut events = vec![a; 5];
    events.extend(vec![b; 3]);
    post_events(&daemon, &events);
    wait_counted(&daemon, 8);
    // However the workers batch them: 5 and 3 events cross 2 once each, 5 crosses 4 once.
    assert_eq!(firings(&daemon, "ip-over-2"), 2);
    assert_eq!(firings(&daemon, "ip-over-4"), 1);
    assert_eq!(firings(&daemon, "user-over-2"), 2);
    for name in ["ip-over-2", "ip-over-4", "user-over-2"] {
        let keys = daemon.metric(&format!(
            "eventsd_watcher_keys{{event=\"logins\",watcher=\"{name}\"}}"
        ));
        assert_eq!(keys, Some(2), "{name}");
    }
}

#[test]
fn a_window_forgets_events_older_than_it() {
    let daemon = Daemon::run("");
    watched(
        &daemon,
        json!({"name": "burst", "threshold": 2, "window_secs": 3,
        "aggregator": {"type": "single"}, "action": {"type": "null"}}),
    );
    post_events(&daemon, &[json!({}), json!({})]);
    wait_counted(&daemon, 2);
    // The behaviour under test is time passing: let the window slide past those two.
    // Buckets are whole seconds, so the window keeps the events of the last 3 clock
    // seconds: 3 s of sleep drop these two, and the three events below, posted within
    // far less than 2 s, always share the window (a 1 s window would split them
    // whenever a second boundary fell between them).
    std::thread::sleep(Duration::from_millis(3200));
    post_events(&daemon, &[json!({})]);
    wait_counted(&daemon, 3);
    assert_eq!(
        firings(&daemon, "burst"),
        0,
        "old events were still counted"
    );
    post_events(&daemon, &[json!({}), json!({})]);
    wait_counted(&daemon, 5);
    assert_eq!(firings(&daemon, "burst"), 1);
}

#[test]
fn a_cooldown_suppresses_repeats() {
    let daemon = Daemon::run("");
    watched(
        &daemon,
        json!({"name": "calm", "threshold": 1, "cooldown_secs": 3600,
        "aggregator": {"type": "single"}, "action": {"type": "null"}}),
    );
    post_events(&daemon, &[json!({}), json!({})]);
    wait_counted(&daemon, 2);
    assert_eq!(firings(&daemon, "calm"), 1);
    post_events(&daemon, &vec![json!({}); 6]);
    wait_counted(&daemon, 8);
    assert_eq!(
        firings(&daemon, "calm"),
        1,
        "fired again during its cooldown"
    );
}

#[test]
fn under_load_every_collected_event_is_counted() {
    let daemon = Daemon::run(FOUR_WORKERS);
    watched(
        &daemon,
        json!({"name": "storm", "threshold": 1000000,
        "aggregator": {"type": "fields", "fields": ["field1", "field2"]}, "action": {"type": "null"}}),
    );
    let body = json!({"message": "m", "field1": "f1", "field2": "f2"}).to_string();
    let acknowledged = post_concurrently(daemon.address(), "logins", &vec![body; 1200], 4);
    let acknowledged = acknowledged.len() as u64;
    assert_eq!(acknowledged, 1200);
    wait_for("collected and counted to settle", 10 * SECOND, || {
        daemon.metric("eventsd_events_collected_total{type=\"logins\"}") == Some(acknowledged)
            && daemon.metric("eventsd_events_counted_total{type=\"logins\"}") == Some(acknowledged)
    });
}

#[test]
fn a_million_distinct_keys_leave_the_master_bounded_by_max_keys() {
    let daemon = Daemon::run("[watchers]\nmax_keys = 1000\n[server]\nmax_body_bytes = 4194304\n");
    watched(
        &daemon,
        json!({"name": "per-ip", "threshold": 1000000000,
        "aggregator": {"type": "fields", "fields": ["ip"]}, "action": {"type": "null"}}),
    );
    let master = daemon.master_pid();
    let rss_before = resident_kib(master);
    let lines_per_batch = 50_000;
    for batch in 0..20 {
        let body: String = (0..lines_per_batch)
            .map(|n| format!("{{\"ip\":\"{}\"}}\n", batch * lines_per_batch + n))
            .collect();
        let response = daemon.post("/event/logins/_bulk", &body);
        assert_eq!(response.status, 200, "{}", response.body);
    }
    // A million evictions by a debug build: over 60 s with a CPU hog on both cores.
    wait_counted_within(&daemon, 1_000_000, 240 * SECOND);
    assert_eq!(
        daemon.metric("eventsd_watcher_keys{event=\"logins\",watcher=\"per-ip\"}"),
        Some(1000)
    );
    assert_eq!(
        daemon.metric("eventsd_watcher_key_evictions_total{event=\"logins\",watcher=\"per-ip\"}"),
        Some(999_000)
    );
    let grown = resident_kib(master).saturating_sub(rss_before);
    eprintln!("master RSS grew by {grown} KiB for 1,000,000 distinct keys");
    assert!(grown < 64 * 1024, "master grew by {grown} KiB");
}

/// "At most `watchers.max_keys` keys" holds for the keys a watcher holds already: a
/// reload that lowers it evicts the keys past it (as a new key evicts, counted as
/// evictions), and so does a start under a lower bound than the counters were saved
/// with. The table kept its size until new keys came, one eviction each.
#[test]
fn lowering_max_keys_evicts_the_keys_past_it_on_reload_and_on_restart() {
    let mut daemon = Daemon::run("[watchers]\nmax_keys = 1000\n");
    watched(
        &daemon,
        json!({"name": "per-ip", "threshold": 1000000000,
        "aggregator": {"type": "fields", "fields": ["ip"]}, "action": {"type": "null"}}),
    );
    let body: String = (0..1000).map(|n| format!("{{\"ip\":\"{n}\"}}\n")).collect();
    assert_eq!(daemon.post("/event/logins/_bulk", &body).status, 200);
    wait_counted(&daemon, 1000);
    let keys = |daemon: &Daemon| {
        daemon.metric("eventsd_watcher_keys{event=\"logins\",watcher=\"per-ip\"}")
    };
    assert_eq!(keys(&daemon), Some(1000));

    let port = daemon.port;
    let bound = |max_keys: u32| config_text(port, &format!("[watchers]\nmax_keys = {max_keys}\n"));
    std::fs::write(&daemon.config, bound(100)).unwrap();
    daemon.signal(Signal::SIGHUP);
    wait_for("the keys past the new bound evicted", 10 * SECOND, || {
        keys(&daemon) == Some(100)
    });
    assert_eq!(
        daemon.metric("eventsd_watcher_key_evictions_total{event=\"logins\",watcher=\"per-ip\"}"),
        Some(900)
    );

    daemon.signal(Signal::SIGTERM);
    assert!(daemon.wait_exit(10 * SECOND).success());
    std::fs::write(&daemon.config, bound(10)).unwrap();
    daemon.spawn_foreground(&[]);
    daemon.wait_ready();
    wait_for(
        "the restored keys past the bound evicted",
        10 * SECOND,
        || keys(&daemon) == Some(10),
    );
    assert_eq!(daemon.get("/health").unwrap().status, 200);
}

/// A `_bulk` whose events times the fields its type counts by are more than the worker
/// looks up at once (65,536 positions: 5,000 events of two 16-field sets, 31 fields, are
/// keyed in three windows) counts each event once: one key's 5,000 events cross a
/// threshold of 4,999 together, and fire once with all of them.
#[test]
fn a_bulk_keyed_in_several_windows_counts_every_event_once() {
    let sink = HttpSink::start(Duration::ZERO);
    let daemon = Daemon::run("");
    let fields = |first: &str, prefix: &str| -> Vec<String> {
        std::iter::once(first.to_string())
            .chain((1..16).map(|n| format!("{prefix}{n}")))
            .collect()
    };
    for (name, prefix, threshold) in [("by-ip", "a", 4_999), ("by-ip-too", "b", 1_000_000)] {
        register_watcher(
            &daemon,
            "logins",
            &json!({"name": name, "threshold": threshold,
                   "aggregator": {"type": "fields", "fields": fields("ip", prefix)},
                   "action": webhook(&sink.url("/hooks"))}),
        );
    }
    let body = format!("{}\n", json!({"ip": "10.0.0.1", "a3": 7})).repeat(5_000);
    let response = daemon.post("/event/logins/_bulk", &body);
    assert_eq!(response.status, 200, "{}", response.body);

    wait_for("the threshold's firing", 20 * SECOND, || {
        !sink.requests().is_empty()
    });
    wait_for("every event counted", 20 * SECOND, || {
        daemon.metric("eventsd_events_counted_total{type=\"logins\"}") == Some(5_000)
    });
    let fired: Vec<Value> = (sink.requests().iter())
        .map(|r| serde_json::from_str(&r.body).expect("a firing document"))
        .collect();
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert_eq!(fired[0]["count"], 5_000, "{}", fired[0]);
}

fn resident_kib(pid: nix::unistd::Pid) -> u64 {
    common::proc_status_number(pid, "VmRSS").expect("the process runs")
}

const DECLARED: &str = "[[event]]\ntype = \"logins\"\n[[event.watcher]]\nname = \"storm\"\n\
    threshold = 5\naggregator = { type = \"single\" }\naction = { type = \"null\" }\n";

#[test]
fn counters_survive_a_reload_and_a_graceful_restart() {
    let mut daemon = Daemon::new(DECLARED);
    assert!(daemon.start().status.success());
    post_events(&daemon, &vec![json!({}); 2]);
    wait_counted(&daemon, 2);

    assert!(daemon.cli(&["reload"]).status.success());
    post_events(&daemon, &vec![json!({}); 2]);
    wait_counted(&daemon, 4);

    let restarted = daemon.cli_tracked(&["restart"]);
    assert!(restarted.status.success(), "{restarted:?}");
    assert!(daemon.path("state/counters.json").exists());
    // 2 + 2 before, 2 now: the sixth event exceeds 5 only if nothing was forgotten.
    post_events(&daemon, &vec![json!({}); 2]);
    wait_counted(&daemon, 2);
    wait_for("the firing", 5 * SECOND, || firings(&daemon, "storm") == 1);
}

/// The bound, not the restore: counts made after a first snapshot (the first one is
/// written at once, whatever `watchers.snapshot_secs` says) are killed with the master 3 s
/// later, whatever the state folder holds then (the test never looks): a snapshot every
/// `watchers.snapshot_secs` (1 s) must have saved them. 3 s, for a loaded machine; only
/// a snapshot at stop, or a much rarer one, loses them.
#[test]
fn counts_made_a_second_before_a_kill_9_of_the_master_survive_it() {
    let mut daemon = Daemon::new(DECLARED);
    daemon.spawn_foreground(&[]);
    daemon.wait_ready();
    post_events(&daemon, &vec![json!({}); 2]);
    wait_for("a first snapshot", 20 * SECOND, || {
        daemon.counted_on_disk() == 2
    });
    post_events(&daemon, &vec![json!({}); 2]);
    wait_counted(&daemon, 4);
    let counted_at = std::time::Instant::now();
    // The scenario's pace: the kill comes 3 s after the counts, not after a snapshot.
    std::thread::sleep((3 * SECOND).saturating_sub(counted_at.elapsed()));
    nix::sys::signal::kill(daemon.master_pid(), nix::sys::signal::Signal::SIGKILL).unwrap();
    daemon.wait_exit(5 * SECOND);

    daemon.spawn_foreground(&[]);
    daemon.wait_ready();
    // 4 before the crash, 2 now: the sixth event exceeds 5 only if nothing was lost.
    post_events(&daemon, &vec![json!({}); 2]);
    wait_counted(&daemon, 2);
    wait_for("the firing", 5 * SECOND, || firings(&daemon, "storm") == 1);
}

#[test]
fn a_changed_watcher_starts_its_counters_again() {
    let daemon = Daemon::run(DECLARED);
    post_events(&daemon, &vec![json!({}); 4]);
    wait_counted(&daemon, 4);
    let changed = common::config_text(
        daemon.port,
        &DECLARED.replace("threshold = 5", "threshold = 6"),
    );
    std::fs::write(&daemon.config, changed).unwrap();
    assert!(daemon.cli(&["reload"]).status.success());
    post_events(&daemon, &vec![json!({}); 4]);
    wait_counted(&daemon, 8);
    assert_eq!(
        firings(&daemon, "storm"),
        0,
        "the old counts were kept for a changed watcher"
    );
}

#[test]
fn a_corrupt_counters_file_stops_the_start_naming_it() {
    let mut daemon = Daemon::new(DECLARED);
    let path = daemon.path("state/counters.json");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, "{\"watchers\": [").unwrap();
    let output = daemon.start();
    assert_eq!(output.status.code(), Some(1));
    assert!(common::stderr(&output).contains(&path.display().to_string()));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"watchers\": [");
}
