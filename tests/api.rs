//! The REST API of api.md against the real binary with several workers: the original
//! daemon's requests with their exact shapes, every error row, read-your-writes across
//! workers, persistence, and bad input. Collecting through appenders: `collectors.rs`.

mod common;

use std::collections::HashSet;

use common::rest::{assert_error, assert_uuid, register};
use common::{Daemon, HalfSent, SECOND, stderr, wait_for};
use nix::sys::signal::Signal;
use serde_json::{Value, json};

const FOUR_WORKERS: &str = "[workers]\nmin = 4\nmax = 4\n";
const NULL_COLLECTOR: &str = r#"{"name": "audit", "appender": {"type": "null"}}"#;
const WATCHER: &str = r#"{"name": "storm", "threshold": 50,
    "aggregator": {"type": "fields", "fields": ["field1", "field2"]},
    "action": {"type": "null"}}"#;
/// The payload of the original daemon's own benchmark.
const PAYLOAD: &str = r#"{"message":"This is test event message","date":"2016-03-04 12:00:00","host":"host-1","category":"unknown","field1":"f1","field2":"f2"}"#;

#[test]
fn the_original_daemons_requests_get_their_shapes_and_codes() {
    let daemon = Daemon::run(FOUR_WORKERS);
    let event_id = register(&daemon, "new_event-1");

    let collector = daemon.post("/event/new_event-1/collector/", NULL_COLLECTOR);
    assert_eq!(collector.status, 201);
    let collector_id = assert_uuid(&collector.json()["_id"]);
    let watcher = daemon.post("/event/new_event-1/watcher", WATCHER);
    assert_eq!(watcher.status, 201);
    let watcher_id = assert_uuid(&watcher.json()["_id"]);

    let list = daemon.get("/event/").unwrap();
    assert_eq!(list.status, 200);
    assert_eq!(
        list.json(),
        json!([{"_id": event_id, "type": "new_event-1"}])
    );

    let event = daemon.get("/event/new_event-1").unwrap().json();
    assert_eq!(
        event,
        json!({"_id": event_id, "type": "new_event-1",
               "collectors": [{"_id": collector_id, "name": "audit"}],
               "watchers": [{"_id": watcher_id, "name": "storm"}]})
    );
    let collectors = daemon.get("/event/new_event-1/collector/").unwrap().json();
    assert_eq!(collectors, json!([{"_id": collector_id, "name": "audit"}]));
    let one = daemon
        .get("/event/new_event-1/collector/audit")
        .unwrap()
        .json();
    assert_eq!(
        one,
        json!({"_id": collector_id, "name": "audit", "appender": {"type": "null"}})
    );
    let watchers = daemon.get("/event/new_event-1/watcher/").unwrap().json();
    assert_eq!(watchers, json!([{"_id": watcher_id, "name": "storm"}]));
    let mut registered: Value = serde_json::from_str(WATCHER).unwrap();
    registered["_id"] = json!(watcher_id);
    assert_eq!(
        daemon
            .get("/event/new_event-1/watcher/storm/")
            .unwrap()
            .json(),
        registered
    );

    let mut ids = HashSet::new();
    for _ in 0..5 {
        let collected = daemon.post("/event/new_event-1/", PAYLOAD);
        assert_eq!(collected.status, 200);
        assert!(
            ids.insert(assert_uuid(&collected.json()["_id"])),
            "an id was reused"
        );
    }

    let acknowledged = json!({"acknowledged": true});
    for path in [
        "/event/new_event-1/watcher/storm",
        "/event/new_event-1/collector/audit/",
        "/event/new_event-1",
    ] {
        let deleted = daemon.delete(path);
        assert_eq!(
            (deleted.status, deleted.json()),
            (200, acknowledged.clone()),
            "{path}"
        );
    }
    assert_error(
        &daemon.get("/event/new_event-1").unwrap(),
        404,
        "Event type `new_event-1` is not registered",
    );
    assert_eq!(daemon.get("/event").unwrap().json(), json!([]));
}

#[test]
fn every_error_row_of_the_spec() {
    let daemon = Daemon::run("[server]\nmax_body_bytes = 4096\n");
    register(&daemon, "logins");

    assert_error(&daemon.post("/event/", "{not json"), 400, "not valid JSON");
    assert_error(&daemon.post("/event/", "[1, 2]"), 400, "Invalid");
    assert_error(&daemon.post("/event/", "{}"), 400, "`type`");
    assert_error(&daemon.post("/event/", r#"{"type": 5}"#), 400, "`type`");
    assert_error(
        &daemon.post("/event/", r#"{"type": "a b"}"#),
        400,
        "not a valid name",
    );
    assert_error(
        &daemon.post("/event/logins/", "[1]"),
        400,
        "Only JSON object payload is accepted",
    );
    assert_error(
        &daemon.post("/event/logins/", "\"text\""),
        400,
        "Only JSON object payload is accepted",
    );
    assert_error(
        &daemon.post(
            "/event/logins/collector/",
            r#"{"name": "c1", "appender": {"type": "kafka"}}"#,
        ),
        400,
        "appender",
    );
    assert_error(&daemon.post("/event/logins/watcher/", r#"{"name": "w1", "threshold": 1, "aggregator": {"type": "median"}, "action": {"type": "null"}}"#), 400, "aggregator");
    assert_error(&daemon.post("/event/logins/watcher/", r#"{"name": "w1", "threshold": 1, "aggregator": {"type": "single"}, "action": {"type": "sms"}}"#), 400, "action");

    assert_error(&daemon.post("/event/logins/watcher/", r#"{"name": "w1", "threshold": 1, "aggregator": {"type": "single"}, "action": {"type": "command", "argv": ["/bin/sh"]}}"#), 403, "command");

    assert_error(&daemon.get("/nowhere").unwrap(), 404, "No route");
    assert_error(
        &daemon.get("/event/ghosts").unwrap(),
        404,
        "Event type `ghosts` is not registered",
    );
    assert_error(
        &daemon.post("/event/ghosts/", "{}"),
        404,
        "Event type `ghosts` is not registered",
    );
    assert_error(
        &daemon.get("/event/logins/collector/nope").unwrap(),
        404,
        "Collector `nope`",
    );
    assert_error(
        &daemon.delete("/event/logins/watcher/nope"),
        404,
        "Watcher `nope`",
    );

    let wrong = daemon.send("PUT", "/event/logins", "{}", "");
    assert_error(&wrong, 405, "Method Not Allowed");
    assert_eq!(wrong.header("allow").as_deref(), Some("GET, POST, DELETE"));
    assert_eq!(
        daemon.delete("/event/").header("allow").as_deref(),
        Some("GET, POST")
    );

    assert_error(
        &daemon.post("/event/", r#"{"type": "logins"}"#),
        409,
        "Event type `logins` already registered",
    );
    daemon.post("/event/logins/collector/", NULL_COLLECTOR);
    assert_error(
        &daemon.post("/event/logins/collector/", NULL_COLLECTOR),
        409,
        "already registered",
    );

    let no_length = common::request(
        daemon.address(),
        "POST /event/logins/ HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_error(&no_length, 411, "Content-Length");
    let too_large = common::request(
        daemon.address(),
        "POST /event/logins/ HTTP/1.1\r\nHost: t\r\nContent-Length: 10485760\r\n\r\n",
    )
    .unwrap();
    assert_error(&too_large, 413, "max_body_bytes");
}

#[test]
fn the_api_token_guards_registry_changes_only() {
    let daemon = Daemon::run("[server]\napi_token = \"s3cret\"\n");
    let body = r#"{"type": "logins"}"#;
    let missing = daemon.post("/event/", body);
    assert_error(&missing, 401, "Authorization");
    assert_eq!(
        missing.header("www-authenticate").as_deref(),
        Some("Bearer")
    );
    assert_error(
        &daemon.send("POST", "/event/", body, "Authorization: Bearer s3creT\r\n"),
        401,
        "Authorization",
    );
    assert_eq!(
        daemon.get("/event/").unwrap().json(),
        json!([]),
        "a refused change changed something"
    );

    let allowed = daemon.send("POST", "/event/", body, "Authorization: Bearer s3cret\r\n");
    assert_eq!(allowed.status, 201);
    // RFC 7235: the scheme is case-insensitive, and one or more spaces follow it.
    for (i, scheme) in ["bearer ", "BEARER  "].into_iter().enumerate() {
        let body = format!(r#"{{"type": "audits{i}"}}"#);
        let header = format!("Authorization: {scheme}s3cret\r\n");
        let allowed = daemon.send("POST", "/event/", &body, &header);
        assert_eq!(allowed.status, 201, "{scheme:?}: {}", allowed.body);
    }
    assert_eq!(
        daemon.get("/event/logins").unwrap().status,
        200,
        "reads need no token"
    );
    assert_eq!(
        daemon.post("/event/logins/", "{}").status,
        200,
        "collecting needs no token"
    );
    assert_error(&daemon.delete("/event/logins"), 401, "Authorization");
}

#[test]
fn a_change_is_seen_by_the_very_next_request_on_any_worker() {
    let daemon = Daemon::run(FOUR_WORKERS);
    for round in 0..3 {
        let event = format!("type{round}");
        let id = register(&daemon, &event);
        let mut workers = HashSet::new();
        for attempt in 0..30 {
            let response = daemon.get(&format!("/event/{event}")).unwrap();
            assert_eq!(
                response.status, 200,
                "read {attempt} after the write: {response:?}"
            );
            assert_eq!(response.json()["_id"], id);
            workers.insert(daemon.get("/health").unwrap().json()["worker"].clone());
        }
        assert!(workers.len() > 1, "the reads did not spread over workers");
        let collector = daemon.post(&format!("/event/{event}/collector"), NULL_COLLECTOR);
        assert_eq!(collector.status, 201);
        for _ in 0..10 {
            let listed = daemon
                .get(&format!("/event/{event}/collector/"))
                .unwrap()
                .json();
            assert_eq!(listed.as_array().unwrap().len(), 1);
        }
    }
}

#[test]
fn the_registry_survives_a_restart() {
    let mut daemon = Daemon::new("");
    assert!(daemon.start().status.success());
    let id = register(&daemon, "logins");
    assert_eq!(daemon.post("/event/logins/watcher/", WATCHER).status, 201);
    let restarted = daemon.cli_tracked(&["restart"]);
    assert!(restarted.status.success(), "{restarted:?}");

    let event = daemon.get("/event/logins").unwrap().json();
    assert_eq!(event["_id"], id);
    assert_eq!(event["watchers"][0]["name"], "storm");
    let mode = std::fs::metadata(daemon.path("state/registry.json")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o002,
        0,
        "world-writable"
    );
}

#[test]
fn a_corrupt_registry_stops_the_start_naming_the_file_and_is_left_alone() {
    let mut daemon = Daemon::new("");
    let path = daemon.path("state/registry.json");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, "{\"version\": 2, \"ev").unwrap();
    let output = daemon.start();
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains(&path.display().to_string()),
        "{}",
        stderr(&output)
    );
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "{\"version\": 2, \"ev"
    );
    assert!(!daemon.pidfile().exists());
}

#[test]
fn bad_input_gets_a_json_error_and_changes_nothing() {
    let daemon = Daemon::run("");
    register(&daemon, "logins");
    daemon.post("/event/logins/watcher/", WATCHER);
    let registry = daemon.path("state/registry.json");
    let before = (
        daemon.get("/event/logins").unwrap().body,
        std::fs::read(&registry).unwrap(),
    );

    let long = "a".repeat(1000);
    for name in [
        "",
        long.as_str(),
        "../etc",
        "a b",
        "ünïcödé",
        "a%00",
        "_x",
        "1abc",
    ] {
        let response = daemon.post("/event/", &json!({"type": name}).to_string());
        assert_error(&response, 400, "`type`");
        let collector = json!({"name": name, "appender": {"type": "null"}}).to_string();
        assert_error(
            &daemon.post("/event/logins/collector/", &collector),
            400,
            "`name`",
        );
    }
    let watcher = |threshold: &str, aggregator: &str, action: &str| {
        format!(
            r#"{{"name": "w2", "threshold": {threshold}, "aggregator": {aggregator}, "action": {action}}}"#
        )
    };
    let single = r#"{"type": "single"}"#;
    let null = r#"{"type": "null"}"#;
    for (body, status, mentions) in [
        (watcher("\"5\"", single, null), 400, "threshold"),
        (watcher("-1", single, null), 400, "threshold"),
        (watcher("0", single, null), 400, "threshold"),
        (watcher("1e99", single, null), 400, "threshold"),
        (
            watcher("5", r#"{"type": "fields", "fields": []}"#, null),
            400,
            "fields",
        ),
        (
            watcher("5", r#"{"type": "fields", "fields": [1, 2]}"#, null),
            400,
            "fields",
        ),
        (watcher("5", r#"{"type": "fields"}"#, null), 400, "fields"),
        (
            watcher(
                "5",
                single,
                r#"{"type": "email", "to": "not-an-address", "subject": "s"}"#,
            ),
            400,
            "to",
        ),
        (
            watcher(
                "5",
                single,
                r#"{"type": "email", "to": ["ops@example.com", "x"], "subject": "s"}"#,
            ),
            400,
            "to",
        ),
        (
            watcher(
                "5",
                single,
                r#"{"type": "webhook", "url": "ftp://example.com/hook"}"#,
            ),
            400,
            "url",
        ),
        (
            watcher("5", single, r#"{"type": "webhook", "url": "http://"}"#),
            400,
            "url",
        ),
        (
            watcher(
                "5",
                single,
                r#"{"type": "command", "argv": ["/usr/bin/id"]}"#,
            ),
            403,
            "command",
        ),
    ] {
        assert_error(
            &daemon.post("/event/logins/watcher/", &body),
            status,
            mentions,
        );
    }
    for body in ["", "null", "{\"type\": \"ok_name\""] {
        assert_eq!(daemon.post("/event/", body).status, 400, "{body:?}");
    }
    assert_eq!(daemon.post("/event/logins/", "").status, 400);
    for path in ["/event/", "/event/logins/"] {
        let mut stream = std::net::TcpStream::connect(daemon.address()).unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 4\r\n\r\n"
        );
        std::io::Write::write_all(&mut stream, head.as_bytes()).unwrap();
        std::io::Write::write_all(&mut stream, b"{\xff\xfe}").unwrap();
        let response = common::read_response(&mut stream).unwrap();
        assert_error(&response, 400, "JSON");
    }

    let after = (
        daemon.get("/event/logins").unwrap().body,
        std::fs::read(&registry).unwrap(),
    );
    assert_eq!(before, after, "bad input changed the registry");
    assert_eq!(daemon.get("/health").unwrap().status, 200);
}

#[test]
fn config_declared_entries_are_applied_on_start_and_reload_and_protected() {
    let declared = "[[event]]\ntype = \"logins\"\n\
        [[event.collector]]\nname = \"audit\"\nappender = { type = \"null\" }\n\
        [[event.watcher]]\nname = \"storm\"\nthreshold = 100\nwindow_secs = 60\n\
        aggregator = { type = \"fields\", fields = [\"ip\"] }\n\
        action = { type = \"command\", argv = [\"/bin/true\"] }\n";
    let daemon = Daemon::run(declared);
    let event = daemon.get("/event/logins").unwrap().json();
    assert_eq!(event["collectors"][0]["name"], "audit");
    let watcher = daemon.get("/event/logins/watcher/storm").unwrap().json();
    assert_eq!(
        watcher["action"],
        json!({"type": "command", "argv": ["/bin/true"]})
    );

    assert_error(&daemon.delete("/event/logins"), 403, "config file");
    assert_error(
        &daemon.delete("/event/logins/collector/audit"),
        403,
        "config file",
    );
    assert_error(
        &daemon.post("/event/logins/watcher/", WATCHER),
        403,
        "config file",
    );
    assert_eq!(
        daemon
            .post(
                "/event/logins/collector/",
                r#"{"name": "extra", "appender": {"type": "null"}}"#
            )
            .status,
        201
    );

    std::fs::write(&daemon.config, common::config_text(daemon.port, "")).unwrap();
    assert!(daemon.cli(&["reload"]).status.success());
    assert_error(&daemon.get("/event/logins").unwrap(), 404, "not registered");
}

#[test]
fn registry_changes_are_refused_while_shutting_down() {
    let mut daemon = Daemon::run("[workers]\nmin = 1\nmax = 1\n");
    // A request whose body is half sent keeps the worker draining after SIGTERM.
    let held = HalfSent::post(&daemon, "/event/", br#"{"type": "late"}"#);
    daemon.signal(Signal::SIGTERM);
    wait_for("draining", 5 * SECOND, || {
        daemon.workers().iter().any(|(s, _)| s == "shutdown")
    });
    let response = held.finish().unwrap();
    assert_error(&response, 503, "shutting down");
    assert!(daemon.wait_exit(10 * SECOND).success());
}

/// Every applied registry change is logged at info with what it touched, by name, and
/// the client that asked (process-model.md, "An access log and an audit log").
#[test]
fn registry_changes_are_audited_with_the_client_and_the_names_they_touch() {
    let daemon = Daemon::run("");
    register(&daemon, "shop");
    let watcher = r#"{"name": "storm", "threshold": 5, "aggregator": {"type": "single"},
                      "action": {"type": "null"}}"#;
    assert_eq!(daemon.post("/event/shop/watcher/", watcher).status, 201);
    assert_eq!(daemon.delete("/event/shop/watcher/storm").status, 200);
    // A refused change is not an applied one.
    assert_eq!(daemon.post("/event/", r#"{"type": "shop"}"#).status, 409);
    let log = daemon.log();
    for audit in [
        "registry: create_event shop by 127.0.0.1 (version 1)",
        "registry: create_watcher shop/storm by 127.0.0.1 (version 2)",
        "registry: delete_watcher shop/storm by 127.0.0.1 (version 3)",
    ] {
        let line = log.lines().find(|line| line.ends_with(audit));
        let line = line.unwrap_or_else(|| panic!("`{audit}` not in the log:\n{log}"));
        assert!(line.contains(" INFO  master["), "{line}");
    }
    assert!(!log.contains("(version 4)"), "{log}");
}
