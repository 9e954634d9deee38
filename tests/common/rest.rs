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
