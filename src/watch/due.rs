//! Keys waiting to be judged on the clock (rules.md: flatline), by the second they are
//! due: what a tick costs is the keys due then, never a scan of every key held.
//!
//! A key waits once, at its earliest due second; a key judged earlier than it waited
//! for leaves a stale entry behind, skipped when it comes up. Keys are filed under their
//! second, never ordered among themselves: a heap of (second, key) compared the texts of
//! the many keys due in one second at every step (measured: 2.5 µs a key due, with
//! 1,000,000 keys, two thirds of it in the heap). A key evicted or forgotten
//! leaves the queue (`forget`), and the stale entries are swept out once they outnumber
//! the keys waiting: the queue is bounded by the keys its watcher holds
//! (`watchers.max_keys`), whatever the traffic.
//!
//! It also knows the keys watched whatever they do (`single`'s, `expect`'s): its table
//! never evicts them (`table::SetTable::evict_one`), so that a key an operator named is
//! never silently unwatched. Never saved: the keys of a restored table are queued and
//! kept again when their watcher is first seen (`Watch::sync`).

use std::collections::{BTreeMap, HashSet};
use std::hash::RandomState;

use hashbrown::HashMap;
use hashbrown::hash_map::{Entry, EntryRef};

use super::Key;
use crate::clock::Second;

/// Stale entries the queue may hold beyond twice the keys waiting before it is swept.
const STALE_SLACK: usize = 64;

#[derive(Default)]
pub struct DueQueue {
    /// The keys filed under each second, in the order they were filed.
    queue: BTreeMap<Second, Vec<Key>>,
    /// Entries in `queue`, stale ones included.
    queued: usize,
    /// Keyed by a random SipHash (the keys are the clients'), found once per change.
    waiting: HashMap<Key, Second, RandomState>,
    /// Never evicted: at most `MAX_EXPECTED_KEYS` (or `single`'s one key).
    kept: HashSet<Key>,
}

impl DueQueue {
    /// Judges `key` at `due`, unless it waits already for that second or an earlier one.
    pub fn schedule(&mut self, key: &Key, due: Second) {
        match self.waiting.entry_ref(key) {
            EntryRef::Occupied(waits) if *waits.get() <= due => return,
            EntryRef::Occupied(mut waits) => *waits.get_mut() = due,
            EntryRef::Vacant(vacant) => {
                vacant.insert(due);
            }
        }
        self.file(due, key.clone());
        self.sweep_if_stale();
    }

    /// `key` waits no more: it was evicted or forgotten.
    pub fn forget(&mut self, key: &str) {
        if !self.waiting.is_empty() && self.waiting.remove(key).is_some() {
            self.sweep_if_stale();
        }
    }

    fn file(&mut self, due: Second, key: Key) {
        self.queue.entry(due).or_default().push(key);
        self.queued += 1;
    }

    /// The queue rebuilt from the keys waiting once its stale entries outnumber them:
    /// each sweep follows as many changes as it costs.
    fn sweep_if_stale(&mut self) {
        if self.queued > 2 * self.waiting.len() + STALE_SLACK {
            self.queue.clear();
            self.queued = 0;
            let waiting: Vec<(Second, Key)> = (self.waiting.iter())
                .map(|(key, &due)| (due, key.clone()))
                .collect();
            for (due, key) in waiting {
                self.file(due, key);
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

    pub fn is_waiting(&self, key: &Key) -> bool {
        self.waiting.contains_key(key)
    }

    /// At most `at_most` of the keys due at `now`, which wait no longer, by the second
    /// they were due (within one second, in no order the callers may rely on); the
    /// others stay filed for the next call.
    pub fn take_due(&mut self, now: Second, at_most: usize) -> Vec<Key> {
        let mut due = Vec::new();
        while due.len() < at_most {
            let Some(mut entry) = self.queue.first_entry() else {
                break;
            };
            let at = *entry.key();
            if at > now {
                break;
            }
            let keys = entry.get_mut();
            while due.len() < at_most {
                let Some(key) = keys.pop() else {
                    break;
                };
                self.queued -= 1;
                match self.waiting.entry(key) {
                    Entry::Occupied(waits) if *waits.get() == at => {
                        due.push(waits.remove_entry().0)
                    }
                    _ => {}
                }
            }
            if keys.is_empty() {
                entry.remove();
            }
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_comes_up_once_at_its_earliest_due_second() {
        let mut due = DueQueue::default();
        let (a, b) = (Key::from("a"), Key::from("b"));
        due.schedule(&a, 20);
        due.schedule(&a, 30);
        due.schedule(&b, 15);
        due.schedule(&b, 10);
        assert!(due.take_due(9, usize::MAX).is_empty());
        assert_eq!(due.take_due(20, usize::MAX), vec![b.clone(), a.clone()]);
        assert!(
            due.take_due(100, usize::MAX).is_empty(),
            "stale entries are skipped"
        );
        assert!(!due.is_waiting(&a));
    }

    /// 200,000 keys that came and went (evicted, forgotten) leave the queue no larger
    /// than the keys still waiting, and those still come up.
    #[test]
    fn keys_forgotten_leave_the_queue_bounded_by_the_keys_waiting() {
        let mut due = DueQueue::default();
        let kept = Key::from("kept");
        due.schedule(&kept, 500);
        for n in 0..200_000u64 {
            let key = Key::from(n.to_string().as_str());
            due.schedule(&key, 100 + n % 300);
            if n % 1000 != 0 {
                due.forget(key.as_str());
            }
        }
        assert_eq!(due.waiting.len(), 201);
        assert!(due.queued <= 2 * 201 + STALE_SLACK, "{}", due.queued);
        let came_up = due.take_due(1_000, usize::MAX);
        assert_eq!(came_up.len(), 201);
        assert!(came_up.contains(&kept));
    }
}
