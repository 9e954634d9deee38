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
#[path = "rules/rows.rs"]
mod rows;

use common::redis::RedisServer;
use std::collections::HashSet;
use std::hash::{Hash, Hasher};

use eventsd::cluster::{
    CountReply, FUNCTIONS, TickReply, count_command, tick_answer, tick_command,
};
use eventsd::protocol::cluster::CountCall;
use eventsd::registry::WatcherSpec;
use eventsd::watch::rule::{OnTheClock, RuleParams};
use eventsd::watch::store::{CounterStore, MemoryStore};
use eventsd::watch::{Key, SharedCount};
use uuid::Uuid;

/// A firing: (second, key, count, previous window's count (spike), resolved).
pub(crate) type Fired = (u64, &'static str, u64, u64, bool);

pub(crate) fn fired(second: u64, key: &'static str, count: u64) -> Fired {
    (second, key, count, 0, false)
}

pub(crate) fn resolved(second: u64, key: &'static str, count: u64) -> Fired {
    (second, key, count, 0, true)
}

/// A spike's firing: the current window's count and the previous one's.
pub(crate) fn spiked(second: u64, key: &'static str, current: u64, previous: u64) -> Fired {
    (second, key, current, previous, false)
}

/// A row: a watcher's rule, events, and the firings they must make.
#[derive(Default)]
pub(crate) struct Scenario {
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
    /// A rule decided on the clock: the seconds the watcher is first seen again (a
    /// restart of the master: `kept` watched again, before that second's events).
    restarts: Vec<u64>,
    /// A rule decided on the clock: [from, to) when the master (in a cluster, every
    /// node) was down: no events, no ticks; started again at `to`.
    down: Option<(u64, u64)>,
    fired: Vec<Fired>,
}

impl Scenario {
    /// A rule decided when counts arrive.
    pub(crate) fn on_counts(
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
    pub(crate) fn on_the_clock(
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
    pub(crate) fn with_values(self, values: Vec<(u64, &'static str, &'static str)>) -> Scenario {
        Scenario { values, ..self }
    }

    /// The same row with the master restarted at `restarts`.
    pub(crate) fn restarted_at(self, restarts: Vec<u64>) -> Scenario {
        Scenario { restarts, ..self }
    }

    /// The same row with the master (every node) down from `from` to `to`, started
    /// again then.
    pub(crate) fn down_between(mut self, (from, to): (u64, u64)) -> Scenario {
        self.restarts.push(to);
        Scenario {
            down: Some((from, to)),
            ..self
        }
    }

    /// The same row for a watcher created at `created` (new_value).
    pub(crate) fn created_at(self, created: u64) -> Scenario {
        Scenario { created, ..self }
    }
}

/// `key` every `step` seconds from `from` to `to` (included), `events` each.
pub(crate) fn every(
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
pub(crate) fn seen(
    second: u64,
    key: &'static str,
    values: &[&'static str],
) -> Vec<(u64, &'static str, &'static str)> {
    values.iter().map(|&value| (second, key, value)).collect()
}

fn scenarios() -> Vec<Scenario> {
    use rows::*;
    [threshold(), flatline(), spike(), cardinality(), new_value()]
        .into_iter()
        .flatten()
        .collect()
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
        let kept = |key: &str| self.kept.contains(key);
        let clock = OnTheClock {
            grace_until: self.grace_until,
            kept: &kept,
        };
        rule.on_tick(&mut self.store, (watcher, now), &clock, &mut { usize::MAX })
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
        let crossing = call.answered(replies).crossings.pop()?;
        Some((crossing.count, crossing.previous, crossing.resolved))
    }

    fn first_sight(&mut self, _: RuleParams, _: Uuid, kept: &[&'static str], _: u64) {
        self.kept = Some(kept.iter().map(|&key| Key::from(key)).collect());
    }

    fn tick(&mut self, rule: RuleParams, watcher: Uuid, now: u64) -> Vec<(String, Outcome)> {
        let kept = self.kept.take();
        let replies: Vec<TickReply> =
            tick_command(PREFIX, watcher, &rule, kept.as_deref(), Some(now))
                .query(&mut self.connection)
                .expect("eventsd_tick answers");
        tick_answer(watcher, replies)
            .crossings
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
        // The seconds as the row lists its events or its values (a row may step the
        // clock back), in order when it lists both.
        let events = scenario.events.iter().map(|e| e.0);
        let mut seconds: Vec<u64> = events.chain(scenario.values.iter().map(|v| v.0)).collect();
        if !scenario.events.is_empty() && !scenario.values.is_empty() {
            seconds.sort_unstable();
        }
        let mut seen = HashSet::new();
        seconds.retain(|&second| seen.insert(second));
        for second in seconds {
            count_at(engine, second, &mut fired);
        }
        return fired;
    }
    engine.first_sight(rule, watcher, &scenario.kept, scenario.start);
    let down = |second: u64| {
        scenario
            .down
            .is_some_and(|(from, to)| (from..to).contains(&second))
    };
    for second in (scenario.start..=scenario.until).filter(|&s| !down(s)) {
        if scenario.restarts.contains(&second) {
            engine.first_sight(rule, watcher, &scenario.kept, second);
        }
        count_at(engine, second, &mut fired);
        // The keys of one tick come in no set order (the memory store files them by
        // second, Redis by score and text): listed by key.
        let mut ticked: Vec<Fired> = (engine.tick(rule, watcher, second).into_iter())
            .map(|(key, (count, previous, _))| (second, key_of(&key), count, previous, false))
            .collect();
        ticked.sort_unstable_by_key(|fired| fired.1);
        fired.extend(ticked);
    }
    fired
}

/// The memory store's engine and a Redis of the test's own.
fn engines() -> Vec<Box<dyn Engine>> {
    let memory = Memory {
        store: MemoryStore::new(1000),
        grace_until: 0,
        kept: HashSet::new(),
    };
    vec![Box::new(memory), Box::new(Redis::start())]
}

#[test]
fn every_scenario_fires_alike_on_the_memory_store_and_in_redis() {
    let mut engines = engines();
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

/// A hostile key: 20,000 new values in one call, 20,000 others the next second, then
/// 20,000 more once the first have left the window, past a rule that keeps 10,000. Both
/// engines fire once, with the values kept, and judge each call in one trim, not in a
/// scan of the key per value (the time each call took is printed, not judged).
#[test]
fn a_call_of_more_values_than_a_key_keeps_fires_alike_on_both_engines() {
    let rule = rule_of(
        r#"{"rule": "cardinality", "field": "user", "window_secs": 10, "max_distinct": 9999}"#,
        0,
    );
    for mut engine in engines() {
        let watcher = Uuid::new_v4();
        let mut fired = Vec::new();
        for (second, from) in [(1000, 0), (1001, 20_000), (1011, 40_000)] {
            let hashes = (from..from + 20_000).map(|n: u32| hash_of(&n.to_string()));
            let started = std::time::Instant::now();
            let counted = Counted::Values(hashes.collect());
            let outcome = engine.count(rule, watcher, "k", counted, second);
            eprintln!(
                "{}: 20,000 values at {second} in {:?}",
                engine.name(),
                started.elapsed()
            );
            fired.push(outcome.map(|(count, _, _)| count));
        }
        assert_eq!(fired, [Some(10_000), None, None], "{}", engine.name());
    }
}
