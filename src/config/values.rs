//! The configuration's values: the deserializers that check one key alone (so that toml
//! reports the key and its line), and the wording of a value's error as people say it.
//!
//! Owns ranges, value syntaxes (and the value types they make, such as `LogTarget`) and
//! error messages; never looks at more than one key.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use log::LevelFilter;
use serde::{Deserialize, Deserializer};

pub const HOUR: u64 = 3_600;
pub const DAY: u64 = 86_400;
pub const WEEK: u64 = 7 * DAY;
pub const GIB: u64 = 1 << 30;

/// `daemon.log`: where log lines go.
#[derive(Debug, Clone, PartialEq)]
pub enum LogTarget {
    /// Not configured: stderr for `run`, syslog for `start`.
    Default,
    Stderr,
    Syslog,
    File(PathBuf),
}

impl fmt::Display for LogTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogTarget::Default => f.write_str("default"),
            LogTarget::Stderr => f.write_str("stderr"),
            LogTarget::Syslog => f.write_str("syslog"),
            LogTarget::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// Every count, size and duration has a range: a value outside it is refused here, naming
/// the range, rather than overflowing a deadline or an allocation later.
pub fn within<'de, D, T, const MIN: u64, const MAX: u64>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64>,
{
    let value = u64::deserialize(d)?;
    if !(MIN..=MAX).contains(&value) {
        return Err(serde::de::Error::custom(format!(
            "must be between {MIN} and {MAX}, not {value}"
        )));
    }
    T::try_from(value).map_err(|_| serde::de::Error::custom(format!("{value} is too large")))
}

/// `server.listen`: an IP address and a port; a host name is refused rather than
/// resolved, since the address bound must not depend on DNS at start.
pub fn listen_address<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(d)?;
    text.parse().map_err(|_| {
        serde::de::Error::custom(format!(
            "expected IP:PORT, such as 127.0.0.1:1234 or [::1]:1234 (a host name is not \
             resolved), found \"{text}\""
        ))
    })
}

/// `["169.254.0.0/16", "fe80::/10"]`: networks in CIDR notation.
pub fn networks<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|net| {
            net.parse().map_err(|_| {
                serde::de::Error::custom(format!("`{net}` is not a network like 10.0.0.0/8"))
            })
        })
        .collect()
}

pub fn log_target<'de, D: Deserializer<'de>>(d: D) -> Result<LogTarget, D::Error> {
    Ok(match String::deserialize(d)?.as_str() {
        "" => LogTarget::Default,
        "stderr" => LogTarget::Stderr,
        "syslog" => LogTarget::Syslog,
        path => LogTarget::File(PathBuf::from(path)),
    })
}

/// A path, or the empty string for none.
pub fn optional_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    let path = PathBuf::deserialize(d)?;
    Ok((!path.as_os_str().is_empty()).then_some(path))
}

pub fn log_level<'de, D: Deserializer<'de>>(d: D) -> Result<LevelFilter, D::Error> {
    let name = String::deserialize(d)?;
    name.parse().map_err(|_| {
        serde::de::Error::custom(format!(
            "`{name}` is not a log level (off, error, warn, info, debug, trace)"
        ))
    })
}

/// A parse error as people say it: the key's dotted path, what was expected and found,
/// and the line (`server.read_timeout_secs: expected a whole number, found string "15s"
/// (line 3)`) instead of serde's `invalid type: string "15s", expected u64`.
pub fn in_words(text: &str, error: serde_path_to_error::Error<toml::de::Error>) -> String {
    let key = error.path().to_string();
    let error = error.into_inner();
    let message = reworded(error.message());
    let line = error
        .span()
        .map(|span| format!(" (line {})", line_of(text, span.start)))
        .unwrap_or_default();
    match key.as_str() {
        "" | "." => format!("{message}{line}"),
        key => format!("{key}: {message}{line}"),
    }
}

fn reworded(message: &str) -> String {
    let mismatch = message
        .strip_prefix("invalid type: ")
        .or_else(|| message.strip_prefix("invalid value: "))
        .and_then(|rest| rest.rsplit_once(", expected "));
    let Some((found, expected)) = mismatch else {
        return message.to_string();
    };
    let expected = match expected {
        "u8" | "u16" | "u32" | "u64" | "usize" => "a whole number",
        "i8" | "i16" | "i32" | "i64" | "isize" => "a whole number",
        "a sequence" => "a list",
        "a map" => "a table",
        "path string" => "a path",
        other => other,
    };
    // `string "15s"` says it twice: the quotes already show a string.
    let found = found.replace('`', "");
    let found = found.strip_prefix("string ").unwrap_or(&found);
    format!("expected {expected}, found {found}")
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    let before = text.get(..offset).unwrap_or(text);
    before.bytes().filter(|&b| b == b'\n').count() + 1
}
