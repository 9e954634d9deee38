//! Upgrade in place (process-model.md): `eventsd upgrade` / SIGUSR2 replaces the binary
//! under load without refusing a request or losing a count, and a new master that fails
//! leaves the old one serving.

mod common;

use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::redis::RedisServer;
use common::rest::register_watcher;
use common::sinks::{HttpSink, dead_address};
use common::{Daemon, HalfSent, Load, SECOND, stderr, stdout, wait_for};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use serde_json::{Value, json};

/// Puts `contents` at `path` as a package manager does: a new file renamed over the old
/// one, so that the binary a master runs is never written to.
fn install(path: &Path, contents: &[u8]) {
    let next = path.with_extension("next");
    std::fs::write(&next, contents).unwrap();
    std::fs::set_permissions(&next, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&next, path).unwrap();
}

/// `eventsd run` started from a copy of the binary, which the test may then replace.
fn daemon_from_a_copy(extra: &str) -> Daemon {
    let mut daemon = Daemon::new(extra);
    daemon.binary = daemon.path("eventsd");
    install(&daemon.binary, &std::fs::read(common::BINARY).unwrap());
    daemon.spawn_foreground(&[]);
    daemon.wait_ready();
    daemon
}

fn post_events(daemon: &Daemon, n: usize) {
    for _ in 0..n {
        let response = daemon.post("/event/deploys/", r#"{"host": "a"}"#);
        assert_eq!(response.status, 200, "{response:?}");
    }
}

/// Sends the rest of the half-sent request: it is answered, and the connection closes.
fn answer_the_half_sent(half_sent: HalfSent) {
    let reply = half_sent
        .finish()
        .expect("the half-sent request is answered");
    assert_eq!(reply.status, 200, "the half-sent request is answered");
}

/// Until the old master `old` (still answering on the control socket) drains its workers.
fn wait_handing_over(daemon: &Daemon, old: Pid) {
    wait_for("the old master handing over", 20 * SECOND, || {
        let status = status_of(daemon);
        let workers = status["workers"].as_array().unwrap();
        status["pid"] == json!(old.as_raw())
            && !workers.is_empty()
            && workers.iter().all(|w| w["state"] == "shutdown")
    });
}

fn status_of(daemon: &Daemon) -> Value {
    daemon
        .status()
        .expect("the master answers on its control socket")
}

#[test]
fn an_upgrade_under_load_refuses_nothing_and_a_crossing_split_across_it_fires_once() {
    upgrade_under_load_with_a_crossing_across_it("");
}

/// The same in a cluster: the new master's held counts go to Redis once its link is up.
#[test]
fn in_a_cluster_too_a_crossing_split_across_an_upgrade_fires_once() {
    let redis = RedisServer::start();
    upgrade_under_load_with_a_crossing_across_it(&format!(
        "[cluster]\nurls = [\"{}\"]\ntimeout_ms = 500\n",
        redis.url()
    ));
}

fn upgrade_under_load_with_a_crossing_across_it(extra: &str) {
    let sink = HttpSink::start(Duration::ZERO);
    let mut daemon = daemon_from_a_copy(extra);
    wait_for("Redis reached, in a cluster", 10 * SECOND, || {
        let status = status_of(&daemon);
        status["cluster"].is_null() || status["cluster"]["redis_reachable"] == true
    });
    let watcher = json!({"name": "many-deploys", "threshold": 100,
        "aggregator": {"type": "single"},
        "action": {"type": "webhook", "url": sink.url("/hook")}});
    register_watcher(&daemon, "deploys", &watcher);
    post_events(&daemon, 60);
    let old = daemon.pidfile_pid().unwrap();

    // A request half sent to an old worker holds the hand-over open, so that what
    // follows happens while both masters serve.
    let half_sent = HalfSent::start(&daemon);
    let load = Load::start(daemon.address(), 4);
    std::thread::scope(|scope| {
        let upgrade = scope.spawn(|| daemon.cli(&["upgrade"]));
        wait_handing_over(&daemon, old);
        // Served by the new master, which holds their counts and the change until the
        // old one has handed over.
        post_events(&daemon, 20);
        let change = scope.spawn(|| daemon.post("/event/", r#"{"type": "audits"}"#));
        answer_the_half_sent(half_sent);
        let upgrade = upgrade.join().unwrap();
        assert!(upgrade.status.success(), "{}", stderr(&upgrade));
        let new = daemon.pidfile_pid().unwrap();
        assert_ne!(new, old, "the pidfile names the new master");
        assert!(
            stdout(&upgrade).contains(&format!("{old} -> {new}")),
            "{}",
            stdout(&upgrade)
        );
        assert_eq!(change.join().unwrap().status, 201);
    });
    // The old master exited (the test reaps it: it was its child).
    assert!(daemon.wait_exit(10 * SECOND).success());
    let new = daemon.pidfile_pid().unwrap();
    assert_eq!(status_of(&daemon)["pid"], json!(new.as_raw()));
    load.finish().assert_none_failed("during the upgrade");
    let audit = daemon.post("/event/audits/", "{}");
    assert_eq!(
        audit.status, 200,
        "the change held during the upgrade was applied"
    );

    post_events(&daemon, 21);
    wait_for("the firing at the 101st event", 10 * SECOND, || {
        !sink.requests().is_empty()
    });
    wait_for("the delivery recorded", 10 * SECOND, || {
        daemon.metric("eventsd_action_outcomes_total{action=\"webhook\",result=\"delivered\"}")
            == Some(1)
    });
    let requests = sink.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let firing: Value = serde_json::from_str(&requests[0].body).unwrap();
    assert_eq!(firing["count"], 101, "{firing}");
    let clustered = !extra.is_empty();
    assert_eq!(
        firing["crossing"].is_string(),
        clustered,
        "fired by Redis: {firing}"
    );
}

/// The new master: the old one's child that runs the binary (`eventsd`, not a worker).
fn successor_of(master: Pid) -> Option<Pid> {
    common::child_named(master, "eventsd")
}

#[test]
fn a_stop_during_the_hand_over_stops_both_masters_and_cleans_up() {
    let mut daemon = daemon_from_a_copy("");
    let old = daemon.pidfile_pid().unwrap();
    let half_sent = HalfSent::start(&daemon);
    nix::sys::signal::kill(old, Signal::SIGUSR2).unwrap();
    wait_handing_over(&daemon, old);
    let new = successor_of(old).expect("the new master runs");
    nix::sys::signal::kill(old, Signal::SIGTERM).unwrap();
    answer_the_half_sent(half_sent);
    assert!(daemon.wait_exit(20 * SECOND).success());
    wait_for("the new master gone too", 10 * SECOND, || {
        common::is_gone(new)
    });
    assert!(!daemon.pidfile().exists(), "the pidfile is removed");
    assert!(
        TcpStream::connect(daemon.address()).is_err(),
        "nothing serves"
    );
}

#[test]
fn firings_pending_before_an_upgrade_are_delivered_by_the_new_master_with_their_ids() {
    let target = dead_address();
    let mut daemon = daemon_from_a_copy("");
    assert_eq!(daemon.post("/event/", r#"{"type": "deploys"}"#).status, 201);
    let watcher = json!({"name": "every-deploy", "threshold": 1,
        "aggregator": {"type": "single"},
        "action": {"type": "webhook", "url": format!("http://{target}/hook")}});
    assert_eq!(
        daemon
            .post("/event/deploys/watcher/", &watcher.to_string())
            .status,
        201
    );
    post_events(&daemon, 2);
    let mut pending_id = None;
    wait_for("a firing in the journal", 10 * SECOND, || {
        pending_id = daemon.journaled_ids().into_iter().next();
        pending_id.is_some()
    });

    let upgrade = daemon.cli(&["upgrade"]);
    assert!(upgrade.status.success(), "{}", stderr(&upgrade));
    assert!(daemon.wait_exit(10 * SECOND).success());
    let sink = HttpSink::start_on(target, Duration::ZERO);
    wait_for("the pending firing, delivered", 20 * SECOND, || {
        !sink.requests().is_empty()
    });
    let firing: Value = serde_json::from_str(&sink.requests()[0].body).unwrap();
    assert_eq!(firing["id"].as_str(), pending_id.as_deref(), "{firing}");
}

#[test]
fn an_upgrade_to_a_broken_binary_or_config_fails_and_the_old_master_serves_on() {
    let daemon = daemon_from_a_copy("");
    let old = daemon.pidfile_pid().unwrap();

    install(&daemon.binary, b"#!/bin/sh\nexit 3\n");
    let refused = daemon.cli(&["upgrade"]);
    assert_eq!(refused.status.code(), Some(1), "{}", stdout(&refused));
    assert!(
        stderr(&refused).contains("exited with code 3"),
        "{}",
        stderr(&refused)
    );
    assert_serves_as(&daemon, old);

    // A config the new master refuses: `upgrade` says so before it signals, and a bare
    // SIGUSR2 gets a new master that exits at once.
    install(&daemon.binary, &std::fs::read(common::BINARY).unwrap());
    std::fs::write(&daemon.config, "[workers]\nmin = \"many\"\n").unwrap();
    let refused = daemon.cli(&["upgrade"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(stderr(&refused).contains("min"), "{}", stderr(&refused));
    nix::sys::signal::kill(old, Signal::SIGUSR2).unwrap();
    wait_for("the failed upgrade in the status", 20 * SECOND, || {
        status_of(&daemon)["upgrades_failed"] == 2
    });
    assert_serves_as(&daemon, old);
}

fn assert_serves_as(daemon: &Daemon, master: Pid) {
    assert_eq!(daemon.pidfile_pid(), Some(master));
    let status = status_of(daemon);
    assert_eq!(status["pid"], json!(master.as_raw()));
    assert_eq!(status["upgrade_in_progress"], false);
    assert_eq!(daemon.get("/health").unwrap().status, 200);
    daemon.wait_ready();
}

/// A reader of the pidfile at the file's own pace: what it saw that no reader may see, a
/// file that a master locked and named and that then held no whole pid (the first line).
/// A fresh file is empty for the moment between its master's lock and first write; the
/// `status` probes wait that out.
fn watch_the_pidfile(path: &Path, stop: &AtomicBool) -> Vec<String> {
    use std::os::unix::fs::FileExt;
    let mut seen = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(1));
        let Ok(mut file) = std::fs::File::open(path) else {
            continue;
        };
        let mut named = None;
        while !stop.load(Ordering::Relaxed) {
            file = match Flock::lock(file, FlockArg::LockSharedNonblock) {
                Err((held, Errno::EWOULDBLOCK)) => held,
                _no_master_holds_it => break,
            };
            let mut text = [0u8; 64];
            let n = file.read_at(&mut text, 0).unwrap();
            let text = String::from_utf8_lossy(&text[..n]).to_string();
            match (
                text.lines().next().and_then(|l| l.parse::<u32>().ok()),
                named,
            ) {
                (Some(pid), _) => named = Some(pid),
                (None, Some(last)) => seen.push(format!("{text:?} after pid {last}")),
                (None, None) => {}
            }
        }
    }
    seen
}

/// Sets its flag when dropped, panicking included.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// `status` during starts, upgrades and stops always names a pid (it read an empty
/// pidfile once in `.ci/run`), and the pidfile never holds less than a whole pid.
#[test]
fn status_racing_starts_and_upgrades_always_names_the_master() {
    let mut daemon = Daemon::new("[workers]\nmin = 1\nmax = 1\n");
    let stop = AtomicBool::new(false);
    let probes = AtomicUsize::new(0);
    let (config, pidfile) = (daemon.config.clone(), daemon.pidfile());
    let (wrong, seen) = std::thread::scope(|scope| {
        // Also when a start fails: the probers and the watcher must end for the scope to.
        let _stops_them = StopOnDrop(&stop);
        let watcher = scope.spawn(|| watch_the_pidfile(&pidfile, &stop));
        let probers: Vec<_> = (0..2)
            .map(|_| {
                scope.spawn(|| {
                    let mut wrong = Vec::new();
                    while !stop.load(Ordering::Relaxed) || probes.load(Ordering::Relaxed) < 200 {
                        let output = std::process::Command::new(common::BINARY)
                            .arg("-c")
                            .arg(&config)
                            .arg("status")
                            .output()
                            .unwrap();
                        probes.fetch_add(1, Ordering::Relaxed);
                        let said = format!("{}{}", stdout(&output), stderr(&output));
                        let named = match output.status.code() {
                            Some(0) => said.starts_with("eventsd is running (pid "),
                            Some(3) => said.starts_with("eventsd is not running"),
                            _ => false,
                        };
                        if !named {
                            wrong.push(format!("{:?}: {said}", output.status.code()));
                        }
                    }
                    wrong
                })
            })
            .collect();
        for _ in 0..10 {
            let started = daemon.start();
            assert!(started.status.success(), "{}", stderr(&started));
            let upgraded = daemon.cli_tracked(&["upgrade"]);
            assert!(upgraded.status.success(), "{}", stderr(&upgraded));
            let stopped = daemon.cli(&["stop"]);
            assert!(stopped.status.success(), "{}", stderr(&stopped));
        }
        stop.store(true, Ordering::Relaxed);
        let wrong: Vec<String> = probers
            .into_iter()
            .flat_map(|prober| prober.join().unwrap())
            .collect();
        (wrong, watcher.join().unwrap())
    });
    assert!(seen.is_empty(), "the locked pidfile held no pid: {seen:?}");
    assert!(
        wrong.is_empty(),
        "{} of {} probes named no master: {wrong:?}",
        wrong.len(),
        probes.load(Ordering::Relaxed)
    );
}
