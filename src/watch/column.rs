//! One watcher's counters in its field set's table (`table::SetTable`): a counter block
//! per slot of the table, parallel to its slots (struct of arrays), and which of them the
//! watcher holds, one bit a slot. Its keys decided on the clock wait in its own due queue.
//!
//! Knows nothing of keys or eviction: the table moves its slots, and every column with
//! them, so that a column never disagrees with the slots in length or order. Its blocks
//! are kept in chunks (`Blocks`), so that a column grows without copying what it holds.

use uuid::Uuid;

use super::counter::KeyCounter;
use super::due::DueQueue;

/// Blocks a chunk: 48 KiB of counters, allocated once at this size past the first chunk.
const CHUNK: usize = 1024;

pub struct Column {
    pub watcher: Uuid,
    counters: Blocks,
    /// Bit `slot % 64` of word `slot / 64`: the watcher holds the slot's key.
    held: Vec<u64>,
    held_keys: usize,
    /// Keys it held that were evicted at `watchers.max_keys`, so far.
    pub evictions: u64,
    /// Its keys decided on the clock (flatline), by due second: slots, moved with them.
    pub due: DueQueue,
}

impl Column {
    /// The column of `watcher` in a table of `slots` slots, holding none of them.
    pub fn new(watcher: Uuid, slots: usize) -> Column {
        Column {
            watcher,
            counters: Blocks::filled(slots),
            held: vec![0; slots.div_ceil(64)],
            held_keys: 0,
            evictions: 0,
            due: DueQueue::default(),
        }
    }

    /// The keys it holds.
    pub fn held_keys(&self) -> usize {
        self.held_keys
    }

    pub fn holds(&self, slot: usize) -> bool {
        self.held[slot / 64] >> (slot % 64) & 1 == 1
    }

    /// Its counter at `slot`, held from now on.
    pub fn hold(&mut self, slot: usize) -> &mut KeyCounter {
        if !self.holds(slot) {
            self.write_bit(slot, true);
            self.held_keys += 1;
        }
        self.counters.get_mut(slot)
    }

    /// Its counter at `slot`, held from now on, with its due queue: what its rule decides
    /// on when counts arrive.
    pub fn block(&mut self, slot: usize) -> (&mut KeyCounter, &mut DueQueue) {
        self.hold(slot);
        (self.counters.get_mut(slot), &mut self.due)
    }

    /// Its counter at `slot`, if it holds it.
    pub fn held(&mut self, slot: usize) -> Option<&mut KeyCounter> {
        self.holds(slot).then(|| self.counters.get_mut(slot))
    }

    pub fn counter(&self, slot: usize) -> &KeyCounter {
        self.counters.get(slot)
    }

    /// Its counter at `slot` set to `counter`, held.
    pub fn put(&mut self, slot: usize, counter: KeyCounter) {
        *self.hold(slot) = counter;
    }

    /// Its counter at `slot` taken out, held no more.
    pub fn release(&mut self, slot: usize) -> KeyCounter {
        if self.holds(slot) {
            self.write_bit(slot, false);
            self.held_keys -= 1;
        }
        std::mem::take(self.counters.get_mut(slot))
    }

    /// A slot added at the end of the table.
    pub fn push(&mut self) {
        self.counters.push(KeyCounter::default());
        if self.counters.len > self.held.len() * 64 {
            self.held.push(0);
        }
    }

    /// The table's `swap_remove` of `slot`: its last slot moves there.
    pub fn swap_remove(&mut self, slot: usize) {
        let last = self.counters.len - 1;
        self.due.swap_remove(slot, last);
        let moved = self.holds(last);
        self.release(slot);
        self.counters.swap_remove(slot);
        self.write_bit(last, false);
        if slot != last {
            self.write_bit(slot, moved);
        }
    }

    fn write_bit(&mut self, slot: usize, held: bool) {
        let (word, bit) = (slot / 64, 1u64 << (slot % 64));
        if held {
            self.held[word] |= bit;
        } else {
            self.held[word] &= !bit;
        }
    }
}

/// A column's counter blocks, in chunks of `CHUNK` that never move once full: a key new
/// to a set of 200 watchers costs 200 pushes, never 200 reallocations of whole columns
/// (a pause of the master's loop that would grow with the table). Only the first chunk
/// grows as a vector does, so that a watcher of few keys holds few blocks.
#[derive(Default)]
struct Blocks {
    chunks: Vec<Vec<KeyCounter>>,
    len: usize,
}

impl Blocks {
    fn filled(len: usize) -> Blocks {
        let mut blocks = Blocks::default();
        for _ in 0..len {
            blocks.push(KeyCounter::default());
        }
        blocks
    }

    fn get(&self, slot: usize) -> &KeyCounter {
        &self.chunks[slot / CHUNK][slot % CHUNK]
    }

    fn get_mut(&mut self, slot: usize) -> &mut KeyCounter {
        &mut self.chunks[slot / CHUNK][slot % CHUNK]
    }

    fn push(&mut self, counter: KeyCounter) {
        if self.len % CHUNK == 0 {
            let chunk = if self.chunks.is_empty() {
                Vec::new()
            } else {
                Vec::with_capacity(CHUNK)
            };
            self.chunks.push(chunk);
        }
        if let Some(chunk) = self.chunks.last_mut() {
            chunk.push(counter);
            self.len += 1;
        }
    }

    /// The block at `slot` removed, the last one moved in its place.
    fn swap_remove(&mut self, slot: usize) -> KeyCounter {
        let mut removed = self.pop();
        if slot < self.len {
            std::mem::swap(self.get_mut(slot), &mut removed);
        }
        removed
    }

    /// The last block taken out; no chunk is ever left empty.
    fn pop(&mut self) -> KeyCounter {
        let Some(chunk) = self.chunks.last_mut() else {
            return KeyCounter::default();
        };
        let last = chunk.pop().unwrap_or_default();
        if chunk.is_empty() {
            self.chunks.pop();
        }
        self.len = self.len.saturating_sub(1);
        last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_column_moves_its_last_slot_into_one_removed_with_its_bit() {
        let mut column = Column::new(Uuid::nil(), 0);
        for _ in 0..130 {
            column.push();
        }
        column.hold(3).cooldown_secs = 3;
        column.hold(129).cooldown_secs = 129;
        assert_eq!(column.held_keys(), 2);
        column.swap_remove(3);
        assert!(column.holds(3) && !column.holds(129));
        assert_eq!(
            (column.counter(3).cooldown_secs, column.held_keys()),
            (129, 1)
        );
        column.swap_remove(128);
        assert_eq!(
            column.held_keys(),
            1,
            "a slot not held goes without a trace"
        );
        column.push();
        assert!(!column.holds(128), "a new slot is not held");
    }

    /// Past a chunk, the last block still moves into a removed slot, from chunk to chunk.
    #[test]
    fn a_column_of_several_chunks_keeps_its_blocks_in_place() {
        let slots = 2 * CHUNK + 5;
        let mut column = Column::new(Uuid::nil(), slots);
        for slot in 0..slots {
            column.hold(slot).cooldown_secs = slot as u32;
        }
        column.swap_remove(7);
        assert_eq!(column.counter(7).cooldown_secs, (slots - 1) as u32);
        for _ in 0..6 {
            column.swap_remove(CHUNK + 1);
        }
        assert_eq!(column.counters.len, 2 * CHUNK - 2);
        assert_eq!(column.counters.chunks.len(), 2, "an emptied chunk goes");
        assert_eq!(column.counter(CHUNK - 1).cooldown_secs, (CHUNK - 1) as u32);
        assert_eq!(
            column.counter(CHUNK + 1).cooldown_secs,
            (2 * CHUNK - 2) as u32
        );
        assert_eq!(column.held_keys(), 2 * CHUNK - 2);
    }
}
