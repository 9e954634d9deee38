//! security.md, replayed against the real binary (as root in CI): what a client can make
//! eventsd write, open or block on, and the config values it refuses. Each test is an
//! attack; each shows the victim unchanged and the daemon still answering.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::rest::{assert_error, file_collector, register};
use common::{Daemon, stderr};

fn collector_at(daemon: &Daemon, path: &Path) -> common::Response {
    daemon.post("/event/logins/collector/", &file_collector(path))
}

#[test]
fn a_client_file_appender_outside_file_dirs_is_refused_and_nothing_is_written() {
    let daemon = Daemon::run("");
    register(&daemon, "logins");
    let target = format!("/etc/profile.d/eventsd-attack-{}.sh", daemon.port);
    let refused = collector_at(&daemon, Path::new(&target));
    assert_error(&refused, 403, "collectors.file_dirs");
    let posted = daemon.post("/event/logins/", r#"{"$(id > /tmp/p)": 1}"#);
    assert_eq!(posted.status, 200);
    assert!(!Path::new(&target).exists(), "{target} was created");
    assert_eq!(daemon.get("/health").unwrap().status, 200);
}

#[test]
fn without_file_dirs_no_client_may_register_a_file_appender() {
    let daemon = Daemon::run("[collectors]\nfile_dirs = []\n");
    register(&daemon, "logins");
    let refused = collector_at(&daemon, &daemon.path("events.jsonl"));
    assert_error(&refused, 403, "none is set");
}

#[test]
fn appenders_aimed_at_eventsds_own_files_are_refused_and_those_files_untouched() {
    let daemon = Daemon::run("");
    register(&daemon, "logins");
    let registry = daemon.path("state/registry.json");
    let before = std::fs::read(&registry).unwrap();
    for own in [
        registry.clone(),
        daemon.pidfile(),
        daemon.path("daemon.log"),
    ] {
        assert_error(&collector_at(&daemon, &own), 403, "eventsd's own files");
    }
    assert_eq!(std::fs::read(&registry).unwrap(), before);
    assert_eq!(daemon.cli(&["status"]).status.code(), Some(0));
}

#[test]
fn a_path_with_dot_dot_or_a_newline_is_refused() {
    let daemon = Daemon::run("");
    register(&daemon, "logins");
    let climbing = daemon.path("../../etc/profile.d/x.sh");
    assert_error(&collector_at(&daemon, &climbing), 400, "`..`");
    let forging = daemon.path("x.jsonl\nmaster[1]: forged line");
    assert_error(&collector_at(&daemon, &forging), 400, "control character");
    assert!(!daemon.log().contains("forged line"));
}

#[test]
fn a_fifo_at_an_appender_path_fails_the_event_and_blocks_no_worker() {
    let daemon = Daemon::run("[workers]\nmin = 1\nmax = 1\n");
    register(&daemon, "logins");
    let fifo = daemon.path("events.jsonl");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    assert_eq!(collector_at(&daemon, &fifo).status, 201);
    let started = Instant::now();
    assert_error(&daemon.post("/event/logins/", "{}"), 503, "FIFO");
    assert_eq!(daemon.get("/health").unwrap().status, 200);
    // Far below the 30 s a blocked open() held the worker before.
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn a_symlink_at_an_appender_path_is_never_followed() {
    let daemon = Daemon::run("");
    register(&daemon, "logins");
    let victim = daemon.path("victim");
    std::fs::write(&victim, "root's file\n").unwrap();
    let link = daemon.path("events.jsonl");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    assert_eq!(collector_at(&daemon, &link).status, 201);
    assert_error(&daemon.post("/event/logins/", "{}"), 503, "symlink");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "root's file\n");
}

#[test]
fn out_of_range_config_values_are_refused_by_configtest_with_the_key_and_range() {
    for (section, key, value, range) in [
        (
            "server",
            "read_timeout_secs",
            "18446744073709551615",
            "between 1 and 3600",
        ),
        (
            "workers",
            "graceful_timeout_secs",
            "9223372036854775807",
            "between 0 and 86400",
        ),
        ("server", "max_body_bytes", "0", "between 1 and 1073741824"),
    ] {
        // Written as is: the harness's TOML overlay cannot even hold 2^64-1.
        let daemon = Daemon::new("");
        std::fs::write(&daemon.config, format!("[{section}]\n{key} = {value}\n")).unwrap();
        let output = daemon.cli(&["configtest"]);
        assert_eq!(output.status.code(), Some(1), "{key} = {value}");
        let message = stderr(&output);
        assert!(message.contains(key), "{key}: {message}");
        assert!(message.contains(range), "{key}: {message}");
    }
}
