//! From counts to firings to the action runner: the master adds each worker's batch to
//! the watchers' counters, hands every firing to the runner without ever waiting on it,
//! reads the runner's outcomes, and keeps a runner up (paced after a quick death).
//!
//! While no runner is up, firings wait in a queue bounded like the runner's own
//! (`watchers.action_queue`): the oldest is dropped and counted when it is full.

use std::collections::VecDeque;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use log::{error, info, warn};
use nix::unistd::Pid;

use super::Master;
use crate::action::{self, Delivery, Outcome, ToRunner};
use crate::child::{self, Child, Role};
use crate::watch::{CountBatch, Job};

/// A runner that dies sooner than this after its start waits this long to be replaced.
const RESPAWN_PAUSE: Duration = Duration::from_secs(1);

/// The runner and what waits for it.
#[derive(Default)]
pub(super) struct Actions {
    pub runner: Option<Child>,
    respawn_at: Option<Instant>,
    undelivered: VecDeque<Job>,
}

impl Master {
    /// Adds a worker's counts; every key that crossed its threshold fires.
    pub(super) fn count(&mut self, batch: CountBatch) {
        for job in self.watch.count(batch, crate::watch::now()) {
            self.dispatch(job);
        }
    }

    /// Hands a firing to the runner, or queues it until there is one.
    fn dispatch(&mut self, job: Job) {
        info!(
            "watcher `{}` fired: {}",
            job.firing.watcher, job.firing.text
        );
        if let Some(runner) = self.actions.runner.as_mut().filter(|r| r.channel.is_some()) {
            match serde_json::to_string(&job) {
                Ok(job) => runner.send(&ToRunner::Deliver { job }),
                Err(e) => error!("cannot serialize a firing: {e}"),
            }
            return;
        }
        let capacity = self.config.watchers.action_queue;
        let undelivered = &mut self.actions.undelivered;
        if undelivered.len() >= capacity {
            if let Some(old) = undelivered.pop_front() {
                warn!(
                    "watcher `{}`: firing dropped, no action runner and the queue is full",
                    old.firing.watcher
                );
                let action = action::deliver::kind(&old.action);
                self.totals
                    .record_outcome(action, Delivery::Dropped.name(), 1);
                self.totals.record_drop("queue_full", 1);
            }
        }
        self.actions.undelivered.push_back(job);
    }

    /// Keeps a runner up (paced after a quick death) and feeds it what waited.
    pub(super) fn keep_runner(&mut self) {
        let now = Instant::now();
        if self.actions.runner.is_some() || self.actions.respawn_at.is_some_and(|at| now < at) {
            return;
        }
        if let Err(e) = self.spawn_runner() {
            error!("cannot start the action runner: {e:#}");
            self.actions.respawn_at = Some(now + RESPAWN_PAUSE);
            return;
        }
        for job in std::mem::take(&mut self.actions.undelivered) {
            self.dispatch(job);
        }
    }

    fn spawn_runner(&mut self) -> anyhow::Result<()> {
        // The runner serves no HTTP: it closes the listening socket too.
        let mut master_fds = self.master_only_fds();
        master_fds.push(self.listener.as_raw_fd());
        let config = self.config.clone();
        let runner = child::fork_child(Role::ActionRunner, &master_fds, |channel| {
            action::serve(&config, channel)
        })?;
        self.actions.runner = Some(runner);
        Ok(())
    }

    pub(super) fn record_outcome(&mut self, outcome: Outcome) {
        let message = format!(
            "watcher `{}`: {} action {}: {}",
            outcome.watcher,
            outcome.action,
            outcome.result.name(),
            outcome.detail
        );
        match outcome.result {
            Delivery::Delivered => info!("{message}"),
            Delivery::Failed | Delivery::Dropped => warn!("{message}"),
        }
        let firings = outcome.ids.len() as u64;
        self.totals
            .record_outcome(&outcome.action, outcome.result.name(), firings);
        match outcome.result {
            Delivery::Dropped => self.totals.record_drop(&outcome.reason, firings),
            Delivery::Delivered => self.totals.record_delivery_latency(outcome.latency_secs),
            Delivery::Failed => {}
        }
    }

    /// Called by the reaper; tells whether `pid` was the runner.
    pub(super) fn on_runner_exit(&mut self, pid: Pid, how: &str) -> bool {
        let Some(runner) = self.actions.runner.take_if(|r| r.pid == pid) else {
            return false;
        };
        if runner.is_stopping() || self.is_stopping() {
            info!("action runner {pid} {how}");
        } else {
            warn!("action runner {pid} {how}; starting another");
            if runner.age(Instant::now()) < RESPAWN_PAUSE * 5 {
                self.actions.respawn_at = Some(Instant::now() + RESPAWN_PAUSE);
            }
        }
        true
    }

    /// Graceful stop: the runner finishes its queue, within the graceful timeout.
    pub(super) fn stop_runner(&mut self) {
        if let Some(runner) = self.actions.runner.as_mut() {
            runner.stop(&ToRunner::Stop, "eventsd is stopping");
        }
    }
}
