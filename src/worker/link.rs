//! The worker's side of its IPC channels, and the one shutdown signal of a worker.
//!
//! Owns the worker's ends of its two socketpairs and its copy of the registry: a writer
//! task sends queued messages in order, a reader task obeys the master, installs the
//! registry versions it pushes and completes the questions the worker asked. Counts go
//! over a channel of their own, with a writer of their own: a busy master reads them
//! late (backpressure), while a heartbeat or a question never waits behind them. A
//! closed channel means the master is gone, which is itself a reason to drain and exit:
//! no worker outlives its master. Nothing here blocks the event loop.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::rc::Rc;
use std::time::Duration;

use log::{error, info, warn};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::net::unix::OwnedReadHalf;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::access_log::AccessLog;
use crate::appender::Appenders;
use crate::clock::Stamp;
use crate::logging;
use crate::protocol::frame;
use crate::protocol::worker::{Answer, MasterMessage, Question, WorkerMessage};
use crate::registry::Registry;
use crate::watch::CountBatch;
use crate::watch::plan::Plans;

/// The worker's ends of its two socketpairs with the master.
pub struct Channels {
    /// Everything but counts, both ways.
    pub messages: StdUnixStream,
    /// Count batches, to the master only.
    pub counts: StdUnixStream,
}

/// The master's deadline for a question is this much before the worker gives up: room
/// for the word that it applied a change to reach the worker.
const ANSWER_MARGIN: Duration = Duration::from_secs(1);

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

/// Talks to the master; cheap to clone.
#[derive(Clone)]
pub struct Link {
    /// `None` asks the writer to stop once everything before it is written.
    outbox: mpsc::UnboundedSender<Option<WorkerMessage>>,
    /// The same, for the counts channel.
    counts: mpsc::UnboundedSender<Option<CountBatch>>,
    shared: Rc<Shared>,
}

/// The registry version a worker serves, with its watchers compiled for the hot path.
pub struct Served {
    pub registry: Registry,
    pub plans: Plans,
}

impl Served {
    fn new(registry: Registry) -> Rc<Served> {
        let plans = Plans::compile(&registry);
        Rc::new(Served { registry, plans })
    }
}

/// The files a worker writes, reopened when the master says (SIGUSR1, rotation).
pub struct Files {
    pub appenders: Rc<Appenders>,
    pub access_log: Option<Rc<AccessLog>>,
}

/// What the reader task and the request handlers share.
struct Shared {
    registry: RefCell<Rc<Served>>,
    waiting: RefCell<HashMap<u64, oneshot::Sender<Answer>>>,
    /// The changes the master applied and has not answered yet, with their answer.
    applied: RefCell<HashMap<u64, Answer>>,
    next_question: Cell<u64>,
    files: Files,
}

impl Link {
    /// Starts the reader and the two writer tasks. The returned handle ends after
    /// `close`, once the messages and counts queued before it are written.
    pub fn start(
        channels: Channels,
        shutdown: Shutdown,
        registry: Registry,
        files: Files,
    ) -> std::io::Result<(Link, JoinHandle<()>)> {
        let (reader, writer) = UnixStream::from_std(channels.messages)?.into_split();
        let counts_writer = UnixStream::from_std(channels.counts)?;
        let (outbox, queue) = mpsc::unbounded_channel();
        let (counts, counts_queue) = mpsc::unbounded_channel();
        let link = Link {
            outbox,
            counts,
            shared: Rc::new(Shared {
                registry: RefCell::new(Served::new(registry)),
                waiting: RefCell::default(),
                applied: RefCell::default(),
                next_question: Cell::new(1),
                files,
            }),
        };
        tokio::task::spawn_local(read_commands(reader, link.clone(), shutdown.clone()));
        let writer = tokio::task::spawn_local(write_frames(writer, queue, shutdown.clone()));
        let counts_writer =
            tokio::task::spawn_local(write_frames(counts_writer, counts_queue, shutdown));
        let both = tokio::task::spawn_local(async move {
            let _ = tokio::join!(writer, counts_writer);
        });
        Ok((link, both))
    }

    pub fn send(&self, message: WorkerMessage) {
        // Fails only once the writer stopped, which already triggered the shutdown.
        let _ = self.outbox.send(Some(message));
    }

    /// Counts, on their own channel.
    pub fn send_counts(&self, batch: CountBatch) {
        let _ = self.counts.send(Some(batch));
    }

    /// The last message: the writers flush what is queued and stop.
    pub fn close(&self) {
        let _ = self.outbox.send(None);
        let _ = self.counts.send(None);
    }

    /// Asks the master, which may take `within` to answer; `None` if it did not, in which
    /// case nothing was applied: the master drops a question it reads past its deadline,
    /// set `ANSWER_MARGIN` earlier for its word to reach this worker. A change applied in
    /// time is waited for until every worker serves it; if the master goes away first,
    /// its answer stands (the change is persisted).
    pub async fn ask(&self, question: Question, within: Duration) -> Option<Answer> {
        let id = self.shared.next_question.get();
        self.shared.next_question.set(id + 1);
        let (answer, mut answered) = oneshot::channel();
        self.shared.waiting.borrow_mut().insert(id, answer);
        // Dropped unanswered (timeout, closed connection): forget the question.
        let _forget = Forget {
            shared: &self.shared,
            id,
        };
        let deadline = Stamp::now().after(within.saturating_sub(ANSWER_MARGIN));
        self.send(WorkerMessage::Ask {
            id,
            deadline,
            question,
        });
        let applied = || self.shared.applied.borrow_mut().remove(&id);
        match tokio::time::timeout(within, &mut answered).await {
            Ok(Ok(answer)) => Some(answer),
            Ok(Err(_)) => applied(),
            Err(_) if self.shared.applied.borrow().contains_key(&id) => {
                answered.await.ok().or_else(applied)
            }
            Err(_) => None,
        }
    }

    /// The registry version this worker serves.
    pub fn registry(&self) -> Rc<Served> {
        self.shared.registry.borrow().clone()
    }
}

struct Forget<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.shared.waiting.borrow_mut().remove(&self.id);
        self.shared.applied.borrow_mut().remove(&self.id);
    }
}

/// Writes what is queued, in order, until `None`; a channel that breaks means the
/// master is gone.
async fn write_frames<M: Serialize>(
    mut writer: impl AsyncWrite + Unpin,
    mut queue: mpsc::UnboundedReceiver<Option<M>>,
    shutdown: Shutdown,
) {
    while let Some(Some(message)) = queue.recv().await {
        let written = match frame::encode(&message) {
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

/// Obeys the master until its channel closes; then no question waits for it any more.
async fn read_commands(reader: OwnedReadHalf, link: Link, shutdown: Shutdown) {
    obey_until_closed(reader, &link, &shutdown).await;
    link.shared.waiting.borrow_mut().clear();
}

async fn obey_until_closed(mut reader: OwnedReadHalf, link: &Link, shutdown: &Shutdown) {
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
            match frame::take_frame::<MasterMessage>(&mut buffer) {
                Ok(Some(command)) => obey(command, link, shutdown),
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

fn obey(command: MasterMessage, link: &Link, shutdown: &Shutdown) {
    let shared = &link.shared;
    match command {
        MasterMessage::Stop => shutdown.trigger("the master asked"),
        MasterMessage::ReopenLogs => {
            shared.files.appenders.reopen();
            if let Some(access_log) = &shared.files.access_log {
                access_log.reopen();
            }
            match logging::reopen() {
                Ok(()) => info!("reopened log files"),
                Err(e) => warn!("cannot reopen log files: {e:#}"),
            }
        }
        MasterMessage::Registry { document } => match serde_json::from_str::<Registry>(&document) {
            Ok(registry) => {
                let version = registry.version;
                *shared.registry.borrow_mut() = Served::new(registry);
                shared.files.appenders.reopen();
                link.send(WorkerMessage::RegistryAck { version });
            }
            Err(e) => {
                // Serving a registry other than the master's would break read-your-writes:
                // exit, and the master forks a worker that holds the right one.
                error!("unreadable registry from the master: {e}");
                shutdown.trigger("the registry from the master is unreadable");
            }
        },
        MasterMessage::Applied { id, answer } => {
            if shared.waiting.borrow().contains_key(&id) {
                shared.applied.borrow_mut().insert(id, answer);
            }
        }
        MasterMessage::Answer { id, answer } => {
            if let Some(waiting) = shared.waiting.borrow_mut().remove(&id) {
                let _ = waiting.send(answer);
            }
        }
    }
}
