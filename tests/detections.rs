//! Rules other than threshold (rules.md) against the real binary: watchers registered
//! over HTTP, events posted, firings received by a webhook sink the test runs. The
//! rules' edges are pinned by the scenario table (tests/rules.rs); here, that they
//! reach a user.

mod common;

use std::time::{Duration, Instant};

use common::redis::RedisServer;
use common::rest::register_watcher;
use common::rules::saved_values_per_key;
use common::sinks::{HttpSink, SmtpSink};
use common::{Daemon, SECOND, wait_for};
use serde_json::{Value, json};

const MILLI: Duration = Duration::from_millis(1);

/// A heartbeat far more often than the 2 s windows below, even on a loaded machine.
const BEAT: Duration = Duration::from_millis(100);

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
    register_watcher(
        &daemon,
        "logins",
        &json!({"name": "heartbeat", "rule": "flatline", "threshold": 1, "window_secs": 2,
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
    register_watcher(
        &daemon,
        "logins",
        &json!({"name": "hosts", "rule": "flatline", "threshold": 1, "window_secs": 2,
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

/// `expect` names keys that are never evicted: each must be a key the workers can count
/// under itself (no longer than `watchers.max_key_bytes`: a longer one would be counted
/// under its digest and so fire for a host that does send), and a type's watchers together
/// expect at most 10,000 keys (they share its counter tables beside `max_keys` others).
/// Refused with a 400 naming the field, and the watcher not created.
#[test]
fn expected_keys_too_long_or_too_many_for_their_type_are_refused() {
    let daemon = Daemon::run("[watchers]\nmax_fields = 2\nmax_key_bytes = 64\n");
    assert_eq!(daemon.post("/event/", r#"{"type": "beats"}"#).status, 201);
    let flatline = |name: &str, expect: Vec<String>| {
        json!({"name": name, "rule": "flatline", "threshold": 1, "window_secs": 60,
               "aggregator": {"type": "fields", "fields": ["host"]}, "expect": expect,
               "action": {"type": "null"}})
        .to_string()
    };
    let refused = |body: String, name: &str, says: &str| {
        let response = daemon.post("/event/beats/watcher/", &body);
        assert_eq!(response.status, 400, "{response:?}");
        let message = response.json()["message"].as_str().unwrap().to_string();
        assert!(
            message.contains("`expect`") && message.contains(says),
            "{message}"
        );
        let path = format!("/event/beats/watcher/{name}");
        assert_eq!(daemon.get(&path).unwrap().status, 404, "{name} created");
    };

    refused(
        flatline("long", vec!["h".repeat(100)]),
        "long",
        "more than watchers.max_key_bytes (64)",
    );
    let hosts: Vec<String> = (0..1000).map(|n| format!("h{n}")).collect();
    for n in 0..10 {
        let body = flatline(&format!("w{n}"), hosts.clone());
        let response = daemon.post("/event/beats/watcher/", &body);
        assert_eq!(response.status, 201, "{response:?}");
    }
    refused(
        flatline("one-more", vec!["h".to_string()]),
        "one-more",
        "would expect 10001 keys, more than 10000",
    );
}

/// Posts `payload` `per_beat` times every `beat` for `phase`, in one `_bulk` each time.
fn post_at_rate(
    daemon: &Daemon,
    payload: &Value,
    per_beat: usize,
    beat: Duration,
    phase: Duration,
) {
    let lines = format!("{payload}\n").repeat(per_beat);
    let started = Instant::now();
    while started.elapsed() < phase {
        let response = daemon.post("/event/logins/_bulk", &lines);
        assert_eq!(response.status, 200, "{response:?}");
        std::thread::sleep(beat);
    }
}

#[test]
fn a_spike_from_5_to_50_events_per_window_fires_once() {
    let sink = HttpSink::start(Duration::ZERO);
    let daemon = Daemon::run("");
    register_watcher(
        &daemon,
        "logins",
        &json!({"name": "surge", "rule": "spike", "window_secs": 2, "ratio": 5,
               "direction": "up", "min_previous": 3, "aggregator": {"type": "single"},
               "action": {"type": "webhook", "url": sink.url("/hooks")}}),
    );
    // 5 events per 2 s window, past the key's baseline of two windows: no spike.
    post_at_rate(&daemon, &json!({}), 1, 400 * MILLI, 6 * SECOND);
    assert!(firings(&sink).is_empty(), "{:?}", firings(&sink));
    // 50 at once, then quiet: one spike. (A surge that went on could, by the 1 s
    // buckets, stop holding for a second and hold again: a second spike, by the rule.)
    let burst = format!("{}\n", json!({})).repeat(50);
    let response = daemon.post("/event/logins/_bulk", &burst);
    assert_eq!(response.status, 200, "{response:?}");
    wait_for("the spike's firing", 15 * SECOND, || {
        !firings(&sink).is_empty()
    });
    // Quiet for two windows more: still the one firing.
    let quiet = Instant::now();
    wait_for("two quiet windows", 10 * SECOND, || {
        quiet.elapsed() > 4 * SECOND
    });

    let fired = firings(&sink);
    assert_eq!(fired.len(), 1, "{fired:?}");
    let spike = &fired[0];
    assert_eq!(spike["rule"], "spike");
    assert_eq!(spike["ratio"], 5.0);
    let (current, previous) = (
        spike["current"].as_u64().unwrap(),
        spike["previous"].as_u64().unwrap(),
    );
    assert!(previous >= 3 && current >= 5 * previous, "{spike}");
    assert_eq!(
        spike["text"],
        format!("Event `logins` rose from {previous} to {current} per 2 s")
    );
}

/// Whether the master counted `n` logins (the watchers have judged them).
fn counted(daemon: &Daemon, n: u64) -> bool {
    daemon.metric("eventsd_events_counted_total{type=\"logins\"}") == Some(n)
}

/// Posts one login from `ip` for each of `users`.
fn logins_from(daemon: &Daemon, ip: &str, users: impl Iterator<Item = String>) {
    let lines: String = users
        .map(|user| format!("{}\n", json!({"ip": ip, "user": user})))
        .collect();
    let response = daemon.post("/event/logins/_bulk", &lines);
    assert_eq!(response.status, 200, "{response:?}");
}

/// A cardinality watcher of the users seen per ip within 300 s, at most `max_distinct`.
fn stuffing(max_distinct: u64, action: Value) -> Value {
    json!({"name": "stuffing", "rule": "cardinality", "field": "user",
           "max_distinct": max_distinct, "window_secs": 300,
           "aggregator": {"type": "fields", "fields": ["ip"]}, "action": action})
}

#[test]
fn twenty_one_distinct_users_from_one_ip_fire_a_cardinality_watcher_once_twenty_do_not() {
    let sink = HttpSink::start(Duration::ZERO);
    let daemon = Daemon::run("");
    register_watcher(
        &daemon,
        "logins",
        &stuffing(20, json!({"type": "webhook", "url": sink.url("/hooks")})),
    );
    // 20 users from one address, each twice, and 21 from another, then more of them.
    logins_from(
        &daemon,
        "10.0.0.20",
        (0..40).map(|n| format!("user{}", n % 20)),
    );
    logins_from(&daemon, "10.0.0.21", (0..21).map(|n| format!("user{n}")));
    wait_for("the cardinality firing", 15 * SECOND, || {
        !firings(&sink).is_empty()
    });
    logins_from(&daemon, "10.0.0.21", (21..100).map(|n| format!("user{n}")));
    logins_from(&daemon, "10.0.0.20", (0..20).map(|n| format!("user{n}")));
    wait_for("every login counted", 15 * SECOND, || counted(&daemon, 160));

    let fired = firings(&sink);
    assert_eq!(fired.len(), 1, "{fired:?}");
    let stuffing = &fired[0];
    assert_eq!(stuffing["rule"], "cardinality");
    assert_eq!(stuffing["key"], json!({"ip": "10.0.0.21"}));
    assert_eq!(
        (
            stuffing["distinct"].as_u64(),
            stuffing["max_distinct"].as_u64()
        ),
        (Some(21), Some(20))
    );
    assert_eq!(
        stuffing["text"],
        "21 distinct user values for ip=\"10.0.0.21\" in 300 s (limit 20)"
    );
}

/// rules.md, "Firings": the e-mail carries what the webhook document does, in the rule's
/// words: its `text`, the rule, and its figures (never threshold's for another rule).
#[test]
fn a_cardinality_firing_mails_the_rule_its_figures_and_its_text() {
    let smtp = SmtpSink::start();
    let daemon = Daemon::run(&smtp.config());
    register_watcher(
        &daemon,
        "logins",
        &stuffing(
            2,
            json!({"type": "email", "to": ["ops@example.com"], "subject": "Stuffing"}),
        ),
    );
    logins_from(&daemon, "10.0.0.3", (0..3).map(|n| format!("user{n}")));
    wait_for("the mail", 15 * SECOND, || !smtp.mails().is_empty());

    let mail = &smtp.mails()[0].data;
    for part in [
        "3 distinct user values for ip=\"10.0.0.3\" in 300 s (limit 2)",
        "Watcher: stuffing",
        "Key: {\"ip\":\"10.0.0.3\"}",
        "Rule: cardinality",
        "Distinct values: 3 (limit 2)",
        "Window: the last 300 s",
    ] {
        assert!(mail.contains(part), "`{part}` missing from {mail}");
    }
    assert!(!mail.contains("threshold"), "threshold's figures: {mail}");
}

/// Hostile input stays bounded (rules.md): a million distinct users from one address
/// leave the cardinality key with `max_distinct + 1` hashed values, and a million
/// distinct hosts leave a flatline watcher `max_keys` keys, its queue of keys due with
/// them: the master grows by far less than a million of either would take (a key
/// waiting in the due queue alone costs over 100 bytes).
#[test]
fn a_million_distinct_values_and_keys_leave_the_master_bounded_by_the_rules_limits() {
    let daemon = Daemon::run("[watchers]\nmax_keys = 1000\n[server]\nmax_body_bytes = 4194304\n");
    register_watcher(
        &daemon,
        "logins",
        &json!({"name": "stuffing", "rule": "cardinality", "field": "user",
               "max_distinct": 20, "window_secs": 3600,
               "aggregator": {"type": "fields", "fields": ["ip"]}, "action": {"type": "null"}}),
    );
    let hosts = json!({"name": "hosts", "rule": "flatline", "threshold": 1,
        "window_secs": 3600, "aggregator": {"type": "fields", "fields": ["host"]},
        "action": {"type": "null"}});
    let created = daemon.post("/event/logins/watcher/", &hosts.to_string());
    assert_eq!(created.status, 201, "{created:?}");
    let master = daemon.master_pid();
    let rss_before = resident_kib(master);
    let per_batch = 50_000;
    for batch in 0..20 {
        let body: String = (batch * per_batch..(batch + 1) * per_batch)
            .map(|n| format!("{{\"ip\":\"10.0.0.1\",\"user\":\"u{n}\",\"host\":\"h{n}\"}}\n"))
            .collect();
        let response = daemon.post("/event/logins/_bulk", &body);
        assert_eq!(response.status, 200, "{}", response.body);
    }
    // A debug build on a loaded machine: a minute or more.
    wait_for("a million logins counted", 240 * SECOND, || {
        counted(&daemon, 1_000_000)
    });

    let series = |family: &str| format!("{family}{{event=\"logins\",watcher=\"hosts\"}}");
    assert_eq!(daemon.metric(&series("eventsd_watcher_keys")), Some(1000));
    assert_eq!(
        daemon.metric(&series("eventsd_watcher_key_evictions_total")),
        Some(999_000)
    );
    wait_for("the cardinality key saved", 30 * SECOND, || {
        saved_values_per_key(&daemon) == [21]
    });
    let grown = resident_kib(master).saturating_sub(rss_before);
    eprintln!("master RSS grew by {grown} KiB for a million values and a million keys");
    assert!(grown < 64 * 1024, "master grew by {grown} KiB");
}

fn resident_kib(pid: nix::unistd::Pid) -> u64 {
    common::proc_status_number(pid, "VmRSS").expect("the process runs")
}

#[test]
fn a_new_country_fires_once_after_learning_a_known_one_never() {
    let sink = HttpSink::start(Duration::ZERO);
    let daemon = Daemon::run("");
    register_watcher(
        &daemon,
        "logins",
        &json!({"name": "new-country", "rule": "new_value", "field": "country",
               "learn_secs": 2, "aggregator": {"type": "fields", "fields": ["user"]},
               "action": {"type": "webhook", "url": sink.url("/hooks")}}),
    );
    let login = |country: &str| beat(&daemon, &json!({"user": 42, "country": country}));
    login("FR");
    login("DE");
    let learning = Instant::now();
    wait_for("the end of learning", 10 * SECOND, || {
        learning.elapsed() > 3 * SECOND
    });
    for _ in 0..3 {
        login("FR");
        login("NZ");
        login("DE");
    }
    wait_for("the new country's firing", 15 * SECOND, || {
        !firings(&sink).is_empty()
    });
    beat(&daemon, &json!({"user": 42}));
    wait_for("every login counted", 15 * SECOND, || counted(&daemon, 12));

    let fired = firings(&sink);
    assert_eq!(fired.len(), 1, "{fired:?}");
    let new = &fired[0];
    assert_eq!(new["rule"], "new_value");
    assert_eq!(new["key"], json!({"user": 42}));
    assert_eq!(new["value"], json!({"country": "NZ"}));
    assert_eq!(new["text"], "New country=\"NZ\" for user=42");
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
    register_watcher(
        &nodes[0],
        "logins",
        &json!({"name": "heartbeat", "rule": "flatline", "threshold": 1, "window_secs": 2,
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
