//! The watch unit tests: a `Watch` over the memory store, fed batches as workers ship them.

use super::*;
use crate::registry::{Change, Origin, Rules};
use rule_state::RuleState;
use serde_json::Value;
use store::MemoryStore;

fn registry_with(watcher: &str) -> Registry {
    let mut registry = Registry::default();
    let origin = Origin::LOCAL;
    registry
        .apply(
            &Change::CreateEvent {
                body: br#"{"type": "logins"}"#.to_vec(),
            },
            origin,
            &Rules::default(),
        )
        .unwrap();
    let change = Change::CreateWatcher {
        event: "logins".into(),
        body: watcher.as_bytes().to_vec(),
    };
    registry.apply(&change, origin, &Rules::default()).unwrap();
    registry
}

/// A registry holding `watcher` on `logins`, and a `Watch` following it.
fn watching(watcher: &str) -> (Registry, Watch) {
    let registry = registry_with(watcher);
    let mut watch = Watch::new(Box::new(MemoryStore::new(100)));
    watch.sync(&registry);
    (registry, watch)
}

fn post(watch: &mut Watch, registry: &Registry, payloads: &[Value], now: Second) -> Vec<Job> {
    let entry = registry.event("logins").unwrap();
    let sets = entry
        .watchers
        .iter()
        .map(|w| SetCounts {
            watchers: vec![w.id],
            keys: payloads
                .iter()
                .map(|p| (Key::of(&w.spec.aggregator, p.as_object().unwrap(), 1024), 1))
                .collect(),
        })
        .collect();
    let batch = CountBatch {
        events: vec![("logins".to_string(), payloads.len() as u64)],
        sets,
        values: Vec::new(),
    };
    watch.count(batch, now)
}

/// Pieces of a batch hold every (watcher, key) once, each key with all of its set's
/// watchers; the events come with the last.
#[test]
fn a_batch_taken_in_pieces_loses_and_repeats_nothing() {
    let set = |watchers: usize, keys: usize| SetCounts {
        watchers: (0..watchers).map(|_| Uuid::new_v4()).collect(),
        keys: (0..keys)
            .map(|k| (Key::from(k.to_string().as_str()), 1))
            .collect(),
    };
    let mut batch = CountBatch {
        events: vec![("logins".to_string(), 7)],
        sets: vec![set(200, 7), set(1, 1000), set(3, 0), set(2000, 2)],
        values: Vec::new(),
    };
    let whole: Vec<(Uuid, Key)> = sorted_entries(&batch);
    let watchers: Vec<Vec<Uuid>> = batch.sets.iter().map(|s| s.watchers.clone()).collect();
    let mut pieces = Vec::new();
    while !batch.is_empty() {
        let piece = batch.take_piece(1024);
        let keys: usize = piece.sets.iter().map(|s| s.keys.len()).sum();
        assert!(
            piece.entries() <= 1024 || keys == 1,
            "{} entries",
            piece.entries()
        );
        for part in &piece.sets {
            assert!(
                watchers.contains(&part.watchers),
                "a key with all its watchers"
            );
        }
        pieces.push(piece);
    }
    let events: Vec<usize> = pieces.iter().map(|p| p.events.len()).collect();
    assert_eq!(events.iter().sum::<usize>(), 1);
    assert_eq!(events.last(), Some(&1), "the events come last");
    let mut counted: Vec<(Uuid, Key)> = pieces.iter().flat_map(sorted_entries).collect();
    counted.sort();
    assert_eq!(counted, whole);
}

/// Values are cut as counts are, an update per hash and watcher: a piece of a batch of
/// 8192 hashes costs what a piece of counts does (a key too large for one piece alone is
/// judged by a few of its watchers at a time). Nothing is lost or repeated, values come
/// after counts and in the order they always came, the events with the last piece.
#[test]
fn values_are_cut_into_pieces_by_hashes_and_watchers_in_their_order() {
    let values = |watchers: usize, hashes: &[usize]| SetValues {
        watchers: (0..watchers).map(|_| Uuid::new_v4()).collect(),
        keys: (hashes.iter().enumerate())
            .map(|(k, &n)| (Key::from(k.to_string().as_str()), (0..n as u64).collect()))
            .collect(),
    };
    let mut batch = CountBatch {
        events: vec![("logins".to_string(), 7)],
        sets: vec![SetCounts {
            watchers: vec![Uuid::new_v4()],
            keys: vec![(Key::from("a"), 1)],
        }],
        values: vec![
            values(3, &[1, 0, 300, 2]),
            values(4, &[5000, 10, 8192]),
            values(1, &[8192]),
            values(2, &[1000; 9]),
        ],
    };
    let whole = batch.clone();
    let mut pieces = Vec::new();
    while !batch.is_empty() {
        let piece = batch.take_piece(1024);
        let judged: usize = piece
            .values
            .iter()
            .map(|v| v.keys.len() * v.watchers.len())
            .sum();
        assert!(
            piece.entries() <= 1024 || (judged == 1 && piece.sets.is_empty()),
            "{} entries",
            piece.entries()
        );
        pieces.push(piece);
    }
    assert!(pieces.len() > 20, "{} pieces", pieces.len());
    let events: Vec<usize> = pieces.iter().map(|p| p.events.len()).collect();
    assert_eq!(events.iter().sum::<usize>(), 1);
    assert_eq!(events.last(), Some(&1), "the events come last");
    assert_eq!(pieces[0].sets, whole.sets, "counts before values");
    let judged = |batch: &CountBatch| -> Vec<(Uuid, Key, Vec<u64>)> {
        (batch.values.iter().flat_map(SetValues::values))
            .map(|(watcher, key, hashes)| (watcher, key.clone(), hashes.to_vec()))
            .collect()
    };
    let in_pieces: Vec<_> = pieces.iter().flat_map(judged).collect();
    assert_eq!(in_pieces, judged(&whole), "each once, in the same order");
    let entries: usize = pieces.iter().map(CountBatch::entries).sum();
    assert_eq!(entries, whole.entries(), "the backlog's account adds up");
}

/// A cluster link sums a key's values until it flushes: once each, and, past twice what
/// the rule keeps (max_distinct 3: 4), the highest 4, which are those a call of them all
/// keeps; the events add up.
#[test]
fn a_link_s_sum_of_a_key_s_values_is_bounded_by_what_its_rule_keeps() {
    let (registry, watch) = watching(
        r#"{"name": "w1", "rule": "cardinality", "field": "user", "window_secs": 10, "max_distinct": 3, "aggregator": {"type": "single"}, "action": {"type": "null"}}"#,
    );
    let id = registry.events["logins"].watchers[0].id;
    let shipped = |hashes: &[u64]| {
        let count = watch.shared_count(id, Key::default(), hashes.len() as u64);
        SharedCount {
            values: hashes.to_vec(),
            ..count.unwrap()
        }
    };
    let mut pending = shipped(&[5, 1, 5]);
    pending.add(shipped(&[2, 9]));
    assert_eq!(
        pending.values,
        [5, 1, 5, 2, 9],
        "up to twice what it keeps, as shipped"
    );
    pending.add(shipped(&[7, 3, 9, 8]));
    assert_eq!(pending.values, [5, 7, 8, 9]);
    assert_eq!(pending.events, 9);
    let mut at_once = RuleState::default();
    at_once.see_all(&[5, 1, 5, 2, 9, 7, 3, 9, 8], 1000, 4);
    let kept: Vec<u64> = at_once.distinct.iter().map(|&(hash, _)| hash).collect();
    assert_eq!(kept, pending.values, "what a call of them all keeps");
}

fn sorted_entries(batch: &CountBatch) -> Vec<(Uuid, Key)> {
    let mut entries: Vec<(Uuid, Key)> = batch
        .sets
        .iter()
        .flat_map(SetCounts::counts)
        .map(|(watcher, key, _)| (watcher, key.clone()))
        .collect();
    entries.sort();
    entries
}

#[test]
fn threshold_is_exceeded_once_then_the_count_restarts() {
    let (registry, mut watch) = watching(
        r#"{"name": "w1", "threshold": 3, "aggregator": {"type": "single"}, "action": {"type": "null"}}"#,
    );
    let one = [serde_json::json!({})];
    let fired: Vec<usize> = (0..8)
        .map(|_| post(&mut watch, &registry, &one, 1000).len())
        .collect();
    assert_eq!(fired, [0, 0, 0, 1, 0, 0, 0, 1]);
}

#[test]
fn a_fields_watcher_fires_for_the_crossing_key_only_naming_it() {
    let (registry, mut watch) = watching(
        r#"{"name": "w1", "threshold": 2, "aggregator": {"type": "fields", "fields": ["ip"]}, "action": {"type": "null"}}"#,
    );
    let a = serde_json::json!({"ip": "a"});
    let b = serde_json::json!({"ip": "b"});
    let jobs = post(
        &mut watch,
        &registry,
        &[a.clone(), b.clone(), a.clone(), b, a],
        1000,
    );
    assert_eq!(jobs.len(), 1);
    let firing = &jobs[0].firing;
    assert_eq!(firing.key, serde_json::json!({"ip": "a"}));
    assert_eq!(firing.text, "Event `logins` repeated 3 times for ip=\"a\"");
}

#[test]
fn a_cooldown_suppresses_repeats_but_events_still_count() {
    let (registry, mut watch) = watching(
        r#"{"name": "w1", "threshold": 1, "cooldown_secs": 60, "aggregator": {"type": "single"}, "action": {"type": "null"}}"#,
    );
    let two = [serde_json::json!({}), serde_json::json!({})];
    assert_eq!(post(&mut watch, &registry, &two, 1000).len(), 1);
    assert_eq!(
        post(&mut watch, &registry, &two, 1010).len(),
        0,
        "cooling down"
    );
    assert_eq!(
        post(&mut watch, &registry, &two, 1060).len(),
        1,
        "cooldown over"
    );
}

#[test]
fn exponential_realert_doubles_a_busy_cooldown_up_to_its_maximum_and_resets_after_quiet() {
    let (registry, mut watch) = watching(
        r#"{"name": "w1", "threshold": 1, "cooldown_secs": 10, "cooldown_max_secs": 40, "aggregator": {"type": "single"}, "action": {"type": "null"}}"#,
    );
    let two = [serde_json::json!({}), serde_json::json!({})];
    // Crossings every 5 s until 1100, one at 1250, then every 5 s from 1300.
    let crossings = (1000..1100)
        .step_by(5)
        .chain([1250])
        .chain((1300..1320).step_by(5));
    let fired_at: Vec<u64> = crossings
        .filter(|&second| !post(&mut watch, &registry, &two, second).is_empty())
        .collect();
    // Busy cooldowns: 10, 20, 40, 40 (the cap); the one from 1070 saw crossings, so
    // 1250's is 40 again; it stays quiet, so 1300's is back to 10.
    assert_eq!(fired_at, [1000, 1010, 1030, 1070, 1250, 1300, 1310]);
}

#[test]
fn deleted_watchers_lose_their_counters() {
    let (registry, mut watch) = watching(
        r#"{"name": "w1", "threshold": 5, "aggregator": {"type": "single"}, "action": {"type": "null"}}"#,
    );
    post(&mut watch, &registry, &[serde_json::json!({})], 1000);
    assert_eq!(watch.store().sizes().len(), 1);
    watch.sync(&Registry::default());
    assert_eq!(watch.store().sizes().len(), 0);
}

/// `watchers` on `logins`, in one field set (`["ip"]`), and a `Watch` holding at most
/// `max_keys` keys a set.
fn watching_one_set(watchers: &[&str], max_keys: usize) -> (Vec<Uuid>, Watch) {
    let mut registry = registry_with(watchers[0]);
    for watcher in &watchers[1..] {
        let change = Change::CreateWatcher {
            event: "logins".into(),
            body: watcher.as_bytes().to_vec(),
        };
        registry
            .apply(&change, Origin::LOCAL, &Rules::default())
            .unwrap();
    }
    let mut watch = Watch::new(Box::new(MemoryStore::new(max_keys)));
    watch.sync(&registry);
    let ids = watchers
        .iter()
        .map(|body| {
            let name: Value = serde_json::from_str(body).unwrap();
            let entry = registry.event("logins").unwrap();
            let spec = entry
                .watchers
                .iter()
                .find(|w| w.spec.name.as_str() == name["name"]);
            spec.unwrap().id
        })
        .collect();
    (ids, watch)
}

/// A batch as a worker ships it: each ip named once for the set's watchers.
fn post_to_set(
    watch: &mut Watch,
    watchers: &[Uuid],
    ips: &[(&str, u64)],
    now: Second,
) -> Vec<(Uuid, u64)> {
    let keys = ips
        .iter()
        .map(|(ip, events)| (Key::from(format!("[\"{ip}\"]").as_str()), *events))
        .collect();
    let sets = vec![SetCounts {
        watchers: watchers.to_vec(),
        keys,
    }];
    let batch = CountBatch {
        events: Vec::new(),
        sets,
        values: Vec::new(),
    };
    let jobs = watch.count(batch, now);
    jobs.iter()
        .map(|job| (job.watcher_id, job.firing.count))
        .collect()
}

/// The watchers of one field set share a table, never their counts: each counts the
/// set's keys in its own window against its own threshold, a key forgotten for one is
/// kept for the others, and an eviction counts for those that held the key.
#[test]
fn the_watchers_of_one_field_set_keep_their_own_counts_windows_and_evictions() {
    let by_ip =
        r#""aggregator": {"type": "fields", "fields": ["ip"]}, "action": {"type": "null"}}"#;
    let (ids, mut watch) = watching_one_set(
        &[
            &format!(r#"{{"name": "burst", "threshold": 2, "window_secs": 10, {by_ip}"#),
            &format!(r#"{{"name": "slow", "threshold": 4, {by_ip}"#),
            &format!(
                r#"{{"name": "gone", "rule": "flatline", "threshold": 1, "window_secs": 5,
                    "forget_after_secs": 20, {by_ip}"#
            ),
        ],
        2,
    );
    let [burst, slow, gone] = ids[..] else {
        panic!("{ids:?}")
    };
    let t0 = now() + 10;
    assert!(post_to_set(&mut watch, &ids, &[("a", 2)], t0).is_empty());
    // burst's window lost t0's 2 events; slow, without a window, keeps them.
    assert!(post_to_set(&mut watch, &ids, &[("a", 1)], t0 + 11).is_empty());
    assert_eq!(
        post_to_set(&mut watch, &ids, &[("a", 2)], t0 + 12),
        [(burst, 3), (slow, 5)]
    );
    // gone: silent from t0 + 17, fires, and is forgotten 20 s later, for gone alone.
    let fired: Vec<Uuid> = watch
        .tick(t0 + 17, &mut { usize::MAX })
        .iter()
        .map(|job| job.watcher_id)
        .collect();
    assert_eq!(fired, [gone]);
    assert!(watch.tick(t0 + 37, &mut { usize::MAX }).is_empty());
    let a = Key::from(r#"["a"]"#);
    assert!(!watch.store().keys(gone).contains(&a), "forgotten for gone");
    assert_eq!(
        watch.store().keys(burst),
        std::slice::from_ref(&a),
        "kept for burst"
    );
    assert_eq!(watch.store().keys(slow), [a]);
    // Two keys a set: c evicts a, the least recently updated, from those that held it.
    post_to_set(&mut watch, &ids, &[("b", 1)], t0 + 38);
    post_to_set(&mut watch, &ids, &[("c", 1)], t0 + 39);
    let mut sizes = watch.store().sizes();
    sizes.sort_by_key(|(id, ..)| ids.iter().position(|w| w == id));
    assert_eq!(sizes, [(burst, 2, 1), (slow, 2, 1), (gone, 2, 0)]);
}

/// Hostile input to a watcher decided on the clock: keys past `max_keys` are evicted and
/// leave its due queue with their counters, so the queue holds no more keys than the
/// watcher; those it holds still come up when due.
///
/// At `threshold = 2`, a key seen once is below its threshold from its first event: it
/// waits for the next tick (second 0, which must not read as "not waiting").
#[test]
fn a_flatline_key_evicted_leaves_the_due_queue() {
    for threshold in [1, 2] {
        flatline_keys_past_max_keys(threshold);
    }
}

fn flatline_keys_past_max_keys(threshold: u64) {
    let definition = format!(
        r#"{{"name": "hosts", "rule": "flatline", "threshold": {threshold}, "window_secs": 300,
          "aggregator": {{"type": "fields", "fields": ["ip"]}}, "action": {{"type": "null"}}}}"#
    );
    let (ids, mut watch) = watching_one_set(&[definition.as_str()], 100);
    let t0 = now() + 10;
    let ips: Vec<String> = (0..10_000).map(|n| n.to_string()).collect();
    for chunk in ips.chunks(1000) {
        let batch: Vec<(&str, u64)> = chunk.iter().map(|ip| (ip.as_str(), 1)).collect();
        post_to_set(&mut watch, &ids, &batch, t0);
    }
    let waiting = (ips.iter())
        .filter(|ip| {
            let key = Key::from(format!("[\"{ip}\"]").as_str());
            watch.store().is_waiting(ids[0], &key)
        })
        .count();
    assert_eq!(
        waiting, 100,
        "only the keys held wait (threshold {threshold})"
    );
    assert_eq!(watch.store().keys(ids[0]).len(), 100);
    assert_eq!(
        watch.tick(t0 + 300, &mut { usize::MAX }).len(),
        100,
        "the keys held come up once (threshold {threshold})"
    );
    assert!(watch.tick(t0 + 301, &mut { usize::MAX }).is_empty());
}

/// 250 hosts of a flatline watcher (window 300 s, and `extra` fields) each heard once
/// at the second returned: all of them due 300 s later.
fn silent_hosts(extra: &str) -> (Watch, Second) {
    silent_hosts_of(&[("hosts", extra)])
}

/// 250 hosts, each sending one event at `t0` then none, to flatline watchers (a name and
/// `extra` fields each) of a 5-minute window on one field set.
fn silent_hosts_of(watchers: &[(&str, &str)]) -> (Watch, Second) {
    let watchers: Vec<String> = (watchers.iter())
        .map(|(name, extra)| {
            format!(
                r#"{{"name": "{name}", "rule": "flatline", "threshold": 1, "window_secs": 300,
                {extra} "aggregator": {{"type": "fields", "fields": ["ip"]}},
                "action": {{"type": "null"}}}}"#
            )
        })
        .collect();
    let watchers: Vec<&str> = watchers.iter().map(String::as_str).collect();
    let (ids, mut watch) = watching_one_set(&watchers, 1000);
    let t0 = now() + 10;
    let ips: Vec<String> = (0..250).map(|n| n.to_string()).collect();
    let batch: Vec<(&str, u64)> = ips.iter().map(|ip| (ip.as_str(), 1)).collect();
    post_to_set(&mut watch, &ids, &batch, t0);
    (watch, t0)
}

/// The keys of a second are judged a budget at a time (the master's slices): each once,
/// over as many calls as the budget makes, the budget spent while keys are left.
#[test]
fn keys_due_at_once_are_judged_a_budget_at_a_time_each_once() {
    let (mut watch, t0) = silent_hosts("");
    let mut fired = Vec::new();
    for spent in [true, true, false] {
        let mut budget = 100;
        fired.extend(watch.tick(t0 + 300, &mut budget));
        assert_eq!(budget == 0, spent, "{} fired", fired.len());
    }
    let mut keys: Vec<String> = fired.iter().map(|job| job.firing.key.to_string()).collect();
    keys.sort();
    keys.dedup();
    assert_eq!((fired.len(), keys.len()), (250, 250));
    assert!(watch.tick(t0 + 301, &mut { usize::MAX }).is_empty());
}

/// Watchers with keys due take turns at the slices: one with a backlog does not hold up
/// the others' keys until all of its own are judged (each slice started again at the
/// same watcher, before).
#[test]
fn watchers_with_keys_due_take_turns_at_the_slices() {
    let (mut watch, t0) = silent_hosts_of(&[("first", ""), ("second", "")]);
    let mut firing = std::collections::BTreeSet::new();
    for _ in 0..2 {
        let mut budget = 100;
        firing.extend(
            watch
                .tick(t0 + 300, &mut budget)
                .iter()
                .map(|job| job.watcher_id),
        );
        assert_eq!(budget, 0);
    }
    assert_eq!(
        firing.len(),
        2,
        "two slices of 100 keys, each watcher 250 keys due"
    );
}

/// A key that realerts with no cooldown (`cooldown_secs = 0`) fires once a second, not
/// again at each of the master's slices within the second it fired in.
#[test]
fn a_key_without_cooldown_fires_once_a_second_however_many_slices_judge_it() {
    let (mut watch, t0) = silent_hosts(r#""cooldown_secs": 0,"#);
    for second in [t0 + 300, t0 + 301] {
        let mut fired = 0;
        for _ in 0..5 {
            fired += watch.tick(second, &mut { 100 }).len();
        }
        assert_eq!(fired, 250, "at {second}");
    }
}

/// new_value's memory as `counters.json` holds it today (each (key, value) a counter of
/// its own: `[user, country]`, its last-seen second in its one bucket), written by hand:
/// restored, a learnt value does not fire, a new one does. Whatever layout new_value
/// moves to, a file of this one must still load with what it learnt.
#[test]
fn new_value_s_learnt_values_in_today_s_counters_file_are_known_after_a_restore() {
    let registry = registry_with(
        r#"{"name": "travel", "rule": "new_value", "field": "country",
            "aggregator": {"type": "fields", "fields": ["user"]}, "action": {"type": "null"}}"#,
    );
    let watcher = &registry.event("logins").unwrap().watchers[0];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("counters.json");
    // Learnt a day and an hour ago (seconds of the wall clock, as the file keeps them).
    let now = super::now();
    let file = serde_json::json!({"watchers": {watcher.id.to_string(): {"keys": {
        "[42,\"FR\"]": {"buckets": [[now - 86_400, 3]]},
        "[42,\"DE\"]": {"buckets": [[now - 3_600, 1]]}}}}});
    std::fs::write(&path, file.to_string()).unwrap();
    let mut watch = Watch::new(Box::new(MemoryStore::load(&path, 100).unwrap()));
    watch.sync(&registry);
    let mut seen = |country: &str| {
        let payload = serde_json::json!({"user": 42, "country": country});
        let key = Key::of(
            &watcher.spec.counted_by(),
            payload.as_object().unwrap(),
            1024,
        );
        let batch = CountBatch {
            events: vec![("logins".to_string(), 1)],
            sets: vec![SetCounts {
                watchers: vec![watcher.id],
                keys: vec![(key, 1)],
            }],
            values: Vec::new(),
        };
        watch.count(batch, now)
    };
    assert!(seen("FR").is_empty(), "learnt before the restore");
    assert!(seen("DE").is_empty(), "learnt before the restore");
    let new = seen("NZ");
    assert_eq!(new.len(), 1, "a value the file does not hold is new");
    let value = new[0].firing.figures.new_value.value.clone();
    assert_eq!(value, Some(serde_json::json!({"country": "NZ"})));
    assert_eq!(new[0].firing.key, serde_json::json!({"user": 42}));
}
