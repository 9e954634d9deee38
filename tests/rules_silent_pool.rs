//! A `single` cardinality watcher with `min_distinct` whose pool went silent from the
//! start (rules.md: `single`'s one key is watched from the watcher's creation): it fires
//! once after its grace, in the rule's words, and not again after the master stops and
//! starts twice (its state is saved with the counters). Against the real binary, firings
//! received by a webhook sink the test runs. The engines' edges are pinned by
//! tests/rules.rs's scenario table.

mod common;

use std::time::Duration;

use common::rest::{register_watcher, webhook};
use common::sinks::HttpSink;
use common::{Daemon, SECOND, wait_for};
use nix::sys::signal::Signal;
use serde_json::{Value, json};

fn firings_of(sink: &HttpSink, watcher: &str) -> Vec<Value> {
    let documents = sink
        .requests()
        .into_iter()
        .filter_map(|r| serde_json::from_str::<Value>(&r.body).ok());
    documents.filter(|d| d["watcher"] == watcher).collect()
}

/// A pool that needs 2 distinct workers in 2 s, on an event type of its own.
fn pool(name: &str, sink: &HttpSink) -> Value {
    json!({"name": name, "rule": "cardinality", "field": "worker", "min_distinct": 2,
           "window_secs": 2, "aggregator": {"type": "single"},
           "action": webhook(&sink.url("/hooks"))})
}

/// A pool watcher created now fires after its grace: once it has, the watchers seen
/// at the same start (whose grace ends no later) have been judged too.
fn probe(daemon: &Daemon, sink: &HttpSink, name: &str) {
    register_watcher(daemon, name, &pool(name, sink));
    wait_for(&format!("{name} fired"), 30 * SECOND, || {
        !firings_of(sink, name).is_empty()
    });
}

#[test]
fn a_single_pool_silent_from_the_start_fires_once_and_not_again_after_restarts() {
    let sink = HttpSink::start(Duration::ZERO);
    let mut daemon = Daemon::run("");
    register_watcher(&daemon, "pool", &pool("workers", &sink));
    wait_for("the silent pool fired", 30 * SECOND, || {
        !firings_of(&sink, "workers").is_empty()
    });
    let fired = firings_of(&sink, "workers");
    assert_eq!(fired.len(), 1, "{fired:#?}");
    assert_eq!(fired[0]["rule"], "cardinality");
    assert_eq!(fired[0]["distinct"], 0);
    assert_eq!(fired[0]["min_distinct"], 2);
    assert_eq!(
        fired[0]["text"],
        "0 distinct worker values in 2 s (at least 2 expected)"
    );

    for restart in 1..=2 {
        daemon.signal(Signal::SIGTERM);
        daemon.wait_exit(20 * SECOND);
        daemon.spawn_foreground(&[]);
        daemon.wait_ready();
        probe(&daemon, &sink, &format!("probe{restart}"));
        let fired = firings_of(&sink, "workers");
        assert_eq!(fired.len(), 1, "after restart {restart}: {fired:#?}");
    }
}
