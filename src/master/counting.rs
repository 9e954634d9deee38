//! Counting in slices. The workers' count batches wait in the `Backlog`, and each turn of
//! the master's loop counts one slice of them (`count_a_slice`, at most `SLICE` of work),
//! so that between two slices the master answers its children, the control socket and
//! every question: none waits for more than a slice of counting, whatever the batch.
//!
//! Owns the batches read and not yet counted, and never drops or repeats one: a batch is
//! cut into pieces (`CountBatch::take_piece`), each counted once; what still waits is
//! counted whole before the counters are saved on a stop or a hand-over
//! (`count_everything`); a snapshot taken meanwhile is only older by what waits.
//! Backpressure: the counts channel of a worker with `MAX_WAITING_ENTRIES` waiting is
//! not read until they are counted; its heartbeats and questions come over its other
//! channel, read at every turn.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use nix::unistd::Pid;

use super::Master;
use crate::watch::CountBatch;
use crate::watch::store::Second;

/// The longest the master counts before it looks at its descriptors again.
const SLICE: Duration = Duration::from_millis(10);
/// A piece: at most this many updates...
const PIECE_ENTRIES: usize = 1024;
/// ...of at most this many watchers, so that a slice ends close to `SLICE` even when
/// every watcher's table grows in it (200 watchers of one field set grow theirs at the
/// same key).
const PIECE_WATCHERS: usize = 16;
/// (watcher, key) updates of one worker waiting to be counted, beyond which it is not
/// read: about a tenth of a second of counting.
const MAX_WAITING_ENTRIES: usize = 64 * 1024;

/// Count batches read and not yet counted, oldest first.
#[derive(Default)]
pub(super) struct Backlog {
    batches: VecDeque<Waiting>,
    /// Entries waiting, by the worker that sent them.
    by_worker: BTreeMap<Pid, usize>,
}

struct Waiting {
    /// The worker that sent it; `None` for counts held meanwhile (an upgrade, a cluster
    /// settling) and counted now.
    from: Option<Pid>,
    /// When it arrived: the second its events count in.
    at: Second,
    batch: CountBatch,
}

impl Backlog {
    pub(super) fn push(&mut self, from: Option<Pid>, at: Second, batch: CountBatch) {
        if let Some(worker) = from {
            *self.by_worker.entry(worker).or_default() += batch.entries();
        }
        self.batches.push_back(Waiting { from, at, batch });
    }

    pub(super) fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    /// Whether the master may read more of `worker`'s counts now.
    pub(super) fn may_read(&self, worker: Pid) -> bool {
        self.by_worker
            .get(&worker)
            .is_none_or(|&n| n < MAX_WAITING_ENTRIES)
    }

    /// The next piece (`CountBatch::take_piece`), with the second it counts in.
    fn next_piece(&mut self, entries: usize, watchers: usize) -> Option<(Second, CountBatch)> {
        let oldest = self.batches.front_mut()?;
        let piece = oldest.batch.take_piece(entries, watchers);
        let (from, at) = (oldest.from, oldest.at);
        if oldest.batch.is_empty() {
            self.batches.pop_front();
        }
        if let Some(worker) = from {
            let waiting = self.by_worker.entry(worker).or_default();
            *waiting = waiting.saturating_sub(piece.entries());
            if *waiting == 0 {
                self.by_worker.remove(&worker);
            }
        }
        Some((at, piece))
    }
}

impl Master {
    /// A worker's batch: counted in slices, from the next turn of the loop. A master that
    /// is taking over from an old one holds it until it has (`upgrade`).
    pub(super) fn count(&mut self, worker: Pid, batch: CountBatch) {
        let now = crate::watch::now();
        if let Some(batch) = self.succession.defer_counts(batch, now) {
            self.backlog.push(Some(worker), now, batch);
        }
    }

    /// One slice: pieces of the waiting batches until `SLICE` has passed.
    pub(super) fn count_a_slice(&mut self) {
        let started = Instant::now();
        while started.elapsed() < SLICE {
            let Some((at, piece)) = self.backlog.next_piece(PIECE_ENTRIES, PIECE_WATCHERS) else {
                return;
            };
            self.count_at(piece, at);
        }
    }

    /// Everything still waiting, at once: the counters are about to be saved for good.
    pub(super) fn count_everything(&mut self) {
        while let Some((at, piece)) = self.backlog.next_piece(usize::MAX, usize::MAX) {
            self.count_at(piece, at);
        }
    }
}
