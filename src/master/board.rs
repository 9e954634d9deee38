//! The status board: what `GET /status` answers (ui.md), the facts the status page
//! shows, as one JSON document built by the master from its own parts (the pool, the
//! traffic rings, the watchers, the journal of pending firings, the cluster link).
//!
//! Built on request only, and at most once a second however many pages poll it (the
//! document is kept for a second): serving the page costs the master nothing per event.
//! It changes nothing, and holds no client-controlled string it did not get from the
//! registry or the counters; the page inserts them all as text.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use log::error;
use serde::Serialize;

use super::Master;
use super::traffic::{Traffic, TrafficReport};
use crate::metrics::ProcessFigures;
use crate::status::{ClusterStatus, Status, WorkerStatus};
use crate::watch::{self, WatcherState};

/// How long a built document is served again: pages poll every 2 s.
const REUSE_FOR: Duration = Duration::from_secs(1);
/// The hottest keys shown per watcher.
const HOTTEST_KEYS: usize = 10;

/// The master's side of the status page: the traffic rings and the last document.
#[derive(Default)]
pub struct Board {
    pub traffic: Traffic,
    last: Option<(Instant, String)>,
}

#[derive(Serialize)]
struct Document<'a> {
    daemon: Daemon,
    workers: Vec<WorkerRow>,
    traffic: TrafficReport<'a>,
    watchers: Vec<WatcherState>,
    pending: Vec<PendingTarget>,
    cluster: Option<ClusterStatus>,
}

#[derive(Serialize)]
struct Daemon {
    version: &'static str,
    commit: Option<&'static str>,
    /// `single node`, `cluster` (Redis reachable) or `cluster, degraded` (counting alone).
    mode: &'static str,
    #[serde(flatten)]
    status: Status,
}

/// A worker as `fullstatus --json` shows it, with its CPU time.
#[derive(Serialize)]
struct WorkerRow {
    #[serde(flatten)]
    status: WorkerStatus,
    cpu_seconds: f64,
}

#[derive(Serialize)]
struct PendingTarget {
    /// The target by origin (`https://hooks.example.com`, `smtp`, `command`): no
    /// credentials, paths or queries (security.md).
    target: String,
    firings: u64,
}

impl Master {
    /// One tick of the traffic rings, from the totals the heartbeats brought.
    pub(super) fn sample_traffic(&mut self) {
        let registry = &self.registry;
        self.board.traffic.tick(
            Instant::now(),
            self.totals.collected(),
            &self.totals.rejected(),
            |event| registry.event(event).is_some(),
        );
    }

    /// The `/status` document, as JSON text.
    pub(super) fn status_document(&mut self) -> String {
        let now = Instant::now();
        if let Some((built, document)) = &self.board.last {
            if now.saturating_duration_since(*built) < REUSE_FOR {
                return document.clone();
            }
        }
        let document = serde_json::to_string(&self.document()).unwrap_or_else(|e| {
            error!("the status document cannot be serialized: {e}");
            "{}".to_string()
        });
        self.board.last = Some((now, document.clone()));
        document
    }

    fn document(&self) -> Document<'_> {
        let mut status = self.status();
        let workers = std::mem::take(&mut status.workers)
            .into_iter()
            .map(|status| WorkerRow {
                cpu_seconds: ProcessFigures::read(&status.pid.to_string()).cpu_seconds,
                status,
            })
            .collect();
        let cluster = status.cluster.take();
        let mode = match &cluster {
            None => "single node",
            Some(cluster) if cluster.redis_reachable => "cluster",
            Some(_) => "cluster, degraded",
        };
        Document {
            daemon: Daemon {
                version: env!("CARGO_PKG_VERSION"),
                commit: option_env!("EVENTSD_COMMIT"),
                mode,
                status,
            },
            workers,
            traffic: self.board.traffic.report(),
            watchers: self.watch.states(watch::now(), HOTTEST_KEYS),
            pending: pending_targets(self.actions.journal.pending_by_target()),
            cluster,
        }
    }
}

fn pending_targets(by_target: BTreeMap<String, u64>) -> Vec<PendingTarget> {
    by_target
        .into_iter()
        .map(|(target, firings)| PendingTarget { target, firings })
        .collect()
}
