//! The worker's count batcher: the watcher counts of acknowledged events, gathered and
//! shipped to the master at most `BATCH_DELAY` after the first of them (or at once when
//! the batch is large), so that the master handles one message per batch, not per event.
//!
//! Owns the counts between the reply and the master; the last batch goes out before the
//! worker exits (`flush`), so an acknowledged event is never left uncounted. A batch is
//! shipped as soon as it reaches `BATCH_SHIP_AT` entries, `BATCH_SHIP_BYTES` of keys or
//! `BATCH_SHIP_HASHES` watched values' hashes, also in the middle of one request's
//! counts (a 1 MB `_bulk` × 200 watchers): every frame stays far below the frame limit,
//! which is a transport detail, never a reason to lose counts.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::rc::Rc;
use std::time::Duration;

use tokio::sync::Notify;

use super::keys::{Found, SetKey, TypeKeys};
use super::link::Link;
use crate::event::Event;
use crate::watch::plan::FieldSet;
use crate::watch::{CountBatch, FnvBuildHasher, Key, SetCounts, SetValues};

/// Watcher counts reach the master at most this long after the event was acknowledged...
const BATCH_DELAY: Duration = Duration::from_millis(10);
/// ...or at once when the batch holds this many entries (a key of a set counts once per
/// watcher: what the master will add up). The master counts a batch in pieces of a few
/// microseconds (`CountBatch::take_piece`), so this mostly bounds the frame (decoded at
/// once: about a millisecond at most): at 1,024 a new_value watcher, whose keys are
/// (key, value) pairs, shipped a batch every thousand pairs and the master found each
/// pair again in every batch (bench/rules: 2.37 × a threshold watcher's cost per event;
/// 1.29–1.46 × at 8,192)...
const BATCH_SHIP_AT: usize = 8 * 1024;
/// ...or this many bytes of keys...
const BATCH_SHIP_BYTES: usize = 1024 * 1024;
/// ...or this many hashes of watched values (cardinality), 8 bytes each. Not entries:
/// a key's hashes are judged on the counter the master finds once for them all, each a
/// few nanoseconds there, so counting each as an entry shipped a batch every 1024
/// distinct (key, value) pairs and the master found a key once per event (measured:
/// bench/rules, 1.88 × a threshold watcher's cost per event).
const BATCH_SHIP_HASHES: usize = 8 * 1024;

/// Field positions found at once (`TypeKeys::find_fields`: events x the type's top-level
/// fields counted by): a `_bulk` is keyed a window of events at a time, so that what the
/// worker holds for it stays under a megabyte however many events and field names it has.
const POSITIONS_AT_ONCE: usize = 64 * 1024;

pub struct Batcher {
    link: Link,
    batch: RefCell<Batch>,
    buffers: RefCell<Buffers>,
    /// Where a request's events' fields were found (`TypeKeys::find_fields`), reused.
    found: RefCell<Vec<Option<usize>>>,
    started: Notify,
}

/// Where the hot path writes, reused: no allocation per watcher and event.
#[derive(Default)]
struct Buffers {
    /// Each event's key for a set.
    key: String,
    /// A watched value, to be hashed (cardinality).
    value: String,
}

impl Batcher {
    pub fn new(link: Link) -> Batcher {
        Batcher {
            link,
            batch: RefCell::default(),
            buffers: RefCell::default(),
            found: RefCell::default(),
            started: Notify::new(),
        }
    }

    /// Counts each event for every watcher of each of `keys`' field sets, under the
    /// event's key for the set: made once per set however many watchers share it, from
    /// the event's fields found once for every set, written into a reused buffer, looked
    /// up as written. Ships the batch whenever that fills it. A request's keys come
    /// first, its events last (`add_events`).
    pub fn add_keys(&self, keys: &TypeKeys, events: &[Event<'_>], max_key_bytes: usize) {
        if keys.sets().is_empty() {
            return;
        }
        let mut batch = self.batch.borrow_mut();
        let mut buffers = self.buffers.borrow_mut();
        let mut found = self.found.borrow_mut();
        if batch.is_empty() {
            self.started.notify_one();
        }
        let window = (POSITIONS_AT_ONCE / keys.fields_found().max(1)).max(1);
        for events in events.chunks(window) {
            let found = keys.find_fields(events, &mut found);
            for set in keys.sets() {
                let mut done = 0;
                while done < events.len() {
                    let (rest, found) = (&events[done..], found.skip(done));
                    done += batch.add_set_keys(set, (rest, found), max_key_bytes, &mut buffers);
                    if batch.is_full() {
                        self.link.send_counts(batch.take());
                    }
                }
            }
        }
    }

    /// Counts `collected` events of `event`, after their keys: once the master has
    /// counted the events, it has every one of their keys too.
    pub fn add_events(&self, event: &str, collected: u64) {
        let mut batch = self.batch.borrow_mut();
        let was_empty = batch.is_empty();
        batch.add_events(event, collected);
        if was_empty {
            self.started.notify_one();
        }
    }

    /// Ships the counts gathered so far, at most `BATCH_DELAY` after the first of them.
    pub async fn ship_periodically(&self) {
        loop {
            self.started.notified().await;
            tokio::time::sleep(BATCH_DELAY).await;
            self.flush();
        }
    }

    /// Ships what is left in the batch now (the worker is exiting).
    pub fn flush(&self) {
        let mut batch = self.batch.borrow_mut();
        if !batch.is_empty() {
            self.link.send_counts(batch.take());
        }
    }
}

/// Events per key of one field set, and, for a set that watches a value
/// (cardinality), the hashes of the values seen with it, sorted. Hashed by foldhash,
/// seeded at random: a word at a time where FNV went byte by byte (a fifth of a
/// `_bulk`'s worker time was this map). Only minimally resistant to keys made to
/// collide (its seed is the process's, unknown to clients): what such keys could cost
/// is bounded by the batch shipping at `BATCH_SHIP_AT` entries, not by the hash, at
/// worst a walk of the batch's keys per event.
type KeyCounts = HashMap<Key, (u64, Vec<u64>), foldhash::fast::RandomState>;

/// The 64-bit hash of a watched value as its event carries it (compact JSON), the same
/// in every worker and across restarts (FNV-1a): what the master and Redis keep of it.
/// `None` for a missing value.
fn value_hash(value: &str) -> Option<u64> {
    (value != "null").then(|| {
        let mut hasher = FnvBuildHasher::default().build_hasher();
        hasher.write(value.as_bytes());
        hasher.finish()
    })
}

/// The batch being filled, summed per event type and per (field set, key): the hot path
/// does one lookup per field set and event, with the key as written, and allocates only
/// for a key new to the batch. A key is shipped once for its set, with the set's watchers.
#[derive(Debug, Default)]
struct Batch {
    events: HashMap<String, u64, foldhash::fast::RandomState>,
    /// By the set's address (the batch holds it alive): the set, its keys and counts.
    sets: HashMap<usize, (Rc<FieldSet>, KeyCounts), FnvBuildHasher>,
    /// What the master will add up, one entry per key and watcher, the bytes of the
    /// keys the frame carries and the hashes of watched values.
    entries: usize,
    key_bytes: usize,
    hashes: usize,
}

impl Batch {
    fn add_events(&mut self, event: &str, events: u64) {
        match self.events.get_mut(event) {
            Some(count) => *count += events,
            None => {
                self.events.insert(event.to_string(), events);
            }
        }
    }

    /// Counts each of `events` (with where their fields were `found`) under its key for
    /// `set_key`'s set, the set's counts found once; stops when the batch is full.
    /// Returns the events counted. An event whose values for the set are the previous
    /// event's is counted, without writing its key, on the counts found for that one:
    /// lines of one source often share a host, a category, and a key made of them needs
    /// no lookup.
    fn add_set_keys(
        &mut self,
        set_key: &SetKey,
        (events, found): (&[Event<'_>], Found<'_>),
        max_key_bytes: usize,
        Buffers { key, value }: &mut Buffers,
    ) -> usize {
        let set = &set_key.set;
        let (_, keys) = self
            .sets
            .entry(Rc::as_ptr(set) as usize)
            .or_insert_with(|| (set.clone(), HashMap::default()));
        // The counts of the previous event's key; never for a set of watched values,
        // whose every event brings its own value.
        let mut run: Option<&mut (u64, Vec<u64>)> = None;
        for (index, event) in events.iter().enumerate() {
            if let Some((count, _)) = run.as_deref_mut() {
                if set_key.same_as_previous(events, found, index) {
                    *count += 1;
                    continue;
                }
            }
            set_key.write(event, found, index, max_key_bytes, key);
            let hash = set.hashed.as_deref().and_then(|field| {
                value.clear();
                event.write_json(field, value);
                value_hash(value)
            });
            let grown = match keys.get_mut(key.as_str()) {
                Some(counts) => {
                    counts.0 += 1;
                    let grown = hash.is_some_and(|hash| add_hash(&mut counts.1, hash));
                    run = (set.hashed.is_none()).then_some(counts);
                    grown
                }
                None => {
                    run = None;
                    keys.insert(Key::from(key.as_str()), (1, hash.into_iter().collect()));
                    self.entries += set.watchers.len();
                    self.key_bytes += key.len();
                    true
                }
            };
            self.hashes += usize::from(grown && hash.is_some());
            let entries = self.entries + self.events.len();
            if grown && beyond_limits(entries, self.key_bytes, self.hashes) {
                return index + 1;
            }
        }
        events.len()
    }

    fn is_empty(&self) -> bool {
        self.events.is_empty() && self.sets.values().all(|(_, keys)| keys.is_empty())
    }

    fn is_full(&self) -> bool {
        beyond_limits(
            self.entries + self.events.len(),
            self.key_bytes,
            self.hashes,
        )
    }

    fn take(&mut self) -> CountBatch {
        self.entries = 0;
        self.key_bytes = 0;
        self.hashes = 0;
        let mut batch = CountBatch {
            events: self.events.drain().collect(),
            ..CountBatch::default()
        };
        // A set's map is emptied, not dropped, so that the next batch does not grow it
        // again from nothing (a new_value watcher's thousands of (key, value) pairs: 2 %
        // of the worker in rehashing), with the room this batch used: no more, so that a
        // burst's room is not held for good. One that stayed empty a whole batch goes
        // with its set, which a reload may have replaced.
        self.sets.retain(|_, (set, counts)| {
            let used = counts.len();
            if used == 0 {
                return false;
            }
            let watchers = set.watchers.clone();
            if set.hashed.is_some() {
                let keys = counts.drain().map(|(key, (_, hashes))| (key, hashes));
                batch.values.push(SetValues {
                    watchers,
                    keys: keys.collect(),
                });
            } else {
                let keys = counts.drain().map(|(key, (events, _))| (key, events));
                batch.sets.push(SetCounts {
                    watchers,
                    keys: keys.collect(),
                });
            }
            counts.shrink_to(used);
            true
        });
        batch
    }
}

/// A batch of this many entries, key bytes or hashes ships.
fn beyond_limits(entries: usize, key_bytes: usize, hashes: usize) -> bool {
    entries >= BATCH_SHIP_AT || key_bytes >= BATCH_SHIP_BYTES || hashes >= BATCH_SHIP_HASHES
}

/// Adds `hash` to a key's sorted hashes; whether it was new.
fn add_hash(hashes: &mut Vec<u64>, hash: u64) -> bool {
    match hashes.binary_search(&hash) {
        Ok(_) => false,
        Err(at) => {
            hashes.insert(at, hash);
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;
    use crate::registry::Aggregator;

    fn set(aggregator: Aggregator, watchers: &[Uuid]) -> Rc<FieldSet> {
        Rc::new(FieldSet {
            aggregator,
            watchers: watchers.to_vec(),
            hashed: None,
        })
    }

    fn by_ip() -> Aggregator {
        Aggregator::Fields {
            fields: vec!["ip".into()],
        }
    }

    /// Counts `bodies` (JSON objects) for `set`, as a request's events would be.
    fn count(batch: &mut Batch, set: &Rc<FieldSet>, bodies: &[String]) -> usize {
        let events: Vec<Event<'_>> = bodies
            .iter()
            .map(|b| Event::parse(b.as_bytes()).unwrap())
            .collect();
        let keys = TypeKeys::compile(std::slice::from_ref(set));
        let mut found = Vec::new();
        let found = keys.find_fields(&events, &mut found);
        batch.add_set_keys(
            &keys.sets()[0],
            (&events, found),
            1 << 20,
            &mut Buffers::default(),
        )
    }

    fn ips(values: &[&str]) -> Vec<String> {
        values
            .iter()
            .map(|v| format!(r#"{{"ip": "{v}"}}"#))
            .collect()
    }

    #[test]
    fn a_batch_sums_per_event_and_per_key_and_names_every_watcher_of_the_set() {
        let (w1, w2, w3) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let (ip_set, single) = (set(by_ip(), &[w1, w2]), set(Aggregator::Single {}, &[w3]));
        let mut batch = Batch::default();
        batch.add_events("logins", 3);
        assert_eq!(count(&mut batch, &ip_set, &ips(&["a", "a", "b"])), 3);
        count(&mut batch, &single, &ips(&["c"]));
        let mut taken = batch.take();
        taken.sets.sort_by_key(|set| set.watchers.len());
        for set in &mut taken.sets {
            set.keys.sort();
        }
        let (a, b) = (Key::from(r#"["a"]"#), Key::from(r#"["b"]"#));
        let expected = vec![
            SetCounts {
                watchers: vec![w3],
                keys: vec![(Key::default(), 1)],
            },
            SetCounts {
                watchers: vec![w1, w2],
                keys: vec![(a, 2), (b, 1)],
            },
        ];
        assert_eq!(taken.events, vec![("logins".to_string(), 3)]);
        assert_eq!(
            taken.sets, expected,
            "each key once, with its set's watchers"
        );
        assert!(batch.is_empty());
    }

    /// A run of events with the same key counts as many as their lookups would, and a
    /// set of watched values still takes each event's value in a run.
    #[test]
    fn runs_of_the_same_key_count_every_event_and_every_value() {
        let mut batch = Batch::default();
        let by_address = set(by_ip(), &[Uuid::new_v4()]);
        count(
            &mut batch,
            &by_address,
            &ips(&["a", "a", "a", "b", "a", "a"]),
        );
        count(&mut batch, &by_address, &ips(&["a", "b"]));
        // The same value spelt otherwise, a missing field and its `null`: one key each,
        // whether or not the run's shortcut takes them.
        let spelt = [
            r#"{"ip": "a"}"#,
            r#"{"ip": "\u0061"}"#,
            "{}",
            r#"{"ip": null}"#,
        ];
        count(&mut batch, &by_address, &spelt.map(String::from));
        let logins = Rc::new(FieldSet {
            aggregator: by_ip(),
            watchers: vec![Uuid::new_v4()],
            hashed: Some("user".into()),
        });
        let users: Vec<String> = (0..3)
            .map(|n| format!(r#"{{"ip": "a", "user": "u{n}"}}"#))
            .collect();
        count(&mut batch, &logins, &users);
        let taken = batch.take();
        let mut keys = taken.sets[0].keys.clone();
        keys.sort();
        assert_eq!(
            keys,
            [
                (Key::from(r#"["a"]"#), 8),
                (Key::from(r#"["b"]"#), 2),
                (Key::from("[null]"), 2)
            ]
        );
        assert_eq!(taken.values[0].keys[0].1.len(), 3, "every user of the run");
    }

    /// Full by what the master will add up (a key once per watcher of its set) or by the
    /// bytes of keys the frame carries (a key once for its set); counting stops at the
    /// event that filled it.
    #[test]
    fn a_batch_is_full_by_entries_or_by_key_bytes() {
        let mut batch = Batch::default();
        let many = set(by_ip(), &[Uuid::new_v4(), Uuid::new_v4()]);
        let values: Vec<String> = (0..BATCH_SHIP_AT).map(|n| n.to_string()).collect();
        let values: Vec<&str> = values.iter().map(String::as_str).collect();
        let all_but_one = BATCH_SHIP_AT / 2 - 1;
        assert_eq!(
            count(&mut batch, &many, &ips(&values[..all_but_one])),
            all_but_one
        );
        assert!(!batch.is_full());
        assert_eq!(
            count(&mut batch, &many, &ips(&values[all_but_one..])),
            1,
            "stopped when full"
        );
        assert!(batch.is_full());
        batch.take();
        let fat: Vec<String> = (0..18)
            .map(|n| format!("{}{n}", "x".repeat(60_000)))
            .collect();
        let fat: Vec<&str> = fat.iter().map(String::as_str).collect();
        count(&mut batch, &many, &ips(&fat[..10]));
        assert!(!batch.is_full(), "a key's bytes count once for its set");
        count(&mut batch, &many, &ips(&fat[10..]));
        assert!(batch.is_full(), "{} key bytes", batch.key_bytes);
    }

    /// A watched value's hash is no entry: a key's hashes are judged on the one counter
    /// the master finds for them, so a few keys with many values gather as many events
    /// as a threshold's keys would, and `BATCH_SHIP_HASHES` bounds the frame.
    #[test]
    fn watched_values_fill_a_batch_by_their_own_bound_not_as_entries() {
        let mut batch = Batch::default();
        let logins = Rc::new(FieldSet {
            aggregator: by_ip(),
            watchers: vec![Uuid::new_v4()],
            hashed: Some("user".into()),
        });
        let bodies: Vec<String> = (0..BATCH_SHIP_HASHES)
            .map(|n| format!(r#"{{"ip": "{}", "user": "u{n}"}}"#, n % 4))
            .collect();
        let last = BATCH_SHIP_HASHES - 1;
        assert_eq!(count(&mut batch, &logins, &bodies[..last]), last);
        assert_eq!(count(&mut batch, &logins, &bodies[..last]), last, "seen");
        assert!(!batch.is_full(), "{} entries", batch.entries);
        assert_eq!(count(&mut batch, &logins, &bodies[last..]), 1);
        assert!(batch.is_full());
        let taken = batch.take();
        let keys = &taken.values[0].keys;
        assert_eq!(keys.len(), 4);
        let hashes: usize = keys.iter().map(|(_, hashes)| hashes.len()).sum();
        assert_eq!(hashes, BATCH_SHIP_HASHES, "each value once per key");
    }
}
