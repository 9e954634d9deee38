//! The configuration's checks, one per kind of mistake: each names its key (and line).

use super::*;

fn parse(text: &str) -> anyhow::Result<Config> {
    Config::parse(text, Path::new("/etc/eventsd"))
}

fn error_of(text: &str) -> String {
    format!("{:#}", parse(text).expect_err("config should be rejected"))
}

#[test]
fn empty_file_gives_the_documented_defaults() {
    let config = parse("").unwrap();
    assert_eq!(config.server.listen.to_string(), "127.0.0.1:1234");
    assert_eq!((config.workers.min, config.workers.max), (2, 2));
    assert_eq!(
        config.daemon.pidfile,
        Path::new("/etc/eventsd/eventsd-data/eventsd.pid")
    );
    assert_eq!(
        config.daemon.control_socket,
        Path::new("/etc/eventsd/eventsd-data/eventsd.sock")
    );
    assert_eq!(config.daemon.log, LogTarget::Default);
}

#[test]
fn relative_paths_are_resolved_against_the_config_folder() {
    let config =
        parse("[daemon]\nstate_dir = \"data\"\npidfile = \"/run/e.pid\"\nlog = \"logs/e.log\"\n")
            .unwrap();
    assert_eq!(config.daemon.state_dir, Path::new("/etc/eventsd/data"));
    assert_eq!(config.daemon.pidfile, Path::new("/run/e.pid"));
    assert_eq!(
        config.daemon.log,
        LogTarget::File("/etc/eventsd/logs/e.log".into())
    );
}

#[test]
fn unknown_key_is_rejected_naming_key_and_line() {
    let message = error_of("[server]\nlisten = \"127.0.0.1:1\"\nbaklog = 5\n");
    assert!(message.contains("baklog"), "{message}");
    assert!(message.contains("line 3"), "{message}");
}

#[test]
fn unknown_section_is_rejected() {
    let message = error_of("[sever]\nlisten = \"127.0.0.1:1\"\n");
    assert!(message.contains("sever"), "{message}");
}

#[test]
fn bad_values_are_rejected_naming_key_and_line() {
    for (text, key, line) in [
        ("[workers]\nmin = 0\n", "min", "line 2"),
        ("[server]\nlisten = \"nowhere\"\n", "listen", "line 2"),
        (
            "\n[server]\nread_timeout_secs = -3\n",
            "read_timeout_secs",
            "line 3",
        ),
        ("[daemon]\nlog_level = \"loud\"\n", "log_level", "line 2"),
        (
            "[workers]\nheartbeat_timeout_secs = 1\n",
            "heartbeat_timeout_secs",
            "line 2",
        ),
        ("[smtp]\nport = 70000\n", "port", "line 2"),
        (
            "[server]\nread_timeout_secs = 18446744073709551615\n",
            "read_timeout_secs",
            "line 2",
        ),
        (
            "[workers]\ngraceful_timeout_secs = 9223372036854775807\n",
            "between 0 and 86400",
            "line 2",
        ),
        ("[server]\nmax_body_bytes = 0\n", "between 1 and", "line 2"),
        ("[watchers]\nmax_keys = 0\n", "max_keys", "line 2"),
    ] {
        let message = error_of(text);
        assert!(message.contains(key), "{text:?}: {message}");
        assert!(message.contains(line), "{text:?}: {message}");
    }
}

#[test]
fn a_declared_appender_may_not_name_eventsds_own_files() {
    for path in ["/etc/eventsd/eventsd-data/registry.json", "/var/log/e.log"] {
        let message = error_of(&format!(
            "[daemon]\nlog = \"/var/log/e.log\"\n[[event]]\ntype = \"logins\"\n\
             [[event.collector]]\nname = \"audit\"\nappender = {{ type = \"file\", path = \"{path}\" }}\n"
        ));
        assert!(message.contains("eventsd's own files"), "{path}: {message}");
        assert!(message.contains("collector `audit`"), "{path}: {message}");
    }
}

#[test]
fn a_key_limit_too_small_for_the_fields_is_rejected() {
    let message = error_of("[watchers]\nmax_fields = 16\nmax_key_bytes = 64\n");
    assert!(message.contains("watchers.max_key_bytes (64)"), "{message}");
    assert!(parse("[watchers]\nmax_fields = 2\nmax_key_bytes = 64\n").is_ok());
}

#[test]
fn min_above_max_is_rejected() {
    let message = error_of("[workers]\nmin = 3\nmax = 2\n");
    assert!(message.contains("workers.min (3)"), "{message}");
}

#[test]
fn unknown_user_is_rejected() {
    let message = error_of("[workers]\nuser = \"no-such-user-eventsd\"\n");
    assert!(message.contains("workers.user"), "{message}");
}

#[test]
fn relative_chroot_is_rejected() {
    let message = error_of("[workers]\nchroot = \"jail\"\n");
    assert!(message.contains("workers.chroot"), "{message}");
}

#[test]
fn overlong_control_socket_path_is_rejected() {
    let long = "x".repeat(120);
    let message = error_of(&format!("[daemon]\ncontrol_socket = \"/{long}\"\n"));
    assert!(message.contains("daemon.control_socket"), "{message}");
}
