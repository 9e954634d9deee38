//! Collecting through appenders, against the real binary: every acknowledged event is
//! written, a failing appender acknowledges nothing, bad bulk input writes nothing.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::rest::{assert_error, file_collector, register};
use common::{Daemon, wait_for};
use serde_json::{Value, json};

const SECOND: Duration = Duration::from_secs(1);
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

    let address = daemon.address();
    let clients: Vec<_> = (0..4)
        .map(|client| {
            std::thread::spawn(move || {
                (0..50)
                    .map(|n| {
                        let body = json!({"client": client, "n": n, "user": {"id": n}}).to_string();
                        let raw = format!(
                            "POST /event/logins/ HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        let response = common::request(address, &raw).unwrap();
                        assert_eq!(response.status, 200);
                        response.json()["_id"].as_str().unwrap().to_string()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let acknowledged: HashSet<String> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
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

#[test]
fn the_syslog_appender_writes_or_refuses_the_event() {
    let daemon = Daemon::run("");
    register(&daemon, "logins");
    let collector = r#"{"name": "sys", "appender": {"type": "syslog", "ident": "shop"}}"#;
    assert_eq!(
        daemon.post("/event/logins/collector/", collector).status,
        201
    );
    let response = daemon.post("/event/logins/", "{\"user\": 1}");
    // Without a syslog daemon (no /dev/log), the event must not be acknowledged.
    let expected = if std::path::Path::new("/dev/log").exists() {
        200
    } else {
        503
    };
    assert_eq!(response.status, expected, "{response:?}");
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
    daemon.post("/event/logins/collector/", &file_collector(&events));
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
