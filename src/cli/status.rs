//! `status` and `fullstatus`: whether a master runs (LSB exit codes) and, when one does,
//! what its control socket says, as one line, a table or JSON.
//!
//! Owns what these commands print and their exit codes; never signals.

use std::path::Path;

use nix::unistd::Pid;

use crate::config;
use crate::master;
use crate::pidfile::{self, Probe};
use crate::status::Status;

/// LSB exit codes of `status`.
const STATUS_RUNNING: i32 = 0;
const STATUS_DEAD_WITH_PIDFILE: i32 = 1;
const STATUS_NOT_RUNNING: i32 = 3;
const STATUS_UNKNOWN: i32 = 4;

pub enum Report {
    Summary,
    Table,
    Json,
}

pub fn status(source: &config::Source, report: Report) -> anyhow::Result<i32> {
    let config = match source.load() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("eventsd: {e:#}");
            return Ok(STATUS_UNKNOWN);
        }
    };
    let path = &config.daemon.pidfile;
    let probe = match pidfile::probe(path) {
        Ok(probe) => probe,
        // Not "not running": a user who may not read the pidfile cannot tell (LSB 4).
        Err(e) => {
            eprintln!("eventsd: cannot tell whether eventsd runs: {e:#}");
            return Ok(STATUS_UNKNOWN);
        }
    };
    match probe {
        Probe::NotRunning => {
            eprintln!("{}", super::not_running(&config));
            Ok(STATUS_NOT_RUNNING)
        }
        Probe::Stale(pid) => {
            let pid = pid.map_or_else(|| "unknown".to_string(), |pid| pid.to_string());
            eprintln!(
                "eventsd is dead but its pidfile remains ({}, pid {pid})",
                path.display()
            );
            Ok(STATUS_DEAD_WITH_PIDFILE)
        }
        Probe::Running(pid) => {
            print_running(pid, &config.daemon.control_socket, report)?;
            Ok(STATUS_RUNNING)
        }
    }
}

fn print_running(pid: Pid, socket: &Path, report: Report) -> anyhow::Result<()> {
    let status: Status = match master::query(socket) {
        Ok(status) => status,
        // The master holds its pidfile lock, so it is alive; it may be starting.
        Err(e) => {
            println!("eventsd is running (pid {pid}); its control socket does not answer: {e:#}");
            return Ok(());
        }
    };
    match report {
        Report::Summary => println!("{}", status.summary()),
        Report::Table => print!("{}", status.table()),
        Report::Json => println!("{}", serde_json::to_string_pretty(&status)?),
    }
    Ok(())
}
