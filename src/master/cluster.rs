//! The master's side of a cluster (cluster.md): it keeps the cluster link (`src/cluster/`)
//! up, sends it the counts while Redis answers and counts locally what the link could
//! not send (firings marked `degraded`; local counts, every rule's values and episodes
//! with them, dropped when Redis is back, never handed over), turns
//! the crossings Redis reports into firings, and shares the registry: a change is
//! published to Redis (optimistically, over the version it was made on, replayed on the
//! newer one when another node's change won) before it is adopted, a newer version from
//! Redis is adopted, and a Redis that lost the registry is seeded with this node's copy.
//!
//! Across a stop or an upgrade: what Redis never got is saved in `counters.json` and
//! the calls the link left in doubt in `cluster-calls.json`; the next master sends the
//! first at Redis' first answer and hands the second to its link.
//!
//! Never waits: the link answers by message, and a change waits in `publishing`; those
//! that came while a write was in flight are published together as the next one.

use std::os::fd::AsRawFd;
use std::time::Instant;

use log::{error, info, warn};
use nix::poll::PollFlags;
use nix::unistd::Pid;
use uuid::Uuid;

use super::cluster_state::{InFlight, PendingChange, load_calls_in_doubt, save_calls_in_doubt};
use super::pool::Asker;
use super::{Master, setup};
use crate::child::{self, Role};
use crate::cluster;
use crate::protocol::cluster::{FromCluster, Publication, ToCluster};
use crate::protocol::worker::{Answer, MasterMessage};
use crate::registry::{Change, Origin, Refusal, Registry};
use crate::watch::store::Second;
use crate::watch::{CountBatch, SetCounts, SetValues, SharedCount};

/// Batches held for Redis' first answer, at most (a link that cannot start): past them,
/// counts are this node's own.
const MAX_HELD_BATCHES: usize = 10_000;

/// Times a change is made again on a newer registry after losing a race to another
/// node. A change to another entry is replayed on the registry that won and written
/// next, so only a change to the same entry is refused (by the replay's own checks: the
/// name taken, the watcher gone). Each lost race is another node's change written: the
/// bound only stops a change that never finds a turn in a registry changing without
/// pause.
const PUBLISH_ATTEMPTS: u32 = 100;

/// In the state folder: the calls to Redis a stopped node left in doubt.
const CALLS_IN_DOUBT: &str = "cluster-calls.json";

impl Master {
    /// Keeps the link up (paced after a quick death). A master taking over from an old
    /// one starts none until it has: it must not adopt registries the old one writes.
    pub(super) fn keep_cluster_link(&mut self) {
        let Some(cluster) = self.cluster.member() else {
            return;
        };
        if !cluster.link.wants_one(Instant::now()) {
            return;
        }
        let mut master_fds = self.master_only_fds();
        master_fds.push(self.ground.listener.as_raw_fd());
        // The section read at start: `[cluster]` changes take a restart or an upgrade.
        let mut config = self.ground.config.clone();
        config.cluster = Some(cluster.config.clone());
        let forked = child::fork_child(Role::ClusterLink, &master_fds, |channel| {
            cluster::serve(&config, channel)
        });
        if let Some(cluster) = self.cluster.member_mut() {
            if let Some(link) = cluster.link.started(forked) {
                let in_doubt = std::mem::take(&mut cluster.in_doubt);
                if !in_doubt.is_empty() {
                    link.send(&ToCluster::Resend(in_doubt));
                }
            }
        }
    }

    /// Counts shared through Redis, or this node's own while it is unreachable; held
    /// until Redis first answers or fails. `None` when the batch went to Redis or waits.
    pub(super) fn share_counts(&mut self, batch: CountBatch, at: Second) -> Option<CountBatch> {
        let Some(cluster) = self.cluster.member_mut() else {
            return Some(batch);
        };
        if !cluster.settled && cluster.held.len() < MAX_HELD_BATCHES {
            cluster.held.push((at, batch));
            return None;
        }
        if !cluster.shares() {
            return Some(batch);
        }
        let counts = self.counting.watch.shared_counts(batch);
        if !counts.is_empty() {
            cluster.send(&ToCluster::Count(counts));
        }
        None
    }

    pub(super) fn read_cluster_link(&mut self, events: PollFlags) {
        let Some(link) = self.cluster.member_mut().and_then(|c| c.link.get_mut()) else {
            return;
        };
        for message in link.exchange::<FromCluster>(events) {
            self.on_cluster_message(message);
        }
    }

    fn on_cluster_message(&mut self, message: FromCluster) {
        match message {
            FromCluster::Reachable(reachable) => {
                let was_degraded = self
                    .cluster
                    .member()
                    .is_some_and(|c| c.degraded_since.is_some());
                self.set_reachable(reachable);
                if reachable && was_degraded {
                    self.share_every_silence();
                }
            }
            FromCluster::Crossed(crossings) => {
                let node = self.cluster.member().map(|c| c.config.node_name.clone());
                let node = node.unwrap_or_default();
                for crossing in crossings {
                    if let Some(job) = self.counting.watch.job_of(&crossing, &node) {
                        self.dispatch(job);
                    }
                }
            }
            FromCluster::Unreached(counts) => {
                self.set_reachable(false);
                self.count_alone(counts);
            }
            FromCluster::InDoubt(calls) => {
                if let Some(cluster) = self.cluster.member_mut() {
                    cluster.in_doubt.extend(calls);
                }
            }
            FromCluster::Registry(shared) => self.follow_shared_registry(shared),
            FromCluster::Published(publication) => self.on_published(publication),
            FromCluster::Silences(shared) => self.adopt_shared_silences(shared),
            FromCluster::Calls { latency, errors } => {
                if let Some(cluster) = self.cluster.member_mut() {
                    cluster.latency.merge(&latency);
                    cluster.errors += errors;
                }
            }
        }
    }

    fn set_reachable(&mut self, reachable: bool) {
        let Some(cluster) = self.cluster.member_mut() else {
            return;
        };
        let first = !cluster.settled;
        cluster.settled = true;
        match (reachable, cluster.degraded_since) {
            (false, None) => {
                warn!("cluster: Redis unreachable; counting on this node alone (degraded)");
                cluster.degraded_since = Some(Instant::now());
            }
            (false, Some(_)) if first => {
                warn!(
                    "cluster: Redis unreachable at start; counting on this node alone (degraded)"
                );
            }
            (true, Some(since)) => {
                cluster.degraded_since = None;
                let dropped = self.counting.watch.clear_counts();
                if first {
                    info!("cluster: Redis reachable; counting shared");
                } else {
                    info!(
                        "cluster: Redis reachable after {:.1}s; counting shared again, the \
                         {dropped} keys counted alone meanwhile are dropped",
                        since.elapsed().as_secs_f64()
                    );
                }
            }
            _ => {}
        }
        let held = self
            .cluster
            .member_mut()
            .map(|c| std::mem::take(&mut c.held))
            .unwrap_or_default();
        for (at, batch) in held {
            self.counting.backlog.push(None, at, batch);
        }
        if reachable {
            self.send_restored_counts();
        }
        if first {
            self.publish_next_change();
        }
    }

    /// A node that starts or takes over sends Redis what the previous master could not
    /// (its `counters.json`), at Redis' first answer; until then they wait, and a stop
    /// saves them again (`keep_what_redis_lacks`). The calls it left in doubt go to
    /// the link, which sends them again with their ids.
    pub(super) fn take_restored_counts(&mut self) {
        let Some(cluster) = self.cluster.member_mut() else {
            return;
        };
        let path = self.ground.config.daemon.state_dir.join(CALLS_IN_DOUBT);
        match load_calls_in_doubt(&path) {
            Ok(calls) => cluster.in_doubt = calls,
            Err(e) => error!("{e:#}; their counts may be missing from Redis"),
        }
        let restored = self.counting.watch.take_shared_counts(crate::watch::now());
        if !restored.is_empty() {
            let events: u64 = restored.iter().map(|c| c.events).sum();
            info!(
                "cluster: {events} events of {} keys left by the previous master, for Redis",
                restored.len()
            );
        }
        cluster.restored.extend(restored);
    }

    fn send_restored_counts(&mut self) {
        let Some(cluster) = self.cluster.member_mut().filter(|c| c.shares()) else {
            return;
        };
        let restored = std::mem::take(&mut cluster.restored);
        if !restored.is_empty() {
            cluster.send(&ToCluster::Count(restored));
        }
    }

    /// Before the counters are saved at a stop or a hand-over: counts Redis never got
    /// (held for its first answer, restored at start) join this node's own, so that
    /// `counters.json` keeps them for the next master to send.
    pub(super) fn keep_what_redis_lacks(&mut self) {
        let Some(cluster) = self.cluster.member_mut() else {
            return;
        };
        let held = std::mem::take(&mut cluster.held);
        let restored = std::mem::take(&mut cluster.restored);
        let path = self.ground.config.daemon.state_dir.join(CALLS_IN_DOUBT);
        if let Err(e) = save_calls_in_doubt(&path, &cluster.in_doubt) {
            error!("{e:#}; their counts may be missing from Redis");
        }
        for (at, batch) in held {
            self.count_locally(batch, at);
        }
        self.count_alone(restored);
    }

    /// Counts Redis did not take, counted here; what fires is marked degraded.
    fn count_alone(&mut self, counts: Vec<SharedCount>) {
        let (valued, counted): (Vec<SharedCount>, Vec<SharedCount>) =
            counts.into_iter().partition(|c| !c.values.is_empty());
        let batch = CountBatch {
            events: Vec::new(),
            sets: counted
                .into_iter()
                .map(|c| SetCounts {
                    watchers: vec![c.watcher],
                    keys: vec![(c.key, c.events)],
                })
                .collect(),
            values: valued
                .into_iter()
                .map(|c| SetValues {
                    watchers: vec![c.watcher],
                    keys: vec![(c.key, c.values)],
                })
                .collect(),
        };
        self.count_locally(batch, crate::watch::now());
    }

    /// A registry change, in a cluster: published to Redis before it is adopted, in the
    /// order changes come.
    pub(super) fn publish_change(&mut self, asker: Asker, change: Change, origin: Origin) {
        if let Some(cluster) = self.cluster.member_mut() {
            cluster.publishing.push_back(PendingChange {
                asker,
                change,
                origin,
                attempts: 0,
            });
        }
        self.publish_next_change();
    }

    /// Publishes every waiting change as one write over this node's registry, unless a
    /// write is in flight or Redis has not answered yet (a start, a take-over). One
    /// round trip for all the changes that came meanwhile: published one by one, a
    /// burst of changes (and each race lost to another node) waits a round trip per
    /// change, until the last ones pass their deadline and are answered 503 though no
    /// other change touched their entry. A change the registry's checks refuse (its
    /// entry taken or gone) is answered at once; the others apply on top of each other.
    fn publish_next_change(&mut self) {
        let Some(cluster) = self.cluster.member_mut() else {
            return;
        };
        if !cluster.settled || cluster.in_flight.is_some() {
            return;
        }
        let shares = cluster.shares();
        let waiting = std::mem::take(&mut cluster.publishing);
        let mut next = self.registry.clone();
        let mut changes = Vec::new();
        for mut pending in waiting {
            // Its worker gave up while it waited its turn: dropped, never published.
            if self.past_deadline(pending.asker, Some(pending.change.kind())) {
                continue;
            }
            pending.attempts += 1;
            match self.prepare_published(next.clone(), &pending, shares) {
                Ok((prepared, created)) => {
                    next = prepared;
                    changes.push((pending, created));
                }
                Err(refusal) => self.refuse(pending.asker, refusal),
            }
        }
        if !changes.is_empty() {
            self.send_publication(next, changes);
        }
    }

    /// `pending` applied on `next` (the registry with the changes published before it),
    /// checked as a change on one node is, and for the size of the document it makes.
    fn prepare_published(
        &mut self,
        next: Registry,
        pending: &PendingChange,
        shares: bool,
    ) -> Result<(Registry, Uuid), Refusal> {
        if !shares {
            return Err(Refusal {
                status: 503,
                message: "The shared registry (Redis) is unreachable; try again".to_string(),
            });
        }
        let (next, created) = self.prepare_change(next, &pending.change, pending.origin)?;
        let rules = self.ground.config.registry_rules();
        Registry::check_size(&pending.change, || next.document_len(), &rules)?;
        Ok((next, created))
    }

    fn send_publication(&mut self, next: Registry, changes: Vec<(PendingChange, Uuid)>) {
        let expected = self.registry.version;
        let Some(cluster) = self.cluster.member_mut() else {
            return;
        };
        match serde_json::to_string(&next) {
            Ok(document) => {
                cluster.send(&ToCluster::Publish {
                    expected,
                    version: next.version,
                    document,
                });
                cluster.in_flight = Some(InFlight {
                    registry: next,
                    changes,
                });
            }
            Err(e) => {
                let refusal = Refusal {
                    status: 503,
                    message: format!("cannot serialize the registry: {e}"),
                };
                self.refuse_all(changes, &refusal);
            }
        }
    }

    fn on_published(&mut self, publication: Publication) {
        let Some(InFlight { registry, changes }) =
            self.cluster.member_mut().and_then(|c| c.in_flight.take())
        else {
            return;
        };
        match publication {
            Publication::Written(version) => {
                if let Some(cluster) = self.cluster.member_mut() {
                    cluster.shared_version = Some(version);
                }
                self.adopt_published(registry, changes);
            }
            Publication::Conflict(version, document) => {
                info!(
                    "registry: version {version} was written by another node first; {} \
                     changes made again on it",
                    changes.len()
                );
                self.adopt_shared(version, &document);
                self.replay(changes);
            }
            Publication::Failed(error) => {
                warn!("registry change not shared: {error}");
                let refusal = Refusal {
                    status: 503,
                    message: format!("The shared registry (Redis) failed: {error}"),
                };
                self.refuse_all(changes, &refusal);
            }
            // Redis may have written it: a 503 would be a lie. Written, it comes back
            // with the version poll, as another node's change does.
            Publication::InDoubt(error) => {
                warn!("registry change sent to Redis without an answer: {error}");
                let refusal = Refusal {
                    status: 504,
                    message: format!(
                        "The shared registry (Redis) did not answer ({error}): the change \
                         may or may not be applied; read it back before retrying"
                    ),
                };
                self.refuse_all(changes, &refusal);
            }
        }
        self.publish_next_change();
    }

    /// Changes Redis took: adopted here, each answered once every worker serves them
    /// (read-your-writes).
    fn adopt_published(&mut self, registry: Registry, changes: Vec<(PendingChange, Uuid)>) {
        let made: Vec<Change> = changes.iter().map(|(p, _)| p.change.clone()).collect();
        match self.adopt_change(registry, &made) {
            Ok(()) => {
                for (pending, created) in changes {
                    self.audit(&pending.change, pending.origin, created);
                    self.applied(pending.asker, Answer::Change(Ok(created)));
                }
            }
            Err(refusal) => self.refuse_all(changes, &refusal),
        }
    }

    /// Changes that lost the race to another node's write go back to the head of the
    /// queue, to be made again on the registry that won: one on the same entry is then
    /// refused by the registry's own checks (the name taken, the watcher gone).
    fn replay(&mut self, changes: Vec<(PendingChange, Uuid)>) {
        let mut again = Vec::new();
        for (pending, _) in changes {
            if pending.attempts >= PUBLISH_ATTEMPTS {
                let refusal = Refusal {
                    status: 503,
                    message: "The registry changed under this change too often; try again"
                        .to_string(),
                };
                self.refuse(pending.asker, refusal);
            } else {
                again.push(pending);
            }
        }
        if let Some(cluster) = self.cluster.member_mut() {
            for pending in again.into_iter().rev() {
                cluster.publishing.push_front(pending);
            }
        }
    }

    fn refuse_all(&mut self, changes: Vec<(PendingChange, Uuid)>, refusal: &Refusal) {
        for (pending, _) in changes {
            self.refuse(pending.asker, refusal.clone());
        }
    }

    fn refuse(&mut self, asker: Asker, refusal: Refusal) {
        let answer = Answer::Change(Err(refusal));
        self.send_to(
            asker.worker,
            MasterMessage::Answer {
                id: asker.id,
                answer,
            },
        );
    }

    /// The shared registry as the link last read it: adopted when newer than this
    /// node's, and this node's copy written back when Redis lost it or holds an older one.
    fn follow_shared_registry(&mut self, shared: Option<(u64, String)>) {
        let version = shared.as_ref().map_or(0, |(version, _)| *version);
        if let Some(cluster) = self.cluster.member_mut() {
            cluster.shared_version = Some(version);
        }
        match shared {
            Some((version, document)) if version > self.registry.version => {
                self.adopt_shared(version, &document);
            }
            _ if version < self.registry.version => match serde_json::to_string(&self.registry) {
                Ok(document) => {
                    let version = self.registry.version;
                    if let Some(cluster) = self.cluster.member_mut() {
                        cluster.send(&ToCluster::Seed { version, document });
                    }
                }
                Err(e) => error!("cannot serialize the registry: {e}"),
            },
            _ => {}
        }
    }

    /// Adopts a registry another node wrote, checked as a client's change would be: an
    /// entry this node's rules refuse (a `command` watcher planted in Redis) is dropped.
    fn adopt_shared(&mut self, version: u64, document: &str) {
        let mut registry: Registry = match serde_json::from_str(document) {
            Ok(registry) => registry,
            Err(e) => {
                error!("shared registry version {version} is unreadable ({e}); ignored");
                return;
            }
        };
        for refusal in registry.drop_forbidden(&self.ground.config.registry_rules()) {
            error!("shared registry version {version}: {refusal}; dropped on this node");
        }
        registry.declare(&self.ground.config.event);
        registry.version = version;
        if let Err(e) = registry.save(&setup::registry_path(&self.ground.config)) {
            error!("shared registry version {version} not saved locally: {e:#}");
        }
        info!("registry: version {version} adopted from the cluster");
        self.registry = registry;
        self.counting.watch.sync(&self.registry);
        self.settle_orphaned_firings();
        self.push_registry();
    }

    /// Called by the reaper for the link; the next one is started by
    /// `keep_cluster_link`. Until it answers, this node counts alone.
    pub(super) fn on_cluster_link_exit(&mut self, pid: Pid, how: &str) {
        let stopping = self.is_stopping();
        let Some(cluster) = self.cluster.member_mut() else {
            return;
        };
        let Some(link) = cluster.link.exited(pid, how, stopping) else {
            return;
        };
        if !link.is_stopping() && !stopping {
            cluster.degraded_since.get_or_insert_with(Instant::now);
        }
        // Changes in flight are lost with the link: refused, to be sent again.
        if let Some(in_flight) = cluster.in_flight.take() {
            let refusal = Refusal {
                status: 503,
                message: "The cluster link restarted; try again".to_string(),
            };
            self.refuse_all(in_flight.changes, &refusal);
        }
    }

    /// A registry change: in a cluster, published to Redis first (`publish_change`);
    /// alone, given back to be applied here.
    pub(super) fn publish_if_shared(
        &mut self,
        asker: Asker,
        change: Change,
        origin: Origin,
    ) -> Option<(Change, Origin)> {
        if self.cluster.member().is_none() {
            return Some((change, origin));
        }
        self.publish_change(asker, change, origin);
        None
    }
}
