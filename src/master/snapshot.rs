//! Counters snapshotted while they change (watchers.md: every `watchers.snapshot_secs`),
//! so that a crash of the master (SIGKILL, OOM) loses at most that much counting, as
//! Redis' `appendfsync everysec` does.
//!
//! Off the master's loop: a forked child writes `counters.json` from its copy-on-write
//! image of the counters and exits (Redis' BGSAVE), so the master never serializes a
//! large store between two polls. One snapshot at a time, under a deadline
//! (`watchers.snapshot_timeout_secs`): a hung one is killed; a failed one is tried again
//! at the next tick. The metrics tell when the last one succeeded and whether the last
//! one did (Redis' `rdb_last_save_time` and `rdb_last_bgsave_status`).

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant, SystemTime};

use log::{debug, warn};
use nix::poll::PollFlags;
use nix::unistd::Pid;

use super::{Master, setup};
use crate::child::{self, Child, Role};
use crate::exposition::write_family;

/// The snapshot child, when the last one was started, and how the last ones went.
pub(super) struct Snapshots {
    pub child: Option<Child>,
    last_started: Option<Instant>,
    /// When the counters on disk last matched the master's: the last snapshot written,
    /// or the start, when they were read from disk.
    last_saved_at: SystemTime,
    /// Whether the last snapshot that ended was written.
    last_ok: bool,
}

impl Default for Snapshots {
    fn default() -> Snapshots {
        Snapshots {
            child: None,
            last_started: None,
            last_saved_at: SystemTime::now(),
            last_ok: true,
        }
    }
}

impl Snapshots {
    pub(super) fn render(&self, out: &mut String) {
        let saved_at = self
            .last_saved_at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        write_family(
            out,
            "eventsd_counters_last_save_timestamp_seconds",
            "gauge",
            "When the last counters snapshot was written (or the counters read, at start).",
            [(String::new(), saved_at)],
        );
        write_family(
            out,
            "eventsd_counters_last_save_ok",
            "gauge",
            "1 if the last counters snapshot was written, 0 if it failed or was killed.",
            [(String::new(), u8::from(self.last_ok))],
        );
    }
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

    /// On the tick: a snapshot past `watchers.snapshot_timeout_secs` is hung (a stopped
    /// process, a disk that does not answer): killed, and the reaper marks the counters
    /// changed for the next one.
    pub(super) fn enforce_snapshot_deadline(&mut self) {
        let timeout = Duration::from_secs(self.config.watchers.snapshot_timeout_secs);
        let Some(snapshot) = self.snapshots.child.as_mut() else {
            return;
        };
        let age = snapshot.age(Instant::now());
        if age > timeout {
            let details = format!(
                "writing for {}s, watchers.snapshot_timeout_secs is {}",
                age.as_secs(),
                timeout.as_secs()
            );
            snapshot.kill("it hung", &details);
        }
    }

    /// Called by the reaper for the snapshot. A failed snapshot leaves the counters
    /// marked changed, for the next tick.
    pub(super) fn on_snapshot_exit(&mut self, pid: Pid, how: &str, succeeded: bool) {
        if self.snapshots.child.take_if(|s| s.pid == pid).is_none() {
            return;
        }
        self.snapshots.last_ok = succeeded;
        if succeeded {
            self.snapshots.last_saved_at = SystemTime::now();
            debug!("counters snapshot written");
        } else {
            warn!("counters snapshot {pid} {how}; trying again at the next tick");
            self.watch.mark_changed();
        }
    }
}
