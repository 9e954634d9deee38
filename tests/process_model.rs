//! Promises of the process model (README "Signals", "Control", "Configuration") that no
//! other file holds: SIGUSR2 is the master's alone, a changed `listen` is bound anew on
//! reload, `stop --timeout` bounds the wait, and workers run in `workers.chroot` (root).

mod common;

use common::{Daemon, HalfSent, SECOND, child_named, config_text, free_port, wait_for};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Whether `pid` ignores SIGUSR2 (its bit in `SigIgn` of `/proc/PID/status`).
fn ignores_sigusr2(pid: Pid) -> bool {
    let mask = common::proc_status(pid, "SigIgn").expect("the process runs");
    let mask = u64::from_str_radix(&mask, 16).expect("SigIgn is hexadecimal");
    mask & (1 << (Signal::SIGUSR2 as u64 - 1)) != 0
}

#[test]
fn sigusr2_is_ignored_by_the_workers_and_the_action_runner() {
    let daemon = Daemon::run("[workers]\nmin = 2\nmax = 2\n");
    let master = daemon.master_pid();
    let workers = daemon.serving_workers();
    let runner = child_named(master, "eventsd-action").expect("an action runner");
    let children: Vec<Pid> = workers.iter().copied().chain([runner]).collect();
    for child in &children {
        assert!(ignores_sigusr2(*child), "{child} ignores SIGUSR2");
        kill(*child, Signal::SIGUSR2).unwrap();
    }
    // Every worker serves again after the signal; none was replaced, nor the master.
    let mut served = std::collections::BTreeSet::new();
    wait_for("both workers serving", 20 * SECOND, || {
        let reply = daemon.get("/health").expect("eventsd answers");
        served.insert(reply.json()["worker"].as_i64().unwrap() as i32);
        served.len() == 2
    });
    let expected: std::collections::BTreeSet<i32> = workers.iter().map(|p| p.as_raw()).collect();
    assert_eq!(served, expected);
    assert_eq!(daemon.serving_workers(), workers);
    assert_eq!(child_named(master, "eventsd-action"), Some(runner));
    assert_eq!(daemon.master_pid(), master, "no upgrade started");
    assert!(
        children
            .iter()
            .all(|pid| common::process_state(*pid) != Some('Z'))
    );
}

#[test]
fn a_changed_listen_is_bound_anew_on_reload() {
    let mut daemon = Daemon::run("");
    let old = daemon.address();
    let port = free_port();
    std::fs::write(&daemon.config, config_text(port, "")).unwrap();
    let reload = daemon.cli(&["reload"]);
    assert!(reload.status.success(), "{}", common::stderr(&reload));

    daemon.port = port;
    wait_for("the new address served", 20 * SECOND, || {
        daemon.get("/health").is_ok_and(|r| r.status == 200)
    });
    wait_for("the old address closed", 20 * SECOND, || {
        std::net::TcpStream::connect(old).is_err()
    });
    assert!(
        daemon
            .log()
            .contains(&format!("now listening on 127.0.0.1:{port}"))
    );
}

#[test]
fn stop_timeout_bounds_the_wait_and_says_eventsd_still_runs() {
    let mut daemon = Daemon::new("[workers]\nmin = 1\nmax = 1\ngraceful_timeout_secs = 600\n");
    let started = daemon.start();
    assert!(started.status.success(), "{}", common::stderr(&started));
    let master = daemon.pidfile_pid().expect("a pidfile");
    let in_flight = HalfSent::start(&daemon);

    let stop = daemon.cli(&["stop", "--timeout", "1"]);
    assert_eq!(stop.status.code(), Some(1), "{}", common::stdout(&stop));
    let said = common::stderr(&stop);
    assert!(
        said.contains(&format!("still running (pid {master}) 1s after")),
        "{said}"
    );
    assert!(!common::is_gone(master), "the master drains on");

    let reply = in_flight
        .finish()
        .expect("the in-flight request is answered");
    assert_eq!(reply.status, 200);
    let stop = daemon.cli(&["stop", "--timeout", "60"]);
    assert_eq!(stop.status.code(), Some(0), "{}", common::stderr(&stop));
    // The pidfile is released last thing before the exit; then gone, or a zombie its
    // reaper (init) has yet to collect.
    wait_for("the master gone", 10 * SECOND, || {
        common::is_gone(master) || common::process_state(master) == Some('Z')
    });
}

/// Run as root by `scripts/test -- --ignored`.
#[test]
#[ignore = "needs root"]
fn workers_run_in_workers_chroot() {
    assert!(nix::unistd::geteuid().is_root(), "run this test as root");
    let jail = tempfile::tempdir().unwrap();
    let jail_path = jail.path().canonicalize().unwrap();
    let daemon = Daemon::run(&format!(
        "[workers]\nmin = 2\nmax = 2\nchroot = \"{}\"\n",
        jail_path.display()
    ));
    for worker in daemon.serving_workers() {
        let root = std::fs::read_link(format!("/proc/{worker}/root")).unwrap();
        assert_eq!(root, jail_path, "worker {worker}");
    }
    let master = daemon.master_pid();
    let master_root = std::fs::read_link(format!("/proc/{master}/root")).unwrap();
    assert_eq!(
        master_root,
        std::path::Path::new("/"),
        "the master is not jailed"
    );
    assert_eq!(daemon.get("/health").unwrap().status, 200);
    assert_eq!(daemon.post("/event/", r#"{"type": "logins"}"#).status, 201);
    assert_eq!(daemon.post("/event/logins/", "{}").status, 200);
}
