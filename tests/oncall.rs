//! On call (alerts.md): silences hold firings back without touching counting, the alert
//! list says what became of every firing, and both survive a crash. Against the real
//! binary, with a real HTTP sink in the test process.

mod common;

use std::time::{Duration, SystemTime};

use common::rest::{assert_error, register_watcher};
use common::sinks::{HttpSink, dead_address};
use common::{Daemon, SECOND, wait_for};
use serde_json::{Value, json};

/// `login` with `storm`: fires on every second event of one `ip`, towards `url`.
fn watch_logins(daemon: &Daemon, url: &str) {
    let watcher = json!({"name": "storm", "threshold": 1,
        "aggregator": {"type": "fields", "fields": ["ip"]},
        "action": {"type": "webhook", "url": url}});
    register_watcher(daemon, "login", &watcher);
}

/// Two events of `ip`: one crossing.
fn cross(daemon: &Daemon, ip: &str) {
    for _ in 0..2 {
        let posted = daemon.post("/event/login/", &json!({"ip": ip}).to_string());
        assert_eq!(posted.status, 200);
    }
}

fn silence_of(matchers: Value) -> String {
    let ends = humantime::format_rfc3339(SystemTime::now() + 2 * 3600 * SECOND);
    json!({"matchers": matchers, "endsAt": ends.to_string(), "createdBy": "oncall-test",
        "comment": "maintenance"})
    .to_string()
}

/// Creates a silence; its id.
fn silence(daemon: &Daemon, matchers: Value) -> String {
    let created = daemon.post("/silences", &silence_of(matchers));
    assert_eq!(created.status, 201, "{created:?}");
    created.json()["silenceID"].as_str().unwrap().to_string()
}

fn alerts(daemon: &Daemon, query: &str) -> Vec<Value> {
    let listed = daemon.get(&format!("/alerts{query}")).unwrap();
    assert_eq!(listed.status, 200, "{listed:?}");
    listed.json().as_array().unwrap().clone()
}

/// The state of each listed alert whose key's `ip` is `ip`, newest first.
fn states_of(daemon: &Daemon, ip: &str) -> Vec<String> {
    alerts(daemon, "")
        .iter()
        .filter(|a| a["key"]["ip"] == ip)
        .map(|a| a["state"].as_str().unwrap().to_string())
        .collect()
}

/// Deliveries the sink got for `ip`.
fn delivered_for(sink: &HttpSink, ip: &str) -> usize {
    sink.requests()
        .iter()
        .filter(|r| serde_json::from_str::<Value>(&r.body).is_ok_and(|b| b["key"]["ip"] == ip))
        .count()
}

#[test]
fn a_silence_on_key_ip_holds_back_one_key_of_two_until_it_is_deleted() {
    let sink = HttpSink::start(Duration::ZERO);
    let daemon = Daemon::run("");
    watch_logins(&daemon, &sink.url("/hook"));
    let id = silence(
        &daemon,
        json!([{"name": "event", "value": "login"}, {"name": "watcher", "value": "storm"},
               {"name": "key.ip", "value": "10\\.0\\.0\\.1", "isRegex": true}]),
    );
    cross(&daemon, "10.0.0.1");
    cross(&daemon, "10.0.0.2");
    wait_for("the other key delivered", 10 * SECOND, || {
        states_of(&daemon, "10.0.0.2") == ["delivered"]
    });
    let silenced = alerts(&daemon, "?state=silenced");
    assert_eq!(silenced.len(), 1, "{silenced:?}");
    assert_eq!(silenced[0]["key"], json!({"ip": "10.0.0.1"}));
    assert_eq!(silenced[0]["silenced_by"], id.as_str());
    assert_eq!(silenced[0]["watcher"], "storm");
    let series = r#"eventsd_firings_silenced_total{event="login",watcher="storm"}"#;
    assert_eq!(daemon.metric(series), Some(1));
    let shown = daemon.get(&format!("/silences/{id}")).unwrap().json();
    assert_eq!(shown["status"]["state"], "active");

    assert_eq!(daemon.delete(&format!("/silences/{id}")).status, 200);
    let shown = daemon.get(&format!("/silences/{id}")).unwrap().json();
    assert_eq!(shown["status"]["state"], "expired");
    cross(&daemon, "10.0.0.1");
    wait_for(
        "the first key delivered after the delete",
        10 * SECOND,
        || delivered_for(&sink, "10.0.0.1") == 1,
    );
    // The sink has it before the runner's word reaches the master's alert list.
    wait_for(
        "the first key's alert listed as delivered",
        10 * SECOND,
        || states_of(&daemon, "10.0.0.1") == ["delivered", "silenced"],
    );
    assert_eq!(delivered_for(&sink, "10.0.0.2"), 1);
}

#[test]
fn a_silence_settles_a_firing_that_waits_on_a_dead_target() {
    let target = dead_address();
    let daemon = Daemon::run("");
    watch_logins(&daemon, &format!("http://{target}/hook"));
    cross(&daemon, "10.0.0.1");
    let mut next_attempt = String::new();
    wait_for("a failed attempt listed", 10 * SECOND, || {
        let listed = alerts(&daemon, "?state=pending");
        let Some(alert) = listed.first() else {
            return false;
        };
        next_attempt = alert["next_attempt_at"].as_str().unwrap_or("").to_string();
        alert["attempts"].as_u64() >= Some(1) && alert["last_error"].is_string()
    });
    assert!(
        alerts(&daemon, "")[0]["target"]
            .as_str()
            .unwrap()
            .contains("webhook")
    );
    let id = silence(&daemon, json!([{"name": "key.ip", "value": "10.0.0.1"}]));
    let listed = alerts(&daemon, "");
    assert_eq!(
        listed[0]["state"], "silenced",
        "settled at once: {listed:?}"
    );
    assert_eq!(listed[0]["silenced_by"], id.as_str());

    let sink = HttpSink::start_on(target, Duration::ZERO);
    cross(&daemon, "10.0.0.2");
    let retry_due = humantime::parse_rfc3339_weak(&next_attempt).unwrap() + 2 * SECOND;
    wait_for(
        "another key delivered, past the silenced one's retry",
        20 * SECOND,
        || delivered_for(&sink, "10.0.0.2") == 1 && SystemTime::now() > retry_due,
    );
    assert_eq!(delivered_for(&sink, "10.0.0.1"), 0, "{:?}", sink.requests());
}

#[test]
fn a_catastrophic_regex_is_linear_and_a_silence_of_nothing_in_particular_is_refused() {
    let sink = HttpSink::start(Duration::ZERO);
    let daemon = Daemon::run("");
    watch_logins(&daemon, &sink.url("/hook"));
    silence(
        &daemon,
        json!([{"name": "key.ip", "value": "(a+)+$", "isRegex": true}]),
    );
    let hostile = format!("{}!", "a".repeat(900));
    cross(&daemon, &hostile);
    cross(&daemon, "aaaa");
    wait_for("the hostile key delivered", 10 * SECOND, || {
        delivered_for(&sink, &hostile) == 1
    });
    wait_for("the matching key silenced", 10 * SECOND, || {
        states_of(&daemon, "aaaa") == ["silenced"]
    });

    for (matchers, mentions) in [
        (json!([]), "matchers"),
        (
            json!([{"name": "key.ip", "value": ".*", "isRegex": true}]),
            "at least one",
        ),
        (
            json!([{"name": "event", "value": "x", "isEqual": false}]),
            "at least one",
        ),
        (
            json!([{"name": "key.ip", "value": "(", "isRegex": true}]),
            "regex",
        ),
        (json!([{"name": "host", "value": "a"}]), "key.FIELD"),
    ] {
        let refused = daemon.post("/silences", &silence_of(matchers));
        assert_error(&refused, 400, mentions);
    }
    assert_error(&daemon.post("/silences", "[1]"), 400, "silence");
    assert_error(&daemon.get("/silences?state=later").unwrap(), 400, "state");
    assert_error(&daemon.get("/alerts?limit=0").unwrap(), 400, "limit");
    assert_error(&daemon.get("/silences/nope").unwrap(), 404, "nope");
}

#[test]
fn without_the_token_silences_cannot_be_made_or_expired() {
    let daemon = Daemon::run("[server]\napi_token = \"s3cret\"\n");
    let body = silence_of(json!([{"name": "event", "value": "login"}]));
    assert_error(&daemon.post("/silences", &body), 401, "api_token");
    let bearer = "Authorization: Bearer s3cret\r\n";
    let created = daemon.send("POST", "/silences", &body, bearer);
    assert_eq!(created.status, 201, "{created:?}");
    let path = format!(
        "/silences/{}",
        created.json()["silenceID"].as_str().unwrap()
    );
    assert_error(&daemon.delete(&path), 401, "api_token");
    let listed = daemon.get("/silences?state=active").unwrap().json();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(daemon.send("DELETE", &path, "", bearer).status, 200);
}

#[test]
fn silences_and_the_alert_history_survive_a_kill_9_of_the_master() {
    let sink = HttpSink::start(Duration::ZERO);
    let mut daemon = Daemon::run("");
    watch_logins(&daemon, &sink.url("/hook"));
    let id = silence(&daemon, json!([{"name": "key.ip", "value": "10.0.0.1"}]));
    cross(&daemon, "10.0.0.1");
    cross(&daemon, "10.0.0.2");
    wait_for("one delivered, one silenced", 10 * SECOND, || {
        states_of(&daemon, "10.0.0.2") == ["delivered"]
            && states_of(&daemon, "10.0.0.1") == ["silenced"]
    });
    let before = alerts(&daemon, "");

    nix::sys::signal::kill(daemon.master_pid(), nix::sys::signal::Signal::SIGKILL).unwrap();
    daemon.wait_exit(5 * SECOND);
    daemon.spawn_foreground(&[]);
    daemon.wait_ready();

    assert_eq!(alerts(&daemon, ""), before);
    let shown = daemon.get(&format!("/silences/{id}")).unwrap().json();
    assert_eq!(shown["status"]["state"], "active");
    cross(&daemon, "10.0.0.1");
    wait_for("the silence still holds", 10 * SECOND, || {
        states_of(&daemon, "10.0.0.1") == ["silenced", "silenced"]
    });
}

#[test]
fn every_firing_is_in_the_alert_list_after_a_graceful_stop() {
    // The list's lines are written once a second; a stop writes what the last second
    // fired, the firings of the counts the stop itself counts included.
    let sink = HttpSink::start(Duration::ZERO);
    let mut daemon = Daemon::run("");
    watch_logins(&daemon, &sink.url("/hook"));
    let ips: Vec<String> = (1..=20).map(|n| format!("10.0.1.{n}")).collect();
    for ip in &ips {
        cross(&daemon, ip);
    }

    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(daemon.wait_exit(30 * SECOND).success());
    daemon.spawn_foreground(&[]);
    daemon.wait_ready();

    let listed = alerts(&daemon, "");
    for ip in &ips {
        let firings = listed.iter().filter(|a| a["key"]["ip"] == *ip).count();
        assert_eq!(firings, 1, "{ip}: {listed:#?}");
    }
}

#[test]
fn a_planted_silences_file_loads_what_is_valid_and_logs_the_rest() {
    let mut daemon = Daemon::new("");
    let path = daemon.path("state/silences.json");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let now = SystemTime::now();
    let at = |offset: Duration| humantime::format_rfc3339(now + offset).to_string();
    let valid = json!({"id": "6f0c1d2e-0000-4000-8000-000000000001",
        "matchers": [{"name": "event", "value": "login"}],
        "startsAt": at(Duration::ZERO), "endsAt": at(3600 * SECOND),
        "updatedAt": at(Duration::ZERO), "createdBy": "ops", "comment": ""});
    let mut everything = valid.clone();
    everything["id"] = json!("6f0c1d2e-0000-4000-8000-000000000002");
    everything["matchers"] = json!([{"name": "key.ip", "value": ".*", "isRegex": true}]);
    let mut forever = valid.clone();
    forever["id"] = json!("6f0c1d2e-0000-4000-8000-000000000003");
    forever["endsAt"] = json!(at(400 * 86_400 * SECOND));
    let planted = json!([valid, everything, forever, "junk", {"id": 1}]);
    std::fs::write(&path, planted.to_string()).unwrap();
    daemon.spawn_foreground(&[]);
    daemon.wait_ready();

    let listed = daemon.get("/silences").unwrap().json();
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["6f0c1d2e-0000-4000-8000-000000000001"]);
    let log = daemon.log();
    for entry in 1..=4 {
        assert!(
            log.contains(&format!("entry {entry}:")),
            "entry {entry}: {log}"
        );
    }
}

#[test]
fn eventsctl_silences_and_lists_alerts_as_the_api_shows_them() {
    let sink = HttpSink::start(Duration::ZERO);
    let daemon = Daemon::run("[server]\napi_token = \"s3cret\"\n");
    let bearer = "Authorization: Bearer s3cret\r\n";
    for (path, body) in [
        ("/event/", json!({"type": "login"})),
        (
            "/event/login/watcher/",
            json!({"name": "storm", "threshold": 1,
                "aggregator": {"type": "fields", "fields": ["ip"]},
                "action": {"type": "webhook", "url": sink.url("/hook")}}),
        ),
    ] {
        let created = daemon.send("POST", path, &body.to_string(), bearer);
        assert_eq!(created.status, 201, "{created:?}");
    }
    let added = daemon.ctl(&[
        "silence",
        "add",
        "event=login",
        "watcher=storm",
        "key.ip=~10\\.0\\..*",
        "--for",
        "2h",
        "--comment",
        "load test",
    ]);
    assert!(added.status.success(), "{}", common::stderr(&added));
    let id = common::stdout(&added).trim().to_string();
    let shown = daemon.get(&format!("/silences/{id}")).unwrap().json();
    assert_eq!(shown["comment"], "load test");
    assert_eq!(shown["matchers"][2]["isRegex"], true);
    let span = |field: &str| humantime::parse_rfc3339_weak(shown[field].as_str().unwrap()).unwrap();
    let lasts = span("endsAt").duration_since(span("startsAt")).unwrap();
    // From the command's now to the daemon's: 2 h, less the moment between them.
    assert!(
        (2 * 3600 - 60..=2 * 3600).contains(&lasts.as_secs()),
        "{lasts:?}"
    );
    let listed = common::stdout(&daemon.ctl(&["silence", "list"]));
    assert!(
        listed.contains(&id) && listed.contains("key.ip=~10\\.0\\..*"),
        "{listed}"
    );

    cross(&daemon, "10.0.0.7");
    cross(&daemon, "192.168.0.7");
    wait_for("one delivered, one silenced", 10 * SECOND, || {
        states_of(&daemon, "192.168.0.7") == ["delivered"]
    });
    let json_listed = daemon.ctl(&["alerts", "--json"]);
    assert!(json_listed.status.success());
    let from_cli: Value = serde_json::from_str(&common::stdout(&json_listed)).unwrap();
    assert_eq!(from_cli, json!(alerts(&daemon, "")));
    let silenced = common::stdout(&daemon.ctl(&["alerts", "--state", "silenced"]));
    assert!(
        silenced.contains("10.0.0.7") && !silenced.contains("192.168"),
        "{silenced}"
    );
    let state = common::stdout(&daemon.ctl(&["watcher", "state", "login", "storm"]));
    assert!(state.contains("threshold 1"), "{state}");

    let refused = daemon.ctl(&["silence", "add", "key.ip=~.*"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        common::stderr(&refused).contains("at least one matcher"),
        "{refused:?}"
    );
    let unknown = daemon.ctl(&["silence", "expire", "6f0c1d2e-0000-4000-8000-00000000000f"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(common::stderr(&unknown).contains("does not exist"));
    assert!(daemon.ctl(&["silence", "expire", &id]).status.success());
    let expired = common::stdout(&daemon.ctl(&["silence", "list", "--expired", "--json"]));
    assert_eq!(
        serde_json::from_str::<Value>(&expired).unwrap()[0]["id"],
        id.as_str()
    );
}

#[test]
fn a_watchers_state_lists_its_hottest_keys_and_hides_their_values_where_told() {
    let daemon =
        Daemon::run("[server]\napi_token = \"s3cret\"\nexpose_keys_without_token = false\n");
    let bearer = "Authorization: Bearer s3cret\r\n";
    for (path, body) in [
        ("/event/", json!({"type": "login"})),
        (
            "/event/login/watcher/",
            json!({"name": "storm", "threshold": 10, "window_secs": 3600,
                "aggregator": {"type": "fields", "fields": ["ip"]},
                "action": {"type": "null"}}),
        ),
    ] {
        let created = daemon.send("POST", path, &body.to_string(), bearer);
        assert_eq!(created.status, 201, "{created:?}");
    }
    for ip in ["10.0.0.1", "10.0.0.1", "10.0.0.1", "10.0.0.2"] {
        let posted = daemon.post("/event/login/", &json!({"ip": ip}).to_string());
        assert_eq!(posted.status, 200);
    }
    let path = "/event/login/watcher/storm/state";
    let expected = json!([{"key": {"ip": "10.0.0.1"}, "count": 3},
                          {"key": {"ip": "10.0.0.2"}, "count": 1}]);
    wait_for("the four events counted", 10 * SECOND, || {
        daemon.send("GET", path, "", bearer).json()["keys"] == expected
    });
    let state = daemon.send("GET", path, "", bearer).json();
    assert_eq!(
        (
            &state["threshold"],
            &state["keys_held"],
            &state["last_firing"]
        ),
        (&json!(10), &json!(2), &Value::Null)
    );
    let hidden = daemon.get(path).unwrap().json();
    assert_eq!(hidden["keys"][0], json!({"key": {"ip": "***"}, "count": 3}));
    let one = daemon
        .send("GET", &format!("{path}?limit=1"), "", bearer)
        .json();
    assert_eq!(one["keys"].as_array().unwrap().len(), 1);
    let unknown = daemon.get("/event/login/watcher/nobody/state").unwrap();
    assert_error(&unknown, 404, "nobody");
}
