//! Several nodes sharing the registry and the counters through real `redis-server`
//! processes (cluster.md): a crossing split over the nodes fires exactly once
//! cluster-wide, on one Redis and on a three-primary Redis Cluster; the registry follows
//! every node; Redis stopped, restarted empty.

mod common;

use std::time::Duration;

use common::proxy::DelayProxy;
use common::redis::{RedisCluster, RedisServer, node, node_with_timeout, shares};
use common::rest::register_watcher;
use common::sinks::HttpSink;
use common::{Daemon, HalfSent, Load, SECOND, post_event, wait_for};
use nix::sys::signal::Signal;
use serde_json::{Value, json};

/// Nodes a, b and c; `watcher` registered for `event` on the one named `on`, and served by
/// the two others within a second.
fn three_nodes_watching(
    mode: &str,
    urls: &[String],
    on: usize,
    event: &str,
    watcher: Value,
) -> [Daemon; 3] {
    let nodes = [
        node("a", mode, urls),
        node("b", mode, urls),
        node("c", mode, urls),
    ];
    register_watcher(&nodes[on], event, &watcher.clone());
    let name = watcher["name"].as_str().unwrap().to_string();
    for other in nodes.iter().enumerate().filter(|(i, _)| *i != on) {
        // The spec's second, with room for a loaded machine (the poll is every second).
        wait_for("the watcher on the other nodes", 5 * SECOND, || {
            watcher_names(other.1, event) == Some(vec![name.clone()])
        });
    }
    nodes
}

fn watcher_names(daemon: &Daemon, event: &str) -> Option<Vec<String>> {
    let response = daemon.get(&format!("/event/{event}/")).ok()?;
    if response.status != 200 {
        return None;
    }
    let watchers = response.json()["watchers"].as_array()?.clone();
    Some(
        watchers
            .iter()
            .filter_map(|w| Some(w["name"].as_str()?.to_string()))
            .collect(),
    )
}

/// A watcher that only counts (its threshold is never reached).
fn counting_only() -> Value {
    json!({"name": "storm", "threshold": 1000000, "aggregator": {"type": "single"},
           "action": {"type": "null"}})
}

/// `node` counts `deploys` and has sent 20 of them to `redis`.
fn twenty_counted_in_redis(node: &Daemon, redis: &RedisServer) {
    register_watcher(node, "deploys", &counting_only());
    post_spread(&[node], "deploys", &[json!({})], 20);
    wait_for("20 events in Redis", 10 * SECOND, || {
        shared_total(&[redis]) == 20
    });
}

/// Posts `n` events of `event`, one connection each, round-robin over `nodes`.
fn post_spread(nodes: &[&Daemon], event: &str, bodies: &[Value], n: usize) {
    for i in 0..n {
        let daemon = nodes[i % nodes.len()];
        let body = bodies[i % bodies.len()].to_string();
        let response = post_event(daemon.address(), event, &body).unwrap();
        assert_eq!(response.status, 200, "{response:?}");
    }
}

/// Events counted in Redis, over every server.
fn shared_total(servers: &[&RedisServer]) -> u64 {
    servers.iter().map(|server| server.counted()).sum()
}

fn firings(sink: &HttpSink) -> Vec<Value> {
    sink.requests()
        .iter()
        .map(|r| serde_json::from_str(&r.body).unwrap())
        .collect()
}

/// A `_bulk` of `events` empty events whose body is half sent: the node holds it open.
fn half_sent_bulk(daemon: &Daemon, event: &str, events: usize) -> HalfSent {
    HalfSent::post(
        daemon,
        &format!("/event/{event}/_bulk"),
        "{}\n".repeat(events).as_bytes(),
    )
}

/// Sends the rest of a half-sent `_bulk` in small pieces; the events it acknowledged.
fn finish_slowly(bulk: HalfSent) -> u64 {
    let reply = bulk.finish_slowly().unwrap();
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.json()["collected"].as_u64().unwrap()
}

/// Every worker of `daemon` draining: the stop has begun.
fn draining(daemon: &Daemon) -> bool {
    let workers = daemon.workers();
    !workers.is_empty() && workers.iter().all(|(state, _)| state == "shutdown")
}

#[test]
fn three_nodes_share_the_registry_and_a_crossing_fires_once_cluster_wide() {
    let redis = RedisServer::start();
    let urls = [redis.url()];
    let sink = HttpSink::start(Duration::ZERO);
    let [a, b, c] = three_nodes_watching(
        "standalone",
        &urls,
        0,
        "deploys",
        json!({"name": "storm", "threshold": 300, "aggregator": {"type": "single"},
               "action": {"type": "webhook", "url": sink.url("/hook")}}),
    );

    let nodes = [&a, &b, &c];
    let event = [json!({"host": "x"})];
    post_spread(&nodes, "deploys", &event, 300);
    wait_for("300 events counted in Redis", 10 * SECOND, || {
        shared_total(&[&redis]) == 300
    });
    assert!(firings(&sink).is_empty(), "300 events do not exceed 300");

    post_spread(&nodes[1..], "deploys", &event, 1);
    wait_for("the firing of the 301st event", 10 * SECOND, || {
        !firings(&sink).is_empty()
    });
    post_spread(&nodes, "deploys", &event, 301);
    wait_for("the second crossing", 10 * SECOND, || {
        firings(&sink).len() >= 2
    });
    wait_for("the count restarted", 10 * SECOND, || {
        shared_total(&[&redis]) == 0
    });
    let fired = firings(&sink);
    assert_eq!(fired.len(), 2, "{fired:?}");
    for (sequence, firing) in fired.iter().enumerate() {
        assert_eq!(firing["count"], 301, "{firing}");
        let crossing = firing["crossing"].as_str().unwrap();
        assert!(
            crossing.ends_with(&format!("/{}", sequence + 1)),
            "{firing}"
        );
        assert!(["a", "b", "c"].contains(&firing["node"].as_str().unwrap()));
        assert!(firing.get("degraded").is_none(), "{firing}");
    }

    let deleted = b.delete("/event/deploys/watcher/storm");
    assert_eq!(deleted.status, 200, "{deleted:?}");
    for other in [&a, &c] {
        wait_for("the deletion on the other nodes", 5 * SECOND, || {
            watcher_names(other, "deploys") == Some(Vec::new())
        });
    }
    let late = node("d", "standalone", &urls);
    wait_for("the registry on a node started later", 5 * SECOND, || {
        watcher_names(&late, "deploys") == Some(Vec::new())
    });
}

#[test]
fn on_a_redis_cluster_each_key_crosses_once_whatever_its_slot() {
    let cluster = RedisCluster::start();
    let urls = cluster.urls();
    let sink = HttpSink::start(Duration::ZERO);
    let [a, b, c] = three_nodes_watching(
        "cluster",
        &urls,
        1,
        "logins",
        json!({"name": "per-user", "threshold": 30,
               "aggregator": {"type": "fields", "fields": ["user"]},
               "action": {"type": "webhook", "url": sink.url("/hook")}}),
    );
    let users: Vec<Value> = (0..12).map(|i| json!({"user": format!("u{i}")})).collect();
    let servers: Vec<&RedisServer> = cluster.primaries.iter().collect();
    post_spread(&[&a, &b, &c], "logins", &users, 12 * 30);
    wait_for("every count in Redis", 10 * SECOND, || {
        shared_total(&servers) == 12 * 30
    });
    let holding = servers
        .iter()
        .filter(|s| !s.cli(&["--scan", "--pattern", "eventsd:c:*"]).is_empty())
        .count();
    assert!(holding >= 2, "the 12 keys spread over the primaries");
    assert!(firings(&sink).is_empty());

    post_spread(&[&c, &a, &b], "logins", &users, 12);
    wait_for("one firing per key", 10 * SECOND, || {
        firings(&sink).len() >= 12
    });
    wait_for("every count restarted", 10 * SECOND, || {
        shared_total(&servers) == 0
    });
    let mut keyed: Vec<String> = firings(&sink)
        .iter()
        .map(|f| {
            assert_eq!(f["count"], 31, "{f}");
            f["key"]["user"].as_str().unwrap().to_string()
        })
        .collect();
    keyed.sort();
    keyed.dedup();
    assert_eq!(keyed.len(), 12, "each key fired once");
    assert_eq!(firings(&sink).len(), 12);
}

fn counted(daemon: &Daemon, event: &str) -> u64 {
    daemon.metric_sum(&format!("eventsd_events_counted_total{{type=\"{event}\"}}"))
}

/// Two nodes under a load of events while Redis is stopped and comes back empty: every
/// event is acknowledged, every acknowledged one counted by its node (in Redis or alone),
/// the registry re-seeded, and counting shared again.
#[test]
fn redis_stopped_under_load_then_back_empty_loses_no_event_and_is_re_seeded() {
    let mut redis = RedisServer::start();
    let urls = [redis.url()];
    let (a, b) = (
        node("a", "standalone", &urls),
        node("b", "standalone", &urls),
    );
    register_watcher(&a, "deploys", &counting_only());
    wait_for("the watcher on b", 5 * SECOND, || {
        watcher_names(&b, "deploys") == Some(vec!["storm".to_string()])
    });
    let nodes = [&a, &b];
    let loads = nodes.map(|node| Load::posting(node.address(), 2, "deploys"));
    wait_for("events counted in Redis", 10 * SECOND, || {
        shared_total(&[&redis]) > 0
    });

    redis.stop();
    for node in nodes {
        wait_for("degraded", 10 * SECOND, || {
            node.metric("eventsd_cluster_degraded") == Some(1)
        });
        wait_for("counts made alone, under load", 10 * SECOND, || {
            node.counted_on_disk() > 0
        });
    }
    // Restarted without persistence: the registry is gone from Redis.
    redis.restart();
    for node in nodes {
        wait_for("degraded no more", 10 * SECOND, || {
            node.metric("eventsd_cluster_degraded") == Some(0)
        });
    }
    let tallies = loads.map(Load::finish);
    for (node, tally) in nodes.iter().zip(&tallies) {
        tally.assert_none_failed("while Redis was down and back");
        let acknowledged = tally.acknowledged.len() as u64;
        assert!(acknowledged > 0);
        wait_for(
            "every acknowledged event counted by its node",
            10 * SECOND,
            || counted(node, "deploys") == acknowledged,
        );
    }
    wait_for("the registry re-seeded", 5 * SECOND, || {
        redis
            .cli(&["HGET", "eventsd:registry", "version"])
            .trim()
            .parse::<u64>()
            .is_ok_and(|version| version > 0)
    });
    // Counting is shared again: a watcher made now counts in Redis alone.
    let id = register_watcher(&a, "rollouts", &counting_only());
    wait_for("the new watcher on b", 5 * SECOND, || {
        watcher_names(&b, "rollouts") == Some(vec!["storm".to_string()])
    });
    post_spread(&nodes, "rollouts", &[json!({})], 10);
    wait_for("10 counted in Redis", 10 * SECOND, || {
        redis.counted_by(&id) == 10
    });
    let late = node("c", "standalone", &urls);
    wait_for("the re-seeded registry on a new node", 5 * SECOND, || {
        watcher_names(&late, "deploys") == Some(vec!["storm".to_string()])
    });
}

/// Whoever can write to Redis must not run commands on every node: a registry planted
/// there is checked like a client's change, and its `command` watcher is dropped.
#[test]
fn a_command_watcher_planted_in_redis_is_dropped_and_never_runs() {
    let redis = RedisServer::start();
    let urls = [redis.url()];
    let daemon = node("a", "standalone", &urls);
    let marker = daemon.path("planted-marker");
    let planted = json!({"version": 50, "events": {"deploys": {
        "id": "6a1e8d4e-39ad-4ac8-9e43-04dfa7a4c001", "collectors": [],
        "watchers": [{"id": "6a1e8d4e-39ad-4ac8-9e43-04dfa7a4c002", "spec": {
            "name": "planted", "threshold": 1, "aggregator": {"type": "single"},
            "action": {"type": "command",
                       "argv": ["/bin/sh", "-c", format!("touch {}", marker.display())]}}}]}}});
    redis.cli(&[
        "HSET",
        "eventsd:registry",
        "version",
        "50",
        "document",
        &planted.to_string(),
    ]);
    redis.cli(&["PUBLISH", "eventsd:registry", "50"]);
    wait_for("the planted registry adopted", 5 * SECOND, || {
        daemon
            .status()
            .is_some_and(|s| s["cluster"]["registry_version"] == 50)
    });
    assert_eq!(watcher_names(&daemon, "deploys"), Some(Vec::new()));
    post_spread(&[&daemon], "deploys", &[json!({})], 3);
    wait_for("the events counted", 5 * SECOND, || {
        daemon.metric("eventsd_events_counted_total{type=\"deploys\"}") == Some(3)
    });
    assert!(
        daemon
            .log()
            .contains("watcher `planted` of `deploys`: a `command` action")
    );
    assert!(!marker.exists(), "the planted command ran");

    let text = daemon.get("/metrics").unwrap().body;
    assert!(text.contains("eventsd_cluster_degraded 0"), "{text}");
    let findings = common::promtool_findings(&text);
    assert!(findings.is_empty(), "{findings}");
}

/// Round two, "outputs stop last": the link of a stopping node goes after its workers,
/// so a bulk acknowledged while it drained is counted in Redis with everything else.
#[test]
fn a_node_stopped_with_a_slow_bulk_in_flight_leaves_every_acknowledged_event_in_redis() {
    let redis = RedisServer::start();
    let urls = [redis.url()];
    let [mut a, b, c] = three_nodes_watching("standalone", &urls, 1, "deploys", counting_only());
    post_spread(&[&a, &b, &c], "deploys", &[json!({})], 30);
    let bulk = half_sent_bulk(&a, "deploys", 500);
    a.signal(Signal::SIGTERM);
    wait_for("node a draining", 10 * SECOND, || draining(&a));
    let collected = finish_slowly(bulk);
    assert_eq!(collected, 500);
    post_spread(&[&b, &c], "deploys", &[json!({})], 20);
    assert!(a.wait_exit(20 * SECOND).success());

    let acknowledged = 30 + collected + 20;
    wait_for("every acknowledged event in Redis", 10 * SECOND, || {
        shared_total(&[&redis]) == acknowledged
    });
}

/// The same through an upgrade: the old master's workers drain into its link, which
/// goes last; the new master holds its workers' counts until it takes over, then sends
/// them with whatever the old one left in `counters.json`.
#[test]
fn an_upgrade_with_a_slow_bulk_in_flight_leaves_every_acknowledged_event_in_redis() {
    let redis = RedisServer::start();
    let urls = [redis.url()];
    let [a, b, c] = three_nodes_watching("standalone", &urls, 2, "deploys", counting_only());
    let nodes = [&a, &b, &c];
    post_spread(&nodes, "deploys", &[json!({})], 30);
    let old = a.master_pid();
    let bulk = half_sent_bulk(&a, "deploys", 500);
    a.signal(Signal::SIGUSR2);
    wait_for("the old master handing over", 20 * SECOND, || {
        a.status().is_some_and(|s| s["pid"] == old.as_raw()) && draining(&a)
    });
    // Served by the new master, which holds their counts until it takes over.
    post_spread(&nodes, "deploys", &[json!({})], 30);
    let collected = finish_slowly(bulk);
    assert_eq!(collected, 500);
    wait_for("the new master in charge", 20 * SECOND, || {
        a.status()
            .is_some_and(|s| s["pid"] != old.as_raw() && s["cluster"]["redis_reachable"] == true)
    });
    post_spread(&nodes, "deploys", &[json!({})], 30);

    let acknowledged = 30 + 30 + collected + 30;
    wait_for("every acknowledged event in Redis", 10 * SECOND, || {
        shared_total(&[&redis]) == acknowledged
    });
}

/// Redis down when a node stops: what it could not send is in `counters.json`, and the
/// node sends it to Redis when it next starts, once Redis answers.
#[test]
fn counts_redis_did_not_take_before_a_stop_reach_it_at_the_next_start() {
    let mut redis = RedisServer::start();
    let urls = [redis.url()];
    let mut a = node("a", "standalone", &urls);
    twenty_counted_in_redis(&a, &redis);
    redis.stop();
    post_spread(&[&a], "deploys", &[json!({})], 40);
    a.signal(Signal::SIGTERM);
    assert!(a.wait_exit(20 * SECOND).success());

    redis.restart();
    a.spawn_foreground(&[]);
    wait_for("the 40 events of the outage in Redis", 10 * SECOND, || {
        shared_total(&[&redis]) == 40
    });
}

/// A counter key of another type in Redis (written by something else than eventsd) fails
/// that counter only: the call's other keys count once each. Redis keeps what a Function
/// wrote before an error, and the whole call used to fail and be sent again with every
/// flush, the keys before the broken one counted again each time.
#[test]
fn a_counter_key_of_another_type_in_redis_fails_alone_and_the_rest_count_once() {
    let redis = RedisServer::start();
    let daemon = node("a", "standalone", &[redis.url()]);
    let watcher = json!({"name": "per-host", "threshold": 1000000,
        "aggregator": {"type": "fields", "fields": ["host"]}, "action": {"type": "null"}});
    let id = register_watcher(&daemon, "deploys", &watcher);
    post_spread(&[&daemon], "deploys", &[json!({"host": "broken"})], 1);
    wait_for("the first counter in Redis", 10 * SECOND, || {
        redis.counted_by(&id) == 1
    });
    let pattern = format!("eventsd:c:{{{id}/*");
    let broken = redis
        .cli(&["--scan", "--pattern", &pattern])
        .trim()
        .to_string();
    assert!(broken.contains("broken"), "{broken:?}");
    redis.cli(&["DEL", &broken]);
    redis.cli(&["SET", &broken, "not a hash"]);

    let lines: String = (0..20)
        .map(|host| json!({"host": format!("h{host}")}))
        .chain([json!({"host": "broken"})])
        .map(|event| format!("{event}\n"))
        .collect();
    let response = daemon.post("/event/deploys/_bulk", &lines);
    assert_eq!(response.status, 200, "{response:?}");
    wait_for("20 events in Redis", 10 * SECOND, || {
        redis.counted_by(&id) >= 20
    });
    // A later flush, which a call sent again would go with.
    post_spread(&[&daemon], "deploys", &[json!({"host": "h0"})], 1);
    wait_for("21 events in Redis", 10 * SECOND, || {
        redis.counted_by(&id) >= 21
    });
    assert_eq!(redis.counted_by(&id), 21);
    assert!(shares(&daemon), "the node counts alone");
    assert!(
        daemon.log().contains("Redis failed on keys"),
        "{}",
        daemon.log()
    );
    assert_eq!(redis.cli(&["GET", &broken]).trim(), "not a hash");
}

/// Round two, "ids unique across Redis restarts": the sequence of a key starts again in
/// a Redis restarted empty, under another epoch, so the second firing has its own `id`.
#[test]
fn a_redis_restarted_empty_between_two_crossings_gives_them_two_ids() {
    let mut redis = RedisServer::start();
    let urls = [redis.url()];
    let sink = HttpSink::start(Duration::ZERO);
    let a = node("a", "standalone", &urls);
    register_watcher(
        &a,
        "deploys",
        &json!({"name": "pair", "threshold": 1, "aggregator": {"type": "single"},
               "action": {"type": "webhook", "url": sink.url("/hook")}}),
    );
    post_spread(&[&a], "deploys", &[json!({})], 2);
    wait_for("the first firing", 10 * SECOND, || {
        firings(&sink).len() == 1
    });

    redis.stop();
    wait_for("degraded", 10 * SECOND, || {
        a.metric("eventsd_cluster_degraded") == Some(1)
    });
    redis.restart();
    wait_for("degraded no more", 10 * SECOND, || {
        a.metric("eventsd_cluster_degraded") == Some(0)
    });
    post_spread(&[&a], "deploys", &[json!({})], 2);
    wait_for("the second firing", 10 * SECOND, || {
        firings(&sink).len() == 2
    });

    let fired = firings(&sink);
    for firing in &fired {
        assert!(firing.get("degraded").is_none(), "{firing}");
        assert!(
            firing["crossing"].as_str().unwrap().ends_with("/1"),
            "{firing}"
        );
    }
    assert_ne!(fired[0]["id"], fired[1]["id"], "{fired:?}");
}

/// Round two, "a timeout is unknown, not failed": with Redis' replies held past
/// `timeout_ms`, a call the node never heard back from is not also counted locally;
/// sent again with its id after a restart, Redis adds it once.
#[test]
fn replies_later_than_the_timeout_count_each_event_once_in_redis_or_locally() {
    let redis = RedisServer::start();
    let proxy = DelayProxy::start(redis.port);
    let mut a = node_with_timeout("a", "standalone", &[proxy.url()], 100);
    twenty_counted_in_redis(&a, &redis);

    proxy.set_delay(Duration::from_millis(300));
    post_spread(&[&a], "deploys", &[json!({})], 40);
    wait_for("degraded", 10 * SECOND, || {
        a.metric("eventsd_cluster_degraded") == Some(1)
    });
    post_spread(&[&a], "deploys", &[json!({})], 40);
    a.signal(Signal::SIGTERM);
    assert!(a.wait_exit(30 * SECOND).success());
    wait_for(
        "every request through the proxy in Redis",
        10 * SECOND,
        || proxy.forwarding() == 0,
    );
    let (shared, alone) = (shared_total(&[&redis]), a.counted_on_disk());
    // Whether a call was left in doubt (and Redis ran it late) depends on when the node
    // saw Redis as slow; what must hold either way is that no event counts twice.
    assert!(
        shared >= 20 && alone > 0,
        "both paths taken: {shared} shared, {alone} alone"
    );
    assert_eq!(
        shared + alone,
        100,
        "{shared} in Redis, {alone} counted alone"
    );

    // Started again with Redis answering in time: the calls left in doubt are sent
    // again with their ids (added once), the counts of counters.json for the first time.
    proxy.set_delay(Duration::ZERO);
    a.spawn_foreground(&[]);
    wait_for("every event in Redis", 10 * SECOND, || {
        a.metric("eventsd_cluster_degraded") == Some(0) && shared_total(&[&redis]) == 100
    });
    post_spread(&[&a], "deploys", &[json!({})], 1);
    wait_for("the next event counted, nothing else", 10 * SECOND, || {
        shared_total(&[&redis]) == 101
    });
}

/// Round two, "per-slot outcomes": a flush touching a key on a stalled primary and one
/// that crosses on a healthy primary fires the healthy crossing at once; the stalled
/// one's call, in doubt, crosses once the primary is back.
#[test]
fn a_stalled_primary_does_not_swallow_a_crossing_on_a_healthy_one() {
    let cluster = RedisCluster::start();
    let sink = HttpSink::start(Duration::ZERO);
    let a = node_with_timeout("a", "cluster", &cluster.urls(), 200);
    register_watcher(
        &a,
        "logins",
        &json!({"name": "per-user", "threshold": 1,
               "aggregator": {"type": "fields", "fields": ["user"]},
               "action": {"type": "webhook", "url": sink.url("/hook")}}),
    );
    let users: Vec<Value> = (0..12).map(|i| json!({"user": format!("u{i}")})).collect();
    post_spread(&[&a], "logins", &users, 12);
    let servers: Vec<&RedisServer> = cluster.primaries.iter().collect();
    wait_for("one event of each user in Redis", 10 * SECOND, || {
        shared_total(&servers) == 12
    });
    // A user whose counter lives on the first primary, one on the second.
    let user_on = |primary: &RedisServer| {
        let keys = primary.cli(&["--scan", "--pattern", "eventsd:c:*"]);
        let key = keys
            .lines()
            .next()
            .expect("a counter on every primary")
            .to_string();
        key.split('"').nth(1).unwrap().to_string()
    };
    let (healthy, stalled) = (
        user_on(&cluster.primaries[0]),
        user_on(&cluster.primaries[1]),
    );

    cluster.primaries[1].pause();
    let bulk = format!("{{\"user\": \"{healthy}\"}}\n{{\"user\": \"{stalled}\"}}\n");
    let response = a.post("/event/logins/_bulk", &bulk);
    assert_eq!(response.status, 200, "{response:?}");
    let fired_users = || -> Vec<String> {
        firings(&sink)
            .iter()
            .map(|f| f["key"]["user"].as_str().unwrap().to_string())
            .collect()
    };
    wait_for("the healthy primary's crossing fired", 5 * SECOND, || {
        fired_users() == vec![healthy.clone()]
    });
    cluster.primaries[1].resume();
    wait_for(
        "the stalled primary's crossing, once it is back",
        20 * SECOND,
        || fired_users().len() == 2,
    );
    assert_eq!(fired_users(), vec![healthy, stalled]);
    for firing in firings(&sink) {
        assert!(firing.get("degraded").is_none(), "{firing}");
    }
}

/// Round two, "changes to different entries do not conflict": watchers created at once
/// on two nodes, 50 each, are all created (a change that lost the race to another
/// node's is made again on the newer registry) and served by both; only the one name
/// created on both is refused, once. On a loaded machine this needs the changes that
/// wait while a write is in flight to go out together: one round trip each, and the
/// last ones passed their deadline and were answered 503.
#[test]
fn fifty_and_fifty_watchers_created_at_once_on_two_nodes_are_all_created_everywhere() {
    let redis = RedisServer::start();
    let urls = [redis.url()];
    let (a, b) = (
        node("a", "standalone", &urls),
        node("b", "standalone", &urls),
    );
    let created = a.post("/event/", &json!({"type": "deploys"}).to_string());
    assert_eq!(created.status, 201, "{created:?}");
    wait_for("the event type on b", 5 * SECOND, || {
        watcher_names(&b, "deploys").is_some()
    });
    // 100 names, and one more created on both nodes: the same entry, taken once.
    let names: Vec<String> = (0..102)
        .map(|i| match i {
            100 | 101 => "on-both".to_string(),
            i => format!("w{i}"),
        })
        .collect();
    let mut replies: Vec<(u16, String)> = std::thread::scope(|scope| {
        let creations: Vec<_> = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let daemon = if i % 2 == 0 { &a } else { &b };
                scope.spawn(move || {
                    let watcher = json!({"name": name, "threshold": 10,
                        "aggregator": {"type": "single"}, "action": {"type": "null"}});
                    let reply = daemon.post("/event/deploys/watcher/", &watcher.to_string());
                    (reply.status, reply.body)
                })
            })
            .collect();
        creations.into_iter().map(|c| c.join().unwrap()).collect()
    });
    let same_entry = replies.split_off(100);
    let refused: Vec<_> = replies
        .iter()
        .filter(|(status, _)| *status != 201)
        .collect();
    assert!(refused.is_empty(), "different entries refused: {refused:?}");
    let mut statuses: Vec<u16> = same_entry.iter().map(|(status, _)| *status).collect();
    statuses.sort();
    assert_eq!(
        statuses,
        [201, 409],
        "one name created on two nodes at once: {same_entry:?}"
    );
    for daemon in [&a, &b] {
        wait_for("every watcher on every node", 5 * SECOND, || {
            watcher_names(daemon, "deploys").is_some_and(|names| names.len() == 101)
        });
    }
}

/// alerts.md: a silence made on one node holds on every node: a crossing made through
/// node c of a key node a silenced is counted and listed as silenced, never delivered,
/// while another key's is.
#[test]
fn a_silence_made_on_node_a_silences_a_crossing_made_through_node_c() {
    let redis = RedisServer::start();
    let sink = HttpSink::start(Duration::ZERO);
    let watcher = json!({"name": "storm", "threshold": 1,
        "aggregator": {"type": "fields", "fields": ["ip"]},
        "action": {"type": "webhook", "url": sink.url("/hook")}});
    let [a, b, c] = three_nodes_watching("standalone", &[redis.url()], 0, "login", watcher);
    let ends = humantime::format_rfc3339(std::time::SystemTime::now() + 3600 * SECOND);
    let silence = json!({"matchers": [{"name": "key.ip", "value": "10.0.0.1"}],
        "endsAt": ends.to_string(), "createdBy": "node-a"});
    let created = a.post("/silences", &silence.to_string());
    assert_eq!(created.status, 201, "{created:?}");
    let id = created.json()["silenceID"].as_str().unwrap().to_string();
    for node in [&b, &c] {
        wait_for("the silence on the other nodes", 5 * SECOND, || {
            node.get(&format!("/silences/{id}"))
                .is_ok_and(|r| r.status == 200 && r.json()["status"]["state"] == "active")
        });
    }
    post_spread(&[&c], "login", &[json!({"ip": "10.0.0.1"})], 2);
    post_spread(&[&c], "login", &[json!({"ip": "10.0.0.2"})], 2);
    let ips = || -> Vec<Value> {
        sink.requests()
            .iter()
            .map(|r| serde_json::from_str::<Value>(&r.body).unwrap()["key"]["ip"].clone())
            .collect()
    };
    wait_for("the other key delivered", 10 * SECOND, || {
        ips() == [json!("10.0.0.2")]
    });
    let silenced: Vec<Value> = [&a, &b, &c]
        .iter()
        .flat_map(|node| {
            let listed = node.get("/alerts?state=silenced").unwrap().json();
            listed.as_array().unwrap().clone()
        })
        .collect();
    assert_eq!(silenced.len(), 1, "{silenced:?}");
    assert_eq!(silenced[0]["key"], json!({"ip": "10.0.0.1"}));
    assert_eq!(silenced[0]["silenced_by"], id.as_str());
    assert_eq!(ips(), [json!("10.0.0.2")]);
}
