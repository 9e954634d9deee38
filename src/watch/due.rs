//! Keys waiting to be judged on the clock (rules.md: flatline), by the second they are
//! due: what a tick costs is the keys due then, never a scan of every key held.
//!
//! One queue per watcher's column (`column::Column`), of the table's slot numbers: the
//! second a slot waits for is kept beside it (`waits`, parallel to the table's slots),
//! and the queue files slots under seconds, as hints. An entry counts only while its
//! slot still waits for its second: a key judged, forgotten or moved (the table's
//! `swap_remove`) leaves a stale entry behind, skipped when it comes up. Whichever key
//! holds the slot then is the one due at that second, so a hint never judges a key at the
//! wrong time. Keys were filed by text before, each found in a map of waits at every
//! change: three keyed hashes of the key's text per key due (measured: 1.35–1.39 µs a key
//! due, with 1,000,000 keys, mostly those lookups' cache misses). Stale entries are swept out
//! once they outnumber the keys waiting and the slots of the table: the queue is bounded
//! by the keys the table holds (`watchers.max_keys` and the kept keys), whatever the
//! traffic, and a sweep, a pass over those slots, follows as many changes as it costs.
//!
//! It also knows the keys watched whatever they do (`single`'s, `expect`'s): its table
//! never evicts them (`table::SetTable::evict_one`), so that a key an operator named is
//! never silently unwatched. Never saved: the keys of a restored table are queued and
//! kept again when their watcher is first seen (`Watch::sync`).

use std::collections::{BTreeMap, HashSet};

use super::Key;
use crate::clock::Second;

/// Stale entries the queue may hold beyond twice the keys waiting and the slots before
/// it is swept.
const STALE_SLACK: usize = 64;

/// The second of a slot that waits for none. A rule asks for second 0 for a key due at
/// once (below its threshold from its first event): it is filed under second 1, as past.
const NOT_WAITING: Second = 0;

#[derive(Default)]
pub struct DueQueue {
    /// The slots filed under each second, in the order they were filed.
    queue: BTreeMap<Second, Vec<u32>>,
    /// Entries in `queue`, stale ones included.
    queued: usize,
    /// The second each slot waits for, by slot; slots past its end wait for none.
    waits: Vec<Second>,
    /// Slots that wait.
    waiting: usize,
    /// Never evicted: at most `MAX_EXPECTED_KEYS` (or `single`'s one key).
    kept: HashSet<Key>,
}

impl DueQueue {
    /// Judges the key of `slot` at `due`, unless it waits already for that second or an
    /// earlier one.
    pub fn schedule(&mut self, slot: usize, due: Second) {
        let due = due.max(NOT_WAITING + 1);
        let waits = self.wait_of(slot);
        if waits != NOT_WAITING && waits <= due {
            return;
        }
        if waits == NOT_WAITING {
            self.waiting += 1;
        }
        if self.waits.len() <= slot {
            self.waits.resize(slot + 1, NOT_WAITING);
        }
        self.waits[slot] = due;
        self.file(due, slot);
        self.sweep_if_stale();
    }

    /// The key of `slot` waits no more: it was evicted or forgotten.
    pub fn forget(&mut self, slot: usize) {
        if self.stop_waiting(slot) != NOT_WAITING {
            self.sweep_if_stale();
        }
    }

    /// The table's `swap_remove` of `slot`: its key is gone, and the key of its last slot
    /// (`last`) moves there, waiting as it did.
    pub fn swap_remove(&mut self, slot: usize, last: usize) {
        self.stop_waiting(slot);
        if slot != last {
            let moved = self.stop_waiting(last);
            if moved != NOT_WAITING {
                self.schedule(slot, moved);
            }
        }
        self.waits.truncate(last);
    }

    /// The slots of another table renumbered (`here` of each of its slots, if held), as
    /// a column joins this table with its keys.
    pub fn renumbered(self, here: impl Fn(usize) -> Option<usize>) -> DueQueue {
        let mut joined = DueQueue {
            kept: self.kept,
            ..DueQueue::default()
        };
        for (slot, &due) in self.waits.iter().enumerate() {
            if let Some(here) = here(slot).filter(|_| due != NOT_WAITING) {
                joined.schedule(here, due);
            }
        }
        joined
    }

    fn wait_of(&self, slot: usize) -> Second {
        self.waits.get(slot).copied().unwrap_or(NOT_WAITING)
    }

    /// What `slot` waited for, and it waits no more.
    fn stop_waiting(&mut self, slot: usize) -> Second {
        let Some(waits) = self.waits.get_mut(slot) else {
            return NOT_WAITING;
        };
        let waited = std::mem::replace(waits, NOT_WAITING);
        if waited != NOT_WAITING {
            self.waiting -= 1;
        }
        waited
    }

    fn file(&mut self, due: Second, slot: usize) {
        // A table's slots are numbered by u32 (`table::SetTable`'s index).
        self.queue.entry(due).or_default().push(slot as u32);
        self.queued += 1;
    }

    /// The queue rebuilt from the slots waiting once its stale entries outnumber them
    /// and the slots (a pass over which a sweep is): each sweep follows as many changes
    /// as it costs, also where few of many slots wait.
    fn sweep_if_stale(&mut self) {
        if self.queued > 2 * self.waiting + self.waits.len() + STALE_SLACK {
            self.queue.clear();
            self.queued = 0;
            for slot in 0..self.waits.len() {
                let due = self.waits[slot];
                if due != NOT_WAITING {
                    self.file(due, slot);
                }
            }
        }
    }

    /// `key` is watched whatever it does: never evicted.
    pub fn keep(&mut self, key: &Key) {
        self.kept.insert(key.clone());
    }

    pub fn kept_len(&self) -> usize {
        self.kept.len()
    }

    pub fn keeps(&self, key: &str) -> bool {
        self.kept.contains(key)
    }

    pub fn is_waiting(&self, slot: usize) -> bool {
        self.wait_of(slot) != NOT_WAITING
    }

    /// The next slot due at `now`, which waits no longer: by the second it was due
    /// (within one second, in no order the callers may rely on). One at a time: judging
    /// a key may move another one's slot (`swap_remove`).
    pub fn next_due(&mut self, now: Second) -> Option<usize> {
        loop {
            let mut entry = self.queue.first_entry()?;
            let at = *entry.key();
            if at > now {
                return None;
            }
            let slots = entry.get_mut();
            let slot = slots.pop().map(|slot| slot as usize);
            if slots.is_empty() {
                entry.remove();
            }
            let Some(slot) = slot else { continue };
            self.queued -= 1;
            if self.wait_of(slot) == at {
                self.stop_waiting(slot);
                return Some(slot);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_due(due: &mut DueQueue, now: Second) -> Vec<usize> {
        std::iter::from_fn(|| due.next_due(now)).collect()
    }

    #[test]
    fn a_key_comes_up_once_at_its_earliest_due_second() {
        let mut due = DueQueue::default();
        let (a, b) = (0, 1);
        due.schedule(a, 20);
        due.schedule(a, 30);
        due.schedule(b, 15);
        due.schedule(b, 10);
        assert!(all_due(&mut due, 9).is_empty());
        assert_eq!(all_due(&mut due, 20), vec![b, a]);
        assert!(
            all_due(&mut due, 100).is_empty(),
            "stale entries are skipped"
        );
        assert!(!due.is_waiting(a));
    }

    /// A key due at once (second 0: below its threshold from its first event) waits,
    /// comes up once at the next tick, and moves with its slot.
    #[test]
    fn a_key_due_at_once_waits_and_comes_up_once() {
        let mut due = DueQueue::default();
        due.schedule(0, 0);
        due.schedule(0, 0);
        due.schedule(1, 0);
        assert!(due.is_waiting(0));
        due.swap_remove(0, 1);
        assert_eq!(due.waiting, 1);
        assert_eq!(
            all_due(&mut due, 5),
            vec![0],
            "slot 1's key, moved to 0, once"
        );
        assert_eq!(due.waiting, 0);
    }

    /// The table's `swap_remove`: the removed slot's key waits no more, the moved one
    /// waits under its new slot for the same second, and its old slot's entry is stale.
    #[test]
    fn a_moved_slot_waits_under_its_new_number_and_a_removed_one_not_at_all() {
        let mut due = DueQueue::default();
        due.schedule(0, 10);
        due.schedule(1, 20);
        due.schedule(2, 30);
        due.swap_remove(0, 2);
        assert_eq!(due.waiting, 2);
        assert!(all_due(&mut due, 15).is_empty(), "slot 0's key was removed");
        assert_eq!(all_due(&mut due, 30), vec![1, 0], "slot 2's key moved to 0");
        due.schedule(2, 40);
        assert_eq!(
            all_due(&mut due, 40),
            vec![2],
            "a new key of slot 2 is due alone"
        );
    }

    /// 200,000 keys that came and went (evicted, forgotten) leave the queue no larger
    /// than the keys still waiting, and those still come up.
    #[test]
    fn keys_forgotten_leave_the_queue_bounded_by_the_keys_waiting() {
        let mut due = DueQueue::default();
        due.schedule(0, 500);
        for slot in 1..200_001usize {
            due.schedule(slot, 100 + slot as u64 % 300);
            if slot % 1000 != 0 {
                due.forget(slot);
            }
        }
        assert_eq!(due.waiting, 201);
        assert!(due.queued <= 2 * 201 + due.waits.len() + STALE_SLACK);
        let came_up = all_due(&mut due, 1_000);
        assert_eq!(came_up.len(), 201);
        assert!(came_up.contains(&0));
    }
}
