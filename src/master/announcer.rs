//! How the outcome of start-up reaches whoever launched the master: systemd
//! (`NOTIFY_SOCKET`, always tried) and, for `eventsd start`, a pipe to the waiting CLI.
//!
//! One line, once: `ready PID LISTEN` or `error MESSAGE`; the pipe is closed after it, so
//! a master that dies later cannot be mistaken for one still starting.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use crate::notify;

pub struct Announcer {
    pipe: Option<File>,
}

impl Announcer {
    /// For `run`: only the service manager is told.
    pub fn foreground() -> Announcer {
        Announcer { pipe: None }
    }

    /// For `start`: the CLI reads one line from the other end of `pipe`.
    pub fn pipe(pipe: OwnedFd) -> Announcer {
        Announcer {
            pipe: Some(File::from(pipe)),
        }
    }

    pub(super) fn ready(&mut self, listen: &str) {
        notify::send(notify::READY);
        self.write_line(&format!("ready {} {listen}", std::process::id()));
    }

    pub fn failed(&mut self, error: &anyhow::Error) {
        self.write_line(&format!("error {error:#}"));
    }

    fn write_line(&mut self, line: &str) {
        if let Some(mut pipe) = self.pipe.take() {
            let _ = writeln!(pipe, "{}", line.replace('\n', " "));
        }
    }

    /// The pipe's descriptor, which children close at once.
    pub(super) fn raw_fd(&self) -> Option<RawFd> {
        self.pipe.as_ref().map(|pipe| pipe.as_raw_fd())
    }
}
