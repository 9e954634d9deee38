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
    /// Why firings were dropped ("queue_full", "too_old") → firings.
    drops: BTreeMap<String, u64>,
    /// Seconds from a firing to its delivery.
    delivery_latency: Histogram,
}

/// A Prometheus histogram with fixed bounds (seconds).
#[derive(Debug)]
struct Histogram {
    bounds: &'static [f64],
    /// Observations at most each bound (not cumulative until rendered).
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

/// Delivery latency bounds: a healthy target answers within a second; retries reach an hour.
const DELIVERY_BOUNDS: [f64; 10] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0, 300.0, 3600.0];

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram {
            bounds: &DELIVERY_BOUNDS,
            counts: vec![0; DELIVERY_BOUNDS.len()],
            sum: 0.0,
            count: 0,
        }
    }
}

impl Histogram {
    fn observe(&mut self, value: f64) {
        if let Some(bucket) = self.bounds.iter().position(|&bound| value <= bound) {
            self.counts[bucket] += 1;
        }
        self.sum += value;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, n) in self.bounds.iter().zip(&self.counts) {
            cumulative += n;
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum {}", self.sum);
        let _ = writeln!(out, "{name}_count {}", self.count);
    }
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

    /// `firings` settled by one outcome: how many crossings `result`ed, why when dropped,
    /// and after how long when delivered.
    pub fn record_outcome(&mut self, action: &str, result: &'static str, firings: u64) {
        *self
            .outcomes
            .entry((action.to_string(), result))
            .or_default() += firings;
    }

    pub fn record_drop(&mut self, reason: &str, firings: u64) {
        *self.drops.entry(reason.to_string()).or_default() += firings;
    }

    pub fn record_delivery_latency(&mut self, seconds: f64) {
        self.delivery_latency.observe(seconds);
    }

    pub fn render(&self, workers: &[WorkerStatus]) -> String {
        let mut out = String::new();
        write_family(
            &mut out,
            "eventsd_http_requests_total",
            "counter",
            "HTTP requests by route and status code.",
            self.deltas
                .requests
                .iter()
                .map(|((route, code), n)| (format!("route=\"{route}\",code=\"{code}\""), *n)),
        );
        write_family(
            &mut out,
            "eventsd_events_collected_total",
            "counter",
            "Events collected (acknowledged) by event type.",
            self.deltas
                .collected
                .iter()
                .map(|(event, n)| (format!("type=\"{event}\""), *n)),
        );
        write_family(
            &mut out,
            "eventsd_registry_changes_total",
            "counter",
            "Registry changes by kind and result.",
            self.changes
                .iter()
                .map(|((kind, result), n)| (format!("change=\"{kind}\",result=\"{result}\""), *n)),
        );
        write_family(
            &mut out,
            "eventsd_action_outcomes_total",
            "counter",
            "Firings handed to actions, by action type and result.",
            self.outcomes.iter().map(|((action, result), n)| {
                (format!("action=\"{action}\",result=\"{result}\""), *n)
            }),
        );
        write_family(
            &mut out,
            "eventsd_actions_dropped_total",
            "counter",
            "Firings dropped undelivered, by reason (queue_full, too_old).",
            self.drops
                .iter()
                .map(|(reason, n)| (format!("reason=\"{reason}\""), *n)),
        );
        self.delivery_latency.render(
            &mut out,
            "eventsd_action_delivery_seconds",
            "Seconds from a firing reaching the action runner to its delivery.",
        );
        let states = [
            WorkerState::Init,
            WorkerState::Idle,
            WorkerState::Busy,
            WorkerState::Shutdown,
        ];
        write_family(
            &mut out,
            "eventsd_workers",
            "gauge",
            "Worker processes by state.",
            states.map(|state| {
                let count = workers.iter().filter(|w| w.state == state).count() as u64;
                (format!("state=\"{}\"", state.name()), count)
            }),
        );
        let per_worker: [PerWorker; 3] = [
            (
                "eventsd_worker_requests_total",
                "counter",
                "Requests served by each live worker.",
                |w| w.requests,
            ),
            (
                "eventsd_worker_connections",
                "gauge",
                "Open connections of each live worker.",
                |w| w.connections.into(),
            ),
            (
                "eventsd_worker_resident_bytes",
                "gauge",
                "Resident memory of each live worker.",
                |w| w.rss_bytes,
            ),
        ];
        for (name, kind, help, value) in per_worker {
            let samples = workers
                .iter()
                .map(|w| (format!("pid=\"{}\"", w.pid), value(w)));
            write_family(&mut out, name, kind, help, samples);
        }
        out
    }
}

/// A per-worker family: name, type, help, and the figure it reads.
type PerWorker = (
    &'static str,
    &'static str,
    &'static str,
    fn(&WorkerStatus) -> u64,
);

/// One metric family: its HELP and TYPE lines, then one sample per label set
/// (`key="value",...`; empty for a family without labels).
/// `text` as a label value: backslash, quote and newline escaped (the exposition format).
pub fn label_value(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub fn write_family(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    samples: impl IntoIterator<Item = (String, u64)>,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = if labels.is_empty() {
            writeln!(out, "{name} {value}")
        } else {
            writeln!(out, "{name}{{{labels}}} {value}")
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(
            label_value("webhook http://a\"b\\c\n"),
            "webhook http://a\\\"b\\\\c\\n"
        );
    }

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
