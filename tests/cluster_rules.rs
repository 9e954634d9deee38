//! Every rule (rules.md) decided once cluster-wide, each decided on the clock (flatline,
//! spike `down`, cardinality `min_distinct`) claimed by one node: three nodes sharing one
//! real `redis-server`, each rule's events spread over the nodes, firings counted at a
//! webhook sink in the test process. Then the master of one node is killed with SIGKILL and
//! started again, and the same keys go on without a second firing: their state is in
//! Redis, not in the master that died. The rules' edges are pinned by tests/rules.rs;
//! threshold across nodes also by tests/cluster.rs.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::redis::{RedisServer, node, shares};
use common::rest::{register_watcher, webhook};
use common::sinks::HttpSink;
use common::{Daemon, SECOND, wait_for};
use nix::sys::signal::{Signal, kill};
use serde_json::{Value, json};

/// The pace of the events posted while the clock matters (flatline, spike, too few).
const TURN: Duration = Duration::from_millis(200);

/// The rule watchers, one on an event type of its own, and `marker` (a threshold of 1
/// per `mark`), whose crossings tell that a node's earlier events reached Redis.
fn watchers(action: &Value) -> [(&'static str, Value); 9] {
    [
        (
            "hits",
            json!({"name": "too-many", "threshold": 9, "aggregator": {"type": "single"},
                   "action": action}),
        ),
        (
            "heartbeat",
            json!({"name": "silent", "rule": "flatline", "threshold": 1, "window_secs": 2,
                   "aggregator": {"type": "single"}, "action": action}),
        ),
        (
            "surge",
            json!({"name": "spike", "rule": "spike", "window_secs": 2, "ratio": 5,
                   "direction": "up", "min_previous": 3, "aggregator": {"type": "single"},
                   "action": action}),
        ),
        (
            "ebb",
            json!({"name": "drop", "rule": "spike", "window_secs": 2, "ratio": 20,
                   "direction": "down", "min_previous": 10, "aggregator": {"type": "single"},
                   "action": action}),
        ),
        (
            "pool",
            json!({"name": "too-few", "rule": "cardinality", "field": "worker",
                   "min_distinct": 2, "window_secs": 3, "aggregator": {"type": "single"},
                   "action": action}),
        ),
        (
            "idle",
            json!({"name": "idle-pool", "rule": "cardinality", "field": "worker",
                   "min_distinct": 2, "window_secs": 3, "aggregator": {"type": "single"},
                   "action": action}),
        ),
        (
            "logins",
            json!({"name": "stuffing", "rule": "cardinality", "field": "user",
                   "max_distinct": 5, "window_secs": 300,
                   "aggregator": {"type": "fields", "fields": ["ip"]}, "action": action}),
        ),
        (
            "access",
            json!({"name": "new-country", "rule": "new_value", "field": "country",
                   "aggregator": {"type": "fields", "fields": ["user"]}, "action": action}),
        ),
        (
            "marker",
            json!({"name": "marker", "threshold": 1,
                   "aggregator": {"type": "fields", "fields": ["mark"]}, "action": action}),
        ),
    ]
}

const RULES: [&str; 8] = [
    "too-many",
    "silent",
    "spike",
    "drop",
    "too-few",
    "idle-pool",
    "stuffing",
    "new-country",
];

fn post(daemon: &Daemon, event: &str, payload: &Value) {
    let response = daemon.post(&format!("/event/{event}/"), &payload.to_string());
    assert_eq!(response.status, 200, "{response:?}");
}

fn post_many(daemon: &Daemon, event: &str, payload: &Value, times: usize) {
    let lines = format!("{payload}\n").repeat(times);
    let response = daemon.post(&format!("/event/{event}/_bulk"), &lines);
    assert_eq!(response.status, 200, "{response:?}");
}

fn firings(sink: &HttpSink) -> Vec<Value> {
    sink.requests()
        .iter()
        .map(|r| serde_json::from_str(&r.body).expect("a firing document"))
        .collect()
}

/// Firings per watcher.
fn fired(sink: &HttpSink) -> BTreeMap<String, usize> {
    let mut fired = BTreeMap::new();
    for firing in firings(sink) {
        let watcher = firing["watcher"].as_str().unwrap_or_default().to_string();
        *fired.entry(watcher).or_default() += 1;
    }
    fired
}

/// Firings per watcher when each rule fired once, and `markers` markers.
fn each_rule_once(markers: usize) -> BTreeMap<String, usize> {
    let once = RULES.iter().map(|rule| (rule.to_string(), 1));
    once.chain([("marker".to_string(), markers)]).collect()
}

/// Each node's earlier events judged in Redis: a crossing of `marker` posted through
/// each node after them (its link sends them in order) has come back.
fn settle(nodes: &[Daemon], sink: &HttpSink, round: &str) {
    for (i, daemon) in nodes.iter().enumerate() {
        post_many(
            daemon,
            "marker",
            &json!({"mark": format!("{round}-{i}")}),
            2,
        );
    }
    wait_for(&format!("the {round} markers"), 20 * SECOND, || {
        let marks = firings(sink);
        let of_round = marks.iter().filter(|f| {
            f["key"]["mark"]
                .as_str()
                .is_some_and(|m| m.starts_with(&format!("{round}-")))
        });
        of_round.count() == nodes.len()
    });
}

/// Runs `turn` every `TURN` for `phase`, with the turn's number.
fn every_turn_for(phase: Duration, mut turn: impl FnMut(usize)) {
    let started = Instant::now();
    let mut n = 0;
    while started.elapsed() < phase {
        turn(n);
        n += 1;
        std::thread::sleep(TURN);
    }
}

#[test]
fn every_rule_fires_once_across_three_nodes_and_not_again_after_a_kill_9_of_a_master() {
    let redis = RedisServer::start();
    let sink = HttpSink::start(Duration::ZERO);
    let urls = [redis.url()];
    let mut nodes = [
        node("a", "standalone", &urls),
        node("b", "standalone", &urls),
        node("c", "standalone", &urls),
    ];
    let action = webhook(&sink.url("/hooks"));
    for (event, watcher) in watchers(&action) {
        register_watcher(&nodes[0], event, &watcher);
        let path = format!(
            "/event/{event}/watcher/{}",
            watcher["name"].as_str().unwrap()
        );
        for other in &nodes[1..] {
            wait_for("the watcher on every node", 5 * SECOND, || {
                other.get(&path).is_ok_and(|r| r.status == 200)
            });
        }
    }

    // Heartbeats, the surge's steady 5 events per 2 s window past its baseline of two
    // windows, the ebb's steady 10 a turn, two workers in the pool every turn, spread over
    // the nodes: nothing fires but the idle pool, which never gets a worker (once, a
    // window after it was first judged). The ebb's ratio of 20 is twice the turns in a window: the
    // last turn's 10 events, alone in a window when the ebb stops, never read as a drop
    // (at a ratio of 10, 4 a turn, they did: a second firing when the single event came).
    every_turn_for(6 * SECOND, |n| {
        let daemon = &nodes[n % 3];
        post(daemon, "heartbeat", &json!({}));
        if n % 2 == 0 {
            post(daemon, "surge", &json!({}));
        }
        post_many(daemon, "ebb", &json!({}), 10);
        post(daemon, "pool", &json!({"worker": "w1"}));
        post(daemon, "pool", &json!({"worker": "w2"}));
    });
    let mut fired_so_far = fired(&sink);
    fired_so_far.remove("idle-pool");
    assert!(fired_so_far.is_empty(), "{:?}", firings(&sink));

    // The heartbeats stop; the surge jumps to 120 at once, then stops (a surge that
    // went on could, by its 1 s buckets, stop holding and hold again: a second spike);
    // the ebb drops to one event (a drop needs one in its window) and the pool stops;
    // 10 hits over a threshold of 9, 6 distinct users from one address over a limit of
    // 5, and a new country, each spread over the nodes.
    for daemon in &nodes {
        post_many(daemon, "surge", &json!({}), 40);
    }
    every_turn_for(3 * SECOND, |n| {
        let daemon = &nodes[n % 3];
        if n < 10 {
            post(daemon, "hits", &json!({}));
        }
        if n < 6 {
            post(
                daemon,
                "logins",
                &json!({"ip": "10.0.0.9", "user": format!("u{n}")}),
            );
        }
        if n < 3 {
            post(daemon, "access", &json!({"user": 42, "country": "NZ"}));
        }
        if n == 5 {
            post(daemon, "ebb", &json!({}));
        }
    });
    wait_for("every rule's firing", 30 * SECOND, || {
        let fired = fired(&sink);
        RULES.iter().all(|rule| fired.contains_key(*rule))
    });
    settle(&nodes, &sink, "crossed");
    assert_eq!(fired(&sink), each_rule_once(3), "{:#?}", firings(&sink));

    // Node a's master killed once its firings are delivered (a firing pending at a
    // crash is delivered again, under its id, by design), and started again.
    let crashed = &mut nodes[0];
    wait_for("node a's firings settled", 20 * SECOND, || {
        crashed.journaled_ids().is_empty()
    });
    kill(crashed.master_pid(), Signal::SIGKILL).unwrap();
    crashed.wait_exit(10 * SECOND);
    crashed.spawn_foreground(&[]);
    crashed.wait_ready();
    wait_for("node a back on Redis", 10 * SECOND, || shares(crashed));
    let restarted = Instant::now();

    // The same keys go on, through every node: 5 more hits (the count started again
    // from zero), 10 more users from the address, the country again; the heartbeat
    // stays silent, the surge and the ebb quiet, the pool empty.
    for (n, daemon) in nodes.iter().cycle().take(10).enumerate() {
        if n < 5 {
            post(daemon, "hits", &json!({}));
        }
        post(
            daemon,
            "logins",
            &json!({"ip": "10.0.0.9", "user": format!("v{n}")}),
        );
        post(daemon, "access", &json!({"user": 42, "country": "NZ"}));
    }
    // Two windows of the restarted master's ticks, then its events (and the others').
    wait_for("two windows after the restart", 10 * SECOND, || {
        restarted.elapsed() > 4 * SECOND
    });
    settle(&nodes, &sink, "restarted");

    assert_eq!(fired(&sink), each_rule_once(6), "{:#?}", firings(&sink));
    for firing in firings(&sink) {
        assert!(firing.get("degraded").is_none(), "{firing}");
        assert!(firing["crossing"].is_string(), "decided by Redis: {firing}");
    }
}

/// The alerts `daemon` lists, newest first, once it lists `at_least`.
fn alerts_once_listed(daemon: &Daemon, at_least: usize) -> Vec<Value> {
    let mut alerts = Vec::new();
    wait_for(&format!("{at_least} alerts"), 60 * SECOND, || {
        let listed = daemon.get(&format!("/alerts?limit={}", 2 * at_least));
        alerts = listed.map_or(Vec::new(), |r| {
            r.json().as_array().cloned().unwrap_or_default()
        });
        alerts.len() >= at_least
    });
    alerts
}

/// A node sharing through `redis`, its alert list holding `history` firings.
fn node_remembering(redis: &RedisServer, history: usize) -> Daemon {
    // A call's timeout of a second, not 100 ms: a 10,000-line `_bulk` loads these two
    // cores with the daemon, Redis and the test at once, and a call timed out there makes
    // the node count alone for a while, by design (cluster.md), which is
    // `cluster_degraded`'s to test, not the rules'.
    let daemon = Daemon::run(&format!(
        "[cluster]\nmode = \"standalone\"\nurls = [\"{}\"]\nnode_name = \"a\"\n\
         timeout_ms = 1000\n[alerts]\nhistory = {history}\n",
        redis.url()
    ));
    wait_for("the node sharing", 10 * SECOND, || shares(&daemon));
    daemon
}

/// A flatline's keys come due by the thousand (one `_bulk` of new hosts, then silence):
/// the link asks Redis again while keys are due, 1,000 a call (`KEYS_PER_TICK`), and
/// each key, handed to one call only, fires once. How many fire a second is a figure of
/// `bench/rules` (one call a second a watcher, before: 1,000; 20,000 keys took twenty
/// seconds), not of a test: it is this machine's speed at the time.
#[test]
fn a_flatline_fires_once_each_of_thousands_of_keys_come_due_together() {
    const HOSTS: usize = 10_000;
    let redis = RedisServer::start();
    let daemon = node_remembering(&redis, 2 * HOSTS);
    let watcher = json!({"name": "silent", "rule": "flatline", "threshold": 1,
        "window_secs": 2, "aggregator": {"type": "fields", "fields": ["host"]},
        "action": {"type": "null"}});
    register_watcher(&daemon, "heartbeat", &watcher);
    let lines: String = (0..HOSTS)
        .map(|host| format!("{}\n", json!({"host": format!("h{host}")})))
        .collect();
    let response = daemon.post("/event/heartbeat/_bulk", &lines);
    assert_eq!(response.status, 200, "{response:?}");

    let alerts = alerts_once_listed(&daemon, HOSTS);
    let hosts: BTreeSet<&str> = alerts
        .iter()
        .filter_map(|alert| alert["key"]["host"].as_str())
        .collect();
    assert_eq!(
        (alerts.len(), hosts.len()),
        (HOSTS, HOSTS),
        "each host once"
    );
}

/// A key due whose counter is of another type in Redis (written by something else)
/// fails alone, judged again a minute later: the key due with it fires, and the node
/// keeps counting shared. The whole `eventsd_tick` failed before, every second: the node
/// taken for cut off from Redis, and no key of the watcher judged again.
#[test]
fn a_due_key_of_another_type_in_redis_fails_alone_and_the_others_fire() {
    let redis = RedisServer::start();
    let daemon = node_remembering(&redis, 100);
    let watcher = json!({"name": "silent", "rule": "flatline", "threshold": 1,
        "window_secs": 2, "aggregator": {"type": "fields", "fields": ["host"]},
        "action": {"type": "null"}});
    let id = register_watcher(&daemon, "heartbeat", &watcher);
    // One second for both: due together, the broken one judged first (Redis orders a
    // second's keys by name).
    let lines = format!("{}\n{}\n", json!({"host": "h0"}), json!({"host": "h1"}));
    assert_eq!(daemon.post("/event/heartbeat/_bulk", &lines).status, 200);
    // A watcher judged on the clock keeps its counters in its queue's slot: `{id}:key`.
    let pattern = format!("eventsd:c:{{{id}}}:*");
    let mut counters = String::new();
    wait_for("both counters in Redis", 10 * SECOND, || {
        counters = redis.cli(&["--scan", "--pattern", &pattern]);
        counters.lines().count() == 2
    });
    let broken = counters.lines().find(|key| key.contains("h0")).unwrap();
    redis.cli(&["DEL", broken]);
    redis.cli(&["SET", broken, "not a hash"]);

    let alerts = alerts_once_listed(&daemon, 1);
    assert_eq!(alerts[0]["key"]["host"], "h1", "{alerts:?}");
    assert!(shares(&daemon), "the node counts alone");
    assert!(
        daemon.log().contains("Redis failed on keys"),
        "{}",
        daemon.log()
    );
    assert_eq!(redis.cli(&["GET", broken]).trim(), "not a hash");
}

/// A silent key that realerts with no cooldown (`cooldown_secs = 0`) fires once a
/// second: the link asks again while keys are due, and a key put back for the second
/// it fired in was due again at once (33 firings a second before).
#[test]
fn a_flatline_key_without_cooldown_fires_once_a_second() {
    let redis = RedisServer::start();
    let sink = HttpSink::start(Duration::ZERO);
    let daemon = node_remembering(&redis, 1_000);
    let watcher = json!({"name": "silent", "rule": "flatline", "threshold": 1,
        "window_secs": 1, "cooldown_secs": 0, "aggregator": {"type": "single"},
        "action": webhook(&sink.url("/hooks"))});
    register_watcher(&daemon, "heartbeat", &watcher);
    post(&daemon, "heartbeat", &json!({}));

    let alerts = alerts_once_listed(&daemon, 4);
    let mut per_second = BTreeMap::new();
    for alert in &alerts {
        *per_second.entry(alert["fired_at"].as_str()).or_insert(0) += 1;
    }
    assert!(per_second.values().all(|&n| n == 1), "{per_second:?}");
}

/// A flatline watcher's queue of keys due, grace start and expected keys expire in Redis
/// as its counters do, a week and its durations (here a window of 2 s and the default
/// `forget_after_secs`, a day) after the last call that touched them: every node ticks
/// a live watcher each second, so only a deleted watcher's go, where they stayed for
/// good.
#[test]
fn a_flatline_watcher_s_queue_in_redis_expires_like_its_counters() {
    let redis = RedisServer::start();
    let daemon = node("a", "standalone", &[redis.url()]);
    let watcher = json!({"name": "silent", "rule": "flatline", "threshold": 1,
        "window_secs": 2, "expect": ["h0"],
        "aggregator": {"type": "fields", "fields": ["host"]},
        "action": webhook("http://127.0.0.1:9/hooks")});
    let id = register_watcher(&daemon, "heartbeat", &watcher);
    post(&daemon, "heartbeat", &json!({"host": "h1"}));

    let queue_ttl = 7 * 86_400 + 86_400 + 2 * 2 + 60;
    for name in ["due", "since", "kept"] {
        let key = format!("eventsd:{name}:{{{id}}}");
        wait_for(&format!("{key} expiring"), 10 * SECOND, || {
            let ttl = redis.cli(&["TTL", &key]).trim().parse::<i64>();
            ttl.is_ok_and(|ttl| ttl > queue_ttl - 60 && ttl <= queue_ttl)
        });
    }
}
