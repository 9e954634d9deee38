//! The cluster, the component (cluster.md): whether this node is alone or a member of a
//! cluster (`Cluster`, `[cluster]` as read at start), and a member's state
//! (`ClusterState`): the cluster link's slot, whether Redis answers (and since when it
//! does not), the counts held for its first answer or left by the previous master, the
//! calls a stopped link left in doubt (kept in `cluster-calls.json` across a stop), the
//! registry changes waiting to be published or in flight, and the figures of the calls to
//! Redis. What the master does with them is `cluster.rs`.
//!
//! Nothing outside this file and `cluster.rs` opens the mode: the others call `Cluster`'s
//! hooks, which answer the same way alone (nothing to do, no line in the process table)
//! and in a cluster. Plain state and its files: never forks, never waits.

use std::collections::VecDeque;
use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use uuid::Uuid;

use super::counting::Route;
use super::kept::Kept;
use super::pool::Asker;
use crate::child::{Child, Role};
use crate::cluster::CALL_BOUNDS;
use crate::config;
use crate::exposition::{Histogram, write_family};
use crate::protocol::cluster::{CountCall, ToCluster};
use crate::registry::{Change, Origin, Registry};
use crate::status::ClusterStatus;
use crate::watch::CountBatch;
use crate::watch::Firing;
use crate::watch::SharedCount;
use crate::watch::store::Second;

/// This node alone, or a member of a cluster with its state: the mode, chosen at start.
pub(super) struct Cluster {
    member: Option<ClusterState>,
}

impl Cluster {
    pub(super) fn new(config: Option<config::Cluster>) -> Cluster {
        Cluster {
            member: config.map(ClusterState::new),
        }
    }

    /// A member's state, for the verbs of `cluster.rs` only.
    pub(super) fn member(&self) -> Option<&ClusterState> {
        self.member.as_ref()
    }

    pub(super) fn member_mut(&mut self) -> Option<&mut ClusterState> {
        self.member.as_mut()
    }

    /// The cluster link, while one runs: its line in the process table (none alone).
    pub(super) fn link(&self) -> Option<&Child> {
        self.member.as_ref().and_then(|c| c.link.get())
    }

    pub(super) fn link_mut(&mut self) -> Option<&mut Child> {
        self.member.as_mut().and_then(|c| c.link.get_mut())
    }

    /// Where counts go once this master is in charge: to Redis in a cluster.
    pub(super) fn route(&self) -> Route {
        match self.member {
            Some(_) => Route::Shared,
            None => Route::Local,
        }
    }

    /// A firing of this master's own store: in a cluster, marked degraded (Redis judged
    /// none of it) and named after this node.
    pub(super) fn mark_own(&self, firing: &mut Firing) {
        firing.degraded = self.member.is_some();
        firing.node = self.member.as_ref().map(|c| c.config.node_name.clone());
    }

    /// To the other nodes, through the link; a node alone keeps it to itself.
    pub(super) fn tell(&mut self, message: &ToCluster) {
        if let Some(member) = self.member.as_mut() {
            member.send(message);
        }
    }

    /// Built held by a master taking over, released when it has.
    pub(super) fn hold_link(&mut self) {
        if let Some(member) = self.member.as_mut() {
            member.link.hold();
        }
    }

    pub(super) fn release_link(&mut self) {
        if let Some(member) = self.member.as_mut() {
            member.link.release();
        }
    }

    /// A stop: the link sends its last counts, then exits.
    pub(super) fn stop_link(&mut self, why: &str) {
        if let Some(member) = self.member.as_mut() {
            member.link.stop(&ToCluster::Stop, why);
        }
    }

    /// The `cluster` section of the status, in a cluster.
    pub(super) fn status(&self, registry_version: u64) -> Option<ClusterStatus> {
        (self.member.as_ref()).map(|member| member.status(registry_version))
    }

    /// The link's metric families, in a cluster.
    pub(super) fn render(&self, out: &mut String) {
        if let Some(member) = &self.member {
            member.render(out);
        }
    }
}

pub(super) fn load_calls_in_doubt(path: &Path) -> anyhow::Result<Vec<CountCall>> {
    let Some(document) = crate::files::read_state_file(path, "calls in doubt")? else {
        return Ok(Vec::new());
    };
    serde_json::from_slice(&document)
        .with_context(|| format!("calls in doubt {} are corrupt; ignored", path.display()))
}

/// Writes the calls in doubt, or removes the file when there are none.
pub(super) fn save_calls_in_doubt(path: &Path, calls: &[CountCall]) -> anyhow::Result<()> {
    if calls.is_empty() {
        if path.exists() {
            crate::files::remove_owned(path, "calls in doubt");
        }
        return Ok(());
    }
    let document = serde_json::to_vec(calls).context("cannot serialize the calls in doubt")?;
    crate::files::replace_atomically(path, &document)
}

pub(super) struct ClusterState {
    pub(super) config: config::Cluster,
    pub(super) link: Kept,
    /// Redis did not answer: counting locally since then.
    pub(super) degraded_since: Option<Instant>,
    /// Redis answered or failed once: until then, counts are held for it.
    pub(super) settled: bool,
    /// Registry changes waiting for Redis, in the order they came.
    pub(super) publishing: VecDeque<PendingChange>,
    /// The changes published together, waiting for Redis' outcome: one at a time.
    pub(super) in_flight: Option<InFlight>,
    /// The version the link last reported for the shared registry.
    pub(super) shared_version: Option<u64>,
    /// Counts made before Redis first answered (a start, a new master taking over):
    /// shared at its first answer, or counted alone at its first failure.
    pub(super) held: Vec<(Second, CountBatch)>,
    /// The counts the previous master left in `counters.json` (Redis does not have
    /// them): sent when Redis answers.
    pub(super) restored: Vec<SharedCount>,
    /// Calls a stopping link left in doubt (Redis may have counted them): saved in
    /// `cluster-calls.json` at a stop, handed to the next link, which sends them again with
    /// their ids.
    pub(super) in_doubt: Vec<CountCall>,
    pub(super) latency: Histogram,
    pub(super) errors: u64,
}

pub(super) struct PendingChange {
    pub(super) asker: Asker,
    pub(super) change: Change,
    pub(super) origin: Origin,
    pub(super) attempts: u32,
}

/// Registry changes published as one write: the registry they make, and each change
/// with what it created.
pub(super) struct InFlight {
    pub(super) registry: Registry,
    pub(super) changes: Vec<(PendingChange, Uuid)>,
}

impl ClusterState {
    fn new(config: config::Cluster) -> ClusterState {
        ClusterState {
            config,
            link: Kept::new(Role::ClusterLink),
            // Until Redis first answers, counts are this node's own.
            degraded_since: Some(Instant::now()),
            settled: false,
            publishing: VecDeque::new(),
            in_flight: None,
            shared_version: None,
            held: Vec::new(),
            restored: Vec::new(),
            in_doubt: Vec::new(),
            latency: Histogram::default(),
            errors: 0,
        }
    }

    /// Counts go to Redis: the link is up, not told to stop (it would not read them),
    /// and Redis answered last.
    pub(super) fn shares(&self) -> bool {
        self.degraded_since.is_none() && self.link.get().is_some_and(Child::listens)
    }

    pub(super) fn send(&mut self, message: &ToCluster) {
        self.link.send(message);
    }

    fn status(&self, registry_version: u64) -> ClusterStatus {
        ClusterStatus {
            mode: self.config.mode.name().to_string(),
            node: self.config.node_name.clone(),
            redis_reachable: self.degraded_since.is_none(),
            registry_version,
            shared_registry_version: self.shared_version,
        }
    }

    fn render(&self, out: &mut String) {
        write_family(
            out,
            "eventsd_cluster_degraded",
            "gauge",
            "1 while Redis is unreachable and this node counts alone.",
            [(String::new(), u64::from(self.degraded_since.is_some()))],
        );
        let calls = "eventsd_cluster_redis_call_seconds";
        out.push_str(&format!(
            "# HELP {calls} Seconds per call to Redis.\n# TYPE {calls} histogram\n"
        ));
        self.latency.write_samples(out, calls, "", &CALL_BOUNDS);
        write_family(
            out,
            "eventsd_cluster_redis_errors_total",
            "counter",
            "Calls to Redis that failed or timed out.",
            [(String::new(), self.errors)],
        );
    }
}
