//! The action runner: a child process of the master that delivers firings, so that a slow
//! SMTP server or a dead webhook never slows ingestion or supervision.
//!
//! Owns the pending firings in one queue per target (`queue`), a scheduler thread that
//! starts a thread for each delivery it takes from the queues (a target has at most
//! `actions.max_in_flight_per_target` of them; all targets together `MAX_IN_FLIGHT`, far
//! above what hung targets take), the heartbeat, and the report of every failed attempt
//! and settled firing to the master. Retries wait on their due time, never in a thread.
//! No fixed pool: a target that never answers holds its own threads and nothing else. It
//! may use threads because it never forks anything but the programs of `command`
//! actions. What it has not settled when it stops is the master's to keep (its journal)
//! and to hand to the next runner.

pub mod deliver;
mod queue;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use log::{debug, info, warn};
use uuid::Uuid;

use crate::config::Config;
use crate::logging;
use crate::protocol::frame::{self, Json};
use crate::protocol::runner::{ActionKind, Delivery, ErrorClass, FromRunner, Outcome, ToRunner};
use crate::watch::Job;
use deliver::{Context, Failure};
pub use queue::target_of;
use queue::{Attempt, Limits, Pending, Queues, Settled};

/// Deliveries in flight, all targets together: 128 targets hung at once, at the default
/// 4 each. A delivery thread waiting on a hung webhook costs about 0.5 MiB of resident
/// memory (its stack and the HTTP client's buffers): 64 of them 30 MiB.
const MAX_IN_FLIGHT: usize = 512;

/// How often the scheduler tells the master it is alive.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(500);

/// How the runner was told to stop.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Stopping {
    /// Deliver what is due now first.
    DueNow,
    /// Start nothing more.
    InFlightOnly,
}

struct Shared {
    state: Mutex<State>,
    /// Woken when a firing arrives, a delivery ends or the runner stops.
    changed: Condvar,
    reports: Mutex<UnixStream>,
    context: Context,
}

struct State {
    queues: Queues,
    in_flight: usize,
    stopping: Option<Stopping>,
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
        state: Mutex::new(State {
            queues: Queues::new(Limits::of(config)),
            in_flight: 0,
            stopping: None,
        }),
        changed: Condvar::new(),
        reports: Mutex::new(reports),
        context: Context::new(config),
    });
    let scheduler = {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("scheduler".into())
            .spawn(move || schedule_until_stopped(&shared))
            .context("cannot start the runner's scheduler")?
    };
    info!("action runner ready");
    receive_jobs(channel, &shared);
    let _ = scheduler.join();
    let left = lock(&shared.state).queues.len();
    info!("action runner stopped; {left} firings left to the master's journal");
    Ok(())
}

/// Reads the master's messages until `Stop`, `Retire` or a closed channel, then says stop.
fn receive_jobs(mut channel: UnixStream, shared: &Shared) {
    let mut buffer = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let stopping = 'read: loop {
        let n = match channel.read(&mut chunk) {
            Ok(0) => break Stopping::DueNow,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                warn!("cannot read from the master: {e}");
                break Stopping::DueNow;
            }
        };
        buffer.extend_from_slice(&chunk[..n]);
        loop {
            match frame::take_frame::<ToRunner>(&mut buffer) {
                Ok(Some(ToRunner::Deliver(Json(job)))) => enqueue(shared, *job),
                Ok(Some(ToRunner::Forget { ids })) => forget(shared, ids),
                Ok(Some(ToRunner::Stop)) => break 'read Stopping::DueNow,
                Ok(Some(ToRunner::Retire)) => break 'read Stopping::InFlightOnly,
                Ok(Some(ToRunner::ReopenLogs)) => match logging::reopen() {
                    Ok(()) => info!("reopened log files"),
                    Err(e) => warn!("cannot reopen log files: {e:#}"),
                },
                Ok(None) => break,
                Err(e) => {
                    warn!("unreadable message from the master: {e}");
                    break 'read Stopping::DueNow;
                }
            }
        }
    };
    lock(&shared.state).stopping = Some(stopping);
    shared.changed.notify_all();
}

fn enqueue(shared: &Shared, job: Job) {
    let pushed_out = lock(&shared.state).queues.submit(job, Instant::now());
    shared.changed.notify_all();
    if let Some(settled) = pushed_out {
        report_settled(shared, settled, Instant::now());
    }
}

fn forget(shared: &Shared, ids: Vec<Uuid>) {
    let ids: HashSet<Uuid> = ids.into_iter().collect();
    let forgotten = lock(&shared.state).queues.forget(&ids);
    debug!(
        "forgot {forgotten} waiting deliveries of {} settled firings",
        ids.len()
    );
}

/// The scheduler: starts a delivery thread for each firing the queues say is due, beats
/// the heartbeat, and sleeps until the next retry, delivery end or message. Stopping, it
/// leaves once no delivery is in flight and none it should start is due.
fn schedule_until_stopped(shared: &Arc<Shared>) {
    let mut next_beat = Instant::now();
    loop {
        let now = Instant::now();
        if now >= next_beat {
            let sent_at = crate::clock::Stamp::now();
            send(shared, &FromRunner::Heartbeat { sent_at });
            next_beat = now + HEARTBEAT_INTERVAL;
        }
        let mut state = lock(&shared.state);
        let room = match state.stopping {
            Some(Stopping::InFlightOnly) => 0,
            _ => MAX_IN_FLIGHT - state.in_flight,
        };
        let due = state.queues.take_due(now, room);
        state.in_flight += due.len();
        if due.is_empty() && state.in_flight == 0 && state.stopping.is_some() {
            return;
        }
        if !due.is_empty() {
            drop(state);
            for (target, pending) in due {
                start_delivery(shared, target, pending);
            }
            continue;
        }
        let wake_at = state
            .queues
            .next_due_at()
            .map_or(next_beat, |at| at.min(next_beat));
        let wait = wake_at.saturating_duration_since(now);
        drop(
            shared
                .changed
                .wait_timeout(state, wait)
                .map_or_else(|e| e.into_inner().0, |(state, _)| state),
        );
    }
}

/// A thread for one delivery. The firing is handed over once the thread runs, so that
/// one that cannot be started leaves it here: a failed attempt, retried later.
fn start_delivery(shared: &Arc<Shared>, target: String, pending: Pending) {
    let (hand, take) = std::sync::mpsc::sync_channel::<Pending>(1);
    let thread_shared = shared.clone();
    let thread_target = target.clone();
    let started = std::thread::Builder::new()
        .name("delivery".into())
        .spawn(move || {
            if let Ok(pending) = take.recv() {
                deliver_one(&thread_shared, &thread_target, pending);
            }
        });
    match started {
        Ok(_) => {
            // The thread holds the receiver until it has the firing: this cannot fail.
            let _ = hand.send(pending);
        }
        Err(e) => {
            let why = format!("cannot start a delivery thread: {e}");
            warn!("{target}: {why}");
            finish(shared, &target, pending, Attempt::Transient(why));
        }
    }
}

/// Delivers one firing, reports a failed attempt, and files the attempt.
fn deliver_one(shared: &Shared, target: &str, pending: Pending) {
    let action = ActionKind::of(&pending.job.action);
    let delivered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        deliver::deliver(&pending.job, &shared.context)
    }));
    let attempt = match delivered.unwrap_or_else(|_| {
        Err(Failure::Permanent(
            ErrorClass::Other,
            "the delivery panicked".into(),
        ))
    }) {
        Ok(()) => Attempt::Delivered,
        Err(failure) => {
            send(
                shared,
                &FromRunner::AttemptFailed {
                    action,
                    error: failure.class(),
                },
            );
            match failure {
                Failure::Permanent(_, why) => Attempt::Permanent(why),
                Failure::Transient(_, why) => {
                    warn!(
                        "watcher `{}`: {target}: attempt {} failed: {why}; retrying",
                        pending.job.firing.watcher,
                        pending.attempts + 1
                    );
                    Attempt::Transient(why)
                }
            }
        }
    };
    finish(shared, target, pending, attempt);
}

/// Frees the delivery's slot, files its attempt, and reports what it settled, or when
/// it is tried again.
fn finish(shared: &Shared, target: &str, pending: Pending, attempt: Attempt) {
    let now = Instant::now();
    let retried = match &attempt {
        Attempt::Transient(why) => Some((pending.job.clone(), why.clone())),
        _ => None,
    };
    let (settled, retry) = {
        let mut state = lock(&shared.state);
        state.in_flight -= 1;
        let settled = state.queues.finished(target, pending, attempt, now);
        let retry = retried.and_then(|(job, why)| {
            let (at, ids) = state.queues.retry_of(target, &job)?;
            Some((at, ids, why))
        });
        (settled, retry)
    };
    shared.changed.notify_all();
    if let Some(settled) = settled {
        report_settled(shared, settled, now);
    } else if let Some((at, ids, error)) = retry {
        let retry_in_ms = u64::try_from(at.saturating_duration_since(now).as_millis());
        let retrying = FromRunner::Retrying {
            ids,
            error,
            retry_in_ms: retry_in_ms.unwrap_or(u64::MAX),
        };
        send(shared, &retrying);
    }
}

fn report_settled(shared: &Shared, settled: Settled, now: Instant) {
    let (pending, result, detail) = match settled {
        Settled::Delivered(p) => {
            let detail = format!("attempt {}", p.attempts);
            (p, Delivery::Delivered, detail)
        }
        Settled::Failed(p, why) => (p, Delivery::Failed, why),
        Settled::Dropped(p, reason, why) => (p, Delivery::Dropped(reason), why),
    };
    let Pending {
        job,
        ids,
        received_at,
        ..
    } = pending;
    let outcome = Outcome {
        ids,
        action: ActionKind::of(&job.action),
        watcher: job.firing.watcher,
        result,
        detail,
        latency_secs: now.duration_since(received_at).as_secs_f64(),
    };
    send(shared, &FromRunner::Settled(outcome));
}

fn send(shared: &Shared, message: &FromRunner) {
    let written = frame::encode(message).and_then(|frame| lock(&shared.reports).write_all(&frame));
    if let Err(e) = written {
        warn!("cannot report to the master: {e}");
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A delivery thread that panicked left consistent data: take it back.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
