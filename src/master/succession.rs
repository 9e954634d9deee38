//! Succession, the component: an upgrade in place as one mode (`Mode`: settled, the old
//! master's side while its successor starts, the new master's side until it takes
//! over), what a successor inherits (`Inheritance`, by descriptor numbers in
//! `EVENTSD_UPGRADE`), and what it holds until it takes over. The verbs that drive it
//! (start a successor, hand over, take over) are `upgrade.rs`.
//!
//! Never forks or waits: plain state, and the inherited descriptors.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use anyhow::Context;
use log::error;
use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::poll::PollFlags;
use serde::{Deserialize, Serialize};
use socket2::Socket;

use super::pool::Asker;
use crate::child::Child;
use crate::logging::Sink;
use crate::protocol::channel::Channel;
use crate::protocol::worker::Question;
use crate::watch::CountBatch;
use crate::watch::store::Second;

/// The environment variable that names what a successor inherits.
pub(super) const INHERITANCE: &str = "EVENTSD_UPGRADE";

/// The descriptors a successor inherits, and how its predecessor logged.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Inheritance {
    pub(super) listener: RawFd,
    pub(super) control: RawFd,
    pub(super) pidfile: RawFd,
    pub(super) predecessor: RawFd,
    /// The predecessor was started by `eventsd start`: logs go to syslog unless
    /// `daemon.log` says otherwise.
    pub(super) syslog_by_default: bool,
}

impl Inheritance {
    /// Marks the inherited descriptors to close on `exec` (`true`), or to cross it.
    pub(super) fn close_on_exec(&self, close: bool) -> anyhow::Result<()> {
        for fd in [self.listener, self.control, self.pidfile, self.predecessor] {
            set_close_on_exec(fd, close)?;
        }
        Ok(())
    }
}

/// What a successor tells the master it replaces.
#[derive(Debug, Serialize, Deserialize)]
pub(super) enum SuccessorMessage {
    /// Its workers serve: the old master may drain and hand over.
    Ready,
}

/// Succession, both sides of it: the component that owns an upgrade in place. Nothing
/// outside this file tests its mode: the others are told when it changes (built held,
/// released at the take-over) or hand it what it holds (`defer_change`).
pub(super) struct Succession {
    pub(super) mode: Mode,
    /// Upgrades that failed, and why the last one did (the status `eventsd upgrade` reads).
    failed: u64,
    last_error: Option<String>,
}

pub(super) enum Mode {
    /// Neither upgrading nor taking over.
    Settled,
    /// The old master's side: the successor it started.
    Upgrading(Upgrade),
    /// The successor's side, until it takes over.
    TakingOver(Predecessor),
}

/// The old master's side: the successor it started.
pub(super) struct Upgrade {
    pub(super) successor: Child,
    /// It said `Ready`: this master is handing over.
    pub(super) ready: bool,
}

/// The successor's side: what it inherited from the master it replaces.
pub(super) struct Predecessor {
    pub(super) channel: Channel,
    pub(super) control: OwnedFd,
    pub(super) pidfile: OwnedFd,
    /// Counts its workers sent, with the second they arrived.
    pub(super) deferred_counts: Vec<(Second, CountBatch)>,
    /// Registry changes its workers asked for: (worker, question id, question).
    pub(super) deferred_changes: Vec<(Asker, Question)>,
}

/// The log sink a successor falls back on: its predecessor's (syslog after `start`).
pub fn inherited_default_sink() -> Option<Sink> {
    let text = std::env::var(INHERITANCE).ok()?;
    let inheritance: Inheritance = serde_json::from_str(&text).ok()?;
    Some(if inheritance.syslog_by_default {
        Sink::Syslog
    } else {
        Sink::Stderr
    })
}

impl Succession {
    /// What the previous master handed over, if this process is a successor (its
    /// listening socket, and the succession in `TakingOver`). Taken once, at start: the
    /// variable is removed so that nothing later takes it again.
    pub(super) fn inherited() -> anyhow::Result<(Option<Socket>, Succession)> {
        let mut succession = Succession {
            mode: Mode::Settled,
            failed: 0,
            last_error: None,
        };
        let Ok(text) = std::env::var(INHERITANCE) else {
            return Ok((None, succession));
        };
        // SAFETY: at start-up, before any thread or fork; nothing else reads it.
        unsafe { std::env::remove_var(INHERITANCE) };
        let inheritance: Inheritance = serde_json::from_str(&text)
            .with_context(|| format!("unreadable {INHERITANCE} from the previous master"))?;
        // Not for this master's own children, nor a later successor but by choice.
        inheritance.close_on_exec(true)?;
        // SAFETY: the previous master opened these descriptors for this process and named
        // them; nothing else in this process owns them.
        let (listener, control, pidfile, predecessor) = unsafe {
            (
                Socket::from_raw_fd(inheritance.listener),
                OwnedFd::from_raw_fd(inheritance.control),
                OwnedFd::from_raw_fd(inheritance.pidfile),
                UnixStream::from_raw_fd(inheritance.predecessor),
            )
        };
        let channel =
            Channel::new(predecessor).context("cannot set up the channel to the old master")?;
        succession.mode = Mode::TakingOver(Predecessor {
            channel,
            control,
            pidfile,
            deferred_counts: Vec::new(),
            deferred_changes: Vec::new(),
        });
        Ok((Some(listener), succession))
    }

    /// A master taking over from an old one: until it has, it owns no state file (the
    /// old one writes them), starts no runner, link or snapshot, and holds counts and
    /// changes. What its components are built with; they are released by `take_over`.
    pub(super) fn is_taking_over(&self) -> bool {
        matches!(self.mode, Mode::TakingOver(_))
    }

    /// Its child, the successor, for the process table.
    pub(super) fn child(&self) -> Option<&Child> {
        match &self.mode {
            Mode::Upgrading(upgrade) => Some(&upgrade.successor),
            _ => None,
        }
    }

    pub(super) fn child_mut(&mut self) -> Option<&mut Child> {
        match &mut self.mode {
            Mode::Upgrading(upgrade) => Some(&mut upgrade.successor),
            _ => None,
        }
    }

    /// Descriptors this master's own children must close at once.
    pub(super) fn raw_fds(&self) -> Vec<RawFd> {
        match &self.mode {
            Mode::TakingOver(predecessor) => vec![
                std::os::fd::AsFd::as_fd(&predecessor.channel).as_raw_fd(),
                predecessor.control.as_raw_fd(),
                predecessor.pidfile.as_raw_fd(),
            ],
            _ => Vec::new(),
        }
    }

    /// What the wait polls for it: the old master's channel, while taking over.
    pub(super) fn poll_interest(&self) -> Option<(std::os::fd::BorrowedFd<'_>, PollFlags)> {
        let Mode::TakingOver(predecessor) = &self.mode else {
            return None;
        };
        let flags = if predecessor.channel.wants_write() {
            PollFlags::POLLIN | PollFlags::POLLOUT
        } else {
            PollFlags::POLLIN
        };
        Some((std::os::fd::AsFd::as_fd(&predecessor.channel), flags))
    }

    /// Counts, held while taking over (given back otherwise).
    pub(super) fn defer_counts(&mut self, batch: CountBatch, now: Second) -> Option<CountBatch> {
        match &mut self.mode {
            Mode::TakingOver(predecessor) => {
                predecessor.deferred_counts.push((now, batch));
                None
            }
            _ => Some(batch),
        }
    }

    /// A registry change, held while taking over (given back otherwise).
    pub(super) fn defer_change(
        &mut self,
        asker: Asker,
        question: Question,
    ) -> Option<(Asker, Question)> {
        match &mut self.mode {
            Mode::TakingOver(predecessor) => {
                predecessor.deferred_changes.push((asker, question));
                None
            }
            _ => Some((asker, question)),
        }
    }

    /// A stop while the successor starts: it gives up, and leaves every file to this
    /// master.
    pub(super) fn stop_successor(&mut self, why: &str) {
        if let Some(successor) = self.child_mut() {
            successor.terminate(why);
        }
    }

    /// (in progress, failed so far, the last failure): for the status.
    pub(super) fn report(&self) -> (bool, u64, Option<String>) {
        let in_progress = matches!(self.mode, Mode::Upgrading(_));
        (in_progress, self.failed, self.last_error.clone())
    }

    pub(super) fn failed(&mut self, error: String) {
        error!("{error}; this master carries on");
        self.failed += 1;
        self.last_error = Some(error);
    }
}

fn set_close_on_exec(fd: RawFd, close: bool) -> anyhow::Result<()> {
    // SAFETY: `fd` is open for the whole call (the caller owns it).
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let flags = if close {
        FdFlag::FD_CLOEXEC
    } else {
        FdFlag::empty()
    };
    fcntl(borrowed, FcntlArg::F_SETFD(flags))
        .with_context(|| format!("cannot set close-on-exec on descriptor {fd}"))?;
    Ok(())
}
