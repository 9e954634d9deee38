//! The commands that signal a running master and wait for what it does: `stop`,
//! `hard-stop`, `reload`, `upgrade`, `reopen`. The pid signalled is the one the control
//! socket confirms (security.md), never the pidfile's claim alone.
//!
//! Owns signalling and waiting for the outcome; never touches the master's state files.

use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::config::Config;
use crate::master;
use crate::pidfile::{self, Probe};
use crate::status::Status;

/// LSB exit code of an action on a daemon that is not running (`reload`, `upgrade`).
const NOT_RUNNING: i32 = 7;

/// How often the CLI looks again while it waits for the master.
const POLL_EVERY: Duration = Duration::from_millis(50);

/// How long a command that signals waits for a master that holds its pidfile to answer on
/// its control socket (it may be starting, or taking over in an upgrade).
const CONFIRM_WITHIN: Duration = Duration::from_secs(10);

#[derive(clap::Args)]
pub struct Wait {
    /// Seconds to wait for the daemon (default: 30 to start; to stop, reload or upgrade,
    /// workers.graceful_timeout_secs and 5, 30 or 60 more).
    #[arg(long)]
    pub timeout: Option<u64>,
}

/// Sends `signal` (SIGTERM: graceful, SIGQUIT: fast) and waits for the master to go.
pub fn stop(config: &Config, signal: Signal, wait: &Wait) -> anyhow::Result<i32> {
    let path = &config.daemon.pidfile;
    let Some(master) = running_master(config)? else {
        println!("{}", super::not_running(config));
        return Ok(0);
    };
    let pid = master.pid;
    kill(pid, signal).with_context(|| format!("cannot send {signal} to eventsd (pid {pid})"))?;
    let timeout = wait.timeout.map_or_else(
        || config.workers.graceful_timeout() + Duration::from_secs(5),
        Duration::from_secs,
    );
    // Until no master holds the pidfile, whichever pid the file names.
    if wait_until(timeout, || {
        Ok(!matches!(pidfile::probe(path)?, Probe::Running(_)))
    })? {
        println!("eventsd stopped (pid {pid})");
        Ok(0)
    } else {
        eprintln!(
            "eventsd: still running (pid {pid}) {}s after {signal}",
            timeout.as_secs()
        );
        Ok(1)
    }
}

/// The master that runs, as its control socket confirms it (security.md): the pidfile's
/// lock says that one lives, but its text is only a claim, and the pid signalled is the
/// one that answers on the control socket. `None` when no master holds the pidfile.
fn running_master(config: &Config) -> anyhow::Result<Option<Confirmed>> {
    let (path, socket) = (&config.daemon.pidfile, &config.daemon.control_socket);
    let Probe::Running(named) = pidfile::probe(path)? else {
        return Ok(None);
    };
    // A master starting, or taking over in an upgrade, answers once it serves.
    let mut answer = Err(anyhow!("not asked yet"));
    wait_until(CONFIRM_WITHIN, || {
        answer = master::query(socket);
        Ok(answer.is_ok() || !matches!(pidfile::probe(path)?, Probe::Running(_)))
    })?;
    let status = match answer {
        Ok(status) => status,
        Err(_) if !matches!(pidfile::probe(path)?, Probe::Running(_)) => return Ok(None),
        Err(e) => {
            return Err(e.context(format!(
                "eventsd holds pidfile {} (pid {named}) but its control socket does not \
                 confirm it: not signalling a pid nothing confirms",
                path.display()
            )));
        }
    };
    let pid = Pid::from_raw(i32::try_from(status.pid).context("the master's pid")?);
    if pid != named {
        eprintln!(
            "eventsd: pidfile {} names pid {named}, but the master answering on control \
             socket {} is pid {pid}: that one is signalled, and the pidfile's pid is not \
             trusted",
            path.display(),
            socket.display()
        );
    }
    Ok(Some(Confirmed { pid, status }))
}

/// A running master and the status it answered with.
struct Confirmed {
    pid: Pid,
    status: Status,
}

/// The configuration was validated by `execute` before this runs: a bad one is never sent.
pub fn reload(config: &Config, wait: &Wait) -> anyhow::Result<i32> {
    let Some(Confirmed { pid, status }) = running_master(config)? else {
        eprintln!("{}: nothing to reload", super::not_running(config));
        return Ok(NOT_RUNNING);
    };
    let socket = &config.daemon.control_socket;
    let before = status.reloads;
    kill(pid, Signal::SIGHUP)
        .with_context(|| format!("cannot send SIGHUP to eventsd (pid {pid})"))?;
    let timeout = wait.timeout.map_or_else(
        || config.workers.graceful_timeout() + Duration::from_secs(30),
        Duration::from_secs,
    );
    let mut last = None;
    let done = wait_until(timeout, || {
        let status = master::query(socket)?;
        let done = status.reloads > before && !status.reload_in_progress;
        last = Some(status);
        Ok(done)
    })?;
    match last {
        Some(status) if done => match &status.last_reload_error {
            Some(error) => {
                eprintln!("eventsd: reload refused by the daemon: {error}");
                Ok(1)
            }
            None => {
                println!(
                    "eventsd reloaded (pid {pid}, generation {}, {} workers)",
                    status.generation, status.target_workers
                );
                Ok(0)
            }
        },
        _ => {
            eprintln!(
                "eventsd: reload not complete after {}s; see `eventsd fullstatus`",
                timeout.as_secs()
            );
            Ok(1)
        }
    }
}

/// The configuration was validated by `execute` before this runs: a new master would
/// refuse a bad one anyway, but the operator hears why at once.
pub fn upgrade(config: &Config, wait: &Wait) -> anyhow::Result<i32> {
    let Some(Confirmed { pid: old, status }) = running_master(config)? else {
        eprintln!("{}: nothing to upgrade", super::not_running(config));
        return Ok(NOT_RUNNING);
    };
    let failed_before = status.upgrades_failed;
    kill(old, Signal::SIGUSR2)
        .with_context(|| format!("cannot send SIGUSR2 to eventsd (pid {old})"))?;
    let timeout = wait.timeout.map_or_else(
        || config.workers.graceful_timeout() + Duration::from_secs(60),
        Duration::from_secs,
    );
    let mut outcome = None;
    wait_until(timeout, || {
        outcome = upgrade_outcome(config, old, failed_before)?;
        Ok(outcome.is_some())
    })?;
    match outcome {
        Some(Ok(new)) => {
            println!("eventsd upgraded (pid {old} -> {new})");
            Ok(0)
        }
        Some(Err(error)) => {
            eprintln!("eventsd: {error}");
            Ok(1)
        }
        None => {
            eprintln!(
                "eventsd: upgrade not complete after {}s; see `eventsd fullstatus`",
                timeout.as_secs()
            );
            Ok(1)
        }
    }
}

/// SIGUSR1: the master, its workers and the action runner reopen their log files.
pub fn reopen(config: &Config) -> anyhow::Result<i32> {
    let Some(Confirmed { pid, .. }) = running_master(config)? else {
        eprintln!("{}: no log to reopen", super::not_running(config));
        return Ok(NOT_RUNNING);
    };
    kill(pid, Signal::SIGUSR1)
        .with_context(|| format!("cannot send SIGUSR1 to eventsd (pid {pid})"))?;
    println!("eventsd reopens its log files (pid {pid})");
    Ok(0)
}

/// How an upgrade from `old` went, once it is known: the new master answers on the
/// control socket (it took over), or the old one counts one more failure, or none runs.
fn upgrade_outcome(
    config: &Config,
    old: Pid,
    failed_before: u64,
) -> anyhow::Result<Option<Result<u32, String>>> {
    Ok(match master::query(&config.daemon.control_socket) {
        Ok(status) if status.pid != old.as_raw().unsigned_abs() => Some(Ok(status.pid)),
        Ok(status) if status.upgrades_failed > failed_before => {
            Some(Err(status.last_upgrade_error.unwrap_or_default()))
        }
        Ok(_) => None,
        Err(_) => match pidfile::probe(&config.daemon.pidfile)? {
            Probe::Running(_) => None,
            Probe::NotRunning | Probe::Stale(_) => {
                Some(Err("eventsd stopped during the upgrade".to_string()))
            }
        },
    })
}

/// Polls `done` until it holds or `timeout` passes; tells which.
fn wait_until(
    timeout: Duration,
    mut done: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        if done()? {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(POLL_EVERY);
    }
}
