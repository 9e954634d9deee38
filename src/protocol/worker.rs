//! The worker's channel: what a worker tells the master (`WorkerMessage`, with its
//! `Heartbeat` and the counters since the previous one, `Deltas`) and what the master
//! tells it (`MasterMessage`), over the worker's message socketpair. Counts travel over
//! a socketpair of their own, as `watch::CountBatch` frames, which the master may read
//! late: heartbeats and questions never queue behind them.
//!
//! Plain data: no I/O.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::clock::Stamp;
use crate::exposition::Histogram;
use crate::registry::{Change, Origin, Refusal};

/// What a worker tells the master.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WorkerMessage {
    /// Set up and accepting connections.
    Ready,
    /// Sent at least once a second; its absence for `heartbeat_timeout_secs` means hung.
    Heartbeat(Heartbeat),
    /// The worker stops on its own (`max_requests` reached) and drains: replace it.
    Retiring { reason: String },
    /// Set-up failed (privileges, runtime): the reason, sent just before exiting.
    StartupFailed { reason: String },
    /// A question the master answers with `MasterMessage::Answer` and the same `id`,
    /// if it reads it before `deadline`; past it, the master drops it unapplied and says
    /// so (`MasterMessage::Dropped`).
    Ask {
        id: u64,
        deadline: Stamp,
        question: Question,
    },
    /// The worker now serves this registry version.
    RegistryAck { version: u64 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Question {
    /// Validate, apply, persist and spread a registry change.
    Change { change: Change, origin: Origin },
    /// The Prometheus exposition of the whole daemon.
    Metrics,
    /// The status page's document (`GET /status`); key values only if `reveal_keys`.
    Status { reveal_keys: bool },
    /// Silences, the alert list, a watcher's live state (alerts.md).
    OnCall(super::oncall::Request),
}

impl Question {
    /// Whether answering it changes state (the registry, a silence): then only the
    /// master knows, once it has read it, whether it applied it.
    pub fn changes_state(&self) -> bool {
        match self {
            Question::Change { .. } => true,
            Question::OnCall(request) => request.is_change(),
            Question::Metrics | Question::Status { .. } => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Answer {
    /// The id of what was created (nil for a deletion), or why the change was refused.
    Change(Result<Uuid, Refusal>),
    Metrics(String),
    /// The `/status` document, as JSON text.
    Status(String),
    OnCall(super::oncall::Reply),
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Connections were open for more than half of the last heartbeat interval.
    pub busy: bool,
    pub requests: u64,
    pub in_flight: u32,
    pub connections: u32,
    pub rss_bytes: u64,
    /// Counters since the previous heartbeat, added up by the master.
    pub deltas: Deltas,
    /// When the worker wrote it: its age is judged from this, not from when the master
    /// read it.
    pub sent_at: Stamp,
}

/// What the master tells a worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MasterMessage {
    /// Stop accepting, finish in-flight requests, flush, exit.
    Stop,
    /// Reopen log files and file appenders (SIGUSR1 reached the master).
    ReopenLogs,
    /// A new registry, as the JSON document of `registry.json`.
    Registry {
        document: String,
    },
    /// A registry change applied before its deadline: the worker waits for the `Answer`
    /// (sent once every worker serves the change) however long that takes, and, should
    /// the master go away first, replies with this one: the change is persisted.
    Applied {
        id: u64,
        answer: Answer,
    },
    Answer {
        id: u64,
        answer: Answer,
    },
    /// A question read past its deadline: dropped, nothing applied. Its worker answers
    /// 503, which so always means "not applied".
    Dropped {
        id: u64,
    },
}

/// Counters of one worker since its previous heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Deltas {
    /// (route template, status code) → requests. Borrowed on the worker's hot path, so
    /// that counting a request allocates nothing.
    pub requests: BTreeMap<(Cow<'static, str>, u16), u64>,
    /// route template → how long its requests took.
    pub durations: BTreeMap<Cow<'static, str>, Histogram>,
    /// event type → events collected (acknowledged).
    pub collected: BTreeMap<String, u64>,
}

impl Deltas {
    pub fn record_request(&mut self, route: &'static str, status: u16, seconds: f64) {
        *self
            .requests
            .entry((Cow::Borrowed(route), status))
            .or_default() += 1;
        self.durations
            .entry(Cow::Borrowed(route))
            .or_default()
            .observe(&REQUEST_BOUNDS, seconds);
    }

    pub fn record_collected(&mut self, event: &str, count: u64) {
        match self.collected.get_mut(event) {
            Some(total) => *total += count,
            None => {
                self.collected.insert(event.to_string(), count);
            }
        }
    }
}

/// Request duration bounds: the hot path answers in well under a millisecond.
pub const REQUEST_BOUNDS: [f64; 11] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0,
];
