//! The control socket: a Unix socket, mode 0600, on which the master serves its status
//! to `eventsd status` and `fullstatus`.
//!
//! The protocol is the smallest that works: a client connects, the master writes one JSON
//! `Status` document and closes. The master never waits on a client: accepted sockets
//! are non-blocking, and a client that cannot take the document at once loses it.

use std::io::{ErrorKind, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use nix::sys::stat::{Mode, umask};

use crate::status::Status;

pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl ControlSocket {
    /// Binds `path`, replacing a stale socket: the caller holds the pidfile lock, so no
    /// other master can be using it.
    pub fn bind(path: &Path) -> anyhow::Result<ControlSocket> {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("cannot remove stale control socket {}", path.display())
                });
            }
        }
        // Bind under a 077 umask so the socket is never reachable by others, not even
        // for the moment between bind and chmod.
        let previous = umask(Mode::from_bits_truncate(0o077));
        let bound = UnixListener::bind(path);
        umask(previous);
        let listener =
            bound.with_context(|| format!("cannot bind control socket {}", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("cannot set mode 0600 on {}", path.display()))?;
        listener
            .set_nonblocking(true)
            .context("cannot make the control socket non-blocking")?;
        Ok(ControlSocket {
            listener,
            path: path.to_path_buf(),
        })
    }

    /// The control socket the previous master handed over (upgrade in place): already
    /// bound at `path`, clients queued on it wait for this master.
    pub fn adopt(fd: OwnedFd, path: &Path) -> anyhow::Result<ControlSocket> {
        let listener = UnixListener::from(fd);
        listener
            .set_nonblocking(true)
            .context("cannot make the control socket handed over non-blocking")?;
        Ok(ControlSocket {
            listener,
            path: path.to_path_buf(),
        })
    }

    /// Leaves the socket, file and all, to the new master this one hands over to.
    pub fn hand_over(self) {
        std::mem::forget(self);
    }

    /// Answers every pending client with `status`.
    pub fn serve_pending(&self, status: impl Fn() -> Status) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => answer(stream, &status()),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("control socket {}: accept failed: {e}", self.path.display());
                    return;
                }
            }
        }
    }

    pub fn raw_fd(&self) -> RawFd {
        self.listener.as_raw_fd()
    }
}

/// Dropping the control socket removes its file (see `Pidfile`'s drop for children).
impl Drop for ControlSocket {
    fn drop(&mut self) {
        crate::files::remove_owned(&self.path, "control socket");
    }
}

impl AsFd for ControlSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }
}

fn answer(mut stream: UnixStream, status: &Status) {
    let result = stream
        .set_nonblocking(true)
        .and_then(|()| serde_json::to_vec(status).map_err(std::io::Error::other))
        .and_then(|document| stream.write_all(&document));
    if let Err(e) = result {
        log::debug!("control client dropped: {e}");
    }
}

/// Client side, used by the CLI: reads the running master's status.
pub fn query(path: &Path) -> anyhow::Result<Status> {
    let mut stream = UnixStream::connect(path)
        .with_context(|| format!("cannot connect to control socket {}", path.display()))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut document = Vec::new();
    std::io::Read::read_to_end(&mut stream, &mut document)
        .with_context(|| format!("cannot read from control socket {}", path.display()))?;
    if document.is_empty() {
        bail!(
            "the master closed control socket {} without answering",
            path.display()
        );
    }
    serde_json::from_slice(&document)
        .with_context(|| format!("unreadable status from control socket {}", path.display()))
}
