//! Collecting through appenders, against the real binary: every acknowledged event is
//! written, a failing appender acknowledges nothing, bad bulk input writes nothing.

mod common;

use std::collections::HashSet;

use common::rest::{assert_error, file_collector, register};
use common::{Daemon, SECOND, post_concurrently, wait_for};
use serde_json::{Value, json};

const FOUR_WORKERS: &str = "[workers]\nmin = 4\nmax = 4\n";

#[test]
fn every_acknowledged_event_is_in_the_file_appender() {
    let daemon = Daemon::run(FOUR_WORKERS);
    let events = daemon.path("events.jsonl");
    register(&daemon, "logins");
    assert_eq!(
        daemon
            .post("/event/logins/collector/", &file_collector(&events))
            .status,
        201
    );

    let bodies: Vec<String> = (0..4)
        .flat_map(|client| {
            (0..50).map(move |n| json!({"client": client, "n": n, "user": {"id": n}}).to_string())
        })
        .collect();
    let acknowledged: HashSet<String> = post_concurrently(daemon.address(), "logins", &bodies, 4)
        .into_iter()
        .collect();
    let bulk = daemon.post("/event/logins/_bulk?ids=true", "{\"n\": 1}\n{\"n\": 2}\n");
    assert_eq!(bulk.json()["collected"], 2);
    let bulk_ids: Vec<String> = bulk.json()["_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();

    let text = std::fs::read_to_string(&events).unwrap();
    let mut written = HashSet::new();
    for line in text.lines() {
        let event: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("torn line ({e}): {line}"));
        assert_eq!(event["event_type"], "logins");
        assert!(
            event["received_at"].as_str().unwrap().ends_with('Z'),
            "{line}"
        );
        written.insert(event["event_uuid"].as_str().unwrap().to_string());
    }
    assert_eq!(written.len(), 202);
    assert!(
        acknowledged.is_subset(&written),
        "acknowledged events missing from the file"
    );
    assert!(bulk_ids.iter().all(|id| written.contains(id)));

    let workers = wait_collected(&daemon, 202);
    assert!(workers > 1, "the events were not spread over workers");
}

/// Waits until `/metrics` counts `expected` collected events; returns how many workers
/// served requests.
fn wait_collected(daemon: &Daemon, expected: u64) -> usize {
    let line = format!("eventsd_events_collected_total{{type=\"logins\"}} {expected}");
    let mut metrics = String::new();
    wait_for(&line, 5 * SECOND, || {
        metrics = daemon.get("/metrics").unwrap().body;
        metrics.contains(&line)
    });
    assert!(
        metrics.contains("eventsd_workers{state=\"idle\"}"),
        "{metrics}"
    );
    metrics
        .lines()
        .filter(|l| l.starts_with("eventsd_worker_requests_total") && !l.ends_with(" 0"))
        .count()
}

#[test]
fn a_failing_appender_gives_503_and_no_acknowledgement() {
    let daemon = Daemon::run("");
    register(&daemon, "logins");
    register(&daemon, "orders");
    // The folder exists at registration and disappears later: the target broke.
    let folder = daemon.path("appender");
    std::fs::create_dir(&folder).unwrap();
    let unwritable = folder.join("events.jsonl");
    assert_eq!(
        daemon
            .post("/event/logins/collector/", &file_collector(&unwritable))
            .status,
        201
    );
    std::fs::remove_dir(&folder).unwrap();

    let refused = daemon.post("/event/logins/", "{\"user\": 1}");
    assert_error(&refused, 503, "could not write");
    assert!(refused.json().get("_id").is_none());
    assert!(!unwritable.exists());
    assert_eq!(
        daemon.post("/event/orders/", "{}").status,
        200,
        "other types keep being served"
    );
    let bulk = daemon.post("/event/logins/_bulk", "{}\n{}\n");
    assert_eq!(bulk.status, 503);
}

#[test]
fn a_file_appender_that_could_never_write_is_refused_at_registration() {
    let daemon = Daemon::run("");
    register(&daemon, "logins");
    for path in [
        std::path::PathBuf::from("/"),
        daemon.path("no-such-folder/events.jsonl"),
    ] {
        assert_error(
            &daemon.post("/event/logins/collector/", &file_collector(&path)),
            400,
            "existing folder",
        );
    }
    assert_eq!(
        daemon.get("/event/logins/collector/").unwrap().json(),
        json!([])
    );
}

/// A syslog daemon the test owns: a datagram socket at `collectors.syslog_socket`.
fn syslog_daemon(daemon: &Daemon) -> std::os::unix::net::UnixDatagram {
    let socket = std::os::unix::net::UnixDatagram::bind(daemon.path("log")).unwrap();
    socket.set_read_timeout(Some(10 * SECOND)).unwrap();
    socket
}

const SYSLOG_COLLECTOR: &str =
    r#"{"name": "sys", "appender": {"type": "syslog", "ident": "shop"}}"#;

#[test]
fn the_syslog_appender_sends_every_acknowledged_event_to_syslog() {
    let daemon = Daemon::run("[collectors]\nsyslog_socket = \"log\"\n");
    let syslog = syslog_daemon(&daemon);
    register(&daemon, "logins");
    let created = daemon.post("/event/logins/collector/", SYSLOG_COLLECTOR);
    assert_eq!(created.status, 201, "{created:?}");

    let mut ids = HashSet::new();
    for user in 0..5 {
        let response = daemon.post("/event/logins/", &json!({ "user": user }).to_string());
        assert_eq!(response.status, 200, "{response:?}");
        ids.insert(response.json()["_id"].as_str().unwrap().to_string());
    }
    let mut received = HashSet::new();
    let mut buffer = [0u8; 65_536];
    while received.len() < ids.len() {
        let n = syslog.recv(&mut buffer).expect("a syslog line per event");
        let line = String::from_utf8_lossy(&buffer[..n]).into_owned();
        // RFC 3164: <PRI>TIMESTAMP HOST IDENT[PID]: MESSAGE
        let (head, event) = line.split_once("]: ").unwrap_or_else(|| panic!("{line}"));
        assert!(head.starts_with('<') && head.contains(" shop["), "{line}");
        let event: Value = serde_json::from_str(event.trim_end()).unwrap();
        received.insert(event["event_uuid"].as_str().unwrap().to_string());
    }
    assert_eq!(received, ids);
}

#[test]
fn without_a_syslog_daemon_the_event_is_refused() {
    let daemon = Daemon::run("[collectors]\nsyslog_socket = \"log\"\n");
    register(&daemon, "logins");
    let created = daemon.post("/event/logins/collector/", SYSLOG_COLLECTOR);
    assert_eq!(created.status, 201, "{created:?}");
    let refused = daemon.post("/event/logins/", "{\"user\": 1}");
    assert_error(&refused, 503, "syslog");
    assert!(refused.json().get("_id").is_none());
    // The daemon comes up: the next event reaches it.
    let syslog = syslog_daemon(&daemon);
    assert_eq!(daemon.post("/event/logins/", "{\"user\": 2}").status, 200);
    let mut buffer = [0u8; 65_536];
    let n = syslog.recv(&mut buffer).expect("the line");
    let line = String::from_utf8_lossy(&buffer[..n]).into_owned();
    let (_, event) = line.split_once("]: ").unwrap_or_else(|| panic!("{line}"));
    let event: Value = serde_json::from_str(event.trim_end()).unwrap();
    assert_eq!(event["user"], 2, "{line}");
}

#[test]
fn a_bulk_reply_lists_the_ids_only_when_asked() {
    let daemon = Daemon::run("");
    register(&daemon, "logins");
    let lines = "{}\n".repeat(1000);
    let plain = daemon.post("/event/logins/_bulk", &lines);
    assert_eq!(plain.json(), json!({"collected": 1000}));
    assert!(
        plain.body.len() < lines.len(),
        "the reply outgrew its request"
    );
    let with_ids = daemon.post("/event/logins/_bulk?ids=true", &lines);
    assert_eq!(with_ids.json()["_ids"].as_array().map(Vec::len), Some(1000));
}

#[test]
fn a_bad_bulk_line_rejects_the_whole_batch() {
    let daemon = Daemon::run("");
    let events = daemon.path("events.jsonl");
    register(&daemon, "logins");
    let created = daemon.post("/event/logins/collector/", &file_collector(&events));
    assert_eq!(created.status, 201, "{created:?}");
    assert_error(
        &daemon.post("/event/logins/_bulk", "{\"a\": 1}\n{\"a\": 2}\n[3]\n"),
        400,
        "Line 3",
    );
    assert_error(
        &daemon.post("/event/logins/_bulk", "{\"a\": 1}\nnope\n"),
        400,
        "Line 2",
    );
    assert!(!events.exists() || std::fs::read_to_string(&events).unwrap().is_empty());
}
