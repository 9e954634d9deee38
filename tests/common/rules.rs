//! What the rules (rules.md) leave in a daemon's state folder, read as a test sees it.

use serde_json::Value;

use super::Daemon;

/// The hashed values each key keeps (cardinality's), as the last snapshot saved them in
/// `counters.json`; none while it is missing.
pub fn saved_values_per_key(daemon: &Daemon) -> Vec<usize> {
    let text = std::fs::read_to_string(daemon.path("state/counters.json")).unwrap_or_default();
    let Ok(document) = serde_json::from_str::<Value>(&text) else {
        return Vec::new();
    };
    let watchers = document["watchers"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let keys = watchers.values().filter_map(|w| w["keys"].as_object());
    keys.flat_map(|keys| keys.values())
        .filter_map(|counter| counter["rule"]["distinct"].as_array().map(Vec::len))
        .collect()
}
