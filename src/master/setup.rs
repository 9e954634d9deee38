//! What the master sets up before its loop, and again on reload: the state folder, the
//! check that the configured identity is one it may take, the listening socket, and the
//! files of the state folder.
//!
//! Plain functions of the configuration; nothing here keeps state or forks.

use std::path::{Path, PathBuf};

use anyhow::Context;
use socket2::{Domain, Socket, Type};

use crate::config::Config;
use crate::registry::Registry;

pub(super) fn counters_path(config: &Config) -> PathBuf {
    config.daemon.state_dir.join("counters.json")
}

pub(super) fn registry_path(config: &Config) -> PathBuf {
    config.daemon.state_dir.join("registry.json")
}

/// The saved registry with the config file's declarations applied. A corrupt file stops
/// the start: it is the operator's data, never replaced behind their back.
pub(super) fn load_registry(config: &Config) -> anyhow::Result<Registry> {
    let path = registry_path(config);
    let mut registry = Registry::load(&path)?;
    if registry.declare(&config.event) {
        registry.save(&path)?;
    }
    Ok(registry)
}

pub(super) fn create_state_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(dir)
        .with_context(|| format!("cannot create state folder {}", dir.display()))
}

/// Only root may hand workers another identity or a chroot.
pub(super) fn check_privileges(config: &Config) -> anyhow::Result<()> {
    let privileges = &config.workers.privileges;
    let needs_root = privileges.chroot.is_some()
        || privileges
            .uid
            .is_some_and(|uid| uid != nix::unistd::geteuid())
        || privileges
            .gid
            .is_some_and(|gid| gid != nix::unistd::getegid());
    if needs_root && !nix::unistd::geteuid().is_root() {
        anyhow::bail!(
            "workers.user, workers.group and workers.chroot need eventsd to be started as root"
        );
    }
    Ok(())
}

/// Binds the listening socket that every worker inherits.
pub(super) fn bind(config: &Config) -> anyhow::Result<Socket> {
    let address = config.server.listen;
    let socket = Socket::new(Domain::for_address(address), Type::STREAM, None)
        .with_context(|| format!("cannot create a socket for {address}"))?;
    socket
        .set_reuse_address(true)
        .and_then(|()| socket.bind(&address.into()))
        .and_then(|()| socket.listen(config.server.backlog))
        .and_then(|()| socket.set_nonblocking(true))
        .with_context(|| format!("cannot listen on {address}"))?;
    Ok(socket)
}
