//! Appenders: how a worker writes a collected event for each collector of its type.
//!
//! Owns the worker's open appender targets (files opened `O_APPEND`, syslog connections
//! under each collector's ident). A write is one `write` of whole lines, so events from
//! several workers never interleave within a line, and a short write is undone, so the
//! next line always starts a line. It never acknowledges anything: the caller replies
//! only once every write succeeded.
//!
//! A file target is opened so that it can name nothing but a regular file (security.md):
//! never through a symlink at the path (`O_NOFOLLOW`), never blocking on a FIFO
//! (`O_NONBLOCK`), and checked with `fstat` once open.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use syslog::{Facility, Formatter3164, LoggerBackend};

use crate::registry::Appender;

type SyslogWriter = syslog::Logger<LoggerBackend, Formatter3164>;

#[derive(Default)]
pub struct Appenders {
    files: RefCell<HashMap<PathBuf, File>>,
    syslogs: RefCell<HashMap<String, SyslogWriter>>,
    /// `collectors.syslog_socket`; the system's (`/dev/log`) when unset.
    syslog_socket: Option<PathBuf>,
}

impl Appenders {
    pub fn new(syslog_socket: Option<PathBuf>) -> Appenders {
        Appenders {
            syslog_socket,
            ..Appenders::default()
        }
    }

    /// Writes `lines` (one JSON document a line, each ending in `\n`) through `appender`;
    /// the error says what failed, for the 503 the client gets.
    pub fn write(&self, appender: &Appender, lines: &str) -> Result<(), String> {
        match appender {
            Appender::Null {} => Ok(()),
            Appender::File { path } => self.write_file(path, lines),
            Appender::Syslog { ident } => self.write_syslog(ident, lines),
        }
    }

    /// Closes every target, so that the next write reopens it: after logrotate moved a
    /// file away (SIGUSR1), or once a registry change removed its collector.
    pub fn reopen(&self) {
        self.files.borrow_mut().clear();
        self.syslogs.borrow_mut().clear();
    }

    fn write_file(&self, path: &Path, lines: &str) -> Result<(), String> {
        let mut files = self.files.borrow_mut();
        if !files.contains_key(path) {
            let file = open_regular_file(path)?;
            files.insert(path.to_path_buf(), file);
        }
        let written = match files.get_mut(path) {
            Some(file) => append_whole(file, lines.as_bytes()),
            None => Ok(()),
        };
        written.map_err(|e| {
            // A broken descriptor is not reused: the next event reopens the file.
            files.remove(path);
            format!("cannot write to {}: {e}", path.display())
        })
    }

    fn write_syslog(&self, ident: &str, lines: &str) -> Result<(), String> {
        let mut syslogs = self.syslogs.borrow_mut();
        if !syslogs.contains_key(ident) {
            let formatter = Formatter3164 {
                facility: Facility::LOG_USER,
                hostname: None,
                process: ident.to_string(),
                pid: std::process::id(),
            };
            let writer = match &self.syslog_socket {
                Some(path) => syslog::unix_custom(formatter, path),
                None => syslog::unix(formatter),
            }
            .map_err(|e| format!("cannot reach syslog: {e}"))?;
            syslogs.insert(ident.to_string(), writer);
        }
        let Some(writer) = syslogs.get_mut(ident) else {
            return Ok(());
        };
        for line in lines.lines() {
            if let Err(e) = writer.info(line) {
                syslogs.remove(ident);
                return Err(format!("cannot write to syslog: {e}"));
            }
        }
        Ok(())
    }
}

/// Opens a file target (see `files::open_for_append`), the error worded for the client.
fn open_regular_file(path: &Path) -> Result<File, String> {
    crate::files::open_for_append(path).map_err(|e| match e.raw_os_error() {
        Some(libc::ELOOP) => format!("cannot open {}: it is a symlink", path.display()),
        Some(libc::ENXIO) => format!("cannot open {}: it is a FIFO", path.display()),
        _ => format!("cannot open {}: {e}", path.display()),
    })
}

/// One `write` of `bytes`; a short write (a full disk) is cut back off the file, so that
/// no partial line stays for the next line to be glued onto.
fn append_whole(file: &mut File, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Seek;
    let written = loop {
        match file.write(bytes) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => break other?,
        }
    };
    if written == bytes.len() {
        return Ok(());
    }
    // With O_APPEND the offset is now the end of what this write put there.
    let end = file.stream_position()?;
    if file.metadata()?.len() == end {
        file.set_len(end - written as u64)?;
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::WriteZero,
        format!("only {written} of {} bytes written, undone", bytes.len()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_lines_are_appended_and_a_missing_folder_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let appenders = Appenders::default();
        let file = Appender::File { path: path.clone() };
        appenders.write(&file, "{\"a\":1}\n").unwrap();
        appenders.write(&file, "{\"a\":2}\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"a\":1}\n{\"a\":2}\n"
        );

        let nowhere = Appender::File {
            path: dir.path().join("missing/events.jsonl"),
        };
        let message = appenders.write(&nowhere, "{}\n").unwrap_err();
        assert!(message.contains("missing/events.jsonl"), "{message}");
    }

    #[test]
    fn a_symlink_a_fifo_or_a_folder_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "untouched").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join("link")).unwrap();
        nix::unistd::mkfifo(&dir.path().join("fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        let appenders = Appenders::default();
        for (name, why) in [("link", "symlink"), ("fifo", "FIFO")] {
            let target = Appender::File {
                path: dir.path().join(name),
            };
            let message = appenders.write(&target, "{}\n").unwrap_err();
            assert!(message.contains(why), "{name}: {message}");
        }
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
        let folder = Appender::File {
            path: dir.path().to_path_buf(),
        };
        assert!(appenders.write(&folder, "{}\n").is_err());
    }
}
