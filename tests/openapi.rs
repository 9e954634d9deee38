//! The OpenAPI document (docs/openapi.json) against the routes the daemon really serves:
//! the same paths and methods as the daemon's route table, and every documented
//! operation answered by the live daemon with one of its documented status codes.

mod common;

use std::collections::BTreeSet;

use common::Daemon;
use serde_json::Value;

fn document() -> Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json"))
        .expect("docs/openapi.json is readable");
    serde_json::from_str(&text).expect("docs/openapi.json is JSON")
}

/// (path, METHOD) of every documented operation.
fn documented(document: &Value) -> BTreeSet<(String, String)> {
    let mut operations = BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in item
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| *k != "parameters")
        {
            operations.insert((path.clone(), method.to_uppercase()));
        }
    }
    operations
}

#[test]
fn the_document_lists_exactly_the_routes_the_daemon_serves() {
    let served: BTreeSet<(String, String)> = eventsd::worker::api::ROUTES
        .iter()
        .flat_map(|(path, methods)| {
            methods
                .split(", ")
                .map(move |m| (path.to_string(), m.to_string()))
        })
        .collect();
    assert_eq!(documented(&document()), served);
}

#[test]
fn every_template_routes_to_itself_with_or_without_its_trailing_slash() {
    for (template, _) in eventsd::worker::api::ROUTES {
        let path = template
            .replace("{type}", "logins")
            .replace("{name}", "audit");
        assert_eq!(
            eventsd::worker::api::route_template(&path),
            Some(template),
            "{path}"
        );
        let other = path
            .strip_suffix('/')
            .map_or_else(|| format!("{path}/"), str::to_string);
        assert_eq!(
            eventsd::worker::api::route_template(&other),
            Some(template),
            "{other}"
        );
    }
}

/// One valid request per documented operation, in an order where each finds what it
/// needs: (METHOD, path template, body).
/// `{ends}` stands for a time an hour from now; `{id}` for the silence made before.
const VALID_REQUESTS: [(&str, &str, &str); 26] = [
    ("GET", "/health", ""),
    ("HEAD", "/health", ""),
    ("POST", "/event/", r#"{"type": "probe"}"#),
    ("GET", "/event/", ""),
    ("GET", "/event/{type}/", ""),
    (
        "POST",
        "/event/{type}/collector/",
        r#"{"name": "thing", "appender": {"type": "null"}}"#,
    ),
    ("GET", "/event/{type}/collector/", ""),
    ("GET", "/event/{type}/collector/{name}", ""),
    (
        "POST",
        "/event/{type}/watcher/",
        r#"{"name": "thing", "threshold": 5, "aggregator": {"type": "single"}, "action": {"type": "null"}}"#,
    ),
    ("GET", "/event/{type}/watcher/", ""),
    ("GET", "/event/{type}/watcher/{name}", ""),
    ("GET", "/event/{type}/watcher/{name}/state", ""),
    (
        "POST",
        "/silences",
        r#"{"matchers": [{"name": "event", "value": "probe"}], "endsAt": "{ends}", "createdBy": "test"}"#,
    ),
    ("GET", "/silences", ""),
    ("GET", "/silences/{id}", ""),
    ("DELETE", "/silences/{id}", ""),
    ("GET", "/alerts", ""),
    ("POST", "/event/{type}/", r#"{"user": "ann"}"#),
    (
        "POST",
        "/event/{type}/_bulk",
        "{\"user\": \"ann\"}\n{\"user\": \"bob\"}\n",
    ),
    ("GET", "/metrics", ""),
    ("GET", "/status", ""),
    ("GET", "/ui/", ""),
    ("GET", "/ui/{asset}", ""),
    ("DELETE", "/event/{type}/watcher/{name}", ""),
    ("DELETE", "/event/{type}/collector/{name}", ""),
    ("DELETE", "/event/{type}/", ""),
];

#[test]
fn every_documented_operation_has_a_valid_request_in_this_test() {
    let covered: BTreeSet<(String, String)> = VALID_REQUESTS
        .iter()
        .map(|(method, path, _)| (path.to_string(), method.to_string()))
        .collect();
    assert_eq!(covered, documented(&document()));
}

#[test]
fn the_live_daemon_answers_every_valid_request_with_its_documented_success() {
    let daemon = Daemon::run("");
    let document = document();
    let in_an_hour = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
    let ends = humantime::format_rfc3339(in_an_hour).to_string();
    let mut silence = String::new();
    for (method, path, body) in VALID_REQUESTS {
        let concrete = path
            .replace("{type}", "probe")
            .replace("{name}", "thing")
            .replace("{asset}", "app.js")
            .replace("{id}", &silence);
        let body = body.replace("{ends}", &ends);
        let responses = &document["paths"][path][method.to_lowercase()]["responses"];
        let successes: Vec<&String> = responses
            .as_object()
            .unwrap()
            .keys()
            .filter(|code| code.starts_with('2'))
            .collect();
        assert_eq!(
            successes.len(),
            1,
            "{method} {path}: one documented success"
        );
        let response = daemon.send(method, &concrete, &body, "");
        let reply = serde_json::from_str::<Value>(&response.body).unwrap_or_default();
        if let Some(id) = reply.get("silenceID").and_then(Value::as_str) {
            silence = id.to_string();
        }
        assert_eq!(
            response.status.to_string(),
            *successes[0],
            "{method} {concrete}: {}",
            response.body
        );
    }
    assert!(
        daemon.get("/event/probe/").unwrap().status == 404,
        "the deletions took effect"
    );
}
