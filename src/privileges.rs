//! Dropping privileges in a forked child (worker or action runner): chroot, then
//! setgroups, setgid, setuid, in this order, or a step would lack the right to do the
//! next; then a check that it took effect.
//!
//! A child already running as the wanted identity (a master started by systemd with
//! `User=eventsd` and `workers.user = "eventsd"`) changes nothing: setgroups would need a
//! capability it does not have and does not need.

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
        return Ok(());
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
    Ok(())
}
