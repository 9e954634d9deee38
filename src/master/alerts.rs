//! Alert delivery, the master's side: the journal of pending firings (`journal`) and the
//! action runner that delivers them (`src/action/`). Every firing is journaled, then
//! handed to the runner without ever waiting on it; the runner's outcomes settle it. A
//! runner that starts is handed everything the journal holds, so what a dead runner or a
//! stopped master left undelivered goes out with its first id. A runner that stops
//! reading (`Child::send`), or whose heartbeat stops (`workers.heartbeat_timeout_secs`),
//! is killed and replaced (`kept::Kept`): the master never buffers for it without bound,
//! and a frozen runner holds no alert longer than the timeout. A watcher deleted or
//! changed takes its pending firings with it (dropped, `watcher_deleted`); a new
//! `[smtp]` or `[actions]` retires the runner for one started with it.
//!
//! Owns the journal and the runner's slot; forks nothing itself (the master hands it a
//! fork in `keep_runner`), and counts what it settles in the `Totals` it is handed.

use std::os::fd::RawFd;
use std::time::Instant;

use log::{info, warn};
use nix::unistd::Pid;
use uuid::Uuid;

use super::journal::{self, Journal};
use super::kept::Kept;
use super::setup;
use crate::child::{Child, Role};
use crate::config::Config;
use crate::exposition::{label_value, write_family};
use crate::metrics::Totals;
use crate::protocol::frame::Json;
use crate::protocol::runner::{ActionKind, Delivery, DropReason, FromRunner, Outcome, ToRunner};
use crate::registry::Registry;
use crate::watch::Job;

/// The runner and what waits for it.
pub(super) struct Alerts {
    runner: Kept,
    journal: Journal,
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

impl Alerts {
    pub(super) fn new(journal: Journal) -> Alerts {
        Alerts {
            runner: Kept::new(Role::ActionRunner),
            journal,
        }
    }

    /// The journal a master taking over loads once the old one has handed over.
    pub(super) fn replace_journal(&mut self, journal: Journal) {
        self.journal = journal;
    }

    pub(super) fn runner(&self) -> Option<&Child> {
        self.runner.get()
    }

    pub(super) fn runner_mut(&mut self) -> Option<&mut Child> {
        self.runner.get_mut()
    }

    /// The journal's descriptor, which a forked child closes at once.
    pub(super) fn journal_fd(&self) -> Option<RawFd> {
        self.journal.raw_fd()
    }

    /// Its metric family: firings waiting for delivery, by target.
    pub(super) fn render(&self, out: &mut String) {
        write_family(
            out,
            "eventsd_action_pending",
            "gauge",
            "Firings waiting for delivery, by target.",
            self.journal
                .pending_by_target()
                .into_iter()
                .map(|(target, n)| (format!("target=\"{}\"", label_value(&target)), n)),
        );
    }

    /// Journals a firing, then hands it to the runner if one is up (a runner that
    /// starts gets the whole journal). A full journal drops its oldest firing, which
    /// is returned (for the alert list).
    pub(super) fn fire(&mut self, job: Job, totals: &mut Totals) -> Option<Job> {
        info!(
            "watcher `{}` fired: {}",
            job.firing.watcher, job.firing.text
        );
        let dropped = self.journal.add(&job);
        if let Some(oldest) = &dropped {
            warn!(
                "watcher `{}`: firing dropped, {} firings already wait for delivery",
                oldest.firing.watcher,
                self.journal.capacity()
            );
            count_drop(totals, oldest, DropReason::QueueFull);
        }
        self.hand_to_runner(&job);
        dropped
    }

    /// Settles the pending firings of watchers deleted or changed since they fired
    /// (watchers.md): dropped, counted, and forgotten by the runner, never delivered.
    /// After every change of the registry the master adopts. Returns them (for the
    /// alert list).
    pub(super) fn settle_orphans(&mut self, registry: &Registry, totals: &mut Totals) -> Vec<Job> {
        let orphans = self.journal.settle_orphans(registry);
        if orphans.is_empty() {
            return orphans;
        }
        let watchers: std::collections::BTreeSet<&str> =
            orphans.iter().map(|j| j.firing.watcher.as_str()).collect();
        warn!(
            "{} pending firings dropped: their watchers were deleted or changed ({})",
            orphans.len(),
            watchers.into_iter().collect::<Vec<_>>().join(", ")
        );
        for job in &orphans {
            count_drop(totals, job, DropReason::WatcherDeleted);
        }
        let ids = orphans.iter().map(|j| j.firing.id).collect();
        self.runner.send(&ToRunner::Forget { ids });
        orphans
    }

    pub(super) fn pending_by_target(&self) -> std::collections::BTreeMap<String, u64> {
        self.journal.pending_by_target()
    }

    pub(super) fn pending(&self) -> impl Iterator<Item = &Job> {
        self.journal.pending()
    }

    /// Pending firings settled before delivery (a silence came to match them): out of
    /// the journal, and forgotten by the runner (one in flight is neither reported nor
    /// retried).
    pub(super) fn forget(&mut self, ids: Vec<Uuid>) {
        self.journal.done(&ids);
        self.runner.send(&ToRunner::Forget { ids });
    }

    fn hand_to_runner(&mut self, job: &Job) {
        let Some(runner) = self.runner.get_mut().filter(|r| r.channel.is_some()) else {
            return;
        };
        runner.send(&ToRunner::Deliver(Json(Box::new(job.clone()))));
    }

    /// Whether a runner should be started now (`Kept::wants_one`).
    pub(super) fn wants_runner(&self) -> bool {
        self.runner.wants_one(Instant::now())
    }

    /// Keeps a runner up (paced after a quick death; none while held) and feeds it what
    /// waited. `fork` starts one.
    pub(super) fn keep_runner(&mut self, fork: impl FnOnce() -> anyhow::Result<Child>) {
        if !self.wants_runner() || self.runner.started(fork()).is_none() {
            return;
        }
        let pending: Vec<Job> = self.journal.pending().cloned().collect();
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

    /// A master taking over starts no runner until it has (`release_runner`): the old
    /// one's runner still delivers from the same journal.
    pub(super) fn hold_runner(&mut self) {
        self.runner.hold();
    }

    pub(super) fn release_runner(&mut self) {
        self.runner.release();
    }

    /// What the runner says; an outcome that settled firings is returned (for the
    /// alert list), and a retry is the alert list's alone (`route::runner_said`).
    pub(super) fn on_message(
        &mut self,
        message: FromRunner,
        totals: &mut Totals,
    ) -> Option<Outcome> {
        match message {
            FromRunner::Heartbeat { sent_at } => {
                if let Some(runner) = self.runner.get_mut() {
                    runner.heard(sent_at);
                }
            }
            FromRunner::AttemptFailed { action, error } => {
                totals.record_failed_attempt(action, error);
            }
            FromRunner::Retrying { .. } => {}
            FromRunner::Settled(outcome) => return self.record_outcome(outcome, totals),
        }
        None
    }

    /// Firings the runner settled; those the master settled first (their watcher went)
    /// are neither counted nor logged again.
    fn record_outcome(&mut self, outcome: Outcome, totals: &mut Totals) -> Option<Outcome> {
        let firings = self.journal.done(&outcome.ids);
        if firings == 0 {
            return None;
        }
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
        totals.record_outcome(outcome.action, outcome.result, firings);
        if outcome.result == Delivery::Delivered {
            totals.record_delivery_latency(outcome.latency_secs);
        }
        Some(outcome)
    }

    /// The runner exited; the next one is started by `keep_runner`.
    pub(super) fn on_runner_exit(&mut self, pid: Pid, how: &str, master_stopping: bool) {
        self.runner.exited(pid, how, master_stopping);
    }

    /// Graceful stop: the runner delivers what is due, within the graceful timeout.
    pub(super) fn stop_runner(&mut self, why: &str) {
        self.runner.stop(&ToRunner::Stop, why);
    }

    /// A reload changed what the runner was started with: it finishes the deliveries
    /// under way and exits; the next one, with the new configuration, gets the rest from
    /// the journal (a runner reads its configuration once, after the fork).
    pub(super) fn retire_runner(&mut self, why: &str) {
        self.runner.stop(&ToRunner::Retire, why);
    }

    /// SIGUSR1: the runner reopens its log files too.
    pub(super) fn reopen_logs(&mut self) {
        self.runner.send(&ToRunner::ReopenLogs);
    }
}
