//! What every rule's judgement shares: the verdict a key that fires gets, the cooldown
//! and its exponential realert (`Cooling`), "once per episode" (`episode_turn`), and a
//! key due on the clock (the `DueKey` a rule's `on_due` reads). Decides no rule: each
//! rule's file does, through these.
//!
//! Never does I/O and never reads the clock: `now` is given.

use std::num::NonZeroU64;

use super::super::store::{Cooldown, DueAt, KeyCounter, Second};

/// A key fired: the figures its firing reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    /// The events counted (threshold, flatline, new_value), of the current window
    /// (spike), or the distinct values (cardinality).
    pub count: u64,
    /// spike: the events of the window before.
    pub previous: u64,
    /// A flatline key heard from again (`send_resolved`).
    pub resolved: bool,
}

impl Verdict {
    pub(super) fn fired(count: u64) -> Verdict {
        Verdict {
            count,
            previous: 0,
            resolved: false,
        }
    }
}

/// What a watcher's keys are judged against on the clock, besides their rule.
pub struct OnTheClock<'a> {
    /// No key fires before this second: a daemon that was down saw nothing, which is
    /// not the clients' silence (one window after the watcher was first seen).
    pub grace_until: Second,
    /// Keys watched whatever they do (`single`'s, `expect`'s): never forgotten.
    pub kept: &'a dyn Fn(&str) -> bool,
}

/// A key of a watcher decided on the clock, come up at `now`: what its rule's `on_due`
/// reads, and where it says when the key is judged next.
pub(super) struct DueKey<'a, 'b, 'c> {
    at: &'a mut DueAt<'b>,
    pub(super) now: Second,
    clock: &'c OnTheClock<'c>,
}

impl<'a, 'b, 'c> DueKey<'a, 'b, 'c> {
    pub(super) fn new(
        at: &'a mut DueAt<'b>,
        now: Second,
        clock: &'c OnTheClock<'c>,
    ) -> DueKey<'a, 'b, 'c> {
        DueKey { at, now, clock }
    }

    /// Its counter, if the store still holds it (not evicted, not forgotten).
    pub(super) fn counter(&mut self) -> Option<&mut KeyCounter> {
        self.at.counter()
    }

    /// Judged again at `at`, if any, and never within the second it was judged in: the
    /// master judges a second's keys a budget at a time, so a key waiting for that same
    /// second (a realert after `cooldown_secs = 0`) would be judged, and fire, again
    /// and again within it.
    pub(super) fn wait(&mut self, at: Option<Second>) {
        if let Some(at) = at {
            let next_second = self.now.saturating_add(1);
            self.at.wait(at.max(next_second));
        }
    }

    /// Dropped for its watcher: nothing is left to judge.
    pub(super) fn forget(&mut self) {
        self.at.forget();
    }

    pub(super) fn grace_until(&self) -> Second {
        self.clock.grace_until
    }

    /// Watched whatever it does: never forgotten.
    pub(super) fn kept(&self) -> bool {
        self.at.key_is(self.clock.kept)
    }
}

/// What a key whose rule's condition holds does at its turn.
pub(super) enum Turn {
    /// It fires (its cooldown started); with a cooldown, it may fire again once that
    /// ends, at `realert_at`.
    Fires { realert_at: Option<Second> },
    /// It does not: it fired for this episode already (`None`: once per episode), or it
    /// cools down until `Some`.
    Waits(Option<Second>),
}

/// The cooldown a watcher's keys share (`cooldown_secs`, `cooldown_max_secs`), every
/// rule's: whether a key whose rule holds fires, and the cooldown its firing starts.
#[derive(Debug, Clone, Copy)]
pub(super) struct Cooling {
    /// After a firing, the key does not fire again for this long.
    pub(super) secs: Option<u64>,
    /// Exponential realert: up to this, doubled while the key keeps crossing.
    pub(super) max_secs: Option<u64>,
}

impl Cooling {
    /// The turn of a key whose condition holds at `now`, once per episode (`in_episode`:
    /// it fired for this one already), again after its cooldown: the episode's rule of
    /// every rule that fires for a state (a silence, a spike, too many or too few values).
    pub(super) fn episode_turn(
        &self,
        counter: &mut KeyCounter,
        in_episode: bool,
        now: Second,
    ) -> Turn {
        if in_episode && self.secs.is_none() {
            return Turn::Waits(None);
        }
        if let Err(cooled_at) = self.unless_cooling(counter, now) {
            return Turn::Waits(Some(cooled_at));
        }
        self.fire(counter, now);
        let realert_at = (self.secs).map(|_| now.saturating_add(counter.cooldown_secs.into()));
        Turn::Fires { realert_at }
    }

    /// A key that met its rule at `now` fires unless it cools down; cooling, it is
    /// marked (its next cooldown may grow) and the second the cooldown ends is returned.
    pub(super) fn unless_cooling(
        &self,
        counter: &mut KeyCounter,
        now: Second,
    ) -> Result<(), Second> {
        if let Some(previous) = cooldown_of(counter) {
            let ends = previous.last_fired.saturating_add(previous.secs);
            if now < ends {
                counter.crossed_while_cooling = true;
                return Err(ends);
            }
        }
        Ok(())
    }

    /// The key fires at `now`: its cooldown starts.
    pub(super) fn fire(&self, counter: &mut KeyCounter, now: Second) {
        let cooldown = self.next_cooldown(cooldown_of(counter));
        counter.last_fired = NonZeroU64::new(now);
        counter.cooldown_secs = u32::try_from(cooldown).unwrap_or(u32::MAX);
        counter.crossed_while_cooling = false;
    }

    /// The cooldown a firing starts: `cooldown_secs`; with `cooldown_max_secs`
    /// (exponential realert), twice the previous one when the key crossed again during
    /// it, up to the maximum, and `cooldown_secs` again after a quiet one.
    fn next_cooldown(&self, previous: Option<Cooldown>) -> u64 {
        let Some(base) = self.secs else {
            return 0;
        };
        match (self.max_secs, previous) {
            (Some(max), Some(previous)) if previous.crossed => {
                previous.secs.max(base).saturating_mul(2).min(max)
            }
            _ => base,
        }
    }
}

/// Where a key stands since it last fired, if it ever did.
pub fn cooldown_of(counter: &KeyCounter) -> Option<Cooldown> {
    Some(Cooldown {
        last_fired: counter.last_fired?.get(),
        secs: counter.cooldown_secs.into(),
        crossed: counter.crossed_while_cooling,
    })
}

pub(super) fn earliest(a: Option<Second>, b: Option<Second>) -> Option<Second> {
    a.into_iter().chain(b).min()
}
