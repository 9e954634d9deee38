//! One watcher's counters in the master, laid out for many keys (benchmark.md: at most
//! 200 bytes a key): each key's text is allocated once (`Rc<str>`, shared by the index
//! and its slot), the index maps it to a slot number, the slots sit in one vector, and a
//! key's buckets are inline until it has more than one (a window that saw several
//! seconds).
//!
//! Past `max_keys`, the least recently updated key of a sample is evicted, as Redis'
//! `allkeys-lru` does: no per-key recency index to keep, and the exact least recent key
//! whenever the table is no larger than the sample.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::num::NonZeroU64;
use std::rc::Rc;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::Key;
use super::rule_state::RuleState;

/// Counters are saved and restored across restarts: their seconds are the wall clock's.
pub use crate::clock::Second;

/// Slots looked at to choose the key to evict.
const EVICTION_SAMPLE: usize = 16;

/// One key's count and cooldown. Saved without the fields at their defaults: a million
/// keys are a million of these in `counters.json`.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyCounter {
    /// (second, events in it), oldest first; one entry when there is no window.
    #[serde(default)]
    pub buckets: Buckets,
    /// The second of its last firing (never 0: seconds since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_fired: Option<NonZeroU64>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cooldown_secs: u32,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub crossed_while_cooling: bool,
    /// flatline: it fired for a silence it has not recovered from.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub silent: bool,
    /// What the other rules remember of the key (`rule_state.rs`); none for threshold
    /// and flatline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<Box<RuleState>>,
}

fn is_zero(secs: &u32) -> bool {
    *secs == 0
}

/// A key's buckets: inline while there is at most one.
#[derive(Debug, Default, Clone, PartialEq)]
pub enum Buckets {
    #[default]
    Empty,
    One(Second, u64),
    // Boxed on purpose: the enum stays 24 bytes, not 40, in every key's counter.
    #[allow(clippy::box_collection)]
    Many(Box<VecDeque<(Second, u64)>>),
}

impl Buckets {
    /// Drops the buckets `expired` says are past, oldest first.
    pub fn drop_front_while(&mut self, expired: impl Fn(Second) -> bool) {
        match self {
            Buckets::Empty => {}
            Buckets::One(second, _) => {
                if expired(*second) {
                    *self = Buckets::Empty;
                }
            }
            Buckets::Many(buckets) => {
                while buckets.front().is_some_and(|&(second, _)| expired(second)) {
                    buckets.pop_front();
                }
            }
        }
    }

    /// Adds `n` to the newest bucket if it is at least `second`, else in a new one.
    pub fn add(&mut self, second: Second, n: u64) {
        match self {
            Buckets::Empty => *self = Buckets::One(second, n),
            Buckets::One(last, count) if *last >= second => *count += n,
            Buckets::One(last, count) => {
                *self = Buckets::Many(Box::new(VecDeque::from([(*last, *count), (second, n)])));
            }
            Buckets::Many(buckets) => match buckets.back_mut() {
                Some((last, count)) if *last >= second => *count += n,
                _ => buckets.push_back((second, n)),
            },
        }
    }

    /// (second, events) of each bucket, the newest first.
    pub fn newest_first(&self) -> impl Iterator<Item = (Second, u64)> + '_ {
        let (one, many) = match self {
            Buckets::Empty => (None, None),
            Buckets::One(second, count) => (Some((*second, *count)), None),
            Buckets::Many(buckets) => (None, Some(buckets.iter().rev().copied())),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }

    /// Adds `n` to the one bucket of a count without a window.
    pub fn add_to_first(&mut self, second: Second, n: u64) {
        match self {
            Buckets::Empty => *self = Buckets::One(second, n),
            Buckets::One(_, count) => *count += n,
            Buckets::Many(buckets) => match buckets.front_mut() {
                Some((_, count)) => *count += n,
                None => buckets.push_back((second, n)),
            },
        }
    }

    pub fn total(&self) -> u64 {
        match self {
            Buckets::Empty => 0,
            Buckets::One(_, count) => *count,
            Buckets::Many(buckets) => buckets.iter().map(|(_, count)| count).sum(),
        }
    }

    fn to_vec(&self) -> Vec<(Second, u64)> {
        match self {
            Buckets::Empty => Vec::new(),
            Buckets::One(second, count) => vec![(*second, *count)],
            Buckets::Many(buckets) => buckets.iter().copied().collect(),
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        match self {
            Buckets::Empty => 0,
            Buckets::One(..) => 1,
            Buckets::Many(buckets) => buckets.len(),
        }
    }
}

/// Saved as `counters.json` always had it: a list of `[second, count]`.
impl Serialize for Buckets {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_vec().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Buckets {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut buckets = Buckets::Empty;
        for (second, count) in Vec::<(Second, u64)>::deserialize(deserializer)? {
            buckets.add(second, count);
        }
        Ok(buckets)
    }
}

struct Slot {
    key: Rc<str>,
    counter: KeyCounter,
    /// The store's clock when the key was last updated.
    touched: u64,
}

/// The text of the key created last, in any watcher's table: the watchers of one field
/// set create the same key one after the other (a batch names a key once for its set),
/// and share one copy of its text.
#[derive(Default)]
pub struct LastKey(Option<Rc<str>>);

impl LastKey {
    fn text_of(&mut self, key: &str) -> Rc<str> {
        match &self.0 {
            Some(last) if **last == *key => last.clone(),
            _ => {
                let text: Rc<str> = Rc::from(key);
                self.0 = Some(text.clone());
                text
            }
        }
    }
}

/// One watcher's keys.
#[derive(Default)]
pub struct KeyTable {
    index: HashMap<Rc<str>, u32>,
    slots: Vec<Slot>,
    pub evictions: u64,
    /// For the eviction sample: any sequence that is not always the same will do.
    sampler: u64,
}

impl KeyTable {
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// (key, count) of every key that holds events in the seconds `live` keeps.
    pub fn counts(&self, live: impl Fn(Second) -> bool) -> impl Iterator<Item = (&str, u64)> {
        self.slots
            .iter()
            .map(move |slot| {
                let buckets = slot.counter.buckets.to_vec().into_iter();
                let count = buckets.filter(|(second, _)| live(*second)).map(|(_, n)| n);
                (&*slot.key, count.sum())
            })
            .filter(|(_, count)| *count > 0)
    }

    #[cfg(test)]
    pub fn get(&self, key: &Key) -> Option<&KeyCounter> {
        let slot = *self.index.get(key.as_str())?;
        Some(&self.slots[slot as usize].counter)
    }

    /// The counter of `key` if the table holds it, not marked as updated.
    pub fn get_mut(&mut self, key: &Key) -> Option<&mut KeyCounter> {
        let slot = *self.index.get(key.as_str())?;
        Some(&mut self.slots[slot as usize].counter)
    }

    /// Every key the table holds.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.slots.iter().map(|slot| &*slot.key)
    }

    /// Drops `key`, if the table holds it.
    pub fn remove(&mut self, key: &Key) {
        if let Some(&slot) = self.index.get(key.as_str()) {
            self.remove_slot(slot as usize);
        }
    }

    fn remove_slot(&mut self, slot: usize) {
        let removed = self.slots.swap_remove(slot);
        self.index.remove(&removed.key);
        if let Some(moved) = self.slots.get(slot) {
            self.index.insert(moved.key.clone(), slot as u32);
        }
    }

    /// The counter of `key`, created if new (evicting a key first when the table holds
    /// `max_keys`, its text shared with the table that created the same key last),
    /// marked as updated at `stamp`.
    pub fn touch(
        &mut self,
        key: &Key,
        stamp: u64,
        max_keys: usize,
        last_created: &mut LastKey,
    ) -> &mut KeyCounter {
        let slot = match self.index.get(key.as_str()) {
            Some(&slot) => slot as usize,
            None => {
                if self.slots.len() >= max_keys {
                    self.evict_one();
                }
                let text = last_created.text_of(key.as_str());
                self.insert(text, KeyCounter::default(), stamp)
            }
        };
        let slot = &mut self.slots[slot];
        slot.touched = stamp;
        &mut slot.counter
    }

    fn insert(&mut self, key: Rc<str>, counter: KeyCounter, touched: u64) -> usize {
        let slot = self.slots.len();
        self.index.insert(key.clone(), slot as u32);
        self.slots.push(Slot {
            key,
            counter,
            touched,
        });
        slot
    }

    /// The table of the keys `listed`, in their order; of a key listed twice, the last.
    /// The index is made at its final size once all are read: grown while reading, it
    /// hashed a million keys twice over, half the time of a restore. The slots are
    /// compacted in place, so a restore holds one copy of them.
    fn from_listed(mut slots: Vec<Slot>) -> KeyTable {
        let mut index = HashMap::with_capacity(slots.len());
        // slots[..kept] are the keys kept; slots[kept..at] those replaced by a later copy.
        let mut kept = 0;
        for at in 0..slots.len() {
            match index.entry(slots[at].key.clone()) {
                Entry::Occupied(listed_before) => slots.swap(*listed_before.get() as usize, at),
                Entry::Vacant(new) => {
                    new.insert(kept as u32);
                    slots.swap(kept, at);
                    kept += 1;
                }
            }
        }
        slots.truncate(kept);
        KeyTable {
            index,
            slots,
            ..KeyTable::default()
        }
    }

    /// Evicts the least recently updated key of a sample of the slots.
    fn evict_one(&mut self) {
        let len = self.slots.len();
        let sample: Vec<usize> = if len <= EVICTION_SAMPLE {
            (0..len).collect()
        } else {
            (0..EVICTION_SAMPLE)
                .map(|_| self.next_sample() % len)
                .collect()
        };
        let victim = sample.into_iter().min_by_key(|&i| self.slots[i].touched);
        let Some(victim) = victim else {
            return;
        };
        self.remove_slot(victim);
        self.evictions += 1;
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
}

/// Saved as `counters.json` always had it: `{"keys": {key: counter}}`.
impl Serialize for KeyTable {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct Keys<'a>(&'a [Slot]);
        impl Serialize for Keys<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut map = serializer.serialize_map(Some(self.0.len()))?;
                for slot in self.0 {
                    map.serialize_entry(&*slot.key, &slot.counter)?;
                }
                map.end()
            }
        }
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry("keys", &Keys(&self.slots))?;
        map.end()
    }
}

/// Restored keys count as updated in the order the file lists them.
impl<'de> Deserialize<'de> for KeyTable {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Saved {
            keys: Keys,
        }
        struct Keys(KeyTable);
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
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Keys, A::Error> {
                let mut listed = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some((key, counter)) = map.next_entry::<String, KeyCounter>()? {
                    listed.push(Slot {
                        key: Rc::from(key),
                        counter,
                        touched: listed.len() as u64,
                    });
                }
                Ok(Keys(KeyTable::from_listed(listed)))
            }
        }
        Ok(Saved::deserialize(deserializer)?.keys.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_table_evicts_the_least_recently_updated_key_of_its_sample() {
        let mut table = KeyTable::default();
        let keys: Vec<Key> = (0..1000)
            .map(|n| Key::from(format!("[{n}]").as_str()))
            .collect();
        for (stamp, key) in keys.iter().enumerate() {
            table.touch(key, stamp as u64, 1000, &mut LastKey::default());
        }
        // The first 900 keys are updated again: the last 100 are the least recent.
        for (stamp, key) in keys.iter().take(900).enumerate() {
            table.touch(key, 1000 + stamp as u64, 1000, &mut LastKey::default());
        }
        for n in 0..50 {
            let key = Key::from(format!("[new{n}]").as_str());
            table.touch(&key, 5000 + n, 1000, &mut LastKey::default());
        }
        assert_eq!((table.len(), table.evictions), (1000, 50));
        let kept_recent = keys
            .iter()
            .take(900)
            .filter(|k| table.get(k).is_some())
            .count();
        assert!(kept_recent >= 850, "{kept_recent} of 900 recent keys kept");
        for (slot, entry) in table.slots.iter().enumerate() {
            assert_eq!(
                table.index[&entry.key], slot as u32,
                "index and slots agree"
            );
        }
    }

    /// A restored table lists each key once, in the file's order, the last of a key that
    /// a hand-edited file lists twice; its index and slots agree.
    #[test]
    fn a_restored_table_keeps_the_last_of_a_key_listed_twice() {
        let saved = r#"{"keys": {"[1]": {"buckets": [[10, 1]]}, "[2]": {"buckets": [[10, 2]]},
                                 "[1]": {"buckets": [[11, 5]]}, "[3]": {"buckets": [[10, 3]]},
                                 "[1]": {"buckets": [[12, 6]]}}}"#;
        let mut table: KeyTable = serde_json::from_str(saved).unwrap();
        assert_eq!(table.len(), 3);
        let one = Key::from("[1]");
        assert_eq!(table.get(&one).unwrap().buckets, Buckets::One(12, 6));
        assert_eq!(table.get(&Key::from("[2]")).unwrap().buckets.total(), 2);
        assert_eq!(table.get(&Key::from("[3]")).unwrap().buckets.total(), 3);
        for (slot, entry) in table.slots.iter().enumerate() {
            assert_eq!(table.index[&entry.key], slot as u32);
        }
        table.touch(&Key::from("[4]"), 99, 3, &mut LastKey::default());
        assert_eq!((table.len(), table.evictions), (3, 1));
        let saved = serde_json::to_value(&table).unwrap();
        assert_eq!(saved["keys"].as_object().unwrap().len(), 3);
    }

    /// The watchers of one field set create a key one after the other: one copy of its
    /// text serves them all; another key gets its own.
    #[test]
    fn tables_creating_the_same_key_in_turn_share_its_text() {
        let (mut first, mut second) = (KeyTable::default(), KeyTable::default());
        let mut last_created = LastKey::default();
        let ip = Key::from(r#"["10.0.0.1"]"#);
        first.touch(&ip, 1, 10, &mut last_created);
        second.touch(&ip, 2, 10, &mut last_created);
        assert!(Rc::ptr_eq(&first.slots[0].key, &second.slots[0].key));
        first.touch(&Key::from(r#"["10.0.0.2"]"#), 3, 10, &mut last_created);
        second.touch(&ip, 4, 10, &mut last_created);
        assert_eq!(second.len(), 1, "a key the table has is not created again");
        assert!(!Rc::ptr_eq(&first.slots[1].key, &second.slots[0].key));
        assert_eq!(&*first.slots[1].key, r#"["10.0.0.2"]"#);
    }

    /// The layout the per-key budget rests on (benchmark.md: at most 200 bytes a key).
    #[test]
    fn a_slot_stays_small() {
        assert_eq!(std::mem::size_of::<Buckets>(), 24);
        // 64 bytes, and a pointer for the rules' own state (`KeyCounter::rule`).
        assert!(
            std::mem::size_of::<Slot>() <= 72,
            "{}",
            std::mem::size_of::<Slot>()
        );
    }

    #[test]
    fn buckets_stay_inline_until_a_second_one_and_save_as_a_list() {
        let mut buckets = Buckets::default();
        buckets.add(100, 2);
        buckets.add(100, 1);
        assert_eq!(buckets, Buckets::One(100, 3));
        buckets.add(101, 4);
        assert_eq!((buckets.len(), buckets.total()), (2, 7));
        assert_eq!(
            serde_json::to_string(&buckets).unwrap(),
            "[[100,3],[101,4]]"
        );
        buckets.drop_front_while(|second| second < 101);
        assert_eq!(buckets.total(), 4);
    }
}
