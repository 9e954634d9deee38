//! A watcher's live state (alerts.md): its hottest keys against its threshold, as the
//! master's counters hold them, for `GET /event/{type}/watcher/{name}/state`.
//!
//! Reads the counters only; never changes them, never shows a key value to whoever may
//! not see it.

use serde_json::{Value, json};

use super::{Watch, key_values, now};

impl Watch {
    /// A watcher's live state (alerts.md): its `limit` hottest keys against its
    /// threshold, `None` if no such watcher. Key values are `***` unless `reveal_keys`.
    pub fn state(&self, event: &str, name: &str, limit: usize, reveal_keys: bool) -> Option<Value> {
        let (id, watched) = self
            .watchers
            .iter()
            .find(|(_, w)| w.event == event && w.spec.name.as_str() == name)?;
        let spec = &watched.spec;
        let keys: Vec<Value> = self
            .store
            .hottest(*id, now(), spec.window_secs, limit)
            .into_iter()
            .map(|(key, count)| {
                let values = key_values(spec, &key);
                let shown = if reveal_keys { values } else { hidden(values) };
                json!({"key": shown, "count": count})
            })
            .collect();
        let held = self.store.sizes().into_iter().find(|(w, ..)| w == id);
        Some(json!({
            "event": event,
            "watcher": name,
            "rule": "threshold",
            "threshold": spec.threshold,
            "window_secs": spec.window_secs,
            "keys_held": held.map_or(0, |(_, keys, _)| keys),
            "keys": keys,
        }))
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
