//! One field set's counters in the master, laid out for many keys and many watchers
//! (benchmark.md: at most 120 bytes a key). The workers name a key once per field set
//! (`SetCounts`), and the master finds it once per set: one slot per key, its text
//! allocated once; per watcher of the set a column of counter blocks parallel to the
//! slots (`column::Column`, struct of arrays), a key's window inline until it has more
//! than one bucket; an index of slot numbers only, hashed (keyed) by the slot's text.
//!
//! A watcher holds a key from its first count until the key is evicted, or forgotten
//! for that watcher alone (a flatline key silent too long); a slot no watcher holds is
//! dropped. Past `max_keys`, the least recently updated key of a sample is evicted for
//! every watcher of the set, as Redis' `allkeys-lru` does: no per-key recency index to
//! keep, and the exact least recent key whenever the table is no larger than the sample.
//! A key a watcher keeps (`due::DueQueue::keeps`: `single`'s, `expect`'s) is never
//! evicted: a silent expected host is the least recently updated key of all, and evicting
//! it would stop watching it without a word. Kept keys take no room from the others: the
//! table holds its kept keys (bounded by `expect`'s limits) and `max_keys` others.

use std::fmt;
use std::hash::{BuildHasher, RandomState};

use hashbrown::HashTable;
use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

use super::column::Column;
pub use super::counter::{Buckets, KeyCounter, Second};

/// Slots looked at to choose the key to evict.
const EVICTION_SAMPLE: usize = 16;

struct Slot {
    key: Box<str>,
    /// The store's clock when the key was last updated.
    touched: u64,
}

/// The keys of one field set, and a column of counters per watcher of the set.
#[derive(Default)]
pub struct SetTable {
    /// Slot numbers, found by the text of their slot's key.
    index: HashTable<u32>,
    /// Keyed: the keys are the clients' values, which must not be able to make them collide.
    hasher: RandomState,
    slots: Vec<Slot>,
    columns: Vec<Column>,
    /// For the eviction sample: any sequence that is not always the same will do.
    sampler: u64,
}

impl SetTable {
    /// The keys held by any watcher of the set.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    pub fn column_mut(&mut self, column: usize) -> &mut Column {
        &mut self.columns[column]
    }

    /// The column of `watcher`, added: it holds none of the keys yet.
    pub fn add_column(&mut self, watcher: Uuid) -> usize {
        self.columns.push(Column::new(watcher, self.slots.len()));
        self.columns.len() - 1
    }

    /// Keeps the columns of the watchers `keep` accepts; drops the keys no one holds then.
    pub fn retain_columns(&mut self, keep: impl Fn(Uuid) -> bool) {
        let before = self.columns.len();
        self.columns.retain(|column| keep(column.watcher));
        if self.columns.len() == before {
            return;
        }
        // From the end: the slot a removal moves in was looked at already.
        for slot in (0..self.slots.len()).rev() {
            if !self.is_held(slot) {
                self.remove_slot(slot);
            }
        }
    }

    /// The key of `slot`.
    pub fn key_at(&self, slot: usize) -> &str {
        &self.slots[slot].key
    }

    /// The slot of `key`, if a watcher of the set holds it.
    pub fn slot_of(&self, key: &str) -> Option<usize> {
        self.slot_hashed(key, self.hasher.hash_one(key))
    }

    fn slot_hashed(&self, key: &str, hash: u64) -> Option<usize> {
        let slots = &self.slots;
        let found = (self.index).find(hash, |&slot| *slots[slot as usize].key == *key);
        found.map(|&slot| slot as usize)
    }

    /// The slot of `key`, created if new (evicting a key first when the table holds
    /// `max_keys` besides the kept ones), marked as updated at `stamp`. The key is hashed
    /// once.
    pub fn touch(&mut self, key: &str, stamp: u64, max_keys: usize) -> usize {
        let hash = self.hasher.hash_one(key);
        let slot = match self.slot_hashed(key, hash) {
            Some(slot) => slot,
            None => {
                if self.slots.len() >= max_keys.saturating_add(self.kept_keys()) {
                    self.evict_one();
                }
                self.insert(key.into(), hash, stamp)
            }
        };
        self.slots[slot].touched = stamp;
        slot
    }

    /// Evicts keys until the table holds `max_keys` besides the kept ones, for at most
    /// `budget` updates: a key evicted costs one per watcher of the set (each column
    /// drops it), as counting it does; at least one key. The updates it spent.
    pub fn evict_past(&mut self, max_keys: usize, budget: usize) -> usize {
        let bound = max_keys.saturating_add(self.kept_keys());
        let cost = self.columns.len().max(1);
        let evicted = (self.slots.len().saturating_sub(bound)).min((budget / cost).max(1));
        for _ in 0..evicted {
            self.evict_one();
        }
        evicted * cost
    }

    /// A slot for `key` (hashed `hash`), new to the table.
    fn insert(&mut self, key: Box<str>, hash: u64, touched: u64) -> usize {
        let (slots, hasher) = (&self.slots, &self.hasher);
        let rehash = |&slot: &u32| hasher.hash_one(&*slots[slot as usize].key);
        self.index.insert_unique(hash, slots.len() as u32, rehash);
        self.push_slot(key, touched)
    }

    /// The slot of a key just indexed.
    fn push_slot(&mut self, key: Box<str>, touched: u64) -> usize {
        let slot = self.slots.len();
        self.slots.push(Slot { key, touched });
        for column in &mut self.columns {
            column.push();
        }
        slot
    }

    /// Drops `column`'s counter of `slot`; the key goes when no watcher holds it.
    pub fn release(&mut self, column: usize, slot: usize) {
        self.columns[column].release(slot);
        if !self.is_held(slot) {
            self.remove_slot(slot);
        }
    }

    fn is_held(&self, slot: usize) -> bool {
        self.columns.iter().any(|column| column.holds(slot))
    }

    fn remove_slot(&mut self, slot: usize) {
        let hash = self.hasher.hash_one(&*self.slots[slot].key);
        if let Ok(entry) = self.index.find_entry(hash, |&at| at as usize == slot) {
            entry.remove();
        }
        let last = self.slots.len() - 1;
        self.slots.swap_remove(slot);
        for column in &mut self.columns {
            column.swap_remove(slot);
        }
        if slot != last {
            let hash = self.hasher.hash_one(&*self.slots[slot].key);
            if let Some(moved) = self.index.find_mut(hash, |&at| at as usize == last) {
                *moved = slot as u32;
            }
        }
    }

    /// Evicts the least recently updated key of a sample of the slots, for every watcher,
    /// never a kept one: of a sample of kept keys only, the least recent of all the
    /// others (a scan, as rare as such a sample); none when every key is kept.
    fn evict_one(&mut self) {
        let len = self.slots.len();
        let sample: Vec<usize> = if len <= EVICTION_SAMPLE {
            (0..len).collect()
        } else {
            (0..EVICTION_SAMPLE)
                .map(|_| self.next_sample() % len)
                .collect()
        };
        let evictable = |&slot: &usize| !self.is_kept(slot);
        let touched = |&slot: &usize| self.slots[slot].touched;
        let victim = (sample.into_iter().filter(evictable).min_by_key(touched))
            .or_else(|| (0..len).filter(evictable).min_by_key(touched));
        let Some(victim) = victim else {
            return;
        };
        for column in &mut self.columns {
            column.evictions += u64::from(column.holds(victim));
        }
        self.remove_slot(victim);
    }

    /// The keys the watchers of the set keep, at most (a key two of them keep, or one
    /// not counted yet, counts too): room they take beside the `max_keys` others, so
    /// that expected hosts never crowd out the keys of the set's other watchers.
    fn kept_keys(&self) -> usize {
        self.columns
            .iter()
            .map(|column| column.due.kept_len())
            .sum()
    }

    /// Whether a watcher of the set keeps the key of `slot`.
    fn is_kept(&self, slot: usize) -> bool {
        let key = &self.slots[slot].key;
        self.columns.iter().any(|column| column.due.keeps(key))
    }

    /// xorshift64: a sample position, not a secret.
    fn next_sample(&mut self) -> usize {
        if self.sampler == 0 {
            self.sampler = 0x9E37_79B9_7F4A_7C15 ^ self.slots.len() as u64;
        }
        self.sampler ^= self.sampler << 13;
        self.sampler ^= self.sampler >> 7;
        self.sampler ^= self.sampler << 17;
        self.sampler as usize
    }

    /// The columns of `other` moved into this table (watchers restored alone joining
    /// their set), with the keys they hold; a key both hold keeps its latest update.
    pub fn absorb(&mut self, mut other: SetTable) {
        for mut moved in std::mem::take(&mut other.columns) {
            let column = self.add_column(moved.watcher);
            let mut renumbered = vec![None; other.slots.len()];
            for (from, slot) in other.slots.iter().enumerate() {
                if !moved.holds(from) {
                    continue;
                }
                let hash = self.hasher.hash_one(&*slot.key);
                let here = match self.slot_hashed(&slot.key, hash) {
                    Some(here) => here,
                    None => self.insert(slot.key.clone(), hash, slot.touched),
                };
                let touched = &mut self.slots[here].touched;
                *touched = (*touched).max(slot.touched);
                self.columns[column].put(here, moved.release(from));
                renumbered[from] = Some(here);
            }
            let joined = &mut self.columns[column];
            joined.evictions = moved.evictions;
            let due = std::mem::take(&mut moved.due);
            joined.due = due.renumbered(|from| renumbered.get(from).copied().flatten());
        }
    }

    /// (slot, key) of every key `column` holds.
    pub fn held_by(&self, column: usize) -> impl Iterator<Item = (usize, &str)> {
        let column = &self.columns[column];
        (self.slots.iter().enumerate())
            .filter(|(slot, _)| column.holds(*slot))
            .map(|(slot, held)| (slot, &*held.key))
    }

    /// (key, count) of every key of `column` that holds events in the seconds `live` keeps.
    pub fn counts(
        &self,
        column: usize,
        live: impl Fn(Second) -> bool,
    ) -> impl Iterator<Item = (&str, u64)> {
        self.held_by(column)
            .map(move |(slot, key)| {
                let buckets = self.columns[column].counter(slot).buckets.newest_first();
                let count = buckets.filter(|(second, _)| live(*second)).map(|(_, n)| n);
                (key, count.sum())
            })
            .filter(|(_, count)| *count > 0)
    }

    /// An empty table with the same watchers.
    pub fn emptied(&self) -> SetTable {
        let mut empty = SetTable::default();
        for column in &self.columns {
            empty.add_column(column.watcher);
        }
        empty
    }

    /// `column`'s keys as `counters.json` always had a watcher's: `{"keys": {key: counter}}`.
    pub fn saved(&self, column: usize) -> SavedColumn<'_> {
        SavedColumn {
            table: self,
            column,
        }
    }

    /// `counter` of `key` restored into `column`: the file's `stamp`-th key, of a key
    /// listed twice the last. `hashes` holds the hash of every slot so far: the index
    /// grows from them without reading each key again, which, a key per allocation, was
    /// two thirds of a restore's time (measured: 1 M keys).
    fn restore(
        &mut self,
        column: usize,
        (key, counter): (Box<str>, KeyCounter),
        stamp: u64,
        hashes: &mut Vec<u64>,
    ) {
        let hash = self.hasher.hash_one(&*key);
        let slot = match self.slot_hashed(&key, hash) {
            Some(slot) => slot,
            None => {
                let known = &*hashes;
                let rehash = |&slot: &u32| known[slot as usize];
                self.index
                    .insert_unique(hash, self.slots.len() as u32, rehash);
                hashes.push(hash);
                self.push_slot(key, stamp)
            }
        };
        self.slots[slot].touched = stamp;
        self.columns[column].put(slot, counter);
    }
}

/// One watcher's keys, saved.
pub struct SavedColumn<'a> {
    table: &'a SetTable,
    column: usize,
}

impl Serialize for SavedColumn<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct Keys<'a>(&'a SavedColumn<'a>);
        impl Serialize for Keys<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let (table, column) = (self.0.table, self.0.column);
                let mut map = serializer.serialize_map(Some(table.columns[column].held_keys()))?;
                for (slot, key) in table.held_by(column) {
                    map.serialize_entry(key, table.columns[column].counter(slot))?;
                }
                map.end()
            }
        }
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry("keys", &Keys(self))?;
        map.end()
    }
}

/// One watcher's saved keys, as a table of its own (its column's watcher is nil until
/// the store names it). Restored keys count as updated in the order the file lists them.
impl<'de> Deserialize<'de> for SetTable {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Saved {
            keys: Keys,
        }
        struct Keys(SetTable);
        impl<'de> Deserialize<'de> for Keys {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserializer.deserialize_map(KeysVisitor)
            }
        }
        struct KeysVisitor;
        impl<'de> Visitor<'de> for KeysVisitor {
            type Value = Keys;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of aggregation keys to counters")
            }
            /// Each key into the table as it is read: no list of a million keys first.
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Keys, A::Error> {
                let mut table = SetTable::default();
                let column = table.add_column(Uuid::nil());
                let (mut stamp, mut hashes) = (0, Vec::new());
                while let Some(entry) = map.next_entry::<Box<str>, KeyCounter>()? {
                    table.restore(column, entry, stamp, &mut hashes);
                    stamp += 1;
                }
                Ok(Keys(table))
            }
        }
        Ok(Saved::deserialize(deserializer)?.keys.0)
    }
}

#[cfg(test)]
mod tests {
    use super::super::Key;
    use super::*;

    fn table_of(watchers: usize) -> SetTable {
        let mut table = SetTable::default();
        for _ in 0..watchers {
            table.add_column(Uuid::new_v4());
        }
        table
    }

    /// `key` counted by `column` at `stamp` (`touch` under `max_keys`, then held): its slot.
    fn hold(table: &mut SetTable, column: usize, key: &str, stamp: u64, max_keys: usize) -> usize {
        let slot = table.touch(key, stamp, max_keys);
        table.column_mut(column).hold(slot);
        slot
    }

    fn index_agrees(table: &SetTable) {
        assert_eq!(table.index.len(), table.slots.len());
        for (slot, entry) in table.slots.iter().enumerate() {
            assert_eq!(
                table.slot_of(&entry.key),
                Some(slot),
                "index and slots agree"
            );
        }
    }

    #[test]
    fn a_full_table_evicts_the_least_recently_updated_key_of_its_sample() {
        let mut table = table_of(2);
        let keys: Vec<String> = (0..1000).map(|n| format!("[{n}]")).collect();
        for (stamp, key) in keys.iter().enumerate() {
            hold(&mut table, 0, key, stamp as u64, 1000);
        }
        // The first 900 keys are updated again: the last 100 are the least recent.
        for (stamp, key) in keys.iter().take(900).enumerate() {
            table.touch(key, 1000 + stamp as u64, 1000);
        }
        for n in 0..50 {
            hold(&mut table, 1, &format!("[new{n}]"), 5000 + n, 1000);
        }
        assert_eq!(table.len(), 1000);
        let evictions: Vec<u64> = table.columns().iter().map(|c| c.evictions).collect();
        assert_eq!(
            evictions,
            [50, 0],
            "evicted keys are counted for who held them"
        );
        let kept_recent = keys
            .iter()
            .take(900)
            .filter(|k| table.slot_of(k).is_some())
            .count();
        assert!(kept_recent >= 850, "{kept_recent} of 900 recent keys kept");
        index_agrees(&table);
    }

    /// A key a watcher keeps (`expect`'s) is never evicted, however long it stays
    /// silent: the least recent of the others goes instead; kept keys alone, none goes.
    #[test]
    fn a_kept_key_is_never_evicted() {
        let mut table = table_of(2);
        table.column_mut(1).due.keep(&Key::from("[\"quiet\"]"));
        hold(&mut table, 1, "[\"quiet\"]", 0, 3);
        for n in 1..100 {
            hold(&mut table, 0, &format!("[{n}]"), n, 3);
        }
        assert_eq!(table.len(), 4, "the kept key and max_keys others");
        assert!(table.slot_of("[\"quiet\"]").is_some());
        assert!((97..100).all(|n| table.slot_of(&format!("[{n}]")).is_some()));
        assert_eq!(table.columns()[1].evictions, 0);
        assert_eq!(table.columns()[0].evictions, 96);
        let mut all_kept = table_of(1);
        for n in 0..3 {
            let key = format!("[k{n}]");
            all_kept.column_mut(0).due.keep(&Key::from(key.as_str()));
            hold(&mut all_kept, 0, &key, n, 2);
        }
        assert_eq!(all_kept.len(), 3, "kept keys stay past max_keys");
        index_agrees(&table);
    }

    /// A table past a lowered bound shrinks a slice at a time, as a new key evicts (the
    /// least recently updated of a sample), never a kept key; within the bound, nothing
    /// goes.
    #[test]
    fn a_table_past_its_bound_shrinks_by_slices_and_keeps_its_kept_keys() {
        let mut table = table_of(1);
        table.column_mut(0).due.keep(&Key::from("[\"quiet\"]"));
        hold(&mut table, 0, "[\"quiet\"]", 0, 100);
        for n in 1..=100 {
            hold(&mut table, 0, &format!("[{n}]"), n, 100);
        }
        assert_eq!(table.evict_past(10, 50), 50, "a slice at most");
        assert_eq!(table.evict_past(10, 50), 40, "down to the bound");
        assert_eq!(table.evict_past(10, 50), 0);
        assert_eq!(table.len(), 11, "the kept key and max_keys others");
        assert!(table.slot_of("[\"quiet\"]").is_some());
        let recent = (91..=100)
            .filter(|n| table.slot_of(&format!("[{n}]")).is_some())
            .count();
        assert!(recent >= 8, "{recent} of the 10 most recent keys kept");
        assert_eq!(table.columns()[0].evictions, 90);
        index_agrees(&table);
        let mut shared = table_of(2);
        for n in 0..100 {
            let slot = shared.touch(&format!("[{n}]"), n, 100);
            shared.column_mut(0).hold(slot);
            shared.column_mut(1).hold(slot);
        }
        assert_eq!(shared.evict_past(10, 50), 50, "an update per watcher");
        assert_eq!(shared.len(), 75);
    }

    /// A key one watcher lets go stays for the others; the last one drops it.
    #[test]
    fn a_key_stays_while_one_watcher_holds_it() {
        let mut table = table_of(2);
        let slot = table.touch("[1]", 1, 10);
        table.column_mut(0).hold(slot).cooldown_secs = 7;
        table.column_mut(1).hold(slot).cooldown_secs = 9;
        hold(&mut table, 0, "[2]", 2, 10);
        table.release(0, table.slot_of("[1]").unwrap());
        let slot = table
            .slot_of("[1]")
            .expect("the second watcher still holds it");
        assert!(!table.columns()[0].holds(slot));
        assert_eq!(table.columns()[1].counter(slot).cooldown_secs, 9);
        table.release(1, slot);
        assert_eq!((table.slot_of("[1]"), table.len()), (None, 1));
        index_agrees(&table);
    }

    /// A table restored per watcher lists each key once, in the file's order, the last of
    /// a key that a hand-edited file lists twice; its index and slots agree.
    #[test]
    fn a_restored_table_keeps_the_last_of_a_key_listed_twice() {
        let saved = r#"{"keys": {"[1]": {"buckets": [[10, 1]]}, "[2]": {"buckets": [[10, 2]]},
                                 "[1]": {"buckets": [[11, 5]]}, "[3]": {"buckets": [[10, 3]]},
                                 "[1]": {"buckets": [[12, 6]]}}}"#;
        let mut table: SetTable = serde_json::from_str(saved).unwrap();
        assert_eq!(table.len(), 3);
        let counter = |table: &SetTable, key: &str| {
            let slot = table.slot_of(key).unwrap();
            table.columns()[0].counter(slot).clone()
        };
        assert_eq!(counter(&table, "[1]").buckets, Buckets::One(12, 6));
        assert_eq!(counter(&table, "[2]").buckets.total(), 2);
        assert_eq!(counter(&table, "[3]").buckets.total(), 3);
        index_agrees(&table);
        hold(&mut table, 0, "[4]", 99, 3);
        assert_eq!((table.len(), table.columns()[0].evictions), (3, 1));
        let saved = serde_json::to_value(table.saved(0)).unwrap();
        assert_eq!(saved["keys"].as_object().unwrap().len(), 3);
    }

    /// Watchers restored alone join their set: a key both hold is one slot.
    #[test]
    fn an_absorbed_table_brings_its_watchers_keys() {
        let mut first: SetTable = serde_json::from_str(
            r#"{"keys": {"[1]": {"buckets": [[10, 1]]},
            "[2]": {"buckets": [[10, 2]]}}}"#,
        )
        .unwrap();
        let second: SetTable = serde_json::from_str(
            r#"{"keys": {"[2]": {"buckets": [[10, 5]]},
            "[3]": {"buckets": [[10, 3]]}}}"#,
        )
        .unwrap();
        first.absorb(second);
        assert_eq!((first.len(), first.columns().len()), (3, 2));
        let two = first.slot_of("[2]").unwrap();
        let totals: Vec<u64> = (first.columns().iter())
            .map(|c| c.counter(two).buckets.total())
            .collect();
        assert_eq!(totals, [2, 5]);
        let held: Vec<usize> = first.columns().iter().map(Column::held_keys).collect();
        assert_eq!(held, [2, 2]);
        index_agrees(&first);
    }

    /// The keys due at `now` in `column`'s queue, by text.
    fn due_keys(table: &mut SetTable, column: usize, now: Second) -> Vec<String> {
        let mut due = Vec::new();
        while let Some(slot) = table.column_mut(column).due.next_due(now) {
            due.push(table.key_at(slot).to_string());
        }
        due.sort();
        due
    }

    /// A key's wait is its slot's: it follows the key when another key's removal moves
    /// it (`swap_remove`), and goes with a key evicted or released, so that no key is
    /// judged for another's second.
    #[test]
    fn a_key_waits_for_its_own_second_whatever_moves_its_slot() {
        let mut table = table_of(2);
        for (n, due) in [(0, 100), (1, 200), (2, 300), (3, 400)] {
            let slot = hold(&mut table, 0, &format!("[{n}]"), n, 4);
            table.column_mut(0).due.schedule(slot, due);
        }
        // [0] released by its last watcher: [3] moves to its slot. [1], the least
        // recently updated, evicted by a new key: [2] moves to its slot, [4] takes [2]'s.
        table.release(0, table.slot_of("[0]").unwrap());
        hold(&mut table, 1, "[4]", 10, 3);
        assert_eq!(table.slot_of("[1]"), None);
        assert_eq!(due_keys(&mut table, 0, 399), ["[2]"]);
        assert_eq!(due_keys(&mut table, 0, 400), ["[3]"]);
        assert!(due_keys(&mut table, 1, 1000).is_empty(), "[4] never waited");
        index_agrees(&table);
    }

    /// A column joining another table takes its keys' waits to their new slots.
    #[test]
    fn an_absorbed_column_s_keys_wait_under_their_new_slots() {
        let mut first: SetTable =
            serde_json::from_str(r#"{"keys": {"[1]": {}, "[2]": {}}}"#).unwrap();
        let mut second: SetTable =
            serde_json::from_str(r#"{"keys": {"[3]": {}, "[2]": {}}}"#).unwrap();
        for (key, due) in [("[3]", 30), ("[2]", 20)] {
            let slot = second.slot_of(key).unwrap();
            second.column_mut(0).due.schedule(slot, due);
        }
        first.absorb(second);
        assert_eq!(due_keys(&mut first, 1, 25), ["[2]"]);
        assert_eq!(due_keys(&mut first, 1, 30), ["[3]"]);
        assert!(due_keys(&mut first, 0, 30).is_empty());
    }

    /// The layout the per-key budget rests on (benchmark.md: at most 120 bytes a key).
    #[test]
    fn a_slot_and_a_counter_stay_small() {
        assert_eq!(std::mem::size_of::<Buckets>(), 24);
        assert!(std::mem::size_of::<Slot>() <= 24);
        // 40 bytes, and a pointer for the rules' own state (`KeyCounter::rule`).
        assert!(
            std::mem::size_of::<KeyCounter>() <= 48,
            "{}",
            std::mem::size_of::<KeyCounter>()
        );
    }
}
