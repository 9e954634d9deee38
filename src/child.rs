//! One lifecycle for every process the master forks, whatever its role (an HTTP worker,
//! the action runner, a counters snapshot, a new master during an upgrade, the cluster
//! link): how it is forked with its channel, what it does first and last, what differs
//! between roles (`RoleSpec`: names, heartbeats, respawn policy, unread limit), and the
//! record the master keeps of it (spawned at, stopping since, killed because). nginx
//! keeps one process table; this is its row (the table: `master/table.rs`).
//!
//! The child side never returns into the master's code: the master's objects copied by
//! the fork are never dropped there, which is what makes closing their descriptors by
//! number safe. The master side never blocks: stopping is a message (or SIGTERM), killing
//! is SIGKILL, and both only record when they happened for the master's tick to judge.

use std::ffi::CStr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use anyhow::Context;
use log::{debug, error, info, warn};
use nix::poll::PollFlags;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask};
use nix::unistd::{ForkResult, Pid, fork};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::clock::Stamp;
use crate::logging;
use crate::protocol::channel::Channel;

/// What a child is for: it names the child in logs and in `ps`, and says how the master
/// keeps it (`RoleSpec`, one row of the process table each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Serves HTTP (`worker`).
    Worker,
    /// Delivers firings (`action`).
    ActionRunner,
    /// Writes the counters from its copy-on-write image of the master, then exits.
    Snapshot,
    /// Executes the binary on disk as the master that replaces this one (`upgrade`).
    Successor,
    /// Talks to Redis for the master: shared counters and registry (`cluster`).
    ClusterLink,
}

/// How the master keeps the children of a role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Respawn {
    /// As many as the pool's target, paced by its crash backoff (`master/pool.rs`).
    Pool,
    /// One, always: replaced when it exits, after a pause when it died young
    /// (`master/table.rs::Kept`).
    KeepOne,
    /// Started for one job by its owner, never replaced.
    Once,
}

/// One row of the process table: everything that differs between roles but their
/// messages and what the master does with them.
pub struct RoleSpec {
    /// The name the child's log lines carry.
    log_name: &'static str,
    /// What `ps` shows as its command line, as nginx names its processes.
    title: &'static str,
    process_name: &'static CStr,
    /// How the master's log names a child of this role.
    describe: &'static str,
    /// Whether it sends heartbeats, and is judged hung without them.
    beats: bool,
    respawn: Respawn,
    /// What the master may have queued for it unread before it is judged stuck ("it
    /// stopped reading") and killed. `None`: its heartbeat judges it (a worker may
    /// legitimately be sent a registry of `registry.max_bytes` at once).
    unread_limit: Option<usize>,
}

/// What the master may queue unread for a child that only ever gets small messages.
const MAX_UNREAD_BYTES: usize = 64 * 1024 * 1024;

impl Role {
    fn spec(self) -> &'static RoleSpec {
        match self {
            Role::Worker => &RoleSpec {
                log_name: "worker",
                title: "eventsd: worker process",
                process_name: c"eventsd-worker",
                describe: "worker",
                beats: true,
                respawn: Respawn::Pool,
                unread_limit: None,
            },
            Role::ActionRunner => &RoleSpec {
                log_name: "action",
                title: "eventsd: action runner",
                process_name: c"eventsd-action",
                describe: "action runner",
                beats: true,
                respawn: Respawn::KeepOne,
                unread_limit: Some(MAX_UNREAD_BYTES),
            },
            Role::Snapshot => &RoleSpec {
                log_name: "snapshot",
                title: "eventsd: counters snapshot",
                process_name: c"eventsd-snapshot",
                describe: "counters snapshot",
                beats: false,
                respawn: Respawn::Once,
                unread_limit: None,
            },
            Role::Successor => &RoleSpec {
                log_name: "successor",
                title: "eventsd: new master (upgrade)",
                process_name: c"eventsd-next",
                describe: "new master",
                beats: false,
                respawn: Respawn::Once,
                unread_limit: None,
            },
            Role::ClusterLink => &RoleSpec {
                log_name: "cluster",
                title: "eventsd: cluster link",
                process_name: c"eventsd-cluster",
                describe: "cluster link",
                beats: false,
                respawn: Respawn::KeepOne,
                unread_limit: Some(MAX_UNREAD_BYTES),
            },
        }
    }

    /// Whether children of this role send heartbeats, and are judged hung without them.
    pub fn beats(self) -> bool {
        self.spec().beats
    }

    pub fn respawn(self) -> Respawn {
        self.spec().respawn
    }

    /// How the master's log names a child of this role.
    pub fn describe(self) -> &'static str {
        self.spec().describe
    }
}

/// The master's record of one live child.
pub struct Child {
    pub role: Role,
    pub pid: Pid,
    /// `None` once the child closed its end (it is exiting; SIGCHLD will follow).
    pub channel: Option<Channel>,
    pub spawned_at: Instant,
    /// When the child was told to stop (or announced that it stops on its own).
    pub stopping_since: Option<Instant>,
    /// Why the master SIGKILLed it, if it did.
    pub killed_because: Option<&'static str>,
    /// When the child last said it lives (its fork, until it does), by its own clock
    /// stamp: what `silence_past` judges, for the roles that send heartbeats.
    last_heartbeat: Stamp,
}

/// Forks a child of `role` connected to the master by a socketpair, and returns the
/// master's record of it. In the child, the descriptors of `master_fds` are closed at
/// once, then `body` runs with the child's end of the channel; the child exits when
/// `body` returns (0 on success, 1 after logging its error).
pub fn fork_child(
    role: Role,
    master_fds: &[RawFd],
    body: impl FnOnce(UnixStream) -> anyhow::Result<()>,
) -> anyhow::Result<Child> {
    let (master_end, child_end) = UnixStream::pair()
        .with_context(|| format!("cannot create the socketpair of a {}", role.describe()))?;
    // SAFETY: the master is single-threaded, so the child starts with a consistent copy
    // of it, and `run_child` never returns into the master's code.
    match unsafe { fork() }.context("fork failed")? {
        ForkResult::Child => {
            let mut closed = master_fds.to_vec();
            closed.push(master_end.as_raw_fd());
            run_child(role, &closed, || body(child_end))
        }
        ForkResult::Parent { child } => {
            let channel = Channel::new(master_end).with_context(|| {
                format!("cannot set up the channel of {} {child}", role.describe())
            })?;
            debug!("forked {} {child}", role.describe());
            Ok(Child {
                role,
                pid: child,
                channel: Some(channel),
                spawned_at: Instant::now(),
                stopping_since: None,
                killed_because: None,
                last_heartbeat: Stamp::now(),
            })
        }
    }
}

/// The child's whole life: its prologue, `body`, its exit code.
fn run_child(role: Role, master_fds: &[RawFd], body: impl FnOnce() -> anyhow::Result<()>) -> ! {
    logging::set_role(role.spec().log_name);
    for fd in master_fds {
        // SAFETY: these descriptors belong to the master's objects, never used or
        // dropped in this process (see the module comment).
        unsafe { libc::close(*fd) };
    }
    let outcome = prepare(role).and_then(|()| body());
    let code = match outcome {
        Ok(()) => 0,
        Err(e) => {
            error!("{e:#}");
            1
        }
    };
    std::process::exit(code)
}

/// Names the process, then takes signals again: the master blocks the signals it reads
/// from its signalfd, and the mask survives the fork. Interval timers do not, so the
/// child has no tick to stop. SIGUSR2 is for the master alone: a `systemctl kill -s USR2`
/// that reaches the whole service must not end its workers (the signal's default). A
/// successor keeps the default, since an ignored signal stays ignored across `exec`.
fn prepare(role: Role) -> anyhow::Result<()> {
    nix::sys::prctl::set_name(role.spec().process_name).context("cannot set the process name")?;
    crate::title::set(role.spec().title);
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
        .context("cannot restore the signal mask")?;
    if role != Role::Successor {
        // SAFETY: SIG_IGN installs no handler code.
        unsafe { nix::sys::signal::signal(Signal::SIGUSR2, nix::sys::signal::SigHandler::SigIgn) }
            .context("cannot ignore SIGUSR2")?;
    }
    Ok(())
}

impl Child {
    pub fn is_stopping(&self) -> bool {
        self.stopping_since.is_some()
    }

    pub fn age(&self, now: Instant) -> Duration {
        now.duration_since(self.spawned_at)
    }

    /// Asks the child to finish what it holds and exit: `stop` on its channel, or SIGTERM,
    /// which asks the same, when it cannot be told. Once only.
    pub fn stop(&mut self, stop: &impl Serialize, why: &str) {
        if self.is_stopping() {
            return;
        }
        let told = self.channel.as_mut().map(|channel| channel.send(stop));
        if matches!(told, Some(Ok(()))) {
            info!("stopping {self}: {why}");
            self.stopping_since = Some(Instant::now());
        } else {
            self.terminate(why);
        }
    }

    /// SIGTERM, which asks a child to finish and exit as `stop` does. Once only.
    pub fn terminate(&mut self, why: &str) {
        if self.is_stopping() {
            return;
        }
        info!("stopping {self} (SIGTERM): {why}");
        self.stopping_since = Some(Instant::now());
        let _ = kill(self.pid, Signal::SIGTERM);
    }

    /// SIGKILL, once, remembering why for the reaper's log line.
    pub fn kill(&mut self, because: &'static str, details: &str) {
        if self.killed_because.is_some() {
            return;
        }
        warn!("killing {self}: {because} ({details})");
        self.killed_because = Some(because);
        if let Err(e) = kill(self.pid, Signal::SIGKILL) {
            warn!("cannot SIGKILL {self}: {e}");
        }
    }

    /// A fast stop: SIGKILL without a word, the master is going too.
    pub fn halt(&mut self) {
        self.stopping_since.get_or_insert_with(Instant::now);
        let _ = kill(self.pid, Signal::SIGKILL);
    }

    /// Told to stop longer ago than `graceful_timeout`.
    pub fn is_overdue(&self, now: Instant, graceful_timeout: Duration) -> bool {
        self.stopping_since
            .is_some_and(|since| now.duration_since(since) > graceful_timeout)
    }

    /// Queues `message`; a child that cannot be written to is about to be reaped. The
    /// one "stopped reading" rule: a child of a role with an unread limit that leaves
    /// more than that unread is stuck, and killed: the master never buffers for it
    /// without bound.
    pub fn send(&mut self, message: &impl Serialize) {
        let Some(channel) = self.channel.as_mut() else {
            return;
        };
        if let Err(e) = channel.send(message) {
            warn!("cannot send to {self}: {e}");
        }
        let queued = self.queued_bytes();
        if let Some(limit) = self.role.spec().unread_limit.filter(|&l| queued > l) {
            let details = format!("{} MiB unread", limit / (1024 * 1024));
            self.kill("it stopped reading", &details);
        }
    }

    /// Whether it still reads what the master sends: its channel open, not told to stop.
    pub fn listens(&self) -> bool {
        self.channel.is_some() && !self.is_stopping()
    }

    /// A sign of life the child stamped at `sent_at` (a heartbeat, or its start).
    pub fn heard(&mut self, sent_at: Stamp) {
        self.last_heartbeat = self.last_heartbeat.max(sent_at);
    }

    /// How long the child has been silent, when that is longer than `timeout`: it hung.
    /// Never while its channel holds data the master has not read: its silence is then
    /// the master's delay (a stall, a long slice), not the child's hang.
    pub fn silence_past(&self, now: Stamp, timeout: Duration) -> Option<Duration> {
        let silence = self.last_heartbeat.age(now);
        let unread = self.channel.as_ref().is_some_and(Channel::has_unread);
        (silence > timeout && !unread).then_some(silence)
    }

    /// What poll should wait for on the channel, if the child still has one.
    pub fn poll_interest(&self) -> Option<(BorrowedFd<'_>, PollFlags)> {
        let channel = self.channel.as_ref()?;
        let flags = if channel.wants_write() {
            PollFlags::POLLIN | PollFlags::POLLOUT
        } else {
            PollFlags::POLLIN
        };
        Some((channel.as_fd(), flags))
    }

    /// The master's side of a ready channel: writes what waits, reads what came. A
    /// closed channel is dropped (the child is exiting); a broken one gets the child
    /// killed, since nothing it says can be trusted any more.
    pub fn exchange<M: DeserializeOwned>(&mut self, events: PollFlags) -> Vec<M> {
        let Some(channel) = self.channel.as_mut() else {
            return Vec::new();
        };
        match channel.exchange::<M>(events.contains(PollFlags::POLLOUT)) {
            Ok(received) => {
                if received.closed {
                    debug!("{self} closed its channel");
                    self.channel = None;
                }
                received.messages
            }
            Err(e) => {
                self.channel = None;
                self.kill("its IPC channel broke", &e.to_string());
                Vec::new()
            }
        }
    }

    /// Bytes queued for the child that it has not read yet.
    pub fn queued_bytes(&self) -> usize {
        self.channel.as_ref().map_or(0, Channel::queued_bytes)
    }

    pub fn channel_fd(&self) -> Option<RawFd> {
        self.channel.as_ref().map(|c| c.as_fd().as_raw_fd())
    }
}

/// `worker 1234`, `action runner 1235`: how every log line names a child.
impl std::fmt::Display for Child {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.role.describe(), self.pid)
    }
}
