//! `eventsctl silence|alerts|watcher state` (alerts.md): amtool's verbs for eventsd, spoken
//! over HTTP to the local daemon at the config's `server.listen`, with its
//! `server.api_token`.
//!
//! Owns the command line's matcher syntax (`name=value`, `!=`, `=~`, `!~`), the tables
//! people read and the `--json` that scripts read (the daemon's own JSON). A refused
//! request exits 1 with the daemon's message. Never touches the daemon's files.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::config::Config;

/// How long a command waits for the daemon.
const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(clap::Subcommand)]
pub enum SilenceCommand {
    /// Silence the firings that match every MATCHER; prints its id.
    Add {
        /// name=value, name!=value, name=~regex or name!~regex (anchored); names:
        /// event, watcher, rule, key.FIELD.
        #[arg(required = true)]
        matchers: Vec<String>,
        /// How long it lasts from its start (`2h`, `30m`, `1d`).
        #[arg(long = "for", default_value = "1h", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// When it starts (RFC 3339, UTC); now by default.
        #[arg(long)]
        start: Option<String>,
        /// Why: the maintenance, the ticket.
        #[arg(long, default_value = "")]
        comment: String,
        /// Who makes it; the login name by default.
        #[arg(long)]
        author: Option<String>,
        /// Print the daemon's reply as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The active and pending silences, or the expired ones.
    List {
        /// The expired ones (listed for 24 h after they end).
        #[arg(long)]
        expired: bool,
        /// Print them as the daemon's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Expire silences now.
    Expire {
        /// Silence ids, as `silence add` prints them.
        #[arg(required = true)]
        ids: Vec<String>,
    },
}

#[derive(clap::Args)]
pub struct AlertsArgs {
    /// Only firings in this state: pending, delivered, dropped or silenced.
    #[arg(long)]
    state: Option<String>,
    /// Only this event type's firings.
    #[arg(long)]
    event: Option<String>,
    /// Only this watcher's firings.
    #[arg(long)]
    watcher: Option<String>,
    /// At most this many, newest first (default 100).
    #[arg(long)]
    limit: Option<usize>,
    /// Print them as the daemon's JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Subcommand)]
pub enum WatcherCommand {
    /// A watcher's hottest keys against its threshold, and its last firing.
    State {
        /// The event type.
        event: String,
        /// The watcher's name.
        name: String,
        /// Keys listed, highest count first (default 20).
        #[arg(long)]
        limit: Option<usize>,
        /// Print it as the daemon's JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn silence(config: &Config, command: SilenceCommand) -> anyhow::Result<i32> {
    let daemon = Daemon::of(config)?;
    match command {
        SilenceCommand::Add {
            matchers,
            duration,
            start,
            comment,
            author,
            json,
        } => {
            let body = new_silence(&matchers, duration, start, comment, author)?;
            let created = daemon.call("POST", "/silences", Some(body))?;
            match created {
                Ok(reply) if json => print_json(&reply),
                Ok(reply) => println!("{}", reply["silenceID"].as_str().unwrap_or("")),
                Err(message) => return refused(&message),
            }
        }
        SilenceCommand::List { expired, json } => {
            let mut listed = match daemon.call("GET", "/silences", None)? {
                Ok(listed) => listed,
                Err(message) => return refused(&message),
            };
            if let Value::Array(silences) = &mut listed {
                silences.retain(|s| (s["status"]["state"] == "expired") == expired);
            }
            match json {
                true => print_json(&listed),
                false => print_silences(&listed),
            }
        }
        SilenceCommand::Expire { ids } => {
            for id in ids {
                if let Err(message) = daemon.call("DELETE", &format!("/silences/{id}"), None)? {
                    return refused(&message);
                }
            }
        }
    }
    Ok(0)
}

pub fn alerts(config: &Config, args: AlertsArgs) -> anyhow::Result<i32> {
    let query = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(
            [
                ("state", args.state),
                ("event", args.event),
                ("watcher", args.watcher),
                ("limit", args.limit.map(|n| n.to_string())),
            ]
            .into_iter()
            .filter_map(|(name, value)| Some((name, value?))),
        )
        .finish();
    match Daemon::of(config)?.call("GET", &format!("/alerts?{query}"), None)? {
        Ok(listed) if args.json => print_json(&listed),
        Ok(listed) => print_alerts(&listed),
        Err(message) => return refused(&message),
    }
    Ok(0)
}

pub fn watcher(config: &Config, command: WatcherCommand) -> anyhow::Result<i32> {
    let WatcherCommand::State {
        event,
        name,
        limit,
        json,
    } = command;
    let segment = |text: &str| form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>();
    let mut path = format!(
        "/event/{}/watcher/{}/state",
        segment(&event),
        segment(&name)
    );
    if let Some(limit) = limit {
        path.push_str(&format!("?limit={limit}"));
    }
    match Daemon::of(config)?.call("GET", &path, None)? {
        Ok(state) if json => print_json(&state),
        Ok(state) => print_state(&state),
        Err(message) => return refused(&message),
    }
    Ok(0)
}

/// The body of `POST /silences` the command line describes.
fn new_silence(
    matchers: &[String],
    duration: Duration,
    start: Option<String>,
    comment: String,
    author: Option<String>,
) -> anyhow::Result<String> {
    let matchers = matchers
        .iter()
        .map(|text| matcher(text))
        .collect::<anyhow::Result<Vec<Value>>>()?;
    let starts = match &start {
        Some(text) => humantime::parse_rfc3339_weak(text)
            .with_context(|| format!("--start `{text}` is not a time like 2026-12-01T10:00:00Z"))?,
        None => SystemTime::now(),
    };
    let author = author
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "eventsctl".to_string());
    let mut body = json!({"matchers": matchers,
        "endsAt": humantime::format_rfc3339_millis(starts + duration).to_string(),
        "createdBy": author, "comment": comment});
    if start.is_some() {
        body["startsAt"] = json!(humantime::format_rfc3339_millis(starts).to_string());
    }
    Ok(body.to_string())
}

/// `name=value`, `name!=value`, `name=~regex` or `name!~regex` as a matcher.
fn matcher(text: &str) -> anyhow::Result<Value> {
    let operators = [
        ("!=", false, false),
        ("!~", true, false),
        ("=~", true, true),
    ];
    for (at, _) in text.char_indices() {
        let rest = &text[at..];
        let found = operators
            .iter()
            .find(|(op, ..)| rest.starts_with(op))
            .map(|&(op, regex, equal)| (op.len(), regex, equal))
            .or_else(|| rest.starts_with('=').then_some((1, false, true)));
        if let Some((len, is_regex, is_equal)) = found {
            let value = &text[at + len..];
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value);
            return Ok(json!({"name": &text[..at], "value": value,
                "isRegex": is_regex, "isEqual": is_equal}));
        }
    }
    bail!("matcher `{text}`: expected name=value, name!=value, name=~regex or name!~regex")
}

/// The local daemon, as the config file describes it.
struct Daemon {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl Daemon {
    fn of(config: &Config) -> anyhow::Result<Daemon> {
        if config.server.tls_cert.is_some() {
            bail!("the on-call commands speak plain HTTP; server.tls_cert is set");
        }
        let listen = config.server.listen;
        // A daemon listening on every address answers on loopback.
        let ip = match listen.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(TIMEOUT))
            .http_status_as_error(false)
            .build()
            .into();
        let token = &config.server.api_token;
        Ok(Daemon {
            base: format!("http://{}", SocketAddr::new(ip, listen.port())),
            token: (!token.is_empty()).then(|| token.clone()),
            agent,
        })
    }

    /// The reply's JSON, or the daemon's message when it refused (4xx, 5xx).
    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<String>,
    ) -> anyhow::Result<Result<Value, String>> {
        let url = format!("{}{path}", self.base);
        let authorization = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let sent = match (method, body) {
            ("POST", body) => {
                let mut request = self.agent.post(&url).content_type("application/json");
                if let Some(value) = &authorization {
                    request = request.header("Authorization", value);
                }
                request.send(body.unwrap_or_default())
            }
            (method, _) => {
                let mut request = match method {
                    "DELETE" => self.agent.delete(&url),
                    _ => self.agent.get(&url),
                };
                if let Some(value) = &authorization {
                    request = request.header("Authorization", value);
                }
                request.call()
            }
        };
        let mut response =
            sent.with_context(|| format!("cannot reach eventsd at {}", self.base))?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .read_to_string()
            .context("cannot read eventsd's reply")?;
        let reply: Value = serde_json::from_str(&text)
            .with_context(|| format!("eventsd answered {status} with something not JSON"))?;
        if status >= 400 {
            let message = reply["message"].as_str().unwrap_or(&text).to_string();
            return Ok(Err(format!("{status}: {message}")));
        }
        Ok(Ok(reply))
    }
}

fn refused(message: &str) -> anyhow::Result<i32> {
    eprintln!("eventsctl: {message}");
    Ok(1)
}

fn print_json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

fn print_silences(listed: &Value) {
    let rows = rows_of(listed, |s| {
        let matchers: Vec<String> = s["matchers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(shown_matcher)
            .collect();
        vec![
            text(&s["id"]),
            text(&s["status"]["state"]),
            matchers.join(" "),
            text(&s["startsAt"]),
            text(&s["endsAt"]),
            text(&s["createdBy"]),
            cut(&text(&s["comment"]), 40),
        ]
    });
    let header = [
        "ID",
        "STATE",
        "MATCHERS",
        "STARTS",
        "ENDS",
        "CREATED BY",
        "COMMENT",
    ];
    print_table(&header, &rows);
}

fn print_alerts(listed: &Value) {
    let rows = rows_of(listed, |a| {
        let detail = match a["state"].as_str() {
            Some("pending") => format!(
                "{} attempts, next {} {}",
                a["attempts"],
                text(&a["next_attempt_at"]),
                text(&a["last_error"])
            ),
            Some("delivered") => format!(
                "{} after {} attempts",
                text(&a["delivered_at"]),
                a["attempts"]
            ),
            Some("dropped") => format!("{} {}", text(&a["reason"]), text(&a["error"])),
            Some("silenced") => format!("by {}", text(&a["silenced_by"])),
            _ => String::new(),
        };
        vec![
            text(&a["fired_at"]),
            text(&a["event"]),
            text(&a["watcher"]),
            cut(&a["key"].to_string(), 40),
            text(&a["state"]),
            cut(detail.trim(), 80),
        ]
    });
    print_table(
        &["FIRED AT", "EVENT", "WATCHER", "KEY", "STATE", "DETAIL"],
        &rows,
    );
}

fn print_state(state: &Value) {
    println!(
        "watcher {} of {}: rule {}, threshold {}, window {}, {} keys held",
        text(&state["watcher"]),
        text(&state["event"]),
        text(&state["rule"]),
        state["threshold"],
        state["window_secs"],
        state["keys_held"]
    );
    let last = &state["last_firing"];
    match last.is_null() {
        true => println!("never fired (in the alert list)"),
        false => println!(
            "last fired {} ({})",
            text(&last["fired_at"]),
            text(&last["state"])
        ),
    }
    let rows = rows_of(&state["keys"], |k| {
        vec![cut(&k["key"].to_string(), 60), k["count"].to_string()]
    });
    print_table(&["KEY", "COUNT"], &rows);
}

fn shown_matcher(m: &Value) -> String {
    let operator = match (m["isEqual"] != false, m["isRegex"] == true) {
        (true, false) => "=",
        (false, false) => "!=",
        (true, true) => "=~",
        (false, true) => "!~",
    };
    format!("{}{operator}{}", text(&m["name"]), text(&m["value"]))
}

fn rows_of(list: &Value, row: impl Fn(&Value) -> Vec<String>) -> Vec<Vec<String>> {
    list.as_array().into_iter().flatten().map(row).collect()
}

/// Columns padded to their widest cell; the last one is not padded.
fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| row.iter().map(|cell| printable(cell)).collect())
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in &rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// A string as it is, anything else as JSON, nothing as empty.
fn text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// At most `max` characters.
fn cut(text: &str, max: usize) -> String {
    match text.chars().count() > max {
        true => text
            .chars()
            .take(max.saturating_sub(1))
            .chain(['…'])
            .collect(),
        false => text.to_string(),
    }
}

/// Control characters shown escaped: a terminal is not fed what a client put in a key
/// or a comment.
fn printable(text: &str) -> String {
    text.chars()
        .flat_map(|c| -> Box<dyn Iterator<Item = char>> {
            match c.is_control() {
                true => Box::new(c.escape_default()),
                false => Box::new(std::iter::once(c)),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matchers_read_as_amtool_writes_them() {
        let m = |text: &str| matcher(text).unwrap();
        assert_eq!(
            m("key.ip=~10\\.0\\..*"),
            json!({"name": "key.ip", "value": "10\\.0\\..*", "isRegex": true, "isEqual": true})
        );
        assert_eq!(m("event!=login")["isEqual"], false);
        assert_eq!(m("watcher!~st.*")["isRegex"], true);
        assert_eq!(m("key.user=\"a b\"")["value"], "a b");
        assert_eq!(m("key.q=a=b")["value"], "a=b");
        assert!(matcher("login").is_err());
    }
}
