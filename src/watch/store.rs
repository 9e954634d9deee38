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
//! The in-master store keeps the keys of each field set in one table (`table::SetTable`),
//! as the workers ship them (`SetCounts`): a key is found once per set however many
//! watchers count by it, and each watcher decides on its own counter of it
//! (`WatcherKey`): per key one bucket per second that saw events (a sliding window of at
//! most `window_secs` buckets: bounded memory per key), and at most `max_keys` keys per
//! set: past the limit, the least recently updated key of a sample is evicted.
//! `counters.json` keeps each watcher's keys apart, as it always did; a watcher restored
//! alone joins its set when the registry places it (`arrange`).

use std::collections::HashMap;
use std::path::Path;

use anyhow::Context;
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Key;
use super::due::DueQueue;
pub use super::table::KeyCounter;
use super::table::SetTable;

pub use super::table::Second;

pub trait CounterStore {
    /// Puts the watchers of each field set (`sets`, the watchers of each) in one table,
    /// keeping their counters; drops the counters of every watcher not listed.
    fn arrange(&mut self, sets: &[Vec<Uuid>]);
    /// Counts the `keys` (key, events) of one field set for its `watchers`, finding each
    /// key once: `judge` decides on each watcher's counter of it, given the watcher's
    /// position in `watchers`.
    fn count_set(
        &mut self,
        watchers: &[Uuid],
        keys: &[(Key, u64)],
        judge: &mut dyn FnMut(usize, WatcherKey<'_>, u64),
    );
    /// The counter of `key`, created if new, marked as updated.
    fn counter(&mut self, watcher: Uuid, key: &Key) -> &mut KeyCounter;
    /// The counter of `key` if the store holds it (not evicted, not forgotten).
    fn existing(&mut self, watcher: Uuid, key: &Key) -> Option<&mut KeyCounter>;
    /// Drops `key` for `watcher` alone (a flatline key silent past `forget_after_secs`).
    fn forget(&mut self, watcher: Uuid, key: &Key);
    /// Every key the watcher holds.
    fn keys(&self, watcher: Uuid) -> Vec<Key>;
    /// Judges `key` on the clock at `due` (`due::DueQueue::schedule`).
    fn schedule(&mut self, watcher: Uuid, key: &Key, due: Second);
    fn is_waiting(&self, watcher: Uuid, key: &Key) -> bool;
    /// The keys of `watcher` due at `now`, which wait no longer.
    fn take_due(&mut self, watcher: Uuid, now: Second) -> Vec<Key>;
    /// Drops every counter; the watchers stay where `arrange` put them.
    fn clear(&mut self);
    /// The most keys one field set may hold (`watchers.max_keys`, reloadable).
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

/// One watcher's counter of one key, found once for the key's field set: what its rule
/// decides on when counts arrive (`rule::RuleParams::on_count`).
pub struct WatcherKey<'a> {
    key: &'a Key,
    counter: &'a mut KeyCounter,
    due: &'a mut DueQueue,
}

impl WatcherKey<'_> {
    pub fn key(&self) -> &Key {
        self.key
    }

    pub fn counter(&mut self) -> &mut KeyCounter {
        self.counter
    }

    /// Adds `n` events seen at `now` and returns the key's count: within the last
    /// `window` seconds, or since its last firing when there is no window.
    pub fn add(&mut self, n: u64, now: Second, window: Option<u64>) -> u64 {
        let buckets = &mut self.counter.buckets;
        match window {
            Some(window) => {
                buckets.drop_front_while(|second| second.saturating_add(window) <= now);
                buckets.add(now, n);
            }
            None => buckets.add_to_first(now, n),
        }
        buckets.total()
    }

    /// Judges the key on the clock at `due` (`due::DueQueue::schedule`).
    pub fn schedule(&mut self, due: Second) {
        self.due.schedule(self.key, due);
    }

    pub fn is_waiting(&self) -> bool {
        self.due.is_waiting(self.key)
    }
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

#[derive(Default)]
pub struct MemoryStore {
    sets: Vec<SetTable>,
    /// Where each watcher's counters are: (set, column).
    placed: HashMap<Uuid, (usize, usize)>,
    max_keys: usize,
    /// Ticks once per update: the recency stamps of eviction.
    clock: u64,
}

impl MemoryStore {
    pub fn new(max_keys: usize) -> MemoryStore {
        MemoryStore {
            max_keys: max_keys.max(1),
            ..MemoryStore::default()
        }
    }

    /// The counters saved by the previous stop; none when there is no file. A file that
    /// cannot be read stops the start, naming it: it is never overwritten unread. Each
    /// watcher's keys are a set of their own until `arrange` places it.
    pub fn load(path: &Path, max_keys: usize) -> anyhow::Result<MemoryStore> {
        let Some(document) = crate::files::read_state_file(path, "counters file")? else {
            return Ok(MemoryStore::new(max_keys));
        };
        let saved: Saved = serde_json::from_slice(&document).with_context(|| {
            format!(
                "counters file {} is corrupt; remove it to start with empty counters",
                path.display()
            )
        })?;
        let mut store = MemoryStore::new(max_keys);
        for (watcher, mut table) in saved.watchers {
            table.column_mut(0).watcher = watcher;
            store.sets.push(table);
        }
        store.place_all();
        // Restored keys are stamped from 0 in file order: updates come after them.
        store.clock = store.sets.iter().map(SetTable::len).max().unwrap_or(0) as u64;
        Ok(store)
    }

    fn place_all(&mut self) {
        self.placed.clear();
        for (set, table) in self.sets.iter().enumerate() {
            for (column, held) in table.columns().iter().enumerate() {
                self.placed.insert(held.watcher, (set, column));
            }
        }
    }

    /// Where `watcher`'s counters are; a watcher no `arrange` placed is a set alone.
    fn place(&mut self, watcher: Uuid) -> (usize, usize) {
        if let Some(&place) = self.placed.get(&watcher) {
            return place;
        }
        let mut table = SetTable::default();
        let place = (self.sets.len(), table.add_column(watcher));
        self.sets.push(table);
        self.placed.insert(watcher, place);
        place
    }

    /// `key`'s slot in `watcher`'s set, if the set holds it, with where the watcher is.
    fn find(&self, watcher: Uuid, key: &Key) -> Option<(usize, usize, usize)> {
        let &(set, column) = self.placed.get(&watcher)?;
        Some((set, column, self.sets[set].slot_of(key.as_str())?))
    }

    fn column_of(&self, watcher: Uuid) -> Option<&super::column::Column> {
        let &(set, column) = self.placed.get(&watcher)?;
        Some(&self.sets[set].columns()[column])
    }

    /// The table that holds the watchers of `wanted`: the largest of theirs, the others'
    /// columns moved in, those of any other watcher dropped, a column added for each
    /// watcher new to the store.
    fn gather(&mut self, wanted: &[Uuid], old: &mut [Option<SetTable>]) -> SetTable {
        let mut holding: Vec<usize> = (wanted.iter())
            .filter_map(|w| self.placed.get(w).map(|&(set, _)| set))
            .collect();
        holding.sort_unstable();
        holding.dedup();
        holding.sort_by_key(|&set| std::cmp::Reverse(old[set].as_ref().map_or(0, SetTable::len)));
        let mut tables = holding.iter().filter_map(|&set| old[set].take());
        let mut table = tables.next().unwrap_or_default();
        for other in tables {
            table.absorb(other);
        }
        table.retain_columns(|watcher| wanted.contains(&watcher));
        for &watcher in wanted {
            if !table.columns().iter().any(|c| c.watcher == watcher) {
                table.add_column(watcher);
            }
        }
        table
    }
}

impl CounterStore for MemoryStore {
    fn arrange(&mut self, sets: &[Vec<Uuid>]) {
        let mut old: Vec<Option<SetTable>> = std::mem::take(&mut self.sets)
            .into_iter()
            .map(Some)
            .collect();
        let arranged = sets
            .iter()
            .map(|wanted| self.gather(wanted, &mut old))
            .collect();
        self.sets = arranged;
        self.place_all();
    }

    fn count_set(
        &mut self,
        watchers: &[Uuid],
        keys: &[(Key, u64)],
        judge: &mut dyn FnMut(usize, WatcherKey<'_>, u64),
    ) {
        // (set, column, position in `watchers`): one set, unless a batch names watchers
        // the registry has since placed apart.
        let mut places: Vec<(usize, usize, usize)> = (watchers.iter().enumerate())
            .map(|(at, &watcher)| {
                let (set, column) = self.place(watcher);
                (set, column, at)
            })
            .collect();
        places.sort_unstable();
        for group in places.chunk_by(|a, b| a.0 == b.0) {
            let table = &mut self.sets[group[0].0];
            for (key, events) in keys {
                self.clock += 1;
                let slot = table.touch(key.as_str(), self.clock, self.max_keys);
                for &(_, column, at) in group {
                    let (counter, due) = table.column_mut(column).block(slot);
                    judge(at, WatcherKey { key, counter, due }, *events);
                }
            }
        }
    }

    fn counter(&mut self, watcher: Uuid, key: &Key) -> &mut KeyCounter {
        let (set, column) = self.place(watcher);
        self.clock += 1;
        let table = &mut self.sets[set];
        let slot = table.touch(key.as_str(), self.clock, self.max_keys);
        table.column_mut(column).hold(slot)
    }

    fn existing(&mut self, watcher: Uuid, key: &Key) -> Option<&mut KeyCounter> {
        let (set, column, slot) = self.find(watcher, key)?;
        self.sets[set].column_mut(column).held(slot)
    }

    fn forget(&mut self, watcher: Uuid, key: &Key) {
        if let Some((set, column, slot)) = self.find(watcher, key) {
            self.sets[set].column_mut(column).due.forget(key.as_str());
            self.sets[set].release(column, slot);
        }
    }

    fn keys(&self, watcher: Uuid) -> Vec<Key> {
        let Some(&(set, column)) = self.placed.get(&watcher) else {
            return Vec::new();
        };
        let held = self.sets[set].held_by(column);
        held.map(|(_, key)| Key::from(key)).collect()
    }

    fn schedule(&mut self, watcher: Uuid, key: &Key, due: Second) {
        let (set, column) = self.place(watcher);
        self.sets[set].column_mut(column).due.schedule(key, due);
    }

    fn is_waiting(&self, watcher: Uuid, key: &Key) -> bool {
        self.column_of(watcher)
            .is_some_and(|column| column.due.is_waiting(key))
    }

    fn take_due(&mut self, watcher: Uuid, now: Second) -> Vec<Key> {
        let Some(&(set, column)) = self.placed.get(&watcher) else {
            return Vec::new();
        };
        self.sets[set].column_mut(column).due.take_due(now)
    }

    fn clear(&mut self) {
        for table in &mut self.sets {
            *table = table.emptied();
        }
    }

    fn set_max_keys(&mut self, max_keys: usize) {
        self.max_keys = max_keys.max(1);
    }

    fn take_counts(
        &mut self,
        now: Second,
        windows: &dyn Fn(Uuid) -> Option<u64>,
    ) -> Vec<(Uuid, Key, u64)> {
        let mut counts = Vec::new();
        for table in &self.sets {
            for (column, held) in table.columns().iter().enumerate() {
                let window = windows(held.watcher);
                let live = move |second: Second| window.is_none_or(|w| second + w > now);
                let taken = table.counts(column, live);
                counts.extend(taken.map(|(key, count)| (held.watcher, Key::from(key), count)));
            }
        }
        self.clear();
        counts
    }

    fn hottest(
        &self,
        watcher: Uuid,
        now: Second,
        window: Option<u64>,
        limit: usize,
    ) -> Vec<(Key, u64)> {
        let Some(&(set, column)) = self.placed.get(&watcher) else {
            return Vec::new();
        };
        let live = |second: Second| window.is_none_or(|w| second + w > now);
        let mut counts: Vec<(&str, u64)> = self.sets[set].counts(column, live).collect();
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
        (self.sets.iter())
            .flat_map(SetTable::columns)
            .map(|column| (column.watcher, column.held_keys(), column.evictions))
            .collect()
    }

    fn save(&self, path: &Path) -> anyhow::Result<()> {
        let document = serde_json::to_vec(self).context("cannot serialize the counters")?;
        crate::files::replace_atomically(path, &document)
    }
}

/// `counters.json` as it always was: `{"watchers": {id: {"keys": {key: counter}}}}`.
#[derive(Deserialize)]
struct Saved {
    watchers: HashMap<Uuid, SetTable>,
}

impl Serialize for MemoryStore {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct Watchers<'a>(&'a [SetTable]);
        impl Serialize for Watchers<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut map = serializer.serialize_map(None)?;
                for table in self.0 {
                    for (column, held) in table.columns().iter().enumerate() {
                        map.serialize_entry(&held.watcher, &table.saved(column))?;
                    }
                }
                map.end()
            }
        }
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry("watchers", &Watchers(&self.sets))?;
        map.end()
    }
}

#[cfg(test)]
mod tests {
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
}
