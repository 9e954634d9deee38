//! Dropping privileges in a forked child (worker or action runner): chroot, then
//! setgroups, setgid, setuid, in this order, or a step would lack the right to do the
//! next; then a check that it took effect.
//!
//! A child already running as the wanted identity (a master started by systemd with
//! `User=eventsd` and `workers.user = "eventsd"`) changes nothing: setgroups would need a
//! capability it does not have and does not need.
//!
//! Either way the child ends with no capability at all (security.md): a worker serves
//! HTTP on a socket the master bound, and needs none, not even the
//! `CAP_NET_BIND_SERVICE` the systemd unit gives the master.

use anyhow::{Context, bail};
use nix::unistd::{Gid, Uid};

use crate::config::Privileges;

/// Takes the workers' identity; `chroot` too when `with_chroot`.
pub fn drop_to(privileges: &Privileges, with_chroot: bool) -> anyhow::Result<()> {
    if let Some(dir) = privileges.chroot.as_ref().filter(|_| with_chroot) {
        nix::unistd::chroot(dir).with_context(|| format!("cannot chroot to {}", dir.display()))?;
        nix::unistd::chdir("/").context("cannot chdir to / in the chroot")?;
    }
    let want_uid = privileges.uid.unwrap_or_else(Uid::effective);
    let want_gid = privileges.gid.unwrap_or_else(Gid::effective);
    if want_uid == Uid::effective() && want_gid == Gid::effective() {
        return drop_capabilities();
    }
    nix::unistd::setgroups(&[want_gid])
        .with_context(|| format!("cannot set groups to [{want_gid}]"))?;
    nix::unistd::setgid(want_gid).with_context(|| format!("cannot set group id {want_gid}"))?;
    nix::unistd::setuid(want_uid).with_context(|| format!("cannot set user id {want_uid}"))?;
    if Uid::effective() != want_uid || Gid::effective() != want_gid {
        bail!(
            "privilege drop failed: running as uid {} gid {}, wanted {want_uid} {want_gid}",
            Uid::effective(),
            Gid::effective()
        );
    }
    drop_capabilities()
}

/// Clears the ambient, effective, permitted and inheritable capability sets: what a
/// process may always do to itself.
fn drop_capabilities() -> anyhow::Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    // SAFETY: plain prctl; PR_CAP_AMBIENT_CLEAR_ALL takes no pointer.
    let cleared = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    // EINVAL: a kernel without ambient capabilities has none to clear.
    if cleared != 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
        return Err(std::io::Error::last_os_error()).context("cannot clear ambient capabilities");
    }
    let header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let none = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capset reads one header and, for version 3, two data structs.
    let result = unsafe { libc::syscall(libc::SYS_capset, &header, none.as_ptr()) };
    if result != 0 {
        return Err(std::io::Error::last_os_error()).context("cannot drop capabilities");
    }
    Ok(())
}
