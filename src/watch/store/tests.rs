//! The memory store's unit tests: counts, windows, eviction, `counters.json` saved and
//! restored.

use super::*;

/// Adds `n` events of `key` for `watcher` seen at `now`: its count, as a rule sees it.
fn add(
    store: &mut MemoryStore,
    w: Uuid,
    key: &Key,
    n: u64,
    now: Second,
    window: Option<u64>,
) -> u64 {
    let mut count = 0;
    let keys = [(key.clone(), n)];
    store.count_set(&[w], &keys, &mut |_, mut at, n| {
        count = at.add(n, now, window)
    });
    count
}

fn key(text: &str) -> Key {
    serde_json::from_value(serde_json::Value::from(text)).unwrap()
}

/// What a rule does to a key that fires: its count starts again, its cooldown starts.
fn fired(store: &mut MemoryStore, w: Uuid, key: &Key, now: Second, cooldown_secs: u32) {
    let counter = store.counter(w, key);
    counter.buckets = super::super::table::Buckets::Empty;
    counter.last_fired = std::num::NonZeroU64::new(now);
    counter.cooldown_secs = cooldown_secs;
}

fn cooldown(store: &mut MemoryStore, w: Uuid, key: &Key) -> Option<Cooldown> {
    super::super::rule::cooldown_of(store.existing(w, key)?)
}

#[test]
fn the_hottest_keys_come_highest_first_within_the_window() {
    let (mut store, watcher) = (MemoryStore::new(100), Uuid::new_v4());
    for (text, n) in [
        ("[\"a\"]", 3),
        ("[\"b\"]", 9),
        ("[\"c\"]", 5),
        ("[\"d\"]", 1),
    ] {
        add(&mut store, watcher, &key(text), n, 100, Some(60));
    }
    add(&mut store, watcher, &key("[\"old\"]"), 50, 10, Some(60));
    let hottest = store.hottest(watcher, 100, Some(60), 2);
    assert_eq!(hottest, [(key("[\"b\"]"), 9), (key("[\"c\"]"), 5)]);
    add(&mut store, watcher, &key("[\"e\"]"), 5, 100, Some(60));
    let hottest = store.hottest(watcher, 100, Some(60), 3);
    assert_eq!(
        hottest,
        [
            (key("[\"b\"]"), 9),
            (key("[\"c\"]"), 5),
            (key("[\"e\"]"), 5)
        ],
        "a tie goes to the first key"
    );
    assert!(store.hottest(Uuid::new_v4(), 100, None, 2).is_empty());
}

#[test]
fn a_window_forgets_events_older_than_it() {
    let mut store = MemoryStore::new(10);
    let w = Uuid::new_v4();
    assert_eq!(add(&mut store, w, &key("k"), 3, 100, Some(10)), 3);
    assert_eq!(add(&mut store, w, &key("k"), 2, 105, Some(10)), 5);
    assert_eq!(
        add(&mut store, w, &key("k"), 1, 110, Some(10)),
        3,
        "second 100 left the window"
    );
    assert_eq!(add(&mut store, w, &key("k"), 1, 200, Some(10)), 1);
}

/// The wall clock stepped back 100 s (an NTP step, a VM restored): the events counted
/// at the later seconds are as recent as the clock says now, and leave the window
/// `window` seconds after it, not when the clock reaches their seconds again.
#[test]
fn a_clock_stepped_back_keeps_the_window_s_length() {
    let mut store = MemoryStore::new(10);
    let w = Uuid::new_v4();
    add(&mut store, w, &key("k"), 3, 1_000, Some(10));
    add(&mut store, w, &key("k"), 2, 1_004, Some(10));
    assert_eq!(add(&mut store, w, &key("k"), 1, 900, Some(10)), 6);
    assert_eq!(add(&mut store, w, &key("k"), 1, 905, Some(10)), 7);
    assert_eq!(
        add(&mut store, w, &key("k"), 1, 910, Some(10)),
        2,
        "the seconds past, as restamped at 900, left the window"
    );
}

#[test]
fn counts_are_taken_within_their_window_and_the_store_left_empty() {
    let mut store = MemoryStore::new(10);
    let (windowed, unbounded) = (Uuid::new_v4(), Uuid::new_v4());
    add(&mut store, windowed, &key("a"), 3, 100, Some(10));
    add(&mut store, windowed, &key("a"), 2, 105, Some(10));
    add(&mut store, windowed, &key("gone"), 4, 100, Some(10));
    add(&mut store, unbounded, &key("b"), 7, 50, None);
    fired(&mut store, unbounded, &key("fired"), 60, 0);
    let windows = |id: Uuid| (id == windowed).then_some(10);
    let mut taken = store.take_counts(112, &windows);
    taken.sort_by_key(|(_, _, count)| *count);
    assert_eq!(
        taken,
        vec![(windowed, key("a"), 2), (unbounded, key("b"), 7)],
        "second 100 left the window; a key that only fired holds no events"
    );
    assert!(store.sizes().iter().all(|(_, keys, _)| *keys == 0));
}

#[test]
fn without_a_window_the_count_runs_until_it_fires() {
    let mut store = MemoryStore::new(10);
    let w = Uuid::new_v4();
    add(&mut store, w, &key("k"), 5, 100, None);
    assert_eq!(add(&mut store, w, &key("k"), 5, 10_000, None), 10);
    fired(&mut store, w, &key("k"), 10_000, 0);
    assert_eq!(
        cooldown(&mut store, w, &key("k")).map(|c| c.last_fired),
        Some(10_000)
    );
    assert_eq!(add(&mut store, w, &key("k"), 1, 10_001, None), 1);
}

#[test]
fn the_least_recently_updated_key_is_evicted() {
    let mut store = MemoryStore::new(2);
    let w = Uuid::new_v4();
    add(&mut store, w, &key("a"), 1, 1, None);
    add(&mut store, w, &key("b"), 1, 1, None);
    add(&mut store, w, &key("a"), 1, 2, None);
    add(&mut store, w, &key("c"), 1, 3, None);
    assert_eq!(add(&mut store, w, &key("a"), 1, 4, None), 3, "a was kept");
    assert_eq!(
        add(&mut store, w, &key("b"), 1, 4, None),
        1,
        "b was evicted and starts again"
    );
    let (_, keys, evictions) = store.sizes()[0];
    assert_eq!((keys, evictions), (2, 2));
}

#[test]
fn memory_per_key_is_bounded_by_the_window() {
    let mut store = MemoryStore::new(1);
    let w = Uuid::new_v4();
    for second in 0..10_000 {
        add(&mut store, w, &key("k"), 1, second, Some(60));
    }
    let counter = store.existing(w, &key("k")).unwrap();
    assert!(counter.buckets.len() <= 60);
}

/// Files written before the compact layout (every field, buckets as a list) load.
#[test]
fn a_counters_file_of_the_previous_layout_loads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("counters.json");
    let w = Uuid::new_v4();
    let previous = serde_json::json!({"watchers": {w.to_string(): {"keys": {
        "[\"a\"]": {"buckets": [[100, 3], [101, 2]], "last_fired": null,
                    "cooldown_secs": 0, "crossed_while_cooling": false},
        "": {"buckets": [], "last_fired": 90, "cooldown_secs": 30,
             "crossed_while_cooling": true}}}}});
    std::fs::write(&path, previous.to_string()).unwrap();
    let mut loaded = MemoryStore::load(&path, 10).unwrap();
    assert_eq!(add(&mut loaded, w, &key("[\"a\"]"), 1, 105, Some(10)), 6);
    let cooldown = cooldown(&mut loaded, w, &key("")).unwrap();
    assert_eq!(
        (cooldown.last_fired, cooldown.secs, cooldown.crossed),
        (90, 30, true)
    );
}

/// Watchers saved apart, as `counters.json` keeps them, share one table once placed
/// in their set, each with its own counters; a watcher no set lists is dropped.
#[test]
fn watchers_restored_apart_join_their_set_with_their_own_counters() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("counters.json");
    let (first, second, deleted) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let mut store = MemoryStore::new(10);
    add(&mut store, first, &key("[1]"), 3, 100, None);
    add(&mut store, second, &key("[1]"), 5, 100, None);
    add(&mut store, second, &key("[2]"), 1, 100, None);
    add(&mut store, deleted, &key("[1]"), 1, 100, None);
    store.save(&path).unwrap();
    let mut loaded = MemoryStore::load(&path, 10).unwrap();
    assert_eq!(loaded.sets.len(), 3, "one table a watcher, as saved");
    loaded.arrange(&[vec![first, second]]);
    assert_eq!((loaded.sets.len(), loaded.sets[0].len()), (1, 2));
    assert_eq!(add(&mut loaded, first, &key("[1]"), 1, 101, None), 4);
    assert_eq!(add(&mut loaded, second, &key("[1]"), 1, 101, None), 6);
    assert!(loaded.existing(first, &key("[2]")).is_none());
    let mut sizes = loaded.sizes();
    sizes.sort_by_key(|(id, ..)| *id != first);
    assert_eq!(sizes, [(first, 1, 0), (second, 2, 0)]);
}

#[test]
fn saved_counters_load_back_with_their_windows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("counters.json");
    let mut store = MemoryStore::new(10);
    let w = Uuid::new_v4();
    add(&mut store, w, &key("k"), 3, 100, Some(10));
    fired(&mut store, w, &key("f"), 100, 30);
    store.save(&path).unwrap();
    let mut loaded = MemoryStore::load(&path, 10).unwrap();
    assert_eq!(add(&mut loaded, w, &key("k"), 1, 105, Some(10)), 4);
    let cooldown = cooldown(&mut loaded, w, &key("f")).unwrap();
    assert_eq!((cooldown.last_fired, cooldown.secs), (100, 30));
    std::fs::write(&path, b"{").unwrap();
    let Err(error) = MemoryStore::load(&path, 10) else {
        panic!("a corrupt counters file loaded");
    };
    assert!(format!("{error:#}").contains("is corrupt"), "{error:#}");
}
