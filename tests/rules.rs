//! One table of scenarios for the watchers' rules (rules.md): events at given seconds →
//! the firings expected, run against both engines that judge a key, each on a clock the
//! scenario sets: the master's (`RuleParams::on_count` over a `MemoryStore`) and the
//! Redis Function (`eventsd_count` in a real `redis-server` the test starts), both fed
//! the same `RuleParams`, made from the watcher definition as the master makes them. A
//! change to one engine alone fails a row.

mod common;

use common::redis::RedisServer;
use eventsd::cluster::{FUNCTIONS, count_command};
use eventsd::protocol::cluster::CountCall;
use eventsd::registry::WatcherSpec;
use eventsd::watch::rule::RuleParams;
use eventsd::watch::store::MemoryStore;
use eventsd::watch::{Key, SharedCount};
use uuid::Uuid;

/// A row: a watcher's rule, events, and the firings they must make.
struct Scenario {
    name: &'static str,
    /// The rule's fields of the watcher definition (name, aggregator and action apart).
    rule: &'static str,
    /// (second, key, events), in order.
    events: Vec<(u64, &'static str, u64)>,
    /// (second, key, count) of each firing, in order.
    fired: Vec<(u64, &'static str, u64)>,
}

fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "threshold: exceeded once, then the count starts again from zero",
            rule: r#"{"threshold": 3}"#,
            events: (0..8).map(|_| (1000, "k", 1)).collect(),
            fired: vec![(1000, "k", 4), (1000, "k", 4)],
        },
        Scenario {
            name: "threshold: reached exactly, it does not fire",
            rule: r#"{"threshold": 3}"#,
            events: vec![(1000, "k", 1), (1001, "k", 2)],
            fired: vec![],
        },
        Scenario {
            name: "threshold: one batch of many events fires once with their count",
            rule: r#"{"threshold": 3}"#,
            events: vec![(1000, "k", 50)],
            fired: vec![(1000, "k", 50)],
        },
        Scenario {
            name: "threshold: an event window_secs old has left the window",
            rule: r#"{"threshold": 2, "window_secs": 10}"#,
            events: vec![(100, "k", 1), (105, "k", 1), (110, "k", 1), (111, "k", 1)],
            fired: vec![(111, "k", 3)],
        },
        Scenario {
            name: "threshold: an event one second younger than the window still counts",
            rule: r#"{"threshold": 2, "window_secs": 10}"#,
            events: vec![(100, "k", 2), (109, "k", 1)],
            fired: vec![(109, "k", 3)],
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
            fired: vec![(10_000, "k", 3)],
        },
        Scenario {
            name: "threshold: keys count apart",
            rule: r#"{"threshold": 1}"#,
            events: vec![(1, "a", 1), (1, "b", 1), (2, "a", 1), (3, "c", 5)],
            fired: vec![(2, "a", 2), (3, "c", 5)],
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
            fired: vec![(1000, "k", 2), (1060, "k", 4)],
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
                (1000, "k", 2),
                (1010, "k", 4),
                (1030, "k", 8),
                (1070, "k", 16),
                (1250, "k", 12),
                (1300, "k", 2),
                (1310, "k", 4),
            ],
        },
    ]
}

/// What judges a key: either engine, on the scenario's clock.
trait Engine {
    fn name(&self) -> &'static str;
    /// `events` of `key` at `now`: the firing's count, if the key fired.
    fn count(
        &mut self,
        rule: RuleParams,
        watcher: Uuid,
        key: &str,
        events: u64,
        now: u64,
    ) -> Option<u64>;
}

struct Memory(MemoryStore);

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
    ) -> Option<u64> {
        let verdict = rule.on_count(&mut self.0, watcher, &Key::from(key), events, now)?;
        Some(verdict.count)
    }
}

struct Redis {
    connection: ::redis::Connection,
    _server: RedisServer,
}

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
    ) -> Option<u64> {
        let call = CountCall::new(vec![SharedCount {
            watcher,
            key: Key::from(key),
            events,
            rule,
        }]);
        let replies = count_command("scenarios", &call, Some(now))
            .query(&mut self.connection)
            .expect("eventsd_count answers");
        let crossing = call.crossings(replies).pop()?;
        Some(crossing.count)
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

/// The firings `scenario` makes on `engine`, for a watcher of its own.
fn run(engine: &mut dyn Engine, scenario: &Scenario) -> Vec<(u64, &'static str, u64)> {
    let rule = rule_of(scenario.rule);
    let watcher = Uuid::new_v4();
    scenario
        .events
        .iter()
        .filter_map(|&(second, key, events)| {
            let count = engine.count(rule, watcher, key, events, second)?;
            Some((second, key, count))
        })
        .collect()
}

#[test]
fn every_scenario_fires_alike_on_the_memory_store_and_in_redis() {
    let mut engines: Vec<Box<dyn Engine>> = vec![
        Box::new(Memory(MemoryStore::new(1000))),
        Box::new(Redis::start()),
    ];
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
