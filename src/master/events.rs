//! The master's one wait, and what wakes it: signals (read into flags, acted on later by
//! the loop), control clients (answered at once with the status), and the children's
//! channels (every message read and handled before the loop goes on, so that the tick
//! judges heartbeats that arrived, not heartbeats still queued). A worker's counts come
//! over a channel of their own, read into the backlog (`counting`) only while it has
//! room for them: that is the backpressure, and it never holds up a heartbeat.
//!
//! Never blocks but in `poll` itself, and not even there while counts wait.

use std::os::fd::AsFd;
use std::time::Instant;

use anyhow::Context;
use log::{error, info};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::unistd::Pid;

use super::Master;
use super::pool::Asker;
use super::signals::Requested;
use crate::child::Role;
use crate::clock::Stamp;
use crate::protocol::runner::FromRunner;
use crate::protocol::worker::WorkerMessage;
use crate::watch::CountBatch;

/// The most of a worker's counts read in one turn of the loop. The backlog's room is
/// judged before the read, so this is how far one read may overshoot it: at about a byte
/// an update at best (a batch names its set's watchers once, then its keys), no more
/// than the backlog holds, and a few reads' worth of decoding. Unbounded, a busy
/// worker's channel was read for as long as it kept writing, megabytes of batches taken
/// in and decoded in one turn while questions waited.
const COUNTS_READ_BYTES: usize = 64 * 1024;

/// What a polled descriptor belongs to.
#[derive(Clone, Copy)]
enum Source {
    Signals,
    Control,
    Child(Pid, Role),
    /// A worker's counts channel.
    Counts(Pid),
    /// The old master, for a master started by an upgrade.
    Predecessor,
}

impl Master {
    /// One poll over the signalfd, the control socket and every child's channel; handles
    /// what the children and control clients sent, and returns what the signals ask for.
    pub(super) fn wait(&mut self) -> anyhow::Result<Requested> {
        let ready = self.poll_sources()?;
        let mut requested = Requested::default();
        for (source, events) in ready {
            match source {
                Source::Signals => self.ground.signals.read_into(&mut requested)?,
                Source::Control => self.serve_control_clients(),
                Source::Child(pid, role) => self.read_child(pid, role, events),
                Source::Counts(pid) => self.read_counts_up_to(pid, COUNTS_READ_BYTES),
                Source::Predecessor => self.read_predecessor(events)?,
            }
        }
        Ok(requested)
    }

    /// What a child sent, handed to its role's handler; also called by the reaper for a
    /// child's last words, written just before it exited.
    pub(super) fn read_child(&mut self, pid: Pid, role: Role, events: PollFlags) {
        match role {
            Role::Worker => self.read_worker(pid, events),
            Role::ActionRunner => self.read_runner(pid, events),
            // A snapshot says nothing: its exit code is its report.
            Role::Snapshot => self.counting.read_snapshot(pid, events),
            Role::Successor => self.read_successor(events),
            Role::ClusterLink => self.read_cluster_link(events),
        }
    }

    fn poll_sources(&self) -> anyhow::Result<Vec<(Source, PollFlags)>> {
        let mut sources = vec![Source::Signals];
        let mut fds = vec![PollFd::new(self.ground.signals.as_fd(), PollFlags::POLLIN)];
        if let Some(control) = &self.ground.control {
            sources.push(Source::Control);
            fds.push(PollFd::new(control.as_fd(), PollFlags::POLLIN));
        }
        for child in self.children() {
            if let Some((fd, interest)) = child.poll_interest() {
                sources.push(Source::Child(child.pid, child.role));
                fds.push(PollFd::new(fd, interest));
            }
        }
        // Backpressure: a worker's counts are read while the backlog has room for them.
        for worker in self
            .pool
            .iter()
            .filter(|w| self.counting.backlog.may_read(w.pid()))
        {
            if let Some(counts) = &worker.counts {
                sources.push(Source::Counts(worker.pid()));
                fds.push(PollFd::new(counts.as_fd(), PollFlags::POLLIN));
            }
        }
        if let Some((fd, interest)) = self.succession.poll_interest() {
            sources.push(Source::Predecessor);
            fds.push(PollFd::new(fd, interest));
        }
        // Counts or keys due waiting: look, do not sleep.
        let timeout = if self.counting.has_work() {
            PollTimeout::ZERO
        } else {
            PollTimeout::NONE
        };
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(e).context("poll failed in the master loop"),
        }
        let events = fds
            .iter()
            .map(|fd| fd.revents().unwrap_or(PollFlags::empty()));
        Ok(sources
            .into_iter()
            .zip(events)
            .filter(|(_, e)| !e.is_empty())
            .collect())
    }

    fn serve_control_clients(&mut self) {
        let status = self.status();
        if let Some(control) = &self.ground.control {
            control.serve_pending(|| status.clone());
        }
    }

    fn read_worker(&mut self, pid: Pid, events: PollFlags) {
        let Some(worker) = self.pool.get_mut(pid) else {
            return;
        };
        for message in worker.child.exchange::<WorkerMessage>(events) {
            self.handle_worker_message(pid, message);
        }
    }

    /// Every batch the worker's counts channel holds, into the backlog: its last words,
    /// written before it exited, which a full backlog kept unread.
    pub(super) fn read_counts(&mut self, pid: Pid) {
        self.read_counts_up_to(pid, usize::MAX);
    }

    /// The batches of up to `bytes` of the worker's counts channel, into the backlog;
    /// the rest waits in the socket. A channel that breaks gets the worker killed, as
    /// its other channel would.
    fn read_counts_up_to(&mut self, pid: Pid, bytes: usize) {
        let Some(worker) = self.pool.get_mut(pid) else {
            return;
        };
        let Some(channel) = worker.counts.as_mut() else {
            return;
        };
        let received = match channel.receive_at_most::<CountBatch>(bytes) {
            Ok(received) => received,
            Err(e) => {
                worker.counts = None;
                worker
                    .child
                    .kill("its counts channel broke", &e.to_string());
                return;
            }
        };
        if received.closed {
            worker.counts = None;
        }
        for batch in received.messages {
            self.count(pid, batch);
        }
    }

    fn read_runner(&mut self, pid: Pid, events: PollFlags) {
        let Some(runner) = self.actions.runner_mut().filter(|r| r.pid == pid) else {
            return;
        };
        for message in runner.exchange::<FromRunner>(events) {
            self.runner_said(message);
        }
    }

    fn handle_worker_message(&mut self, pid: Pid, message: WorkerMessage) {
        let now = Instant::now();
        let Some(worker) = self.pool.get_mut(pid) else {
            return;
        };
        match message {
            WorkerMessage::Ready => {
                worker.ready = true;
                worker.child.heard(Stamp::now());
                worker.idle_since = Some(now);
                info!("worker {pid} ready (generation {})", worker.generation);
            }
            WorkerMessage::Heartbeat(mut report) => {
                self.board
                    .totals_mut()
                    .add(std::mem::take(&mut report.deltas));
                worker.child.heard(report.sent_at);
                worker.record_heartbeat(report, now);
            }
            WorkerMessage::RegistryAck { version } => worker.registry_version = version,
            WorkerMessage::Ask {
                id,
                deadline,
                question,
            } => {
                let asker = Asker {
                    worker: pid,
                    id,
                    deadline,
                };
                self.answer(asker, question);
            }
            WorkerMessage::Retiring { reason } => {
                info!("worker {pid} retiring: {reason}");
                worker.child.stopping_since.get_or_insert(now);
            }
            WorkerMessage::StartupFailed { reason } => {
                error!("worker {pid} failed to start: {reason}");
                worker.startup_failure = Some(reason);
            }
        }
    }
}
