//! Metrics: the totals the master adds the workers' counters (`protocol::worker::Deltas`,
//! sent with each heartbeat) and the runner's outcomes up into (`Totals`), and their
//! Prometheus families (written with `exposition`).
//!
//! Workers never keep totals: what they send is added once by the master, so a worker
//! that dies loses at most its last half second of counts, and totals never go back.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use crate::exposition::{Histogram, label_value, write_family};
use crate::protocol::runner::{ActionKind, Delivery, DropReason, ErrorClass};
use crate::protocol::worker::{Deltas, REQUEST_BOUNDS};
use crate::status::{WorkerState, WorkerStatus};

/// The master's totals since it started.
#[derive(Debug, Default)]
pub struct Totals {
    deltas: Deltas,
    /// (change kind, "ok" / "refused" / "failed") → registry changes.
    changes: BTreeMap<(&'static str, &'static str), u64>,
    /// (action type, "delivered" / "failed" / "dropped") → firings.
    outcomes: BTreeMap<(ActionKind, &'static str), u64>,
    /// Why firings were dropped → firings.
    drops: BTreeMap<DropReason, u64>,
    /// (action type, error class) → attempts that failed, retried or not.
    failed_attempts: BTreeMap<(ActionKind, ErrorClass), u64>,
    /// Seconds from a firing to its delivery.
    delivery_latency: Histogram,
}

/// Delivery latency bounds: a healthy target answers within a second; retries reach an hour.
const DELIVERY_BOUNDS: [f64; 10] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0, 300.0, 3600.0];
impl Totals {
    pub fn add(&mut self, deltas: Deltas) {
        for (key, count) in deltas.requests {
            *self.deltas.requests.entry(key).or_default() += count;
        }
        for (route, durations) in deltas.durations {
            self.deltas
                .durations
                .entry(route)
                .or_default()
                .merge(&durations);
        }
        for (event, count) in deltas.collected {
            self.deltas.record_collected(&event, count);
        }
    }

    /// Events collected since the master started, by event type.
    pub fn collected(&self) -> &BTreeMap<String, u64> {
        &self.deltas.collected
    }

    /// Requests refused (status 400 and above) since the master started, by status.
    pub fn rejected(&self) -> BTreeMap<u16, u64> {
        let mut by_status = BTreeMap::new();
        for ((_, status), n) in &self.deltas.requests {
            if *status >= 400 {
                *by_status.entry(*status).or_default() += n;
            }
        }
        by_status
    }

    pub fn record_change(&mut self, kind: &'static str, result: &'static str) {
        *self.changes.entry((kind, result)).or_default() += 1;
    }

    /// `firings` settled by one outcome: how they ended, and why when dropped.
    pub fn record_outcome(&mut self, action: ActionKind, result: Delivery, firings: u64) {
        *self.outcomes.entry((action, result.name())).or_default() += firings;
        if let Delivery::Dropped(reason) = result {
            *self.drops.entry(reason).or_default() += firings;
        }
    }

    pub fn record_failed_attempt(&mut self, action: ActionKind, error: ErrorClass) {
        *self.failed_attempts.entry((action, error)).or_default() += 1;
    }

    pub fn record_delivery_latency(&mut self, seconds: f64) {
        self.delivery_latency.observe(&DELIVERY_BOUNDS, seconds);
    }

    pub fn render(&self, workers: &[WorkerStatus]) -> String {
        let mut out = String::new();
        self.write_traffic(&mut out);
        self.write_deliveries(&mut out);
        write_workers(&mut out, workers);
        out
    }

    /// Requests, their durations, events collected, registry changes.
    fn write_traffic(&self, out: &mut String) {
        write_family(
            out,
            "eventsd_http_requests_total",
            "counter",
            "HTTP requests by route and status code.",
            self.deltas
                .requests
                .iter()
                .map(|((route, code), n)| (format!("route=\"{route}\",code=\"{code}\""), *n)),
        );
        write_family(
            out,
            "eventsd_events_collected_total",
            "counter",
            "Events collected (acknowledged) by event type.",
            self.deltas
                .collected
                .iter()
                .map(|(event, n)| (format!("type=\"{event}\""), *n)),
        );
        write_family(
            out,
            "eventsd_registry_changes_total",
            "counter",
            "Registry changes by kind and result.",
            self.changes
                .iter()
                .map(|((kind, result), n)| (format!("change=\"{kind}\",result=\"{result}\""), *n)),
        );
        let duration = "eventsd_http_request_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {duration} Seconds from a request's head to its reply, by route.\n\
             # TYPE {duration} histogram"
        );
        for (route, histogram) in &self.deltas.durations {
            let labels = format!("route=\"{}\",", label_value(route));
            histogram.write_samples(out, duration, &labels, &REQUEST_BOUNDS);
        }
    }

    /// What became of firings: outcomes, failed attempts, drops, delivery latency.
    fn write_deliveries(&self, out: &mut String) {
        write_family(
            out,
            "eventsd_action_outcomes_total",
            "counter",
            "Firings handed to actions, by action type and result.",
            self.outcomes.iter().map(|((action, result), n)| {
                (
                    format!("action=\"{}\",result=\"{result}\"", action.name()),
                    *n,
                )
            }),
        );
        write_family(
            out,
            "eventsd_action_attempts_failed_total",
            "counter",
            "Delivery attempts that failed, retried or not, by action type and error class.",
            self.failed_attempts.iter().map(|((action, error), n)| {
                let labels = format!("action=\"{}\",error=\"{}\"", action.name(), error.name());
                (labels, *n)
            }),
        );
        // Every reason from the start, so that a panel on drops is never empty; their
        // names typed once, in `DropReason::name`.
        let reasons = DropReason::ALL.map(DropReason::name).join(", ");
        write_family(
            out,
            "eventsd_actions_dropped_total",
            "counter",
            &format!("Firings dropped undelivered, by reason ({reasons})."),
            DropReason::ALL.iter().map(|reason| {
                let n = self.drops.get(reason).copied().unwrap_or(0);
                (format!("reason=\"{}\"", reason.name()), n)
            }),
        );
        let delivery = "eventsd_action_delivery_seconds";
        let _ = writeln!(
            out,
            "# HELP {delivery} Seconds from a firing reaching the action runner to its \
             delivery.\n# TYPE {delivery} histogram"
        );
        self.delivery_latency
            .write_samples(out, delivery, "", &DELIVERY_BOUNDS);
    }
}

/// The build, and the workers: by state, and each live one's figures.
fn write_workers(out: &mut String, workers: &[WorkerStatus]) {
    write_family(
        out,
        "eventsd_build_info",
        "gauge",
        "The running build: 1, labelled by version and commit.",
        [(
            format!(
                "version=\"{}\",commit=\"{}\"",
                env!("CARGO_PKG_VERSION"),
                option_env!("EVENTSD_COMMIT").unwrap_or("unknown")
            ),
            1,
        )],
    );
    let states = [
        WorkerState::Init,
        WorkerState::Idle,
        WorkerState::Busy,
        WorkerState::Shutdown,
    ];
    write_family(
        out,
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
            .map(|w| (format!("slot=\"{}\"", w.slot), value(w)));
        write_family(out, name, kind, help, samples);
    }
    write_worker_process_families(out, workers);
}

/// CPU, start time and descriptors of each worker, read from `/proc` as the master's
/// `process_*` are (its memory is `eventsd_worker_resident_bytes`, from its heartbeat).
fn write_worker_process_families(out: &mut String, workers: &[WorkerStatus]) {
    let figures: Vec<(String, ProcessFigures)> = workers
        .iter()
        .map(|w| {
            let label = format!("slot=\"{}\"", w.slot);
            (label, ProcessFigures::read(&w.pid.to_string()))
        })
        .collect();
    let samples = |value: fn(&ProcessFigures) -> f64| {
        figures
            .iter()
            .map(move |(label, f)| (label.clone(), value(f)))
    };
    write_family(
        out,
        "eventsd_worker_cpu_seconds_total",
        "counter",
        "CPU seconds of each live worker (from zero again when its slot is respawned).",
        samples(|f| f.cpu_seconds),
    );
    write_family(
        out,
        "eventsd_worker_start_time_seconds",
        "gauge",
        "When each live worker started, in Unix seconds.",
        samples(|f| f.start_time_seconds),
    );
    write_family(
        out,
        "eventsd_worker_open_fds",
        "gauge",
        "Open descriptors of each live worker.",
        samples(|f| f.open_fds as f64),
    );
}

/// A per-worker family: name, type, help, and the figure it reads.
type PerWorker = (
    &'static str,
    &'static str,
    &'static str,
    fn(&WorkerStatus) -> u64,
);

/// What `/proc` tells of one process: the figures of Prometheus' process collector.
pub struct ProcessFigures {
    pub cpu_seconds: f64,
    pub start_time_seconds: f64,
    pub resident_bytes: u64,
    pub open_fds: u64,
}

impl ProcessFigures {
    /// Figures of `process`: `self`, or a pid. A process gone meanwhile reads as zeros.
    pub fn read(process: &str) -> ProcessFigures {
        let proc = Path::new("/proc").join(process);
        let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .unwrap_or(100) as f64;
        let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .unwrap_or(4096) as u64;
        let stat = std::fs::read_to_string(proc.join("stat")).unwrap_or_default();
        // Fields after the command name, which may hold spaces: state is field 3.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map_or_else(Vec::new, |(_, rest)| rest.split_whitespace().collect());
        let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok());
        let boot = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|text| {
                text.lines()
                    .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<f64>().ok())
            })
            .unwrap_or(0.0);
        let resident_pages = std::fs::read_to_string(proc.join("statm"))
            .ok()
            .and_then(|text| text.split_whitespace().nth(1)?.parse::<u64>().ok())
            .unwrap_or(0);
        ProcessFigures {
            cpu_seconds: (field(14).unwrap_or(0.0) + field(15).unwrap_or(0.0)) / ticks,
            start_time_seconds: boot + field(22).unwrap_or(0.0) / ticks,
            resident_bytes: resident_pages * page,
            open_fds: std::fs::read_dir(proc.join("fd")).map_or(0, |dir| dir.count()) as u64,
        }
    }
}

/// The standard `process_*` families (Prometheus' process collector) of the calling
/// process, the master; the workers' are `eventsd_worker_*{slot}` (`Totals::render`).
pub fn write_process_families(out: &mut String) {
    let master = ProcessFigures::read("self");
    let one = |value| [(String::new(), value)];
    write_family(
        out,
        "process_cpu_seconds_total",
        "counter",
        "CPU seconds of the master.",
        one(master.cpu_seconds),
    );
    write_family(
        out,
        "process_start_time_seconds",
        "gauge",
        "When the master started, in Unix seconds.",
        one(master.start_time_seconds),
    );
    write_family(
        out,
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory of the master.",
        [(String::new(), master.resident_bytes)],
    );
    write_family(
        out,
        "process_open_fds",
        "gauge",
        "Open descriptors of the master.",
        [(String::new(), master.open_fds)],
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_add_up_into_totals() {
        let mut totals = Totals::default();
        for _ in 0..2 {
            let mut deltas = Deltas::default();
            deltas.record_request("/event/{type}/", 200, 0.0003);
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
