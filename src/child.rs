//! What every child the master forks does first and last, whatever its role: close the
//! master's descriptors, name itself, take signals again; then exit with a code that
//! tells the master how it ended.
//!
//! A child never returns into the master's code: the master's objects copied by the fork
//! are never dropped here, which is what makes closing their descriptors by number safe.

use std::ffi::CStr;
use std::os::fd::RawFd;

use anyhow::Context;
use log::error;

use crate::logging;

/// Runs `body` as the child `role` (named `process_name` in `ps`), then exits: 0 when
/// `body` succeeded, 1 after logging its error.
pub fn run(
    role: &'static str,
    process_name: &CStr,
    master_fds: &[RawFd],
    body: impl FnOnce() -> anyhow::Result<()>,
) -> ! {
    logging::set_role(role);
    for fd in master_fds {
        // SAFETY: these descriptors belong to the master's objects, never used or
        // dropped in this process (see the module comment).
        unsafe { libc::close(*fd) };
    }
    let outcome = prepare(process_name).and_then(|()| body());
    let code = match outcome {
        Ok(()) => 0,
        Err(e) => {
            error!("{e:#}");
            1
        }
    };
    std::process::exit(code)
}

fn prepare(process_name: &CStr) -> anyhow::Result<()> {
    nix::sys::prctl::set_name(process_name).context("cannot set the process name")?;
    crate::master::unblock_signals().context("cannot restore the signal mask")?;
    Ok(())
}
