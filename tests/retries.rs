//! Which delivery failures are retried (README "Retries"): HTTP 5xx, 408 and 429 and
//! SMTP 4xx are tried again, any other 4xx and SMTP 5xx never; `smtp.starttls` is refused
//! by a relay that offers no STARTTLS, and credentials go over TLS only. Against the real
//! binary, with sinks in the test process told to fail.

mod common;

use common::rest::{email, every_second_event, post_events, register_watcher, webhook};
use common::sinks::{HttpSink, SmtpSink};
use common::{Daemon, SECOND, wait_for};
use serde_json::json;

/// Paths answered with a transient failure once, then 200.
const TRANSIENT: [u16; 5] = [500, 502, 503, 408, 429];
/// Paths answered with a permanent failure once, then 200 (a retry would be taken).
const PERMANENT: [u16; 4] = [400, 403, 404, 410];

fn outcomes(daemon: &Daemon, action: &str, result: &str) -> u64 {
    daemon.metric_sum(&format!(
        "eventsd_action_outcomes_total{{action=\"{action}\",result=\"{result}\"}}"
    ))
}

fn failed_attempts(daemon: &Daemon, action: &str, error: &str) -> u64 {
    daemon.metric_sum(&format!(
        "eventsd_action_attempts_failed_total{{action=\"{action}\",error=\"{error}\"}}"
    ))
}

#[test]
fn http_5xx_408_and_429_are_retried_and_other_4xx_are_not() {
    let daemon = Daemon::run("");
    let paths: Vec<(String, Vec<u16>)> = TRANSIENT
        .iter()
        .chain(&PERMANENT)
        .map(|status| (format!("/{status}"), vec![*status, 200]))
        .collect();
    let in_turn: Vec<(&str, &[u16])> = paths.iter().map(|(p, s)| (p.as_str(), &s[..])).collect();
    let sink = HttpSink::answering_in_turn(&in_turn);
    for (path, _) in &paths {
        let watcher = every_second_event(&format!("w{}", &path[1..]), webhook(&sink.url(path)));
        register_watcher(&daemon, "logins", &watcher);
    }
    post_events(&daemon, "logins", &json!({}), 2);

    // Each firing settles once: delivered on its retry, or failed for good at once.
    let all = (TRANSIENT.len() + PERMANENT.len()) as u64;
    wait_for("every firing settled", 30 * SECOND, || {
        outcomes(&daemon, "webhook", "delivered") + outcomes(&daemon, "webhook", "failed") == all
    });
    for status in TRANSIENT {
        assert_eq!(
            sink.requests_to(&format!("/{status}")),
            2,
            "{status} retried"
        );
    }
    for status in PERMANENT {
        assert_eq!(
            sink.requests_to(&format!("/{status}")),
            1,
            "{status} not retried"
        );
    }
    assert_eq!(
        outcomes(&daemon, "webhook", "failed"),
        PERMANENT.len() as u64
    );
    assert_eq!(failed_attempts(&daemon, "webhook", "http_5xx"), 3);
    assert_eq!(failed_attempts(&daemon, "webhook", "http_4xx"), 6);
}

fn with_relay(relay: &SmtpSink, extra: &str) -> String {
    format!(
        "[smtp]\nhost = \"127.0.0.1\"\nport = {}\n{extra}",
        relay.address.port()
    )
}

#[test]
fn smtp_4xx_is_retried_and_5xx_is_not() {
    let relay = SmtpSink::answering_in_turn(&[
        ("grey@example.com", &[450, 250]),
        ("full@example.com", &[452, 250]),
        ("gone@example.com", &[550, 250]),
        ("bad@example.com", &[553, 250]),
    ]);
    let daemon = Daemon::run(&with_relay(&relay, ""));
    let recipients = ["grey", "full", "gone", "bad"];
    for name in recipients {
        let to = format!("{name}@example.com");
        register_watcher(&daemon, "logins", &every_second_event(name, email(&to)));
    }
    post_events(&daemon, "logins", &json!({}), 2);

    wait_for("every mail settled", 30 * SECOND, || {
        outcomes(&daemon, "email", "delivered") + outcomes(&daemon, "email", "failed") == 4
    });
    let delivered: Vec<Vec<String>> = relay.mails().into_iter().map(|m| m.to).collect();
    assert_eq!(delivered.len(), 2, "{delivered:?}");
    for name in recipients {
        let address = format!("{name}@example.com");
        assert_eq!(relay.refusals_of(&address), 1, "{address}: refused once");
        let arrived = delivered.contains(&vec![format!("<{address}>")]);
        assert_eq!(arrived, ["grey", "full"].contains(&name), "{address}");
    }
    assert_eq!(outcomes(&daemon, "email", "failed"), 2);
    assert_eq!(failed_attempts(&daemon, "email", "smtp_4xx"), 2);
    assert_eq!(failed_attempts(&daemon, "email", "smtp_5xx"), 2);
}

/// A daemon with `[smtp]` towards `relay` (and `extra`) that has tried a mail there and
/// failed: the commands the relay read.
fn a_mail_refused(relay: &SmtpSink, extra: &str) -> (Daemon, Vec<String>) {
    let daemon = Daemon::run(&with_relay(relay, extra));
    register_watcher(
        &daemon,
        "logins",
        &every_second_event("mail", email("ops@example.com")),
    );
    post_events(&daemon, "logins", &json!({}), 2);
    wait_for("a refused attempt", 20 * SECOND, || {
        daemon.metric_sum("eventsd_action_attempts_failed_total{action=\"email\"") >= 1
    });
    assert!(relay.mails().is_empty());
    (daemon, relay.commands())
}

#[test]
fn smtp_starttls_is_refused_by_a_relay_that_offers_none() {
    let relay = SmtpSink::start();
    let (daemon, commands) = a_mail_refused(&relay, "starttls = true\n");
    assert!(
        !commands
            .iter()
            .any(|c| c.to_uppercase().starts_with("MAIL")),
        "nothing is sent in clear: {commands:?}"
    );

    // The same relay takes the mail, still pending, once STARTTLS is not required.
    std::fs::write(
        &daemon.config,
        common::config_text(daemon.port, &with_relay(&relay, "")),
    )
    .unwrap();
    let reload = daemon.cli(&["reload"]);
    assert!(reload.status.success(), "{}", common::stderr(&reload));
    wait_for("the mail, without STARTTLS", 20 * SECOND, || {
        relay.mails().len() == 1
    });
}

#[test]
fn smtp_credentials_are_sent_over_tls_only() {
    let relay = SmtpSink::offering_auth_without_tls();
    let credentials = "username = \"alerts\"\npassword = \"hunter2\"\n";
    let (_daemon, commands) = a_mail_refused(&relay, credentials);
    assert!(
        commands
            .iter()
            .any(|c| c.to_uppercase().starts_with("EHLO")),
        "the relay was reached: {commands:?}"
    );
    assert!(
        !commands
            .iter()
            .any(|c| c.to_uppercase().starts_with("AUTH")),
        "no credentials in clear: {commands:?}"
    );
}
