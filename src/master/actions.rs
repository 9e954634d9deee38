//! From counts to firings to the action runner: the master adds the workers' counts to
//! the watchers' counters, journals every firing (`journal`), hands it to the runner
//! without ever waiting on it, reads the runner's outcomes, and keeps a runner up (paced
//! after a quick death). A runner that starts is handed everything the journal holds, so
//! what a dead runner or a stopped master left undelivered goes out with its first id.
//! A runner that stops reading (`Child::send`), or whose heartbeat stops
//! (`workers.heartbeat_timeout_secs`), is killed and replaced (`table::Kept`): the
//! master never buffers for it without bound, and a frozen runner holds no alert longer
//! than the timeout. A watcher deleted or changed takes its
//! pending firings with it (dropped, `watcher_deleted`); a new `[smtp]` or `[actions]`
//! retires the runner for one started with it.

use std::os::fd::AsRawFd;
use std::time::Instant;

use log::{info, warn};
use nix::unistd::Pid;

use super::journal::{self, Journal};
use super::table::Kept;
use super::{Master, setup};
use crate::child::{self, Child, Role};
use crate::config::Config;
use crate::metrics::Totals;
use crate::protocol::frame::Json;
use crate::protocol::runner::{ActionKind, Delivery, DropReason, FromRunner, Outcome, ToRunner};
use crate::registry::Registry;
use crate::watch::store::Second;
use crate::watch::{CountBatch, Job};

/// The runner and what waits for it.
pub(super) struct Actions {
    pub runner: Kept,
    pub journal: Journal,
}

impl Actions {
    pub(super) fn new(journal: Journal) -> Actions {
        Actions {
            runner: Kept::new(Role::ActionRunner),
            journal,
        }
    }
}

/// Opens the journal of pending firings, checked against the registry and rules that
/// hold now (security.md: the state dir is a client); what it refuses is counted as
/// dropped in `totals`.
pub(super) fn open_journal(
    config: &Config,
    registry: &Registry,
    totals: &mut Totals,
) -> anyhow::Result<Journal> {
    let destinations = config.destinations();
    let (journal, refused) = Journal::open(
        &setup::journal_path(config),
        config.watchers.action_queue,
        |job| journal::refusal(job, registry, &destinations),
    )?;
    for (job, reason, _) in refused {
        count_drop(totals, &job, reason);
    }
    Ok(journal)
}

/// A journaled firing the master gives up itself.
fn count_drop(totals: &mut Totals, job: &Job, reason: DropReason) {
    totals.record_outcome(ActionKind::of(&job.action), Delivery::Dropped(reason), 1);
}

impl Master {
    /// Adds counts (a piece of a worker's batch, `counting`); every key that crossed its
    /// threshold fires. In a cluster, the counts go to Redis, which decides the crossings
    /// (`cluster`); otherwise, or while Redis is unreachable, this master decides.
    pub(super) fn count_at(&mut self, batch: CountBatch, now: Second) {
        if let Some(batch) = self.share_counts(batch, now) {
            self.count_locally(batch, now);
        }
    }

    /// Counts in this master's store; in a cluster, what fires is marked degraded.
    pub(super) fn count_locally(&mut self, batch: CountBatch, now: Second) {
        let node = self.cluster_node();
        for mut job in self.watch.count(batch, now) {
            job.firing.degraded = node.is_some();
            job.firing.node.clone_from(&node);
            self.dispatch(job);
        }
    }

    /// Journals a firing, then hands it to the runner if one is up (a runner that
    /// starts gets the whole journal).
    pub(super) fn dispatch(&mut self, job: Job) {
        if self.held_by_silence(&job) {
            return;
        }
        info!(
            "watcher `{}` fired: {}",
            job.firing.watcher, job.firing.text
        );
        if let Some(oldest) = self.actions.journal.add(&job) {
            warn!(
                "watcher `{}`: firing dropped, {} firings already wait for delivery",
                oldest.firing.watcher, self.config.watchers.action_queue
            );
            count_drop(&mut self.totals, &oldest, DropReason::QueueFull);
            self.record_drops(&[oldest], DropReason::QueueFull);
        }
        self.hand_to_runner(&job);
    }

    /// Settles the pending firings of watchers deleted or changed since they fired
    /// (watchers.md): dropped, counted, and forgotten by the runner, never delivered.
    /// After every change of the registry the master adopts.
    pub(super) fn settle_orphaned_firings(&mut self) {
        let orphans = self.actions.journal.settle_orphans(&self.registry);
        if orphans.is_empty() {
            return;
        }
        let watchers: std::collections::BTreeSet<&str> =
            orphans.iter().map(|j| j.firing.watcher.as_str()).collect();
        warn!(
            "{} pending firings dropped: their watchers were deleted or changed ({})",
            orphans.len(),
            watchers.into_iter().collect::<Vec<_>>().join(", ")
        );
        for job in &orphans {
            count_drop(&mut self.totals, job, DropReason::WatcherDeleted);
        }
        self.record_drops(&orphans, DropReason::WatcherDeleted);
        let ids = orphans.iter().map(|j| j.firing.id).collect();
        self.actions.runner.send(&ToRunner::Forget { ids });
    }

    fn hand_to_runner(&mut self, job: &Job) {
        let Some(runner) = self
            .actions
            .runner
            .get_mut()
            .filter(|r| r.channel.is_some())
        else {
            return;
        };
        runner.send(&ToRunner::Deliver(Json(Box::new(job.clone()))));
    }

    /// Keeps a runner up (paced after a quick death) and feeds it what waited. A master
    /// taking over from an old one starts none until it has: the old one's runner
    /// still delivers from the same journal.
    pub(super) fn keep_runner(&mut self) {
        if !self.actions.runner.wants_one(Instant::now()) {
            return;
        }
        let forked = self.spawn_runner();
        if self.actions.runner.started(forked).is_none() {
            return;
        }
        let pending: Vec<Job> = self.actions.journal.pending().cloned().collect();
        if !pending.is_empty() {
            info!(
                "handing {} pending firings to the action runner",
                pending.len()
            );
        }
        for job in &pending {
            self.hand_to_runner(job);
        }
    }

    fn spawn_runner(&self) -> anyhow::Result<Child> {
        // The runner serves no HTTP: it closes the listening socket too.
        let mut master_fds = self.master_only_fds();
        master_fds.push(self.listener.as_raw_fd());
        let config = self.config.clone();
        child::fork_child(Role::ActionRunner, &master_fds, |channel| {
            crate::action::serve(&config, channel)
        })
    }

    pub(super) fn on_runner_message(&mut self, message: FromRunner) {
        match message {
            FromRunner::Heartbeat { sent_at } => {
                if let Some(runner) = self.actions.runner.get_mut() {
                    runner.heard(sent_at);
                }
            }
            FromRunner::AttemptFailed { action, error } => {
                self.totals.record_failed_attempt(action, error);
            }
            FromRunner::Retrying {
                ids,
                error,
                retry_in_ms,
            } => {
                let retry_in = std::time::Duration::from_millis(retry_in_ms);
                self.oncall.retrying(&ids, &error, retry_in);
            }
            FromRunner::Settled(outcome) => self.record_outcome(outcome),
        }
    }

    /// Firings the runner settled; those the master settled first (their watcher went)
    /// are neither counted nor logged again.
    fn record_outcome(&mut self, outcome: Outcome) {
        let firings = self.actions.journal.done(&outcome.ids);
        if firings == 0 {
            return;
        }
        self.oncall.settled(&outcome);
        let message = format!(
            "watcher `{}`: {} action {}: {}",
            outcome.watcher,
            outcome.action.name(),
            outcome.result.name(),
            outcome.detail
        );
        match outcome.result {
            Delivery::Delivered => info!("{message}"),
            Delivery::Failed | Delivery::Dropped(_) => warn!("{message}"),
        }
        self.totals
            .record_outcome(outcome.action, outcome.result, firings);
        if outcome.result == Delivery::Delivered {
            self.totals.record_delivery_latency(outcome.latency_secs);
        }
    }

    /// Called by the reaper for the runner; the next one is started by `keep_runner`.
    pub(super) fn on_runner_exit(&mut self, pid: Pid, how: &str) {
        let stopping = self.is_stopping();
        self.actions.runner.exited(pid, how, stopping);
    }

    /// Graceful stop: the runner delivers what is due, within the graceful timeout.
    pub(super) fn stop_runner(&mut self, why: &str) {
        self.actions.runner.stop(&ToRunner::Stop, why);
    }

    /// A reload changed what the runner was started with: it finishes the deliveries
    /// under way and exits; the next one, with the new configuration, gets the rest from
    /// the journal (a runner reads its configuration once, after the fork).
    pub(super) fn retire_runner(&mut self, why: &str) {
        self.actions.runner.stop(&ToRunner::Retire, why);
    }
}
