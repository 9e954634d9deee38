//! What the master enforces on its once-a-second tick (gunicorn's `murder_workers`): a
//! worker (or the action runner, `actions.rs`) silent past `heartbeat_timeout_secs` is
//! hung, any child still draining past `graceful_timeout_secs` is overdue, a counters
//! snapshot still writing past `watchers.snapshot_timeout_secs` is hung (`snapshot`), all
//! are killed; a crash loop ends once a worker stays up; the dynamic pool grows when every
//! worker is busy and shrinks when one idles.
//!
//! Runs after the wait has read every channel it may read, so it judges the heartbeats
//! that came, by when the worker wrote them, and never a worker whose channel still
//! holds what the master has not read (`Child::silence_past`).

use std::time::Instant;

use log::info;
use nix::unistd::Pid;

use super::{Master, Phase};
use crate::child::Role;
use crate::clock::Stamp;

impl Master {
    pub(super) fn enforce_timeouts(&mut self) {
        let now = Instant::now();
        self.kill_hung_children();
        self.kill_overdue_children(now);
        self.enforce_upgrade_deadline(now);
        let spawn_times: Vec<Instant> = self.pool.iter().map(|w| w.child.spawned_at).collect();
        if self.pool.backoff.settle(spawn_times.into_iter(), now) {
            info!("crash loop over: a new worker has stayed up");
        }
        if self.lifecycle.phase == Phase::Running {
            self.adjust_dynamic_pool(now);
        }
    }

    /// The one heartbeat rule, for every child that beats (workers, the action runner):
    /// silent past `heartbeat_timeout_secs`, with nothing unread from it, it hung.
    fn kill_hung_children(&mut self) {
        let (now, heartbeat_timeout) =
            (Stamp::now(), self.ground.config.workers.heartbeat_timeout());
        let hung: Vec<(Pid, Role, u64)> = self
            .children()
            .filter(|child| child.role.beats())
            .filter_map(|child| {
                let silent = child.silence_past(now, heartbeat_timeout)?;
                Some((child.pid, child.role, silent.as_secs()))
            })
            .collect();
        for (pid, role, silent) in hung {
            let details = format!("no heartbeat for {silent}s");
            match role {
                Role::Worker => self.kill_worker(pid, "it hung", &details),
                _ => {
                    if let Some(child) = self.child_mut(pid) {
                        child.kill("it hung", &details);
                    }
                }
            }
        }
    }

    fn kill_overdue_children(&mut self, now: Instant) {
        let graceful_timeout = self.ground.config.workers.graceful_timeout();
        let overdue: Vec<(Pid, Role)> = self
            .children()
            .filter(|child| child.is_overdue(now, graceful_timeout))
            .map(|child| (child.pid, child.role))
            .collect();
        let details = format!("graceful timeout of {}s", graceful_timeout.as_secs());
        for (pid, role) in overdue {
            match role {
                Role::Worker => self.kill_worker(pid, "it was still draining", &details),
                Role::ActionRunner | Role::Snapshot | Role::Successor | Role::ClusterLink => {
                    if let Some(child) = self.child_mut(pid) {
                        child.kill("it was still at work", &details);
                    }
                }
            }
        }
    }

    /// Prefork MPM: when `min < max`, grow by one when every worker is busy and none is
    /// still starting; retire a worker that has been idle for `idle_timeout_secs`.
    fn adjust_dynamic_pool(&mut self, now: Instant) {
        let (min, max) = (
            self.ground.config.workers.min,
            self.ground.config.workers.max,
        );
        if min == max {
            return;
        }
        let all_ready = self.pool.ready_count() == self.pool.active_count();
        let all_busy = self.pool.active().all(|w| w.report.busy);
        if all_ready && all_busy && self.pool.target < max {
            self.pool.target += 1;
            info!(
                "all {} workers busy: growing the pool to {}",
                self.pool.active_count(),
                self.pool.target
            );
            return;
        }
        if self.pool.target <= min {
            return;
        }
        let idle_timeout = self.ground.config.workers.idle_timeout();
        let idle = self
            .pool
            .active()
            .filter(|w| {
                w.idle_since
                    .is_some_and(|since| now.duration_since(since) >= idle_timeout)
            })
            .min_by_key(|w| w.idle_since)
            .map(|w| w.pid());
        if let Some(pid) = idle {
            self.pool.target -= 1;
            self.stop_worker(pid, "idle for the idle timeout, above workers.min");
        }
    }
}
