//! The alert history (alerts.md, "The alert list"): the recent firings with what became
//! of each (pending with its attempts, delivered, dropped and why, silenced and by
//! which silence), newest first, bounded by `alerts.history`.
//!
//! Kept in `STATE_DIR/alerts.jsonl`, beside the journal of pending firings and written
//! the same way (`files::JsonLines`): every new state of a firing is one line (the last
//! line of an id wins), compacted now and then by an atomic replace. Unlike the journal's,
//! its lines are written when its owner says (`flush`: once a tick, before an answer, at
//! a stop), so that a burst of firings costs one `write`. On load each line is checked
//! as a client's input (bounded, well-formed); a bad one is logged and skipped.
//! Never decides anything: it records what the master and the runner report.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use log::warn;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::files::JsonLines;
use crate::watch::Firing;

/// Longer than any line eventsd writes (a key is at most 64 KiB).
const MAX_LINE_BYTES: usize = 256 * 1024;
/// The longest error text kept for one firing.
const MAX_ERROR_BYTES: usize = 1024;
/// Names, targets and times in a record.
const MAX_TEXT_BYTES: usize = 2048;

/// One firing and what became of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// The firing's id: the one its webhook carries.
    pub id: Uuid,
    pub event: String,
    pub watcher: String,
    pub rule: String,
    pub key: Value,
    pub count: u64,
    pub threshold: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_secs: Option<u64>,
    pub fired_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(flatten)]
    pub state: AlertState,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum AlertState {
    Pending {
        /// Where it goes: an origin, the SMTP relay, a command; never a URL's path.
        target: String,
        attempts: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last_error: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        next_attempt_at: Option<String>,
    },
    Delivered {
        delivered_at: String,
        attempts: u32,
    },
    Dropped {
        /// too_old, queue_full, permanent_failure, watcher_deleted, invalid.
        reason: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    Silenced {
        silenced_by: Uuid,
    },
}

impl AlertState {
    pub fn name(&self) -> &'static str {
        match self {
            AlertState::Pending { .. } => "pending",
            AlertState::Delivered { .. } => "delivered",
            AlertState::Dropped { .. } => "dropped",
            AlertState::Silenced { .. } => "silenced",
        }
    }
}

/// What `GET /alerts` asks for.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Filter {
    pub event: Option<String>,
    pub watcher: Option<String>,
    pub state: Option<String>,
    pub limit: usize,
    /// Key values may be shown (else each is `***`).
    pub reveal_keys: bool,
}

impl Alert {
    pub fn of(firing: &Firing, rule: &str, state: AlertState) -> Alert {
        Alert {
            id: firing.id,
            event: firing.event.clone(),
            watcher: firing.watcher.clone(),
            rule: rule.to_string(),
            key: firing.key.clone(),
            count: firing.count,
            threshold: firing.threshold,
            window_secs: firing.window_secs,
            fired_at: firing.fired_at.clone(),
            node: firing.node.clone(),
            state,
        }
    }

    fn passes(&self, filter: &Filter) -> bool {
        let wanted = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        wanted(&filter.event, &self.event)
            && wanted(&filter.watcher, &self.watcher)
            && wanted(&filter.state, self.state.name())
    }

    /// What a record read from disk must respect.
    fn check(&self) -> Result<(), String> {
        let texts = [&self.event, &self.watcher, &self.rule, &self.fired_at];
        if texts.iter().any(|t| t.len() > MAX_TEXT_BYTES) {
            return Err("a name or time is too long".into());
        }
        let error_len = match &self.state {
            AlertState::Pending {
                target, last_error, ..
            } => target.len().max(last_error.as_ref().map_or(0, String::len)),
            AlertState::Dropped { reason, error } => {
                reason.len().max(error.as_ref().map_or(0, String::len))
            }
            AlertState::Delivered { delivered_at, .. } => delivered_at.len(),
            AlertState::Silenced { .. } => 0,
        };
        if error_len > MAX_TEXT_BYTES {
            return Err("a state's text is too long".into());
        }
        if !(self.key.is_null() || self.key.is_object()) {
            return Err("the key is neither null nor an object".into());
        }
        Ok(())
    }
}

pub struct History {
    /// Not open for a master that upgrades the running one, until it takes over.
    file: JsonLines,
    /// By order of firing: the newest has the highest number.
    alerts: BTreeMap<u64, Alert>,
    order: HashMap<Uuid, u64>,
    next: u64,
    capacity: usize,
}

impl History {
    /// Replays `path` (missing: empty), keeping the newest `capacity` firings, then
    /// compacts it.
    pub fn open(path: &Path, capacity: usize) -> anyhow::Result<History> {
        let mut history = History::unopened(path, capacity);
        for alert in replay(path)? {
            history.remember(alert);
        }
        history.compact()?;
        Ok(history)
    }

    /// The history of a master that upgrades the running one: empty and unwritten until
    /// it takes over (two writers, one compacting, would lose lines).
    pub fn unopened(path: &Path, capacity: usize) -> History {
        History {
            file: JsonLines::unopened(path),
            alerts: BTreeMap::new(),
            order: HashMap::new(),
            next: 0,
            capacity: capacity.max(1),
        }
    }

    /// Records a new firing, or a new state of one already listed (its place kept).
    pub fn record(&mut self, alert: Alert) {
        self.append(&alert);
        self.remember(alert);
        if self.file.wants_compaction(self.alerts.len()) {
            if let Err(e) = self.compact() {
                warn!("cannot compact {}: {e:#}", self.file.path().display());
            }
        }
    }

    /// Moves the listed firings of `ids` to the state `next` makes of their current one.
    pub fn update(&mut self, ids: &[Uuid], next: impl Fn(&AlertState) -> AlertState) {
        for id in ids {
            let Some(alert) = self.order.get(id).and_then(|n| self.alerts.get(n)) else {
                continue;
            };
            let mut alert = alert.clone();
            alert.state = next(&alert.state);
            self.record(alert);
        }
    }

    /// The newest firings that pass `filter`, at most `filter.limit`.
    pub fn list(&self, filter: &Filter) -> Vec<&Alert> {
        self.alerts
            .values()
            .rev()
            .filter(|a| a.passes(filter))
            .take(filter.limit)
            .collect()
    }

    /// Writes what was recorded since the last call, in one `write`.
    pub fn flush(&mut self) {
        self.file.flush();
    }

    /// A reload changed `alerts.history`.
    pub fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity.max(1);
        self.trim();
    }

    fn remember(&mut self, alert: Alert) {
        match self.order.get(&alert.id) {
            Some(n) => {
                self.alerts.insert(*n, alert);
            }
            None => {
                self.order.insert(alert.id, self.next);
                self.alerts.insert(self.next, alert);
                self.next += 1;
                self.trim();
            }
        }
    }

    fn trim(&mut self) {
        while self.alerts.len() > self.capacity {
            if let Some((_, oldest)) = self.alerts.pop_first() {
                self.order.remove(&oldest.id);
            }
        }
    }

    fn append(&mut self, alert: &Alert) {
        self.file.push(alert);
    }

    /// Rewrites the file with what is listed, atomically, then appends to it.
    fn compact(&mut self) -> anyhow::Result<()> {
        self.file.replace(self.alerts.values(), "an alert")
    }
}

/// The records of the file at `path` in the order they were written: lines cut by a
/// crash, malformed, oversized or out of bounds are skipped with a log line.
fn replay(path: &Path) -> anyhow::Result<Vec<Alert>> {
    let mut alerts = Vec::new();
    for (where_, alert) in JsonLines::read::<Alert>(path, "alert history", MAX_LINE_BYTES)? {
        match alert.check() {
            Ok(()) => alerts.push(alert),
            Err(e) => warn!("{where_}: {e}; skipped"),
        }
    }
    Ok(alerts)
}

/// An error text cut to what the list keeps.
pub fn cut(text: &str) -> String {
    let mut end = text.len().min(MAX_ERROR_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::registry::Action;
    use crate::watch::Job;

    fn pending() -> AlertState {
        AlertState::Pending {
            target: "http://127.0.0.1:9".into(),
            attempts: 0,
            last_error: None,
            next_attempt_at: None,
        }
    }

    fn all() -> Filter {
        Filter {
            limit: usize::MAX,
            ..Filter::default()
        }
    }

    #[test]
    fn the_last_state_of_a_firing_wins_and_survives_a_reopen_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alerts.jsonl");
        let mut history = History::open(&path, 10).unwrap();
        let (a, b) = (
            Job::example("a", Action::Null {}),
            Job::example("b", Action::Null {}),
        );
        history.record(Alert::of(&a.firing, "threshold", pending()));
        history.record(Alert::of(&b.firing, "threshold", pending()));
        history.update(&[a.firing.id], |_| AlertState::Delivered {
            delivered_at: "now".into(),
            attempts: 1,
        });
        history.flush();
        drop(history);
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        file.write_all(b"{\"id\": \"cut by a crash").unwrap();
        let history = History::open(&path, 10).unwrap();
        let listed: Vec<(&str, &str)> = history
            .list(&all())
            .iter()
            .map(|a| (a.watcher.as_str(), a.state.name()))
            .collect();
        assert_eq!(listed, [("b", "pending"), ("a", "delivered")]);
        let delivered = Filter {
            state: Some("delivered".into()),
            ..all()
        };
        assert_eq!(history.list(&delivered).len(), 1);
    }

    #[test]
    fn recorded_states_reach_the_file_together_at_the_next_flush() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alerts.jsonl");
        let mut history = History::open(&path, 10).unwrap();
        for name in ["a", "b"] {
            let job = Job::example(name, Action::Null {});
            history.record(Alert::of(&job.firing, "threshold", pending()));
        }
        assert_eq!(
            std::fs::read(&path).unwrap(),
            b"",
            "written before the flush"
        );
        history.flush();
        assert_eq!(History::open(&path, 10).unwrap().list(&all()).len(), 2);
    }

    #[test]
    fn the_oldest_firings_leave_first() {
        let dir = tempfile::tempdir().unwrap();
        let mut history = History::open(&dir.path().join("alerts.jsonl"), 2).unwrap();
        for name in ["a", "b", "c"] {
            let job = Job::example(name, Action::Null {});
            history.record(Alert::of(&job.firing, "threshold", pending()));
        }
        let names: Vec<&str> = history
            .list(&all())
            .iter()
            .map(|a| a.watcher.as_str())
            .collect();
        assert_eq!(names, ["c", "b"]);
    }
}
