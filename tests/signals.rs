//! The signal table of process-model.md, one test per row, against the real binary.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{Daemon, HalfSent, Load, SECOND, is_gone, process_state, wait_for};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

#[test]
fn sigchld_a_killed_worker_is_replaced_within_a_second_and_leaves_no_zombie() {
    let daemon = Daemon::run("[workers]\nmin = 2\nmax = 2\n");
    let before = daemon.serving_workers();
    let victim = before[0];

    let killed_at = Instant::now();
    kill(victim, Signal::SIGKILL).unwrap();
    // The spec's second, with room for a loaded machine; the time taken is printed.
    wait_for("a replacement worker", 5 * SECOND, || {
        daemon
            .workers()
            .iter()
            .any(|(_, pid)| !before.contains(pid))
    });
    eprintln!(
        "replacement forked {:?} after the kill",
        killed_at.elapsed()
    );
    daemon.wait_ready();

    assert!(
        is_gone(victim),
        "worker {victim} left a zombie: {:?}",
        process_state(victim)
    );
    assert_eq!(daemon.serving_workers().len(), 2);
    assert_eq!(daemon.get("/health").unwrap().status, 200);
    assert!(
        daemon
            .log()
            .contains(&format!("worker {victim} was killed by SIGKILL"))
    );
}

#[test]
fn sigchld_a_crash_loop_backs_off_instead_of_forking_a_storm() {
    let daemon = Daemon::run("[workers]\nmin = 1\nmax = 1\n");
    // Kill every worker as soon as it shows up, so each one dies within seconds of its
    // start, for as long as a fork storm would have forked hundreds.
    let mut seen: Vec<(Pid, Instant)> = Vec::new();
    let until = Instant::now() + Duration::from_millis(4500);
    while Instant::now() < until {
        for (_, pid) in daemon.workers() {
            if !seen.iter().any(|(known, _)| *known == pid) {
                seen.push((pid, Instant::now()));
                let _ = kill(pid, Signal::SIGKILL);
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let gaps: Vec<Duration> = seen.windows(2).map(|w| w[1].1 - w[0].1).collect();
    eprintln!("gaps between forks: {gaps:?}");
    assert!(
        seen.len() <= 5,
        "{} forks in 4.5 s: no backoff ({gaps:?})",
        seen.len()
    );
    assert!(gaps.len() >= 3, "the loop was not exercised: {gaps:?}");
    let last = gaps[gaps.len() - 1];
    let before_last = gaps[gaps.len() - 2];
    assert!(
        last >= Duration::from_millis(1500),
        "no growing backoff: {gaps:?}"
    );
    assert!(last > before_last, "backoff does not grow: {gaps:?}");

    let status = daemon.status().unwrap();
    let crash_loop = &status["crash_loop"];
    assert!(crash_loop["quick_exits"].as_u64().unwrap() >= 3, "{status}");
    assert!(
        crash_loop["last_exit"]
            .as_str()
            .unwrap()
            .contains("SIGKILL"),
        "{status}"
    );
    let summary = common::stdout(&daemon.cli(&["status"]));
    assert!(summary.contains("crash loop"), "{summary}");
    assert!(daemon.log().contains("crash loop: 3 quick exits in a row"));
}

#[test]
fn sigalrm_a_stopped_worker_is_killed_and_replaced_after_the_heartbeat_timeout() {
    let daemon = Daemon::run("[workers]\nmin = 2\nmax = 2\nheartbeat_timeout_secs = 2\n");
    let hung = daemon.serving_workers()[0];
    let stopped_at = Instant::now();
    kill(hung, Signal::SIGSTOP).unwrap();

    wait_for("the hung worker to be killed", 6 * SECOND, || is_gone(hung));
    let detected = stopped_at.elapsed();
    eprintln!("hung worker killed {detected:?} after SIGSTOP");
    // Its last heartbeat may have left up to one interval (0.5 s) before the SIGSTOP.
    assert!(
        detected >= 2 * SECOND - SECOND / 2,
        "killed before its heartbeat timeout: {detected:?}"
    );
    daemon.wait_ready();
    assert!(!daemon.serving_workers().contains(&hung));
    let log = daemon.log();
    assert!(
        log.contains(&format!("killing worker {hung}: it hung (no heartbeat for")),
        "{log}"
    );
}

#[test]
fn sigterm_lets_in_flight_requests_finish_then_removes_pidfile_and_socket() {
    let mut daemon = Daemon::run("[workers]\nmin = 1\nmax = 1\n");
    let in_flight = HalfSent::start(&daemon);
    let worker = daemon.serving_workers()[0];

    daemon.signal(Signal::SIGTERM);
    wait_for("the worker to drain", 5 * SECOND, || {
        daemon
            .workers()
            .iter()
            .any(|(state, pid)| *pid == worker && state == "shutdown")
    });
    let response = in_flight.finish().expect("the in-flight request completes");
    assert_eq!(response.status, 200, "{response:?}");

    assert!(daemon.wait_exit(10 * SECOND).success());
    assert!(!daemon.pidfile().exists(), "pidfile left behind");
    assert!(
        !daemon.control_socket().exists(),
        "control socket left behind"
    );
    assert!(is_gone(worker));
}

#[test]
fn sigterm_kills_workers_still_draining_after_the_graceful_timeout() {
    let mut daemon = Daemon::run("[workers]\nmin = 1\nmax = 1\ngraceful_timeout_secs = 1\n");
    let _stuck = HalfSent::start(&daemon);
    let started = Instant::now();
    daemon.signal(Signal::SIGTERM);
    assert!(daemon.wait_exit(10 * SECOND).success());
    assert!(
        started.elapsed() >= SECOND,
        "did not wait for the graceful timeout"
    );
    assert!(daemon.log().contains("it was still draining"));
}

#[test]
fn sigint_and_sigquit_stop_at_once_without_waiting_for_requests() {
    for signal in [Signal::SIGINT, Signal::SIGQUIT] {
        let mut daemon = Daemon::run("[workers]\nmin = 1\nmax = 1\n");
        let in_flight = HalfSent::start(&daemon);
        let worker = daemon.serving_workers()[0];

        daemon.signal(signal);
        assert!(daemon.wait_exit(5 * SECOND).success(), "{signal}");
        assert!(is_gone(worker), "{signal}: worker survived");
        assert!(in_flight.finish().is_err(), "{signal}: request was not cut");
        assert!(!daemon.pidfile().exists(), "{signal}: pidfile left behind");
    }
}

/// Issue 13's reproduction: many reloads in a row under connection-per-request load, long
/// enough to hit a worker draining with connections accepted but not yet read.
#[test]
fn fifteen_reloads_in_a_row_under_load_fail_no_request() {
    let daemon = Daemon::run("[workers]\nmin = 2\nmax = 2\n");
    let load = Load::start(daemon.address(), 4);
    for _ in 0..15 {
        let reload = daemon.cli(&["reload"]);
        assert!(reload.status.success(), "{}", common::stderr(&reload));
    }
    let tally = load.finish();
    assert!(
        tally.ok > 100,
        "too little load to prove anything: {}",
        tally.ok
    );
    tally.assert_none_failed("during the reloads");
    assert_eq!(daemon.status().unwrap()["generation"], 16);
}

#[test]
fn sighup_reload_under_load_fails_no_request_and_rolls_every_worker() {
    let daemon = Daemon::run("[workers]\nmin = 2\nmax = 2\n");
    let old: HashSet<Pid> = daemon.serving_workers().into_iter().collect();
    // A change that shows: a smaller body limit.
    let config = common::config_text(
        daemon.port,
        "[workers]\nmin = 2\nmax = 2\n[server]\nmax_body_bytes = 100\n",
    );
    std::fs::write(&daemon.config, config).unwrap();

    let load = Load::start(daemon.address(), 4);
    wait_for("load to flow", 5 * SECOND, || {
        daemon.status().unwrap()["workers"][0]["requests"].as_u64() > Some(0)
    });
    let reload = daemon.cli(&["reload"]);
    assert!(reload.status.success(), "{}", common::stderr(&reload));
    let new: HashSet<Pid> = daemon.serving_workers().into_iter().collect();
    // Keep the load on the new generation for a moment, then stop it.
    let served_before = daemon.status().unwrap()["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["requests"].as_u64().unwrap())
        .sum::<u64>();
    wait_for("requests on the new workers", 5 * SECOND, || {
        let served: u64 = daemon.status().unwrap()["workers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["requests"].as_u64().unwrap())
            .sum();
        served > served_before + 20
    });
    let tally = load.finish();

    assert!(
        tally.failures.is_empty(),
        "failed requests during reload: {:?}",
        tally.failures
    );
    assert_eq!(new.len(), 2);
    assert!(
        old.is_disjoint(&new),
        "old workers still serve: {old:?} {new:?}"
    );
    wait_for("old workers gone", 5 * SECOND, || {
        old.iter().all(|pid| is_gone(*pid))
    });
    // New before old: both new workers were ready before the first old one was stopped.
    let log = daemon.log();
    let last_new_ready = new
        .iter()
        .map(|pid| {
            log.find(&format!("worker {pid} ready (generation 2)"))
                .expect("new worker ready")
        })
        .max()
        .unwrap();
    let first_old_stopped = log
        .find("a newer generation is ready")
        .expect("old workers retired");
    assert!(
        last_new_ready < first_old_stopped,
        "old workers stopped before the new ones were ready"
    );
    let last = *tally.workers.last().unwrap();
    assert!(
        new.contains(&Pid::from_raw(last)),
        "last reply from {last}, not a new worker"
    );
    eprintln!("{} requests, none failed", tally.ok);

    let body = "x".repeat(200);
    let too_big = common::request(
        daemon.address(),
        &format!("POST /health HTTP/1.1\r\nHost: t\r\nContent-Length: 200\r\nConnection: close\r\n\r\n{body}"),
    )
    .unwrap();
    assert_eq!(
        too_big.status, 413,
        "new workers do not serve the new config"
    );
}

#[test]
fn sighup_with_a_broken_config_keeps_the_old_one_running() {
    let daemon = Daemon::run("[workers]\nmin = 2\nmax = 2\n");
    let workers = daemon.serving_workers();
    std::fs::write(
        &daemon.config,
        "[server]\nlisten = \"127.0.0.1:1\"\nbacklog = \"many\"\n",
    )
    .unwrap();

    daemon.signal(Signal::SIGHUP);
    wait_for("the reload to be refused", 5 * SECOND, || {
        daemon.status().is_some_and(|s| s["reloads"] == 1)
    });
    let status = daemon.status().unwrap();
    let error = status["last_reload_error"].as_str().unwrap();
    assert!(error.contains("backlog"), "{error}");
    assert_eq!(status["generation"], 1);
    assert_eq!(daemon.serving_workers(), workers);
    assert_eq!(daemon.get("/health").unwrap().status, 200);
    assert!(
        daemon
            .log()
            .contains("reload refused, the running configuration stays")
    );
}

#[test]
fn sigusr1_reopens_the_log_file_in_master_and_workers() {
    let daemon = Daemon::run("[workers]\nmin = 2\nmax = 2\n");
    let log = daemon.path("daemon.log");
    let rotated = daemon.path("daemon.log.1");
    std::fs::rename(&log, &rotated).unwrap();

    daemon.signal(Signal::SIGUSR1);
    let master = daemon.master_pid();
    let workers = daemon.serving_workers();
    wait_for("every process to write to the new file", 5 * SECOND, || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.contains(&format!("master[{master}]: reopened log files"))
            && workers
                .iter()
                .all(|pid| text.contains(&format!("worker[{pid}]: reopened log files")))
            && text
                .lines()
                .any(|l| l.contains(" action[") && l.ends_with("]: reopened log files"))
    });
}

/// The access log's lines as JSON documents, or none while the file is missing.
fn access_lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).expect("an access log line is JSON"))
        .collect()
}

#[test]
fn the_access_log_has_a_line_per_request_and_is_reopened_on_sigusr1() {
    let daemon =
        Daemon::run("[daemon]\naccess_log = \"access.log\"\n[workers]\nmin = 2\nmax = 2\n");
    let log = daemon.path("access.log");
    let rotated = daemon.path("access.log.1");
    assert_eq!(daemon.get("/health").unwrap().status, 200);
    assert_eq!(daemon.post("/event/", r#"{"type": "shop"}"#).status, 201);
    assert_eq!(daemon.get("/event/nope").unwrap().status, 404);
    wait_for("three lines in the access log", 5 * SECOND, || {
        access_lines(&log).len() == 3
    });
    let lines = access_lines(&log);
    let workers: HashSet<i64> = daemon
        .serving_workers()
        .iter()
        .map(|pid| i64::from(pid.as_raw()))
        .collect();
    let expected = [
        ("GET", "/health", "/health", 200),
        ("POST", "/event/", "/event/", 201),
        ("GET", "/event/{type}/", "/event/nope", 404),
    ];
    // Each worker writes its own lines: the file's order is not the requests'.
    for (method, route, path, status) in expected {
        let line = lines
            .iter()
            .find(|line| line["path"] == path)
            .unwrap_or_else(|| panic!("no line for {path}: {lines:?}"));
        assert_eq!(line["method"], method, "{line}");
        assert_eq!(line["route"], route, "{line}");
        assert_eq!(line["path"], path, "{line}");
        assert_eq!(line["status"], status, "{line}");
        assert_eq!(line["client"], "127.0.0.1", "{line}");
        assert!(line["bytes"].as_u64().unwrap() > 0, "{line}");
        assert!(line["duration_ms"].as_f64().unwrap() >= 0.0, "{line}");
        assert!(
            workers.contains(&line["worker"].as_i64().unwrap()),
            "{line}"
        );
        let time = line["time"].as_str().unwrap();
        assert!(humantime::parse_rfc3339(time).is_ok(), "{line}");
    }

    std::fs::rename(&log, &rotated).unwrap();
    daemon.signal(Signal::SIGUSR1);
    wait_for("every worker to reopen the access log", 5 * SECOND, || {
        let text = daemon.log();
        workers
            .iter()
            .all(|pid| text.contains(&format!("worker[{pid}]: reopened access log")))
    });
    assert_eq!(daemon.get("/health").unwrap().status, 200);
    wait_for("the next request in the new file", 5 * SECOND, || {
        access_lines(&log).len() == 1
    });
    assert_eq!(
        access_lines(&rotated).len(),
        3,
        "the rotated file keeps its lines"
    );
}

#[test]
fn sigttin_and_sigttou_change_the_pool_within_its_bounds() {
    let daemon = Daemon::run("[workers]\nmin = 1\nmax = 3\nidle_timeout_secs = 3600\n");
    let count = || daemon.workers().len();
    for expected in [2, 3] {
        daemon.signal(Signal::SIGTTIN);
        wait_for(&format!("{expected} workers"), 5 * SECOND, || {
            count() == expected
        });
    }
    daemon.signal(Signal::SIGTTIN);
    wait_for("the bound to be logged", 5 * SECOND, || {
        daemon.log().contains("pool stays at 3 workers")
    });
    daemon.wait_ready();
    assert_eq!(count(), 3);

    for expected in [2, 1] {
        daemon.signal(Signal::SIGTTOU);
        wait_for(&format!("{expected} workers"), 5 * SECOND, || {
            count() == expected
        });
    }
    daemon.signal(Signal::SIGTTOU);
    wait_for("the bound to be logged", 5 * SECOND, || {
        daemon.log().contains("pool stays at 1 workers")
    });
    assert_eq!(count(), 1);
    assert_eq!(daemon.get("/health").unwrap().status, 200);
}

#[test]
fn sigalrm_the_dynamic_pool_grows_under_load_and_shrinks_when_idle() {
    let daemon = Daemon::run("[workers]\nmin = 1\nmax = 3\nidle_timeout_secs = 1\n");
    let target = || daemon.status().unwrap()["target_workers"].as_u64().unwrap();
    let load = Load::start(daemon.address(), 6);
    wait_for("the pool to grow", 20 * SECOND, || target() >= 2);
    let tally = load.finish();
    assert!(tally.failures.is_empty(), "{:?}", tally.failures);
    assert!(daemon.log().contains("workers busy: growing the pool"));

    wait_for("the pool to shrink back to min", 20 * SECOND, || {
        target() == 1 && daemon.workers().len() == 1
    });
    assert!(daemon.log().contains("idle for the idle timeout"));
}

#[test]
fn master_killed_with_sigkill_its_workers_exit_and_start_takes_over_the_stale_pidfile() {
    let mut daemon = Daemon::run("[workers]\nmin = 2\nmax = 2\n");
    let workers = daemon.serving_workers();
    daemon.signal(Signal::SIGKILL);
    daemon.wait_exit(5 * SECOND);
    wait_for("orphaned workers to exit", 5 * SECOND, || {
        workers.iter().all(|pid| is_gone(*pid))
    });
    assert!(
        daemon.pidfile().exists(),
        "a SIGKILLed master cannot remove its pidfile"
    );
    let status = daemon.cli(&["status"]);
    assert_eq!(status.status.code(), Some(1), "LSB: dead with pidfile");

    let start = daemon.start();
    assert!(start.status.success(), "{}", common::stderr(&start));
    assert_eq!(daemon.get("/health").unwrap().status, 200);
}

/// Recycling by `workers.max_requests` drains like a reload: five recycles under
/// connection-per-request load fail no request.
#[test]
fn five_recycles_by_max_requests_under_load_fail_no_request() {
    let daemon = Daemon::run("[workers]\nmin = 2\nmax = 2\nmax_requests = 300\n");
    let load = Load::start(daemon.address(), 4);
    let mut seen: HashSet<Pid> = HashSet::new();
    wait_for("five workers recycled", 60 * SECOND, || {
        seen.extend(daemon.workers().into_iter().map(|(_, pid)| pid));
        seen.len() >= 2 + 5
    });
    let tally = load.finish();
    tally.assert_none_failed("across the recycles");
}
