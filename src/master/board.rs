//! The status board: what `GET /status` answers (ui.md), the facts the status page
//! shows, as one JSON document built by the master from its own parts (the pool, the
//! traffic rings, the watchers' live state, the alert list and the silences of
//! `oncall`, the journal of pending firings, the cluster link).
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
use super::oncall::LiveState;
use super::traffic::{Traffic, TrafficReport};
use crate::metrics::ProcessFigures;
use crate::oncall::history::{Alert, AlertState, Filter};
use crate::oncall::silences::Shown;
use crate::status::{ClusterStatus, Status, WorkerStatus};

/// How long a built document is served again: pages poll every 2 s.
const REUSE_FOR: Duration = Duration::from_secs(1);
/// The hottest keys shown per watcher.
const HOTTEST_KEYS: usize = 10;
/// The recent firings shown.
const RECENT_FIRINGS: usize = 20;

/// The master's side of the status page: the traffic rings and the last document.
#[derive(Default)]
pub struct Board {
    pub traffic: Traffic,
    /// When it was built, whether it shows key values, the document.
    last: Option<(Instant, bool, String)>,
}

#[derive(Serialize)]
struct Document<'a> {
    daemon: Daemon,
    workers: Vec<WorkerRow>,
    traffic: TrafficReport<'a>,
    watchers: Vec<LiveState>,
    pending: Vec<PendingTarget>,
    firings: Vec<Alert>,
    silences: Vec<Shown<'a>>,
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

/// The firings waiting for one target, and how their delivery goes.
#[derive(Default, Serialize)]
struct PendingTarget {
    /// The target by origin (`https://hooks.example.com`, `smtp`, `command`): no
    /// credentials, paths or queries (security.md).
    target: String,
    firings: u64,
    /// The most attempts any of them has had.
    attempts: u32,
    /// Why the last failed attempt of the most tried one failed.
    last_error: Option<String>,
    /// The soonest next attempt.
    next_attempt_at: Option<String>,
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

    /// The `/status` document, as JSON text; key values only if `reveal_keys`.
    pub(super) fn status_document(&mut self, reveal_keys: bool) -> String {
        let now = Instant::now();
        if let Some((built, revealed, document)) = &self.board.last {
            if *revealed == reveal_keys && now.saturating_duration_since(*built) < REUSE_FOR {
                return document.clone();
            }
        }
        let document = serde_json::to_string(&self.document(reveal_keys)).unwrap_or_else(|e| {
            error!("the status document cannot be serialized: {e}");
            "{}".to_string()
        });
        self.board.last = Some((now, reveal_keys, document.clone()));
        document
    }

    fn document(&self, reveal_keys: bool) -> Document<'_> {
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
        let watchers = self.counting.watch.states(HOTTEST_KEYS, reveal_keys);
        Document {
            daemon: Daemon {
                version: env!("CARGO_PKG_VERSION"),
                commit: option_env!("EVENTSD_COMMIT"),
                mode,
                status,
            },
            workers,
            traffic: self.board.traffic.report(),
            watchers: watchers
                .into_iter()
                .map(|state| self.with_last_firing(state, reveal_keys))
                .collect(),
            pending: self.pending_targets(),
            firings: self
                .oncall
                .alerts(&recent(None, RECENT_FIRINGS, reveal_keys)),
            silences: self.oncall.silences(),
            cluster,
        }
    }

    /// The journal's pending firings by target, with how their deliveries go as the
    /// alert list has it.
    fn pending_targets(&self) -> Vec<PendingTarget> {
        let mut by_target: BTreeMap<String, PendingTarget> = self
            .actions
            .pending_by_target()
            .into_iter()
            .map(|(target, firings)| {
                let entry = PendingTarget {
                    target: target.clone(),
                    firings,
                    ..PendingTarget::default()
                };
                (target, entry)
            })
            .collect();
        let pending = recent(Some("pending"), crate::oncall::MAX_ALERTS, false);
        for alert in self.oncall.alerts(&pending) {
            let AlertState::Pending {
                target,
                attempts,
                last_error,
                next_attempt_at,
            } = alert.state
            else {
                continue;
            };
            let Some(entry) = by_target.get_mut(&target) else {
                continue;
            };
            if attempts >= entry.attempts {
                entry.attempts = attempts;
                entry.last_error = last_error.or(entry.last_error.take());
            }
            entry.next_attempt_at = match (entry.next_attempt_at.take(), next_attempt_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        by_target.into_values().collect()
    }
}

/// The newest `limit` alerts, of `state` if given.
fn recent(state: Option<&str>, limit: usize, reveal_keys: bool) -> Filter {
    Filter {
        event: None,
        watcher: None,
        state: state.map(str::to_string),
        limit,
        reveal_keys,
    }
}
