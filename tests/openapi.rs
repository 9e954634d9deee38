//! The OpenAPI document (docs/openapi.json) against the routes the daemon really serves:
//! the same paths and methods as the daemon's route table, every documented operation
//! answered by the live daemon with its documented success, and every body the daemon
//! answers (successes and errors) valid against the schema documented for its operation
//! and status (a maintained JSON Schema validator, `jsonschema`), every schema met.

mod common;

use std::collections::BTreeSet;

use common::{Daemon, Response, request};
use serde_json::{Value, json};

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

/// Requests for the documented errors a test can cause at will: (METHOD, path template,
/// concrete path, body, extra header lines), in this order after `VALID_REQUESTS`' first
/// twelve (`probe` exists, with its collector and watcher `thing`).
const ERROR_REQUESTS: [(&str, &str, &str, &str, &str); 19] = [
    ("POST", "/event/", "/event/", r#"{"type": "probe"}"#, ""),
    ("POST", "/event/", "/event/", "{", ""),
    (
        "POST",
        "/event/",
        "/event/",
        r#"{"type": "other"}"#,
        "Authorization: Bearer wrong\r\n",
    ),
    ("GET", "/event/{type}/", "/event/nope/", "", ""),
    ("POST", "/event/{type}/", "/event/nope/", "{}", ""),
    ("POST", "/event/{type}/", "/event/probe/", "[1", ""),
    ("DELETE", "/event/{type}/", "/event/nope/", "", ""),
    (
        "POST",
        "/event/{type}/_bulk",
        "/event/probe/_bulk",
        "{}\n[\n",
        "",
    ),
    (
        "POST",
        "/event/{type}/_bulk",
        "/event/nope/_bulk",
        "{}\n",
        "",
    ),
    (
        "GET",
        "/event/{type}/collector/",
        "/event/nope/collector/",
        "",
        "",
    ),
    (
        "POST",
        "/event/{type}/collector/",
        "/event/probe/collector/",
        r#"{"name": "thing", "appender": {"type": "null"}}"#,
        "",
    ),
    (
        "POST",
        "/event/{type}/collector/",
        "/event/probe/collector/",
        r#"{"name": 1}"#,
        "",
    ),
    (
        "GET",
        "/event/{type}/collector/{name}",
        "/event/probe/collector/nope",
        "",
        "",
    ),
    (
        "DELETE",
        "/event/{type}/collector/{name}",
        "/event/probe/collector/nope",
        "",
        "",
    ),
    (
        "GET",
        "/event/{type}/watcher/",
        "/event/nope/watcher/",
        "",
        "",
    ),
    (
        "POST",
        "/event/{type}/watcher/",
        "/event/probe/watcher/",
        r#"{"name": "thing", "threshold": 5, "aggregator": {"type": "single"}, "action": {"type": "null"}}"#,
        "",
    ),
    (
        "POST",
        "/event/{type}/watcher/",
        "/event/probe/watcher/",
        r#"{"name": "x y"}"#,
        "",
    ),
    (
        "GET",
        "/event/{type}/watcher/{name}",
        "/event/probe/watcher/nope",
        "",
        "",
    ),
    (
        "DELETE",
        "/event/{type}/watcher/{name}",
        "/event/probe/watcher/nope",
        "",
        "",
    ),
];

const TOKEN: &str = "Authorization: Bearer s3cret\r\n";

/// Each documented response's schema, checked against what the daemon answers.
struct Documented {
    document: Value,
    /// The schemas (as written in the document) that a body was validated against.
    met: BTreeSet<String>,
}

impl Documented {
    fn new() -> Documented {
        Documented {
            document: document(),
            met: BTreeSet::new(),
        }
    }

    /// `response` to `METHOD template` is documented, of its documented media type, and
    /// its body is valid against the documented schema.
    fn check(&mut self, method: &str, template: &str, response: &Response) {
        let what = format!("{method} {template} -> {}", response.status);
        let operation = &self.document["paths"][template][method.to_lowercase()];
        let documented = &operation["responses"][response.status.to_string()];
        assert!(documented.is_object(), "{what}: undocumented status");
        let Some(content) = documented["content"].as_object() else {
            assert!(
                response.body.is_empty(),
                "{what}: a body where none is documented"
            );
            return;
        };
        // Of the documented media types (a script or a style sheet), the one served.
        let served = response.header("content-type").unwrap_or_default();
        let served_media = served.split(';').next().unwrap_or_default();
        let (media, described) = content
            .iter()
            .find(|(media, _)| !served_media.is_empty() && media.starts_with(served_media))
            .unwrap_or_else(|| panic!("{what}: {served} is not a documented media type"));
        let schema = &described["schema"];
        let body: Value = if media == "application/json" {
            serde_json::from_str(&response.body).unwrap_or_else(|e| panic!("{what}: {e}"))
        } else {
            Value::String(response.body.clone())
        };
        let validator = jsonschema::draft4::new(
            &json!({"components": self.document["components"], "allOf": [schema]}),
        )
        .unwrap_or_else(|e| panic!("{what}: the documented schema does not compile: {e}"));
        let errors: Vec<String> = validator
            .iter_errors(&body)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{what}: {errors:?}\n{body}");
        self.met.insert(schema.to_string());
    }

    /// Every schema of a documented response.
    fn schemas(&self) -> BTreeSet<String> {
        let mut schemas = BTreeSet::new();
        for item in self.document["paths"].as_object().unwrap().values() {
            let operations = item.as_object().unwrap().iter();
            for (_, operation) in operations.filter(|(key, _)| *key != "parameters") {
                for response in operation["responses"].as_object().unwrap().values() {
                    for media in response["content"].as_object().into_iter().flatten() {
                        schemas.insert(media.1["schema"].to_string());
                    }
                }
            }
        }
        schemas
    }
}

#[test]
fn the_live_daemon_answers_every_valid_request_with_its_documented_success() {
    let daemon = Daemon::run("[server]\napi_token = \"s3cret\"\n");
    let mut documented = Documented::new();
    let in_an_hour = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
    let ends = humantime::format_rfc3339(in_an_hour).to_string();
    let mut silence = String::new();
    for (i, (method, path, body)) in VALID_REQUESTS.into_iter().enumerate() {
        let concrete = path
            .replace("{type}", "probe")
            .replace("{name}", "thing")
            .replace("{asset}", "app.js")
            .replace("{id}", &silence);
        let body = body.replace("{ends}", &ends);
        let responses = &documented.document["paths"][path][method.to_lowercase()]["responses"];
        let successes: Vec<String> = responses
            .as_object()
            .unwrap()
            .keys()
            .filter(|code| code.starts_with('2'))
            .cloned()
            .collect();
        assert_eq!(
            successes.len(),
            1,
            "{method} {path}: one documented success"
        );
        let response = daemon.send(method, &concrete, &body, TOKEN);
        let reply = serde_json::from_str::<Value>(&response.body).unwrap_or_default();
        if let Some(id) = reply.get("silenceID").and_then(Value::as_str) {
            silence = id.to_string();
        }
        assert_eq!(
            response.status.to_string(),
            successes[0],
            "{method} {concrete}: {}",
            response.body
        );
        documented.check(method, path, &response);
        if i == 11 {
            for (method, path, concrete, body, headers) in ERROR_REQUESTS {
                let headers = if headers.is_empty() { TOKEN } else { headers };
                let response = daemon.send(method, concrete, body, headers);
                assert!(response.status >= 400, "{method} {concrete}: {response:?}");
                documented.check(method, path, &response);
            }
            let unsized_change = "POST /event/ HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
            let response = request(daemon.address(), unsized_change).unwrap();
            assert_eq!(response.status, 411);
            documented.check("POST", "/event/", &response);
        }
    }
    assert!(
        daemon.get("/event/probe/").unwrap().status == 404,
        "the deletions took effect"
    );
    assert_eq!(documented.met, documented.schemas(), "every schema met");
}
