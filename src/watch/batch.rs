//! What workers ship to the master (`CountBatch`: the counts of each field set's keys,
//! and cardinality's values' hashes), and how the master cuts one into pieces of about
//! the same cost (`take_piece`), so that no piece holds up its loop. Counts nothing and
//! decides nothing: `Watch` does.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Key;

/// What a worker ships to the master at least every 10 ms.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CountBatch {
    /// (event type, events collected): what the master counted, for metrics.
    pub events: Vec<(String, u64)>,
    /// The counts of each field set (`plan`): a key is named once for its set, however
    /// many watchers count by it.
    pub sets: Vec<SetCounts>,
    /// The watched values' hashes of each field set whose watchers need them
    /// (cardinality), instead of its counts.
    #[serde(default)]
    pub values: Vec<SetValues>,
}

impl CountBatch {
    /// What counting it costs: one update per key and watcher of its set.
    pub fn entries(&self) -> usize {
        let counts: usize = self
            .sets
            .iter()
            .map(|s| s.keys.len() * s.watchers.len())
            .sum();
        counts + self.values.iter().map(SetValues::entries).sum::<usize>()
    }

    /// Takes whole keys, each for every watcher of its set, up to `entries` updates (at
    /// least one key) out of the batch, as a batch of their own: a key is found once in
    /// its set's table however many watchers share it, and a piece costs a few
    /// microseconds whatever its set. Counts go first, then values, in the order they
    /// were always counted in (`take_values`). The events go with the last piece: once
    /// a batch's events are counted, all of their keys are.
    pub fn take_piece(&mut self, entries: usize) -> CountBatch {
        let mut piece = CountBatch::default();
        let mut taken = 0;
        while taken < entries {
            let Some(set) = self.sets.last_mut() else {
                break;
            };
            let room = entries - taken;
            if taken > 0 && !set.keys.is_empty() && set.watchers.len() > room {
                break;
            }
            let part = set.take_keys(room);
            if set.keys.is_empty() {
                self.sets.pop();
            }
            taken += part.entries().max(1);
            piece.sets.push(part);
        }
        if self.sets.is_empty() {
            self.take_values(&mut piece, entries.saturating_sub(taken));
        }
        if self.sets.is_empty() && self.values.is_empty() {
            piece.events = std::mem::take(&mut self.events);
        }
        piece
    }

    /// Values into `piece`, first key first, up to `room` updates: a value costs an
    /// update per watcher of its set (each judges it), so a piece of values costs what
    /// a piece of counts does. Whole keys; a key whose values pass the room for all of
    /// its watchers starts a piece of its own, judged by as many of its watchers as fit
    /// (at least one), and stays first for the others.
    fn take_values(&mut self, piece: &mut CountBatch, room: usize) {
        let mut left = room;
        while let Some(set) = self.values.first_mut() {
            let first = set
                .keys
                .first()
                .map_or(0, |(_, hashes)| set.cost_of(hashes));
            let started = !piece.sets.is_empty() || !piece.values.is_empty();
            if started && first > left {
                break;
            }
            let (part, rest) = set.take_front(left);
            if set.keys.is_empty() {
                self.values.remove(0);
            }
            if let Some(rest) = rest {
                self.values.insert(0, rest);
            }
            left = left.saturating_sub(part.entries().max(1));
            piece.values.push(part);
            if left == 0 {
                break;
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.sets.is_empty() && self.values.is_empty()
    }
}

/// The watchers that count by one field set, and the events of each of its keys.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SetCounts {
    pub watchers: Vec<Uuid>,
    pub keys: Vec<(Key, u64)>,
}

impl SetCounts {
    fn entries(&self) -> usize {
        self.keys.len() * self.watchers.len()
    }

    /// Its last keys, as many as `room` updates hold for all of its watchers (at least
    /// one key), taken out of it.
    fn take_keys(&mut self, room: usize) -> SetCounts {
        let fit = (room / self.watchers.len().max(1)).max(1);
        if fit >= self.keys.len() {
            return std::mem::take(self);
        }
        SetCounts {
            watchers: self.watchers.clone(),
            keys: self.keys.split_off(self.keys.len() - fit),
        }
    }

    /// (watcher, key, events) for each key and watcher of the set.
    pub fn counts(&self) -> impl Iterator<Item = (Uuid, &Key, u64)> {
        self.keys.iter().flat_map(|(key, events)| {
            self.watchers
                .iter()
                .map(move |&watcher| (watcher, key, *events))
        })
    }
}

/// The watchers of one field set that watch a value (cardinality), and the hashes of
/// the values each key was seen with.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SetValues {
    pub watchers: Vec<Uuid>,
    pub keys: Vec<(Key, Vec<u64>)>,
}

impl SetValues {
    fn entries(&self) -> usize {
        let hashes: usize = self
            .keys
            .iter()
            .map(|(_, hashes)| hashes.len().max(1))
            .sum();
        hashes * self.watchers.len()
    }

    /// What judging a key's `hashes` costs: an update per hash (at least one) and watcher.
    fn cost_of(&self, hashes: &[u64]) -> usize {
        hashes.len().max(1) * self.watchers.len().max(1)
    }

    /// Its first keys, as many as `room` updates hold for all of its watchers, taken out
    /// of it; if not even the first fits, the first key for as many of its watchers as
    /// fit (at least one), and that key for the other watchers, to be judged next.
    fn take_front(&mut self, room: usize) -> (SetValues, Option<SetValues>) {
        let mut cost = 0;
        let fit = (self.keys.iter())
            .take_while(|(_, hashes)| {
                cost += self.cost_of(hashes);
                cost <= room
            })
            .count();
        if fit >= self.keys.len() {
            return (std::mem::take(self), None);
        }
        let hashes = self.keys[0].1.len().max(1);
        let watchers = (room / hashes).max(1);
        if fit > 0 || watchers >= self.watchers.len() {
            let rest = self.keys.split_off(fit.max(1));
            let keys = std::mem::replace(&mut self.keys, rest);
            let watchers = self.watchers.clone();
            return (SetValues { watchers, keys }, None);
        }
        let (key, hashes) = self.keys.remove(0);
        let rest = SetValues {
            watchers: self.watchers[watchers..].to_vec(),
            keys: vec![(key.clone(), hashes.clone())],
        };
        let part = SetValues {
            watchers: self.watchers[..watchers].to_vec(),
            keys: vec![(key, hashes)],
        };
        (part, Some(rest))
    }

    /// (watcher, key, hashes) for each key and watcher of the set.
    pub fn values(&self) -> impl Iterator<Item = (Uuid, &Key, &[u64])> {
        self.keys.iter().flat_map(|(key, hashes)| {
            self.watchers
                .iter()
                .map(move |&watcher| (watcher, key, hashes.as_slice()))
        })
    }
}
