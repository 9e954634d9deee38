//! The flatline rule (rules.md): fewer than `threshold` events of a key within the last
//! `window_secs`, decided on the clock: once per silence (again after a recovery, or
//! after the cooldown); a key silent `forget_after_secs` after it fired is dropped,
//! unless it is always watched (`OnTheClock::kept`); with `send_resolved`, the recovery
//! fires too. Each key is judged at the second it would be below (`below_from`): a busy
//! key costs nothing on the clock.
//!
//! The same rule as `count_flatline` and `judge_silence` of
//! `src/cluster/eventsd_rules.lua`.

use serde::{Deserialize, Serialize};

use super::super::store::{KeyCounter, Second, WatcherKey};
use super::judge::{Cooling, DueKey, Turn, earliest};
use super::{Judge, NoFigures, Reported, Said, Verdict, Wording};
use crate::registry::WatcherSpec;

/// How long a flatline key silent after it fired is kept, by default: a day.
pub const FORGET_AFTER_SECS: u64 = 86_400;

/// A flatline firing reports what every firing has: `count`, `threshold`, `resolved`.
pub type Figures = NoFigures;

/// flatline's figures, read from the definition (`of`), defaults filled in: what
/// `Rule::Flatline` holds and the Lua reads as `rule.flatline`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Flatline {
    threshold: u64,
    window_secs: u64,
    forget_after_secs: u64,
    send_resolved: bool,
}

impl Flatline {
    pub(super) fn of(spec: &WatcherSpec, _created: Second) -> Flatline {
        Flatline {
            threshold: spec.threshold.unwrap_or(1),
            window_secs: spec.window_secs.unwrap_or(1),
            forget_after_secs: spec.forget_after_secs.unwrap_or(FORGET_AFTER_SECS),
            send_resolved: spec.send_resolved.unwrap_or(false),
        }
    }
}

impl Judge for Flatline {
    fn kept_window(&self) -> Option<u64> {
        Some(self.window_secs)
    }

    fn on_the_clock(&self) -> bool {
        true
    }

    /// A key counted is queued for the second it would be below, if it is not; a silent
    /// key back at its threshold recovers (and fires with `send_resolved`), and is
    /// queued for its next silence: as a silent key it waited for its forget (a day by
    /// default) or its realert, and would have missed a silence before.
    fn on_count(
        &self,
        _cooling: &Cooling,
        at: &mut WatcherKey<'_>,
        events: u64,
        now: Second,
    ) -> Option<Verdict> {
        let count = at.add(events, now, Some(self.window_secs));
        let counter = at.counter();
        let recovered = counter.silent && count >= self.threshold;
        if recovered {
            counter.silent = false;
        }
        if recovered || !at.is_waiting() {
            let due = below_from(at.counter(), self.threshold, self.window_secs);
            at.schedule(due);
        }
        (recovered && self.send_resolved).then_some(Verdict {
            count,
            previous: 0,
            resolved: true,
        })
    }

    /// A key come up on the clock: below its threshold (past the grace), it fires once
    /// per silence, again only after its cooldown; silent `forget_after_secs` after it
    /// fired, it is dropped unless kept; otherwise it waits for the second it would be
    /// below.
    fn on_due(&self, cooling: &Cooling, due: &mut DueKey<'_, '_, '_>) -> Option<Verdict> {
        let (window_secs, forget_after_secs) = (self.window_secs, self.forget_after_secs);
        let (now, kept, grace_until) = (due.now, due.kept(), due.grace_until());
        let counter = due.counter()?;
        counter.buckets.keep_within(window_secs, now);
        let below = below_from(counter, self.threshold, window_secs).max(grace_until);
        let last_fired = counter.last_fired.map_or(0, |second| second.get());
        let silent = counter.silent;
        // Only a silent key is forgotten: one that recovered and is below again within
        // its cooldown waits for the cooldown's end, not for a forget already past (it
        // was judged again every second until then).
        let forget_at = (!kept && silent).then(|| last_fired.saturating_add(forget_after_secs));
        let wait_until = if below > now {
            Some(below)
        } else if forget_at.is_some_and(|at| now >= at) {
            due.forget();
            return None;
        } else {
            let count = counter.buckets.total();
            match cooling.episode_turn(counter, silent, now) {
                // Once per silence, it waits only to be forgotten.
                Turn::Waits(at) => earliest(at, forget_at),
                Turn::Fires { realert_at } => {
                    counter.silent = true;
                    let forget_at = (!kept).then(|| now.saturating_add(forget_after_secs));
                    due.wait(earliest(realert_at, forget_at));
                    return Some(Verdict::fired(count));
                }
            }
        };
        due.wait(wait_until);
        None
    }
}

/// The first second from which the key's count over the last `window` seconds is below
/// `threshold` if no event comes: the window's end after the newest bucket that still
/// makes the threshold with every newer one; 0 when it is below already.
fn below_from(counter: &KeyCounter, threshold: u64, window: u64) -> Second {
    let mut newer = 0;
    for (second, events) in counter.buckets.newest_first() {
        newer += events;
        if newer >= threshold {
            return second.saturating_add(window);
        }
    }
    0
}

pub(super) struct Words;

impl Wording for Words {
    fn text(&self, said: &Said<'_>) -> String {
        let (event, for_key, count) = (said.event, said.for_key, said.verdict.count);
        let window = said.spec.window_secs.unwrap_or(0);
        let threshold = said.spec.threshold.unwrap_or(0);
        if said.verdict.resolved {
            format!(
                "`{event}` events are back{for_key}: {count} in the last {window} s \
                 (expected at least {threshold})"
            )
        } else if count == 0 {
            format!(
                "No `{event}` event{for_key} in the last {window} s (expected at least \
                 {threshold})"
            )
        } else {
            format!(
                "Only {count} `{event}` events{for_key} in the last {window} s \
                 (expected at least {threshold})"
            )
        }
    }

    fn figure_lines(&self, firing: &Reported<'_>) -> Vec<(&'static str, String)> {
        let (count, threshold) = (firing.count, firing.threshold);
        let mut lines = vec![("Count", format!("{count} (expected at least {threshold})"))];
        firing.window_lines(&mut lines);
        lines
    }

    fn description(&self, spec: &WatcherSpec) -> String {
        format!("fewer than {} events", spec.threshold.unwrap_or(0))
    }
}
