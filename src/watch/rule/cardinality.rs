//! The cardinality rule (rules.md): the distinct values of a field per key within the
//! last `window_secs`, kept as 64-bit hashes with their last-seen second
//! (`RuleState::distinct`), at most `max_distinct + 1` of them (or `min_distinct`):
//! memory per key is bounded by the limit, not by the traffic. Too many is decided when
//! values arrive; too few on the clock, each key judged when its count would fall below
//! the limit. A key fires once per episode: again only after it ended, or after its
//! cooldown.
//!
//! The same rule as `count_distinct` and `judge_few` of `src/cluster/eventsd_rules.lua`.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::super::Key;
use super::super::rule_state::RuleState;
use super::super::store::{CounterStore, KeyCounter, Second, WatcherKey};
use super::judge::{Cooling, DueKey, Turn};
use super::{FigureEnv, Judge, Reported, RuleFigures, Said, Verdict, Wording};
use crate::registry::WatcherSpec;

/// cardinality's figures, read from the definition (`of`): what `Rule::Cardinality`
/// holds and the Lua reads as `rule.cardinality`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Cardinality {
    window_secs: u64,
    max_distinct: Option<u64>,
    min_distinct: Option<u64>,
}

impl Cardinality {
    pub(super) fn of(spec: &WatcherSpec, _created: Second) -> Cardinality {
        Cardinality {
            window_secs: spec.window_secs.unwrap_or(1),
            max_distinct: spec.max_distinct,
            min_distinct: spec.min_distinct,
        }
    }

    /// The values a key keeps (`kept`).
    pub(super) fn kept(&self) -> usize {
        kept(self.max_distinct, self.min_distinct)
    }
}

/// A cardinality firing's figures (`RuleFigures::cardinality`): the distinct values
/// within the window, and the limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distinct: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_distinct: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_distinct: Option<u64>,
}

impl FigureEnv for Figures {
    fn env(&self, env: &mut Vec<(&'static str, String)>) {
        let named = [
            ("EVENTSD_DISTINCT", self.distinct),
            ("EVENTSD_MAX_DISTINCT", self.max_distinct),
            ("EVENTSD_MIN_DISTINCT", self.min_distinct),
        ];
        env.extend(named.into_iter().filter_map(|(name, n)| Some((name, n?.to_string()))));
    }
}

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

impl Judge for Cardinality {
    fn kept_window(&self) -> Option<u64> {
        Some(self.window_secs)
    }

    /// Too few is decided on the clock.
    fn on_the_clock(&self) -> bool {
        self.min_distinct.is_some()
    }

    /// Counts alone decide nothing: the values do.
    fn on_count(
        &self,
        _cooling: &Cooling,
        _at: &mut WatcherKey<'_>,
        _events: u64,
        _now: Second,
    ) -> Option<Verdict> {
        None
    }

    /// When values arrive: too many fires; too few may end, and a key watched for too
    /// few waits for the second it would be. The key's counter is found once for all its
    /// hashes (per event, this is the rule's cost in the master).
    fn on_values(
        &self,
        cooling: &Cooling,
        store: &mut dyn CounterStore,
        watcher: Uuid,
        key: &Key,
        hashes: &[u64],
        now: Second,
    ) -> Option<Verdict> {
        let Cardinality {
            window_secs,
            max_distinct,
            min_distinct,
        } = *self;
        // A key already waiting keeps its second (judged then, it waits again if need
        // be): its values' seconds are sorted only for a key that waits for none.
        let waiting = min_distinct.is_some() && store.is_waiting(watcher, key);
        let counter = store.counter(watcher, key);
        let state = counter.rule.get_or_insert_default();
        state.expire(window_secs, now);
        let keep = kept(max_distinct, min_distinct);
        state.see_all(hashes, now, keep);
        let distinct = state.distinct.len() as u64;
        let below = min_distinct.and_then(|min| {
            state.low &= distinct < min;
            (!waiting).then(|| below_from(state, min, window_secs))
        });
        let verdict = max_distinct.and_then(|max| too_many(cooling, counter, max, distinct, now));
        if let Some(due) = below {
            store.schedule(watcher, key, due);
        }
        verdict
    }

    /// `min_distinct`, on the clock: a key with too few values fires (past the grace,
    /// once per episode, again after its cooldown); otherwise it waits for the second
    /// it would have too few. A key without values that fired is forgotten, unless it
    /// is always watched (`single`'s): forgotten, it would fire again after a restart.
    fn on_due(&self, cooling: &Cooling, due: &mut DueKey<'_, '_, '_>) -> Option<Verdict> {
        let Cardinality {
            window_secs,
            min_distinct: Some(min),
            ..
        } = *self
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
        match cooling.episode_turn(counter, was_low, now) {
            Turn::Fires { realert_at } => {
                counter.rule.get_or_insert_default().low = true;
                due.wait(realert_at);
                Some(Verdict::fired(distinct))
            }
            // Fired for this episode: a key without values left is done with.
            Turn::Waits(None) if distinct == 0 && !due.kept() => {
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

/// `max_distinct`, with `distinct` values in the window: fires once per episode, again
/// after its cooldown.
fn too_many(
    cooling: &Cooling,
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
    let Turn::Fires { .. } = cooling.episode_turn(counter, was_high, now) else {
        return None;
    };
    counter.rule.get_or_insert_default().high = true;
    Some(Verdict::fired(distinct))
}

/// The limit a key crossed, in words: `max_distinct` when it has more values, else
/// `min_distinct`.
fn distinct_limit(distinct: u64, max: Option<u64>, min: Option<u64>) -> String {
    match (max, min) {
        (Some(max), _) if distinct > max => format!("limit {max}"),
        (_, Some(min)) => format!("at least {min} expected"),
        (Some(max), None) => format!("limit {max}"),
        (None, None) => String::new(),
    }
}

pub(super) struct Words;

impl Wording for Words {
    fn text(&self, said: &Said<'_>) -> String {
        let (spec, count) = (said.spec, said.verdict.count);
        let field = spec.field.as_deref().unwrap_or("?");
        let limit = distinct_limit(count, spec.max_distinct, spec.min_distinct);
        let window = spec.window_secs.unwrap_or(0);
        let for_key = said.for_key;
        format!("{count} distinct {field} values{for_key} in {window} s ({limit})")
    }

    /// The distinct values within the window, and the limits.
    fn figures(&self, said: &Said<'_>) -> RuleFigures {
        let cardinality = Figures {
            distinct: Some(said.verdict.count),
            max_distinct: said.spec.max_distinct,
            min_distinct: said.spec.min_distinct,
        };
        RuleFigures {
            cardinality,
            ..RuleFigures::default()
        }
    }

    fn figure_lines(&self, firing: &Reported<'_>) -> Vec<(&'static str, String)> {
        let figures = &firing.figures.cardinality;
        let distinct = figures.distinct.unwrap_or(firing.count);
        let limit = distinct_limit(distinct, figures.max_distinct, figures.min_distinct);
        let mut lines = vec![("Distinct values", format!("{distinct} ({limit})"))];
        firing.window_lines(&mut lines);
        lines
    }

    fn description(&self, spec: &WatcherSpec) -> String {
        let field = spec.field.as_deref().unwrap_or("?");
        let limits: Vec<String> = [
            spec.max_distinct.map(|max| format!("more than {max}")),
            spec.min_distinct.map(|min| format!("fewer than {min}")),
        ]
        .into_iter()
        .flatten()
        .collect();
        format!("{} distinct {field} values", limits.join(" or "))
    }
}
