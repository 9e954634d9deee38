//! The action runner as a process (README "Durability", "Who is stuck is known",
//! security.md "Privileges"): a crash of it loses no alert, one that stops reading is
//! replaced, and it holds no capability even as root. Against the real binary, with real
//! HTTP peers in the test process; the runner is killed and stopped with real signals.

mod common;

use common::rest::{every_second_event, post_events, register_watcher, webhook};
use common::sinks::HttpSink;
use common::{Daemon, SECOND, child_named, is_gone, proc_status, wait_for};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

fn runner(daemon: &Daemon) -> Option<Pid> {
    child_named(daemon.master_pid(), "eventsd-action")
}

/// A runner other than `old`, once the master started one.
fn replacement(daemon: &Daemon, old: Pid) -> Pid {
    let mut new = None;
    wait_for("a new action runner", 20 * SECOND, || {
        new = runner(daemon).filter(|pid| *pid != old);
        new.is_some()
    });
    new.unwrap()
}

fn firing_ids(sink: &HttpSink) -> Vec<String> {
    sink.requests()
        .iter()
        .map(|r| serde_json::from_str::<Value>(&r.body).unwrap()["id"].to_string())
        .collect()
}

#[test]
fn a_crash_of_the_action_runner_loses_no_alert() {
    let daemon = Daemon::run("");
    let sink = HttpSink::answering(&[("/hook", 503)]);
    register_watcher(
        &daemon,
        "logins",
        &every_second_event("hook", webhook(&sink.url("/hook"))),
    );
    post_events(&daemon, "logins", &json!({}), 2);
    // The runner holds the alert between two attempts when it is killed.
    wait_for("a failed attempt", 10 * SECOND, || {
        sink.requests_to("/hook") >= 1
    });
    let crashed = runner(&daemon).expect("an action runner");
    kill(crashed, Signal::SIGKILL).unwrap();
    let new = replacement(&daemon, crashed);
    assert!(is_gone(crashed));

    sink.set_statuses("/hook", &[200]);
    let tried = sink.requests_to("/hook");
    wait_for(
        "the alert, delivered by the new runner",
        20 * SECOND,
        || {
            daemon
                .metric_sum("eventsd_action_outcomes_total{action=\"webhook\",result=\"delivered\"")
                == 1
        },
    );
    assert!(sink.requests_to("/hook") > tried);
    let ids = firing_ids(&sink);
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "one alert, one id: {ids:?}"
    );
    assert_eq!(runner(&daemon), Some(new));
}

/// A runner stopped (SIGSTOP) with a heartbeat timeout of an hour stops reading and
/// beating alike; what makes the master replace it here is the 64 MiB of firings it
/// wrote and the runner did not read: 600 firings of 120 KB (a 60 KB key, in `key` and
/// in `text`), all journaled (`watchers.action_queue`); `max_keys` keeps the counters
/// (and their snapshots) small. The alert made first, while it
/// was stopped, reaches its target once those firings are gone with their watchers.
#[test]
fn an_action_runner_that_stops_reading_is_replaced_and_the_next_delivers_what_it_held() {
    let daemon = Daemon::run(
        "[workers]\nheartbeat_timeout_secs = 3600\n\
         [watchers]\nmax_key_bytes = 65536\naction_queue = 601\nmax_keys = 4\n\
         [daemon]\nlog_level = \"warn\"\n",
    );
    let flood: Vec<String> = (0..8).map(|n| format!("flood{n}")).collect();
    for name in &flood {
        let watcher = json!({"name": name, "threshold": 1,
            "aggregator": {"type": "fields", "fields": ["v"]}, "action": {"type": "null"}});
        register_watcher(&daemon, "flood", &watcher);
    }
    let sink = HttpSink::start(std::time::Duration::ZERO);
    register_watcher(
        &daemon,
        "logins",
        &every_second_event("hook", webhook(&sink.url("/hook"))),
    );
    let stopped = runner(&daemon).expect("an action runner");
    kill(stopped, Signal::SIGSTOP).unwrap();
    post_events(&daemon, "logins", &json!({}), 2);
    // Both events of a key in one bulk: counted together, before `max_keys` evicts it.
    for key in 0..75 {
        let line = json!({ "v": format!("{key:05}{}", "v".repeat(60_000)) }).to_string();
        let bulk = daemon.post("/event/flood/_bulk", &format!("{line}\n{line}\n"));
        assert_eq!(bulk.status, 200, "{bulk:?}");
    }
    // 72 MB of firings made, journaled and written: minutes of a debug build's work
    // on a loaded machine (a CPU hog on both cores: more than 60 s).
    wait_for("the stopped runner killed", 240 * SECOND, || {
        is_gone(stopped)
    });
    assert!(
        daemon.log().contains("it stopped reading"),
        "{}",
        daemon.log()
    );

    // A master busy handing 72 MB to the new runner may drop the change: 503, nothing
    // applied, "retry".
    for name in &flood {
        let path = format!("/event/flood/watcher/{name}");
        let mut status = 0;
        wait_for("the flood watcher deleted", 60 * SECOND, || {
            status = daemon.delete(&path).status;
            status != 503
        });
        assert_eq!(status, 200);
    }
    wait_for(
        "the alert made while the runner was stopped",
        60 * SECOND,
        || sink.requests_to("/hook") == 1,
    );
    assert!(runner(&daemon).is_some_and(|pid| pid != stopped));
}

/// Run as root by `scripts/test -- --ignored`.
#[test]
#[ignore = "needs root"]
fn the_action_runner_keeps_no_capability_even_as_root() {
    assert!(nix::unistd::geteuid().is_root(), "run this test as root");
    let daemon = Daemon::run("[workers]\nuser = \"root\"\n");
    let runner = runner(&daemon).expect("an action runner");
    for set in ["CapEff", "CapPrm", "CapAmb", "CapInh"] {
        let held = proc_status(runner, set).expect("the runner's status");
        assert_eq!(held, "0000000000000000", "{set}");
    }
    let master = proc_status(daemon.master_pid(), "CapEff").unwrap();
    assert_ne!(master, "0000000000000000", "the master keeps root's");
    // And it still delivers.
    let sink = HttpSink::start(std::time::Duration::ZERO);
    register_watcher(
        &daemon,
        "logins",
        &every_second_event("hook", webhook(&sink.url("/hook"))),
    );
    post_events(&daemon, "logins", &json!({}), 2);
    wait_for("the alert", 10 * SECOND, || sink.requests_to("/hook") == 1);
}
