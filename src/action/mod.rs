//! The action runner: a child process of the master that delivers firings, so that a slow
//! SMTP server or a dead webhook never slows ingestion or supervision.
//!
//! Owns the pending firings in one queue per target (`queue`), a pool of delivery threads
//! that take what is due from a target with a free slot, and the report of every settled
//! firing to the master. Retries wait on their due time, never in a sleeping thread, so a
//! dead or slow target holds at most its own slot. It may use threads because it never
//! forks anything but the programs of `command` actions. What it has not settled when it
//! stops is the master's to keep (its journal) and to hand to the next runner.

pub mod deliver;
mod queue;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use log::{info, warn};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::Config;
use crate::ipc;
use crate::logging;
use crate::watch::Job;
use deliver::{Context, Failure};
pub use queue::target_of;
use queue::{Attempt, Pending, Queues, Settled};

/// Deliveries that may run at the same time, to different targets: each target has
/// `queue::IN_FLIGHT_PER_TARGET` of them at most, so targets that hang hold only theirs.
const DELIVERY_THREADS: usize = 8;

/// What the master sends the runner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ToRunner {
    /// A job, as JSON (its action and key are JSON documents).
    Deliver { job: String },
    /// Finish the deliveries under way and those due now, then exit: what waits for a
    /// retry stays in the master's journal for the next runner.
    Stop,
    /// Reopen log files (SIGUSR1 reached the master).
    ReopenLogs,
}

/// What the runner tells the master: a delivery settled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// Every firing this settles (the delivered one and those it absorbed).
    pub ids: Vec<Uuid>,
    pub watcher: String,
    pub action: String,
    pub result: Delivery,
    /// Why a firing was dropped (`too_old`, `queue_full`); empty otherwise.
    pub reason: String,
    pub detail: String,
    /// From the runner's receipt of the first firing to the end of the last attempt.
    pub latency_secs: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Delivery {
    Delivered,
    Failed,
    /// Given up without delivery: too old, or pushed out of a full queue.
    Dropped,
}

impl Delivery {
    pub fn name(self) -> &'static str {
        match self {
            Delivery::Delivered => "delivered",
            Delivery::Failed => "failed",
            Delivery::Dropped => "dropped",
        }
    }
}

struct Shared {
    queues: Mutex<State>,
    /// Woken when a firing arrives, a slot frees or the runner stops.
    changed: Condvar,
    reports: Mutex<UnixStream>,
}

struct State {
    queues: Queues,
    /// The master said stop: deliver what is due, then leave the rest to the master.
    stopping: bool,
}

/// The action runner's life in the forked child (`child::fork_child` runs it): deliver
/// until the master says stop (or goes away). `channel` is its end of the socketpair.
pub fn serve(config: &Config, channel: UnixStream) -> anyhow::Result<()> {
    // Like the workers (without their chroot): a `command` action never runs as root
    // just because the master must.
    crate::privileges::drop_to(&config.workers.privileges, false)?;

    let reports = channel
        .try_clone()
        .context("cannot clone the runner's channel")?;
    let actions = &config.actions;
    let shared = Arc::new(Shared {
        queues: Mutex::new(State {
            queues: Queues::new(
                config.watchers.action_queue,
                Duration::from_secs(actions.retry_max_interval_secs),
                Duration::from_secs(actions.max_age_secs),
            ),
            stopping: false,
        }),
        changed: Condvar::new(),
        reports: Mutex::new(reports),
    });
    let context = Arc::new(Context::new(config));
    let threads: Vec<_> = (0..DELIVERY_THREADS)
        .map(|_| {
            let (shared, context) = (shared.clone(), context.clone());
            std::thread::spawn(move || deliver_until_stopped(&shared, &context))
        })
        .collect();
    info!("action runner ready");
    receive_jobs(channel, &shared);
    for thread in threads {
        let _ = thread.join();
    }
    let left = lock(&shared.queues).queues.drain().len();
    info!("action runner stopped; {left} firings left to the master's journal");
    Ok(())
}

/// Reads the master's messages until `Stop` or a closed channel, then says stop.
fn receive_jobs(mut channel: UnixStream, shared: &Shared) {
    let mut buffer = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    'read: loop {
        let n = match channel.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                warn!("cannot read from the master: {e}");
                break;
            }
        };
        buffer.extend_from_slice(&chunk[..n]);
        loop {
            match ipc::take_frame::<ToRunner>(&mut buffer) {
                Ok(Some(ToRunner::Deliver { job })) => match serde_json::from_str::<Job>(&job) {
                    Ok(job) => enqueue(shared, job),
                    Err(e) => warn!("unreadable job from the master: {e}"),
                },
                Ok(Some(ToRunner::Stop)) => break 'read,
                Ok(Some(ToRunner::ReopenLogs)) => match logging::reopen() {
                    Ok(()) => info!("reopened log files"),
                    Err(e) => warn!("cannot reopen log files: {e:#}"),
                },
                Ok(None) => break,
                Err(e) => {
                    warn!("unreadable message from the master: {e}");
                    break 'read;
                }
            }
        }
    }
    lock(&shared.queues).stopping = true;
    shared.changed.notify_all();
}

fn enqueue(shared: &Shared, job: Job) {
    let pushed_out = lock(&shared.queues).queues.submit(job, Instant::now());
    shared.changed.notify_one();
    if let Some(settled) = pushed_out {
        report(shared, settled, Instant::now());
    }
}

/// One delivery thread: takes a due firing from a target with a free slot, delivers it,
/// files the attempt; waits for the next due time otherwise. Stopping, it leaves once
/// nothing is due now.
fn deliver_until_stopped(shared: &Shared, context: &Context) {
    loop {
        let (target, pending) = {
            let mut state = lock(&shared.queues);
            loop {
                let now = Instant::now();
                if let Some(due) = state.queues.next_due(now) {
                    break due;
                }
                if state.stopping {
                    return;
                }
                state = match state.queues.next_due_at() {
                    Some(at) => {
                        let wait = at.saturating_duration_since(now);
                        shared
                            .changed
                            .wait_timeout(state, wait)
                            .map_or_else(|e| e.into_inner().0, |(state, _)| state)
                    }
                    None => shared
                        .changed
                        .wait(state)
                        .unwrap_or_else(|e| e.into_inner()),
                };
            }
        };
        let attempt = match deliver::deliver(&pending.job, context) {
            Ok(()) => Attempt::Delivered,
            Err(Failure::Permanent(why)) => Attempt::Permanent(why),
            Err(Failure::Transient(why)) => {
                warn!(
                    "watcher `{}`: attempt {} failed: {why}; retrying",
                    pending.job.firing.watcher,
                    pending.attempts + 1
                );
                Attempt::Transient(why)
            }
        };
        let now = Instant::now();
        let settled = lock(&shared.queues)
            .queues
            .finished(&target, pending, attempt, now);
        shared.changed.notify_all();
        if let Some(settled) = settled {
            report(shared, settled, now);
        }
    }
}

fn report(shared: &Shared, settled: Settled, now: Instant) {
    let (pending, result, reason, detail) = match settled {
        Settled::Delivered(p) => {
            let detail = format!("attempt {}", p.attempts);
            (p, Delivery::Delivered, "", detail)
        }
        Settled::Failed(p, why) => (p, Delivery::Failed, "", why),
        Settled::Dropped(p, reason, why) => (p, Delivery::Dropped, reason, why),
    };
    let Pending {
        job,
        ids,
        received_at,
        ..
    } = pending;
    let outcome = Outcome {
        ids,
        watcher: job.firing.watcher.clone(),
        action: deliver::kind(&job.action).to_string(),
        result,
        reason: reason.to_string(),
        detail,
        latency_secs: now.duration_since(received_at).as_secs_f64(),
    };
    let written = ipc::encode(&outcome).and_then(|frame| lock(&shared.reports).write_all(&frame));
    if let Err(e) = written {
        warn!("cannot report to the master: {e}");
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A delivery thread that panicked left consistent data: take it back.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
