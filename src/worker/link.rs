//! The worker's side of its IPC channel, and the one shutdown signal of a worker.
//!
//! Owns the socketpair end: a writer task sends queued messages in order, a reader task
//! obeys the master. A closed channel means the master is gone, which is itself a reason
//! to drain and exit: no worker outlives its master. Nothing here blocks the event loop.

use std::os::unix::net::UnixStream as StdUnixStream;
use std::rc::Rc;

use log::{info, warn};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::ipc::{self, MasterMessage, WorkerMessage};
use crate::logging;

/// Every reason a worker stops (the master's `Stop`, the master gone, SIGTERM,
/// `max_requests`) goes through this one signal, mini-redis style.
#[derive(Clone)]
pub struct Shutdown(Rc<watch::Sender<bool>>);

impl Shutdown {
    pub fn new() -> Shutdown {
        Shutdown(Rc::new(watch::Sender::new(false)))
    }

    pub fn trigger(&self, why: &str) {
        if !self.is_triggered() {
            info!("draining: {why}");
            self.0.send_replace(true);
        }
    }

    pub fn is_triggered(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once the shutdown has been triggered.
    pub async fn wait(&self) {
        let mut receiver = self.0.subscribe();
        // The sender lives in `self`, so the channel cannot close under us.
        let _ = receiver.wait_for(|&triggered| triggered).await;
    }
}

/// Sends messages to the master; cheap to clone.
#[derive(Clone)]
pub struct Link {
    outbox: mpsc::UnboundedSender<WorkerMessage>,
}

impl Link {
    /// Starts the reader and writer tasks. The returned handle ends once every `Link`
    /// is dropped and the queued messages are written.
    pub fn start(
        channel: StdUnixStream,
        shutdown: Shutdown,
    ) -> std::io::Result<(Link, JoinHandle<()>)> {
        let (reader, writer) = UnixStream::from_std(channel)?.into_split();
        let (outbox, queue) = mpsc::unbounded_channel();
        tokio::task::spawn_local(read_commands(reader, shutdown.clone()));
        let writer = tokio::task::spawn_local(write_messages(writer, queue, shutdown));
        Ok((Link { outbox }, writer))
    }

    pub fn send(&self, message: WorkerMessage) {
        // Fails only once the writer stopped, which already triggered the shutdown.
        let _ = self.outbox.send(message);
    }
}

async fn write_messages(
    mut writer: OwnedWriteHalf,
    mut queue: mpsc::UnboundedReceiver<WorkerMessage>,
    shutdown: Shutdown,
) {
    while let Some(message) = queue.recv().await {
        let written = match ipc::encode(&message) {
            Ok(frame) => writer.write_all(&frame).await,
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            warn!("cannot write to the master: {e}");
            shutdown.trigger("the IPC channel to the master is broken");
            return;
        }
    }
}

async fn read_commands(mut reader: OwnedReadHalf, shutdown: Shutdown) {
    let mut buffer = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        let n = match reader.read(&mut chunk).await {
            Ok(n) => n,
            Err(e) => {
                warn!("cannot read from the master: {e}");
                0
            }
        };
        if n == 0 {
            shutdown.trigger("the master is gone (IPC channel closed)");
            return;
        }
        buffer.extend_from_slice(&chunk[..n]);
        loop {
            match ipc::take_frame::<MasterMessage>(&mut buffer) {
                Ok(Some(command)) => obey(command, &shutdown),
                Ok(None) => break,
                Err(e) => {
                    warn!("unreadable message from the master: {e}");
                    shutdown.trigger("the IPC channel to the master is broken");
                    return;
                }
            }
        }
    }
}

fn obey(command: MasterMessage, shutdown: &Shutdown) {
    match command {
        MasterMessage::Stop => shutdown.trigger("the master asked"),
        MasterMessage::ReopenLogs => match logging::reopen() {
            Ok(()) => info!("reopened log files"),
            Err(e) => warn!("cannot reopen log files: {e:#}"),
        },
    }
}
