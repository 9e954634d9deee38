//! A worker's on-call question (`Request`: silences, the alert list, a watcher's live
//! state, alerts.md) and the master's answer (`Reply`: an HTTP status and a JSON body),
//! carried by `worker::Question::OnCall` and `worker::Answer::OnCall`.
//!
//! Plain data: no I/O.

use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use crate::oncall::history::Filter;
use crate::oncall::silence::State;
use crate::registry::Refusal;

/// A worker's question about silences and alerts, its query already parsed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    CreateSilence {
        body: Vec<u8>,
        client: String,
    },
    ListSilences {
        state: Option<State>,
    },
    GetSilence {
        id: Uuid,
    },
    ExpireSilence {
        id: Uuid,
        client: String,
    },
    Alerts(Filter),
    /// `GET /event/{type}/watcher/{name}/state`; key values only if `reveal_keys`.
    WatcherState {
        event: String,
        watcher: String,
        limit: usize,
        reveal_keys: bool,
    },
}

impl Request {
    /// Whether it changes state (and so needs the token, as registry changes do).
    pub fn is_change(&self) -> bool {
        matches!(
            self,
            Request::CreateSilence { .. } | Request::ExpireSilence { .. }
        )
    }
}

/// The HTTP status and JSON body of an answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    pub status: u16,
    pub body: String,
}

impl Reply {
    pub fn ok(status: u16, value: &impl Serialize) -> Reply {
        let body = serde_json::to_string(value).unwrap_or_else(|_| "{}".to_string());
        Reply { status, body }
    }

    pub fn refused(refusal: &Refusal) -> Reply {
        Reply::ok(
            refusal.status,
            &json!({"status_code": refusal.status, "message": refusal.message}),
        )
    }
}
