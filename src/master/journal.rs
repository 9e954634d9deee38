//! The journal of pending firings (watchers.md, "Durability"): every firing the master
//! hands towards the action runner is appended to `STATE_DIR/pending.jsonl` before it
//! goes, every settled one is appended as done, and the file is compacted now and then
//! to what is still pending. So a stop, a restart, a crash of the master or of the
//! runner loses no alert: the next runner is handed what is pending, with the same ids.
//!
//! Appends are single `write`s of whole lines on the master's loop (no fsync: a crash of
//! the process loses nothing, a power loss may lose the last lines); the compaction is an
//! atomic replace. Bounded by `watchers.action_queue`: beyond it the oldest pending firing
//! is dropped, and said so.
//!
//! The file is a client like `registry.json` (security.md): what it holds is checked on
//! load (`refusal`), and a job that is malformed, oversized, or that its watcher, the
//! config or the rules would not send is dropped with a log line, never delivered.
//!
//! A new master that an upgrade starts leaves the file alone (`unopened`) until the old
//! one has handed over: two writers, one of them compacting, would lose lines.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use log::warn;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::files::JsonLines;
use crate::protocol::runner::DropReason;
use crate::registry::{Action, Destinations, Registry};
use crate::watch::Job;

/// Longer than any line eventsd writes (a firing's key is at most 64 KiB): a longer one
/// was not written by eventsd.
const MAX_LINE_BYTES: usize = 1024 * 1024;

/// A pending job refused on load, and why.
pub(super) type Refused = (Job, DropReason, String);

/// A line of the journal.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Line {
    /// A firing handed towards the runner.
    Add(Box<Job>),
    /// Firings the runner settled (delivered, failed for good, dropped).
    Done(Vec<Uuid>),
}

pub(super) struct Journal {
    /// Not open until an upgrading master takes over: it counts nothing before then, so
    /// nothing fires and nothing is written.
    file: JsonLines,
    /// Pending jobs in the order they fired.
    pending: BTreeMap<u64, Job>,
    order: HashMap<Uuid, u64>,
    next: u64,
    capacity: usize,
}

impl Journal {
    /// Replays `path` (a missing file is an empty journal), keeps the pending jobs that
    /// `check` accepts, then compacts it. Returns the jobs refused, each logged.
    pub(super) fn open(
        path: &Path,
        capacity: usize,
        check: impl Fn(&Job) -> Result<(), (DropReason, String)>,
    ) -> anyhow::Result<(Journal, Vec<Refused>)> {
        let mut journal = Journal::unopened(path, capacity);
        let mut refused = Vec::new();
        for job in replay(path)? {
            match check(&job) {
                Ok(()) => journal.remember(job),
                Err((reason, why)) => {
                    warn!(
                        "{}: firing {} of watcher `{}` dropped: {why}",
                        path.display(),
                        job.firing.id,
                        job.firing.watcher
                    );
                    refused.push((job, reason, why));
                }
            }
        }
        journal.compact()?;
        Ok((journal, refused))
    }

    /// The journal of a master that upgrades the running one: empty, not open yet.
    pub(super) fn unopened(path: &Path, capacity: usize) -> Journal {
        Journal {
            file: JsonLines::unopened(path),
            pending: BTreeMap::new(),
            order: HashMap::new(),
            next: 0,
            capacity: capacity.max(1),
        }
    }

    /// Records `job` as pending; returns the oldest pending job if the journal was full.
    pub(super) fn add(&mut self, job: &Job) -> Option<Job> {
        self.append(&Line::Add(Box::new(job.clone())));
        self.remember(job.clone());
        if self.pending.len() <= self.capacity {
            return None;
        }
        let (_, oldest) = self.pending.pop_first()?;
        self.order.remove(&oldest.firing.id);
        self.append(&Line::Done(vec![oldest.firing.id]));
        Some(oldest)
    }

    /// Settles `ids`; compacts the file when it has grown well past what is pending.
    /// Returns how many of them were pending.
    pub(super) fn done(&mut self, ids: &[Uuid]) -> u64 {
        let known: Vec<Uuid> = ids
            .iter()
            .filter(|id| self.order.contains_key(id))
            .copied()
            .collect();
        if known.is_empty() {
            return 0;
        }
        let settled = known.len() as u64;
        for id in &known {
            if let Some(seq) = self.order.remove(id) {
                self.pending.remove(&seq);
            }
        }
        self.append(&Line::Done(known));
        if self.file.wants_compaction(self.pending.len()) {
            if let Err(e) = self.compact() {
                warn!("cannot compact {}: {e:#}", self.file.path().display());
            }
        }
        settled
    }

    /// Settles and returns the pending jobs whose watcher `registry` no longer holds as
    /// it was when they fired.
    pub(super) fn settle_orphans(&mut self, registry: &Registry) -> Vec<Job> {
        let orphans: Vec<Job> = self
            .pending
            .values()
            .filter(|job| !fired_by(job, registry).is_some_and(|w| *w.action == job.action))
            .cloned()
            .collect();
        let ids: Vec<Uuid> = orphans.iter().map(|job| job.firing.id).collect();
        self.done(&ids);
        orphans
    }

    /// What is pending, oldest first: for a runner that starts.
    pub(super) fn pending(&self) -> impl Iterator<Item = &Job> {
        self.pending.values()
    }

    /// How many pending firings it keeps at most (`watchers.action_queue`).
    pub(super) fn capacity(&self) -> usize {
        self.capacity
    }

    /// The journal's descriptor, which every child closes at once: no worker may append
    /// to what the runner will execute.
    pub(super) fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        self.file.raw_fd()
    }

    /// Pending firings by delivery target, for metrics.
    pub(super) fn pending_by_target(&self) -> BTreeMap<String, u64> {
        let mut by_target = BTreeMap::new();
        for job in self.pending.values() {
            *by_target
                .entry(crate::action::target_of(&job.action))
                .or_default() += 1;
        }
        by_target
    }

    fn remember(&mut self, job: Job) {
        self.order.insert(job.firing.id, self.next);
        self.pending.insert(self.next, job);
        self.next += 1;
    }

    /// Appends `line` at once, in one `write`: a firing is journaled before it goes.
    fn append(&mut self, line: &Line) {
        self.file.push(line);
        self.file.flush();
    }

    /// Rewrites the file with only what is pending, atomically, then appends to it.
    fn compact(&mut self) -> anyhow::Result<()> {
        let pending = self.pending.values();
        let lines = pending.map(|job| Line::Add(Box::new(job.clone())));
        self.file.replace(lines, "a pending firing")
    }
}

/// The pending jobs of the file at `path`, in the order they fired: lines cut by a crash,
/// malformed or oversized are skipped with a log line.
fn replay(path: &Path) -> anyhow::Result<Vec<Job>> {
    let mut pending = Vec::<Job>::new();
    for (_, line) in JsonLines::read(path, "journal of pending firings", MAX_LINE_BYTES)? {
        match line {
            Line::Add(job) => pending.push(*job),
            Line::Done(ids) => pending.retain(|job| !ids.contains(&job.firing.id)),
        }
    }
    Ok(pending)
}

/// Why a journaled `job` may not be delivered, if it may not: its watcher is gone or
/// changed, or it is not what that watcher sends (a planted job), or the rules refuse its
/// destination now. For a journal read from disk.
pub(super) fn refusal(
    job: &Job,
    registry: &Registry,
    destinations: &Destinations,
) -> Result<(), (DropReason, String)> {
    let invalid = |why: String| (DropReason::Invalid, why);
    let watcher = fired_by(job, registry).ok_or_else(|| {
        let why = format!(
            "no watcher `{}` of `{}`",
            job.firing.watcher, job.firing.event
        );
        (DropReason::WatcherDeleted, why)
    })?;
    if *watcher.action != job.action {
        return Err(invalid("its action is not its watcher's".to_string()));
    }
    if matches!(job.action, Action::Command { .. }) && !watcher.declared {
        return Err(invalid(
            "a `command` action the config file does not declare".to_string(),
        ));
    }
    destinations.check_action(&job.action).map_err(invalid)
}

/// What the registry says of the watcher that fired `job`.
struct FiredBy<'a> {
    action: &'a Action,
    declared: bool,
}

/// The watcher that fired `job`, if the registry still holds it unchanged (same id; by
/// name alone for a job journaled before ids were kept).
fn fired_by<'a>(job: &Job, registry: &'a Registry) -> Option<FiredBy<'a>> {
    let watcher = registry
        .event(&job.firing.event)?
        .watchers
        .iter()
        .find(|w| {
            w.spec.name.as_str() == job.firing.watcher
                && (job.watcher_id.is_nil() || w.id == job.watcher_id)
        })?;
    Some(FiredBy {
        action: &watcher.spec.action,
        declared: watcher.declared,
    })
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::registry::{Change, Origin, Rules};

    fn job(watcher: &str) -> Job {
        Job::example(watcher, Action::Null {})
    }

    fn open_accepting_all(path: &Path, capacity: usize) -> Journal {
        Journal::open(path, capacity, |_| Ok(())).unwrap().0
    }

    #[test]
    fn what_is_pending_survives_a_reopen_and_what_was_done_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pending.jsonl");
        let mut journal = open_accepting_all(&path, 10);
        let (a, b, c) = (job("a"), job("b"), job("c"));
        for j in [&a, &b, &c] {
            assert!(journal.add(j).is_none());
        }
        assert_eq!(journal.done(&[b.firing.id, Uuid::new_v4()]), 1);
        drop(journal);
        // A crash mid-line leaves a cut line: skipped.
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        file.write_all(b"{\"add\": {\"firing\"").unwrap();
        let reopened = open_accepting_all(&path, 10);
        let ids: Vec<Uuid> = reopened.pending().map(|j| j.firing.id).collect();
        assert_eq!(ids, [a.firing.id, c.firing.id]);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2, "compacted on open: {text}");
    }

    #[test]
    fn a_full_journal_gives_up_its_oldest_firing() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = open_accepting_all(&dir.path().join("pending.jsonl"), 2);
        let first = job("first");
        journal.add(&first);
        journal.add(&job("second"));
        let dropped = journal.add(&job("third")).expect("the oldest dropped");
        assert_eq!(dropped.firing.id, first.firing.id);
        assert_eq!(journal.pending_by_target()["null"], 2);
    }

    /// A registry with one watcher registered over HTTP, `hook`, on `logins`.
    fn registry_with_hook() -> (Registry, Job) {
        let mut registry = Registry::default();
        let (local, rules) = (Origin::LOCAL, Rules::default());
        let event = Change::CreateEvent {
            body: br#"{"type": "logins"}"#.to_vec(),
        };
        registry.apply(&event, local, &rules).unwrap();
        let body = br#"{"name": "hook", "threshold": 1, "aggregator": {"type": "single"},
            "action": {"type": "webhook", "url": "http://10.0.0.1/x"}}"#;
        let watcher = Change::CreateWatcher {
            event: "logins".into(),
            body: body.to_vec(),
        };
        let id = registry.apply(&watcher, local, &rules).unwrap();
        let spec = &registry.event("logins").unwrap().watchers[0].spec;
        let mut job = Job::example("hook", spec.action.clone());
        job.watcher_id = id;
        (registry, job)
    }

    #[test]
    fn a_job_is_kept_only_as_its_watcher_and_the_rules_would_send_it() {
        let (registry, job) = registry_with_hook();
        let destinations = Destinations::default();
        let reason = |job: &Job| refusal(job, &registry, &destinations).err().map(|e| e.0);
        assert_eq!(reason(&job), None);
        let command = Action::Command {
            argv: vec!["/usr/bin/id".into()],
            timeout_secs: None,
        };
        let planted = Job {
            action: command,
            ..job.clone()
        };
        assert_eq!(reason(&planted), Some(DropReason::Invalid));
        let renamed = Job::example("nobody", job.action.clone());
        assert_eq!(reason(&renamed), Some(DropReason::WatcherDeleted));
        let replaced = Job {
            watcher_id: Uuid::new_v4(),
            ..job.clone()
        };
        assert_eq!(reason(&replaced), Some(DropReason::WatcherDeleted));
        let denied = Destinations {
            webhook_deny: vec!["10.0.0.0/8".parse().unwrap()],
            ..Destinations::default()
        };
        assert_eq!(
            refusal(&job, &registry, &denied).err().map(|e| e.0),
            Some(DropReason::Invalid)
        );
    }

    #[test]
    fn a_deleted_watcher_takes_its_pending_firings_and_an_oversized_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pending.jsonl");
        let (mut registry, job) = registry_with_hook();
        let mut journal = open_accepting_all(&path, 10);
        journal.add(&job);
        journal.add(&Job::example("other", Action::Null {}));
        assert_eq!(
            journal.settle_orphans(&registry).len(),
            1,
            "`other` has no watcher"
        );
        let delete = Change::DeleteWatcher {
            event: "logins".into(),
            name: "hook".into(),
        };
        registry
            .apply(&delete, Origin::LOCAL, &Rules::default())
            .unwrap();
        let orphans = journal.settle_orphans(&registry);
        assert_eq!(orphans, [job]);
        assert_eq!(journal.pending().count(), 0);
        drop(journal);
        std::fs::write(&path, vec![b'x'; MAX_LINE_BYTES + 1]).unwrap();
        assert_eq!(open_accepting_all(&path, 10).pending().count(), 0);
    }
}
