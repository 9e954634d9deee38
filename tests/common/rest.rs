//! Helpers for the REST API tests: the shapes every reply must have, and the registrations
//! most tests start with.

use serde_json::{Value, json};

use super::{Daemon, Response};

pub fn assert_uuid(value: &Value) -> String {
    let id = value
        .as_str()
        .unwrap_or_else(|| panic!("not a string id: {value}"));
    let parsed = uuid::Uuid::parse_str(id).unwrap_or_else(|e| panic!("`{id}` is not a UUID: {e}"));
    assert_eq!(parsed.get_version_num(), 4, "{id}");
    id.to_string()
}

pub fn assert_error(response: &Response, status: u16, mentions: &str) {
    assert_eq!(response.status, status, "{response:?}");
    assert_eq!(
        response.header("content-type").as_deref(),
        Some("application/json")
    );
    let body = response.json();
    assert_eq!(body["status_code"], status, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains(mentions),
        "`{message}` does not mention `{mentions}`"
    );
}

pub fn register(daemon: &Daemon, event: &str) -> String {
    let response = daemon.post("/event/", &json!({"type": event}).to_string());
    assert_eq!(response.status, 201, "{response:?}");
    assert_uuid(&response.json()["_id"])
}

pub fn file_collector(path: &std::path::Path) -> String {
    json!({"name": "audit", "appender": {"type": "file", "path": path}}).to_string()
}

/// Registers `watcher` for `event`, creating the type unless it exists (201 or 409); the
/// watcher's id.
pub fn register_watcher(daemon: &Daemon, event: &str, watcher: &Value) -> String {
    let created = daemon.post("/event/", &json!({"type": event}).to_string());
    assert!([201, 409].contains(&created.status), "{created:?}");
    let response = daemon.post(&format!("/event/{event}/watcher/"), &watcher.to_string());
    assert_eq!(response.status, 201, "{response:?}");
    assert_uuid(&response.json()["_id"])
}

/// A watcher named `name` that fires on every second event of `event` (threshold 1,
/// counting all events), towards `action`.
pub fn every_second_event(name: &str, action: Value) -> Value {
    json!({"name": name, "threshold": 1, "aggregator": {"type": "single"}, "action": action})
}

pub fn webhook(url: &str) -> Value {
    json!({"type": "webhook", "url": url})
}

pub fn email(to: &str) -> Value {
    json!({"type": "email", "to": to, "subject": "alert"})
}

/// Posts `times` events of `event` with `payload`, each acknowledged.
pub fn post_events(daemon: &Daemon, event: &str, payload: &Value, times: usize) {
    for _ in 0..times {
        let response = daemon.post(&format!("/event/{event}/"), &payload.to_string());
        assert_eq!(response.status, 200, "{response:?}");
    }
}

/// Watchers on `daemon` that fire towards a webhook that takes them, one that refuses
/// them (500) and one that holds them (pending), and the events that make them fire.
pub fn put_under_load(
    daemon: &Daemon,
    sink: &super::sinks::HttpSink,
    slow: &super::sinks::HttpSink,
) {
    assert_eq!(daemon.post("/event/", r#"{"type": "logins"}"#).status, 201);
    for (name, url) in [
        ("taken", sink.url("/ok")),
        ("refused", sink.url("/fail")),
        ("held", slow.url("/slow")),
    ] {
        let watcher = json!({"name": name, "threshold": 1,
            "aggregator": {"type": "fields", "fields": ["ip"]},
            "action": {"type": "webhook", "url": url}});
        let created = daemon.post("/event/logins/watcher/", &watcher.to_string());
        assert_eq!(created.status, 201, "{created:?}");
    }
    for ip in ["10.0.0.1", "10.0.0.2"] {
        for _ in 0..2 {
            let body = json!({ "ip": ip }).to_string();
            assert_eq!(daemon.post("/event/logins/", &body).status, 200);
        }
    }
}
