//! A worker process: everything that happens in the child after the master's fork.
//!
//! Owns the child's set-up (process name, signal mask, descriptors, privileges), its one
//! tokio `current_thread` runtime, built only now because a runtime's threads would not
//! survive a fork, and the order of its shutdown. It never binds, never forks and keeps
//! no state that the master needs after it exits.

mod access_log;
pub mod api;
mod batcher;
mod hot;
mod ids;
mod io;
pub mod keys;
pub(crate) mod link;
mod oncall;
mod reply;
mod routes;
mod server;
mod shutdown;
mod ui;

use std::fs::File;
use std::io::Write;
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::time::Duration;

use anyhow::Context;
use log::info;

use crate::appender::Appenders;
use crate::clock::Stamp;
use crate::config::Config;
use crate::protocol::frame;
use crate::protocol::worker::{Heartbeat, WorkerMessage};
use crate::registry::Registry;
use crate::tls::Tls;
use access_log::AccessLog;
use api::Api;
use batcher::Batcher;
use link::{Channels, Link};
use server::Stats;
use shutdown::Shutdown;

/// A worker reports at least this often; the master's `heartbeat_timeout_secs` is ≥ 2 s.
const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(500);

/// What the master hands to a freshly forked worker.
pub struct Setup {
    /// The listening socket, inherited from the master.
    pub listener: RawFd,
    /// TLS on it, as the master read the certificate and key.
    pub tls: Option<Tls>,
    pub config: Config,
    /// The registry as the master held it at the fork.
    pub registry: Registry,
    /// The worker's end of the socketpair its counts go over.
    pub counts: UnixStream,
}

/// The worker's life in the forked child (`child::fork_child` runs it): set up, serve
/// until drained. `channel` is the worker's end of its socketpair with the master.
pub fn serve(setup: Setup, mut channel: UnixStream) -> anyhow::Result<()> {
    let Setup {
        listener,
        tls,
        config,
        registry,
        counts,
    } = setup;
    // SAFETY: the master's socket object is never dropped in this process (see
    // `child`), so this is the descriptor's only owner here.
    let listener = unsafe { std::net::TcpListener::from_raw_fd(listener) };
    let set_up = prepare_process(&config);
    let opened = match set_up {
        Ok(opened) => opened,
        Err(e) => {
            let reason = format!("{e:#}");
            // Best effort: if the master is gone there is no one left to tell.
            let _ = frame::encode(&WorkerMessage::StartupFailed { reason })
                .and_then(|frame| channel.write_all(&frame));
            return Err(e);
        }
    };
    for end in [&channel, &counts] {
        end.set_nonblocking(true)
            .context("cannot make the IPC channels non-blocking")?;
    }
    let channels = Channels {
        messages: channel,
        counts,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot build the tokio runtime")?;
    let local = tokio::task::LocalSet::new();
    local.block_on(
        &runtime,
        serve_until_drained(listener, tls, channels, config, registry, opened),
    )
}

/// What a worker opens before its chroot.
struct Opened {
    statm: File,
    access_log: Option<Rc<AccessLog>>,
}

/// Opens what must be opened before a chroot, then takes the workers' identity.
fn prepare_process(config: &Config) -> anyhow::Result<Opened> {
    let statm = File::open("/proc/self/statm").context("cannot open /proc/self/statm")?;
    let access_log = match &config.daemon.access_log {
        Some(path) => Some(Rc::new(AccessLog::open(path)?)),
        None => None,
    };
    crate::privileges::drop_to(&config.workers.privileges, true)?;
    Ok(Opened { statm, access_log })
}

async fn serve_until_drained(
    listener: std::net::TcpListener,
    tls: Option<Tls>,
    channels: Channels,
    config: Config,
    registry: Registry,
    Opened { statm, access_log }: Opened,
) -> anyhow::Result<()> {
    listener
        .set_nonblocking(true)
        .context("cannot make the listening socket non-blocking")?;
    let listener = tokio::net::TcpListener::from_std(listener)
        .context("cannot register the listening socket")?;
    let shutdown = Shutdown::new();
    let appenders = Rc::new(Appenders::new(config.collectors.syslog_socket.clone()));
    let files = link::Files {
        appenders: appenders.clone(),
        access_log: access_log.clone(),
    };
    let (link, link_task) = Link::start(channels, shutdown.clone(), registry, files)
        .context("cannot start the IPC link")?;
    let batcher = Rc::new(Batcher::new(link.clone()));
    let api = Rc::new(Api::new(
        &config,
        link.clone(),
        appenders,
        batcher.clone(),
        access_log.clone(),
    ));
    let stats = Rc::new(Stats::default());
    let heartbeat =
        tokio::task::spawn_local(heartbeat(link.clone(), stats.clone(), api.clone(), statm));
    let shipper = {
        let batcher = batcher.clone();
        tokio::task::spawn_local(async move { batcher.ship_periodically().await })
    };
    let log_flusher = access_log
        .clone()
        .map(|log| tokio::task::spawn_local(async move { log.flush_periodically().await }));
    watch_sigterm(shutdown.clone())?;

    link.send(WorkerMessage::Ready);
    info!("worker ready");
    let connections = server::Connections::new(&config, tls, &api, &stats, &link, &shutdown);
    server::accept_until_shutdown(listener, &config, &connections, &link, &shutdown).await;
    info!("worker drained: {} requests served", stats.requests());

    // Last words: the last watcher counts and the final heartbeat, then the writer flushes.
    heartbeat.abort();
    shipper.abort();
    batcher.flush();
    if let (Some(flusher), Some(log)) = (log_flusher, &access_log) {
        flusher.abort();
        log.flush();
    }
    link.send(WorkerMessage::Heartbeat(beat(&stats, &api, 0)));
    link.close();
    let _ = link_task.await;
    Ok(())
}

/// A SIGTERM sent to the worker itself asks for the same graceful stop as the master's
/// `Stop` message.
fn watch_sigterm(shutdown: Shutdown) -> anyhow::Result<()> {
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot watch SIGTERM")?;
    tokio::task::spawn_local(async move {
        if sigterm.recv().await.is_some() {
            shutdown.trigger("SIGTERM received");
        }
    });
    Ok(())
}

async fn heartbeat(link: Link, stats: Rc<Stats>, api: Rc<Api>, statm: File) {
    let mut interval = tokio::time::interval(HEARTBEAT_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        link.send(WorkerMessage::Heartbeat(beat(
            &stats,
            &api,
            resident_bytes(&statm),
        )));
    }
}

/// A heartbeat: the worker's figures and the counters since the previous one, stamped
/// with when it was written, which is what the master judges.
fn beat(stats: &Stats, api: &Api, rss_bytes: u64) -> Heartbeat {
    Heartbeat {
        deltas: api.take_deltas(),
        sent_at: Stamp::now(),
        ..stats.sample(rss_bytes)
    }
}

/// Resident set size from `/proc/self/statm` (opened before any chroot).
fn resident_bytes(statm: &File) -> u64 {
    let mut buffer = [0u8; 128];
    let Ok(n) = statm.read_at(&mut buffer, 0) else {
        return 0;
    };
    let pages = std::str::from_utf8(&buffer[..n])
        .ok()
        .and_then(|text| text.split_whitespace().nth(1))
        .and_then(|field| field.parse::<u64>().ok())
        .unwrap_or(0);
    let page_size = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .unwrap_or(4096);
    pages * page_size as u64
}
