//! The status board: what the master shows of itself. The figures `/metrics` adds up
//! since start (`Totals`: what the workers' heartbeats carry, deliveries, registry
//! changes; the components that count add to them), and what `GET /status` answers
//! (ui.md) as one JSON document: the traffic rings sampled from those figures on the
//! tick, and the facts the other components hand it (`Facts`: the pool, the watchers'
//! live state, the alert list and the silences, the journal of pending firings, the
//! cluster link), gathered by the verb in `status_page.rs`.
//!
//! The document is built on request only, and at most once a second however many pages
//! poll it (it is kept, and no facts are gathered meanwhile); kept longer when it was
//! costly to build (a million keys to rank): open pages take at most a fiftieth of the
//! master's time, whatever the watchers hold. Serving the page costs the master nothing
//! per event. The board knows no other component, and holds no client-controlled string
//! it did not get from the registry or the counters; the page inserts them all as text.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use log::error;
use serde::Serialize;

use super::oncall_state::LiveState;
use super::traffic::{Traffic, TrafficReport};
use crate::metrics::{ProcessFigures, Totals};
use crate::oncall::history::{Alert, AlertState, Filter};
use crate::oncall::silences::Shown;
use crate::status::{ClusterStatus, Status, WorkerStatus};

/// How long a built document is served again at least: pages poll every 2 s.
const REUSE_AT_LEAST: Duration = Duration::from_secs(1);
/// ... and at least this many times as long as it took to build.
const REUSE_PER_BUILD_TIME: u32 = 50;
/// The hottest keys shown per watcher.
pub const HOTTEST_KEYS: usize = 10;
/// The recent firings shown.
pub const RECENT_FIRINGS: usize = 20;

/// The master's figures, and its side of the status page: the traffic rings and the last
/// document.
#[derive(Default)]
pub struct Board {
    totals: Totals,
    traffic: Traffic,
    /// The last document built, without and with key values.
    last: [Option<Kept>; 2],
}

struct Kept {
    serves_until: Instant,
    document: String,
}

/// What the other components tell the board for one document.
pub struct Facts<'a> {
    pub status: Status,
    pub watchers: Vec<LiveState>,
    /// The journal's pending firings, by target.
    pub pending_by_target: BTreeMap<String, u64>,
    /// The pending firings as the alert list has them: their attempts and errors.
    pub pending_alerts: Vec<Alert>,
    pub firings: Vec<Alert>,
    pub silences: Vec<Shown<'a>>,
}

/// How long a document that took `cost` to build is served again.
fn serves_for(cost: Duration) -> Duration {
    REUSE_AT_LEAST.max(cost * REUSE_PER_BUILD_TIME)
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

impl Board {
    /// A board whose figures start from `totals` (what opening the journal counted).
    pub fn new(totals: Totals) -> Board {
        Board {
            totals,
            ..Board::default()
        }
    }

    /// The figures since start, for `/metrics`.
    pub fn totals(&self) -> &Totals {
        &self.totals
    }

    /// The figures since start, for the components that add to them.
    pub fn totals_mut(&mut self) -> &mut Totals {
        &mut self.totals
    }

    /// One tick of the traffic rings, from the totals the heartbeats brought;
    /// `registered` tells an event type of the registry from a name a client made up.
    pub fn sample_traffic(&mut self, registered: impl Fn(&str) -> bool) {
        let now = Instant::now();
        let totals = &self.totals;
        (self.traffic).tick(now, totals.collected(), &totals.rejected(), registered);
    }

    /// The document built lately that shows key values as asked, while it still
    /// serves: the facts need not be gathered again.
    pub fn kept(&self, reveal_keys: bool) -> Option<String> {
        let kept = self.last[usize::from(reveal_keys)].as_ref()?;
        (Instant::now() < kept.serves_until).then(|| kept.document.clone())
    }

    /// The `/status` document of `facts`, gathered from `started` on, as JSON text; kept
    /// for a second, or fifty times as long as it took.
    pub fn document(&mut self, reveal_keys: bool, facts: Facts<'_>, started: Instant) -> String {
        let document = serde_json::to_string(&self.build(facts)).unwrap_or_else(|e| {
            error!("the status document cannot be serialized: {e}");
            "{}".to_string()
        });
        let built = Instant::now();
        let serves_until = built + serves_for(built.saturating_duration_since(started));
        self.last[usize::from(reveal_keys)] = Some(Kept {
            serves_until,
            document: document.clone(),
        });
        document
    }

    fn build<'a>(&'a self, facts: Facts<'a>) -> Document<'a> {
        let mut status = facts.status;
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
            traffic: self.traffic.report(),
            watchers: facts.watchers,
            pending: pending_targets(facts.pending_by_target, facts.pending_alerts),
            firings: facts.firings,
            silences: facts.silences,
            cluster,
        }
    }
}

/// The journal's pending firings by target, with how their deliveries go as the alert
/// list has it.
fn pending_targets(by_target: BTreeMap<String, u64>, alerts: Vec<Alert>) -> Vec<PendingTarget> {
    let mut by_target: BTreeMap<String, PendingTarget> = by_target
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
    for alert in alerts {
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

/// The newest `limit` alerts, of `state` if given.
pub fn recent(state: Option<&str>, limit: usize, reveal_keys: bool) -> Filter {
    Filter {
        event: None,
        watcher: None,
        state: state.map(str::to_string),
        limit,
        reveal_keys,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// However many keys the watchers hold, open pages cost the master a fiftieth of it.
    #[test]
    fn a_costly_document_is_served_again_for_fifty_times_its_cost() {
        assert_eq!(serves_for(Duration::from_millis(2)), REUSE_AT_LEAST);
        assert_eq!(
            serves_for(Duration::from_millis(100)),
            Duration::from_secs(5)
        );
    }
}
