//! The action runner's channel: what the master tells the runner (`ToRunner`), what the
//! runner tells the master (its heartbeat, each failed attempt, each settled firing:
//! `FromRunner`), and the closed sets that label them in metrics: action kinds, results,
//! drop reasons, error classes. Typed here once, so that the runner, the master and the
//! metrics can never spell a label two ways, and every series can be shown from the start.
//!
//! Plain data: no I/O.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::frame::Json;
use crate::clock::Stamp;
use crate::registry::Action;
use crate::watch::Job;

/// What the master sends the runner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ToRunner {
    /// A job (its action and key are JSON documents).
    Deliver(Json<Box<Job>>),
    /// The master settled these firings (their watcher is gone): never deliver them.
    Forget { ids: Vec<Uuid> },
    /// Finish the deliveries under way and those due now, then exit: what waits for a
    /// retry stays in the master's journal for the next runner.
    Stop,
    /// A new configuration: finish the deliveries under way, start no other, and exit;
    /// the next runner, started with it, gets everything else from the journal.
    Retire,
    /// Reopen log files (SIGUSR1 reached the master).
    ReopenLogs,
}

/// One message from the runner to the master.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FromRunner {
    /// The runner's scheduler is alive (sent every `HEARTBEAT_INTERVAL`), stamped on
    /// the clock the master judges heartbeats by.
    Heartbeat { sent_at: Stamp },
    /// An attempt failed (it may be retried: its firing is not settled).
    AttemptFailed {
        action: ActionKind,
        error: ErrorClass,
    },
    /// A failed attempt left these firings waiting: tried again in `retry_in_ms`.
    Retrying {
        ids: Vec<Uuid>,
        error: String,
        retry_in_ms: u64,
    },
    /// Firings settled.
    Settled(Outcome),
}

/// Firings settled by one delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// Every firing this settles (the delivered one and those it absorbed).
    pub ids: Vec<Uuid>,
    pub watcher: String,
    pub action: ActionKind,
    pub result: Delivery,
    pub detail: String,
    /// From the runner's receipt of the first firing to the end of the last attempt.
    pub latency_secs: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Delivery {
    Delivered,
    Failed,
    /// Given up without delivery, and why.
    Dropped(DropReason),
}

impl Delivery {
    /// The `result` label.
    pub fn name(self) -> &'static str {
        match self {
            Delivery::Delivered => "delivered",
            Delivery::Failed => "failed",
            Delivery::Dropped(_) => "dropped",
        }
    }
}

/// What an action is, as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ActionKind {
    Null,
    Email,
    Webhook,
    Command,
}

impl ActionKind {
    pub fn of(action: &Action) -> ActionKind {
        match action {
            Action::Null {} => ActionKind::Null,
            Action::Email { .. } => ActionKind::Email,
            Action::Webhook { .. } => ActionKind::Webhook,
            Action::Command { .. } => ActionKind::Command,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ActionKind::Null => "null",
            ActionKind::Email => "email",
            ActionKind::Webhook => "webhook",
            ActionKind::Command => "command",
        }
    }
}

/// Why a firing was given up without delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum DropReason {
    /// Pushed out of a full queue or journal (`watchers.action_queue`).
    QueueFull,
    /// Still failing `actions.max_age_secs` after it fired.
    TooOld,
    /// Its watcher was deleted or changed before it was delivered.
    WatcherDeleted,
    /// A journal entry refused on load: malformed, oversized, or naming an action or a
    /// destination its watcher and the rules do not allow.
    Invalid,
}

impl DropReason {
    pub const ALL: [DropReason; 4] = [
        DropReason::QueueFull,
        DropReason::TooOld,
        DropReason::WatcherDeleted,
        DropReason::Invalid,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::TooOld => "too_old",
            DropReason::WatcherDeleted => "watcher_deleted",
            DropReason::Invalid => "invalid",
        }
    }
}

/// What kind of error failed an attempt: the `error` label of failed attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ErrorClass {
    /// The target took longer than the delivery's timeout.
    Timeout,
    /// The connection was refused or reset, or the name did not resolve.
    Connection,
    Http4xx,
    Http5xx,
    /// SMTP 4xx: try again later (greylisting, a full mailbox).
    Smtp4xx,
    /// SMTP 5xx: refused for good.
    Smtp5xx,
    /// `actions.webhook_deny`, `webhook_allow` or `smtp.allowed_domains` refused it.
    Denied,
    /// A command exited non-zero or was killed after its timeout.
    Command,
    /// Anything else: the request could not be built, TLS failed, a protocol error.
    Other,
}

impl ErrorClass {
    pub fn name(self) -> &'static str {
        match self {
            ErrorClass::Timeout => "timeout",
            ErrorClass::Connection => "connection",
            ErrorClass::Http4xx => "http_4xx",
            ErrorClass::Http5xx => "http_5xx",
            ErrorClass::Smtp4xx => "smtp_4xx",
            ErrorClass::Smtp5xx => "smtp_5xx",
            ErrorClass::Denied => "denied",
            ErrorClass::Command => "command",
            ErrorClass::Other => "other",
        }
    }
}
