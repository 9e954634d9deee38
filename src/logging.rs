//! Logging: one `log` backend for every process of eventsd, writing to stderr, syslog or
//! a file, each line naming the role (`master`, `worker`...) and the pid.
//!
//! Owns the log sink and its reopening (SIGUSR1, logrotate). Every process is
//! single-threaded, so the sink's mutex is never held across a `fork`. Logging never
//! fails the caller: a line that cannot be written is dropped.

use std::ffi::CString;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use anyhow::Context;
use log::{Level, LevelFilter, Log, Metadata, Record};

use crate::config::LogTarget;

/// Where lines go, once `LogTarget::Default` has been decided by the command.
#[derive(Debug, Clone, PartialEq)]
pub enum Sink {
    Stderr,
    Syslog,
    File(PathBuf),
}

impl Sink {
    /// The sink for `daemon.log`; `default` when the config leaves it unset.
    pub fn for_target(target: &LogTarget, default: Sink) -> Sink {
        match target {
            LogTarget::Default => default,
            LogTarget::Stderr => Sink::Stderr,
            LogTarget::Syslog => Sink::Syslog,
            LogTarget::File(path) => Sink::File(path.clone()),
        }
    }
}

enum Output {
    Stderr,
    Syslog,
    File { path: PathBuf, file: File },
}

struct State {
    output: Output,
    role: &'static str,
    pid: u32,
}

struct Logger {
    state: Mutex<Option<State>>,
}

static LOGGER: Logger = Logger {
    state: Mutex::new(None),
};

/// Installs the logger for this process (the master, or a CLI command).
pub fn init(sink: &Sink, level: LevelFilter) -> anyhow::Result<()> {
    let output = open(sink)?;
    *lock() = Some(State {
        output,
        role: "master",
        pid: std::process::id(),
    });
    // A second init (tests, or `restart` in one process) keeps the installed logger.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
    Ok(())
}

/// Switches sink and level, e.g. after a reload changed `daemon.log`.
pub fn reconfigure(sink: &Sink, level: LevelFilter) -> anyhow::Result<()> {
    let output = open(sink)?;
    if let Some(state) = lock().as_mut() {
        state.output = output;
    }
    log::set_max_level(level);
    Ok(())
}

/// Reopens a log file by its path (after logrotate moved it away).
pub fn reopen() -> anyhow::Result<()> {
    let mut guard = lock();
    if let Some(State {
        output: Output::File { path, file },
        ..
    }) = guard.as_mut()
    {
        *file = open_file(path)?;
    }
    Ok(())
}

/// Gives the log file to the workers' user, so that they can reopen it after a rotation
/// (the master, started as root, created it). Nothing to do for stderr and syslog.
pub fn hand_over(privileges: &crate::config::Privileges) -> anyhow::Result<()> {
    if let Some(State {
        output: Output::File { path, file },
        ..
    }) = lock().as_ref()
    {
        give_to_workers(file, path, privileges)?;
    }
    Ok(())
}

/// Creates the access log if it is set and missing (the master, maybe as root, at start,
/// reload and SIGUSR1, before the workers open it) and gives it to the workers' user.
pub fn prepare_access_log(config: &crate::config::Config) -> anyhow::Result<()> {
    let Some(path) = &config.daemon.access_log else {
        return Ok(());
    };
    let file = open_file(path)?;
    give_to_workers(&file, path, &config.workers.privileges)
}

/// By descriptor, never by path: a symlink swapped in at the path must not get its target
/// chowned (nginx's CVE-2016-1247).
fn give_to_workers(
    file: &File,
    path: &Path,
    privileges: &crate::config::Privileges,
) -> anyhow::Result<()> {
    if privileges.uid.is_none() {
        return Ok(());
    }
    // The owner only: the group stays the folder's (`adm` for the package's logs, as
    // nginx's and redis'), and the workers' user may reopen a file it owns.
    nix::unistd::fchown(file, privileges.uid, None).with_context(|| {
        format!(
            "cannot give log file {} to the workers' user",
            path.display()
        )
    })
}

/// Called in a child right after `fork`: its lines name its own role and pid.
pub fn set_role(role: &'static str) {
    if let Some(state) = lock().as_mut() {
        state.role = role;
        state.pid = std::process::id();
    }
}

/// The file descriptor a child must keep open to go on logging, if any.
pub fn raw_fd() -> Option<i32> {
    match lock().as_ref().map(|state| &state.output) {
        Some(Output::File { file, .. }) => Some(file.as_raw_fd()),
        _ => None,
    }
}

fn lock() -> std::sync::MutexGuard<'static, Option<State>> {
    // A panic while logging leaves the state usable: take it back.
    LOGGER.state.lock().unwrap_or_else(|e| e.into_inner())
}

fn open(sink: &Sink) -> anyhow::Result<Output> {
    Ok(match sink {
        Sink::Stderr => Output::Stderr,
        Sink::Syslog => {
            open_syslog();
            Output::Syslog
        }
        Sink::File(path) => Output::File {
            path: path.clone(),
            file: open_file(path)?,
        },
    })
}

/// Opens a log file (see `files::open_for_append`: never through a symlink, 0640).
fn open_file(path: &Path) -> anyhow::Result<File> {
    crate::files::create_parent_dir(path)?;
    crate::files::open_for_append(path).with_context(|| {
        format!(
            "cannot open log file {} (a symlink is never followed)",
            path.display()
        )
    })
}

fn open_syslog() {
    // LOG_PID makes syslog add the pid of the calling process to each line, so the
    // children's lines are told apart after the fork without reopening.
    unsafe {
        libc::openlog(
            c"eventsd".as_ptr(),
            libc::LOG_PID | libc::LOG_NDELAY,
            libc::LOG_DAEMON,
        )
    };
}

/// Whether a line comes from eventsd's own code: at `log_level = "debug"` or `"trace"`
/// an operator asks what eventsd does, and a dependency's detail would bury it (an HTTP
/// client's every step of every webhook, a TLS handshake's) or leak what the log must
/// not hold (ureq's trace dumps a webhook's headers, its `Authorization` too).
fn is_eventsd_own(target: &str) -> bool {
    target == "eventsd" || target.starts_with("eventsd::")
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
            && (metadata.level() <= Level::Info || is_eventsd_own(metadata.target()))
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let mut guard = lock();
        let Some(state) = guard.as_mut() else { return };
        match &mut state.output {
            Output::Syslog => {
                let line = format!("{}: {}", state.role, record.args());
                if let Ok(line) = CString::new(line) {
                    unsafe {
                        libc::syslog(
                            syslog_priority(record.level()),
                            c"%s".as_ptr(),
                            line.as_ptr(),
                        )
                    };
                }
            }
            Output::Stderr => {
                let line = format_line(state.role, state.pid, record);
                let _ = std::io::stderr().write_all(line.as_bytes());
            }
            Output::File { file, .. } => {
                let line = format_line(state.role, state.pid, record);
                let _ = file.write_all(line.as_bytes());
            }
        }
    }

    fn flush(&self) {}
}

fn format_line(role: &str, pid: u32, record: &Record) -> String {
    format!(
        "{} {:<5} {role}[{pid}]: {}\n",
        humantime::format_rfc3339_millis(SystemTime::now()),
        record.level(),
        record.args()
    )
}

fn syslog_priority(level: Level) -> libc::c_int {
    match level {
        Level::Error => libc::LOG_ERR,
        Level::Warn => libc::LOG_WARNING,
        Level::Info => libc::LOG_INFO,
        Level::Debug | Level::Trace => libc::LOG_DEBUG,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_info_only_eventsd_s_own_lines_are_said() {
        log::set_max_level(LevelFilter::Debug);
        let enabled = |level, target| {
            LOGGER.enabled(&Metadata::builder().level(level).target(target).build())
        };
        assert!(enabled(Level::Debug, "eventsd::action::deliver"));
        assert!(enabled(Level::Debug, "eventsd"));
        assert!(!enabled(Level::Debug, "ureq::unversioned::transport"));
        assert!(!enabled(Level::Debug, "eventsdx"));
        assert!(enabled(Level::Info, "ureq"));
        assert!(enabled(Level::Warn, "rustls::conn"));
        assert!(!enabled(Level::Trace, "eventsd::master"));
        log::set_max_level(LevelFilter::Trace);
        assert!(enabled(Level::Trace, "eventsd::master"));
        assert!(!enabled(Level::Trace, "ureq_proto::client"));
        assert!(!enabled(Level::Debug, "ureq::unversioned::transport"));
    }
}
