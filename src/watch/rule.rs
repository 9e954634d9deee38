//! A watcher's rule (rules.md): what decides that a key fires. One definition of the
//! figures a key is judged by (`RuleParams`: the rule and the cooldown every rule shares),
//! read by both engines that judge: this module's, over the master's `CounterStore`
//! (`on_count`, `on_tick`), and the Redis Function's (`src/cluster/eventsd.lua`), which
//! gets the same figures JSON-encoded as one argument (`cluster::count_command`).
//! `tests/rules.rs` runs one table of scenarios against both, so they cannot drift.
//!
//! Never does I/O and never reads the clock: `now` is given, so that the scenarios
//! control it.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Key;
use super::store::{Cooldown, CounterStore, Second};
use crate::registry::WatcherSpec;

/// What a key is judged by, and its figures.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// More than `threshold` events within the last `window_secs` (or, without a
    /// window, since the key last fired); the count then starts again from zero.
    Threshold {
        threshold: u64,
        window_secs: Option<u64>,
    },
}

/// A key's rule with the cooldown every rule shares: the one definition of what both
/// engines judge a key by.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RuleParams {
    pub rule: Rule,
    /// After a firing, the key does not fire again for this long.
    pub cooldown_secs: Option<u64>,
    /// Exponential realert: a key that keeps crossing during its cooldown gets the next
    /// one doubled, up to this.
    pub cooldown_max_secs: Option<u64>,
}

/// A key fired: the figures its firing reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    pub count: u64,
}

impl RuleParams {
    /// The figures of a watcher's definition.
    pub fn of(spec: &WatcherSpec) -> RuleParams {
        RuleParams {
            rule: Rule::Threshold {
                threshold: spec.threshold,
                window_secs: spec.window_secs,
            },
            cooldown_secs: spec.cooldown_secs,
            cooldown_max_secs: spec.cooldown_max_secs,
        }
    }

    /// The window the store keeps a key's events for, if the rule has one.
    pub fn window_secs(&self) -> Option<u64> {
        match self.rule {
            Rule::Threshold { window_secs, .. } => window_secs,
        }
    }

    /// `events` of `key` seen at `now`: whether the key fires.
    pub fn on_count(
        &self,
        store: &mut dyn CounterStore,
        watcher: Uuid,
        key: &Key,
        events: u64,
        now: Second,
    ) -> Option<Verdict> {
        let verdict = match self.rule {
            Rule::Threshold {
                threshold,
                window_secs,
            } => {
                let count = store.add(watcher, key, events, now, window_secs);
                (count > threshold).then_some(Verdict { count })?
            }
        };
        self.unless_cooling(store, watcher, key, now)?;
        Some(verdict)
    }

    /// The keys of `watcher` that fire on the clock at `now`: none for a rule decided
    /// when counts arrive.
    pub fn on_tick(
        &self,
        _store: &mut dyn CounterStore,
        _watcher: Uuid,
        _now: Second,
    ) -> Vec<(Key, Verdict)> {
        match self.rule {
            Rule::Threshold { .. } => Vec::new(),
        }
    }

    /// A key that met its rule fires unless it cools down (its next cooldown may then
    /// grow); firing resets its count and starts its cooldown.
    fn unless_cooling(
        &self,
        store: &mut dyn CounterStore,
        watcher: Uuid,
        key: &Key,
        now: Second,
    ) -> Option<()> {
        let previous = store.cooldown(watcher, key);
        if previous.is_some_and(|c| now < c.last_fired.saturating_add(c.secs)) {
            store.crossed_while_cooling(watcher, key);
            return None;
        }
        store.fired(watcher, key, now, self.next_cooldown(previous));
        Some(())
    }

    /// The cooldown a firing starts: `cooldown_secs`; with `cooldown_max_secs`
    /// (exponential realert), twice the previous one when the key crossed again during
    /// it, up to the maximum, and `cooldown_secs` again after a quiet one.
    fn next_cooldown(&self, previous: Option<Cooldown>) -> u64 {
        let Some(base) = self.cooldown_secs else {
            return 0;
        };
        match (self.cooldown_max_secs, previous) {
            (Some(max), Some(previous)) if previous.crossed => {
                previous.secs.max(base).saturating_mul(2).min(max)
            }
            _ => base,
        }
    }
}
