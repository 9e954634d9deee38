//! Metrics: the counters workers keep between two heartbeats (`Deltas`), the totals the
//! master adds them up into (`Totals`), and their Prometheus text exposition (0.0.4).
//!
//! Workers never keep totals: what they send is added once by the master, so a worker
//! that dies loses at most its last half second of counts, and totals never go back.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Write;

use serde::{Deserialize, Serialize};

use crate::status::{WorkerState, WorkerStatus};

/// Counters of one worker since its previous heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Deltas {
    /// (route template, status code) → requests. Borrowed on the worker's hot path, so
    /// that counting a request allocates nothing.
    pub requests: BTreeMap<(Cow<'static, str>, u16), u64>,
    /// event type → events collected (acknowledged).
    pub collected: BTreeMap<String, u64>,
}

impl Deltas {
    pub fn record_request(&mut self, route: &'static str, status: u16) {
        *self
            .requests
            .entry((Cow::Borrowed(route), status))
            .or_default() += 1;
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

/// The master's totals since it started.
#[derive(Debug, Default)]
pub struct Totals {
    deltas: Deltas,
    /// (change kind, "ok" / "refused" / "failed") → registry changes.
    changes: BTreeMap<(&'static str, &'static str), u64>,
    /// (action type, "delivered" / "failed" / "dropped") → firings.
    outcomes: BTreeMap<(String, &'static str), u64>,
}

impl Totals {
    pub fn add(&mut self, deltas: Deltas) {
        for (key, count) in deltas.requests {
            *self.deltas.requests.entry(key).or_default() += count;
        }
        for (event, count) in deltas.collected {
            self.deltas.record_collected(&event, count);
        }
    }

    pub fn record_change(&mut self, kind: &'static str, result: &'static str) {
        *self.changes.entry((kind, result)).or_default() += 1;
    }

    pub fn record_outcome(&mut self, action: &str, result: &'static str) {
        *self
            .outcomes
            .entry((action.to_string(), result))
            .or_default() += 1;
    }

    pub fn render(&self, workers: &[WorkerStatus]) -> String {
        let mut out = String::new();
        family(
            &mut out,
            "eventsd_http_requests_total",
            "counter",
            "HTTP requests by route and status code.",
        );
        for ((route, code), count) in &self.deltas.requests {
            let _ = writeln!(
                out,
                "eventsd_http_requests_total{{route=\"{route}\",code=\"{code}\"}} {count}"
            );
        }
        family(
            &mut out,
            "eventsd_events_collected_total",
            "counter",
            "Events collected (acknowledged) by event type.",
        );
        for (event, count) in &self.deltas.collected {
            let _ = writeln!(
                out,
                "eventsd_events_collected_total{{type=\"{event}\"}} {count}"
            );
        }
        family(
            &mut out,
            "eventsd_registry_changes_total",
            "counter",
            "Registry changes by kind and result.",
        );
        for ((kind, result), count) in &self.changes {
            let _ = writeln!(
                out,
                "eventsd_registry_changes_total{{change=\"{kind}\",result=\"{result}\"}} {count}"
            );
        }
        family(
            &mut out,
            "eventsd_action_outcomes_total",
            "counter",
            "Firings handed to actions, by action type and result.",
        );
        for ((action, result), count) in &self.outcomes {
            let _ = writeln!(
                out,
                "eventsd_action_outcomes_total{{action=\"{action}\",result=\"{result}\"}} {count}"
            );
        }
        let dropped: u64 = self
            .outcomes
            .iter()
            .filter(|((_, r), _)| *r == "dropped")
            .map(|(_, n)| n)
            .sum();
        family(
            &mut out,
            "eventsd_actions_dropped_total",
            "counter",
            "Firings dropped from a full action queue.",
        );
        let _ = writeln!(out, "eventsd_actions_dropped_total {dropped}");
        family(
            &mut out,
            "eventsd_workers",
            "gauge",
            "Worker processes by state.",
        );
        for state in [
            WorkerState::Init,
            WorkerState::Idle,
            WorkerState::Busy,
            WorkerState::Shutdown,
        ] {
            let count = workers.iter().filter(|w| w.state == state).count();
            let _ = writeln!(out, "eventsd_workers{{state=\"{}\"}} {count}", state.name());
        }
        let per_worker: [PerWorker; 3] = [
            (
                "eventsd_worker_requests_total",
                "Requests served by each live worker.",
                |w| w.requests,
            ),
            (
                "eventsd_worker_connections",
                "Open connections of each live worker.",
                |w| w.connections.into(),
            ),
            (
                "eventsd_worker_resident_bytes",
                "Resident memory of each live worker.",
                |w| w.rss_bytes,
            ),
        ];
        for (name, help, value) in per_worker {
            let kind = if name.ends_with("_total") {
                "counter"
            } else {
                "gauge"
            };
            family(&mut out, name, kind, help);
            for worker in workers {
                let _ = writeln!(out, "{name}{{pid=\"{}\"}} {}", worker.pid, value(worker));
            }
        }
        out
    }
}

/// A per-worker family: name, help, and the figure it reads.
type PerWorker = (&'static str, &'static str, fn(&WorkerStatus) -> u64);

pub fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_add_up_into_totals() {
        let mut totals = Totals::default();
        for _ in 0..2 {
            let mut deltas = Deltas::default();
            deltas.record_request("/event/{type}/", 200);
            deltas.record_collected("logins", 3);
            totals.add(deltas);
        }
        totals.record_change("create_event", "ok");
        let text = totals.render(&[]);
        assert!(
            text.contains("eventsd_http_requests_total{route=\"/event/{type}/\",code=\"200\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("eventsd_events_collected_total{type=\"logins\"} 6"),
            "{text}"
        );
        assert!(
            text.contains(
                "eventsd_registry_changes_total{change=\"create_event\",result=\"ok\"} 1"
            )
        );
        assert!(text.contains("eventsd_workers{state=\"idle\"} 0"));
    }
}
