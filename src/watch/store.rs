//! The master's counter store: counts per (watcher, key) over time, behind one narrow
//! interface (`CounterStore`) that the rules (`rule/`) are written against. A
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

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use log::info;
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Key;
pub use super::counter::KeyCounter;
use super::due::DueQueue;
use super::table::SetTable;

pub use crate::clock::Second;

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
    #[cfg(test)]
    fn existing(&mut self, watcher: Uuid, key: &Key) -> Option<&mut KeyCounter>;
    /// Every key the watcher holds.
    fn keys(&self, watcher: Uuid) -> Vec<Key>;
    /// Judges `key` on the clock at `due` (`due::DueQueue::schedule`); nothing for a key
    /// the watcher's set does not hold (callers count it first).
    fn schedule(&mut self, watcher: Uuid, key: &Key, due: Second);
    fn is_waiting(&self, watcher: Uuid, key: &Key) -> bool;
    /// Watches `key` whatever it does (`single`'s, `expect`'s): never evicted.
    fn keep(&mut self, watcher: Uuid, key: &Key);
    /// `judge` of each of at most `at_most` keys of `watcher` due at `now`, which wait no
    /// longer, one after the other; the keys judged.
    fn judge_due(
        &mut self,
        watcher: Uuid,
        now: Second,
        at_most: usize,
        judge: &mut dyn FnMut(&mut DueAt<'_>),
    ) -> usize;
    /// Drops every counter; the watchers stay where `arrange` put them.
    fn clear(&mut self);
    /// The most keys one field set may hold (`watchers.max_keys`, reloadable).
    fn set_max_keys(&mut self, max_keys: usize);
    /// Evicts the keys a table holds past `max_keys` (lowered by a reload, or restored
    /// from a larger file), as a new key would, for at most `budget` updates (a key
    /// evicted costs one per watcher of its set); the updates it spent.
    fn evict_past_max_keys(&mut self, budget: usize) -> usize;
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
    slot: usize,
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
                buckets.keep_within(window, now);
                buckets.add(now, n);
            }
            None => buckets.add_to_first(now, n),
        }
        buckets.total()
    }

    /// Judges the key on the clock at `due` (`due::DueQueue::schedule`).
    pub fn schedule(&mut self, due: Second) {
        self.due.schedule(self.slot, due);
    }

    pub fn is_waiting(&self) -> bool {
        self.due.is_waiting(self.slot)
    }
}

/// One watcher's key come up on the clock, found by its slot (no lookup of its text):
/// what its rule's `on_due` reads and changes (`rule::judge::DueKey`).
pub struct DueAt<'a> {
    table: &'a mut SetTable,
    column: usize,
    slot: usize,
    /// Its key once forgotten: the slot may hold another key then.
    forgotten: Option<Key>,
}

impl DueAt<'_> {
    pub fn key(&self) -> Key {
        match &self.forgotten {
            Some(key) => key.clone(),
            None => Key::from(self.table.key_at(self.slot)),
        }
    }

    /// Whether the key is `kept`'s.
    pub fn key_is(&self, kept: &dyn Fn(&str) -> bool) -> bool {
        self.forgotten.is_none() && kept(self.table.key_at(self.slot))
    }

    /// Its counter, if the watcher holds it still (not evicted, not forgotten).
    pub fn counter(&mut self) -> Option<&mut KeyCounter> {
        if self.forgotten.is_some() {
            return None;
        }
        self.table.column_mut(self.column).held(self.slot)
    }

    /// Judged again at `due` (`due::DueQueue::schedule`), unless forgotten.
    pub fn wait(&mut self, due: Second) {
        if self.forgotten.is_none() {
            self.table
                .column_mut(self.column)
                .due
                .schedule(self.slot, due);
        }
    }

    /// Dropped for its watcher alone (a flatline key silent past `forget_after_secs`).
    pub fn forget(&mut self) {
        if self.forgotten.is_none() {
            self.forgotten = Some(self.key());
            self.table.column_mut(self.column).due.forget(self.slot);
            self.table.release(self.column, self.slot);
        }
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
        let started = Instant::now();
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
        let keys: usize = store.sets.iter().map(SetTable::len).sum();
        info!(
            "counters restored from {}: {keys} keys of {} watchers, {} bytes, in {} ms",
            path.display(),
            store.sets.len(),
            document.len(),
            started.elapsed().as_millis()
        );
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

    /// The table that holds the watchers of `wanted`: the largest of theirs, the others'
    /// columns moved in, those of any other watcher dropped, a column added for each
    /// watcher new to the store.
    fn gather(&mut self, wanted: &[Uuid], old: &mut [Option<SetTable>]) -> SetTable {
        let mut holding: Vec<usize> = (wanted.iter())
            .filter_map(|w| self.placed.get(w).map(|&(set, _)| set))
            .collect();
        holding.sort_unstable();
        holding.dedup();
        holding.sort_by_key(|&set| Reverse(old[set].as_ref().map_or(0, SetTable::len)));
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
                    let watcher_key = WatcherKey {
                        key,
                        slot,
                        counter,
                        due,
                    };
                    judge(at, watcher_key, *events);
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

    #[cfg(test)]
    fn existing(&mut self, watcher: Uuid, key: &Key) -> Option<&mut KeyCounter> {
        let (set, column, slot) = self.find(watcher, key)?;
        self.sets[set].column_mut(column).held(slot)
    }

    fn keys(&self, watcher: Uuid) -> Vec<Key> {
        let Some(&(set, column)) = self.placed.get(&watcher) else {
            return Vec::new();
        };
        let held = self.sets[set].held_by(column);
        held.map(|(_, key)| Key::from(key)).collect()
    }

    fn schedule(&mut self, watcher: Uuid, key: &Key, due: Second) {
        if let Some((set, column, slot)) = self.find(watcher, key) {
            self.sets[set].column_mut(column).due.schedule(slot, due);
        }
    }

    fn is_waiting(&self, watcher: Uuid, key: &Key) -> bool {
        self.find(watcher, key).is_some_and(|(set, column, slot)| {
            self.sets[set].columns()[column].due.is_waiting(slot)
        })
    }

    fn keep(&mut self, watcher: Uuid, key: &Key) {
        let (set, column) = self.place(watcher);
        self.sets[set].column_mut(column).due.keep(key);
    }

    fn judge_due(
        &mut self,
        watcher: Uuid,
        now: Second,
        at_most: usize,
        judge: &mut dyn FnMut(&mut DueAt<'_>),
    ) -> usize {
        let Some(&(set, column)) = self.placed.get(&watcher) else {
            return 0;
        };
        let table = &mut self.sets[set];
        let mut judged = 0;
        while judged < at_most {
            let Some(slot) = table.column_mut(column).due.next_due(now) else {
                break;
            };
            judged += 1;
            judge(&mut DueAt {
                table,
                column,
                slot,
                forgotten: None,
            });
        }
        judged
    }

    fn clear(&mut self) {
        for table in &mut self.sets {
            *table = table.emptied();
        }
    }

    fn set_max_keys(&mut self, max_keys: usize) {
        self.max_keys = max_keys.max(1);
    }

    fn evict_past_max_keys(&mut self, budget: usize) -> usize {
        let mut spent = 0;
        for table in &mut self.sets {
            if spent >= budget {
                break;
            }
            spent += table.evict_past(self.max_keys, budget - spent);
        }
        spent
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
        // The `limit` best seen so far, worst on top: one pass, no copy of a million keys
        // (the status page asks every 2 s). Best: the highest count, then the first key.
        let mut best: BinaryHeap<Reverse<(u64, Reverse<&str>)>> = BinaryHeap::new();
        for (key, count) in self.sets[set].counts(column, live) {
            let rank = (count, Reverse(key));
            if best.len() < limit {
                best.push(Reverse(rank));
            } else if best.peek().is_some_and(|Reverse(worst)| rank > *worst) {
                best.pop();
                best.push(Reverse(rank));
            }
        }
        (best.into_sorted_vec().into_iter())
            .map(|Reverse((count, Reverse(key)))| (Key::from(key), count))
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
mod tests;
