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

#[test]
fn the_live_daemon_answers_every_operation_with_a_documented_status() {
    let daemon = Daemon::run("");
    daemon.post("/event/", r#"{"type": "probe"}"#);
    daemon.post(
        "/event/probe/collector/",
        r#"{"name": "thing", "appender": {"type": "null"}}"#,
    );
    daemon.post("/event/probe/watcher/", r#"{"name": "thing", "threshold": 5, "aggregator": {"type": "single"}, "action": {"type": "null"}}"#);

    let document = document();
    let mut operations: Vec<(String, String)> = documented(&document).into_iter().collect();
    // Deletions last, the deepest first, so that each finds what it deletes.
    operations.sort_by_key(|(path, method)| (method == "DELETE", std::cmp::Reverse(path.len())));
    for (path, method) in operations {
        let concrete = path.replace("{type}", "probe").replace("{name}", "thing");
        let body = if method == "POST" { "{}" } else { "" };
        let response = daemon.send(&method, &concrete, body, "");
        let documented_codes = &document["paths"][&path][method.to_lowercase()]["responses"];
        assert!(
            documented_codes.get(response.status.to_string()).is_some(),
            "{method} {concrete} answered {}, not documented: {}",
            response.status,
            response.body
        );
    }
}
