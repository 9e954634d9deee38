//! A watcher's rule (rules.md): what decides that a key fires. Each rule is one file
//! beside this one (`threshold.rs`, `flatline.rs`, `spike.rs`, `cardinality.rs`,
//! `new_value.rs`): its figures read from the watcher's definition, what it decides when
//! counts arrive and on the clock (`Judge`), the figures its firings report (`Figures`)
//! and its words (`Wording`: the firing's text and figures, the e-mail's lines, the live
//! state's description). The files are listed once, in the registry's `every_rule`
//! (with the fields each rule requires or refuses); this module makes `Rule`,
//! `RuleFigures` and `wording` from that list. The rules never name the firing document
//! (`firing::Firing`, which carries their figures): they word what they are given
//! (`Said`, `Reported`), so the firing depends on the rules and not the other way. What every
//! rule shares (the verdict, the cooldown and realert, once per episode, a key due on
//! the clock) is `judge.rs`.
//!
//! One definition of the figures a key is judged by (`RuleParams`: the rule and the
//! cooldown every rule shares), read by both engines that judge: this module's, over the
//! master's `CounterStore` (`on_count`, on one watcher's counter of a key found once for
//! its field set; `on_tick`), and the Redis Function's (`src/cluster/eventsd_rules.lua`),
//! which gets the same figures JSON-encoded as one argument (`cluster::count_command`).
//! `tests/rules.rs` runs one table of scenarios against both, so they cannot drift.
//!
//! Never does I/O and never reads the clock: `now` is given, so that the scenarios
//! control it.

mod judge;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::Key;
use super::store::{CounterStore, Second, WatcherKey};
use crate::registry::validation::watcher::every_rule;
use crate::registry::{RuleKind, WatcherSpec};
use judge::{Cooling, DueKey};
pub use judge::{OnTheClock, Verdict, cooldown_of};

/// The watch's list of rules, from the registry's (`every_rule`): each rule's file, the
/// variant of `Rule` holding its figures, its `Judge` and `Wording`, and its part of
/// `RuleFigures` (its file's `Figures`).
macro_rules! rules {
    ($($(#[$doc:meta])* $kind:ident $file:ident,)*) => {
        $(mod $file;)*

        /// A firing's figures besides those every firing has (rules.md, "Firings"):
        /// each rule's own (its file's `Figures`), at the top level of the firing
        /// document, each absent from a firing of another rule.
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
        pub struct RuleFigures {
            $(
                #[serde(flatten)]
                pub $file: $file::Figures,
            )*
        }

        impl RuleFigures {
            /// The figures as a command action's `EVENTSD_*` variables (`rule_env`).
            pub fn env(&self) -> Vec<(&'static str, String)> {
                let mut env = Vec::new();
                $(self.$file.env(&mut env);)*
                env
            }
        }

        /// What a key is judged by, and its figures: one variant per rule, the rule's
        /// file saying what each figure means.
        #[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum Rule {
            $($kind($file::$kind),)*
        }

        impl Rule {
            /// The figures of a watcher's definition, made at `created`.
            fn of(spec: &WatcherSpec, created: Second) -> Rule {
                match spec.rule {
                    $(RuleKind::$kind => Rule::$kind($file::$kind::of(spec, created)),)*
                }
            }

            fn judge(&self) -> &dyn Judge {
                match self {
                    $(Rule::$kind(rule) => rule,)*
                }
            }
        }

        /// A rule's words, by its kind: a firing read back from the journal knows its
        /// kind and figures, not its watcher's rule.
        pub(super) fn wording(kind: RuleKind) -> &'static dyn Wording {
            match kind {
                $(RuleKind::$kind => &$file::Words,)*
            }
        }
    };
}

every_rule!(rules);

/// What a rule decides, over its figures. A rule decided on the clock says when each
/// key is judged next (`DueKey::wait`, `WatcherKey::schedule`).
trait Judge {
    /// The window the store keeps a key's events for, if the rule has one.
    fn kept_window(&self) -> Option<u64>;

    /// Whether the rule is decided on the clock (`on_due`), at least in part.
    fn on_the_clock(&self) -> bool {
        false
    }

    /// `events` of a key seen at `now`, on the watcher's counter of it: whether it fires.
    fn on_count(
        &self,
        cooling: &Cooling,
        at: &mut WatcherKey<'_>,
        events: u64,
        now: Second,
    ) -> Option<Verdict>;

    /// The hashes of the watched value seen for `key` at `now`: whether the key fires.
    /// None for a rule that ships no values.
    fn on_values(
        &self,
        _cooling: &Cooling,
        _store: &mut dyn CounterStore,
        _watcher: Uuid,
        _key: &Key,
        _hashes: &[u64],
        _now: Second,
    ) -> Option<Verdict> {
        None
    }

    /// A key come up on the clock: whether it fires.
    fn on_due(&self, _cooling: &Cooling, _due: &mut DueKey<'_, '_, '_>) -> Option<Verdict> {
        None
    }
}

/// What a rule says (rules.md, "Firings"; alerts.md): read from the watcher's
/// definition, or from the firing alone once it is journalled.
pub(super) trait Wording {
    /// The firing's `text`.
    fn text(&self, said: &Said<'_>) -> String;

    /// The firing's figures of this rule.
    fn figures(&self, _said: &Said<'_>) -> RuleFigures {
        RuleFigures::default()
    }

    /// The e-mail's lines after `Rule`.
    fn figure_lines(&self, firing: &Reported<'_>) -> Vec<(&'static str, String)>;

    /// The live state's `description`, before its window and its key's fields.
    fn description(&self, spec: &WatcherSpec) -> String;
}

/// A rule's figures as a command action's `EVENTSD_*` variables.
trait FigureEnv {
    /// Adds the figures the firing carries to `env`.
    fn env(&self, env: &mut Vec<(&'static str, String)>);
}

/// The figures of a rule whose firings report only those every firing has (`count`,
/// `threshold`, `window_secs`, `resolved`): its file's `Figures`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct NoFigures {}

impl FigureEnv for NoFigures {
    fn env(&self, _env: &mut Vec<(&'static str, String)>) {}
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

impl RuleParams {
    /// The figures of a watcher's definition, made at `created` (seconds since the
    /// epoch: `Entry::created_secs`, 0 when unknown), checked by
    /// `registry::validation::watcher::check` (a figure missing from a damaged
    /// `registry.json` counts as 1).
    pub fn of(spec: &WatcherSpec, created: Second) -> RuleParams {
        RuleParams {
            rule: Rule::of(spec, created),
            cooldown_secs: spec.cooldown_secs,
            cooldown_max_secs: spec.cooldown_max_secs,
        }
    }

    /// The window the store keeps a key's events for, if the rule has one: spike keeps
    /// two (the current one and the one before).
    pub fn window_secs(&self) -> Option<u64> {
        self.rule.judge().kept_window()
    }

    /// For a rule decided on the clock, first seen at `first_seen`: the end of its grace,
    /// a window later (the Redis Function's `tick` counts from its own first sight).
    pub fn grace_until(&self, first_seen: Second) -> Second {
        first_seen.saturating_add(self.window_secs().unwrap_or(0))
    }

    /// cardinality: the values a key keeps (`RuleState::see_all`); None for the other
    /// rules, which keep none.
    pub fn kept_values(&self) -> Option<usize> {
        match &self.rule {
            Rule::Cardinality(rule) => Some(rule.kept().max(1)),
            _ => None,
        }
    }

    /// Whether the rule is decided on the clock (`on_tick`), at least in part.
    pub fn on_the_clock(&self) -> bool {
        self.rule.judge().on_the_clock()
    }

    /// `events` of a key seen at `now`, on the watcher's counter of it: whether it fires.
    pub fn on_count(&self, at: &mut WatcherKey<'_>, events: u64, now: Second) -> Option<Verdict> {
        self.rule.judge().on_count(&self.cooling(), at, events, now)
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
        (self.rule.judge()).on_values(&self.cooling(), store, watcher, key, hashes, now)
    }

    fn cooling(&self) -> Cooling {
        Cooling {
            secs: self.cooldown_secs,
            max_secs: self.cooldown_max_secs,
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

    /// The keys of `watcher` that fire on the clock at `now`, of at most `budget` keys due
    /// (less the keys judged): none for a rule decided when counts arrive. Costs the keys
    /// due, not the keys held.
    pub fn on_tick(
        &self,
        store: &mut dyn CounterStore,
        (watcher, now): (Uuid, Second),
        clock: &OnTheClock,
        budget: &mut usize,
    ) -> Vec<(Key, Verdict)> {
        if !self.on_the_clock() {
            return Vec::new();
        }
        let (judge, cooling) = (self.rule.judge(), self.cooling());
        let mut fired = Vec::new();
        *budget -= store.judge_due(watcher, now, *budget, &mut |at| {
            if let Some(verdict) = judge.on_due(&cooling, &mut DueKey::new(at, now, clock)) {
                fired.push((at.key(), verdict));
            }
        });
        fired
    }
}

/// A firing as its rule lists it in an e-mail (`Wording::figure_lines`): the figures
/// every firing has, and the rules' own. A view, so that the rules never name `Firing`,
/// which carries their figures.
pub(super) struct Reported<'a> {
    pub count: u64,
    pub threshold: u64,
    pub window_secs: Option<u64>,
    pub resolved: bool,
    pub figures: &'a RuleFigures,
}

impl Reported<'_> {
    /// The lines a rule over a window ends with: the window, and whether the key
    /// recovered.
    pub(super) fn window_lines(&self, lines: &mut Vec<(&'static str, String)>) {
        if let Some(window) = self.window_secs {
            lines.push(("Window", format!("the last {window} s")));
        }
        if self.resolved {
            lines.push(("Resolved", "yes: the key is heard from again".to_string()));
        }
    }
}

/// `field=value, field=value`.
pub(super) fn shown(fields: &Value) -> String {
    match fields {
        Value::Object(fields) => {
            let shown: Vec<String> = fields.iter().map(|(f, v)| format!("{f}={v}")).collect();
            shown.join(", ")
        }
        _ => String::new(),
    }
}

/// What a rule's `Wording::text` words a firing from.
pub(super) struct Said<'a> {
    pub event: &'a str,
    pub spec: &'a WatcherSpec,
    /// ` for field=value, field=value` for a `fields` watcher's key; empty for `single`.
    pub for_key: &'a str,
    /// new_value: the value seen for the first time (`{field: value}`).
    pub value: Option<&'a Value>,
    pub verdict: Verdict,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each rule's figures at the top level of the firing document, and as
    /// `EVENTSD_*` variables.
    #[test]
    fn a_rule_s_figures_are_the_firing_s_own_fields_and_its_variables() {
        let mut figures = RuleFigures::default();
        figures.spike.current = Some(96);
        figures.cardinality.max_distinct = Some(20);
        figures.new_value.value = Some(serde_json::json!({"country": "NZ"}));
        let document = serde_json::to_string(&figures).unwrap();
        assert_eq!(
            document,
            r#"{"current":96,"max_distinct":20,"value":{"country":"NZ"}}"#
        );
        assert_eq!(
            serde_json::from_str::<RuleFigures>(&document).unwrap(),
            figures
        );
        let env = figures.env();
        let expected = [
            ("EVENTSD_CURRENT", "96"),
            ("EVENTSD_MAX_DISTINCT", "20"),
            ("EVENTSD_VALUE", r#"{"country":"NZ"}"#),
        ];
        let expected: Vec<(&str, String)> =
            expected.iter().map(|&(n, v)| (n, v.to_string())).collect();
        assert_eq!(env, expected);
    }
}
