//! Keys waiting to be judged on the clock (rules.md: flatline), by the second they are
//! due: what a tick costs is the keys due then, never a scan of every key held.
//!
//! A key waits once, at its earliest due second; a key judged earlier than it waited
//! for leaves a stale entry behind, skipped when it comes up. Never saved: the keys of a
//! restored table are queued again when their watcher is first seen (`Watch::sync`).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use super::Key;
use crate::clock::Second;

#[derive(Default)]
pub struct DueQueue {
    queue: BinaryHeap<Reverse<(Second, Key)>>,
    waiting: HashMap<Key, Second>,
}

impl DueQueue {
    /// Judges `key` at `due`, unless it waits already for that second or an earlier one.
    pub fn schedule(&mut self, key: &Key, due: Second) {
        if self.waiting.get(key).is_some_and(|&waits| waits <= due) {
            return;
        }
        self.waiting.insert(key.clone(), due);
        self.queue.push(Reverse((due, key.clone())));
    }

    pub fn is_waiting(&self, key: &Key) -> bool {
        self.waiting.contains_key(key)
    }

    /// The keys due at `now`, which wait no longer, earliest first.
    pub fn take_due(&mut self, now: Second) -> Vec<Key> {
        let mut due = Vec::new();
        while self.queue.peek().is_some_and(|Reverse((at, _))| *at <= now) {
            let Some(Reverse((at, key))) = self.queue.pop() else {
                break;
            };
            if self.waiting.get(&key) == Some(&at) {
                self.waiting.remove(&key);
                due.push(key);
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
        assert!(due.take_due(9).is_empty());
        assert_eq!(due.take_due(20), vec![b.clone(), a.clone()]);
        assert!(due.take_due(100).is_empty(), "stale entries are skipped");
        assert!(!due.is_waiting(&a));
    }
}
