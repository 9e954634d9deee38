//! The master's verbs on its workers: spawn, stop, kill, talk to them, and `reconcile`,
//! which converges the pool on its target.
//!
//! The pool's target moves (start, SIGTTIN/SIGTTOU, the dynamic pool, a reload's new
//! generation); only `reconcile` forks or retires to follow it, new workers before old
//! ones go, so that no request is refused.

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use anyhow::Context;
use log::{debug, error, info};
use nix::unistd::Pid;

use super::pool::Worker;
use super::{Master, Phase};
use crate::child::{self, Role};
use crate::notify;
use crate::protocol::channel::Channel;
use crate::protocol::worker::MasterMessage;
use crate::worker;

impl Master {
    /// Converges the pool to its target: forks what is missing (paced by the crash
    /// backoff), retires what is surplus, and retires the previous generation once the
    /// current one is ready. Keeps the action runner up too; stopping, stops it once it
    /// may.
    pub(super) fn reconcile(&mut self) {
        if self.is_stopping() {
            self.stop_outputs_once_inputs_are_gone();
            return;
        }
        self.keep_runner();
        self.keep_cluster_link();
        let now = Instant::now();
        while self.pool.active_count() < self.pool.target && self.pool.backoff.may_spawn(now) {
            if let Err(e) = self.spawn_worker() {
                error!("cannot fork a worker: {e:#}");
                self.pool
                    .backoff
                    .record_exit(Duration::ZERO, format!("fork failed: {e}"), now);
                break;
            }
            self.pool.backoff.spawned(now);
        }
        while self.pool.active_count() > self.pool.target {
            let Some(pid) = self.pool.youngest_active() else {
                break;
            };
            self.stop_worker(pid, "the pool shrinks");
        }
        if self.pool.ready_count() >= self.pool.target {
            for pid in self.pool.previous_generation() {
                self.stop_worker(pid, "a newer generation is ready");
            }
            self.finish_start_or_reload();
        }
    }

    /// Keeps an action runner up (`Alerts::keep_runner`), forked with this
    /// configuration; it serves no HTTP, so it closes the listening socket too.
    fn keep_runner(&mut self) {
        if !self.actions.wants_runner() {
            return;
        }
        let mut master_fds = self.master_only_fds();
        master_fds.push(self.ground.listener.as_raw_fd());
        let config = self.ground.config.clone();
        self.actions.keep_runner(|| {
            child::fork_child(Role::ActionRunner, &master_fds, |channel| {
                crate::action::serve(&config, channel)
            })
        });
    }

    fn finish_start_or_reload(&mut self) {
        if self.lifecycle.phase == Phase::Starting {
            self.lifecycle.phase = Phase::Running;
            info!(
                "eventsd ready: {} workers serving {}",
                self.pool.ready_count(),
                self.ground.config.server.listen
            );
            self.announce_ready();
        } else if self.lifecycle.reload_in_progress {
            self.lifecycle.reload_in_progress = false;
            info!(
                "reload complete: generation {} serving",
                self.pool.generation
            );
            notify::send(notify::READY);
        }
    }

    fn spawn_worker(&mut self) -> anyhow::Result<()> {
        let (counts, worker_end) =
            UnixStream::pair().context("cannot create the counts socketpair of a worker")?;
        let setup = worker::Setup {
            listener: self.ground.listener.as_raw_fd(),
            tls: self.ground.tls.clone(),
            config: self.ground.config.clone(),
            registry: self.registry.clone(),
            counts: worker_end,
        };
        let mut master_fds = self.master_only_fds();
        master_fds.push(counts.as_raw_fd());
        // In this process the worker's end closes as the unused `setup` is dropped.
        let child = child::fork_child(Role::Worker, &master_fds, |channel| {
            worker::serve(setup, channel)
        })?;
        let counts = Channel::new(counts)
            .with_context(|| format!("cannot set up the counts channel of worker {}", child.pid))?;
        debug!(
            "worker {} is of generation {}",
            child.pid, self.pool.generation
        );
        let slot = self.pool.free_slot();
        let worker = Worker::new(
            child,
            counts,
            slot,
            self.pool.generation,
            self.registry.version,
        );
        self.pool.add(worker);
        Ok(())
    }

    pub(super) fn stop_worker(&mut self, pid: Pid, why: &str) {
        if let Some(worker) = self.pool.get_mut(pid) {
            worker.child.stop(&MasterMessage::Stop, why);
        }
    }

    /// SIGKILL, with what the worker last reported, for the post-mortem.
    pub(super) fn kill_worker(&mut self, pid: Pid, because: &'static str, details: &str) {
        let Some(worker) = self.pool.get_mut(pid) else {
            return;
        };
        let report = &worker.report;
        let details = format!(
            "{details}; last state {}, {} requests in flight, {} connections, up {}",
            worker.state().name(),
            report.in_flight,
            report.connections,
            crate::status::format_duration(worker.child.age(Instant::now()).as_secs()),
        );
        worker.child.kill(because, &details);
    }

    /// SIGTTIN / SIGTTOU: `delta` workers more or fewer, within the configured bounds.
    pub(super) fn resize(&mut self, delta: isize) {
        if self.lifecycle.phase != Phase::Running {
            return;
        }
        let wanted = self.pool.target.saturating_add_signed(delta);
        let (min, max) = (
            self.ground.config.workers.min,
            self.ground.config.workers.max,
        );
        let target = wanted.clamp(min, max);
        if target == self.pool.target {
            info!(
                "pool stays at {} workers: workers.min is {}, workers.max is {}",
                target, min, max
            );
        } else {
            info!("pool target {} -> {}", self.pool.target, target);
            self.pool.target = target;
        }
    }

    pub(super) fn broadcast(&mut self, message: &MasterMessage) {
        for worker in self.pool.iter_mut() {
            worker.child.send(message);
        }
    }

    pub(super) fn send_to(&mut self, pid: Pid, message: MasterMessage) {
        if let Some(worker) = self.pool.get_mut(pid) {
            worker.child.send(&message);
        }
    }
}
