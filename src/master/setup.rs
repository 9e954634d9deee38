//! What the master sets up before its loop, and again on reload: the state folder, the
//! check that the configured identity is one it may take, the listening socket, and the
//! files of the state folder.
//!
//! Plain functions of the configuration; nothing here keeps state or forks.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use log::{error, warn};
use socket2::{Domain, Socket, Type};

use crate::config::{self, Config};
use crate::registry::Registry;

pub(super) fn counters_path(config: &Config) -> PathBuf {
    config.daemon.state_dir.join("counters.json")
}

pub(super) fn journal_path(config: &Config) -> PathBuf {
    config.daemon.state_dir.join("pending.jsonl")
}

pub(super) fn registry_path(config: &Config) -> PathBuf {
    config.daemon.state_dir.join("registry.json")
}

/// The saved registry with the config file's declarations applied. A corrupt file stops
/// the start: it is the operator's data, never replaced behind their back. It is read as
/// if a client had sent it (security.md): an entry that only the config file may hold is
/// dropped, with an error naming it.
pub(super) fn load_registry(config: &Config) -> anyhow::Result<Registry> {
    let path = registry_path(config);
    let mut registry = Registry::load(&path)?;
    let declared = registry.declare(&config.event);
    let refused = registry.drop_forbidden(&config.registry_rules());
    for refusal in &refused {
        error!("registry file {}: {refusal}; dropped", path.display());
    }
    if declared || !refused.is_empty() {
        registry.save(&path)?;
    }
    Ok(registry)
}

/// Creates the state folder, then refuses one that someone else could write in: another
/// user's `registry.json` would hold `command` watchers run as eventsd (PostgreSQL's rule
/// for its data folder).
pub(super) fn prepare_state_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    if !dir.is_dir() {
        // One level: the state folder, never a chain of parents (configtest says so).
        std::fs::DirBuilder::new()
            .mode(0o750)
            .create(dir)
            .with_context(|| format!("cannot create state folder {}", dir.display()))?;
    }
    let metadata = std::fs::metadata(dir)
        .with_context(|| format!("cannot inspect state folder {}", dir.display()))?;
    let me = nix::unistd::geteuid().as_raw();
    if metadata.uid() != me {
        bail!(
            "state folder {} is owned by uid {}, not by eventsd's user (uid {me}): \
             chown it to that user",
            dir.display(),
            metadata.uid()
        );
    }
    if metadata.mode() & 0o022 != 0 {
        bail!(
            "state folder {} may be written by group or others (mode {:o}): chmod go-w it",
            dir.display(),
            metadata.mode() & 0o7777
        );
    }
    Ok(())
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
    if privileges.uid.is_some_and(|uid| uid.is_root()) {
        warn!("workers.user is root: workers serve HTTP with every privilege of root");
    }
    Ok(())
}

/// The listening socket systemd handed over (`LISTEN_PID` naming this process,
/// `LISTEN_FDS` ≥ 1: the first is descriptor 3), if any: a `.socket` unit holds the port
/// across restarts, `systemd-socket-activate` likewise. Taken once, at start: the
/// variables are removed so that nothing later takes it again.
pub(super) fn activated_listener() -> anyhow::Result<Option<Socket>> {
    use std::os::fd::FromRawFd;
    const FIRST_FD: i32 = 3;
    let for_us = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|pid| pid.parse::<u32>().ok())
        .is_some_and(|pid| pid == std::process::id());
    let count = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse::<i32>().ok())
        .unwrap_or(0);
    // SAFETY: at start-up, before any thread or fork; nothing else reads them.
    unsafe {
        std::env::remove_var("LISTEN_PID");
        std::env::remove_var("LISTEN_FDS");
        std::env::remove_var("LISTEN_FDNAMES");
    }
    if !for_us || count < 1 {
        return Ok(None);
    }
    if count > 1 {
        warn!("{count} sockets handed over (LISTEN_FDS); serving on the first only");
    }
    // SAFETY: systemd's protocol: descriptor 3 is ours, open, and nothing else owns it.
    let socket = unsafe { Socket::from_raw_fd(FIRST_FD) };
    let listening = socket
        .is_listener()
        .context("cannot inspect the socket handed over (LISTEN_FDS)")?;
    if !listening || socket.r#type().ok() != Some(Type::STREAM) {
        bail!("the socket handed over (LISTEN_FDS) is not a listening stream socket");
    }
    // A Unix-domain socket would be taken here and refused by every worker (tokio accepts
    // TCP on it only), each retiring in turn: a crash loop instead of an error.
    let Some(address) = socket.local_addr().ok().and_then(|a| a.as_socket()) else {
        bail!(
            "the socket handed over (LISTEN_FDS) is not a TCP socket: eventsd serves HTTP \
             on TCP only (ListenStream= a port or an IP address and port)"
        );
    };
    socket
        .set_nonblocking(true)
        .context("cannot make the socket handed over non-blocking")?;
    log::info!(
        "serving on the socket handed over by the service manager ({address}); \
         server.listen is not bound"
    );
    Ok(Some(socket))
}

/// Sets the listening socket's options, whichever way it came (bound, handed over by the
/// service manager, inherited from the binary before an upgrade).
///
/// - TCP_NODELAY: accepted sockets inherit it (Linux), so no worker sets it per
///   connection.
/// - TCP_DEFER_ACCEPT (`server.deferred_accept`, nginx's `listen ... deferred`): a
///   connection is offered to the workers once its first bytes have arrived, so a
///   worker accepts and reads in one wake-up instead of being woken twice (the
///   handshake, then the request); a client that connects and stays silent is offered
///   after `DEFER_ACCEPT_SECS` all the same, and its read timeout runs from then. Set
///   either way, so that a reload turning it off, or a socket handed over with it,
///   serves as configured.
pub(super) fn tune_listener(listener: &Socket, server: &config::Server) {
    if let Err(e) = listener.set_tcp_nodelay(true) {
        warn!("cannot set TCP_NODELAY on the listening socket: {e}; replies may be delayed");
    }
    let seconds = if server.deferred_accept {
        DEFER_ACCEPT_SECS
    } else {
        0
    };
    if let Err(e) = defer_accept(listener, seconds) {
        warn!("cannot set TCP_DEFER_ACCEPT on the listening socket: {e}");
    }
}

/// How long the kernel holds a silent new connection before offering it to a worker.
const DEFER_ACCEPT_SECS: libc::c_int = 1;

fn defer_accept(listener: &Socket, seconds: libc::c_int) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: setsockopt reads one c_int from a live local, on a descriptor we own.
    let set = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&raw const seconds).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    nix::errno::Errno::result(set)
        .map(drop)
        .map_err(std::io::Error::from)
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
