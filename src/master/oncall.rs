//! The master's on-call verbs (alerts.md): `OnCall` (`oncall_state.rs`) on the master's
//! hooks, with the components it works beside (the journal, the link, the counters).
//! A firing a silence holds back is recorded and counted, never journaled nor handed to
//! the runner; a pending firing that a silence comes to match (made, started, or shared
//! by another node) is settled in the journal and forgotten by the runner before its
//! next attempt; the runner's reports and the master's own drops fill the alert list.
//! Answers the workers' on-call questions at once, a watcher's live state from the
//! counters.
//!
//! Never waits: in a cluster, silences go to Redis through the link (`share_silences`)
//! and come back by message.

use log::info;
use uuid::Uuid;

use super::Master;
use crate::oncall::silence::Silence;
use crate::protocol::cluster::ToCluster;
use crate::protocol::oncall::{Reply, Request};
use crate::protocol::runner::DropReason;
use crate::protocol::worker::Answer;
use crate::registry::Refusal;
use crate::watch::Job;

impl Master {
    /// Hook, for every new firing: whether a silence holds it back (then it goes no
    /// further). Recorded in the alert list either way.
    pub(super) fn held_by_silence(&mut self, job: &Job) -> bool {
        let Some(silence) = self.oncall.fired(job) else {
            return false;
        };
        info!(
            "watcher `{}` fired, silenced by {silence}: {}",
            job.firing.watcher, job.firing.text
        );
        true
    }

    /// Hook, for the firings the master gives up itself.
    pub(super) fn record_drops(&mut self, jobs: &[Job], reason: DropReason) {
        let ids: Vec<Uuid> = jobs.iter().map(|job| job.firing.id).collect();
        self.oncall.dropped(&ids, reason);
    }

    /// Hook, for a worker's on-call question.
    pub(super) fn answer_oncall(&mut self, request: Request) -> Answer {
        let reply = match request {
            Request::WatcherState {
                event,
                watcher,
                limit,
                reveal_keys,
            } => self.watcher_state(&event, &watcher, limit, reveal_keys),
            request => self.oncall.answer(request),
        };
        self.settle_silenced_firings();
        self.share_silences();
        Answer::OnCall(reply)
    }

    /// Hook, on the 1 s tick: silences that started since the last one settle what
    /// they match; silences expired a day ago are forgotten.
    pub(super) fn oncall_tick(&mut self) {
        let forgotten = self.oncall.tick();
        self.settle_silenced_firings();
        self.forget_shared_silences(forgotten);
    }

    /// The pending firings an active silence now matches: settled, and forgotten by the
    /// runner (one in flight is neither reported nor retried).
    pub(super) fn settle_silenced_firings(&mut self) {
        let ids = self.oncall.newly_silenced(self.actions.pending());
        if ids.is_empty() {
            return;
        }
        info!("{} pending firings settled as silenced", ids.len());
        self.actions.forget(ids);
    }

    /// Silences made or expired here go to the other nodes through Redis; alone, a
    /// node keeps them to itself.
    fn share_silences(&mut self) {
        let silences = self.oncall.take_outbox();
        if silences.is_empty() {
            return;
        }
        self.cluster.tell(&ToCluster::ShareSilences(silences));
    }

    /// Redis answers again (or for the first time): it may have lost what this node
    /// holds, so every silence goes to it (of two copies it keeps the one that ends
    /// first).
    pub(super) fn share_every_silence(&mut self) {
        let silences = self.oncall.every_silence();
        if !silences.is_empty() {
            self.cluster.tell(&ToCluster::ShareSilences(silences));
        }
    }

    /// Silences the other nodes made or expired: taken in, and what they match among the
    /// pending firings settled.
    pub(super) fn adopt_shared_silences(&mut self, shared: Vec<Silence>) {
        self.oncall.merge_shared(shared);
        self.settle_silenced_firings();
    }

    fn forget_shared_silences(&mut self, ids: Vec<Uuid>) {
        if !ids.is_empty() {
            self.cluster.tell(&ToCluster::ForgetSilences(ids));
        }
    }

    fn watcher_state(&self, event: &str, watcher: &str, limit: usize, reveal: bool) -> Reply {
        let Some(state) = self.counting.watch.state(event, watcher, limit, reveal) else {
            return Reply::refused(&Refusal {
                status: 404,
                message: format!("Watcher `{watcher}` of event type `{event}` is not registered"),
            });
        };
        Reply::ok(200, &self.oncall.live_state(state, reveal))
    }
}
