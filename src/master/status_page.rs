//! The status page's verbs (ui.md): the facts of `GET /status` gathered from the
//! components (the pool, the counters, the alert list and the silences, the journal, the
//! link) for the `Board` to lay out, and the traffic sampled for it on the tick.
//!
//! Glue only: each fact is asked of the component that owns it; nothing here keeps
//! state or changes any.

use std::time::Instant;

use super::Master;
use super::board::{Facts, HOTTEST_KEYS, RECENT_FIRINGS, recent};
use crate::oncall::MAX_ALERTS;

impl Master {
    /// Hook, on the 1 s tick: one sample of the traffic rings, from the totals the
    /// heartbeats brought.
    pub(super) fn sample_traffic(&mut self) {
        let registry = &self.registry;
        (self.board).sample_traffic(|event| registry.event(event).is_some());
    }

    /// The `/status` document, as JSON text; key values only if `reveal_keys`.
    pub(super) fn status_document(&mut self, reveal_keys: bool) -> String {
        if let Some(document) = self.board.kept(reveal_keys) {
            return document;
        }
        let started = Instant::now();
        // What a client is shown of the alert list is on disk.
        self.oncall.flush();
        let oncall = &self.oncall;
        let facts = Facts {
            status: self.status(),
            watchers: (self
                .counting
                .watch
                .states(HOTTEST_KEYS, reveal_keys)
                .into_iter())
            .map(|state| oncall.live_state(state, reveal_keys))
            .collect(),
            pending_by_target: self.actions.pending_by_target(),
            pending_alerts: oncall.alerts(&recent(Some("pending"), MAX_ALERTS, false)),
            firings: oncall.alerts(&recent(None, RECENT_FIRINGS, reveal_keys)),
            silences: oncall.silences(),
        };
        self.board.document(reveal_keys, facts, started)
    }
}
