//! Signals of the master, turned into flags of its poll loop through a signalfd, and the
//! once-a-second SIGALRM tick that drives every timeout the master enforces.
//!
//! Owns the master's signal mask. No work ever happens in a signal handler: there is no
//! handler at all. The signals stay blocked, the loop reads them from the signalfd into
//! `Requested` (nginx's `ngx_quit`, `ngx_reconfigure`... flags), and the cycle acts on
//! the flags in its fixed order.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

use anyhow::Context;
use log::debug;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};

const HANDLED: [Signal; 10] = [
    Signal::SIGCHLD,
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGHUP,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGTTIN,
    Signal::SIGTTOU,
    Signal::SIGALRM,
];

pub struct Signals {
    fd: SignalFd,
}

/// What the signals received since the last turn of the loop ask for. Signals of one
/// kind that arrive together are merged (by the kernel, and here): every request is
/// idempotent.
#[derive(Debug, Default)]
pub struct Requested {
    /// SIGTERM.
    pub graceful_stop: bool,
    /// SIGINT or SIGQUIT, whichever came.
    pub fast_stop: Option<Signal>,
    /// SIGHUP.
    pub reload: bool,
    /// SIGUSR1.
    pub reopen_logs: bool,
    /// SIGUSR2: replace the binary (`upgrade`).
    pub upgrade: bool,
    /// SIGTTIN adds one worker to the target, SIGTTOU takes one away.
    pub resize: isize,
    /// SIGALRM: the timeouts are due.
    pub tick: bool,
}

impl Signals {
    /// Blocks the handled signals, opens the signalfd and starts the 1 s tick. Call
    /// before the first fork: children inherit the mask and clear it (`child`).
    pub fn install() -> anyhow::Result<Signals> {
        let mut mask = SigSet::empty();
        for signal in HANDLED {
            mask.add(signal);
        }
        sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None).context("cannot block signals")?;
        let fd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .context("cannot create the signalfd")?;
        start_tick()?;
        Ok(Signals { fd })
    }

    /// Reads every pending signal into `requested`. SIGCHLD asks for nothing: the loop
    /// reaps after every wake-up anyway.
    pub fn read_into(&mut self, requested: &mut Requested) -> anyhow::Result<()> {
        while let Some(signal) = self.next()? {
            debug!("received {signal}");
            match signal {
                Signal::SIGTERM => requested.graceful_stop = true,
                Signal::SIGINT | Signal::SIGQUIT => requested.fast_stop = Some(signal),
                Signal::SIGHUP => requested.reload = true,
                Signal::SIGUSR1 => requested.reopen_logs = true,
                Signal::SIGUSR2 => requested.upgrade = true,
                Signal::SIGTTIN => requested.resize += 1,
                Signal::SIGTTOU => requested.resize -= 1,
                Signal::SIGALRM => requested.tick = true,
                _ => {}
            }
        }
        Ok(())
    }

    fn next(&mut self) -> anyhow::Result<Option<Signal>> {
        loop {
            let Some(info) = self.fd.read_signal().context("cannot read the signalfd")? else {
                return Ok(None);
            };
            if let Ok(signal) = Signal::try_from(info.ssi_signo as i32) {
                return Ok(Some(signal));
            }
        }
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for Signals {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

fn start_tick() -> anyhow::Result<()> {
    let second = libc::timeval {
        tv_sec: 1,
        tv_usec: 0,
    };
    let timer = libc::itimerval {
        it_interval: second,
        it_value: second,
    };
    // SAFETY: plain syscall with a valid itimerval and no old-value pointer.
    let result = unsafe { libc::setitimer(libc::ITIMER_REAL, &timer, std::ptr::null_mut()) };
    if result != 0 {
        return Err(std::io::Error::last_os_error())
            .context("cannot start the 1 s tick (setitimer)");
    }
    Ok(())
}
