//! The action runner: a child process of the master that delivers firings, so that a slow
//! SMTP server or a dead webhook never slows ingestion or supervision.
//!
//! Owns the queue of pending firings (bounded: when full, the oldest is dropped and
//! reported), a few delivery threads, each delivery's retries with exponential backoff,
//! and the report of every outcome to the master. It may use threads because it never
//! forks anything but the programs of `command` actions. It keeps nothing across its
//! restarts: the master starts a new runner if this one dies.

pub mod deliver;

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context as _;
use log::{info, warn};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::ipc;
use crate::logging;
use crate::watch::Job;
use deliver::{Context, Failure};

/// Deliveries that may run at the same time: a slow target holds one thread, not all.
const DELIVERY_THREADS: usize = 4;
/// Attempts of a transiently failing delivery, waiting 1 s, 2 s, 4 s between them.
const ATTEMPTS: u32 = 4;

/// What the master sends the runner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ToRunner {
    /// A job, as JSON (its action and key are JSON documents).
    Deliver { job: String },
    /// Finish the deliveries under way and the queue, then exit.
    Stop,
    /// Reopen log files (SIGUSR1 reached the master).
    ReopenLogs,
}

/// What the runner tells the master.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub watcher: String,
    pub action: String,
    pub result: Delivery,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Delivery {
    Delivered,
    Failed,
    /// Pushed out of a full queue before any attempt.
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

struct Queue {
    jobs: VecDeque<Job>,
    capacity: usize,
    closed: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
    reports: Mutex<UnixStream>,
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
    let shared = Arc::new(Shared {
        queue: Mutex::new(Queue {
            jobs: VecDeque::new(),
            capacity: config.watchers.action_queue,
            closed: false,
        }),
        ready: Condvar::new(),
        reports: Mutex::new(reports),
    });
    let context = Arc::new(Context::new(config));
    let threads: Vec<_> = (0..DELIVERY_THREADS)
        .map(|_| {
            let (shared, context) = (shared.clone(), context.clone());
            std::thread::spawn(move || deliver_until_closed(&shared, &context))
        })
        .collect();
    info!("action runner ready");
    receive_jobs(channel, &shared);
    for thread in threads {
        let _ = thread.join();
    }
    info!("action runner stopped");
    Ok(())
}

/// Reads the master's messages until `Stop` or a closed channel, then closes the queue.
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
    lock(&shared.queue).closed = true;
    shared.ready.notify_all();
}

fn enqueue(shared: &Shared, job: Job) {
    let dropped = {
        let mut queue = lock(&shared.queue);
        let dropped = (queue.jobs.len() >= queue.capacity)
            .then(|| queue.jobs.pop_front())
            .flatten();
        queue.jobs.push_back(job);
        dropped
    };
    shared.ready.notify_one();
    if let Some(old) = dropped {
        let detail = format!(
            "the action queue is full ({} firings)",
            lock(&shared.queue).capacity
        );
        report(shared, &old, Delivery::Dropped, detail);
    }
}

fn deliver_until_closed(shared: &Shared, context: &Context) {
    loop {
        let job = {
            let mut queue = lock(&shared.queue);
            loop {
                if let Some(job) = queue.jobs.pop_front() {
                    break job;
                }
                if queue.closed {
                    return;
                }
                queue = shared.ready.wait(queue).unwrap_or_else(|e| e.into_inner());
            }
        };
        let (result, detail) = deliver_with_retries(&job, context);
        report(shared, &job, result, detail);
    }
}

fn deliver_with_retries(job: &Job, context: &Context) -> (Delivery, String) {
    let mut pause = Duration::from_secs(1);
    for attempt in 1..=ATTEMPTS {
        match deliver::deliver(job, context) {
            Ok(()) => return (Delivery::Delivered, format!("attempt {attempt}")),
            Err(Failure::Permanent(reason)) => return (Delivery::Failed, reason),
            Err(Failure::Transient(reason)) if attempt == ATTEMPTS => {
                return (
                    Delivery::Failed,
                    format!("{reason} (after {ATTEMPTS} attempts)"),
                );
            }
            Err(Failure::Transient(reason)) => {
                warn!(
                    "watcher `{}`: attempt {attempt} failed: {reason}; retrying in {}s",
                    job.firing.watcher,
                    pause.as_secs()
                );
                std::thread::sleep(pause);
                pause *= 2;
            }
        }
    }
    (Delivery::Failed, "no attempt made".to_string())
}

fn report(shared: &Shared, job: &Job, result: Delivery, detail: String) {
    let outcome = Outcome {
        watcher: job.firing.watcher.clone(),
        action: deliver::kind(&job.action).to_string(),
        result,
        detail,
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
