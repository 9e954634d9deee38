//! What the master answers the workers: registry changes and questions such as metrics.
//! As owner of the registry it applies a change on a copy, persists it atomically, then
//! adopts it and pushes it to every worker, and holds the answer back until every live
//! worker serves the new version, so that a `201` means the very next request, on any
//! worker, sees the change.
//!
//! A question carries its deadline, on the clock both processes share (`clock`): read
//! past it, it is dropped unapplied and its worker told so (`Dropped`), which it answers
//! 503: a 503 always means "not applied". A change applied in time is said so at once
//! (`Applied`), and its worker then waits for the held answer however long that takes.
//! The worker never guesses: it waits for one word or the other (`worker::link`).

use std::time::Instant;

use log::{debug, error, info, warn};

use super::pool::Asker;
use super::{Master, setup};
use crate::clock::Stamp;
use crate::metrics::write_process_families;
use crate::protocol::worker::{Answer, MasterMessage, Question};
use crate::registry::{Change, Origin, Refusal, Registry};

impl Master {
    pub(super) fn answer(&mut self, asker: Asker, question: Question) {
        let change = match &question {
            Question::Change { change, .. } => Some(change.kind()),
            Question::Metrics | Question::Status { .. } | Question::OnCall(_) => None,
        };
        if self.past_deadline(asker, change) {
            return;
        }
        // Taking over from an old master that still writes the registry: a change is
        // applied once it has handed over (`upgrade`), if still in time.
        let question = if change.is_some() {
            match self.succession.defer_change(asker, question) {
                Some((_, question)) => question,
                None => return,
            }
        } else {
            question
        };
        let Asker {
            worker: pid, id, ..
        } = asker;
        let answer = match question {
            Question::Metrics => Answer::Metrics(self.metrics()),
            Question::Status { reveal_keys } => Answer::Status(self.status_document(reveal_keys)),
            Question::OnCall(request) => self.answer_oncall(request),
            Question::Change { change, origin } => {
                // In a cluster, Redis holds the registry: the change is published first.
                let Some((change, origin)) = self.publish_if_shared(asker, change, origin) else {
                    return;
                };
                let outcome = self
                    .prepare_change(self.registry.clone(), &change, origin)
                    .and_then(|(next, created)| {
                        self.adopt_change(next, std::slice::from_ref(&change))
                            .map(|()| created)
                    });
                match outcome {
                    Ok(created) => {
                        self.audit(&change, origin, created);
                        self.applied(asker, Answer::Change(Ok(created)));
                        return;
                    }
                    Err(refusal) => Answer::Change(Err(refusal)),
                }
            }
        };
        self.send_to(pid, MasterMessage::Answer { id, answer });
    }

    /// The Prometheus exposition of the whole daemon: the totals, then each component's
    /// families. A component with figures of its own adds its `render` here.
    fn metrics(&self) -> String {
        let mut text = self
            .board
            .totals()
            .render(&self.pool.statuses(Instant::now()));
        self.counting.render(&mut text);
        self.actions.render(&mut text);
        self.oncall.render(&mut text);
        self.cluster.render(&mut text);
        write_process_families(&mut text);
        text
    }

    /// Whether the question is read past its deadline: then it must change nothing.
    /// Dropped, its worker told so (it answers 503), logged, and, for a registry change
    /// of `kind`, counted as `expired`.
    pub(super) fn past_deadline(&mut self, asker: Asker, kind: Option<&'static str>) -> bool {
        let now = Stamp::now();
        if now < asker.deadline {
            return false;
        }
        warn!(
            "question {} of worker {} dropped unanswered: read {} ms past its deadline \
             (the worker answers 503)",
            asker.id,
            asker.worker,
            asker.deadline.age(now).as_millis()
        );
        self.send_to(asker.worker, MasterMessage::Dropped { id: asker.id });
        if let Some(kind) = kind {
            self.board.totals_mut().record_change(kind, "expired");
        }
        true
    }

    /// A change applied in time: its worker hears so at once, and gets the answer once
    /// every worker serves the new version (read-your-writes).
    pub(super) fn applied(&mut self, asker: Asker, answer: Answer) {
        let Asker { worker, id, .. } = asker;
        let applied = MasterMessage::Applied {
            id,
            answer: answer.clone(),
        };
        self.send_to(worker, applied);
        self.pool
            .hold_answer(worker, id, answer, self.registry.version);
    }

    /// Validates and applies a change on `next`, a copy of the registry (in a cluster,
    /// with the changes published with it applied before): the copy, and the id of what
    /// it created. The registry itself is left as it was.
    pub(super) fn prepare_change(
        &mut self,
        mut next: Registry,
        change: &Change,
        origin: Origin,
    ) -> Result<(Registry, uuid::Uuid), Refusal> {
        let kind = change.kind();
        if self.is_stopping() {
            self.board.totals_mut().record_change(kind, "refused");
            return Err(Refusal {
                status: 503,
                message: "eventsd is shutting down".to_string(),
            });
        }
        let rules = self.ground.config.registry_rules();
        let id = next.apply(change, origin, &rules).inspect_err(|_| {
            self.board.totals_mut().record_change(kind, "refused");
        })?;
        Ok((next, id))
    }

    /// Persists a registry prepared by `changes` (one, or in a cluster those published
    /// together), then adopts it and pushes it to every worker. Creations that would
    /// leave `registry.json` past `registry.max_bytes` are refused (400). A failure
    /// leaves the registry as it was.
    pub(super) fn adopt_change(
        &mut self,
        next: Registry,
        changes: &[Change],
    ) -> Result<(), Refusal> {
        let record = |master: &mut Master, outcome: &'static str| {
            for change in changes {
                master
                    .board
                    .totals_mut()
                    .record_change(change.kind(), outcome);
            }
        };
        // One document for the size check, the file and the workers: at
        // `registry.max_bytes` each serialization is a good part of the change's time.
        let document = next.document().map_err(|e| e.to_string());
        if let (Ok(document), Some(growing)) = (&document, changes.iter().find(|c| c.grows())) {
            let rules = self.ground.config.registry_rules();
            if let Err(refusal) = Registry::check_size(growing, || document.len(), &rules) {
                record(self, "refused");
                return Err(refusal);
            }
        }
        let saved = document.and_then(|document| {
            crate::files::replace_atomically(&setup::registry_path(&self.ground.config), &document)
                .map(|()| document)
                .map_err(|e| format!("{e:#}"))
        });
        let document = match saved {
            Ok(document) => document,
            Err(e) => {
                error!("registry change {} not applied: {e}", kinds(changes));
                record(self, "failed");
                return Err(Refusal {
                    status: 503,
                    message: format!("The registry could not be saved: {e}"),
                });
            }
        };
        record(self, "ok");
        debug!(
            "registry: {} applied (version {})",
            kinds(changes),
            next.version
        );
        self.registry = next;
        self.counting.watch.sync(&self.registry);
        self.settle_orphaned_firings();
        self.broadcast_registry(document);
        Ok(())
    }

    /// The audit line of an applied change: what, on which names, asked by whom.
    pub(super) fn audit(&self, change: &Change, origin: Origin, created: uuid::Uuid) {
        info!(
            "registry: {} {} by {} (version {})",
            change.kind(),
            change.names(created, &self.registry),
            origin.client,
            self.registry.version
        );
    }

    pub(super) fn push_registry(&mut self) {
        match self.registry.document() {
            Ok(document) => self.broadcast_registry(document),
            Err(e) => error!("{e:#}"),
        }
    }

    /// Hands every worker `document`, the registry as `registry.json` holds it.
    fn broadcast_registry(&mut self, document: Vec<u8>) {
        match String::from_utf8(document) {
            Ok(document) => self.broadcast(&MasterMessage::Registry { document }),
            Err(e) => error!("the registry's document is not UTF-8: {e}"),
        }
    }

    /// The answers whose registry version every worker now serves.
    pub(super) fn release_held_answers(&mut self) {
        for (pid, id, answer) in self.pool.take_served_answers() {
            self.send_to(pid, MasterMessage::Answer { id, answer });
        }
    }
}

/// The kinds of `changes`, for a log line: `create watcher, delete watcher`.
fn kinds(changes: &[Change]) -> String {
    let kinds: Vec<&str> = changes.iter().map(Change::kind).collect();
    kinds.join(", ")
}
