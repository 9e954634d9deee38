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
//! A new master that an upgrade starts leaves the file alone (`unopened`) until the old
//! one has handed over: two writers, one of them compacting, would lose lines.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use log::warn;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::watch::Job;

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
    path: PathBuf,
    /// `None` until an upgrading master takes over: it counts nothing before then, so
    /// nothing fires and nothing is written.
    file: Option<File>,
    /// Pending jobs in the order they fired.
    pending: BTreeMap<u64, Job>,
    order: HashMap<Uuid, u64>,
    next: u64,
    /// Lines in the file: compaction is due when they far outnumber the pending jobs.
    lines: usize,
    capacity: usize,
}

impl Journal {
    /// Replays `path` (a missing file is an empty journal), then compacts it.
    pub(super) fn open(path: &Path, capacity: usize) -> anyhow::Result<Journal> {
        let mut pending = Vec::<Job>::new();
        if let Some(text) = crate::files::read_state_file(path, "journal of pending firings")? {
            for (number, line) in text.split(|&b| b == b'\n').enumerate() {
                if line.is_empty() {
                    continue;
                }
                match serde_json::from_slice::<Line>(line) {
                    Ok(Line::Add(job)) => pending.push(*job),
                    Ok(Line::Done(ids)) => pending.retain(|job| !ids.contains(&job.firing.id)),
                    // A line cut by a crash mid-write: what it said is lost, the rest holds.
                    Err(e) => warn!("{} line {}: {e}; skipped", path.display(), number + 1),
                }
            }
        }
        let mut journal = Journal::unopened(path, capacity);
        for job in pending {
            journal.remember(job);
        }
        journal.compact()?;
        Ok(journal)
    }

    /// The journal of a master that upgrades the running one: empty, not open yet.
    pub(super) fn unopened(path: &Path, capacity: usize) -> Journal {
        Journal {
            path: path.to_path_buf(),
            file: None,
            pending: BTreeMap::new(),
            order: HashMap::new(),
            next: 0,
            lines: 0,
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
    pub(super) fn done(&mut self, ids: &[Uuid]) {
        let known: Vec<Uuid> = ids
            .iter()
            .filter(|id| self.order.contains_key(id))
            .copied()
            .collect();
        if known.is_empty() {
            return;
        }
        for id in &known {
            if let Some(seq) = self.order.remove(id) {
                self.pending.remove(&seq);
            }
        }
        self.append(&Line::Done(known));
        if self.lines > 2 * self.pending.len() + 1000 {
            if let Err(e) = self.compact() {
                warn!("cannot compact {}: {e:#}", self.path.display());
            }
        }
    }

    /// What is pending, oldest first: for a runner that starts.
    pub(super) fn pending(&self) -> impl Iterator<Item = &Job> {
        self.pending.values()
    }

    /// The journal's descriptor, which every child closes at once: no worker may append
    /// to what the runner will execute.
    pub(super) fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        self.file.as_ref().map(std::os::fd::AsRawFd::as_raw_fd)
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

    fn append(&mut self, line: &Line) {
        let Some(file) = self.file.as_mut() else {
            warn!("{}: not open yet; a line is lost", self.path.display());
            return;
        };
        let written = serde_json::to_vec(line)
            .map_err(std::io::Error::other)
            .and_then(|mut bytes| {
                bytes.push(b'\n');
                file.write_all(&bytes)
            });
        match written {
            Ok(()) => self.lines += 1,
            Err(e) => warn!("cannot write to {}: {e}", self.path.display()),
        }
    }

    /// Rewrites the file with only what is pending, atomically, then appends to it.
    fn compact(&mut self) -> anyhow::Result<()> {
        let mut text = Vec::new();
        for job in self.pending.values() {
            serde_json::to_writer(&mut text, &Line::Add(Box::new(job.clone())))
                .context("cannot serialize a pending firing")?;
            text.push(b'\n');
        }
        crate::files::replace_atomically(&self.path, &text)?;
        self.file = Some(
            crate::files::open_for_append(&self.path)
                .with_context(|| format!("cannot open {}", self.path.display()))?,
        );
        self.lines = self.pending.len();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Action;

    fn job(watcher: &str) -> Job {
        Job::example(watcher, Action::Null {})
    }

    #[test]
    fn what_is_pending_survives_a_reopen_and_what_was_done_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pending.jsonl");
        let mut journal = Journal::open(&path, 10).unwrap();
        let (a, b, c) = (job("a"), job("b"), job("c"));
        for j in [&a, &b, &c] {
            assert!(journal.add(j).is_none());
        }
        journal.done(&[b.firing.id]);
        drop(journal);
        // A crash mid-line leaves a cut line: skipped.
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        file.write_all(b"{\"add\": {\"firing\"").unwrap();
        let reopened = Journal::open(&path, 10).unwrap();
        let ids: Vec<Uuid> = reopened.pending().map(|j| j.firing.id).collect();
        assert_eq!(ids, [a.firing.id, c.firing.id]);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2, "compacted on open: {text}");
    }

    #[test]
    fn a_full_journal_gives_up_its_oldest_firing() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::open(&dir.path().join("pending.jsonl"), 2).unwrap();
        let first = job("first");
        journal.add(&first);
        journal.add(&job("second"));
        let dropped = journal.add(&job("third")).expect("the oldest dropped");
        assert_eq!(dropped.firing.id, first.firing.id);
        assert_eq!(journal.pending_by_target()["null"], 2);
    }
}
