//! The rows of reliability.md about a master under pressure: a worker waiting on a busy
//! master, a large batch counted in slices, a hung counters snapshot, and a registry
//! change whose worker gave up before the master answered.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::rest::register;
use common::{Daemon, wait_for};

const SECOND: Duration = Duration::from_secs(1);

/// `n` watchers of `logins`, all counting by `ip`: one field set.
fn watchers_by_ip(daemon: &Daemon, n: usize) {
    register(daemon, "logins");
    for i in 0..n {
        let watcher = serde_json::json!({"name": format!("w{i}"), "threshold": 1_000_000_000u64,
            "aggregator": {"type": "fields", "fields": ["ip"]}, "action": {"type": "null"}});
        let created = daemon.post("/event/logins/watcher/", &watcher.to_string());
        assert_eq!(created.status, 201, "{created:?}");
    }
}

/// `GET /metrics` in a loop on another thread until `stop`: the slowest answer and every
/// status that was not 200.
fn poll_metrics(
    daemon: &Daemon,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(Duration, Vec<String>)> {
    let address = daemon.address();
    std::thread::spawn(move || {
        let (mut slowest, mut failures) = (Duration::ZERO, Vec::new());
        while !stop.load(Ordering::Relaxed) {
            let asked = Instant::now();
            let raw = "GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n";
            match common::request(address, raw) {
                Ok(reply) if reply.status == 200 => {}
                Ok(reply) => failures.push(format!("{}: {}", reply.status, reply.body)),
                Err(e) => failures.push(e.to_string()),
            }
            slowest = slowest.max(asked.elapsed());
            std::thread::sleep(Duration::from_millis(10));
        }
        (slowest, failures)
    })
}

/// Rows "a worker waits on a busy master" and "the master has a large batch to count":
/// 200 watchers of one field set and a 1 MB `_bulk` of 20,000 new values make 4 million
/// (watcher, key) updates. The worker is not killed while the master reads it late, every
/// collected event is counted, and `/metrics` is answered between the slices.
#[test]
fn a_worker_waiting_on_a_busy_master_is_not_killed_and_questions_are_answered_meanwhile() {
    let daemon = Daemon::run("[workers]\nmin = 2\nmax = 2\nheartbeat_timeout_secs = 2\n");
    watchers_by_ip(&daemon, 200);
    let workers = daemon.serving_workers();
    let bulk: String = (0..20_000)
        .map(|n| {
            format!(
                "{{\"ip\": \"10.{}.{}.{}\", \"pad\": \"{:018}\"}}\n",
                n / 65536,
                n / 256 % 256,
                n % 256,
                n
            )
        })
        .collect();
    assert!(bulk.len() <= 1_048_576, "{} bytes", bulk.len());

    let reply = daemon.post("/event/logins/_bulk", &bulk);
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["collected"], 20_000);
    // From the reply on, the master counts (the worker's own parsing is not measured).
    let stop = Arc::new(AtomicBool::new(false));
    let poller = poll_metrics(&daemon, stop.clone());
    let counted = Mutex::new(None);
    wait_for("every collected event to be counted", 120 * SECOND, || {
        let now = daemon.metric("eventsd_events_counted_total{type=\"logins\"}");
        *counted.lock().unwrap() = now;
        now == Some(20_000) || daemon.log().contains("killing worker")
    });
    // Two more heartbeat timeouts: a worker judged hung late is still caught.
    std::thread::sleep(2 * SECOND);
    stop.store(true, Ordering::Relaxed);
    let (slowest, failures) = poller.join().unwrap();
    eprintln!("slowest /metrics while counting: {slowest:?}");

    assert!(!daemon.log().contains("killing worker"), "{}", daemon.log());
    assert_eq!(daemon.serving_workers(), workers, "a worker was replaced");
    assert_eq!(
        *counted.lock().unwrap(),
        Some(20_000),
        "collected != counted"
    );
    assert!(
        failures.is_empty(),
        "/metrics failed while counting: {failures:?}"
    );
    assert!(slowest < SECOND, "/metrics took {slowest:?} while counting");
}
