//! Reaping: every exited child is collected (`waitpid(-1, WNOHANG)` until none is left),
//! what it wrote last read, its record removed, and its exit judged: expected (it was
//! stopping), a start-up failure (fatal while the master starts), or a crash that the
//! pool's backoff paces.

use std::time::Instant;

use anyhow::{Context, anyhow};
use log::{debug, error, info, warn};
use nix::errno::Errno;
use nix::poll::PollFlags;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::{Master, Phase};
use crate::child::Role;

impl Master {
    pub(super) fn reap(&mut self) -> anyhow::Result<()> {
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return Ok(()),
                Ok(status) => {
                    if let Some(pid) = status.pid() {
                        self.on_child_exit(pid, status, true)?;
                    }
                }
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e).context("waitpid failed"),
            }
        }
    }

    /// After `halt` on an error: every child got SIGKILL, so this blocking wait is short.
    /// Each exit goes the one exit path, without reading what the child wrote last (the
    /// master is failing: it handles no more questions); a worker that failed to start
    /// no longer matters.
    pub(super) fn wait_for_every_child(&mut self) {
        while self.children().next().is_some() {
            match waitpid(None, None) {
                Ok(status) => {
                    if let Some(pid) = status.pid() {
                        let _ = self.on_child_exit(pid, status, false);
                    }
                }
                Err(Errno::EINTR) => continue,
                Err(_) => break,
            }
        }
    }

    /// The one exit path, whatever the role: what the child wrote last is read (when
    /// `last_words`), then its owner takes its record out and judges the exit.
    fn on_child_exit(
        &mut self,
        pid: Pid,
        status: WaitStatus,
        last_words: bool,
    ) -> anyhow::Result<()> {
        let how = describe_exit(status);
        let Some(role) = self.role_of(pid) else {
            debug!("reaped child {pid} ({how})");
            return Ok(());
        };
        // A child that wrote and exited after the last poll (a worker's final batch,
        // the cluster link's last crossings): what it wrote is read before its record
        // goes.
        if last_words && role != Role::Successor {
            self.read_child(pid, role, PollFlags::POLLIN);
        }
        if last_words && role == Role::Worker {
            // The counts it wrote before it exited, which a full backlog kept unread.
            self.read_counts(pid);
        }
        match role {
            Role::Worker => self.on_worker_exit(pid, &how)?,
            Role::ActionRunner => self.on_runner_exit(pid, &how),
            Role::Snapshot => {
                self.on_snapshot_exit(pid, &how, matches!(status, WaitStatus::Exited(_, 0)))
            }
            Role::Successor => self.on_successor_exit(pid, &how),
            Role::ClusterLink => self.on_cluster_link_exit(pid, &how),
        }
        Ok(())
    }

    /// A worker's exit: expected (it was stopping), fatal (it failed while the master
    /// starts), or a crash, which the pool's backoff paces.
    fn on_worker_exit(&mut self, pid: Pid, how: &str) -> anyhow::Result<()> {
        let Some(worker) = self.pool.remove(pid) else {
            return Ok(());
        };
        let now = Instant::now();
        let age = worker.child.age(now);
        if self.phase == Phase::Starting && !worker.ready {
            let reason = worker
                .startup_failure
                .unwrap_or_else(|| format!("it {how} before it was ready; see the log"));
            return Err(anyhow!("worker {pid} failed to start: {reason}"));
        }
        if worker.child.is_stopping() || self.is_stopping() {
            info!(
                "worker {pid} exited ({how}) after {}",
                crate::status::format_duration(age.as_secs())
            );
            return Ok(());
        }
        let what = match (worker.child.killed_because, worker.startup_failure) {
            (Some(why), _) => format!("was killed because {why}"),
            (None, Some(reason)) => format!("failed to start ({reason})"),
            (None, None) => how.to_string(),
        };
        match self.pool.backoff.record_exit(age, what.clone(), now) {
            None => warn!(
                "worker {pid} {what} after {:.1}s; replacing it",
                age.as_secs_f64()
            ),
            Some(delay) => {
                let quick_exits = self.pool.backoff.quick_exits();
                // A crash loop is logged with its count, not once per attempt.
                let message = format!(
                    "worker {pid} {what} {:.1}s after it started; crash loop: {quick_exits} quick \
                     exits in a row, next respawn in {}s",
                    age.as_secs_f64(),
                    delay.as_secs()
                );
                if quick_exits <= 3 || quick_exits.is_power_of_two() {
                    error!("{message}");
                } else {
                    debug!("{message}");
                }
            }
        }
        Ok(())
    }
}

fn describe_exit(status: WaitStatus) -> String {
    match status {
        WaitStatus::Exited(_, code) => format!("exited with code {code}"),
        WaitStatus::Signaled(_, signal, core) => {
            format!(
                "was killed by {signal}{}",
                if core { " (core dumped)" } else { "" }
            )
        }
        other => format!("changed state: {other:?}"),
    }
}
