//! Counters snapshotted while they change (watchers.md: every `watchers.snapshot_secs`),
//! so that a crash of the master (SIGKILL, OOM) loses at most that much counting, as
//! Redis' `appendfsync everysec` does.
//!
//! Off the master's loop: a forked child writes `counters.json` from its copy-on-write
//! image of the counters and exits (Redis' BGSAVE), so the master never serializes a
//! large store between two polls. One snapshot at a time; a failed one is tried again at
//! the next tick.

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use log::{debug, warn};
use nix::poll::PollFlags;
use nix::unistd::Pid;

use super::{Master, setup};
use crate::child::{self, Child, Role};

/// The snapshot child and when the last one was started.
#[derive(Default)]
pub(super) struct Snapshots {
    pub child: Option<Child>,
    last_started: Option<Instant>,
}

impl Master {
    /// On the tick: a snapshot when the counters changed and the last one is old enough.
    pub(super) fn snapshot_counters_if_due(&mut self) {
        let every = Duration::from_secs(self.config.watchers.snapshot_secs);
        let due = self
            .snapshots
            .last_started
            .is_none_or(|at| at.elapsed() >= every);
        // Stopping, the final save is `clean_up`'s, once every child is gone. A master
        // taking over from an old one has nothing of its own to save yet.
        if self.is_stopping()
            || self.succession.is_some()
            || !due
            || self.snapshots.child.is_some()
            || !self.watch.take_changed()
        {
            return;
        }
        let path = setup::counters_path(&self.config);
        let mut master_fds = self.master_only_fds();
        master_fds.push(self.listener.as_raw_fd());
        let forked = child::fork_child(Role::Snapshot, &master_fds, |_channel| {
            self.watch.save(&path)
        });
        match forked {
            Ok(snapshot) => {
                self.snapshots.child = Some(snapshot);
                self.snapshots.last_started = Some(Instant::now());
            }
            Err(e) => {
                warn!("cannot start a counters snapshot: {e:#}");
                self.watch.mark_changed();
            }
        }
    }

    /// Its channel only ever closes: forget it, the reaper hears the rest.
    pub(super) fn read_snapshot(&mut self, pid: Pid, events: PollFlags) {
        if let Some(snapshot) = self.snapshots.child.as_mut().filter(|s| s.pid == pid) {
            snapshot.exchange::<()>(events);
        }
    }

    /// Called by the reaper; tells whether `pid` was the snapshot. A failed snapshot
    /// leaves the counters marked changed, for the next tick.
    pub(super) fn on_snapshot_exit(&mut self, pid: Pid, how: &str, succeeded: bool) -> bool {
        if self.snapshots.child.take_if(|s| s.pid == pid).is_none() {
            return false;
        }
        if succeeded {
            debug!("counters snapshot written");
        } else {
            warn!("counters snapshot {pid} {how}; trying again at the next tick");
            self.watch.mark_changed();
        }
        true
    }
}
