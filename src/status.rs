//! The master's status report: what the control socket serves and what `status` and
//! `fullstatus` print.
//!
//! Owns the report's shape (JSON, stable for machines) and its text rendering. It holds
//! plain data only; the master builds it, the CLI reads it.

use std::fmt::Write;
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub pid: u32,
    pub uptime_secs: u64,
    pub listen: String,
    pub config: String,
    /// Bumped by every successful reload; workers carry the generation that forked them.
    pub generation: u64,
    pub reloads: u64,
    pub last_reload_error: Option<String>,
    /// A reload is rolling: its new generation is not ready yet.
    pub reload_in_progress: bool,
    /// An upgrade is under way: a new master is starting or taking over.
    #[serde(default)]
    pub upgrade_in_progress: bool,
    /// Upgrades that failed (the new master exited or was too slow); this master carried on.
    #[serde(default)]
    pub upgrades_failed: u64,
    #[serde(default)]
    pub last_upgrade_error: Option<String>,
    /// `[cluster]`: the node's view of Redis and of the shared registry.
    #[serde(default)]
    pub cluster: Option<ClusterStatus>,
    pub target_workers: usize,
    pub min_workers: usize,
    pub max_workers: usize,
    pub crash_loop: Option<CrashLoop>,
    pub workers: Vec<WorkerStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// `standalone` or `cluster`.
    pub mode: String,
    pub node: String,
    /// Counts are shared (`false`: this node counts alone, degraded).
    pub redis_reachable: bool,
    pub registry_version: u64,
    /// The version Redis held when the link last looked.
    pub shared_registry_version: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CrashLoop {
    /// Workers that died within seconds of starting, in a row.
    pub quick_exits: u32,
    pub last_exit: String,
    pub next_respawn_in_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerStatus {
    pub pid: u32,
    /// Stable across respawns: what metrics label a worker by.
    #[serde(default)]
    pub slot: usize,
    pub state: WorkerState,
    pub generation: u64,
    pub uptime_secs: u64,
    pub requests: u64,
    pub connections: u32,
    pub rss_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerState {
    /// Forked, not ready yet.
    Init,
    Idle,
    Busy,
    /// Told to stop, draining its connections.
    Shutdown,
}

impl WorkerState {
    pub fn name(self) -> &'static str {
        match self {
            WorkerState::Init => "init",
            WorkerState::Idle => "idle",
            WorkerState::Busy => "busy",
            WorkerState::Shutdown => "shutdown",
        }
    }
}

impl Status {
    /// `eventsd is running (pid N, up 3m, 4 workers)`, as `status` prints it.
    pub fn summary(&self) -> String {
        let serving = self.count(|s| s != WorkerState::Shutdown);
        let mut line = format!(
            "eventsd is running (pid {}, up {}, {} workers)",
            self.pid,
            format_duration(self.uptime_secs),
            serving
        );
        if let Some(crash) = &self.crash_loop {
            let _ = write!(
                line,
                "; crash loop: {} quick worker exits in a row (last: {}), next respawn in {}s",
                crash.quick_exits, crash.last_exit, crash.next_respawn_in_secs
            );
        }
        if self.upgrade_in_progress {
            line.push_str("; upgrade under way");
        }
        if let Some(error) = &self.last_upgrade_error {
            let _ = write!(line, "; last upgrade failed: {error}");
        }
        if let Some(error) = &self.last_reload_error {
            let _ = write!(line, "; last reload failed: {error}");
        }
        line
    }

    /// The phpd-style totals line and the worker table of `fullstatus`.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{}\nlisten {}, config {}, generation {}, pool {} (min {}, max {})\n\
             Total: {}  Idle: {}  Busy: {}  Shutdown: {}  Init: {}\n\n",
            self.summary(),
            self.listen,
            self.config,
            self.generation,
            self.target_workers,
            self.min_workers,
            self.max_workers,
            self.workers.len(),
            self.count(|s| s == WorkerState::Idle),
            self.count(|s| s == WorkerState::Busy),
            self.count(|s| s == WorkerState::Shutdown),
            self.count(|s| s == WorkerState::Init),
        );
        if let Some(cluster) = &self.cluster {
            let shared = cluster
                .shared_registry_version
                .map_or_else(|| "unknown".to_string(), |v| v.to_string());
            let _ = writeln!(
                out,
                "cluster: node {}, {} Redis {}, registry version {} (shared: {shared})\n",
                cluster.node,
                cluster.mode,
                if cluster.redis_reachable {
                    "reachable"
                } else {
                    "UNREACHABLE: counting alone (degraded)"
                },
                cluster.registry_version,
            );
        }
        let _ = writeln!(
            out,
            "{:>8}  {:<8}  {:>8}  {:>10}  {:>11}  {:>10}",
            "PID", "STATE", "UPTIME", "REQUESTS", "CONNECTIONS", "RSS"
        );
        for worker in &self.workers {
            let _ = writeln!(
                out,
                "{:>8}  {:<8}  {:>8}  {:>10}  {:>11}  {:>10}",
                worker.pid,
                worker.state.name(),
                format_duration(worker.uptime_secs),
                worker.requests,
                worker.connections,
                format!("{:.1} MiB", worker.rss_bytes as f64 / (1024.0 * 1024.0)),
            );
        }
        out
    }

    fn count(&self, wanted: impl Fn(WorkerState) -> bool) -> usize {
        self.workers.iter().filter(|w| wanted(w.state)).count()
    }
}

/// `42s`, `3m`, `2h5m`, `4d3h`: what an operator reads at a glance.
pub fn format_duration(secs: u64) -> String {
    let d = Duration::from_secs(secs).as_secs();
    match d {
        0..60 => format!("{d}s"),
        60..3600 => format!("{}m", d / 60),
        3600..86400 => format!("{}h{}m", d / 3600, d % 3600 / 60),
        _ => format!("{}d{}h", d / 86400, d % 86400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_at_a_glance() {
        assert_eq!(format_duration(42), "42s");
        assert_eq!(format_duration(185), "3m");
        assert_eq!(format_duration(7500), "2h5m");
        assert_eq!(format_duration(356_400), "4d3h");
    }
}
