//! The control CLI table of process-model.md, one test per row, against the real binary.

mod common;

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;

use common::{Daemon, SECOND, exists, is_gone, stderr, stdout, wait_for};
use nix::sys::signal::{Signal, kill};

fn started(extra: &str) -> Daemon {
    let mut daemon = Daemon::new(extra);
    let output = daemon.start();
    assert!(output.status.success(), "start failed: {}", stderr(&output));
    daemon
}

#[test]
fn start_returns_once_the_daemon_serves() {
    let daemon = started("");
    let master = daemon.pidfile_pid().expect("pidfile written");
    // No polling: `start` promised the daemon serves when it returns.
    let health = daemon.get("/health").expect("serving right after start");
    assert_eq!(health.status, 200);
    let output = daemon.cli(&["status"]);
    assert_eq!(output.status.code(), Some(0));
    assert!(stdout(&output).contains(&format!("eventsd is running (pid {master}")));
    assert_eq!(daemon.serving_workers().len(), 2);
}

#[test]
fn start_while_running_succeeds_as_lsb_says_and_leaves_the_daemon_untouched() {
    let mut daemon = started("");
    let master = daemon.pidfile_pid().unwrap();
    let workers = daemon.serving_workers();

    let second = daemon.start();
    assert_eq!(
        second.status.code(),
        Some(0),
        "LSB: start of a running service"
    );
    let said = stdout(&second);
    assert!(said.contains("already running"), "{said}");
    assert!(said.contains(&master.to_string()), "{said}");

    assert_eq!(daemon.pidfile_pid(), Some(master));
    assert_eq!(daemon.serving_workers(), workers);
    assert_eq!(daemon.get("/health").unwrap().status, 200);
}

#[test]
fn start_with_the_port_taken_fails_with_the_reason() {
    let mut daemon = Daemon::new("");
    let _taken = TcpListener::bind(daemon.address()).unwrap();
    let output = daemon.start();
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(
        message.contains(&format!("cannot listen on 127.0.0.1:{}", daemon.port)),
        "{message}"
    );
    assert!(message.contains("in use"), "{message}");
    assert!(!daemon.pidfile().exists(), "pidfile left behind");
}

#[test]
fn start_with_an_invalid_config_fails_naming_the_key() {
    let mut daemon = Daemon::new("[workers]\nmin = 0\n");
    let output = daemon.start();
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("min"), "{}", stderr(&output));
    assert!(!daemon.pidfile().exists());
}

#[test]
fn stop_waits_for_a_graceful_exit_and_is_idempotent() {
    let daemon = started("");
    let master = daemon.pidfile_pid().unwrap();
    let workers = daemon.serving_workers();

    let output = daemon.cli(&["stop"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(stdout(&output).contains("stopped"));
    assert!(!daemon.pidfile().exists());
    assert!(workers.iter().all(|pid| is_gone(*pid)));
    assert!(
        daemon
            .log()
            .contains(&format!("master[{master}]: eventsd stopped"))
    );

    let again = daemon.cli(&["stop"]);
    assert_eq!(again.status.code(), Some(0));
    assert!(stdout(&again).contains("not running"));
}

#[test]
fn eventsctl_has_every_command_but_run_and_drives_the_same_daemon() {
    let mut daemon = Daemon::new("");
    let refused = daemon.ctl(&["run"]);
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    assert!(stderr(&refused).contains("'run'"), "{}", stderr(&refused));
    assert!(
        !daemon.pidfile().exists(),
        "`eventsctl run` started something"
    );

    let started = daemon.ctl_tracked(&["start"]);
    assert!(started.status.success(), "{}", stderr(&started));
    let master = daemon.pidfile_pid().expect("pidfile written");
    assert_eq!(daemon.get("/health").unwrap().status, 200);
    let status = daemon.ctl(&["status"]);
    assert_eq!(status.status.code(), Some(0));
    assert!(stdout(&status).contains(&format!("eventsd is running (pid {master}")));
    let reloaded = daemon.ctl(&["reload"]);
    assert!(reloaded.status.success(), "{}", stderr(&reloaded));
    assert_eq!(daemon.status().unwrap()["reloads"], 1);

    let stopped = daemon.ctl(&["stop"]);
    assert!(stopped.status.success(), "{}", stderr(&stopped));
    wait_for("the master to exit", 5 * SECOND, || is_gone(master));
    assert_eq!(daemon.cli(&["status"]).status.code(), Some(3));
}

#[test]
fn completions_come_from_each_programs_own_definition() {
    let daemon = Daemon::new("");
    let eventsd = daemon.cli(&["completions", "fish"]);
    let eventsctl = daemon.ctl(&["completions", "fish"]);
    assert!(eventsd.status.success() && eventsctl.status.success());
    let (eventsd, eventsctl) = (stdout(&eventsd), stdout(&eventsctl));
    for command in ["start", "reload", "fullstatus", "configtest"] {
        let offered = format!("-a \"{command}\"");
        assert!(
            eventsd.contains(&offered) && eventsctl.contains(&offered),
            "{command}"
        );
    }
    assert!(eventsd.contains("-a \"run\""));
    assert!(!eventsctl.contains("-a \"run\""), "eventsctl has no run");
    let bash = stdout(&daemon.ctl(&["completions", "bash"]));
    assert!(bash.contains("complete -F _eventsctl"), "{bash}");
}

/// The man page is written by hand (its FILES, SIGNALS and EXIT STATUS sections say more
/// than a generator could), so this keeps it from drifting from the CLI definition:
/// every command `eventsd --help` lists has its entry, and so has the README's table.
#[test]
fn the_man_page_and_the_readme_document_every_command() {
    let daemon = Daemon::new("");
    let help = stdout(&daemon.cli(&["--help"]));
    let commands: Vec<&str> = help
        .lines()
        .skip_while(|line| *line != "Commands:")
        .skip(1)
        .take_while(|line| !line.is_empty())
        .filter_map(|line| line.split_whitespace().next())
        .filter(|command| *command != "help")
        .collect();
    assert!(commands.len() >= 10, "{help}");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let man = std::fs::read_to_string(root.join("packaging/eventsd.8")).unwrap();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    for command in commands {
        let entry = command.replace('-', "\\-");
        assert!(
            man.lines()
                .any(|line| line.starts_with(".B") && line.contains(&entry)),
            "eventsd.8 has no entry for `{command}`"
        );
        let cell = format!("`{command}");
        assert!(
            readme
                .lines()
                .any(|line| line.starts_with("| `") && line.contains(&cell)),
            "README.md's command table has no row for `{command}`"
        );
    }
}

#[test]
fn hard_stop_kills_the_workers_and_exits() {
    let daemon = started("");
    let workers = daemon.serving_workers();
    let output = daemon.cli(&["hard-stop"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(!daemon.pidfile().exists());
    assert!(workers.iter().all(|pid| is_gone(*pid)));
    assert!(daemon.log().contains("fast stop (SIGQUIT)"));
}

#[test]
fn restart_and_hard_restart_replace_the_master() {
    let mut daemon = started("");
    for command in ["restart", "hard-restart"] {
        let before = daemon.pidfile_pid().unwrap();
        let output = daemon.cli_tracked(&[command]);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{command}: {}",
            stderr(&output)
        );
        let after = daemon.pidfile_pid().unwrap();
        assert_ne!(before, after, "{command} kept the master");
        assert_eq!(daemon.get("/health").unwrap().status, 200, "{command}");
    }
}

#[test]
fn reload_validates_the_config_itself_and_does_not_send_a_bad_one() {
    let daemon = started("");
    std::fs::write(&daemon.config, "[workers]\nmni = 2\n").unwrap();
    let output = daemon.cli(&["reload"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("mni"), "{}", stderr(&output));
    assert!(stderr(&output).contains("line 2"), "{}", stderr(&output));
    assert_eq!(
        daemon.status().unwrap()["reloads"],
        0,
        "a bad config was sent"
    );
}

#[test]
fn reload_returns_once_the_new_generation_serves() {
    let daemon = started("");
    let old = daemon.serving_workers();
    let output = daemon.cli(&["reload"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("generation 2"),
        "{}",
        stdout(&output)
    );
    let new = daemon.serving_workers();
    assert_eq!(new.len(), 2);
    assert!(new.iter().all(|pid| !old.contains(pid)));
}

#[test]
fn status_uses_the_lsb_exit_codes() {
    let daemon = Daemon::new("");
    // Each says where it looked: a daemon started with another pidfile is not found.
    let not_running = format!(
        "eventsd is not running (pidfile {})",
        daemon.pidfile().display()
    );
    let output = daemon.cli(&["status"]);
    assert_eq!(output.status.code(), Some(3), "not running");
    assert!(
        stderr(&output).contains(&not_running),
        "{}",
        stderr(&output)
    );
    // (command, its LSB exit code, whether it says so on stdout rather than stderr)
    let commands = [
        ("reload", 7, false),
        ("upgrade", 7, false),
        ("reopen", 7, false),
        ("stop", 0, true),
    ];
    for (command, code, on_stdout) in commands {
        let output = daemon.ctl(&[command]);
        assert_eq!(
            output.status.code(),
            Some(code),
            "LSB: {command} when not running"
        );
        let said = if on_stdout {
            stdout(&output)
        } else {
            stderr(&output)
        };
        assert!(said.contains(&not_running), "{command}: {said}");
    }

    let mut daemon = daemon;
    assert!(daemon.start().status.success());
    assert_eq!(daemon.cli(&["status"]).status.code(), Some(0), "running");

    let master = daemon.pidfile_pid().unwrap();
    kill(master, Signal::SIGKILL).unwrap();
    wait_for("the master's lock to be released", 5 * SECOND, || {
        daemon.cli(&["status"]).status.code() == Some(1)
    });
    let output = daemon.cli(&["status"]);
    assert!(
        stderr(&output).contains("dead but its pidfile remains"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn fullstatus_prints_phpd_totals_and_a_row_per_worker() {
    let daemon = started("");
    let workers = daemon.serving_workers();
    wait_for("idle workers", 5 * SECOND, || {
        stdout(&daemon.cli(&["fullstatus"]))
            .contains("Total: 2  Idle: 2  Busy: 0  Shutdown: 0  Init: 0")
    });
    let table = stdout(&daemon.cli(&["fullstatus"]));
    assert!(table.contains("PID"), "{table}");
    assert!(table.contains("RSS"), "{table}");
    for pid in &workers {
        let row = table
            .lines()
            .find(|line| line.trim_start().starts_with(&pid.to_string()));
        let row = row.unwrap_or_else(|| panic!("no row for worker {pid}: {table}"));
        assert!(row.contains("idle") && row.contains("MiB"), "{row}");
    }

    let output = daemon.cli(&["fullstatus", "--json"]);
    assert_eq!(output.status.code(), Some(0));
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let rows = status["workers"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for row in rows {
        for field in [
            "pid",
            "state",
            "uptime_secs",
            "requests",
            "connections",
            "rss_bytes",
        ] {
            assert!(!row[field].is_null(), "{field} missing: {row}");
        }
        assert!(row["rss_bytes"].as_u64().unwrap() > 0);
    }
}

#[test]
fn the_control_socket_is_private() {
    let daemon = started("");
    let mode = std::fs::metadata(daemon.control_socket())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn configtest_says_ok_or_names_the_key_and_line() {
    let daemon = Daemon::new("[workers]\nmin = 1\n");
    let output = daemon.cli(&["configtest"]);
    assert_eq!(output.status.code(), Some(0));
    assert!(stdout(&output).contains("syntax is ok"));

    std::fs::write(
        &daemon.config,
        "[server]\nlisten = \"127.0.0.1:8080\"\n\n[workers]\nmaxx = 4\n",
    )
    .unwrap();
    let output = daemon.cli(&["configtest"]);
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(
        message.contains("maxx") && message.contains("line 5"),
        "{message}"
    );
}

/// Values that parse but would fail at start, reload or the first delivery: refused by
/// configtest, the key named, in people's words.
#[test]
fn configtest_rejects_what_would_fail_later_naming_the_key() {
    let watcher = |action: &str| {
        format!(
            "[[event]]\ntype = \"shop\"\n[[event.watcher]]\nname = \"storm\"\nthreshold = 1\n\
             aggregator = {{type = \"single\"}}\naction = {action}\n"
        )
    };
    let rows = [
        (
            "[smtp]\nfrom = \"not an address\"\n".to_string(),
            "smtp.from",
        ),
        ("[smtp]\nport = 0\n".to_string(), "smtp.port"),
        (
            "[actions]\nwebhook_allow = [\"ftp://x\"]\n".to_string(),
            "actions.webhook_allow",
        ),
        (
            format!(
                "[actions]\nwebhook_deny = [\"10.0.0.0/8\"]\n{}",
                watcher(r#"{type = "webhook", url = "http://10.1.2.3/hook"}"#)
            ),
            "watcher `storm`: webhooks may not reach 10.1.2.3",
        ),
        (
            watcher(r#"{type = "command", argv = ["/nonexistent/program"]}"#),
            "command `/nonexistent/program` is not an executable file",
        ),
        (
            "[server]\nread_timeout_secs = \"15s\"\n".to_string(),
            "server.read_timeout_secs: expected a whole number, found \"15s\" (line 2)",
        ),
        (
            "[server]\nlisten = \"localhost:1234\"\n".to_string(),
            "server.listen: expected IP:PORT",
        ),
        (
            "[silences]\nmax_duration_secs = 10\n".to_string(),
            "silences.max_duration_secs: must be between 60",
        ),
        (
            "[alerts]\nhistory = 0\n".to_string(),
            "alerts.history: must be between 1",
        ),
    ];
    let daemon = Daemon::new("");
    for (text, says) in rows {
        std::fs::write(&daemon.config, &text).unwrap();
        let output = daemon.cli(&["configtest"]);
        assert_eq!(output.status.code(), Some(1), "{text}");
        let message = stderr(&output);
        assert!(message.contains(says), "{text}\n{message}");
    }

    let missing = daemon.path("missing");
    let state_dir = missing.join("state");
    std::fs::write(
        &daemon.config,
        format!("[daemon]\nstate_dir = \"{}\"\n", state_dir.display()),
    )
    .unwrap();
    for command in ["configtest", "start"] {
        let output = daemon.cli(&[command]);
        assert_eq!(output.status.code(), Some(1), "{command}");
        assert!(stderr(&output).contains("daemon.state_dir"), "{command}");
    }
    assert!(!exists(&missing), "no chain of folders created");
}

#[test]
fn dash_t_tests_the_configuration_as_nginx_does_and_version_names_the_commit() {
    let daemon = Daemon::new("");
    let output = daemon.cli(&["-t"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(stdout(&output).contains("syntax is ok"));
    std::fs::write(&daemon.config, "[workers]\nmin = \"two\"\n").unwrap();
    let output = daemon.cli(&["-t"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("workers.min"),
        "{}",
        stderr(&output)
    );

    for program in [common::BINARY, common::CTL] {
        let output = std::process::Command::new(program)
            .arg("--version")
            .output()
            .unwrap();
        let version = stdout(&output);
        // Built from a git checkout (as CI's clone is), the commit is known.
        assert!(
            version.contains(env!("CARGO_PKG_VERSION")) && version.contains("(commit "),
            "{version}"
        );
    }
}

#[test]
fn reopen_makes_the_master_and_its_children_reopen_their_logs() {
    let daemon = started("");
    let log = daemon.path("daemon.log");
    std::fs::rename(&log, daemon.path("daemon.log.1")).unwrap();
    let output = daemon.ctl(&["reopen"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let master = daemon.pidfile_pid().unwrap();
    wait_for("the master to write to the new file", 5 * SECOND, || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains(&format!("master[{master}]: reopened log files"))
    });
}

/// A user who may read the config but not the pidfile's folder cannot tell whether
/// eventsd runs: LSB 4 with the reason, never "not running". Run as root by `.ci/run`.
#[test]
#[ignore = "needs root"]
fn status_as_a_user_who_cannot_read_the_pidfile_says_unknown_not_stopped() {
    let daemon = started("");
    // The config readable by everyone; the state folder stays eventsd's (0750).
    std::fs::set_permissions(daemon.path(""), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&daemon.config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let output = daemon.cli_as(65_534, &["status"]);
    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("cannot tell"),
        "{}",
        stderr(&output)
    );
}

/// Removes the packaged config path this test wrote, also when it fails.
struct PackagedConfig(&'static Path);

impl Drop for PackagedConfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.0);
        let _ = std::fs::remove_dir(self.0.parent().unwrap());
    }
}

/// Without `-c` or `EVENTSD_CONFIG`, the CLI reads `/etc/eventsd/eventsd.toml`, as nginx
/// reads its packaged config. Run as root by `.ci/run`, before the package is installed.
#[test]
#[ignore = "needs root"]
fn the_cli_without_c_finds_the_daemon_of_the_packaged_config() {
    let packaged = Path::new("/etc/eventsd/eventsd.toml");
    assert!(
        !exists(packaged),
        "{} exists: this test writes it, remove the package first",
        packaged.display()
    );
    let mut daemon = Daemon::new("");
    let text = std::fs::read_to_string(&daemon.config).unwrap().replace(
        "state_dir = \"state\"",
        &format!("state_dir = \"{}\"", daemon.path("state").display()),
    );
    let text = text.replace(
        "log = \"daemon.log\"",
        &format!("log = \"{}\"", daemon.path("daemon.log").display()),
    );
    std::fs::create_dir_all(packaged.parent().unwrap()).unwrap();
    let _cleanup = PackagedConfig(packaged);
    std::fs::write(packaged, text).unwrap();
    daemon.config = packaged.to_path_buf();
    assert!(daemon.start().status.success());
    let master = daemon.pidfile_pid().unwrap();

    let output = std::process::Command::new(common::CTL)
        .arg("status")
        .env_remove("EVENTSD_CONFIG")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        stdout(&output).contains(&format!("pid {master}")),
        "{}",
        stdout(&output)
    );
}

/// `[daemon] include`, nginx's `conf.d`: files laid over the main one in name order, each
/// error naming its file, key and line; read again on reload.
#[test]
fn included_files_add_event_types_and_override_keys_in_name_order() {
    let mut daemon =
        Daemon::new("[daemon]\ninclude = [\"conf.d/*.toml\"]\n[workers]\nmin = 2\nmax = 2\n");
    let conf_d = daemon.path("conf.d");
    std::fs::create_dir(&conf_d).unwrap();
    std::fs::write(conf_d.join("20-pool.toml"), "[workers]\nmin = 1\nmax = 1\n").unwrap();
    std::fs::write(conf_d.join("10-pool.toml"), "[workers]\nmin = 3\nmax = 3\n").unwrap();
    std::fs::write(conf_d.join("30-shop.toml"), "[[event]]\ntype = \"shop\"\n").unwrap();
    std::fs::write(conf_d.join("notes.txt"), "not a config file").unwrap();

    std::fs::write(conf_d.join("40-bad.toml"), "[server]\nbacklog = \"many\"\n").unwrap();
    let output = daemon.cli(&["configtest"]);
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(
        message.contains("40-bad.toml")
            && message.contains("server.backlog")
            && message.contains("line 2"),
        "{message}"
    );
    std::fs::remove_file(conf_d.join("40-bad.toml")).unwrap();

    daemon.spawn_foreground(&[]);
    daemon.wait_ready();
    assert_eq!(daemon.workers().len(), 1, "20-pool.toml comes last");
    assert_eq!(daemon.get("/event/shop").unwrap().status, 200);

    std::fs::write(conf_d.join("50-blog.toml"), "[[event]]\ntype = \"blog\"\n").unwrap();
    daemon.signal(Signal::SIGHUP);
    wait_for(
        "the included blog type after the reload",
        10 * SECOND,
        || daemon.get("/event/blog").is_ok_and(|r| r.status == 200),
    );
    assert_eq!(daemon.get("/event/shop").unwrap().status, 200);
}

/// What no webhook could satisfy, or no delivery could send, is the operator's error
/// to see at once: an allow prefix that is no URL, a declared webhook that sets a header
/// framing the request.
#[test]
fn configtest_refuses_an_allow_prefix_that_is_no_url_and_a_framing_header() {
    for (config, mentions) in [
        (
            "[actions]\nwebhook_allow = [\"hooks.slack.com\"]\n",
            "actions.webhook_allow",
        ),
        (
            "[[event]]\ntype = \"logins\"\n[[event.watcher]]\nname = \"hook\"\nthreshold = 1\n\
             aggregator = { type = \"single\" }\naction = { type = \"webhook\", \
             url = \"http://192.0.2.1/\", headers = { Host = \"x\" } }\n",
            "`Host` frames or routes",
        ),
    ] {
        let daemon = Daemon::new(config);
        let output = daemon.cli(&["configtest"]);
        assert_eq!(output.status.code(), Some(1), "{config}");
        let message = stderr(&output);
        assert!(message.contains(mentions), "{config}: {message}");
    }
}

#[test]
fn configtest_refuses_a_snapshot_timeout_out_of_its_range() {
    for bad in ["0", "3601", "\"30\""] {
        let daemon = Daemon::new(&format!("[watchers]\nsnapshot_timeout_secs = {bad}\n"));
        let output = daemon.cli(&["configtest"]);
        assert_eq!(output.status.code(), Some(1), "{bad}");
        let message = stderr(&output);
        assert!(
            message.contains("snapshot_timeout_secs"),
            "{bad}: {message}"
        );
    }
}

#[test]
fn configtest_without_a_config_file_checks_the_built_in_defaults() {
    let packaged = Path::new("/etc/eventsd/eventsd.toml");
    let output = std::process::Command::new(common::BINARY)
        .arg("configtest")
        .env_remove("EVENTSD_CONFIG")
        .output()
        .unwrap();
    // Where the package is installed, its config is the one read.
    let expected = if exists(packaged) {
        "/etc/eventsd/eventsd.toml syntax is ok"
    } else {
        "built-in defaults syntax is ok"
    };
    assert!(stdout(&output).contains(expected), "{}", stdout(&output));
}

#[test]
fn run_tells_systemd_ready_reloading_and_stopping() {
    let mut daemon = Daemon::new("[workers]\nmin = 1\nmax = 1\n");
    let socket_path = daemon.path("notify.sock");
    let systemd = UnixDatagram::bind(&socket_path).unwrap();
    systemd.set_read_timeout(Some(10 * SECOND)).unwrap();
    let next = || {
        let mut buffer = [0u8; 256];
        let n = systemd.recv(&mut buffer).expect("a notification");
        String::from_utf8_lossy(&buffer[..n]).into_owned()
    };
    daemon.spawn_foreground(&[("NOTIFY_SOCKET", socket_path.to_str().unwrap())]);
    assert_eq!(next(), "READY=1");
    // Ready means serving: no retry needed.
    assert_eq!(daemon.get("/health").unwrap().status, 200);

    daemon.signal(Signal::SIGHUP);
    assert_eq!(next(), "RELOADING=1");
    assert_eq!(next(), "READY=1");
    daemon.signal(Signal::SIGTERM);
    assert_eq!(next(), "STOPPING=1");
    assert!(daemon.wait_exit(10 * SECOND).success());
}

/// `ps` tells the roles apart, as nginx's processes: the master shows its command line,
/// each child its role (process-model.md, "Operated like nginx, part two").
#[test]
fn ps_shows_each_process_by_its_role() {
    let daemon = common::Daemon::run("[workers]\nmin = 2\nmax = 2\n");
    let command_line = |pid: &str| {
        let bytes = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        String::from_utf8_lossy(&bytes)
            .trim_end_matches('\0')
            .replace('\0', " ")
    };
    let master = daemon.master_pid().to_string();
    let shown = command_line(&master);
    assert!(
        shown.starts_with("eventsd: master process ") && shown.ends_with(" run"),
        "{shown}"
    );
    let children =
        std::fs::read_to_string(format!("/proc/{master}/task/{master}/children")).unwrap();
    let mut titles: Vec<String> = children.split_whitespace().map(command_line).collect();
    titles.sort();
    assert_eq!(
        titles,
        [
            "eventsd: action runner",
            "eventsd: worker process",
            "eventsd: worker process"
        ],
        "{children}"
    );
}

/// The pidfile is readable by every user whatever the umask (systemd's is 027), so that
/// `status` works for anyone who may read the config.
#[test]
fn the_pidfile_is_readable_by_all_whatever_the_umask() {
    let mut daemon = Daemon::new("");
    daemon.spawn_foreground_under(&["sh", "-c", "umask 027; exec \"$0\" \"$@\""], &[]);
    daemon.wait_ready();
    let mode = std::fs::metadata(daemon.pidfile())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o644, "{mode:o}");
}
