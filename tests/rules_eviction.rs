//! A flatline key an operator named (rules.md: `expect`'s, `single`'s one key) against
//! `watchers.max_keys`: new keys evict the least recently updated one, which a silent
//! expected host always is, yet it must stay watched and fire. Against the real binary,
//! firings received by a webhook sink the test runs.

mod common;

use std::time::{Duration, Instant};

use common::rest::{register_watcher, webhook};
use common::sinks::HttpSink;
use common::{Daemon, SECOND};
use serde_json::{Value, json};

/// New hosts far more often than the 2 s window, even on a loaded machine.
const BEAT: Duration = Duration::from_millis(100);

fn fired_for(sink: &HttpSink, host: &str) -> usize {
    let firings = sink.requests();
    let documents = firings.iter().filter_map(|r| {
        let document: Value = serde_json::from_str(&r.body).ok()?;
        Some(document["key"]["host"].clone())
    });
    documents.filter(|key| key == host).count()
}

/// Decided: a kept key is never evicted (the table holds the kept keys and `max_keys`
/// others); the others are evicted as any key, and counted. Without it, the expected
/// host, silent from the start, was the first key evicted and never judged again.
#[test]
fn an_expected_host_crowded_out_by_new_hosts_past_max_keys_still_fires_when_silent() {
    let sink = HttpSink::start(Duration::ZERO);
    let daemon = Daemon::run("[watchers]\nmax_keys = 3\n");
    register_watcher(
        &daemon,
        "beats",
        &json!({"name": "hosts", "rule": "flatline", "threshold": 1, "window_secs": 2,
               "aggregator": {"type": "fields", "fields": ["host"]}, "expect": ["quiet"],
               "action": webhook(&sink.url("/hooks"))}),
    );
    // A new host every beat: each one past the limit evicts the least recently updated
    // key, and lives a few beats only, far less than its window.
    let started = Instant::now();
    let mut host = 0;
    while fired_for(&sink, "quiet") == 0 {
        assert!(
            started.elapsed() < 30 * SECOND,
            "the expected host never fired; {} keys evicted",
            daemon.metric_sum("eventsd_watcher_key_evictions_total")
        );
        host += 1;
        let beat = json!({"host": format!("h{host}")}).to_string();
        assert_eq!(daemon.post("/event/beats/", &beat).status, 200);
        std::thread::sleep(BEAT);
    }

    assert_eq!(fired_for(&sink, "quiet"), 1);
    assert!(daemon.metric_sum("eventsd_watcher_key_evictions_total") > 0);
    assert!(
        daemon.metric_sum("eventsd_watcher_keys") <= 4,
        "bounded: the kept key and max_keys others"
    );
}
