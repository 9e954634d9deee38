//! systemd readiness notification (`sd_notify`): READY, RELOADING, STOPPING.
//!
//! Owns the datagram to `$NOTIFY_SOCKET`. It is best effort by design: without systemd
//! the variable is unset and nothing is sent; a failed send is logged, never fatal.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

pub const READY: &str = "READY=1";
pub const RELOADING: &str = "RELOADING=1";
pub const STOPPING: &str = "STOPPING=1";

/// Sends `state` (e.g. `READY=1`) to the service manager, if there is one.
pub fn send(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let path = path.to_string_lossy();
    // A leading '@' names a socket in the abstract namespace.
    let address = match path.strip_prefix('@') {
        Some(name) => SocketAddr::from_abstract_name(name.as_bytes()),
        None => SocketAddr::from_pathname(path.as_ref()),
    };
    let result = address.and_then(|address| {
        let socket = UnixDatagram::unbound()?;
        socket.send_to_addr(state.as_bytes(), &address)
    });
    if let Err(e) = result {
        log::warn!("cannot notify the service manager ({state}) at {path}: {e}");
    }
}
