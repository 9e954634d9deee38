//! What the master stands on: how it was started (the configuration it runs, replaced
//! whole by a reload, and its source; its log sink by default, its binary) and the
//! descriptors it holds for the outside world (the listening socket and its TLS, the
//! signalfd, the control socket, the pidfile, the start pipe). Owned by the master for its whole life; a successor inherits the
//! listening socket, the control socket and the pidfile (`upgrade`).
//!
//! Plain holdings: what reads or writes them lives with its verb (`events`, `reload`,
//! `upgrade`, `control`).

use std::path::PathBuf;

use anyhow::Context;
use socket2::Socket;

use super::announcer::Announcer;
use super::control::ControlSocket;
use super::setup;
use super::signals::Signals;
use crate::config::{self, Config};
use crate::logging::Sink;
use crate::pidfile::Pidfile;
use crate::tls::{self, Tls};

pub(super) struct Ground {
    /// The configuration in force: the one read at start, or the last reload's.
    pub config: Config,
    pub source: config::Source,
    /// Where logs go when `daemon.log` says nothing: stderr for `run`, syslog for `start`.
    pub default_sink: Sink,
    /// The binary this master runs, as it was on disk at start: what an upgrade executes.
    pub binary: PathBuf,
    pub listener: Socket,
    /// The listener's TLS, read at start and at each reload; `None` for plain HTTP.
    pub tls: Option<Tls>,
    pub signals: Signals,
    /// `None` in a successor until it takes over, and after the clean-up.
    pub control: Option<ControlSocket>,
    pub pidfile: Option<Pidfile>,
    pub announcer: Announcer,
}

impl Ground {
    /// What the master holds from its start: the listening socket (inherited from the
    /// master it replaces, handed by systemd, or bound), the control socket (not while
    /// taking over: the old master still serves it; `pidfile` is `None` then too), the
    /// listener's TLS, the signalfd.
    pub(super) fn open(
        config: Config,
        source: config::Source,
        default_sink: Sink,
        pidfile: Option<Pidfile>,
        inherited: Option<Socket>,
    ) -> anyhow::Result<Ground> {
        let binary = std::env::current_exe().context("cannot tell which binary runs")?;
        let listener = match inherited {
            Some(socket) => socket,
            None => setup::activated_listener()?.map_or_else(|| setup::bind(&config), Ok)?,
        };
        setup::tune_listener(&listener, &config.server);
        let control = match pidfile {
            None => None,
            Some(_) => Some(ControlSocket::bind(&config.daemon.control_socket)?),
        };
        Ok(Ground {
            tls: tls::load(config.server.tls_files())?,
            config,
            source,
            default_sink,
            binary,
            listener,
            signals: Signals::install()?,
            control,
            pidfile,
            announcer: Announcer::foreground(),
        })
    }
}
