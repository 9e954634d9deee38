//! The master's process table: every live child, whatever its role, found by pid, and
//! the one keep-alive of the roles the master keeps one of (`Respawn::KeepOne`: the
//! action runner, the cluster link): `Kept`, one slot each, with its one exit path
//! (logged, and paced by `RESPAWN_PAUSE` after a quick death).
//!
//! The rest of a child's life is the same for every role and lives in `child.rs`: the
//! heartbeat rule (`Child::silence_past`, judged for every role that beats by
//! `timeouts.rs`), the "stopped reading" rule (`Child::send`), stopping and killing.
//! Never forks by itself: a slot's owner forks (it knows what the child needs) and hands
//! the outcome to `Kept::started`.

use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use log::{error, info, warn};
use nix::unistd::Pid;
use serde::Serialize;

use super::Master;
use super::control::ControlSocket;
use super::upgrade::Succession;
use crate::child::{Child, Respawn, Role};
use crate::pidfile::Pidfile;

/// A kept child that dies sooner than five times this after its start waits this long
/// to be replaced: a child that cannot start is not forked in a tight loop.
const RESPAWN_PAUSE: Duration = Duration::from_secs(1);

/// The slot of a role the master keeps one child of.
pub(super) struct Kept {
    role: Role,
    child: Option<Child>,
    /// After a quick death or a failed fork: not replaced before then.
    respawn_at: Option<Instant>,
}

impl Kept {
    pub(super) fn new(role: Role) -> Kept {
        debug_assert_eq!(role.respawn(), Respawn::KeepOne);
        Kept {
            role,
            child: None,
            respawn_at: None,
        }
    }

    pub(super) fn get(&self) -> Option<&Child> {
        self.child.as_ref()
    }

    pub(super) fn get_mut(&mut self) -> Option<&mut Child> {
        self.child.as_mut()
    }

    /// Whether a child should be started now: none is up, and no pause holds it back.
    pub(super) fn wants_one(&self, now: Instant) -> bool {
        self.child.is_none() && self.respawn_at.is_none_or(|at| now >= at)
    }

    /// What a fork gave: the child, kept; or an error, logged, and a pause before the
    /// next attempt.
    pub(super) fn started(&mut self, forked: anyhow::Result<Child>) -> Option<&mut Child> {
        match forked {
            Ok(child) => Some(self.child.insert(child)),
            Err(e) => {
                error!("cannot start the {}: {e:#}", self.role.describe());
                self.respawn_at = Some(Instant::now() + RESPAWN_PAUSE);
                None
            }
        }
    }

    /// The exit path: the record of `pid`, if it was this slot's child, taken out. An
    /// exit nobody asked for is logged as such, and paced when the child died young;
    /// the next one is started by the owner's keep-alive.
    pub(super) fn exited(&mut self, pid: Pid, how: &str, master_stopping: bool) -> Option<Child> {
        let child = self.child.take_if(|c| c.pid == pid)?;
        if child.is_stopping() || master_stopping {
            info!("{child} {how}");
        } else {
            warn!("{child} {how}; starting another");
            let now = Instant::now();
            if child.age(now) < RESPAWN_PAUSE * 5 {
                self.respawn_at = Some(now + RESPAWN_PAUSE);
            }
        }
        Some(child)
    }

    /// Queues a message for the child, if one is up (`Child::send`).
    pub(super) fn send(&mut self, message: &impl Serialize) {
        if let Some(child) = self.child.as_mut() {
            child.send(message);
        }
    }

    /// Asks the child to stop with `message` (`Child::stop`).
    pub(super) fn stop(&mut self, message: &impl Serialize, why: &str) {
        if let Some(child) = self.child.as_mut() {
            child.stop(message, why);
        }
    }
}

impl Master {
    /// The process table: every live child, workers, the action runner, a snapshot, a
    /// new master and the cluster link alike.
    pub(super) fn children(&self) -> impl Iterator<Item = &Child> {
        let workers = self.pool.iter().map(|w| &w.child);
        workers
            .chain(self.actions.runner.get())
            .chain(self.snapshots.child.as_ref())
            .chain(self.upgrade.as_ref().map(|u| &u.successor))
            .chain(self.cluster.as_ref().and_then(|c| c.link.get()))
    }

    pub(super) fn children_mut(&mut self) -> impl Iterator<Item = &mut Child> {
        let workers = self.pool.iter_mut().map(|w| &mut w.child);
        workers
            .chain(self.actions.runner.get_mut())
            .chain(self.snapshots.child.as_mut())
            .chain(self.upgrade.as_mut().map(|u| &mut u.successor))
            .chain(self.cluster.as_mut().and_then(|c| c.link.get_mut()))
    }

    pub(super) fn child_mut(&mut self, pid: Pid) -> Option<&mut Child> {
        self.children_mut().find(|child| child.pid == pid)
    }

    pub(super) fn role_of(&self, pid: Pid) -> Option<Role> {
        self.children()
            .find(|child| child.pid == pid)
            .map(|c| c.role)
    }

    /// Descriptors a new child must close right after the fork: the pidfile (or it would
    /// hold the lock after the master died), the signalfd, the control socket, the start
    /// pipe, the journal of pending firings, every other child's channels, and what a
    /// successor inherited.
    pub(super) fn master_only_fds(&self) -> Vec<RawFd> {
        let mut fds = vec![self.signals.raw_fd()];
        fds.extend(self.actions.journal.raw_fd());
        fds.extend(self.succession.iter().flat_map(Succession::raw_fds));
        fds.extend(self.pidfile.as_ref().map(Pidfile::raw_fd));
        fds.extend(self.control.as_ref().map(ControlSocket::raw_fd));
        fds.extend(self.announcer.raw_fd());
        fds.extend(self.children().filter_map(Child::channel_fd));
        fds.extend(self.pool.iter().filter_map(super::pool::Worker::counts_fd));
        fds
    }
}
