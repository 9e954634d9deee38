//! The master's counter store: counts per (watcher, key) over time, behind one narrow
//! interface (`CounterStore`) that the rules (`rule.rs`) are written against. A
//! `CounterStore` answers at once, in the master's loop, which never waits: only a store
//! in the master's memory can be one. `MemoryStore` is it.
//!
//! A store shared by nodes (Redis, cluster.md) is not a `CounterStore`: it answers later,
//! by message through the cluster link, and the rules run there next to the data, in the
//! Redis Function (`src/cluster/eventsd.lua`), as the only way to decide a crossing
//! atomically for every node. Both engines read one definition of a rule's figures
//! (`rule::RuleParams`), and `tests/rules.rs` holds them to one table of scenarios.
//!
//! The in-master store keeps, per key, one bucket per second that saw events (a sliding
//! window of at most `window_secs` buckets: bounded memory per key), and at most
//! `max_keys` keys per watcher, each watcher's in a compact `table::KeyTable`: past the
//! limit, the least recently updated key of a sample is evicted.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Key;
use super::due::DueQueue;
pub use super::table::KeyCounter;
use super::table::{KeyTable, LastKey};

pub use super::table::Second;

pub trait CounterStore {
    /// Adds `n` events seen at `now` and returns the key's count: within the last
    /// `window` seconds, or since its last firing when there is no window.
    fn add(&mut self, watcher: Uuid, key: &Key, n: u64, now: Second, window: Option<u64>) -> u64;
    /// The counter of `key`, created if new, marked as updated.
    fn counter(&mut self, watcher: Uuid, key: &Key) -> &mut KeyCounter;
    /// The counter of `key` if the store holds it (not evicted, not forgotten).
    fn existing(&mut self, watcher: Uuid, key: &Key) -> Option<&mut KeyCounter>;
    /// Drops `key` (a flatline key silent past `forget_after_secs`).
    fn forget(&mut self, watcher: Uuid, key: &Key);
    /// Every key the watcher holds.
    fn keys(&self, watcher: Uuid) -> Vec<Key>;
    /// Judges `key` on the clock at `due` (`due::DueQueue::schedule`).
    fn schedule(&mut self, watcher: Uuid, key: &Key, due: Second);
    fn is_waiting(&self, watcher: Uuid, key: &Key) -> bool;
    /// The keys of `watcher` due at `now`, which wait no longer.
    fn take_due(&mut self, watcher: Uuid, now: Second) -> Vec<Key>;
    /// Drops every counter of the watchers `keep` refuses.
    fn retain_watchers(&mut self, keep: &dyn Fn(Uuid) -> bool);
    /// The most keys one watcher may hold (`watchers.max_keys`, reloadable).
    fn set_max_keys(&mut self, max_keys: usize);
    /// Every key's count at `now`, within its watcher's window (`windows`), taken out:
    /// the store is left empty (a cluster node sends a stopped node's counts to Redis).
    fn take_counts(
        &mut self,
        now: Second,
        windows: &dyn Fn(Uuid) -> Option<u64>,
    ) -> Vec<(Uuid, Key, u64)>;
    /// The `limit` keys of `watcher` with the highest counts at `now` (within `window`),
    /// highest first: a watcher's live state (alerts.md).
    fn hottest(
        &self,
        watcher: Uuid,
        now: Second,
        window: Option<u64>,
        limit: usize,
    ) -> Vec<(Key, u64)>;
    /// (watcher, keys held, keys evicted so far), for metrics.
    fn sizes(&self) -> Vec<(Uuid, usize, u64)>;
    /// Writes what a restart needs to `path`, atomically.
    fn save(&self, path: &Path) -> anyhow::Result<()>;
}

/// A key's cooldown since it last fired.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cooldown {
    pub last_fired: Second,
    /// The cooldown that started then.
    pub secs: u64,
    /// It crossed again before the cooldown ended.
    pub crossed: bool,
}

#[derive(Default, Serialize, Deserialize)]
pub struct MemoryStore {
    watchers: HashMap<Uuid, KeyTable>,
    /// The keys of the watchers decided on the clock, by due second.
    #[serde(skip)]
    dues: HashMap<Uuid, DueQueue>,
    #[serde(skip)]
    max_keys: usize,
    /// Ticks once per update: the recency stamps of eviction.
    #[serde(skip)]
    clock: u64,
    #[serde(skip)]
    last_created: LastKey,
}

impl MemoryStore {
    pub fn new(max_keys: usize) -> MemoryStore {
        MemoryStore {
            max_keys: max_keys.max(1),
            ..MemoryStore::default()
        }
    }

    /// The counters saved by the previous stop; none when there is no file. A file that
    /// cannot be read stops the start, naming it: it is never overwritten unread.
    pub fn load(path: &Path, max_keys: usize) -> anyhow::Result<MemoryStore> {
        let Some(document) = crate::files::read_state_file(path, "counters file")? else {
            return Ok(MemoryStore::new(max_keys));
        };
        let mut store: MemoryStore = serde_json::from_slice(&document).with_context(|| {
            format!(
                "counters file {} is corrupt; remove it to start with empty counters",
                path.display()
            )
        })?;
        store.set_max_keys(max_keys);
        // Restored keys are stamped from 0 in file order: updates come after them.
        store.clock = store
            .watchers
            .values()
            .map(KeyTable::len)
            .max()
            .unwrap_or(0) as u64;
        Ok(store)
    }

    fn touch(&mut self, watcher: Uuid, key: &Key) -> &mut KeyCounter {
        self.clock += 1;
        self.watchers.entry(watcher).or_default().touch(
            key,
            self.clock,
            self.max_keys,
            &mut self.last_created,
        )
    }
}

impl CounterStore for MemoryStore {
    fn add(&mut self, watcher: Uuid, key: &Key, n: u64, now: Second, window: Option<u64>) -> u64 {
        let buckets = &mut self.touch(watcher, key).buckets;
        match window {
            Some(window) => {
                buckets.drop_front_while(|second| second.saturating_add(window) <= now);
                buckets.add(now, n);
            }
            None => buckets.add_to_first(now, n),
        }
        buckets.total()
    }

    fn counter(&mut self, watcher: Uuid, key: &Key) -> &mut KeyCounter {
        self.touch(watcher, key)
    }

    fn existing(&mut self, watcher: Uuid, key: &Key) -> Option<&mut KeyCounter> {
        self.watchers.get_mut(&watcher)?.get_mut(key)
    }

    fn forget(&mut self, watcher: Uuid, key: &Key) {
        if let Some(table) = self.watchers.get_mut(&watcher) {
            table.remove(key);
        }
    }

    fn keys(&self, watcher: Uuid) -> Vec<Key> {
        self.watchers
            .get(&watcher)
            .map(|table| table.keys().map(Key::from).collect())
            .unwrap_or_default()
    }

    fn schedule(&mut self, watcher: Uuid, key: &Key, due: Second) {
        self.dues.entry(watcher).or_default().schedule(key, due);
    }

    fn is_waiting(&self, watcher: Uuid, key: &Key) -> bool {
        self.dues
            .get(&watcher)
            .is_some_and(|due| due.is_waiting(key))
    }

    fn take_due(&mut self, watcher: Uuid, now: Second) -> Vec<Key> {
        self.dues
            .get_mut(&watcher)
            .map(|due| due.take_due(now))
            .unwrap_or_default()
    }

    fn retain_watchers(&mut self, keep: &dyn Fn(Uuid) -> bool) {
        self.watchers.retain(|id, _| keep(*id));
        self.dues.retain(|id, _| keep(*id));
    }

    fn set_max_keys(&mut self, max_keys: usize) {
        self.max_keys = max_keys.max(1);
    }

    fn take_counts(
        &mut self,
        now: Second,
        windows: &dyn Fn(Uuid) -> Option<u64>,
    ) -> Vec<(Uuid, Key, u64)> {
        let counts = self
            .watchers
            .iter()
            .flat_map(|(id, table)| {
                let window = windows(*id);
                let live = move |second: Second| window.is_none_or(|w| second + w > now);
                table
                    .counts(live)
                    .map(move |(key, count)| (*id, Key::from(key), count))
            })
            .collect();
        self.watchers.clear();
        self.dues.clear();
        counts
    }

    fn hottest(
        &self,
        watcher: Uuid,
        now: Second,
        window: Option<u64>,
        limit: usize,
    ) -> Vec<(Key, u64)> {
        let Some(table) = self.watchers.get(&watcher) else {
            return Vec::new();
        };
        let live = |second: Second| window.is_none_or(|w| second + w > now);
        let mut counts: Vec<(&str, u64)> = table.counts(live).collect();
        let by_count = |a: &(&str, u64), b: &(&str, u64)| b.1.cmp(&a.1).then(a.0.cmp(b.0));
        if counts.len() > limit && limit > 0 {
            counts.select_nth_unstable_by(limit - 1, by_count);
            counts.truncate(limit);
        }
        counts.sort_unstable_by(by_count);
        counts.truncate(limit);
        counts
            .into_iter()
            .map(|(key, count)| (Key::from(key), count))
            .collect()
    }

    fn sizes(&self) -> Vec<(Uuid, usize, u64)> {
        self.watchers
            .iter()
            .map(|(id, table)| (*id, table.len(), table.evictions))
            .collect()
    }

    fn save(&self, path: &Path) -> anyhow::Result<()> {
        let document = serde_json::to_vec(self).context("cannot serialize the counters")?;
        crate::files::replace_atomically(path, &document)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            store.add(watcher, &key(text), n, 100, Some(60));
        }
        store.add(watcher, &key("[\"old\"]"), 50, 10, Some(60));
        let hottest = store.hottest(watcher, 100, Some(60), 2);
        assert_eq!(hottest, [(key("[\"b\"]"), 9), (key("[\"c\"]"), 5)]);
        assert!(store.hottest(Uuid::new_v4(), 100, None, 2).is_empty());
    }

    #[test]
    fn a_window_forgets_events_older_than_it() {
        let mut store = MemoryStore::new(10);
        let w = Uuid::new_v4();
        assert_eq!(store.add(w, &key("k"), 3, 100, Some(10)), 3);
        assert_eq!(store.add(w, &key("k"), 2, 105, Some(10)), 5);
        assert_eq!(
            store.add(w, &key("k"), 1, 110, Some(10)),
            3,
            "second 100 left the window"
        );
        assert_eq!(store.add(w, &key("k"), 1, 200, Some(10)), 1);
    }

    #[test]
    fn counts_are_taken_within_their_window_and_the_store_left_empty() {
        let mut store = MemoryStore::new(10);
        let (windowed, unbounded) = (Uuid::new_v4(), Uuid::new_v4());
        store.add(windowed, &key("a"), 3, 100, Some(10));
        store.add(windowed, &key("a"), 2, 105, Some(10));
        store.add(windowed, &key("gone"), 4, 100, Some(10));
        store.add(unbounded, &key("b"), 7, 50, None);
        fired(&mut store, unbounded, &key("fired"), 60, 0);
        let windows = |id: Uuid| (id == windowed).then_some(10);
        let mut taken = store.take_counts(112, &windows);
        taken.sort_by_key(|(_, _, count)| *count);
        assert_eq!(
            taken,
            vec![(windowed, key("a"), 2), (unbounded, key("b"), 7)],
            "second 100 left the window; a key that only fired holds no events"
        );
        assert!(store.sizes().is_empty());
    }

    #[test]
    fn without_a_window_the_count_runs_until_it_fires() {
        let mut store = MemoryStore::new(10);
        let w = Uuid::new_v4();
        store.add(w, &key("k"), 5, 100, None);
        assert_eq!(store.add(w, &key("k"), 5, 10_000, None), 10);
        fired(&mut store, w, &key("k"), 10_000, 0);
        assert_eq!(
            cooldown(&mut store, w, &key("k")).map(|c| c.last_fired),
            Some(10_000)
        );
        assert_eq!(store.add(w, &key("k"), 1, 10_001, None), 1);
    }

    #[test]
    fn the_least_recently_updated_key_is_evicted() {
        let mut store = MemoryStore::new(2);
        let w = Uuid::new_v4();
        store.add(w, &key("a"), 1, 1, None);
        store.add(w, &key("b"), 1, 1, None);
        store.add(w, &key("a"), 1, 2, None);
        store.add(w, &key("c"), 1, 3, None);
        assert_eq!(store.add(w, &key("a"), 1, 4, None), 3, "a was kept");
        assert_eq!(
            store.add(w, &key("b"), 1, 4, None),
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
            store.add(w, &key("k"), 1, second, Some(60));
        }
        let counter = store.watchers[&w].get(&key("k")).unwrap();
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
        assert_eq!(loaded.add(w, &key("[\"a\"]"), 1, 105, Some(10)), 6);
        let cooldown = cooldown(&mut loaded, w, &key("")).unwrap();
        assert_eq!(
            (cooldown.last_fired, cooldown.secs, cooldown.crossed),
            (90, 30, true)
        );
    }

    #[test]
    fn saved_counters_load_back_with_their_windows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("counters.json");
        let mut store = MemoryStore::new(10);
        let w = Uuid::new_v4();
        store.add(w, &key("k"), 3, 100, Some(10));
        fired(&mut store, w, &key("f"), 100, 30);
        store.save(&path).unwrap();
        let mut loaded = MemoryStore::load(&path, 10).unwrap();
        assert_eq!(loaded.add(w, &key("k"), 1, 105, Some(10)), 4);
        let cooldown = cooldown(&mut loaded, w, &key("f")).unwrap();
        assert_eq!((cooldown.last_fired, cooldown.secs), (100, 30));
        std::fs::write(&path, b"{").unwrap();
        let Err(error) = MemoryStore::load(&path, 10) else {
            panic!("a corrupt counters file loaded");
        };
        assert!(format!("{error:#}").contains("is corrupt"), "{error:#}");
    }
}
