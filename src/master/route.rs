//! Where counts go, and the firings they make: a worker's batch waits in the backlog
//! (`counting`); each turn of the loop counts a slice of it (`count_a_slice`), along the
//! one route chosen when a mode changes (`reroute_counts`, `counting::Route`): held by a
//! master still taking over (`succession`), to Redis in a cluster (`cluster.rs::
//! share_counts`, which gives back what Redis cannot take), or into this master's store
//! (`count_locally`; in a cluster, firings then marked degraded). Every firing goes to
//! alert delivery (`alerts`) unless a silence holds it (`oncall`), and what delivery
//! settles or drops goes to the alert list.
//!
//! Glue only: the state is the components'.

use std::time::Instant;

use nix::unistd::Pid;

use super::Master;
use super::counting::{CLOCK_KEYS_AT_ONCE, PIECE_ENTRIES, Route, SLICE};
use crate::protocol::runner::{DropReason, FromRunner};
use crate::watch::store::Second;
use crate::watch::{CountBatch, Job};

impl Master {
    /// The one place the counting route is chosen: at start, and when a take-over ends.
    pub(super) fn reroute_counts(&mut self) {
        self.counting.route = if self.succession.is_taking_over() {
            Route::Deferred
        } else {
            self.cluster.route()
        };
    }

    /// A worker's batch: counted in slices, from the next turn of the loop. A master that
    /// is taking over from an old one holds it until it has (`upgrade`).
    pub(super) fn count(&mut self, worker: Pid, batch: CountBatch) {
        let now = crate::watch::now();
        let batch = match self.counting.route {
            Route::Deferred => self.succession.defer_counts(batch, now),
            Route::Local | Route::Shared => Some(batch),
        };
        if let Some(batch) = batch {
            self.counting.backlog.push(Some(worker), now, batch);
        }
    }

    /// One slice: pieces of the waiting batches until `SLICE` has passed.
    pub(super) fn count_a_slice(&mut self) {
        let started = Instant::now();
        while started.elapsed() < SLICE {
            let Some((at, piece)) = self.counting.backlog.next_piece(PIECE_ENTRIES) else {
                break;
            };
            self.count_at(piece, at);
        }
        self.counting.slice_took(started.elapsed());
    }

    /// Everything still waiting, at once: the counters are about to be saved for good.
    pub(super) fn count_everything(&mut self) {
        while let Some((at, piece)) = self.counting.backlog.next_piece(usize::MAX) {
            self.count_at(piece, at);
        }
    }

    /// Adds counts (a piece of a worker's batch); every key that crossed its threshold
    /// fires. In a cluster, the counts go to Redis, which decides the crossings
    /// (`cluster`); otherwise, or while Redis is unreachable, this master decides.
    fn count_at(&mut self, batch: CountBatch, now: Second) {
        let local = match self.counting.route {
            Route::Shared => self.share_counts(batch, now),
            Route::Local | Route::Deferred => Some(batch),
        };
        if let Some(batch) = local {
            self.count_locally(batch, now);
        }
    }

    /// Counts in this master's store; in a cluster, what fires is marked degraded.
    pub(super) fn count_locally(&mut self, batch: CountBatch, now: Second) {
        let jobs = self.counting.watch.count(batch, now);
        self.dispatch_local(jobs);
    }

    /// The store's work on the clock, from the 1 s tick on, a slice of
    /// `CLOCK_KEYS_AT_ONCE` keys a turn of the loop until none is left: keys past
    /// `watchers.max_keys` evicted, then the rules decided on the clock (rules.md:
    /// flatline) judged by this master's store: not in a cluster, where Redis judges
    /// them for every node (the link asks it every second; a node that lost Redis sees
    /// only its share of the events, too few to call a silence). Neither while taking
    /// over: the old master still judges, and its counters are still to come.
    pub(super) fn judge_on_the_clock(&mut self) {
        if !self.counting.due_on_the_clock {
            return;
        }
        let mut budget = CLOCK_KEYS_AT_ONCE;
        let route = self.counting.route;
        let watch = &mut self.counting.watch;
        if route != Route::Deferred {
            watch.evict_past_max_keys(&mut budget);
        }
        let jobs = match route {
            Route::Local => watch.tick(crate::watch::now(), &mut budget),
            Route::Deferred | Route::Shared => Vec::new(),
        };
        self.counting.due_on_the_clock = budget == 0;
        self.dispatch_local(jobs);
    }

    /// Firings of this master's store; in a cluster, marked degraded.
    fn dispatch_local(&mut self, jobs: Vec<Job>) {
        for mut job in jobs {
            self.cluster.mark_own(&mut job.firing);
            self.dispatch(job);
        }
    }

    /// A firing, to alert delivery, unless a silence holds it back (`oncall`); the
    /// alert list records it either way, and the firing a full journal drops.
    pub(super) fn dispatch(&mut self, job: Job) {
        if self.held_by_silence(&job) {
            return;
        }
        if let Some(dropped) = self.actions.fire(job, self.board.totals_mut()) {
            self.record_drops(&[dropped], DropReason::QueueFull);
        }
    }

    /// After every change of the registry the master adopts: the firings of watchers
    /// gone or changed are settled (`Alerts::settle_orphans`), and marked in the alert
    /// list.
    pub(super) fn settle_orphaned_firings(&mut self) {
        let orphans = (self.actions).settle_orphans(&self.registry, self.board.totals_mut());
        self.record_drops(&orphans, DropReason::WatcherDeleted);
    }

    /// What the runner says, to alert delivery; its retries and the outcomes that
    /// settled firings, to the alert list.
    pub(super) fn runner_said(&mut self, message: FromRunner) {
        if let FromRunner::Retrying {
            ids,
            error,
            retry_in_ms,
        } = &message
        {
            let retry_in = std::time::Duration::from_millis(*retry_in_ms);
            self.oncall.retrying(ids, error, retry_in);
        }
        if let Some(outcome) = self.actions.on_message(message, self.board.totals_mut()) {
            self.oncall.settled(&outcome);
        }
    }
}
