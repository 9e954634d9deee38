//! The threshold rule (rules.md; events-collector's): more than `threshold` events of a
//! key within the last `window_secs` (or, without a window, since the key last fired)
//! fire, and the count starts again from zero. Decided when counts arrive.
//!
//! The same rule as `count_threshold` of `src/cluster/eventsd_rules.lua`.

use std::fmt::Write;

use serde::{Deserialize, Serialize};

use super::super::store::{Second, WatcherKey};
use super::super::table::Buckets;
use super::judge::Cooling;
use super::{Judge, NoFigures, Reported, Said, Verdict, Wording};
use crate::registry::WatcherSpec;

/// A threshold firing reports what every firing has: `count`, `threshold`.
pub type Figures = NoFigures;

/// threshold's figures, read from the definition (`of`): what `Rule::Threshold` holds
/// and the Lua reads as `rule.threshold`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Threshold {
    threshold: u64,
    window_secs: Option<u64>,
}

impl Threshold {
    pub(super) fn of(spec: &WatcherSpec, _created: Second) -> Threshold {
        Threshold {
            threshold: spec.threshold.unwrap_or(1),
            window_secs: spec.window_secs,
        }
    }
}

impl Judge for Threshold {
    fn kept_window(&self) -> Option<u64> {
        self.window_secs
    }

    fn on_count(
        &self,
        cooling: &Cooling,
        at: &mut WatcherKey<'_>,
        events: u64,
        now: Second,
    ) -> Option<Verdict> {
        let count = at.add(events, now, self.window_secs);
        if count <= self.threshold {
            return None;
        }
        let counter = at.counter();
        cooling.unless_cooling(counter, now).ok()?;
        // The count starts again from zero.
        counter.buckets = Buckets::Empty;
        cooling.fire(counter, now);
        Some(Verdict::fired(count))
    }
}

pub(super) struct Words;

impl Wording for Words {
    /// events-collector's wording, then the key of a `fields` watcher.
    fn text(&self, said: &Said<'_>) -> String {
        let (event, count) = (said.event, said.verdict.count);
        let mut text = format!("Event `{event}` repeated {count} times");
        if let Some(window) = said.spec.window_secs {
            let _ = write!(text, " in {window} s");
        }
        text + said.for_key
    }

    fn figure_lines(&self, firing: &Reported<'_>) -> Vec<(&'static str, String)> {
        let (count, threshold) = (firing.count, firing.threshold);
        let window = firing.window_secs.map(|w| format!("the last {w} s"));
        let window = window.unwrap_or_else(|| "since the last firing".to_string());
        vec![
            ("Count", format!("{count} (threshold {threshold})")),
            ("Window", window),
        ]
    }

    fn description(&self, spec: &WatcherSpec) -> String {
        format!("more than {} events", spec.threshold.unwrap_or(0))
    }
}
