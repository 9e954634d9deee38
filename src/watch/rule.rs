//! A watcher's rule (rules.md): what decides that a key fires. One definition of the
//! figures a key is judged by (`RuleParams`: the rule and the cooldown every rule shares),
//! read by both engines that judge: this module's, over the master's `CounterStore`
//! (`on_count`, on one watcher's counter of a key found once for its field set;
//! `on_tick`), and the Redis Function's (`src/cluster/eventsd.lua`), which gets the same
//! figures JSON-encoded as one argument (`cluster::count_command`).
//! `tests/rules.rs` runs one table of scenarios against both, so they cannot drift.
//!
//! Never does I/O and never reads the clock: `now` is given, so that the scenarios
//! control it.

use std::num::NonZeroU64;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Key;
use super::store::{Cooldown, CounterStore, KeyCounter, Second, WatcherKey};
use super::table::Buckets;
pub use crate::registry::Direction;
use crate::registry::{RuleKind, WatcherSpec};

/// How long a flatline key silent after it fired is kept, by default: a day.
pub const FORGET_AFTER_SECS: u64 = 86_400;

/// How long new_value remembers a value, by default: 30 days.
pub const REMEMBER_SECS: u64 = 30 * 86_400;

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
    /// Fewer than `threshold` events within the last `window_secs`, decided on the
    /// clock: once per silence (again after a recovery, or after the cooldown); a key
    /// silent `forget_after_secs` after it fired is dropped, unless it is always watched
    /// (`OnTheClock::kept`); with `send_resolved`, the recovery fires too.
    Flatline {
        threshold: u64,
        window_secs: u64,
        forget_after_secs: u64,
        send_resolved: bool,
    },
    /// The count of the last `window_secs` at least `ratio` times that of the window
    /// before (up, decided when counts arrive), or at most that count / `ratio` (down,
    /// decided on the clock), both windows holding at least their minimum: once per
    /// spike (`spike.rs`).
    Spike {
        window_secs: u64,
        ratio: f64,
        direction: Direction,
        min_previous: u64,
        min_current: u64,
    },
    /// More than `max_distinct` distinct values within the last `window_secs` (decided
    /// when values arrive), or fewer than `min_distinct` (on the clock): once per
    /// episode (`distinct.rs`).
    Cardinality {
        window_secs: u64,
        max_distinct: Option<u64>,
        min_distinct: Option<u64>,
    },
    /// A key (the watched value in it: `WatcherSpec::counted_by`) not seen within
    /// `remember_secs` fires, from `learn_until` on.
    NewValue {
        learn_until: Second,
        remember_secs: u64,
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
    pub kept: &'a dyn Fn(&Key) -> bool,
}

/// A key of a watcher decided on the clock, come up at `now`: what its judge
/// (`judge_silence`, `spike.rs::judge_drop`, `distinct.rs::judge_few`) reads, and where
/// it says when the key is judged next.
pub(super) struct DueKey<'a, 'c> {
    store: &'a mut dyn CounterStore,
    watcher: Uuid,
    key: &'a Key,
    pub(super) now: Second,
    clock: &'c OnTheClock<'c>,
}

impl DueKey<'_, '_> {
    /// Its counter, if the store still holds it (not evicted, not forgotten).
    pub(super) fn counter(&mut self) -> Option<&mut KeyCounter> {
        self.store.existing(self.watcher, self.key)
    }

    /// Judged again at `at`, if any.
    pub(super) fn wait(&mut self, at: Option<Second>) {
        if let Some(at) = at {
            self.store.schedule(self.watcher, self.key, at);
        }
    }

    /// Dropped for its watcher: nothing is left to judge.
    pub(super) fn forget(&mut self) {
        self.store.forget(self.watcher, self.key);
    }

    pub(super) fn grace_until(&self) -> Second {
        self.clock.grace_until
    }

    /// Watched whatever it does: never forgotten.
    fn kept(&self) -> bool {
        (self.clock.kept)(self.key)
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

impl RuleParams {
    /// The turn of a key whose condition holds at `now`, once per episode (`in_episode`:
    /// it fired for this one already), again after its cooldown: the episode's rule of
    /// every rule that fires for a state (a silence, a spike, too many or too few values).
    pub(super) fn episode_turn(
        &self,
        counter: &mut KeyCounter,
        in_episode: bool,
        now: Second,
    ) -> Turn {
        if in_episode && self.cooldown_secs.is_none() {
            return Turn::Waits(None);
        }
        if let Err(cooled_at) = self.unless_cooling(counter, now) {
            return Turn::Waits(Some(cooled_at));
        }
        self.fire(counter, now);
        let realert_at =
            (self.cooldown_secs).map(|_| now.saturating_add(counter.cooldown_secs.into()));
        Turn::Fires { realert_at }
    }

    /// The figures of a watcher's definition, made at `created` (seconds since the
    /// epoch: `Entry::created_secs`, 0 when unknown), checked by
    /// `registry::validation::rule::check` (a figure missing from a damaged
    /// `registry.json` counts as 1).
    pub fn of(spec: &WatcherSpec, created: Second) -> RuleParams {
        let threshold = spec.threshold.unwrap_or(1);
        let window_secs = spec.window_secs.unwrap_or(1);
        let rule = match spec.rule {
            RuleKind::Threshold => Rule::Threshold {
                threshold,
                window_secs: spec.window_secs,
            },
            RuleKind::Flatline => Rule::Flatline {
                threshold,
                window_secs,
                forget_after_secs: spec.forget_after_secs.unwrap_or(FORGET_AFTER_SECS),
                send_resolved: spec.send_resolved.unwrap_or(false),
            },
            RuleKind::Spike => Rule::Spike {
                window_secs,
                ratio: spec.ratio.unwrap_or(2.0),
                direction: spec.direction.unwrap_or(Direction::Up),
                min_previous: spec.min_previous.unwrap_or(1),
                min_current: spec.min_current.unwrap_or(1),
            },
            RuleKind::Cardinality => Rule::Cardinality {
                window_secs,
                max_distinct: spec.max_distinct,
                min_distinct: spec.min_distinct,
            },
            RuleKind::NewValue => Rule::NewValue {
                learn_until: created.saturating_add(spec.learn_secs.unwrap_or(0)),
                remember_secs: spec.remember_secs.unwrap_or(REMEMBER_SECS),
            },
        };
        RuleParams {
            rule,
            cooldown_secs: spec.cooldown_secs,
            cooldown_max_secs: spec.cooldown_max_secs,
        }
    }

    /// The window the store keeps a key's events for, if the rule has one: spike keeps
    /// two (the current one and the one before).
    pub fn window_secs(&self) -> Option<u64> {
        match self.rule {
            Rule::Threshold { window_secs, .. } => window_secs,
            Rule::Flatline { window_secs, .. } => Some(window_secs),
            Rule::Spike { window_secs, .. } => Some(window_secs.saturating_mul(2)),
            Rule::Cardinality { window_secs, .. } => Some(window_secs),
            Rule::NewValue { .. } => None,
        }
    }

    /// For a rule decided on the clock, first seen at `first_seen`: the end of its grace,
    /// a window later (the Redis Function's `tick` counts from its own first sight).
    pub fn grace_until(&self, first_seen: Second) -> Second {
        first_seen.saturating_add(self.window_secs().unwrap_or(0))
    }

    /// Whether the rule is decided on the clock (`on_tick`), at least in part.
    pub fn on_the_clock(&self) -> bool {
        match self.rule {
            Rule::Flatline { .. } => true,
            Rule::Spike { direction, .. } => direction.down(),
            Rule::Cardinality { min_distinct, .. } => min_distinct.is_some(),
            Rule::Threshold { .. } | Rule::NewValue { .. } => false,
        }
    }

    /// A watcher decided on the clock, first seen (created, changed, restored at a
    /// start): the keys it holds and those it always watches (`kept`, never evicted)
    /// wait for the end of its grace.
    pub fn on_first_sight<'k>(
        &self,
        store: &mut dyn CounterStore,
        watcher: Uuid,
        kept: impl Iterator<Item = &'k Key>,
        grace_until: Second,
    ) {
        if !self.on_the_clock() {
            return;
        }
        let mut keys = store.keys(watcher);
        for key in kept {
            store.keep(watcher, key);
            keys.push(key.clone());
        }
        for key in &keys {
            store.counter(watcher, key);
            store.schedule(watcher, key, grace_until);
        }
    }

    /// `events` of a key seen at `now`, on the watcher's counter of it: whether it fires.
    pub fn on_count(&self, at: &mut WatcherKey<'_>, events: u64, now: Second) -> Option<Verdict> {
        match self.rule {
            Rule::Threshold {
                threshold,
                window_secs,
            } => {
                let count = at.add(events, now, window_secs);
                if count <= threshold {
                    return None;
                }
                let counter = at.counter();
                self.unless_cooling(counter, now).ok()?;
                // The count starts again from zero.
                counter.buckets = Buckets::Empty;
                self.fire(counter, now);
                Some(Verdict::fired(count))
            }
            Rule::Flatline {
                threshold,
                window_secs,
                send_resolved,
                ..
            } => {
                let count = at.add(events, now, Some(window_secs));
                if !at.is_waiting() {
                    let due = below_from(at.counter(), threshold, window_secs);
                    at.schedule(due);
                }
                let counter = at.counter();
                let recovered = counter.silent && count >= threshold;
                if recovered {
                    counter.silent = false;
                }
                (recovered && send_resolved).then_some(Verdict {
                    count,
                    previous: 0,
                    resolved: true,
                })
            }
            Rule::Spike { .. } => self.spike_on_count(at, events, now),
            Rule::Cardinality { .. } => None,
            Rule::NewValue {
                learn_until,
                remember_secs,
            } => {
                let null = is_null_value(at.key());
                let counter = at.counter();
                let known = (counter.buckets.newest_first().next())
                    .is_some_and(|(seen, _)| now < seen.saturating_add(remember_secs));
                let seen = counter.buckets.total().saturating_add(events);
                counter.buckets = Buckets::One(now, seen);
                if known || now < learn_until || null {
                    return None;
                }
                self.unless_cooling(counter, now).ok()?;
                self.fire(counter, now);
                Some(Verdict::fired(events))
            }
        }
    }

    /// The hashes of the watched value seen for `key` at `now` (cardinality): whether
    /// the key fires. None for the other rules, which ship no values.
    pub fn on_values(
        &self,
        store: &mut dyn CounterStore,
        watcher: Uuid,
        key: &Key,
        hashes: &[u64],
        now: Second,
    ) -> Option<Verdict> {
        match self.rule {
            Rule::Cardinality { .. } => self.distinct_on_values(store, watcher, key, hashes, now),
            _ => None,
        }
    }

    /// The keys of `watcher` that fire on the clock at `now`: none for a rule decided
    /// when counts arrive. Costs the keys due, not the keys held.
    pub fn on_tick(
        &self,
        store: &mut dyn CounterStore,
        watcher: Uuid,
        now: Second,
        clock: &OnTheClock,
    ) -> Vec<(Key, Verdict)> {
        if !self.on_the_clock() {
            return Vec::new();
        }
        let due = store.take_due(watcher, now);
        due.into_iter()
            .filter_map(|key| {
                let mut due = DueKey {
                    store: &mut *store,
                    watcher,
                    key: &key,
                    now,
                    clock,
                };
                let verdict = match self.rule {
                    Rule::Spike { .. } => self.judge_drop(&mut due),
                    Rule::Cardinality { .. } => self.judge_few(&mut due),
                    _ => self.judge_silence(&mut due),
                }?;
                Some((key, verdict))
            })
            .collect()
    }

    /// A flatline key come up on the clock: below its threshold (past the grace), it
    /// fires once per silence, again only after its cooldown; silent `forget_after_secs`
    /// after it fired, it is dropped unless kept; otherwise it waits for the second it
    /// would be below.
    fn judge_silence(&self, due: &mut DueKey<'_, '_>) -> Option<Verdict> {
        let Rule::Flatline {
            threshold,
            window_secs,
            forget_after_secs,
            ..
        } = self.rule
        else {
            return None;
        };
        let (now, kept, grace_until) = (due.now, due.kept(), due.grace_until());
        let counter = due.counter()?;
        counter
            .buckets
            .drop_front_while(|second| second.saturating_add(window_secs) <= now);
        let below = below_from(counter, threshold, window_secs).max(grace_until);
        let last_fired = counter.last_fired.map_or(0, |second| second.get());
        let forget_at = (!kept).then(|| last_fired.saturating_add(forget_after_secs));
        let silent = counter.silent;
        let wait_until = if below > now {
            Some(below)
        } else if silent && forget_at.is_some_and(|at| now >= at) {
            due.forget();
            return None;
        } else {
            let count = counter.buckets.total();
            match self.episode_turn(counter, silent, now) {
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

    /// A key that met its rule at `now` fires unless it cools down; cooling, it is
    /// marked (its next cooldown may grow) and the second the cooldown ends is returned.
    fn unless_cooling(&self, counter: &mut KeyCounter, now: Second) -> Result<(), Second> {
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

/// Where a key stands since it last fired, if it ever did.
pub fn cooldown_of(counter: &KeyCounter) -> Option<Cooldown> {
    Some(Cooldown {
        last_fired: counter.last_fired?.get(),
        secs: counter.cooldown_secs.into(),
        crossed: counter.crossed_while_cooling,
    })
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

/// new_value: a key whose watched value is missing (`null`, the last of the key's
/// values) never fires: an event without the field has no value to be new.
fn is_null_value(key: &Key) -> bool {
    let text = key.as_str();
    text == "[null]" || text.ends_with(",null]")
}

pub(super) fn earliest(a: Option<Second>, b: Option<Second>) -> Option<Second> {
    a.into_iter().chain(b).min()
}
