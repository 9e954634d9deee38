//! One delivery of one firing: null, email (SMTP relay of `[smtp]`), webhook (HTTP POST
//! of the firing document) or command (a program run without a shell).
//!
//! Every delivery is bounded in time, and checked against where firings may go
//! (`Destinations`, security.md) again here. A webhook's host is resolved once, by the
//! HTTP client's resolver (`CheckedResolver`), which checks every address it returns:
//! the client connects only to a checked address, so a DNS answer that changes after
//! the check reaches nothing. Redirects are not followed. A failure says whether trying
//! again may help (`Transient`) or not (`Permanent`), and its class (`ErrorClass`, the
//! metrics' label); the runner decides about retries. Failures name a webhook by its
//! origin only: its credentials, path and query are secrets that no log line may carry.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{Message, SmtpTransport, Transport};

use crate::protocol::runner::ErrorClass;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};

use crate::config::{Config, Smtp};
use crate::registry::address::origin;
use crate::registry::{Action, Destinations};
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
        let destinations = config.destinations();
        Context {
            smtp: config.smtp.clone(),
            http: webhook_agent(CheckedResolver {
                lookup: DefaultResolver::default(),
                destinations: destinations.clone(),
            }),
            destinations,
        }
    }
}

/// The HTTP client of webhooks: bounded in time, no redirect followed (a 3xx is an
/// answer), no proxy from the environment (the address connected to must be the one
/// checked), and `resolver` as its only way from a name to an address.
fn webhook_agent(resolver: impl Resolver) -> ureq::Agent {
    let config = ureq::Agent::config_builder()
        .timeout_global(Some(DEFAULT_TIMEOUT))
        .http_status_as_error(false)
        .max_redirects(0)
        .proxy(None)
        .build();
    ureq::Agent::with_parts(config, DefaultConnector::default(), resolver)
}

/// A resolver that lets through only addresses a webhook may reach: `lookup`'s answer
/// (the system resolver's, with ureq's timeout), every address of it checked against
/// `destinations` (deny list, canonical forms, eventsd's own listener). One denied
/// address refuses the whole answer: a name that points anywhere denied is not used.
#[derive(Debug)]
struct CheckedResolver<R> {
    lookup: R,
    destinations: Destinations,
}

/// Why `CheckedResolver` refused a name's addresses (a permanent failure).
#[derive(Debug)]
struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

impl<R: Resolver> Resolver for CheckedResolver<R> {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let addresses = self.lookup.resolve(uri, config, timeout)?;
        for address in &addresses {
            self.destinations
                .check_webhook_address(*address)
                .map_err(|why| ureq::Error::Other(Box::new(Refused(why))))?;
        }
        Ok(addresses)
    }
}

pub fn deliver(job: &Job, context: &Context) -> Result<(), Failure> {
    job.action
        .check_headers()
        .map_err(|why| Failure::Permanent(ErrorClass::Other, why))?;
    context
        .destinations
        .check_action(&job.action)
        .map_err(|why| Failure::Permanent(ErrorClass::Denied, why))?;
    match &job.action {
        Action::Null {} => Ok(()),
        Action::Email { to, subject } => email(&job.firing, to, subject, &context.smtp),
        Action::Webhook { url, headers } => webhook(&job.firing, url, headers, &context.http),
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
    // Credentials go over TLS only: with them, a relay that offers no STARTTLS is refused.
    if smtp.starttls || !smtp.username.is_empty() {
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

/// The mail body: what happened (`text`), to which key, and the rule with its figures
/// in the rule's words (`Firing::figure_lines`: how often, over which window).
pub fn email_body(firing: &Firing) -> String {
    let key = if firing.key.is_null() {
        "(all events)".to_string()
    } else {
        firing.key.to_string()
    };
    let figures: String = (firing.figure_lines().iter())
        .map(|(name, value)| format!("{name}: {value}\n"))
        .collect();
    format!(
        "{}\n\nEvent type: {}\nWatcher: {}\nKey: {key}\n{figures}Fired at: {}\n",
        firing.text, firing.event, firing.watcher, firing.fired_at
    )
}

fn webhook(
    firing: &Firing,
    url: &str,
    headers: &std::collections::BTreeMap<String, String>,
    http: &ureq::Agent,
) -> Result<(), Failure> {
    let target = origin(url);
    let document = serde_json::to_string(&with_slack_text(firing))
        .map_err(|e| Failure::Permanent(ErrorClass::Other, e.to_string()))?;
    let mut request = http.post(url).header("Content-Type", "application/json");
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let response = request
        .send(document)
        .map_err(|e| failure_of(&e, &target))?;
    let status = response.status().as_u16();
    match status {
        200..=299 => Ok(()),
        300..=399 => {
            let location = response
                .headers()
                .get("location")
                .and_then(|value| value.to_str().ok())
                .map_or_else(|| "nowhere".to_string(), origin);
            Err(Failure::Permanent(
                ErrorClass::Other,
                format!("{target} answered {status}, a redirect to {location}: not followed"),
            ))
        }
        408 | 425 | 429 => Err(Failure::Transient(
            ErrorClass::Http4xx,
            format!("{target} answered {status}"),
        )),
        500..=599 => Err(Failure::Transient(
            ErrorClass::Http5xx,
            format!("{target} answered {status}"),
        )),
        _ => Err(Failure::Permanent(
            ErrorClass::Http4xx,
            format!("{target} answered {status}"),
        )),
    }
}

/// The firing as a webhook gets it: `text` with `&`, `<` and `>` escaped as Slack (and
/// Mattermost) document, so that a value from an event can neither mention
/// `<!channel>` nor forge a link. The other fields are data, not markup.
fn with_slack_text(firing: &Firing) -> Firing {
    let mut text = String::with_capacity(firing.text.len());
    for c in firing.text.chars() {
        match c {
            '&' => text.push_str("&amp;"),
            '<' => text.push_str("&lt;"),
            '>' => text.push_str("&gt;"),
            c => text.push(c),
        }
    }
    Firing {
        text,
        ..firing.clone()
    }
}

/// What an error of the HTTP client means for the delivery: a request that cannot be
/// sent as asked, or a destination refused, stays so (permanent); the network and the
/// target's answers may change (transient). Described without the URL, whose path and
/// query some errors quote.
fn failure_of(error: &ureq::Error, target: &str) -> Failure {
    use ureq::Error as E;
    use ureq_proto::Error as P;
    let described = format!("{target}: {}", describe(error));
    match error {
        E::Other(inner) => match inner.downcast_ref::<Refused>() {
            Some(refused) => Failure::Permanent(ErrorClass::Denied, format!("{target}: {refused}")),
            None => Failure::Transient(http_error_class(error), described),
        },
        E::BadUri(_)
        | E::Http(_)
        | E::RequireHttpsOnly(_)
        | E::InvalidProxyUrl
        | E::TlsRequired
        | E::Protocol(
            P::BadHeader(_)
            | P::UnsupportedVersion
            | P::MethodVersionMismatch(..)
            | P::TooManyHostHeaders
            | P::TooManyContentLengthHeaders
            | P::BadHostHeader
            | P::BadAuthorizationHeader
            | P::BadContentLengthHeader
            | P::ConflictingBodyHeaders
            | P::OutputOverflow
            | P::BodyContentAfterFinish
            | P::BodyLargerThanContentLength
            | P::BodyNotAllowed,
        ) => Failure::Permanent(
            ErrorClass::Other,
            format!("{described}: the request cannot be sent as asked"),
        ),
        _ => Failure::Transient(http_error_class(error), described),
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

/// An error's own words, up to the detail some of them quote (a URI, a header).
fn describe(error: &ureq::Error) -> String {
    match error {
        ureq::Error::Io(e) => e.to_string(),
        ureq::Error::Timeout(_)
        | ureq::Error::HostNotFound
        | ureq::Error::ConnectionFailed
        | ureq::Error::Tls(_)
        | ureq::Error::Rustls(_) => error.to_string(),
        _ => {
            let text = error.to_string();
            text.split(": ").next().unwrap_or_default().to_string()
        }
    }
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
        .envs(firing.rule_env())
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
mod tests;
