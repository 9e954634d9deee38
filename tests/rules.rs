//! One table of scenarios for the watchers' rules (rules.md): events at given seconds →
//! the firings expected, run against both engines that judge a key, each on a clock the
//! scenario sets: the master's (`RuleParams::on_count` over a `MemoryStore`) and the
//! Redis Function (`eventsd_count` in a real `redis-server` the test starts), both fed
//! the same `RuleParams`, made from the watcher definition as the master makes them. A
//! change to one engine alone fails a row.
//!
//! A row is one of two kinds: a rule decided when counts arrive (`on_counts`: each
//! second's events and values, in order) or decided on the clock, at least in part
//! (`on_the_clock`: a tick every second from the watcher's first sight, after that
//! second's events).

mod common;

use common::redis::RedisServer;
use std::collections::HashSet;
use std::hash::{Hash, Hasher};

use eventsd::cluster::{CountReply, FUNCTIONS, count_command, tick_command, tick_crossings};
use eventsd::protocol::cluster::CountCall;
use eventsd::registry::WatcherSpec;
use eventsd::watch::rule::{OnTheClock, RuleParams};
use eventsd::watch::store::{CounterStore, MemoryStore};
use eventsd::watch::{Key, SharedCount};
use uuid::Uuid;

/// A firing: (second, key, count, previous window's count (spike), resolved).
type Fired = (u64, &'static str, u64, u64, bool);

fn fired(second: u64, key: &'static str, count: u64) -> Fired {
    (second, key, count, 0, false)
}

fn resolved(second: u64, key: &'static str, count: u64) -> Fired {
    (second, key, count, 0, true)
}

/// A spike's firing: the current window's count and the previous one's.
fn spiked(second: u64, key: &'static str, current: u64, previous: u64) -> Fired {
    (second, key, current, previous, false)
}

/// A row: a watcher's rule, events, and the firings they must make.
#[derive(Default)]
struct Scenario {
    name: &'static str,
    /// The rule's fields of the watcher definition (name, aggregator and action apart).
    rule: &'static str,
    /// new_value: the second the watcher was created (its learning starts then).
    created: u64,
    /// A rule decided on the clock: the keys it always watches (`single`'s, `expect`'s),
    /// the second the watcher is first seen, and the last second it is judged (a tick
    /// every second in between, after that second's events).
    kept: Vec<&'static str>,
    start: u64,
    until: u64,
    /// (second, key, events), in order.
    events: Vec<(u64, &'static str, u64)>,
    /// cardinality: (second, key, value), in order.
    values: Vec<(u64, &'static str, &'static str)>,
    fired: Vec<Fired>,
}

impl Scenario {
    /// A rule decided when counts arrive.
    fn on_counts(
        name: &'static str,
        rule: &'static str,
        events: Vec<(u64, &'static str, u64)>,
        fired: Vec<Fired>,
    ) -> Scenario {
        Scenario {
            name,
            rule,
            events,
            fired,
            ..Scenario::default()
        }
    }

    /// A rule decided on the clock, from `start` to `until`, `kept` watched from `start`.
    fn on_the_clock(
        name: &'static str,
        rule: &'static str,
        (kept, start, until): (Vec<&'static str>, u64, u64),
        events: Vec<(u64, &'static str, u64)>,
        fired: Vec<Fired>,
    ) -> Scenario {
        Scenario {
            name,
            rule,
            kept,
            start,
            until,
            events,
            fired,
            ..Scenario::default()
        }
    }

    /// The same row with values seen (cardinality).
    fn with_values(self, values: Vec<(u64, &'static str, &'static str)>) -> Scenario {
        Scenario { values, ..self }
    }

    /// The same row for a watcher created at `created` (new_value).
    fn created_at(self, created: u64) -> Scenario {
        Scenario { created, ..self }
    }
}

/// `key` every `step` seconds from `from` to `to` (included), `events` each.
fn every(
    step: usize,
    from: u64,
    to: u64,
    key: &'static str,
    events: u64,
) -> Vec<(u64, &'static str, u64)> {
    (from..=to)
        .step_by(step)
        .map(|s| (s, key, events))
        .collect()
}

/// `values` of `key`, one each, all at `second`.
fn seen(
    second: u64,
    key: &'static str,
    values: &[&'static str],
) -> Vec<(u64, &'static str, &'static str)> {
    values.iter().map(|&value| (second, key, value)).collect()
}

fn scenarios() -> Vec<Scenario> {
    [threshold(), flatline(), spike(), cardinality(), new_value()]
        .into_iter()
        .flatten()
        .collect()
}

fn threshold() -> Vec<Scenario> {
    vec![
        Scenario::on_counts(
            "threshold: exceeded once, then the count starts again from zero",
            r#"{"threshold": 3}"#,
            every(1, 1000, 1000, "k", 1).repeat(8),
            vec![fired(1000, "k", 4), fired(1000, "k", 4)],
        ),
        Scenario::on_counts(
            "threshold: reached exactly, it does not fire",
            r#"{"threshold": 3}"#,
            vec![(1000, "k", 1), (1001, "k", 2)],
            vec![],
        ),
        Scenario::on_counts(
            "threshold: one batch of many events fires once with their count",
            r#"{"threshold": 3}"#,
            vec![(1000, "k", 50)],
            vec![fired(1000, "k", 50)],
        ),
        Scenario::on_counts(
            "threshold: an event window_secs old has left the window",
            r#"{"threshold": 2, "window_secs": 10}"#,
            vec![(100, "k", 1), (105, "k", 1), (110, "k", 1), (111, "k", 1)],
            vec![fired(111, "k", 3)],
        ),
        Scenario::on_counts(
            "threshold: an event one second younger than the window still counts",
            r#"{"threshold": 2, "window_secs": 10}"#,
            vec![(100, "k", 2), (109, "k", 1)],
            vec![fired(109, "k", 3)],
        ),
        Scenario::on_counts(
            "threshold: without a window the count runs until it fires",
            r#"{"threshold": 2}"#,
            vec![
                (0, "k", 1),
                (5000, "k", 1),
                (10_000, "k", 1),
                (10_001, "k", 1),
            ],
            vec![fired(10_000, "k", 3)],
        ),
        Scenario::on_counts(
            "threshold: keys count apart",
            r#"{"threshold": 1}"#,
            vec![(1, "a", 1), (1, "b", 1), (2, "a", 1), (3, "c", 5)],
            vec![fired(2, "a", 2), fired(3, "c", 5)],
        ),
        Scenario::on_counts(
            "cooldown: no firing while cooling, the events still count",
            r#"{"threshold": 1, "cooldown_secs": 60}"#,
            vec![
                (1000, "k", 2),
                (1010, "k", 2),
                (1059, "k", 1),
                (1060, "k", 1),
            ],
            vec![fired(1000, "k", 2), fired(1060, "k", 4)],
        ),
        Scenario::on_counts(
            "cooldown: exponential realert doubles a busy cooldown up to its maximum, \
             and a quiet one resets it",
            r#"{"threshold": 1, "cooldown_secs": 10, "cooldown_max_secs": 40}"#,
            // Crossings every 5 s until 1100, one at 1250, then every 5 s from 1300.
            [
                every(5, 1000, 1095, "k", 2),
                every(5, 1250, 1250, "k", 2),
                every(5, 1300, 1315, "k", 2),
            ]
            .concat(),
            // Busy cooldowns: 10, 20, 40, 40 (the cap); the one from 1070 saw crossings,
            // so 1250's is 40 again; it stays quiet, so 1300's is back to 10.
            vec![
                fired(1000, "k", 2),
                fired(1010, "k", 4),
                fired(1030, "k", 8),
                fired(1070, "k", 16),
                fired(1250, "k", 12),
                fired(1300, "k", 2),
                fired(1310, "k", 4),
            ],
        ),
    ]
}

const HEARTBEAT: &str = r#"{"rule": "flatline", "threshold": 1, "window_secs": 10}"#;

fn flatline() -> Vec<Scenario> {
    vec![
        Scenario::on_the_clock(
            "flatline: a key heard from within every window never fires",
            HEARTBEAT,
            (vec![""], 1000, 1030),
            [1000, 1005, 1012, 1019, 1025].map(|s| (s, "", 1)).to_vec(),
            vec![],
        ),
        Scenario::on_the_clock(
            "flatline: a key fires a window after its last event, once per silence",
            HEARTBEAT,
            (vec![""], 990, 1040),
            vec![(995, "", 1), (1000, "", 1)],
            vec![fired(1010, "", 0)],
        ),
        Scenario::on_the_clock(
            "flatline: after a start, no key fires before one full window",
            HEARTBEAT,
            (vec![""], 1000, 1015),
            vec![],
            vec![fired(1010, "", 0)],
        ),
        Scenario::on_the_clock(
            "flatline: a key first heard during the grace, below its threshold, waits \
             for the grace's end",
            r#"{"rule": "flatline", "threshold": 3, "window_secs": 10}"#,
            (vec![], 1000, 1015),
            vec![(1002, "a", 1)],
            vec![fired(1010, "a", 1)],
        ),
        Scenario::on_the_clock(
            "flatline: the count over the window is what falls below the threshold",
            r#"{"rule": "flatline", "threshold": 3, "window_secs": 10}"#,
            (vec![""], 1000, 1015),
            vec![(1000, "", 1), (1001, "", 1), (1002, "", 1)],
            vec![fired(1010, "", 2)],
        ),
        Scenario::on_the_clock(
            "flatline: a recovery fires with send_resolved, the next silence fires again",
            r#"{"rule": "flatline", "threshold": 1, "window_secs": 10, "send_resolved": true}"#,
            (vec![""], 1000, 1040),
            vec![(1000, "", 1), (1015, "", 1)],
            vec![
                fired(1010, "", 0),
                resolved(1015, "", 1),
                fired(1025, "", 0),
            ],
        ),
        Scenario::on_the_clock(
            "flatline: an expected key that never sent fires, so does a key seen then silent",
            HEARTBEAT,
            (vec!["c"], 1000, 1030),
            [every(5, 1000, 1030, "a", 1), vec![(1000, "b", 1)]].concat(),
            vec![fired(1010, "b", 0), fired(1010, "c", 0)],
        ),
        Scenario::on_the_clock(
            "flatline: a key silent forget_after_secs after it fired is dropped, an \
             expected one is kept",
            r#"{"rule": "flatline", "threshold": 1, "window_secs": 10,
                "forget_after_secs": 20, "send_resolved": true}"#,
            (vec!["c"], 1000, 1050),
            vec![(1000, "b", 1), (1035, "b", 1), (1035, "c", 1)],
            vec![
                fired(1010, "b", 0),
                fired(1010, "c", 0),
                resolved(1035, "c", 1),
                fired(1045, "b", 0),
                fired(1045, "c", 0),
            ],
        ),
        Scenario::on_the_clock(
            "flatline: with a cooldown, a key still silent fires again once it is over",
            r#"{"rule": "flatline", "threshold": 1, "window_secs": 10, "cooldown_secs": 15}"#,
            (vec![""], 1000, 1045),
            vec![],
            vec![fired(1010, "", 0), fired(1025, "", 0), fired(1040, "", 0)],
        ),
        Scenario::on_the_clock(
            "flatline: silent again within its cooldown, a key waits for its end",
            r#"{"rule": "flatline", "threshold": 1, "window_secs": 10, "cooldown_secs": 30}"#,
            (vec![""], 1000, 1045),
            vec![(1012, "", 1)],
            vec![fired(1010, "", 0), fired(1040, "", 0)],
        ),
    ]
}

const SPIKE_UP: &str = r#"{"rule": "spike", "window_secs": 10, "ratio": 3, "direction": "up"}"#;
const SPIKE_DOWN: &str = r#"{"rule": "spike", "window_secs": 10, "ratio": 3, "direction": "down"}"#;

fn spike() -> Vec<Scenario> {
    vec![
        Scenario::on_counts(
            "spike: a window three times the one before fires once, with both counts, \
             never before the key's baseline of two windows",
            SPIKE_UP,
            [every(1, 1000, 1029, "k", 1), every(1, 1030, 1039, "k", 4)].concat(),
            vec![spiked(1036, "k", 31, 10)],
        ),
        Scenario::on_counts(
            "spike: a steady rate never fires, nor does a rise short of the ratio",
            SPIKE_UP,
            [every(1, 1000, 1029, "k", 2), every(1, 1030, 1039, "k", 5)].concat(),
            vec![],
        ),
        Scenario::on_counts(
            "spike: the previous window must hold min_previous events",
            r#"{"rule": "spike", "window_secs": 10, "ratio": 3, "direction": "up",
                "min_previous": 5}"#,
            vec![
                (1000, "k", 1),
                (1015, "k", 4),
                (1025, "k", 50),
                (1040, "k", 5),
                (1050, "k", 16),
            ],
            vec![spiked(1050, "k", 16, 5)],
        ),
        Scenario::on_counts(
            "spike: an event window_secs old is in the previous window, not the current",
            SPIKE_UP,
            vec![(1000, "k", 1), (1020, "k", 2), (1030, "k", 6)],
            vec![spiked(1030, "k", 6, 2)],
        ),
        Scenario::on_counts(
            "spike: once per spike; again after the condition stopped holding",
            SPIKE_UP,
            vec![
                (1000, "k", 1),
                (1020, "k", 2),
                (1030, "k", 6),
                (1031, "k", 1),
                (1045, "k", 3),
                (1055, "k", 9),
            ],
            vec![spiked(1030, "k", 6, 2), spiked(1055, "k", 9, 3)],
        ),
        Scenario::on_counts(
            "spike: with a cooldown, a spike that holds fires again once it is over",
            r#"{"rule": "spike", "window_secs": 10, "ratio": 3, "direction": "up",
                "cooldown_secs": 5}"#,
            vec![
                (1000, "k", 1),
                (1020, "k", 2),
                (1030, "k", 6),
                (1032, "k", 1),
                (1035, "k", 1),
            ],
            vec![spiked(1030, "k", 6, 2), spiked(1035, "k", 8, 2)],
        ),
        Scenario::on_the_clock(
            "spike: a drop is decided on the clock, once, when a window moves",
            SPIKE_DOWN,
            (vec![], 1000, 1060),
            [every(1, 1000, 1029, "k", 3), every(1, 1030, 1039, "k", 1)].concat(),
            vec![spiked(1039, "k", 10, 30)],
        ),
        Scenario::on_the_clock(
            "spike: events that stop drop on their way to none; none is min_current's",
            SPIKE_DOWN,
            (vec![], 1000, 1060),
            every(1, 1000, 1029, "k", 3),
            vec![spiked(1036, "k", 9, 30)],
        ),
    ]
}

const CARDINALITY: &str =
    r#"{"rule": "cardinality", "field": "user", "window_secs": 10, "max_distinct": 3}"#;

fn cardinality() -> Vec<Scenario> {
    vec![
        Scenario::on_counts(
            "cardinality: more than max_distinct values fire once, with their number",
            CARDINALITY,
            vec![],
            vec![fired(1002, "k", 4)],
        )
        .with_values(
            [
                seen(1000, "k", &["u1", "u2", "u3"]),
                seen(1001, "k", &["u1"]),
                seen(1002, "k", &["u4", "u5"]),
            ]
            .concat(),
        ),
        Scenario::on_counts(
            "cardinality: max_distinct values, seen again and again, do not fire; keys \
             count apart",
            CARDINALITY,
            vec![],
            vec![],
        )
        .with_values(
            [
                seen(1000, "a", &["u1", "u2", "u3"]),
                seen(1005, "a", &["u3", "u2", "u1"]),
                seen(1006, "b", &["u4"]),
            ]
            .concat(),
        ),
        Scenario::on_counts(
            "cardinality: a value window_secs old has left the window, one a second \
             younger has not",
            CARDINALITY,
            vec![],
            vec![fired(1019, "k", 4)],
        )
        .with_values(
            [
                seen(1000, "k", &["u1", "u2", "u3"]),
                seen(1010, "k", &["u4"]),
                seen(1019, "k", &["u5", "u6", "u7"]),
            ]
            .concat(),
        ),
        Scenario::on_counts(
            "cardinality: once per episode; again after it ended",
            CARDINALITY,
            vec![],
            vec![fired(1000, "k", 4), fired(1020, "k", 4)],
        )
        .with_values(
            [
                seen(1000, "k", &["u1", "u2", "u3", "u4", "u5"]),
                seen(1020, "k", &["u5", "u6", "u7", "u8"]),
            ]
            .concat(),
        ),
        Scenario::on_the_clock(
            "cardinality: fewer than min_distinct values is decided on the clock, once \
             per episode, after the grace",
            r#"{"rule": "cardinality", "field": "user", "window_secs": 10, "min_distinct": 2}"#,
            (vec![], 1000, 1040),
            vec![],
            vec![fired(1010, "a", 1), fired(1015, "a", 1)],
        )
        .with_values(
            [
                seen(1000, "a", &["u1", "u2"]),
                seen(1005, "a", &["u1"]),
                seen(1012, "a", &["u3"]),
            ]
            .concat(),
        ),
    ]
}

const FR: &str = r#"["FR"]"#;
const NZ: &str = r#"["NZ"]"#;

fn new_value() -> Vec<Scenario> {
    vec![
        Scenario::on_counts(
            "new_value: values seen while learning are known; a new one fires once; one \
             not seen for remember_secs is new again; a missing one never fires",
            r#"{"rule": "new_value", "field": "country", "learn_secs": 10, "remember_secs": 100}"#,
            vec![
                (1000, FR, 1),
                (1009, FR, 1),
                (1010, NZ, 1),
                (1011, FR, 1),
                (1012, NZ, 2),
                (1200, FR, 1),
                (1201, "[null]", 1),
            ],
            vec![fired(1010, NZ, 1), fired(1200, FR, 1)],
        )
        .created_at(1000),
        Scenario::on_counts(
            "new_value: without learn_secs, the first value fires",
            r#"{"rule": "new_value", "field": "country"}"#,
            vec![(1000, FR, 3), (1001, FR, 1), (1001, NZ, 1)],
            vec![fired(1000, FR, 3), fired(1001, NZ, 1)],
        )
        .created_at(1000),
    ]
}

/// What a key got at a second: events, or the hashes of values seen (cardinality).
#[derive(Clone)]
enum Counted {
    Events(u64),
    Values(Vec<u64>),
}

/// What a key's firing reports: (count, previous window's count, resolved).
type Outcome = (u64, u64, bool);

/// What judges a key: either engine, on the scenario's clock.
trait Engine {
    fn name(&self) -> &'static str;
    /// What `key` got at `now`: the firing, if the key fired.
    fn count(
        &mut self,
        rule: RuleParams,
        watcher: Uuid,
        key: &str,
        counted: Counted,
        now: u64,
    ) -> Option<Outcome>;
    /// A watcher decided on the clock, first seen at `now`: `kept` watched from then on.
    fn first_sight(&mut self, rule: RuleParams, watcher: Uuid, kept: &[&'static str], now: u64);
    /// The firings of its keys due at `now`: (key, outcome) each.
    fn tick(&mut self, rule: RuleParams, watcher: Uuid, now: u64) -> Vec<(String, Outcome)>;
}

struct Memory {
    store: MemoryStore,
    grace_until: u64,
    kept: HashSet<Key>,
}

impl Engine for Memory {
    fn name(&self) -> &'static str {
        "the memory store"
    }

    fn count(
        &mut self,
        rule: RuleParams,
        watcher: Uuid,
        key: &str,
        counted: Counted,
        now: u64,
    ) -> Option<Outcome> {
        let key = Key::from(key);
        let verdict = match counted {
            Counted::Events(events) => {
                let mut verdict = None;
                let keys = [(key, events)];
                (self.store).count_set(&[watcher], &keys, &mut |_, mut at, events| {
                    verdict = rule.on_count(&mut at, events, now);
                });
                verdict
            }
            Counted::Values(hashes) => rule.on_values(&mut self.store, watcher, &key, &hashes, now),
        }?;
        Some((verdict.count, verdict.previous, verdict.resolved))
    }

    fn first_sight(&mut self, rule: RuleParams, watcher: Uuid, kept: &[&'static str], now: u64) {
        self.kept = kept.iter().map(|&key| Key::from(key)).collect();
        self.grace_until = rule.grace_until(now);
        rule.on_first_sight(&mut self.store, watcher, self.kept.iter(), self.grace_until);
    }

    fn tick(&mut self, rule: RuleParams, watcher: Uuid, now: u64) -> Vec<(String, Outcome)> {
        let kept = |key: &Key| self.kept.contains(key);
        let clock = OnTheClock {
            grace_until: self.grace_until,
            kept: &kept,
        };
        rule.on_tick(&mut self.store, watcher, now, &clock)
            .into_iter()
            .map(|(key, v)| (key.as_str().to_string(), (v.count, v.previous, false)))
            .collect()
    }
}

struct Redis {
    connection: ::redis::Connection,
    /// Keys for the next tick to watch from then on.
    kept: Option<Vec<Key>>,
    _server: RedisServer,
}

const PREFIX: &str = "scenarios";

impl Redis {
    fn start() -> Redis {
        let server = RedisServer::start();
        let mut connection = ::redis::Client::open(server.url())
            .and_then(|client| client.get_connection())
            .expect("a connection to the test's redis-server");
        ::redis::cmd("FUNCTION")
            .arg("LOAD")
            .arg("REPLACE")
            .arg(FUNCTIONS)
            .query::<::redis::Value>(&mut connection)
            .expect("eventsd's Functions load");
        Redis {
            connection,
            kept: None,
            _server: server,
        }
    }
}

impl Engine for Redis {
    fn name(&self) -> &'static str {
        "the Redis Function"
    }

    fn count(
        &mut self,
        rule: RuleParams,
        watcher: Uuid,
        key: &str,
        counted: Counted,
        now: u64,
    ) -> Option<Outcome> {
        let (events, values) = match counted {
            Counted::Events(events) => (events, Vec::new()),
            Counted::Values(hashes) => (hashes.len() as u64, hashes),
        };
        let call = CountCall::new(vec![SharedCount {
            watcher,
            key: Key::from(key),
            events,
            rule,
            values,
        }]);
        let replies: Vec<CountReply> = count_command(PREFIX, &call, Some(now))
            .query(&mut self.connection)
            .expect("eventsd_count answers");
        let crossing = call.crossings(replies).pop()?;
        Some((crossing.count, crossing.previous, crossing.resolved))
    }

    fn first_sight(&mut self, _: RuleParams, _: Uuid, kept: &[&'static str], _: u64) {
        self.kept = Some(kept.iter().map(|&key| Key::from(key)).collect());
    }

    fn tick(&mut self, rule: RuleParams, watcher: Uuid, now: u64) -> Vec<(String, Outcome)> {
        let kept = self.kept.take();
        let replies = tick_command(PREFIX, watcher, &rule, kept.as_deref(), Some(now))
            .query(&mut self.connection)
            .expect("eventsd_tick answers");
        tick_crossings(watcher, replies)
            .into_iter()
            .map(|c| (c.key.as_str().to_string(), (c.count, c.previous, false)))
            .collect()
    }
}

/// The rule of a watcher holding `fields`, created at `created`, as the master makes it.
fn rule_of(fields: &str, created: u64) -> RuleParams {
    let mut definition: serde_json::Value = serde_json::from_str(fields).unwrap();
    let common = serde_json::json!({
        "name": "scenario",
        "aggregator": {"type": "single"},
        "action": {"type": "null"},
    });
    for (field, value) in common.as_object().unwrap() {
        definition[field] = value.clone();
    }
    let spec: WatcherSpec = serde_json::from_value(definition).unwrap();
    RuleParams::of(&spec, created)
}

/// A value's hash: any hash both engines get alike.
fn hash_of(value: &str) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

/// What each key got at `second`, in the scenario's order: events, then values.
fn counted_at(scenario: &Scenario, second: u64) -> Vec<(&'static str, Counted)> {
    let events = scenario.events.iter().filter(|e| e.0 == second);
    let values = scenario.values.iter().filter(|v| v.0 == second);
    events
        .map(|&(_, key, n)| (key, Counted::Events(n)))
        .chain(values.map(|&(_, key, value)| (key, Counted::Values(vec![hash_of(value)]))))
        .collect()
}

/// The firings `scenario` makes on `engine`, for a watcher of its own: each second's
/// events and values, then, for a rule decided on the clock, that second's tick.
fn run(engine: &mut dyn Engine, scenario: &Scenario) -> Vec<Fired> {
    let rule = rule_of(scenario.rule, scenario.created);
    let watcher = Uuid::new_v4();
    let key_of = |key: &str| -> &'static str {
        let events = scenario.events.iter().map(|e| e.1);
        let values = scenario.values.iter().map(|v| v.1);
        let mut named = events.chain(values).chain(scenario.kept.clone());
        named.find(|&k| k == key).unwrap_or("?")
    };
    let mut fired = Vec::new();
    let count_at = |engine: &mut dyn Engine, second: u64, fired: &mut Vec<Fired>| {
        for (key, counted) in counted_at(scenario, second) {
            if let Some((count, previous, resolved)) =
                engine.count(rule, watcher, key, counted, second)
            {
                fired.push((second, key, count, previous, resolved));
            }
        }
    };
    if !rule.on_the_clock() {
        let mut seconds: Vec<u64> = scenario.events.iter().map(|e| e.0).collect();
        seconds.extend(scenario.values.iter().map(|v| v.0));
        seconds.sort_unstable();
        seconds.dedup();
        for second in seconds {
            count_at(engine, second, &mut fired);
        }
        return fired;
    }
    engine.first_sight(rule, watcher, &scenario.kept, scenario.start);
    for second in scenario.start..=scenario.until {
        count_at(engine, second, &mut fired);
        for (key, (count, previous, _)) in engine.tick(rule, watcher, second) {
            fired.push((second, key_of(&key), count, previous, false));
        }
    }
    fired
}

#[test]
fn every_scenario_fires_alike_on_the_memory_store_and_in_redis() {
    let memory = Memory {
        store: MemoryStore::new(1000),
        grace_until: 0,
        kept: HashSet::new(),
    };
    let mut engines: Vec<Box<dyn Engine>> = vec![Box::new(memory), Box::new(Redis::start())];
    let mut wrong = Vec::new();
    for scenario in scenarios() {
        for engine in &mut engines {
            let fired = run(engine.as_mut(), &scenario);
            if fired != scenario.fired {
                wrong.push(format!(
                    "{} on {}: fired {fired:?}, expected {:?}",
                    scenario.name,
                    engine.name(),
                    scenario.fired
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}
