//! A cluster node while Redis is down (cluster.md "When Redis is unreachable"): it fires
//! from its own counts with `"degraded": true`, answers registry changes 503 (504 when
//! Redis took one without answering), and drops what it counted alone once Redis is back
//! (never merged: nothing fires twice). Against the real binary and a real
//! `redis-server` the test stops and starts.

mod common;

use std::time::Duration;

use common::redis::{RedisServer, node};
use common::rest::{post_events, register_watcher, webhook};
use common::rules::saved_values_per_key;
use common::sinks::HttpSink;
use common::{Daemon, SECOND, wait_for};
use serde_json::{Value, json};

fn degraded(daemon: &Daemon) -> Option<u64> {
    daemon.metric("eventsd_cluster_degraded")
}

fn firings(sink: &HttpSink) -> Vec<Value> {
    sink.requests()
        .iter()
        .map(|r| serde_json::from_str(&r.body).unwrap())
        .collect()
}

#[test]
fn while_redis_is_down_firings_are_degraded_changes_get_503_and_local_counts_are_dropped_after() {
    let mut redis = RedisServer::start();
    let daemon = node("a", "standalone", &[redis.url()]);
    let sink = HttpSink::start(Duration::ZERO);
    let watcher = json!({"name": "storm", "threshold": 5, "aggregator": {"type": "single"},
        "action": webhook(&sink.url("/hook"))});
    register_watcher(&daemon, "logins", &watcher);

    redis.stop();
    // Once the node knows: what it sent before may have been counted, and is sent
    // again later, never counted alone.
    wait_for("degraded", 20 * SECOND, || degraded(&daemon) == Some(1));
    post_events(&daemon, "logins", &json!({}), 6);
    wait_for("a firing from the node's own counts", 20 * SECOND, || {
        sink.requests().len() == 1
    });
    let alone = &firings(&sink)[0];
    assert_eq!(alone["degraded"], true, "{alone}");
    assert_eq!(alone["count"], 6, "{alone}");
    assert!(alone.get("crossing").is_none(), "decided alone: {alone}");

    let change = daemon.post("/event/", &json!({"type": "deploys"}).to_string());
    common::rest::assert_error(&change, 503, "(Redis) is unreachable");
    let deletion = daemon.delete("/event/logins/watcher/storm");
    common::rest::assert_error(&deletion, 503, "(Redis) is unreachable");
    assert_eq!(daemon.get("/event/deploys/").unwrap().status, 404);

    post_events(&daemon, "logins", &json!({}), 4);
    wait_for("4 events counted alone, saved", 20 * SECOND, || {
        daemon.counted_on_disk() == 4
    });

    redis.restart();
    wait_for("degraded no more", 20 * SECOND, || {
        degraded(&daemon) == Some(0)
    });
    wait_for("the counts made alone dropped", 20 * SECOND, || {
        daemon.counted_on_disk() == 0
    });
    assert!(daemon.log().contains("counted alone meanwhile are dropped"));
    // Counting is shared again, from zero: Redis never gets the 4 made alone.
    post_events(&daemon, "logins", &json!({}), 6);
    wait_for("the shared crossing", 20 * SECOND, || {
        sink.requests().len() == 2
    });
    let shared = &firings(&sink)[1];
    assert!(
        matches!(shared.get("degraded"), None | Some(Value::Bool(false))),
        "{shared}"
    );
    assert!(shared["crossing"].is_string(), "decided by Redis: {shared}");
    assert_eq!(shared["count"], 6, "{shared}");
    assert_eq!(redis.counted(), 0, "the crossing reset the shared count");
    assert_eq!(
        daemon
            .post("/event/", &json!({"type": "deploys"}).to_string())
            .status,
        201
    );
}

fn logins(daemon: &Daemon, users: std::ops::Range<usize>) {
    for n in users {
        let login = json!({"ip": "10.0.0.7", "user": format!("u{n}")});
        post_events(daemon, "logins", &login, 1);
    }
}

/// Cardinality's values are counts like the others (README, "When Redis is down"): those
/// a node saw alone are dropped when Redis is back, never handed over, so Redis judges
/// the key on what it saw itself: 4 users alone and 2 after make no episode, 4 more do.
#[test]
fn distinct_values_seen_alone_while_redis_is_down_are_dropped_when_it_is_back() {
    let mut redis = RedisServer::start();
    let daemon = node("a", "standalone", &[redis.url()]);
    let sink = HttpSink::start(Duration::ZERO);
    let action = webhook(&sink.url("/hook"));
    let stuffing = json!({"name": "stuffing", "rule": "cardinality", "field": "user",
        "max_distinct": 5, "window_secs": 300,
        "aggregator": {"type": "fields", "fields": ["ip"]}, "action": action});
    register_watcher(&daemon, "logins", &stuffing);
    let marker = json!({"name": "marker", "threshold": 1,
        "aggregator": {"type": "fields", "fields": ["mark"]}, "action": action});
    register_watcher(&daemon, "marks", &marker);

    redis.stop();
    wait_for("degraded", 20 * SECOND, || degraded(&daemon) == Some(1));
    logins(&daemon, 0..4);
    wait_for("4 values seen alone, saved", 20 * SECOND, || {
        saved_values_per_key(&daemon).iter().sum::<usize>() == 4
    });

    redis.restart();
    wait_for("degraded no more", 20 * SECOND, || {
        degraded(&daemon) == Some(0)
    });
    wait_for("the values seen alone dropped", 20 * SECOND, || {
        saved_values_per_key(&daemon).iter().sum::<usize>() == 0
    });
    // 2 new users: 6 with those seen alone, 2 in Redis, which has the say.
    logins(&daemon, 4..6);
    post_events(&daemon, "marks", &json!({"mark": 1}), 2);
    wait_for(
        "the marker's crossing, after the logins",
        20 * SECOND,
        || !firings(&sink).is_empty(),
    );
    assert_eq!(firings(&sink).len(), 1, "{:?}", firings(&sink));
    // 4 more: 6 distinct in Redis.
    logins(&daemon, 6..10);
    wait_for("the shared episode", 20 * SECOND, || {
        firings(&sink).len() == 2
    });
    let shared = &firings(&sink)[1];
    assert_eq!(shared["watcher"], "stuffing", "{shared}");
    assert_eq!(shared["distinct"], 6, "{shared}");
    assert!(shared["crossing"].is_string(), "decided by Redis: {shared}");
    assert!(shared.get("degraded").is_none(), "{shared}");
}

/// A registry change Redis takes but does not answer in time (stopped past
/// `cluster.timeout_ms`) is in doubt: Redis runs it when it resumes. It is answered 504
/// "may or may not be applied", never 503 (which says "not applied"), and the node has
/// it once Redis ran it. Before: 503, and the type there all the same.
#[test]
fn a_registry_change_redis_does_not_answer_in_time_is_answered_504_not_503() {
    let redis = RedisServer::start();
    let daemon = node("a", "standalone", &[redis.url()]);
    redis.pause();
    let reply = daemon.post("/event/", &json!({"type": "doubted"}).to_string());
    redis.resume();
    common::rest::assert_error(&reply, 504, "may or may not be applied");
    wait_for(
        "the change Redis ran after all, on the node",
        30 * SECOND,
        || {
            daemon
                .get("/event/doubted/")
                .is_ok_and(|reply| reply.status == 200)
        },
    );
}

/// A duration Redis could not take as a TTL (an `EXPIRE` past its bound fails the call)
/// made every node count alone as soon as one event reached the watcher: each duration
/// is refused past 10 years, with a 400 naming it, the watcher not created, and the node
/// keeps counting in Redis.
#[test]
fn a_duration_redis_could_not_expire_is_refused_and_the_node_keeps_sharing() {
    let redis = RedisServer::start();
    let daemon = node("a", "standalone", &[redis.url()]);
    assert_eq!(daemon.post("/event/", r#"{"type": "logins"}"#).status, 201);
    let too_long = 10_000_000_000_000_000u64;
    for (field, watcher) in [
        (
            "window_secs",
            json!({"threshold": 1, "window_secs": too_long}),
        ),
        (
            "cooldown_secs",
            json!({"threshold": 1, "cooldown_secs": too_long}),
        ),
        (
            "remember_secs",
            json!({"rule": "new_value", "field": "user", "remember_secs": too_long}),
        ),
        (
            "forget_after_secs",
            json!({"rule": "flatline", "threshold": 1, "window_secs": 10,
            "forget_after_secs": too_long}),
        ),
    ] {
        let mut body = watcher;
        body["name"] = json!("long");
        body["aggregator"] = json!({"type": "fields", "fields": ["ip"]});
        body["action"] = json!({"type": "null"});
        let response = daemon.post("/event/logins/watcher/", &body.to_string());
        assert_eq!(response.status, 400, "{field}: {response:?}");
        let message = response.json()["message"].as_str().unwrap().to_string();
        assert!(message.contains(&format!("`{field}`")), "{message}");
        assert_eq!(
            daemon.get("/event/logins/watcher/long").unwrap().status,
            404
        );
    }
    let ten_years = json!({"name": "decade", "threshold": 1_000_000, "window_secs": 315_360_000,
        "aggregator": {"type": "fields", "fields": ["ip"]}, "action": {"type": "null"}});
    register_watcher(&daemon, "logins", &ten_years);
    post_events(&daemon, "logins", &json!({"ip": "10.0.0.1"}), 3);
    wait_for("the events counted in Redis", 10 * SECOND, || {
        redis.counted() == 3
    });
    assert_eq!(degraded(&daemon), Some(0));
}

/// Redis keeps a key for its window and cooldown after its last event (a week without a
/// window), so what a client posting random values makes it hold is bounded by time, not
/// by `watchers.max_keys`. A Redis at its `maxmemory` (the default `noeviction`) refuses
/// the calls: the node counts alone, within `max_keys`, and still acknowledges and fires
/// (degraded), rather than stall or lose what it was sent.
#[test]
fn a_redis_filled_by_random_keys_to_its_maxmemory_leaves_the_node_counting_alone_within_max_keys() {
    let redis = RedisServer::start();
    let sink = HttpSink::start(Duration::ZERO);
    let daemon = Daemon::run(&format!(
        "[cluster]\nmode = \"standalone\"\nurls = [\"{}\"]\nnode_name = \"a\"\n\
         [watchers]\nmax_keys = 1000\n",
        redis.url()
    ));
    wait_for("the node sharing", 10 * SECOND, || {
        degraded(&daemon) == Some(0)
    });
    let watcher = json!({"name": "storm", "threshold": 2,
        "aggregator": {"type": "fields", "fields": ["host"]},
        "action": webhook(&sink.url("/hook"))});
    register_watcher(&daemon, "logins", &watcher);
    // A megabyte over what Redis holds: 100,000 keys are several.
    let memory = redis.cli(&["INFO", "memory"]);
    let used: u64 = (memory.lines())
        .find_map(|line| line.strip_prefix("used_memory:")?.trim().parse().ok())
        .expect("Redis' used_memory");
    redis.cli(&[
        "CONFIG",
        "SET",
        "maxmemory",
        &(used + (1 << 20)).to_string(),
    ]);

    for batch in 0..20 {
        let lines: String = (0..5_000)
            .map(|n| format!("{}\n", json!({"host": format!("r{batch}-{n}")})))
            .collect();
        let response = daemon.post("/event/logins/_bulk", &lines);
        assert_eq!(response.status, 200, "{response:?}");
    }
    wait_for("Redis refusing the calls", 20 * SECOND, || {
        degraded(&daemon) == Some(1)
    });
    // In one request: counted together, not split by the evictions the random keys
    // handed back meanwhile make in a table of 1,000.
    let victim = format!("{}\n", json!({"host": "victim"})).repeat(3);
    let response = daemon.post("/event/logins/_bulk", &victim);
    assert_eq!(response.status, 200, "{response:?}");
    wait_for("the victim's degraded firing", 20 * SECOND, || {
        firings(&sink).iter().any(|f| f["key"]["host"] == "victim")
    });
    let fired = firings(&sink);
    let victim = fired.iter().find(|f| f["key"]["host"] == "victim").unwrap();
    assert_eq!(victim["degraded"], true, "{victim}");
    let held = daemon.metric_sum("eventsd_watcher_keys{");
    assert!(held <= 1000, "{held} keys held");
    assert!(
        redis
            .cli(&["INFO", "memory"])
            .contains("maxmemory_policy:noeviction")
    );
}
