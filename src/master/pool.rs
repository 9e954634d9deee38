//! The worker table: every live worker with what the master knows of it, the pool's
//! target size, and the crash-loop backoff that paces respawns.
//!
//! Pure bookkeeping: this module never forks, signals or does I/O. The master decides,
//! the pool remembers, so that reload, SIGTTIN/SIGTTOU, crashes and the dynamic pool are
//! all changes to `target` that one reconcile step converges to.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::time::{Duration, Instant};

use nix::unistd::Pid;

use crate::child::Child;
use crate::protocol::channel::Channel;
use crate::protocol::worker::Heartbeat;
use crate::status::{WorkerState, WorkerStatus};

/// A worker that exits sooner than this after its fork counts as a crash-loop exit. A
/// crash loop dies within milliseconds of the fork (bad chroot, full disk); a worker
/// that served for a second and was killed is simply replaced at once.
pub const QUICK_EXIT: Duration = Duration::from_secs(1);
/// The longest wait between two respawns in a crash loop.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// A worker: the child record every child has, and what only workers report.
pub struct Worker {
    pub child: Child,
    /// Its count batches, read as the backlog makes room (`counting`); `None` once the
    /// worker closed it.
    pub counts: Option<Channel>,
    /// The lowest number no other live worker had when it was forked: metrics series are
    /// labelled by slot, so they do not churn with every respawn.
    pub slot: usize,
    /// The reload generation whose configuration the worker was forked with.
    pub generation: u64,
    pub ready: bool,
    pub report: Heartbeat,
    /// Since when the worker has reported itself idle (dynamic pool).
    pub idle_since: Option<Instant>,
    /// What the worker reported before exiting when its set-up failed.
    pub startup_failure: Option<String>,
    /// The registry version the worker serves (acknowledged, or forked with).
    pub registry_version: u64,
}

impl Worker {
    pub fn new(
        child: Child,
        counts: Channel,
        slot: usize,
        generation: u64,
        registry_version: u64,
    ) -> Worker {
        Worker {
            child,
            counts: Some(counts),
            slot,
            generation,
            ready: false,
            report: Heartbeat::default(),
            idle_since: None,
            startup_failure: None,
            registry_version,
        }
    }

    pub fn pid(&self) -> Pid {
        self.child.pid
    }

    pub fn counts_fd(&self) -> Option<RawFd> {
        self.counts.as_ref().map(|c| c.as_fd().as_raw_fd())
    }

    pub fn state(&self) -> WorkerState {
        if self.child.is_stopping() {
            WorkerState::Shutdown
        } else if !self.ready {
            WorkerState::Init
        } else if self.report.busy {
            WorkerState::Busy
        } else {
            WorkerState::Idle
        }
    }

    pub fn record_heartbeat(&mut self, report: Heartbeat, now: Instant) {
        self.idle_since = match (report.busy, self.idle_since) {
            (true, _) => None,
            (false, None) => Some(now),
            (false, since) => since,
        };
        self.report = report;
    }

    pub fn status(&self, now: Instant) -> WorkerStatus {
        WorkerStatus {
            pid: self.pid().as_raw() as u32,
            slot: self.slot,
            state: self.state(),
            generation: self.generation,
            uptime_secs: self.child.age(now).as_secs(),
            requests: self.report.requests,
            connections: self.report.connections,
            rss_bytes: self.report.rss_bytes,
        }
    }
}

pub struct Pool {
    workers: BTreeMap<Pid, Worker>,
    /// How many workers of the current generation the pool converges to.
    pub target: usize,
    pub generation: u64,
    pub backoff: Backoff,
}

impl Pool {
    /// An empty pool that converges to `target` workers.
    pub fn new(target: usize) -> Pool {
        Pool {
            workers: BTreeMap::new(),
            target,
            generation: 1,
            backoff: Backoff::default(),
        }
    }

    /// After a reload changed the bounds: the target stays where it was, within them.
    pub fn clamp_target(&mut self, min: usize, max: usize) {
        self.target = self.target.clamp(min, max);
    }

    /// The slot for the next worker: the lowest one no live worker holds.
    pub fn free_slot(&self) -> usize {
        (0..)
            .find(|slot| self.workers.values().all(|w| w.slot != *slot))
            .unwrap_or(0)
    }

    pub fn add(&mut self, worker: Worker) {
        self.workers.insert(worker.pid(), worker);
    }

    pub fn remove(&mut self, pid: Pid) -> Option<Worker> {
        self.workers.remove(&pid)
    }

    pub fn get_mut(&mut self, pid: Pid) -> Option<&mut Worker> {
        self.workers.get_mut(&pid)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Worker> {
        self.workers.values()
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Worker> {
        self.workers.values_mut()
    }

    /// Workers of the current generation that are not stopping: what `target` counts.
    pub fn active(&self) -> impl Iterator<Item = &Worker> {
        let generation = self.generation;
        self.workers
            .values()
            .filter(move |w| w.generation == generation && !w.child.is_stopping())
    }

    pub fn active_count(&self) -> usize {
        self.active().count()
    }

    pub fn ready_count(&self) -> usize {
        self.active().filter(|w| w.ready).count()
    }

    /// Serving workers of earlier generations, retired once the current one is ready.
    pub fn previous_generation(&self) -> Vec<Pid> {
        self.workers
            .values()
            .filter(|w| w.generation < self.generation && !w.child.is_stopping())
            .map(Worker::pid)
            .collect()
    }

    /// The worker to retire when the pool shrinks: the youngest, which has the fewest
    /// keep-alive clients attached and the least warm state.
    pub fn youngest_active(&self) -> Option<Pid> {
        self.active()
            .max_by_key(|w| w.child.spawned_at)
            .map(Worker::pid)
    }

    pub fn statuses(&self, now: Instant) -> Vec<WorkerStatus> {
        self.workers.values().map(|w| w.status(now)).collect()
    }
}

/// Paces respawns when workers die right after starting, so that a broken environment
/// (a bad chroot, a full disk) does not become a fork storm: the first quick exit is
/// replaced at once, then 1 s, 2 s, 4 s... up to 30 s between two respawns.
#[derive(Debug, Default)]
pub struct Backoff {
    quick_exits: u32,
    last_exit: String,
    last_quick_exit_at: Option<Instant>,
    next_spawn_at: Option<Instant>,
}

impl Backoff {
    /// Records an unexpected worker exit; returns the respawn delay when it is part of a
    /// crash loop.
    pub fn record_exit(&mut self, age: Duration, what: String, now: Instant) -> Option<Duration> {
        self.last_exit = what;
        if age >= QUICK_EXIT {
            return None;
        }
        self.quick_exits += 1;
        self.last_quick_exit_at = Some(now);
        let delay = self.delay();
        self.next_spawn_at = Some(
            self.next_spawn_at
                .map_or(now + delay, |at| at.max(now + delay)),
        );
        Some(delay)
    }

    /// Whether a worker may be forked now. In a crash loop, one fork per backoff step.
    pub fn may_spawn(&self, now: Instant) -> bool {
        self.next_spawn_at.is_none_or(|at| now >= at)
    }

    pub fn spawned(&mut self, now: Instant) {
        if self.in_crash_loop() {
            self.next_spawn_at = Some(now + self.delay());
        }
    }

    /// Ends the crash loop once a worker forked after the last quick exit has outlived
    /// `QUICK_EXIT`.
    pub fn settle(
        &mut self,
        pool_spawn_times: impl Iterator<Item = Instant>,
        now: Instant,
    ) -> bool {
        let Some(last) = self.last_quick_exit_at else {
            return false;
        };
        let survivor = pool_spawn_times
            .into_iter()
            .any(|spawned| spawned > last && now.duration_since(spawned) >= QUICK_EXIT);
        if survivor {
            *self = Backoff::default();
        }
        survivor
    }

    pub fn in_crash_loop(&self) -> bool {
        self.quick_exits > 0
    }

    pub fn quick_exits(&self) -> u32 {
        self.quick_exits
    }

    pub fn last_exit(&self) -> &str {
        &self.last_exit
    }

    pub fn next_spawn_in(&self, now: Instant) -> Duration {
        self.next_spawn_at
            .map_or(Duration::ZERO, |at| at.saturating_duration_since(now))
    }

    fn delay(&self) -> Duration {
        match self.quick_exits {
            0 | 1 => Duration::ZERO,
            n => Duration::from_secs(1u64 << (n - 2).min(5)).min(MAX_BACKOFF),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_exits_back_off_exponentially_up_to_the_cap() {
        let mut backoff = Backoff::default();
        let now = Instant::now();
        let delays: Vec<u64> = (0..9)
            .map(|_| {
                backoff
                    .record_exit(Duration::from_millis(100), "exit code 1".into(), now)
                    .unwrap()
                    .as_secs()
            })
            .collect();
        assert_eq!(delays, [0, 1, 2, 4, 8, 16, 30, 30, 30]);
        assert!(!backoff.may_spawn(now));
        assert!(backoff.may_spawn(now + Duration::from_secs(30)));
    }

    #[test]
    fn one_spawn_per_step_while_in_a_crash_loop() {
        let mut backoff = Backoff::default();
        let now = Instant::now();
        backoff.record_exit(Duration::ZERO, "signal 9".into(), now);
        backoff.record_exit(Duration::ZERO, "signal 9".into(), now);
        let later = now + Duration::from_secs(1);
        assert!(backoff.may_spawn(later));
        backoff.spawned(later);
        assert!(!backoff.may_spawn(later));
    }

    #[test]
    fn a_late_exit_is_no_crash_loop() {
        let mut backoff = Backoff::default();
        assert_eq!(
            backoff.record_exit(QUICK_EXIT, "signal 9".into(), Instant::now()),
            None
        );
        assert!(!backoff.in_crash_loop());
    }

    #[test]
    fn a_survivor_ends_the_crash_loop() {
        let mut backoff = Backoff::default();
        let start = Instant::now();
        backoff.record_exit(Duration::ZERO, "exit code 1".into(), start);
        let spawned = start + Duration::from_millis(1);
        assert!(!backoff.settle([spawned].into_iter(), spawned + QUICK_EXIT / 2));
        assert!(backoff.settle([spawned].into_iter(), spawned + QUICK_EXIT));
        assert!(!backoff.in_crash_loop());
    }
}
