//! `[silences]` and `[alerts]` (alerts.md): how many silences a client may keep and for
//! how long, and how many firings the alert list remembers.
//!
//! Owns these sections' keys, defaults and ranges; never looks at the running daemon.

use serde::Deserialize;

use super::values::{DAY, within};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Silences {
    /// Active and pending silences at once; a creation beyond is a 400.
    #[serde(deserialize_with = "within::<_, _, 1, 100_000>")]
    pub max: usize,
    /// The longest a silence may last, from its start to its end.
    #[serde(deserialize_with = "within::<_, _, 60, { 366 * DAY }>")]
    pub max_duration_secs: u64,
}

impl Default for Silences {
    fn default() -> Self {
        Silences {
            max: 1_000,
            max_duration_secs: 30 * DAY,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Alerts {
    /// Firings the alert list remembers, the oldest forgotten first.
    #[serde(deserialize_with = "within::<_, _, 1, 1_000_000>")]
    pub history: usize,
}

impl Default for Alerts {
    fn default() -> Self {
        Alerts { history: 10_000 }
    }
}
