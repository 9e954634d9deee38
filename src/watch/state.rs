//! A watcher's live state (alerts.md), as `GET /event/{type}/watcher/{name}/state` and
//! the status page show it: its rule, the keys it holds, its hottest keys against its
//! threshold, as the master's counters hold them.
//!
//! Read on request only, one pass over a watcher's keys: never per event. Reads the
//! counters only; never changes them, never shows a key value to whoever may not see it.

use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::firing::key_values;
use super::rule::wording;
use super::{Watch, Watched, now};
use crate::registry::{Aggregator, WatcherSpec};

#[derive(Debug, Serialize)]
pub struct WatcherState {
    pub event: String,
    pub watcher: String,
    /// The rule's kind.
    pub rule: &'static str,
    /// The rule in words: `more than 10 events in 60 s per ip`.
    pub description: String,
    pub threshold: u64,
    pub window_secs: Option<u64>,
    /// The fields of a `fields` watcher's key; empty for `single`.
    pub fields: Vec<String>,
    /// Keys held in this node's counters (none while a cluster counts in Redis).
    pub keys_held: usize,
    /// The hottest keys, highest count first.
    pub keys: Vec<KeyCount>,
}

#[derive(Debug, Serialize)]
pub struct KeyCount {
    /// `{field: value}` for a `fields` watcher (values `***` unless shown), `null` for
    /// `single`.
    pub key: Value,
    pub count: u64,
}

impl Watch {
    /// A watcher's live state: its `limit` hottest keys against its threshold, `None` if
    /// no such watcher. Key values are `***` unless `reveal_keys`.
    pub fn state(
        &self,
        event: &str,
        name: &str,
        limit: usize,
        reveal_keys: bool,
    ) -> Option<WatcherState> {
        let (id, watched) = self
            .watchers
            .iter()
            .find(|(_, w)| w.event == event && w.spec.name.as_str() == name)?;
        Some(self.state_of(*id, watched, limit, reveal_keys))
    }

    /// Every watcher's state, ordered by event type and name.
    pub fn states(&self, limit: usize, reveal_keys: bool) -> Vec<WatcherState> {
        let mut states: Vec<WatcherState> = self
            .watchers
            .iter()
            .map(|(id, watched)| self.state_of(*id, watched, limit, reveal_keys))
            .collect();
        states.sort_by(|a, b| (&a.event, &a.watcher).cmp(&(&b.event, &b.watcher)));
        states
    }

    fn state_of(&self, id: Uuid, watched: &Watched, limit: usize, reveal: bool) -> WatcherState {
        let spec = &watched.spec;
        let keys = self
            .store
            .hottest(id, now(), spec.window_secs, limit)
            .into_iter()
            .map(|(key, count)| {
                let values = key_values(spec, &key);
                let key = if reveal { values } else { hidden(values) };
                KeyCount { key, count }
            })
            .collect();
        let held = self.store.sizes().into_iter().find(|(w, ..)| *w == id);
        WatcherState {
            event: watched.event.clone(),
            watcher: spec.name.to_string(),
            rule: spec.rule.name(),
            description: description(spec),
            threshold: spec.threshold.unwrap_or(0),
            window_secs: spec.window_secs,
            fields: fields_of(spec).to_vec(),
            keys_held: held.map_or(0, |(_, keys, _)| keys),
            keys,
        }
    }
}

/// A key with its values masked, for whoever may not see them
/// (`server.expose_keys_without_token = false`).
pub fn hidden(key: Value) -> Value {
    match key {
        Value::Object(fields) => Value::Object(
            fields
                .into_iter()
                .map(|(field, _)| (field, Value::from("***")))
                .collect(),
        ),
        other => other,
    }
}

fn fields_of(spec: &WatcherSpec) -> &[String] {
    match &spec.aggregator {
        Aggregator::Single {} => &[],
        Aggregator::Fields { fields } => fields,
    }
}

/// `more than 10 events in 60 s per ip, user`; `fewer than 1 events in 300 s per host`:
/// the rule's words, then its window and its key's fields.
fn description(spec: &WatcherSpec) -> String {
    let mut rule = wording(spec.rule).description(spec);
    if let Some(window) = spec.window_secs {
        rule.push_str(&format!(" in {window} s"));
    }
    let fields = fields_of(spec);
    if !fields.is_empty() {
        rule.push_str(&format!(" per {}", fields.join(", ")));
    }
    rule
}
