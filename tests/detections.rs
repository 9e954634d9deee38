//! Rules other than threshold (rules.md) against the real binary: watchers registered
//! over HTTP, events posted, firings received by a webhook sink the test runs. The
//! rules' edges are pinned by the scenario table (tests/rules.rs); here, that they
//! reach a user.

mod common;

use std::time::{Duration, Instant};

use common::redis::RedisServer;
use common::sinks::HttpSink;
use common::{Daemon, wait_for};
use serde_json::{Value, json};

const SECOND: Duration = Duration::from_secs(1);

/// A heartbeat far more often than the 2 s windows below, even on a loaded machine.
const BEAT: Duration = Duration::from_millis(100);

fn watched(daemon: &Daemon, watcher: Value) {
    assert_eq!(daemon.post("/event/", r#"{"type": "logins"}"#).status, 201);
    let response = daemon.post("/event/logins/watcher/", &watcher.to_string());
    assert_eq!(response.status, 201, "{response:?}");
}

fn beat(daemon: &Daemon, payload: &Value) {
    assert_eq!(
        daemon.post("/event/logins/", &payload.to_string()).status,
        200
    );
}

fn firings(sink: &HttpSink) -> Vec<Value> {
    sink.requests()
        .iter()
        .map(|r| serde_json::from_str(&r.body).expect("a firing document"))
        .collect()
}

/// Posts each payload every `BEAT` until `done` holds, at most `deadline`.
fn beat_until(
    daemon: &Daemon,
    payloads: &[Value],
    deadline: Duration,
    mut done: impl FnMut() -> bool,
) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < deadline,
            "gave up beating after {deadline:?}"
        );
        for payload in payloads {
            beat(daemon, payload);
        }
        std::thread::sleep(BEAT);
    }
}

#[test]
fn a_flatline_fires_once_when_events_stop_and_once_resolved_when_they_resume() {
    let sink = HttpSink::start(Duration::ZERO);
    let daemon = Daemon::run("");
    watched(
        &daemon,
        json!({"name": "heartbeat", "rule": "flatline", "threshold": 1, "window_secs": 2,
               "send_resolved": true, "aggregator": {"type": "single"},
               "action": {"type": "webhook", "url": sink.url("/hooks")}}),
    );
    // Past the grace (one window after the watcher's creation), beating.
    let started = Instant::now();
    beat_until(&daemon, &[json!({})], 20 * SECOND, || {
        started.elapsed() > 3 * SECOND
    });
    assert!(
        firings(&sink).is_empty(),
        "a beating key fired: {:?}",
        firings(&sink)
    );

    wait_for("the flatline firing", 15 * SECOND, || {
        !firings(&sink).is_empty()
    });
    beat(&daemon, &json!({}));
    wait_for("the resolved firing", 15 * SECOND, || {
        firings(&sink).len() >= 2
    });

    let fired = firings(&sink);
    assert_eq!(fired.len(), 2, "{fired:?}");
    let (silence, back) = (&fired[0], &fired[1]);
    assert_eq!(silence["rule"], "flatline");
    assert_eq!(silence["count"], 0);
    assert_eq!(silence["threshold"], 1);
    assert!(silence.get("resolved").is_none(), "{silence}");
    assert_eq!(
        silence["text"],
        "No `logins` event in the last 2 s (expected at least 1)"
    );
    assert_eq!(back["resolved"], true);
    assert_eq!(back["count"], 1);
    assert_eq!(
        back["text"],
        "`logins` events are back: 1 in the last 2 s (expected at least 1)"
    );
}

#[test]
fn a_fields_flatline_fires_for_the_expected_host_that_never_sent_anything() {
    let sink = HttpSink::start(Duration::ZERO);
    let daemon = Daemon::run("");
    watched(
        &daemon,
        json!({"name": "hosts", "rule": "flatline", "threshold": 1, "window_secs": 2,
               "aggregator": {"type": "fields", "fields": ["host"]},
               "expect": ["a", "b", "c"],
               "action": {"type": "webhook", "url": sink.url("/hooks")}}),
    );
    let beating = [json!({"host": "a"}), json!({"host": "b"})];
    beat_until(&daemon, &beating, 30 * SECOND, || {
        !firings(&sink).is_empty()
    });

    let fired = firings(&sink);
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert_eq!(fired[0]["key"], json!({"host": "c"}));
    assert_eq!(
        fired[0]["text"],
        "No `logins` event for host=\"c\" in the last 2 s (expected at least 1)"
    );
}

#[test]
fn a_flatline_definition_without_its_window_is_refused_naming_it() {
    let daemon = Daemon::run("");
    assert_eq!(daemon.post("/event/", r#"{"type": "logins"}"#).status, 201);
    let response = daemon.post(
        "/event/logins/watcher/",
        r#"{"name": "hb", "rule": "flatline", "threshold": 1,
            "aggregator": {"type": "single"}, "action": {"type": "null"}}"#,
    );
    assert_eq!(response.status, 400, "{response:?}");
    let message = response.json()["message"].as_str().unwrap().to_string();
    assert!(message.contains("`window_secs`"), "{message}");
}

/// A node of a cluster on `redis`, with Redis reached.
fn node(name: &str, redis: &RedisServer) -> Daemon {
    let daemon = Daemon::run(&format!(
        "[cluster]\nurls = [\"{}\"]\nnode_name = \"{name}\"\ntimeout_ms = 500\n",
        redis.url()
    ));
    wait_for(&format!("node {name} reaching Redis"), 10 * SECOND, || {
        daemon
            .status()
            .is_some_and(|s| s["cluster"]["redis_reachable"] == true)
    });
    daemon
}

#[test]
fn three_nodes_sharing_one_redis_fire_a_flatline_and_its_recovery_once_each() {
    let redis = RedisServer::start();
    let sink = HttpSink::start(Duration::ZERO);
    let nodes = [node("a", &redis), node("b", &redis), node("c", &redis)];
    watched(
        &nodes[0],
        json!({"name": "heartbeat", "rule": "flatline", "threshold": 1, "window_secs": 2,
               "send_resolved": true, "aggregator": {"type": "single"},
               "action": {"type": "webhook", "url": sink.url("/hooks")}}),
    );
    for other in &nodes[1..] {
        wait_for("the watcher on every node", 5 * SECOND, || {
            other
                .get("/event/logins/watcher/heartbeat")
                .is_ok_and(|r| r.status == 200)
        });
    }
    // Heartbeats spread over the nodes, past the grace.
    let started = Instant::now();
    let mut turn = 0;
    while started.elapsed() < 3 * SECOND {
        beat(&nodes[turn % 3], &json!({}));
        turn += 1;
        std::thread::sleep(BEAT);
    }
    wait_for("the flatline firing", 15 * SECOND, || {
        !firings(&sink).is_empty()
    });
    beat(&nodes[1], &json!({}));
    wait_for("the resolved firing", 15 * SECOND, || {
        firings(&sink).len() >= 2
    });

    let fired = firings(&sink);
    assert_eq!(
        fired.len(),
        2,
        "one firing per crossing cluster-wide: {fired:?}"
    );
    assert_eq!(fired[0]["rule"], "flatline");
    assert!(fired[0].get("resolved").is_none(), "{}", fired[0]);
    assert_eq!(fired[1]["resolved"], true);
    for firing in &fired {
        assert!(firing.get("degraded").is_none(), "{firing}");
        assert!(["a", "b", "c"].contains(&firing["node"].as_str().unwrap()));
    }
    assert_ne!(fired[0]["id"], fired[1]["id"]);
}
