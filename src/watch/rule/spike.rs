//! The spike rule (rules.md): a key's count over the last `window_secs` against that of
//! the window before it, both sliding with 1 s buckets (the store keeps two windows).
//! Up is decided when counts arrive; down on the clock, each key judged when one of its
//! buckets moves from a window to the next (`next_move`): a quiet key costs nothing
//! once its buckets are gone. A key fires once per spike: again only after the
//! condition stopped holding, or after its cooldown; and not before two windows have
//! passed since it was first counted (its baseline: a key's first events are no spike).
//!
//! The same rule as `count_spike` and `judge_drop` of `src/cluster/eventsd_rules.lua`.

use serde::{Deserialize, Serialize};

use super::super::store::{Second, WatcherKey};
use super::super::table::Buckets;
use super::judge::{Cooling, DueKey, Turn, earliest};
use super::{FigureEnv, Judge, Reported, RuleFigures, Said, Verdict, Wording};
use crate::registry::{Direction, WatcherSpec};

/// spike's figures, read from the definition (`of`), defaults filled in: what
/// `Rule::Spike` holds and the Lua reads as `rule.spike`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Spike {
    window_secs: u64,
    ratio: f64,
    direction: Direction,
    min_previous: u64,
    min_current: u64,
}

impl Spike {
    pub(super) fn of(spec: &WatcherSpec, _created: Second) -> Spike {
        Spike {
            window_secs: spec.window_secs.unwrap_or(1),
            ratio: spec.ratio.unwrap_or(2.0),
            direction: spec.direction.unwrap_or(Direction::Up),
            min_previous: spec.min_previous.unwrap_or(1),
            min_current: spec.min_current.unwrap_or(1),
        }
    }
}

/// A spike's firing figures (`RuleFigures::spike`): the events of the current window
/// and of the one before, and the ratio.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratio: Option<f64>,
}

impl FigureEnv for Figures {
    fn env(&self, env: &mut Vec<(&'static str, String)>) {
        let named = [
            ("EVENTSD_CURRENT", self.current.map(|n| n.to_string())),
            ("EVENTSD_PREVIOUS", self.previous.map(|n| n.to_string())),
            ("EVENTSD_RATIO", self.ratio.map(|r| r.to_string())),
        ];
        env.extend(named.into_iter().filter_map(|(name, v)| Some((name, v?))));
    }
}

/// The two windows a spike compares.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Windows {
    current: u64,
    previous: u64,
}

/// The events of the last `window` seconds and of the `window` seconds before, at `now`.
fn windows(buckets: &Buckets, window: u64, now: Second) -> Windows {
    let mut counted = Windows {
        current: 0,
        previous: 0,
    };
    for (second, events) in buckets.newest_first() {
        if second.saturating_add(window) > now {
            counted.current += events;
        } else if second.saturating_add(window.saturating_mul(2)) > now {
            counted.previous += events;
        }
    }
    counted
}

/// The next second after `now` at which a bucket moves from the current window to the
/// previous one, or out of both: when a drop may start.
fn next_move(buckets: &Buckets, window: u64, now: Second) -> Option<Second> {
    buckets
        .newest_first()
        .flat_map(|(second, _)| [second + window, second + 2 * window])
        .filter(|&at| at > now)
        .min()
}

impl Spike {
    /// Whether `counted` is a spike up, and a drop (`(up, down)`), both windows holding
    /// their minimum, of a key counted since `since`: at `now`, past its baseline.
    fn spiking(&self, counted: Windows, since: Second, now: Second) -> (bool, bool) {
        let Spike {
            window_secs,
            ratio,
            min_previous,
            min_current,
            ..
        } = *self;
        let (current, previous) = (counted.current as f64, counted.previous as f64);
        let established = now >= since.saturating_add(window_secs.saturating_mul(2));
        let enough =
            established && counted.previous >= min_previous && counted.current >= min_current;
        (
            enough && current >= ratio * previous,
            enough && current * ratio <= previous,
        )
    }

    /// Whether a drop under way goes on: it still holds, or the current window fell below
    /// `min_current`. A drop that went on to nothing has not recovered, so the trickle
    /// after it is the same drop, not a second one.
    fn drop_goes_on(&self, counted: Windows, down: bool) -> bool {
        down || counted.current < self.min_current
    }
}

impl Judge for Spike {
    /// Two windows: the current one and the one before.
    fn kept_window(&self) -> Option<u64> {
        Some(self.window_secs.saturating_mul(2))
    }

    /// A drop is decided on the clock.
    fn on_the_clock(&self) -> bool {
        self.direction.down()
    }

    /// When counts arrive: up fires; a drop under way may end.
    fn on_count(
        &self,
        cooling: &Cooling,
        at: &mut WatcherKey<'_>,
        events: u64,
        now: Second,
    ) -> Option<Verdict> {
        let Spike {
            window_secs,
            direction,
            ..
        } = *self;
        at.add(events, now, self.kept_window());
        if direction.down() && !at.is_waiting() {
            if let Some(due) = next_move(&at.counter().buckets, window_secs, now) {
                at.schedule(due);
            }
        }
        let counter = at.counter();
        let counted = windows(&counter.buckets, window_secs, now);
        let state = counter.rule.get_or_insert_default();
        if state.since == 0 {
            state.since = now;
        }
        let (up, down) = self.spiking(counted, state.since, now);
        state.low &= self.drop_goes_on(counted, down);
        let was_up = state.high;
        state.high &= up;
        if !direction.up() || !up {
            return None;
        }
        let Turn::Fires { .. } = cooling.episode_turn(counter, was_up, now) else {
            return None;
        };
        counter.rule.get_or_insert_default().high = true;
        Some(Verdict {
            count: counted.current,
            previous: counted.previous,
            resolved: false,
        })
    }

    /// Down, on the clock: a key whose count dropped fires (past the grace, once per
    /// drop, again after its cooldown); it is judged again when a bucket next moves; a
    /// key without buckets left is forgotten.
    fn on_due(&self, cooling: &Cooling, due: &mut DueKey<'_, '_, '_>) -> Option<Verdict> {
        let window_secs = self.window_secs;
        let (now, grace_until) = (due.now, due.grace_until());
        let counter = due.counter()?;
        let kept = window_secs.saturating_mul(2);
        counter.buckets.keep_within(kept, now);
        let Some(next) = next_move(&counter.buckets, window_secs, now) else {
            due.forget();
            return None;
        };
        let counted = windows(&counter.buckets, window_secs, now);
        let state = counter.rule.get_or_insert_default();
        let (_, down) = self.spiking(counted, state.since, now);
        let was_down = state.low;
        state.low &= self.drop_goes_on(counted, down);
        let wait = if now < grace_until {
            Some(grace_until)
        } else if !down {
            Some(next)
        } else {
            match cooling.episode_turn(counter, was_down, now) {
                Turn::Waits(at) => earliest(at, Some(next)),
                Turn::Fires { .. } => {
                    counter.rule.get_or_insert_default().low = true;
                    due.wait(Some(next));
                    return Some(Verdict {
                        count: counted.current,
                        previous: counted.previous,
                        resolved: false,
                    });
                }
            }
        };
        due.wait(wait);
        None
    }
}

pub(super) struct Words;

impl Wording for Words {
    fn text(&self, said: &Said<'_>) -> String {
        let (event, count, previous) = (said.event, said.verdict.count, said.verdict.previous);
        let way = if count >= previous { "rose" } else { "fell" };
        let window = said.spec.window_secs.unwrap_or(0);
        format!(
            "Event `{event}` {way} from {previous} to {count} per {window} s{}",
            said.for_key
        )
    }

    /// The events of the current window and of the one before, and the ratio.
    fn figures(&self, said: &Said<'_>) -> RuleFigures {
        let spike = Figures {
            current: Some(said.verdict.count),
            previous: Some(said.verdict.previous),
            ratio: said.spec.ratio,
        };
        RuleFigures {
            spike,
            ..RuleFigures::default()
        }
    }

    fn figure_lines(&self, firing: &Reported<'_>) -> Vec<(&'static str, String)> {
        let figures = &firing.figures.spike;
        let current = figures.current.unwrap_or(firing.count);
        let previous = figures.previous.unwrap_or(0);
        let mut lines = vec![
            ("Current window", format!("{current} events")),
            ("Previous window", format!("{previous} events")),
        ];
        if let Some(ratio) = figures.ratio {
            lines.push(("Ratio", ratio.to_string()));
        }
        firing.window_lines(&mut lines);
        lines
    }

    fn description(&self, spec: &WatcherSpec) -> String {
        let way = match spec.direction {
            Some(Direction::Down) => "at most 1/",
            Some(Direction::Both) => "at least or at most 1/",
            _ => "at least ",
        };
        let ratio = spec.ratio.unwrap_or(0.0);
        format!("{way}{ratio} times the events of the window before")
    }
}
