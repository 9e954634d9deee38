//! The access log (`[daemon] access_log`, process-model.md): one JSON line per request,
//! written by the worker that served it.
//!
//! Owns the worker's buffer of lines and its file. A request only appends its line to the
//! buffer; the buffer goes to the file every `FLUSH_INTERVAL`, or at once when
//! `FLUSH_BYTES` wait, in one `O_APPEND` write of whole lines, so the hot path never
//! waits for the disk and the lines of several workers never interleave. It never fails
//! a request: lines that cannot be written are dropped with a warning.

use std::cell::RefCell;
use std::fs::File;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use log::{info, warn};
use serde::Serialize;

use crate::files;

/// How often buffered lines reach the file: what a reader of the log may lag behind.
const FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// Buffered lines beyond this are written at once, so a burst never grows the buffer.
const FLUSH_BYTES: usize = 64 * 1024;

pub struct AccessLog {
    path: PathBuf,
    file: RefCell<File>,
    buffer: RefCell<Vec<u8>>,
    worker: u32,
}

/// What one line says of a request.
#[derive(Serialize)]
pub struct Request<'a> {
    pub client: IpAddr,
    pub method: &'a str,
    /// The route's pattern (`/event/{type}/`), for grouping; `path` is what was asked.
    pub route: &'a str,
    pub path: &'a str,
    pub status: u16,
    /// The response body's length.
    pub bytes: u64,
    pub duration_ms: f64,
}

#[derive(Serialize)]
struct Line<'a> {
    time: String,
    #[serde(flatten)]
    request: &'a Request<'a>,
    worker: u32,
}

impl AccessLog {
    /// Opens the log (before the worker drops its privileges: the master created the file
    /// and gave it to the workers' user, so that a reopen after rotation works too).
    pub fn open(path: &Path) -> anyhow::Result<AccessLog> {
        Ok(AccessLog {
            path: path.to_path_buf(),
            file: RefCell::new(open(path)?),
            buffer: RefCell::new(Vec::with_capacity(FLUSH_BYTES)),
            worker: std::process::id(),
        })
    }

    pub fn record(&self, request: &Request) {
        let line = Line {
            time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            request,
            worker: self.worker,
        };
        let full = {
            let mut buffer = self.buffer.borrow_mut();
            if serde_json::to_writer(&mut *buffer, &line).is_ok() {
                buffer.push(b'\n');
            }
            buffer.len() >= FLUSH_BYTES
        };
        if full {
            self.flush();
        }
    }

    /// Writes the buffered lines.
    pub fn flush(&self) {
        let mut buffer = self.buffer.borrow_mut();
        if buffer.is_empty() {
            return;
        }
        if let Err(e) = self.file.borrow_mut().write_all(&buffer) {
            warn!(
                "access log {}: {} bytes of lines lost: {e}",
                self.path.display(),
                buffer.len()
            );
        }
        buffer.clear();
    }

    /// After a rotation (SIGUSR1): the buffered lines go to the old file, the next ones
    /// to the file now at the path. If it cannot be opened, lines go on to the old one.
    pub fn reopen(&self) {
        self.flush();
        match open(&self.path) {
            Ok(file) => {
                *self.file.borrow_mut() = file;
                info!("reopened access log {}", self.path.display());
            }
            Err(e) => warn!("{e:#}; writing on to the old file"),
        }
    }

    /// The worker's flushing task.
    pub async fn flush_periodically(&self) {
        let mut interval = tokio::time::interval(FLUSH_INTERVAL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            self.flush();
        }
    }
}

fn open(path: &Path) -> anyhow::Result<File> {
    files::open_for_append(path).with_context(|| {
        format!(
            "cannot open access log {} (a symlink is never followed)",
            path.display()
        )
    })
}
