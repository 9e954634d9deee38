//! Signals of the master, turned into events of its poll loop through a signalfd, and the
//! once-a-second SIGALRM tick that drives every timeout the master enforces.
//!
//! Owns the master's signal mask. No work ever happens in a signal handler: there is no
//! handler at all. The signals stay blocked and the loop reads them from the signalfd.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

use anyhow::Context;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};

const HANDLED: [Signal; 9] = [
    Signal::SIGCHLD,
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGHUP,
    Signal::SIGUSR1,
    Signal::SIGTTIN,
    Signal::SIGTTOU,
    Signal::SIGALRM,
];

pub struct Signals {
    fd: SignalFd,
}

impl Signals {
    /// Blocks the handled signals, opens the signalfd and starts the 1 s tick. Call
    /// before the first fork: children inherit the mask and must call `unblock_all`.
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

    /// The next pending signal, if any. Signals of one kind that arrive together are
    /// merged by the kernel; every handler is written to cope (reaping loops, ticks).
    pub fn next(&mut self) -> anyhow::Result<Option<Signal>> {
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

/// In a freshly forked child: deliver every signal again. Interval timers are not
/// inherited across fork, so the child has no tick to stop.
pub fn unblock_all() -> nix::Result<()> {
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
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
