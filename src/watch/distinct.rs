//! The cardinality rule (rules.md): the distinct values of a field per key within the
//! last `window_secs`, kept as 64-bit hashes with their last-seen second
//! (`RuleState::distinct`), at most `max_distinct + 1` of them (or `min_distinct`):
//! memory per key is bounded by the limit, not by the traffic. Too many is decided when
//! values arrive; too few on the clock, each key judged when its count would fall below
//! the limit. A key fires once per episode: again only after it ended, or after its
//! cooldown.
//!
//! The same rule as `count_distinct` and `judge_few` of `src/cluster/eventsd.lua`.

use uuid::Uuid;

use super::Key;
use super::rule::{DueKey, Rule, RuleParams, Turn, Verdict};
use super::rule_state::RuleState;
use super::store::{CounterStore, KeyCounter, Second};

/// The values a key keeps: enough to tell `max_distinct` exceeded and `min_distinct` met.
fn kept(max_distinct: Option<u64>, min_distinct: Option<u64>) -> usize {
    let enough = max_distinct
        .map_or(0, |max| max + 1)
        .max(min_distinct.unwrap_or(0));
    usize::try_from(enough).unwrap_or(usize::MAX)
}

/// The first second at which fewer than `min` values are within `window` if no value
/// comes: a window after the `min`-th most recently seen; 0 when fewer already.
fn below_from(state: &RuleState, min: u64, window: u64) -> Second {
    let index = usize::try_from(min.saturating_sub(1)).unwrap_or(usize::MAX);
    state
        .seen_newest_first()
        .get(index)
        .map_or(0, |seen| seen.saturating_add(window))
}

impl RuleParams {
    /// cardinality, when values arrive: too many fires; too few may end, and a key
    /// watched for too few waits for the second it would be. The key's counter is found
    /// once for all its hashes (per event, this is the rule's cost in the master).
    pub(super) fn distinct_on_values(
        &self,
        store: &mut dyn CounterStore,
        watcher: Uuid,
        key: &Key,
        hashes: &[u64],
        now: Second,
    ) -> Option<Verdict> {
        let Rule::Cardinality {
            window_secs,
            max_distinct,
            min_distinct,
        } = self.rule
        else {
            return None;
        };
        let counter = store.counter(watcher, key);
        let state = counter.rule.get_or_insert_default();
        state.expire(window_secs, now);
        let keep = kept(max_distinct, min_distinct);
        for &hash in hashes {
            state.see(hash, now, keep);
        }
        let distinct = state.distinct.len() as u64;
        let below = min_distinct.map(|min| {
            state.low &= distinct < min;
            below_from(state, min, window_secs)
        });
        let verdict = max_distinct.and_then(|max| self.too_many(counter, max, distinct, now));
        if let Some(due) = below.filter(|_| !store.is_waiting(watcher, key)) {
            store.schedule(watcher, key, due);
        }
        verdict
    }

    /// cardinality's `max_distinct`, with `distinct` values in the window: fires once
    /// per episode, again after its cooldown.
    fn too_many(
        &self,
        counter: &mut KeyCounter,
        max: u64,
        distinct: u64,
        now: Second,
    ) -> Option<Verdict> {
        let state = counter.rule.get_or_insert_default();
        let was_high = state.high;
        state.high &= distinct > max;
        if distinct <= max {
            return None;
        }
        let Turn::Fires { .. } = self.episode_turn(counter, was_high, now) else {
            return None;
        };
        counter.rule.get_or_insert_default().high = true;
        Some(Verdict::fired(distinct))
    }

    /// cardinality's `min_distinct`, on the clock: a key with too few values fires (past
    /// the grace, once per episode, again after its cooldown); otherwise it waits for
    /// the second it would have too few. A key without values that fired is forgotten.
    pub(super) fn judge_few(&self, due: &mut DueKey<'_, '_>) -> Option<Verdict> {
        let Rule::Cardinality {
            window_secs,
            min_distinct: Some(min),
            ..
        } = self.rule
        else {
            return None;
        };
        let (now, grace_until) = (due.now, due.grace_until());
        let counter = due.counter()?;
        let state = counter.rule.get_or_insert_default();
        state.expire(window_secs, now);
        let below = below_from(state, min, window_secs).max(grace_until);
        let (distinct, was_low) = (state.distinct.len() as u64, state.low);
        if below > now {
            due.wait(Some(below));
            return None;
        }
        match self.episode_turn(counter, was_low, now) {
            Turn::Fires { realert_at } => {
                counter.rule.get_or_insert_default().low = true;
                due.wait(realert_at);
                Some(Verdict::fired(distinct))
            }
            // Fired for this episode: a key without values left is done with.
            Turn::Waits(None) if distinct == 0 => {
                due.forget();
                None
            }
            Turn::Waits(at) => {
                due.wait(at);
                None
            }
        }
    }
}
