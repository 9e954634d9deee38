//! The new_value rule (rules.md): a key whose watched value (the last of its fields:
//! `WatcherSpec::counted_by`) was not seen within `remember_secs` fires, from
//! `learn_until` on. Each (key, value) is a counter of its own, remembered, bounded and
//! evicted as counters are. Decided when counts arrive.
//!
//! The same rule as `count_new_value` of `src/cluster/eventsd_rules.lua`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::super::Key;
use super::super::store::{Second, WatcherKey};
use super::super::table::Buckets;
use super::judge::Cooling;
use super::{FigureEnv, Judge, Reported, RuleFigures, Said, Verdict, Wording, shown};
use crate::registry::WatcherSpec;

/// How long new_value remembers a value, by default: 30 days.
pub const REMEMBER_SECS: u64 = 30 * 86_400;

/// new_value's figures, read from the definition and its creation (`of`): what
/// `Rule::NewValue` holds and the Lua reads as `rule.new_value`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct NewValue {
    learn_until: Second,
    remember_secs: u64,
}

/// A new_value firing's figures (`RuleFigures::new_value`): the value seen for the
/// first time.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    /// `{field: value}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
}

impl FigureEnv for Figures {
    fn env(&self, env: &mut Vec<(&'static str, String)>) {
        env.extend(self.value.as_ref().map(|v| ("EVENTSD_VALUE", v.to_string())));
    }
}

impl NewValue {
    pub(super) fn of(spec: &WatcherSpec, created: Second) -> NewValue {
        NewValue {
            learn_until: created.saturating_add(spec.learn_secs.unwrap_or(0)),
            remember_secs: spec.remember_secs.unwrap_or(REMEMBER_SECS),
        }
    }
}

impl Judge for NewValue {
    fn kept_window(&self) -> Option<u64> {
        None
    }

    fn on_count(
        &self,
        cooling: &Cooling,
        at: &mut WatcherKey<'_>,
        events: u64,
        now: Second,
    ) -> Option<Verdict> {
        let null = is_null_value(at.key());
        let counter = at.counter();
        let known = (counter.buckets.newest_first().next())
            .is_some_and(|(seen, _)| now < seen.saturating_add(self.remember_secs));
        let seen = counter.buckets.total().saturating_add(events);
        counter.buckets = Buckets::One(now, seen);
        if known || now < self.learn_until || null {
            return None;
        }
        cooling.unless_cooling(counter, now).ok()?;
        cooling.fire(counter, now);
        Some(Verdict::fired(events))
    }
}

/// A key whose watched value is missing (`null`, the last of the key's values) never
/// fires: an event without the field has no value to be new.
fn is_null_value(key: &Key) -> bool {
    let text = key.as_str();
    text == "[null]" || text.ends_with(",null]")
}

pub(super) struct Words;

impl Wording for Words {
    fn text(&self, said: &Said<'_>) -> String {
        let value = said.value.map(shown).unwrap_or_default();
        format!("New {value}{}", said.for_key)
    }

    /// The value seen for the first time.
    fn figures(&self, said: &Said<'_>) -> RuleFigures {
        RuleFigures {
            new_value: Figures {
                value: said.value.cloned(),
            },
            ..RuleFigures::default()
        }
    }

    fn figure_lines(&self, firing: &Reported<'_>) -> Vec<(&'static str, String)> {
        let value = firing.figures.new_value.value.as_ref();
        value
            .map(|v| ("New value", v.to_string()))
            .into_iter()
            .collect()
    }

    fn description(&self, spec: &WatcherSpec) -> String {
        format!("a new {}", spec.value_fields().join(", "))
    }
}
