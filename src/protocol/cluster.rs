//! The cluster link's channel: what the master tells the link (`ToCluster`: counts with
//! the rules each key is judged by, registry writes, calls to send again, silences to
//! share, stop) and what the link tells the master (`FromCluster`: crossings, counts it
//! could not send, calls in doubt, Redis' reachability, the shared registry and
//! silences, call figures). A `CountCall` is
//! one `eventsd_count` call under its id; the link builds and sends it (`cluster`).
//!
//! Plain data: no I/O.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::exposition::Histogram;
use crate::oncall::silence::Silence;
use crate::watch::store::Second;
use crate::watch::{Crossing, SharedCount};

/// What the master tells the link.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ToCluster {
    Count(Vec<SharedCount>),
    /// Write the registry `document` as `version` over `expected`, or report the conflict.
    Publish {
        expected: u64,
        version: u64,
        document: String,
    },
    /// Write this node's copy into a Redis that has none, or an older one.
    Seed {
        version: u64,
        document: String,
    },
    /// Calls a previous master's link left in doubt: sent again with their ids.
    Resend(Vec<CountCall>),
    /// Silences made or expired on this node (or all of them, for a Redis that may
    /// have lost them): written until Redis takes them.
    ShareSilences(Vec<Silence>),
    /// Silences expired long enough that every node forgets them.
    ForgetSilences(Vec<Uuid>),
    Stop,
}

/// What the link tells the master.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FromCluster {
    /// Redis answered again (`true`) or a call failed (`false`); sent on every change.
    Reachable(bool),
    Crossed(Vec<Crossing>),
    /// Counts never sent (Redis unreachable): the master counts them locally.
    Unreached(Vec<SharedCount>),
    /// Calls still in doubt when the link stops: the master keeps them for the next
    /// link, which sends them again with their ids.
    InDoubt(Vec<CountCall>),
    /// The shared registry (version, document), newer than the last one reported; `None`
    /// when Redis holds none.
    Registry(Option<(u64, String)>),
    Published(Publication),
    /// Every shared silence, when the set changed.
    Silences(Vec<Silence>),
    /// Calls to Redis since the last report: their latency and how many failed.
    Calls {
        latency: Histogram,
        errors: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Publication {
    Written(u64),
    /// Another node wrote first: its version and document.
    Conflict(u64, String),
    /// Not written (not sent, or refused by Redis).
    Failed(String),
    /// Sent without an answer (no reply in time, the connection lost): Redis may have
    /// written it, and the version poll then brings it.
    InDoubt(String),
}

/// One `eventsd_count` call: the counts of one slot under an id that Redis records with
/// them, atomically. A call whose outcome is unknown (a timeout, a connection lost after
/// sending) is sent again with the same id: Redis adds it once, and answers the second
/// time with the replies of the first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CountCall {
    pub id: Uuid,
    pub counts: Vec<SharedCount>,
    /// When it was first sent (seconds since the epoch: calls in doubt outlive a stop):
    /// past `CALL_ID_TTL`, sending it again could add it twice.
    pub sent_at: Option<Second>,
}
