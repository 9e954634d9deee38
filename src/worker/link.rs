//! The worker's side of its IPC channels.
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
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::access_log::AccessLog;
use super::keys::Keyed;
use super::shutdown::Shutdown;
use crate::appender::Appenders;
use crate::clock::Stamp;
use crate::logging;
use crate::protocol::frame;
use crate::protocol::oncall::Reply;
use crate::protocol::worker::{Answer, MasterMessage, Question, WorkerMessage};
use crate::registry::{Refusal, Registry};
use crate::watch::CountBatch;

/// The worker's ends of its two socketpairs with the master.
pub struct Channels {
    /// Everything but counts, both ways.
    pub messages: StdUnixStream,
    /// Count batches, to the master only.
    pub counts: StdUnixStream,
}

/// How long past its deadline a change waits for the master's word on it, a master
/// stalled all that time (SIGSTOP, swap) notwithstanding. Only the master knows whether
/// it applied a change, and it says so as soon as it reads the question: applied, or
/// dropped (503). Past this, the client is told the truth: nobody here knows (504).
const WORD_GRACE: Duration = Duration::from_secs(25);

/// Talks to the master; cheap to clone.
#[derive(Clone)]
pub struct Link {
    /// `None` asks the writer to stop once everything before it is written.
    outbox: mpsc::UnboundedSender<Option<WorkerMessage>>,
    /// The same, for the counts channel.
    counts: mpsc::UnboundedSender<Option<CountBatch>>,
    shared: Rc<Shared>,
}

/// The registry version a worker serves, with its watchers' keys compiled for the hot
/// path.
pub struct Served {
    pub registry: Registry,
    pub keys: Keyed,
}

impl Served {
    fn new(registry: Registry) -> Rc<Served> {
        let keys = Keyed::compile(&registry);
        Rc::new(Served { registry, keys })
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
    /// The questions asked and not yet answered, each with where the master's words on
    /// it go.
    waiting: RefCell<HashMap<u64, mpsc::UnboundedSender<Word>>>,
    next_question: Cell<u64>,
    files: Files,
}

/// What the master said of a question.
enum Word {
    /// A change applied in time; the answer follows once every worker serves it.
    Applied(Answer),
    Answer(Answer),
    /// Read past its deadline, dropped: nothing was applied.
    Dropped,
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

    /// Asks the master, which has `within` to take the question up: an answer, or
    /// `None` when nothing was applied. A question that changes nothing is given up at
    /// `within`. A change is answered on the master's word only: applied (then waited
    /// for until every worker serves it; should the master go away first, its answer
    /// stands, the change is persisted) or dropped past its deadline (`None`, 503). A
    /// master that says neither within `WORD_GRACE` more, or goes away without a word,
    /// leaves the change's fate unknown: so says the answer (504).
    pub async fn ask(&self, question: Question, within: Duration) -> Option<Answer> {
        let id = self.shared.next_question.get();
        self.shared.next_question.set(id + 1);
        let (words_to, mut words) = mpsc::unbounded_channel();
        self.shared.waiting.borrow_mut().insert(id, words_to);
        // Dropped unanswered (timeout, closed connection): forget the question.
        let _forget = Forget {
            shared: &self.shared,
            id,
        };
        let unknown = question.changes_state().then(|| fate_unknown(&question));
        self.send(WorkerMessage::Ask {
            id,
            deadline: Stamp::now().after(within),
            question,
        });
        let mut applied = None;
        let heard = tokio::time::timeout(within, last_word(&mut words, &mut applied)).await;
        let verdict = match heard {
            Ok(verdict) => verdict,
            // A question that changes nothing: nothing to be unsure of.
            Err(_) if unknown.is_none() => return None,
            Err(_) => past_deadline(id, &mut words, &mut applied).await,
        };
        match verdict {
            Verdict::Answer(answer) => Some(answer),
            Verdict::Dropped => None,
            Verdict::Silent => unknown,
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
    }
}

/// The master's last word on a question.
enum Verdict {
    Answer(Answer),
    Dropped,
    /// The master went away without a word.
    Silent,
}

/// Reads the master's words on a question until its last: an `Applied` is kept in
/// `applied` (cancelling this loses nothing), and stands if the master goes away.
async fn last_word(
    words: &mut mpsc::UnboundedReceiver<Word>,
    applied: &mut Option<Answer>,
) -> Verdict {
    loop {
        match words.recv().await {
            Some(Word::Applied(answer)) => *applied = Some(answer),
            Some(Word::Answer(answer)) => return Verdict::Answer(answer),
            Some(Word::Dropped) => return Verdict::Dropped,
            None => return applied.take().map_or(Verdict::Silent, Verdict::Answer),
        }
    }
}

/// A change past its deadline: applied, it is waited for without limit (every worker
/// serves it in the end, or is killed); not yet heard of, the master still has to read
/// it and say what it did, given `WORD_GRACE` (and no limit once it says "applied").
async fn past_deadline(
    id: u64,
    words: &mut mpsc::UnboundedReceiver<Word>,
    applied: &mut Option<Answer>,
) -> Verdict {
    if applied.is_none() {
        warn!(
            "question {id}: no word from the master by its deadline; waiting up to {} s \
             more to hear whether it applied the change",
            WORD_GRACE.as_secs()
        );
        if let Ok(verdict) = tokio::time::timeout(WORD_GRACE, last_word(words, applied)).await {
            return verdict;
        }
        if applied.is_none() {
            warn!("question {id}: still no word from the master: its fate is unknown (504)");
            return Verdict::Silent;
        }
    }
    last_word(words, applied).await
}

/// The answer to a change the master said nothing of: a 504 that says so, in the shape
/// of the question's answer.
fn fate_unknown(question: &Question) -> Answer {
    let refusal = Refusal {
        status: 504,
        message: "The master did not say in time whether it applied the change: it may \
                  or may not be applied; read it back before retrying (eventsd may be \
                  stalled or restarting)"
            .to_string(),
    };
    match question {
        Question::OnCall(_) => Answer::OnCall(Reply::refused(&refusal)),
        _ => Answer::Change(Err(refusal)),
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
        MasterMessage::Applied { id, answer } => tell(shared, id, Word::Applied(answer)),
        MasterMessage::Answer { id, answer } => tell(shared, id, Word::Answer(answer)),
        MasterMessage::Dropped { id } => tell(shared, id, Word::Dropped),
    }
}

/// Hands the master's `word` on question `id` to whoever still waits for it.
fn tell(shared: &Shared, id: u64, word: Word) {
    if let Some(waiting) = shared.waiting.borrow().get(&id) {
        let _ = waiting.send(word);
    }
}

#[cfg(test)]
mod tests {
    //! `ask` against a master played by the test over a real socketpair: what the client
    //! is answered follows what the master said, never the worker's own clock.

    use super::*;
    use crate::registry::{Change, Origin};

    const WITHIN: Duration = Duration::from_millis(100);

    /// A link, and the master's end of its message channel.
    fn link() -> (Link, UnixStream) {
        let (worker_end, master_end) = StdUnixStream::pair().unwrap();
        let (counts, _) = StdUnixStream::pair().unwrap();
        for end in [&worker_end, &master_end, &counts] {
            end.set_nonblocking(true).unwrap();
        }
        let channels = Channels {
            messages: worker_end,
            counts,
        };
        let files = Files {
            appenders: Rc::new(Appenders::new(None)),
            access_log: None,
        };
        let (link, _) = Link::start(channels, Shutdown::new(), Registry::default(), files).unwrap();
        (link, UnixStream::from_std(master_end).unwrap())
    }

    fn create_type() -> Question {
        Question::Change {
            change: Change::CreateEvent {
                body: br#"{"type": "logins"}"#.to_vec(),
            },
            origin: Origin::LOCAL,
        }
    }

    /// The id of the next question the master reads (registry acks skipped).
    async fn read_question(master: &mut UnixStream) -> u64 {
        let mut buffer = Vec::new();
        loop {
            if let Some(WorkerMessage::Ask { id, .. }) = frame::take_frame(&mut buffer).unwrap() {
                return id;
            }
            let mut chunk = [0u8; 4096];
            let n = master.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the worker closed its channel");
            buffer.extend_from_slice(&chunk[..n]);
        }
    }

    async fn say(master: &mut UnixStream, message: MasterMessage) {
        master
            .write_all(&frame::encode(&message).unwrap())
            .await
            .unwrap();
    }

    /// Runs `test` on a current-thread runtime, as a worker does, once a link has asked
    /// the master `question` and the master has read it: the answer to come, the
    /// question's id, the master's end of the channel.
    fn asked<F: std::future::Future<Output = ()>>(
        question: Question,
        test: impl FnOnce(tokio::task::JoinHandle<Option<Answer>>, u64, UnixStream) -> F,
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        tokio::task::LocalSet::new().block_on(&runtime, async {
            let (link, mut master) = link();
            let answer = tokio::task::spawn_local(async move { link.ask(question, WITHIN).await });
            let id = read_question(&mut master).await;
            test(answer, id, master).await;
        });
    }

    const CREATED: Answer = Answer::Change(Ok(uuid::Uuid::nil()));

    #[test]
    fn a_change_applied_after_the_deadline_is_answered_as_applied() {
        asked(create_type(), |answer, id, mut master| async move {
            // The master applied it in time, but its word comes after the worker's
            // deadline (busy, descheduled): the client must not be told 503.
            tokio::time::sleep(3 * WITHIN).await;
            say(
                &mut master,
                MasterMessage::Applied {
                    id,
                    answer: CREATED,
                },
            )
            .await;
            say(
                &mut master,
                MasterMessage::Answer {
                    id,
                    answer: CREATED,
                },
            )
            .await;
            assert_eq!(answer.await.unwrap(), Some(CREATED));
        });
    }

    #[test]
    fn a_change_the_master_dropped_is_answered_not_applied() {
        asked(create_type(), |answer, id, mut master| async move {
            tokio::time::sleep(3 * WITHIN).await;
            say(&mut master, MasterMessage::Dropped { id }).await;
            assert_eq!(answer.await.unwrap(), None);
        });
    }

    #[test]
    fn a_change_the_master_went_away_from_without_a_word_is_of_unknown_fate() {
        asked(create_type(), |answer, _, master| async move {
            drop(master);
            match answer.await.unwrap() {
                Some(Answer::Change(Err(refusal))) => assert_eq!(refusal.status, 504),
                other => panic!("{other:?}"),
            }
        });
    }

    #[test]
    fn a_change_applied_then_left_by_its_master_stands() {
        asked(create_type(), |answer, id, mut master| async move {
            say(
                &mut master,
                MasterMessage::Applied {
                    id,
                    answer: CREATED,
                },
            )
            .await;
            tokio::time::sleep(3 * WITHIN).await;
            drop(master);
            assert_eq!(answer.await.unwrap(), Some(CREATED));
        });
    }

    #[test]
    fn a_question_that_changes_nothing_is_given_up_at_its_deadline() {
        asked(Question::Metrics, |answer, _, master| async move {
            // The master still holds the channel: the worker gives up on its own.
            assert_eq!(answer.await.unwrap(), None);
            drop(master);
        });
    }
}
