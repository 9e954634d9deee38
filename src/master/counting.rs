//! Counting in slices. The workers' count batches wait in the `Backlog`, and each turn of
//! the master's loop counts one slice of them (`route.rs::count_a_slice`, at most `SLICE`
//! of work, along the one `Route` of the mode the master is in), so that between two
//! slices the master answers its children, the control socket and every question: none
//! waits for more than a slice of counting, whatever the batch.
//!
//! Owns the batches read and not yet counted, and never drops or repeats one: a batch is
//! cut into pieces (`CountBatch::take_piece`), each counted once; what still waits is
//! counted whole before the counters are saved on a stop or a hand-over
//! (`count_everything`); a snapshot taken meanwhile is only older by what waits.
//! Backpressure: the counts channel of a worker with `MAX_WAITING_ENTRIES` waiting is
//! not read until they are counted; its heartbeats and questions come over its other
//! channel, read at every turn.

use std::collections::{BTreeMap, VecDeque};
use std::os::fd::RawFd;
use std::time::Duration;

use nix::poll::PollFlags;
use nix::unistd::Pid;

use super::setup;
use super::snapshot::Snapshots;
use crate::child::Child;
use crate::config::Config;
use crate::exposition::write_family;
use crate::watch::store::Second;
use crate::watch::{CountBatch, Watch};

/// The longest the master counts before it looks at its descriptors again.
pub(super) const SLICE: Duration = Duration::from_millis(10);
/// A piece: whole keys, each for every watcher of its set, up to this many updates (a
/// few tens of microseconds), so that a slice ends close to `SLICE`; cardinality's
/// values cost an update per hash and watcher (`CountBatch::take_piece`).
pub(super) const PIECE_ENTRIES: usize = 1024;
/// The store's work on the clock in one turn of the loop: keys judged (about a
/// microsecond each with a million held, bench/rules) or keys evicted past `max_keys`,
/// an update per watcher of the key's set each, so a slice of them takes about what a
/// slice of counting does.
pub(super) const CLOCK_KEYS_AT_ONCE: usize = 8 * 1024;
/// (watcher, key) updates of one worker waiting to be counted, beyond which it is not
/// read: about a tenth of a second of counting.
const MAX_WAITING_ENTRIES: usize = 64 * 1024;

/// Where counts go: chosen in one place (`route.rs::reroute_counts`), again only when a
/// mode changes (a take-over ends); `[cluster]` is read at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Route {
    /// A node alone: this master's store judges every count, and the clock.
    Local,
    /// A master taking over: counts wait for the hand-over (the old master still judges).
    Deferred,
    /// A cluster: to Redis, which judges them and the clock for every node
    /// (`cluster.rs::share_counts`; what Redis cannot take is counted here, degraded).
    Shared,
}

/// The watchers' counters (`Watch`, over its store), the count batches waiting for them,
/// where they go, and the snapshots that save them.
pub(super) struct Counting {
    pub watch: Watch,
    pub route: Route,
    /// Count batches read and not counted yet.
    pub backlog: Backlog,
    pub snapshots: Snapshots,
    /// Keys decided on the clock may still be due, or keys past `max_keys` held: set by
    /// the tick, cleared by the turn that found none left (`route.rs::judge_on_the_clock`).
    pub due_on_the_clock: bool,
    /// The longest turn of the loop spent counting so far: how long a question may have
    /// waited for counting (reliability.md: at most 100 ms).
    longest_slice: Duration,
}

impl Counting {
    pub(super) fn new(watch: Watch) -> Counting {
        Counting {
            watch,
            route: Route::Local,
            backlog: Backlog::default(),
            snapshots: Snapshots::default(),
            due_on_the_clock: false,
            longest_slice: Duration::ZERO,
        }
    }

    /// Work waits for the next turn of the loop: counts, or keys due on the clock.
    pub(super) fn has_work(&self) -> bool {
        !self.backlog.is_empty() || self.due_on_the_clock
    }

    /// A turn of the loop counted for `took`.
    pub(super) fn slice_took(&mut self, took: Duration) {
        self.longest_slice = self.longest_slice.max(took);
    }

    /// On the tick: a snapshot that writes past its deadline killed, and a new one
    /// started if due (`Snapshots::start_if_due`), closing `fork_fds` at once. `None`
    /// while the master stops: the final save is its clean-up's, once every child is gone.
    pub(super) fn on_tick(&mut self, config: &Config, fork_fds: Option<&[RawFd]>) {
        let watchers = &config.watchers;
        let timeout = Duration::from_secs(watchers.snapshot_timeout_secs);
        self.snapshots.enforce_deadline(timeout);
        if let Some(fork_fds) = fork_fds {
            let every = Duration::from_secs(watchers.snapshot_secs);
            let path = setup::counters_path(config);
            (self.snapshots).start_if_due(&mut self.watch, &path, every, fork_fds);
        }
    }

    /// Its metric families: the watchers' (`Watch::render`), the snapshots', the
    /// longest slice.
    pub(super) fn render(&self, out: &mut String) {
        self.watch.render(out);
        self.snapshots.render(out);
        write_family(
            out,
            "eventsd_count_slice_longest_seconds",
            "gauge",
            "The longest turn of the master's loop spent counting since it started.",
            [(String::new(), self.longest_slice.as_secs_f64())],
        );
    }

    pub(super) fn snapshot(&self) -> Option<&Child> {
        self.snapshots.child.as_ref()
    }

    pub(super) fn snapshot_mut(&mut self) -> Option<&mut Child> {
        self.snapshots.child.as_mut()
    }

    /// A stop: a snapshot under way finishes, within the graceful timeout.
    pub(super) fn stop_snapshot(&mut self, why: &str) {
        if let Some(snapshot) = self.snapshots.child.as_mut() {
            snapshot.stop(&(), why);
        }
    }

    /// A master taking over starts none until it has (`release_snapshots`): it has
    /// nothing of its own to save yet.
    pub(super) fn hold_snapshots(&mut self) {
        self.snapshots.hold();
    }

    pub(super) fn release_snapshots(&mut self) {
        self.snapshots.release();
    }

    pub(super) fn read_snapshot(&mut self, pid: Pid, events: PollFlags) {
        self.snapshots.read(pid, events);
    }

    pub(super) fn on_snapshot_exit(&mut self, pid: Pid, how: &str, succeeded: bool) {
        self.snapshots.exited(pid, how, succeeded, &mut self.watch);
    }
}

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
    pub(super) fn next_piece(&mut self, entries: usize) -> Option<(Second, CountBatch)> {
        let oldest = self.batches.front_mut()?;
        let piece = oldest.batch.take_piece(entries);
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
