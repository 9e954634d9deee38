//! The master's side of the action runner: fork it, hand it firings without ever
//! waiting on it, read its outcomes, and restart it when it dies.
//!
//! While no runner is up, firings wait in a queue bounded like the runner's own
//! (`watchers.action_queue`): the oldest is dropped and counted when it is full.

use std::collections::VecDeque;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use anyhow::Context;
use log::{debug, error, info, warn};
use nix::poll::PollFlags;
use nix::sys::signal::{Signal, kill};
use nix::unistd::{ForkResult, Pid, fork};

use super::Master;
use crate::action::{self, Delivery, Outcome, ToRunner};
use crate::ipc::Channel;
use crate::watch::Job;

/// A runner that dies sooner than this after its start waits this long to be replaced.
const RESPAWN_PAUSE: Duration = Duration::from_secs(1);

pub(super) struct Runner {
    pub pid: Pid,
    pub channel: Option<Channel>,
    pub spawned_at: Instant,
    pub stopping_since: Option<Instant>,
}

/// The runner and what waits for it.
#[derive(Default)]
pub(super) struct Actions {
    pub runner: Option<Runner>,
    respawn_at: Option<Instant>,
    undelivered: VecDeque<Job>,
}

impl Master {
    /// Hands a firing to the runner, or queues it until there is one.
    pub(super) fn dispatch(&mut self, job: Job) {
        info!(
            "watcher `{}` fired: {}",
            job.firing.watcher, job.firing.text
        );
        let capacity = self.config.watchers.action_queue;
        let actions = &mut self.actions;
        if let Some(channel) = actions.runner.as_mut().and_then(|r| r.channel.as_mut()) {
            match serde_json::to_string(&job) {
                Ok(job) => {
                    if let Err(e) = channel.send(&ToRunner::Deliver { job }) {
                        warn!("cannot hand a firing to the action runner: {e}");
                    }
                }
                Err(e) => error!("cannot serialize a firing: {e}"),
            }
            return;
        }
        if actions.undelivered.len() >= capacity {
            if let Some(old) = actions.undelivered.pop_front() {
                let action = crate::action::deliver::kind(&old.action);
                warn!(
                    "watcher `{}`: firing dropped, no action runner and the queue is full",
                    old.firing.watcher
                );
                self.totals.record_outcome(action, Delivery::Dropped.name());
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
        let (master_end, runner_end) =
            UnixStream::pair().context("cannot create the runner's socketpair")?;
        let mut master_fds = self.master_only_fds();
        master_fds.push(self.listener.as_raw_fd());
        master_fds.push(master_end.as_raw_fd());
        // SAFETY: as for workers: the master is single-threaded and `action::run` never
        // returns into the master's code.
        match unsafe { fork() }.context("fork failed")? {
            ForkResult::Child => action::run(action::Setup {
                channel: runner_end,
                master_fds,
                config: self.config.clone(),
            }),
            ForkResult::Parent { child } => {
                let channel =
                    Channel::new(master_end).context("cannot set up the runner's channel")?;
                debug!("forked the action runner {child}");
                self.actions.runner = Some(Runner {
                    pid: child,
                    channel: Some(channel),
                    spawned_at: Instant::now(),
                    stopping_since: None,
                });
                Ok(())
            }
        }
    }

    pub(super) fn handle_runner_channel(&mut self, events: PollFlags) {
        let Some(runner) = self.actions.runner.as_mut() else {
            return;
        };
        let Some(channel) = runner.channel.as_mut() else {
            return;
        };
        let received = channel.exchange::<Outcome>(events.contains(PollFlags::POLLOUT));
        match received {
            Ok(received) => {
                if received.closed {
                    runner.channel = None;
                }
                for outcome in received.messages {
                    self.record_outcome(outcome);
                }
            }
            Err(e) => {
                warn!("the action runner's channel broke ({e}); killing it");
                runner.channel = None;
                let _ = kill(runner.pid, Signal::SIGKILL);
            }
        }
    }

    fn record_outcome(&mut self, outcome: Outcome) {
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
        self.totals
            .record_outcome(&outcome.action, outcome.result.name());
    }

    /// Called by the reaper; tells whether `pid` was the runner.
    pub(super) fn on_runner_exit(&mut self, pid: Pid, how: &str) -> bool {
        let Some(runner) = self.actions.runner.take_if(|r| r.pid == pid) else {
            return false;
        };
        if runner.stopping_since.is_some() || self.is_stopping() {
            info!("action runner {pid} {how}");
        } else {
            warn!("action runner {pid} {how}; starting another");
            if runner.spawned_at.elapsed() < RESPAWN_PAUSE * 5 {
                self.actions.respawn_at = Some(Instant::now() + RESPAWN_PAUSE);
            }
        }
        true
    }

    /// Graceful stop: the runner finishes its queue, within the graceful timeout.
    pub(super) fn stop_runner(&mut self) {
        if let Some(runner) = self.actions.runner.as_mut() {
            runner.stopping_since.get_or_insert_with(Instant::now);
            let told = runner.channel.as_mut().map(|c| c.send(&ToRunner::Stop));
            if !matches!(told, Some(Ok(()))) {
                let _ = kill(runner.pid, Signal::SIGTERM);
            }
        }
    }

    /// The tick: a runner still draining after the graceful timeout is killed.
    pub(super) fn enforce_runner_deadline(&mut self) {
        let timeout = self.config.workers.graceful_timeout();
        if let Some(runner) = &self.actions.runner {
            if runner
                .stopping_since
                .is_some_and(|since| since.elapsed() > timeout)
            {
                warn!(
                    "killing the action runner {}: still delivering after {}s",
                    runner.pid,
                    timeout.as_secs()
                );
                let _ = kill(runner.pid, Signal::SIGKILL);
            }
        }
    }

    pub(super) fn kill_runner(&mut self) {
        if let Some(runner) = &self.actions.runner {
            let _ = kill(runner.pid, Signal::SIGKILL);
        }
    }

    pub(super) fn runner_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.actions
            .runner
            .as_ref()?
            .channel
            .as_ref()
            .map(|c| c.as_fd())
    }

    pub(super) fn runner_wants_write(&self) -> bool {
        let channel = self
            .actions
            .runner
            .as_ref()
            .and_then(|r| r.channel.as_ref());
        channel.is_some_and(Channel::wants_write)
    }
}
