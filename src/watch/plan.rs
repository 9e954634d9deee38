//! The watchers of each event type compiled for the hot path, once per registry version
//! (a worker compiles the registry it installs): grouped by field set, so that an event's
//! key for a field set is made once however many watchers share it, and the worker's batch
//! counts per (field set, key), naming the watchers only when the batch ships.

use std::collections::HashMap;
use std::rc::Rc;

use uuid::Uuid;

use crate::registry::{Aggregator, Registry};

/// Watchers of one event type that count by the same fields (and, for cardinality, that
/// watch the same field's values).
#[derive(Debug, PartialEq)]
pub struct FieldSet {
    pub aggregator: Aggregator,
    pub watchers: Vec<Uuid>,
    /// cardinality: the field whose values' hashes the set's keys ship, instead of
    /// their counts.
    pub hashed: Option<String>,
}

/// The field sets of every event type of one registry version.
#[derive(Debug, Default)]
pub struct Plans {
    by_type: HashMap<String, Vec<Rc<FieldSet>>>,
}

impl Plans {
    pub fn compile(registry: &Registry) -> Plans {
        let by_type = registry
            .events
            .iter()
            .map(|(name, entry)| {
                let mut sets: Vec<FieldSet> = Vec::new();
                for watcher in &entry.watchers {
                    let aggregator = watcher.spec.counted_by();
                    let hashed = watcher.spec.hashed_field();
                    let same = |set: &&mut FieldSet| {
                        set.aggregator == aggregator && set.hashed.as_deref() == hashed
                    };
                    match sets.iter_mut().find(same) {
                        Some(set) => set.watchers.push(watcher.id),
                        None => sets.push(FieldSet {
                            aggregator,
                            watchers: vec![watcher.id],
                            hashed: hashed.map(str::to_string),
                        }),
                    }
                }
                (name.to_string(), sets.into_iter().map(Rc::new).collect())
            })
            .collect();
        Plans { by_type }
    }

    /// The watchers of each field set, of every event type: how the master keeps their
    /// counters (`store::CounterStore::arrange`).
    pub fn field_sets(&self) -> Vec<Vec<Uuid>> {
        (self.by_type.values().flatten())
            .map(|set| set.watchers.clone())
            .collect()
    }

    /// The field sets of `event`'s watchers; none for an unknown type.
    pub fn of(&self, event: &str) -> &[Rc<FieldSet>] {
        self.by_type.get(event).map_or(&[], Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchers_sharing_fields_share_one_field_set() {
        let registry: Registry = serde_json::from_value(serde_json::json!({
        "version": 3, "events": {"logins": {"id": Uuid::new_v4(), "watchers": [
            watcher("by-ip", ["ip"]), watcher("by-user", ["user"]), watcher("ip-again", ["ip"]),
        ]}}}))
        .unwrap();
        let plans = Plans::compile(&registry);
        let sets = plans.of("logins");
        let ids: Vec<Vec<Uuid>> = sets.iter().map(|s| s.watchers.clone()).collect();
        let watchers = &registry.events.values().next().unwrap().watchers;
        assert_eq!(
            ids,
            [vec![watchers[0].id, watchers[2].id], vec![watchers[1].id]]
        );
        assert!(plans.of("unknown").is_empty());
    }

    fn watcher(name: &str, fields: [&str; 1]) -> serde_json::Value {
        serde_json::json!({"id": Uuid::new_v4(), "spec": {"name": name, "threshold": 5,
            "aggregator": {"type": "fields", "fields": fields}, "action": {"type": "null"}}})
    }
}
