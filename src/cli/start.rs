//! `start`: the daemon forked into the background, and the CLI waiting on a pipe for its
//! one-line report (`ready PID LISTEN` or `error WHY`), so that `start` returns once the
//! daemon serves or says why it could not.
//!
//! Owns daemonizing and the start pipe's reading; never signals a master.

use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use daemonize::{Daemonize, Outcome};
use log::error;
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::signals::Wait;
use crate::config::{self, Config};
use crate::logging::{self, Sink};
use crate::master::{self, Announcer};
use crate::pidfile::{self, Probe};

pub fn start(source: &config::Source, config: Config, wait: &Wait) -> anyhow::Result<i32> {
    if let Probe::Running(pid) = pidfile::probe(&config.daemon.pidfile)? {
        // LSB: starting a service that runs is a success.
        println!(
            "eventsd is already running (pid {pid}, pidfile {})",
            config.daemon.pidfile.display()
        );
        return Ok(0);
    }
    let (from_daemon, to_cli) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).context("cannot create a pipe")?;
    match Daemonize::new().working_directory("/").execute() {
        Outcome::Parent(Ok(_)) => {
            drop(to_cli);
            let timeout = wait
                .timeout
                .map_or(Duration::from_secs(30), Duration::from_secs);
            await_start(from_daemon, timeout)
        }
        Outcome::Parent(Err(e)) => Err(anyhow!("cannot daemonize: {e}")),
        Outcome::Child(result) => {
            drop(from_daemon);
            let mut announcer = Announcer::pipe(to_cli);
            let outcome = result
                .map_err(|e| anyhow!("cannot daemonize: {e}"))
                .and_then(|_| {
                    logging::init(
                        &Sink::for_target(&config.daemon.log, Sink::Syslog),
                        config.daemon.log_level,
                    )
                });
            if let Err(e) = outcome {
                announcer.failed(&e);
                return Ok(1);
            }
            match master::run(source.clone(), config, Sink::Syslog, announcer) {
                Ok(()) => Ok(0),
                Err(e) => {
                    error!("{e:#}");
                    Ok(1)
                }
            }
        }
    }
}

/// Waits for the daemon's one-line report on the start pipe.
fn await_start(pipe: OwnedFd, timeout: Duration) -> anyhow::Result<i32> {
    let deadline = Instant::now() + timeout;
    let mut report = Vec::new();
    let mut pipe = std::fs::File::from(pipe);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            eprintln!(
                "eventsd: not ready after {}s; see its log",
                timeout.as_secs()
            );
            return Ok(1);
        }
        let mut fds = [PollFd::new(pipe.as_fd(), PollFlags::POLLIN)];
        let millis = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        match poll(&mut fds, PollTimeout::from(millis)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => return Err(e).context("cannot wait for the daemon"),
        }
        let mut chunk = [0u8; 4096];
        let n = pipe
            .read(&mut chunk)
            .context("cannot read the daemon's report")?;
        report.extend_from_slice(&chunk[..n]);
        if n == 0 || report.contains(&b'\n') {
            break;
        }
    }
    let report = String::from_utf8_lossy(&report);
    let mut words = report.trim().splitn(3, ' ');
    match (words.next(), words.next(), words.next()) {
        (Some("ready"), Some(pid), Some(listen)) => {
            println!("eventsd started (pid {pid}, listening on {listen})");
            Ok(0)
        }
        (Some("error"), _, _) => {
            eprintln!("eventsd: {}", report.trim().trim_start_matches("error "));
            Ok(1)
        }
        _ => {
            eprintln!("eventsd: the daemon exited during start-up; see its log");
            Ok(1)
        }
    }
}
