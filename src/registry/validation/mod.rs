//! Definitions of collectors and watchers as clients send them (JSON bodies) and as the
//! config file declares them (`[[event]]`): one set of types, one set of checks (a
//! watcher's, with the list of rules, in `watcher.rs`).
//!
//! Every check of a value's form lives in a deserializer, so that an error names its
//! field (through `serde_path_to_error` for JSON, toml's own path and line for the
//! config file). A rule that a `registry.json` written by an older eventsd may break
//! (`Action::check_headers`) is a method instead: the registration, the config file
//! and the load call it, and the load drops the one entry rather than refuse the file.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::address::WebhookUrl;
pub use watcher::WatcherSpec;

pub mod watcher;

/// An event type, collector or watcher name: `^[a-zA-Z][a-zA-Z0-9_-]{1,127}$`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Name(String);

impl Name {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_valid(name: &str) -> bool {
        let mut chars = name.chars();
        let first_is_letter = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
        first_is_letter
            && (2..=128).contains(&name.len())
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    }
}

impl TryFrom<String> for Name {
    type Error = String;

    fn try_from(name: String) -> Result<Name, String> {
        if Name::is_valid(&name) {
            Ok(Name(name))
        } else {
            Err(format!(
                "`{}` is not a valid name (a letter, then 1 to 127 letters, digits, `_` or `-`)",
                name.chars().take(64).collect::<String>()
            ))
        }
    }
}

impl From<Name> for String {
    fn from(name: Name) -> String {
        name.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `POST /event/` body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventSpec {
    #[serde(rename = "type")]
    pub name: Name,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectorSpec {
    pub name: Name,
    pub appender: Appender,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
// Variants without fields are written `Null {}`: serde's deny_unknown_fields ignores
// unit variants of a tagged enum, and a typo must not pass unnoticed.
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum Appender {
    Null {},
    Syslog {
        #[serde(deserialize_with = "syslog_ident")]
        ident: String,
    },
    File {
        #[serde(deserialize_with = "absolute_path")]
        path: PathBuf,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum Aggregator {
    Single {},
    Fields {
        #[serde(deserialize_with = "field_paths")]
        fields: Vec<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum Action {
    Null {},
    Email {
        #[serde(deserialize_with = "recipients")]
        to: Vec<String>,
        #[serde(deserialize_with = "mail_subject")]
        subject: String,
    },
    Webhook {
        #[serde(deserialize_with = "http_url")]
        url: String,
        #[serde(
            default,
            skip_serializing_if = "BTreeMap::is_empty",
            deserialize_with = "http_headers"
        )]
        headers: BTreeMap<String, String>,
    },
    Command {
        #[serde(deserialize_with = "command_line")]
        argv: Vec<String>,
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            deserialize_with = "command_timeout"
        )]
        timeout_secs: Option<u64>,
    },
}

impl Action {
    /// A webhook sets no header that frames or routes its request (security.md): eventsd
    /// and its HTTP client write those, and a client's `Content-Length` could make every
    /// delivery unsendable, its `Host` route it elsewhere. Not a check of the
    /// deserializer: a `registry.json` written before the rule loads, the watcher that
    /// breaks it dropped with a message (`Registry::drop_forbidden`).
    pub fn check_headers(&self) -> Result<(), String> {
        let Action::Webhook { headers, .. } = self else {
            return Ok(());
        };
        match headers.keys().find(|name| is_framing_header(name)) {
            Some(name) => Err(format!(
                "`headers`: `{name}` frames or routes the request; eventsd sets it itself"
            )),
            None => Ok(()),
        }
    }
}

/// Header names that say how the request is framed or where it goes.
const FRAMING_HEADERS: [&str; 9] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "upgrade",
    "expect",
    "trailer",
];

fn is_framing_header(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    FRAMING_HEADERS.contains(&lower.as_str()) || lower.starts_with("proxy-")
}

/// `[[event]]` in the config file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventDeclaration {
    #[serde(rename = "type")]
    pub name: Name,
    #[serde(default)]
    pub collector: Vec<CollectorSpec>,
    #[serde(default)]
    pub watcher: Vec<WatcherSpec>,
}

/// Parses a JSON body into `T`; the error names the field at fault.
pub fn from_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    let deserializer = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            format!("Body is not valid JSON: {inner}")
        } else if path == "." {
            format!("Invalid body: {inner}")
        } else {
            format!("Invalid `{path}`: {inner}")
        }
    })
}

use serde::Deserializer;
use serde::de::Error as _;

fn at_least_one<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let value = u64::deserialize(d)?;
    if value == 0 {
        return Err(D::Error::custom("must be an integer of at least 1"));
    }
    Ok(value)
}

pub(super) fn optional_at_least_one<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<u64>, D::Error> {
    at_least_one(d).map(Some)
}

/// At most a day: a command that needs longer is not an alert action.
fn command_timeout<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let secs = at_least_one(d)?;
    if secs > 86_400 {
        return Err(D::Error::custom(
            "`timeout_secs` must be at most 86400 (a day)",
        ));
    }
    Ok(Some(secs))
}

/// An appender path: absolute, without `..` and without control characters (a newline
/// in a path would forge log lines). Where it may point is `Rules`' business.
fn absolute_path<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    let text = String::deserialize(d).map_err(|e| named("path", e))?;
    let shown = text.escape_debug();
    let path = PathBuf::from(&text);
    let problem = if !path.is_absolute() {
        Some("is not an absolute path")
    } else if path
        .components()
        .any(|c| c == std::path::Component::ParentDir)
    {
        Some("holds a `..`")
    } else if text.chars().any(char::is_control) {
        Some("holds a control character")
    } else {
        None
    };
    match problem {
        Some(problem) => Err(D::Error::custom(format!("`path`: `{shown}` {problem}"))),
        None => Ok(path),
    }
}

pub(super) fn field_paths<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let fields = Vec::<String>::deserialize(d).map_err(|e| named("fields", e))?;
    if fields.is_empty() {
        return Err(D::Error::custom("`fields` must list at least one field"));
    }
    if let Some(bad) = fields
        .iter()
        .find(|f| f.is_empty() || f.split('.').any(str::is_empty))
    {
        return Err(D::Error::custom(format!(
            "`fields`: `{bad}` is not a field path like `user.id`"
        )));
    }
    Ok(fields)
}

/// `to`: one address or a list of them.
fn recipients<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    let to = match OneOrMany::deserialize(d)
        .map_err(|_| D::Error::custom("`to` must be an e-mail address or a list of them"))?
    {
        OneOrMany::One(address) => vec![address],
        OneOrMany::Many(addresses) => addresses,
    };
    if to.is_empty() || to.len() > MAX_RECIPIENTS {
        return Err(D::Error::custom(format!(
            "`to` must name 1 to {MAX_RECIPIENTS} recipients"
        )));
    }
    if let Some(bad) = to.iter().find(|address| !is_email_address(address)) {
        return Err(D::Error::custom(format!(
            "`to`: `{bad}` is not an e-mail address"
        )));
    }
    Ok(to)
}

/// A plain `local@domain` check: enough to refuse typos; the SMTP relay has the last word.
fn is_email_address(address: &str) -> bool {
    match address.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && !address
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || "<>,;\"".contains(c))
        }
        None => false,
    }
}

/// Bounds on what a client may store (security.md): every string of a definition.
const MAX_IDENT_BYTES: usize = 64;
const MAX_URL_BYTES: usize = 2_048;
const MAX_HEADERS: usize = 32;
const MAX_HEADER_NAME_BYTES: usize = 128;
const MAX_HEADER_VALUE_BYTES: usize = 1_024;
const MAX_SUBJECT_BYTES: usize = 998;
const MAX_RECIPIENTS: usize = 100;

/// A string of at most `max` bytes without control characters.
fn short_text<'de, D: Deserializer<'de>>(
    d: D,
    field: &str,
    max: usize,
) -> Result<String, D::Error> {
    let text = String::deserialize(d).map_err(|e| named(field, e))?;
    if text.len() > max {
        return Err(D::Error::custom(format!(
            "`{field}` is {} bytes long, more than {max}",
            text.len()
        )));
    }
    if text.chars().any(char::is_control) {
        return Err(D::Error::custom(format!(
            "`{field}` holds a control character"
        )));
    }
    Ok(text)
}

fn syslog_ident<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    short_text(d, "ident", MAX_IDENT_BYTES)
}

fn mail_subject<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    short_text(d, "subject", MAX_SUBJECT_BYTES)
}

/// Header names are HTTP tokens; values hold no CR, LF, NUL or other control character
/// (a header that smuggles a line into the request is refused, not cleaned). Which
/// names a webhook may set is `Action::check_headers`' business.
fn http_headers<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    let headers = BTreeMap::<String, String>::deserialize(d).map_err(|e| named("headers", e))?;
    if headers.len() > MAX_HEADERS {
        return Err(D::Error::custom(format!(
            "`headers`: {} headers, more than {MAX_HEADERS}",
            headers.len()
        )));
    }
    let is_token_char = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    for (name, value) in &headers {
        if name.is_empty() || name.len() > MAX_HEADER_NAME_BYTES || !name.chars().all(is_token_char)
        {
            return Err(D::Error::custom(format!(
                "`headers`: `{}` is not a header name",
                name.escape_debug()
            )));
        }
        if value.len() > MAX_HEADER_VALUE_BYTES
            || value.chars().any(|c| c.is_control() && c != '\t')
        {
            return Err(D::Error::custom(format!(
                "`headers`: the value of `{name}` holds a control character or is longer \
                 than {MAX_HEADER_VALUE_BYTES} bytes"
            )));
        }
    }
    Ok(headers)
}

/// An absolute http(s) URL with a host, as the HTTP client will read it.
fn http_url<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let url = String::deserialize(d).map_err(|e| named("url", e))?;
    if url.len() > MAX_URL_BYTES {
        return Err(D::Error::custom(format!(
            "`url` is {} bytes long, more than {MAX_URL_BYTES}",
            url.len()
        )));
    }
    let problem = if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Err("is not a valid URL")
    } else {
        WebhookUrl::parse(&url).map(|_| ())
    };
    problem.map_err(|why| D::Error::custom(format!("`url`: `{url}` {why}")))?;
    Ok(url)
}

/// `https://hooks.slack.com/services/T0/B0/XXXX` → `https://hooks.slack.com/…`.
pub fn url_without_secrets(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "…".to_string();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    // Credentials in the authority (`user:pass@host`) are secrets too.
    let host = authority.rsplit('@').next().unwrap_or(authority);
    if tail.is_empty() || tail == "/" {
        format!("{scheme}://{host}{tail}")
    } else {
        format!("{scheme}://{host}/…")
    }
}

fn command_line<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let argv = Vec::<String>::deserialize(d).map_err(|e| named("argv", e))?;
    if argv.is_empty() || argv.iter().any(String::is_empty) {
        return Err(D::Error::custom(
            "`argv` must be the program to run and its arguments, none empty",
        ));
    }
    Ok(argv)
}

/// Names the field in an error raised inside an internally tagged enum, where serde
/// loses the path.
pub(super) fn named<E: serde::de::Error>(field: &str, error: E) -> E {
    E::custom(format!("`{field}`: {error}"))
}

#[cfg(test)]
mod tests;
