//! A watcher's live state, as the status page shows it: its rule in words, the keys it
//! holds, its hottest keys against its threshold, when it last fired.
//!
//! Read on request only (the page asks every 2 s), one pass over a watcher's keys: it
//! never runs per event, and it changes nothing.

use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde_json::Value;

use super::store::Second;
use super::{Watch, key_fields};
use crate::registry::{Aggregator, WatcherSpec};

#[derive(Debug, Serialize)]
pub struct WatcherState {
    pub event: String,
    pub watcher: String,
    /// The rule in words: `more than 10 events in 60 s per ip`.
    pub rule: String,
    pub threshold: u64,
    pub window_secs: Option<u64>,
    /// The fields of a `fields` watcher's key; empty for `single`.
    pub fields: Vec<String>,
    /// Keys held in this node's counters (none while a cluster counts in Redis).
    pub keys: usize,
    pub hottest: Vec<KeyCount>,
    /// RFC 3339, since this master started.
    pub last_fired: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct KeyCount {
    /// `{field: value}` for a `fields` watcher, `null` for `single`.
    pub key: Value,
    pub count: u64,
}

impl Watch {
    /// Every watcher's state at `now`, with at most `limit` hottest keys each, ordered by
    /// event type and name.
    pub fn states(&self, now: Second, limit: usize) -> Vec<WatcherState> {
        let sizes = self.store.sizes();
        let mut states: Vec<WatcherState> = self
            .watchers
            .iter()
            .map(|(id, watched)| {
                let spec = &watched.spec;
                let hottest = self.store.hottest(*id, now, spec.window_secs, limit);
                WatcherState {
                    event: watched.event.clone(),
                    watcher: spec.name.to_string(),
                    rule: rule_in_words(spec),
                    threshold: spec.threshold,
                    window_secs: spec.window_secs,
                    fields: fields_of(spec).to_vec(),
                    keys: sizes
                        .iter()
                        .find(|(watcher, ..)| watcher == id)
                        .map_or(0, |(_, keys, _)| *keys),
                    hottest: hottest
                        .into_iter()
                        .map(|(key, count)| KeyCount {
                            key: key_fields(spec, &key),
                            count,
                        })
                        .collect(),
                    last_fired: self.last_fired.get(id).map(|&second| {
                        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(second);
                        humantime::format_rfc3339_seconds(at).to_string()
                    }),
                }
            })
            .collect();
        states.sort_by(|a, b| (&a.event, &a.watcher).cmp(&(&b.event, &b.watcher)));
        states
    }
}

fn fields_of(spec: &WatcherSpec) -> &[String] {
    match &spec.aggregator {
        Aggregator::Single {} => &[],
        Aggregator::Fields { fields } => fields,
    }
}

/// `more than 10 events in 60 s per ip, user`.
fn rule_in_words(spec: &WatcherSpec) -> String {
    let mut rule = format!("more than {} events", spec.threshold);
    if let Some(window) = spec.window_secs {
        rule.push_str(&format!(" in {window} s"));
    }
    let fields = fields_of(spec);
    if !fields.is_empty() {
        rule.push_str(&format!(" per {}", fields.join(", ")));
    }
    rule
}
