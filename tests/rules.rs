//! One table of scenarios for the watchers' rules (rules.md): events at given seconds →
//! the firings expected, run against both engines that judge a key, each on a clock the
//! scenario sets: the master's (`RuleParams::on_count` over a `MemoryStore`) and the
//! Redis Function (`eventsd_count` in a real `redis-server` the test starts), both fed
//! the same `RuleParams`, made from the watcher definition as the master makes them. A
//! change to one engine alone fails a row.

mod common;

use common::redis::RedisServer;
use std::collections::HashSet;

use eventsd::cluster::{FUNCTIONS, count_command, tick_command, tick_crossings};
use eventsd::protocol::cluster::CountCall;
use eventsd::registry::WatcherSpec;
use eventsd::watch::rule::{OnTheClock, RuleParams};
use eventsd::watch::store::{CounterStore, MemoryStore};
use eventsd::watch::{Key, SharedCount};
use uuid::Uuid;

/// A firing: (second, key, count, resolved).
type Fired = (u64, &'static str, u64, bool);

fn fired(second: u64, key: &'static str, count: u64) -> Fired {
    (second, key, count, false)
}

fn resolved(second: u64, key: &'static str, count: u64) -> Fired {
    (second, key, count, true)
}

/// A row: a watcher's rule, events, and the firings they must make.
#[derive(Default)]
struct Scenario {
    name: &'static str,
    /// The rule's fields of the watcher definition (name, aggregator and action apart).
    rule: &'static str,
    /// A rule decided on the clock: the keys it always watches (`single`'s, `expect`'s),
    /// the second the watcher is first seen, and the last second it is judged (a tick
    /// every second in between, after that second's events).
    kept: Vec<&'static str>,
    start: u64,
    until: u64,
    /// (second, key, events), in order.
    events: Vec<(u64, &'static str, u64)>,
    fired: Vec<Fired>,
}

fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "threshold: exceeded once, then the count starts again from zero",
            rule: r#"{"threshold": 3}"#,
            events: (0..8).map(|_| (1000, "k", 1)).collect(),
            fired: vec![fired(1000, "k", 4), fired(1000, "k", 4)],
            ..Scenario::default()
        },
        Scenario {
            name: "threshold: reached exactly, it does not fire",
            rule: r#"{"threshold": 3}"#,
            events: vec![(1000, "k", 1), (1001, "k", 2)],
            fired: vec![],
            ..Scenario::default()
        },
        Scenario {
            name: "threshold: one batch of many events fires once with their count",
            rule: r#"{"threshold": 3}"#,
            events: vec![(1000, "k", 50)],
            fired: vec![fired(1000, "k", 50)],
            ..Scenario::default()
        },
        Scenario {
            name: "threshold: an event window_secs old has left the window",
            rule: r#"{"threshold": 2, "window_secs": 10}"#,
            events: vec![(100, "k", 1), (105, "k", 1), (110, "k", 1), (111, "k", 1)],
            fired: vec![fired(111, "k", 3)],
            ..Scenario::default()
        },
        Scenario {
            name: "threshold: an event one second younger than the window still counts",
            rule: r#"{"threshold": 2, "window_secs": 10}"#,
            events: vec![(100, "k", 2), (109, "k", 1)],
            fired: vec![fired(109, "k", 3)],
            ..Scenario::default()
        },
        Scenario {
            name: "threshold: without a window the count runs until it fires",
            rule: r#"{"threshold": 2}"#,
            events: vec![
                (0, "k", 1),
                (5000, "k", 1),
                (10_000, "k", 1),
                (10_001, "k", 1),
            ],
            fired: vec![fired(10_000, "k", 3)],
            ..Scenario::default()
        },
        Scenario {
            name: "threshold: keys count apart",
            rule: r#"{"threshold": 1}"#,
            events: vec![(1, "a", 1), (1, "b", 1), (2, "a", 1), (3, "c", 5)],
            fired: vec![fired(2, "a", 2), fired(3, "c", 5)],
            ..Scenario::default()
        },
        Scenario {
            name: "cooldown: no firing while cooling, the events still count",
            rule: r#"{"threshold": 1, "cooldown_secs": 60}"#,
            events: vec![
                (1000, "k", 2),
                (1010, "k", 2),
                (1059, "k", 1),
                (1060, "k", 1),
            ],
            fired: vec![fired(1000, "k", 2), fired(1060, "k", 4)],
            ..Scenario::default()
        },
        Scenario {
            name: "cooldown: exponential realert doubles a busy cooldown up to its maximum, \
                   and a quiet one resets it",
            rule: r#"{"threshold": 1, "cooldown_secs": 10, "cooldown_max_secs": 40}"#,
            // Crossings every 5 s until 1100, one at 1250, then every 5 s from 1300.
            events: (1000..1100)
                .step_by(5)
                .chain([1250])
                .chain((1300..1320).step_by(5))
                .map(|second| (second, "k", 2))
                .collect(),
            // Busy cooldowns: 10, 20, 40, 40 (the cap); the one from 1070 saw crossings,
            // so 1250's is 40 again; it stays quiet, so 1300's is back to 10.
            fired: vec![
                fired(1000, "k", 2),
                fired(1010, "k", 4),
                fired(1030, "k", 8),
                fired(1070, "k", 16),
                fired(1250, "k", 12),
                fired(1300, "k", 2),
                fired(1310, "k", 4),
            ],
            ..Scenario::default()
        },
        Scenario {
            name: "flatline: a key heard from within every window never fires",
            rule: r#"{"rule": "flatline", "threshold": 1, "window_secs": 10}"#,
            kept: vec![""],
            start: 1000,
            until: 1030,
            events: [1000, 1005, 1012, 1019, 1025].map(|s| (s, "", 1)).to_vec(),
            fired: vec![],
        },
        Scenario {
            name: "flatline: a key fires a window after its last event, once per silence",
            rule: r#"{"rule": "flatline", "threshold": 1, "window_secs": 10}"#,
            kept: vec![""],
            start: 990,
            until: 1040,
            events: vec![(995, "", 1), (1000, "", 1)],
            fired: vec![fired(1010, "", 0)],
        },
        Scenario {
            name: "flatline: after a start, no key fires before one full window",
            rule: r#"{"rule": "flatline", "threshold": 1, "window_secs": 10}"#,
            kept: vec![""],
            start: 1000,
            until: 1015,
            fired: vec![fired(1010, "", 0)],
            ..Scenario::default()
        },
        Scenario {
            name: "flatline: a key first heard during the grace, below its threshold, waits \
                   for the grace's end",
            rule: r#"{"rule": "flatline", "threshold": 3, "window_secs": 10}"#,
            start: 1000,
            until: 1015,
            events: vec![(1002, "a", 1)],
            fired: vec![fired(1010, "a", 1)],
            ..Scenario::default()
        },
        Scenario {
            name: "flatline: the count over the window is what falls below the threshold",
            rule: r#"{"rule": "flatline", "threshold": 3, "window_secs": 10}"#,
            kept: vec![""],
            start: 1000,
            until: 1015,
            events: vec![(1000, "", 1), (1001, "", 1), (1002, "", 1)],
            fired: vec![fired(1010, "", 2)],
        },
        Scenario {
            name: "flatline: a recovery fires with send_resolved, the next silence fires again",
            rule: r#"{"rule": "flatline", "threshold": 1, "window_secs": 10, "send_resolved": true}"#,
            kept: vec![""],
            start: 1000,
            until: 1040,
            events: vec![(1000, "", 1), (1015, "", 1)],
            fired: vec![
                fired(1010, "", 0),
                resolved(1015, "", 1),
                fired(1025, "", 0),
            ],
        },
        Scenario {
            name: "flatline: an expected key that never sent fires, so does a key seen then silent",
            rule: r#"{"rule": "flatline", "threshold": 1, "window_secs": 10}"#,
            kept: vec!["c"],
            start: 1000,
            until: 1030,
            events: (1000..=1030)
                .step_by(5)
                .map(|s| (s, "a", 1))
                .chain([(1000, "b", 1)])
                .collect(),
            fired: vec![fired(1010, "b", 0), fired(1010, "c", 0)],
        },
        Scenario {
            name: "flatline: a key silent forget_after_secs after it fired is dropped, an \
                   expected one is kept",
            rule: r#"{"rule": "flatline", "threshold": 1, "window_secs": 10,
                      "forget_after_secs": 20, "send_resolved": true}"#,
            kept: vec!["c"],
            start: 1000,
            until: 1050,
            events: vec![(1000, "b", 1), (1035, "b", 1), (1035, "c", 1)],
            fired: vec![
                fired(1010, "b", 0),
                fired(1010, "c", 0),
                resolved(1035, "c", 1),
                fired(1045, "b", 0),
                fired(1045, "c", 0),
            ],
        },
        Scenario {
            name: "flatline: with a cooldown, a key still silent fires again once it is over",
            rule: r#"{"rule": "flatline", "threshold": 1, "window_secs": 10, "cooldown_secs": 15}"#,
            kept: vec![""],
            start: 1000,
            until: 1045,
            fired: vec![fired(1010, "", 0), fired(1025, "", 0), fired(1040, "", 0)],
            ..Scenario::default()
        },
        Scenario {
            name: "flatline: silent again within its cooldown, a key waits for its end",
            rule: r#"{"rule": "flatline", "threshold": 1, "window_secs": 10, "cooldown_secs": 30}"#,
            kept: vec![""],
            start: 1000,
            until: 1045,
            events: vec![(1012, "", 1)],
            fired: vec![fired(1010, "", 0), fired(1040, "", 0)],
        },
    ]
}

/// What judges a key: either engine, on the scenario's clock.
trait Engine {
    fn name(&self) -> &'static str;
    /// `events` of `key` at `now`: the firing, if the key fired.
    fn count(
        &mut self,
        rule: RuleParams,
        watcher: Uuid,
        key: &str,
        events: u64,
        now: u64,
    ) -> Option<(u64, bool)>;
    /// A watcher decided on the clock, first seen at `now`: `kept` watched from then on.
    fn first_sight(&mut self, rule: RuleParams, watcher: Uuid, kept: &[&'static str], now: u64);
    /// The firings of its keys due at `now`: (key, count) each.
    fn tick(&mut self, rule: RuleParams, watcher: Uuid, now: u64) -> Vec<(String, u64)>;
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
        events: u64,
        now: u64,
    ) -> Option<(u64, bool)> {
        let mut verdict = None;
        let keys = [(Key::from(key), events)];
        (self.store).count_set(&[watcher], &keys, &mut |_, mut at, events| {
            verdict = rule.on_count(&mut at, events, now);
        });
        verdict.map(|verdict| (verdict.count, verdict.resolved))
    }

    fn first_sight(&mut self, rule: RuleParams, watcher: Uuid, kept: &[&'static str], now: u64) {
        self.kept = kept.iter().map(|&key| Key::from(key)).collect();
        self.grace_until = rule.grace_until(now);
        rule.on_first_sight(&mut self.store, watcher, self.kept.iter(), self.grace_until);
    }

    fn tick(&mut self, rule: RuleParams, watcher: Uuid, now: u64) -> Vec<(String, u64)> {
        let kept = |key: &Key| self.kept.contains(key);
        let clock = OnTheClock {
            grace_until: self.grace_until,
            kept: &kept,
        };
        rule.on_tick(&mut self.store, watcher, now, &clock)
            .into_iter()
            .map(|(key, verdict)| (key.as_str().to_string(), verdict.count))
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
        events: u64,
        now: u64,
    ) -> Option<(u64, bool)> {
        let call = CountCall::new(vec![SharedCount {
            watcher,
            key: Key::from(key),
            events,
            rule,
        }]);
        let replies = count_command(PREFIX, &call, Some(now))
            .query(&mut self.connection)
            .expect("eventsd_count answers");
        let crossing = call.crossings(replies).pop()?;
        Some((crossing.count, crossing.resolved))
    }

    fn first_sight(&mut self, _: RuleParams, _: Uuid, kept: &[&'static str], _: u64) {
        self.kept = Some(kept.iter().map(|&key| Key::from(key)).collect());
    }

    fn tick(&mut self, rule: RuleParams, watcher: Uuid, now: u64) -> Vec<(String, u64)> {
        let kept = self.kept.take();
        let replies = tick_command(PREFIX, watcher, &rule, kept.as_deref(), Some(now))
            .query(&mut self.connection)
            .expect("eventsd_tick answers");
        tick_crossings(watcher, replies)
            .into_iter()
            .map(|crossing| (crossing.key.as_str().to_string(), crossing.count))
            .collect()
    }
}

/// The rule of a watcher holding `fields`, as the master makes it.
fn rule_of(fields: &str) -> RuleParams {
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
    RuleParams::of(&spec)
}

/// The firings `scenario` makes on `engine`, for a watcher of its own: each second's
/// events, then, for a rule decided on the clock, that second's tick.
fn run(engine: &mut dyn Engine, scenario: &Scenario) -> Vec<Fired> {
    let rule = rule_of(scenario.rule);
    let watcher = Uuid::new_v4();
    let key_of = |key: &str| -> &'static str {
        let named = scenario
            .events
            .iter()
            .map(|e| e.1)
            .chain(scenario.kept.clone());
        named.into_iter().find(|&k| k == key).unwrap_or("?")
    };
    let mut fired = Vec::new();
    let count_at = |engine: &mut dyn Engine, second: u64, fired: &mut Vec<Fired>| {
        for &(_, key, events) in scenario.events.iter().filter(|e| e.0 == second) {
            if let Some((count, resolved)) = engine.count(rule, watcher, key, events, second) {
                fired.push((second, key, count, resolved));
            }
        }
    };
    if !rule.on_the_clock() {
        let mut seconds: Vec<u64> = scenario.events.iter().map(|e| e.0).collect();
        seconds.dedup();
        for second in seconds {
            count_at(engine, second, &mut fired);
        }
        return fired;
    }
    engine.first_sight(rule, watcher, &scenario.kept, scenario.start);
    for second in scenario.start..=scenario.until {
        count_at(engine, second, &mut fired);
        for (key, count) in engine.tick(rule, watcher, second) {
            fired.push((second, key_of(&key), count, false));
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
