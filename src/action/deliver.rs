//! One delivery of one firing: null, email (SMTP relay of `[smtp]`), webhook (HTTP POST
//! of the firing document) or command (a program run without a shell).
//!
//! Every delivery is bounded in time, and checked against where firings may go
//! (`Destinations`, security.md) again here, a webhook after DNS resolution. A failure
//! says whether trying again may help (`Transient`) or not (`Permanent`), and its class
//! (`ErrorClass`, the metrics' label); the runner decides about retries.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{Message, SmtpTransport, Transport};

use super::report::ErrorClass;
use crate::config::{Config, Smtp};
use crate::registry::{Action, Destinations, webhook_host};
use crate::watch::{Firing, Job};

/// How long a webhook may take, and a command when its `timeout_secs` is not set.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// A failed attempt: whether trying again may help, what kind of error (the metrics'
/// class), and what happened.
#[derive(Debug, PartialEq)]
pub enum Failure {
    Transient(ErrorClass, String),
    Permanent(ErrorClass, String),
}

impl Failure {
    pub fn class(&self) -> ErrorClass {
        match self {
            Failure::Transient(class, _) | Failure::Permanent(class, _) => *class,
        }
    }
}

/// What deliveries need besides the job.
pub struct Context {
    pub smtp: Smtp,
    pub destinations: Destinations,
    pub http: ureq::Agent,
}

impl Context {
    pub fn new(config: &Config) -> Context {
        let http = ureq::Agent::config_builder()
            .timeout_global(Some(DEFAULT_TIMEOUT))
            .http_status_as_error(false)
            .build()
            .into();
        Context {
            smtp: config.smtp.clone(),
            destinations: config.destinations(),
            http,
        }
    }
}

pub fn deliver(job: &Job, context: &Context) -> Result<(), Failure> {
    context
        .destinations
        .check_action(&job.action)
        .map_err(|why| Failure::Permanent(ErrorClass::Denied, why))?;
    match &job.action {
        Action::Null {} => Ok(()),
        Action::Email { to, subject } => email(&job.firing, to, subject, &context.smtp),
        Action::Webhook { url, headers } => {
            check_resolved(url, &context.destinations)?;
            webhook(&job.firing, url, headers, &context.http)
        }
        Action::Command { argv, timeout_secs } => {
            let timeout = timeout_secs.map_or(DEFAULT_TIMEOUT, Duration::from_secs);
            command(&job.firing, argv, timeout)
        }
    }
}

fn email(firing: &Firing, to: &[String], subject: &str, smtp: &Smtp) -> Result<(), Failure> {
    let mailbox = |address: &str| {
        address.parse::<Mailbox>().map_err(|e| {
            Failure::Permanent(ErrorClass::Other, format!("bad address `{address}`: {e}"))
        })
    };
    let mut message = Message::builder()
        .from(mailbox(&smtp.from)?)
        .subject(subject);
    for address in to {
        message = message.to(mailbox(address)?);
    }
    let message = message.body(email_body(firing)).map_err(|e| {
        Failure::Permanent(ErrorClass::Other, format!("cannot build the message: {e}"))
    })?;

    let mut relay = SmtpTransport::builder_dangerous(&smtp.host)
        .port(smtp.port)
        .timeout(Some(Duration::from_secs(smtp.timeout_secs)));
    if smtp.starttls {
        let tls = TlsParameters::new(smtp.host.clone()).map_err(|e| {
            Failure::Permanent(
                ErrorClass::Other,
                format!("TLS set-up for {}: {e}", smtp.host),
            )
        })?;
        relay = relay.tls(Tls::Required(tls));
    }
    if !smtp.username.is_empty() {
        relay = relay.credentials(Credentials::new(
            smtp.username.clone(),
            smtp.password.clone(),
        ));
    }
    relay.build().send(&message).map(|_| ()).map_err(|e| {
        let reason = format!("SMTP relay {}:{}: {e}", smtp.host, smtp.port);
        if e.is_permanent() {
            Failure::Permanent(ErrorClass::Smtp5xx, reason)
        } else {
            Failure::Transient(smtp_error_class(&e), reason)
        }
    })
}

/// A transient SMTP error: the relay's 4xx, or no answer in time, or no connection.
fn smtp_error_class(error: &lettre::transport::smtp::Error) -> ErrorClass {
    if error.is_transient() {
        ErrorClass::Smtp4xx
    } else if error.is_timeout() {
        ErrorClass::Timeout
    } else if error.is_tls() {
        ErrorClass::Other
    } else {
        ErrorClass::Connection
    }
}

/// The mail body: what happened, to which key, how often, over which window.
pub fn email_body(firing: &Firing) -> String {
    let window = firing.window_secs.map_or_else(
        || "since the last firing".to_string(),
        |w| format!("the last {w} s"),
    );
    let key = if firing.key.is_null() {
        "(all events)".to_string()
    } else {
        firing.key.to_string()
    };
    format!(
        "{}\n\nEvent type: {}\nWatcher: {}\nKey: {key}\nCount: {} (threshold {})\nWindow: {window}\nFired at: {}\n",
        firing.text, firing.event, firing.watcher, firing.count, firing.threshold, firing.fired_at
    )
}

fn webhook(
    firing: &Firing,
    url: &str,
    headers: &std::collections::BTreeMap<String, String>,
    http: &ureq::Agent,
) -> Result<(), Failure> {
    let document = serde_json::to_string(firing)
        .map_err(|e| Failure::Permanent(ErrorClass::Other, e.to_string()))?;
    let mut request = http.post(url).header("Content-Type", "application/json");
    for (name, value) in headers {
        request = request.header(name, value);
    }
    match request.send(document) {
        Ok(response) => {
            let status = response.status().as_u16();
            match status {
                200..=299 => Ok(()),
                408 | 425 | 429 => Err(Failure::Transient(
                    ErrorClass::Http4xx,
                    format!("{url} answered {status}"),
                )),
                500..=599 => Err(Failure::Transient(
                    ErrorClass::Http5xx,
                    format!("{url} answered {status}"),
                )),
                _ => Err(Failure::Permanent(
                    ErrorClass::Http4xx,
                    format!("{url} answered {status}"),
                )),
            }
        }
        Err(e) => Err(Failure::Transient(
            http_error_class(&e),
            format!("{url}: {e}"),
        )),
    }
}

/// A request that got no answer: too slow, or no connection.
fn http_error_class(error: &ureq::Error) -> ErrorClass {
    match error {
        ureq::Error::Timeout(_) => ErrorClass::Timeout,
        ureq::Error::Io(e) if e.kind() == std::io::ErrorKind::TimedOut => ErrorClass::Timeout,
        ureq::Error::Io(_) | ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => {
            ErrorClass::Connection
        }
        _ => ErrorClass::Other,
    }
}

/// Every address the webhook's host resolves to must be allowed: a name pointing at
/// the metadata service is refused like the address itself. (The HTTP client resolves
/// again: a DNS answer that changes in between is not caught here.)
fn check_resolved(url: &str, destinations: &Destinations) -> Result<(), Failure> {
    use std::net::ToSocketAddrs;
    let host = webhook_host(url)
        .ok_or_else(|| Failure::Permanent(ErrorClass::Other, format!("no host in {url}")))?;
    let addresses = (host, 0).to_socket_addrs().map_err(|e| {
        Failure::Transient(
            ErrorClass::Connection,
            format!("cannot resolve {host}: {e}"),
        )
    })?;
    for address in addresses {
        destinations
            .check_webhook_address(address.ip())
            .map_err(|why| Failure::Permanent(ErrorClass::Denied, format!("{host}: {why}")))?;
    }
    Ok(())
}

/// Runs `argv` without a shell: the firing in `EVENTSD_*` variables and as JSON on stdin;
/// killed after `timeout`. A command is not retried: it may have done part of its work.
fn command(firing: &Firing, argv: &[String], timeout: Duration) -> Result<(), Failure> {
    let document = serde_json::to_string(firing)
        .map_err(|e| Failure::Permanent(ErrorClass::Other, e.to_string()))?;
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| Failure::Permanent(ErrorClass::Other, "empty argv".to_string()))?;
    let mut child = Command::new(program)
        .args(args)
        .env("EVENTSD_WATCHER", &firing.watcher)
        .env("EVENTSD_EVENT", &firing.event)
        .env("EVENTSD_KEY", firing.key.to_string())
        .env("EVENTSD_COUNT", firing.count.to_string())
        .env("EVENTSD_THRESHOLD", firing.threshold.to_string())
        .env(
            "EVENTSD_WINDOW_SECS",
            firing
                .window_secs
                .map(|w| w.to_string())
                .unwrap_or_default(),
        )
        .env("EVENTSD_FIRED_AT", &firing.fired_at)
        .env("EVENTSD_TEXT", &firing.text)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| {
            Failure::Permanent(ErrorClass::Command, format!("cannot run {program}: {e}"))
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A program that does not read its stdin is no failure.
        let _ = stdin.write_all(document.as_bytes());
    }
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => {
                return Err(Failure::Permanent(
                    ErrorClass::Command,
                    format!("{program} {status}"),
                ));
            }
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Failure::Permanent(
                    ErrorClass::Command,
                    format!(
                        "{program} killed after its timeout of {}s",
                        timeout.as_secs()
                    ),
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                return Err(Failure::Permanent(
                    ErrorClass::Command,
                    format!("cannot wait for {program}: {e}"),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn firing() -> Firing {
        Firing {
            id: uuid::Uuid::nil(),
            firings: 1,
            watcher: "storm".into(),
            event: "logins".into(),
            key: serde_json::json!({"ip": "10.0.0.1"}),
            count: 101,
            threshold: 100,
            window_secs: Some(60),
            fired_at: "2026-11-23T00:00:00Z".into(),
            text: "Event `logins` repeated 101 times in 60 s for ip=\"10.0.0.1\"".into(),
            node: None,
            crossing: None,
            degraded: false,
        }
    }

    #[test]
    fn a_command_gets_the_firing_in_its_environment_and_on_stdin() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let script = format!(
            "cat > {0}.json; echo \"$EVENTSD_WATCHER $EVENTSD_COUNT\" > {0}",
            out.display()
        );
        let argv = vec!["/bin/sh".to_string(), "-c".to_string(), script];
        command(&firing(), &argv, Duration::from_secs(5)).unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "storm 101\n");
        let stdin: Firing =
            serde_json::from_slice(&std::fs::read(dir.path().join("out.json")).unwrap()).unwrap();
        assert_eq!(stdin, firing());
    }

    #[test]
    fn a_command_is_killed_after_its_timeout() {
        let argv = vec!["/bin/sleep".to_string(), "30".to_string()];
        let started = Instant::now();
        let failure = command(&firing(), &argv, Duration::from_millis(200)).unwrap_err();
        assert!(
            matches!(failure, Failure::Permanent(ErrorClass::Command, ref m) if m.contains("killed")),
            "{failure:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn the_mail_body_names_type_key_count_and_window() {
        let body = email_body(&firing());
        for part in [
            "logins",
            "10.0.0.1",
            "101",
            "threshold 100",
            "60 s",
            "storm",
        ] {
            assert!(body.contains(part), "{part} missing from {body}");
        }
    }
}
