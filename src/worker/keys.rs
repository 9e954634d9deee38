//! Each event type's watcher keys as the hot path writes them: the top-level fields that
//! any of the type's field sets counts by are found once in an event, and each set's key
//! is written from what was found, not by a lookup per set and field (`bench/run`'s
//! `_bulk` row, ten sets over six fields: six lookups an event instead of fourteen).
//!
//! Owns the recipe of each set's key, compiled once per registry version. It writes
//! exactly `Key::of`'s encoding (tested against it), leaves every key longer than
//! `watchers.max_key_bytes` to `Key::of`, and never allocates per event.

use std::collections::HashMap;
use std::rc::Rc;

use crate::event::Event;
use crate::registry::{Aggregator, Registry};
use crate::watch::Key;
use crate::watch::plan::{FieldSet, Plans};

/// The keys of every event type of one registry version.
#[derive(Debug, Default)]
pub struct Keyed {
    by_type: HashMap<String, TypeKeys, foldhash::fast::RandomState>,
}

impl Keyed {
    pub fn compile(registry: &Registry) -> Keyed {
        let plans = Plans::compile(registry);
        let by_type = (registry.events.keys())
            .map(|name| (name.to_string(), TypeKeys::compile(plans.of(name.as_str()))))
            .collect();
        Keyed { by_type }
    }

    /// The keys of `event`'s watchers; `None` for an unknown type.
    pub fn of(&self, event: &str) -> Option<&TypeKeys> {
        self.by_type.get(event)
    }
}

/// The field sets of one event type, and the top-level fields they count by.
#[derive(Debug, Default)]
pub struct TypeKeys {
    /// Each top-level field any set counts by, once.
    names: Vec<String>,
    sets: Vec<SetKey>,
}

/// One field set and how its key is written.
#[derive(Debug)]
pub struct SetKey {
    pub set: Rc<FieldSet>,
    /// `None` for a `single` set (its key is empty).
    parts: Option<Vec<Part>>,
}

/// A value of a key: a top-level field, found once for every set (its index in `names`),
/// or a dot path, which `Event::write_json` reads.
#[derive(Debug)]
enum Part {
    Top { slot: usize, name: String },
    Path(String),
}

impl TypeKeys {
    pub fn compile(sets: &[Rc<FieldSet>]) -> TypeKeys {
        let mut names: Vec<String> = Vec::new();
        let mut part = |path: &String| {
            if path.contains('.') {
                return Part::Path(path.clone());
            }
            let slot = names
                .iter()
                .position(|name| name == path)
                .unwrap_or_else(|| {
                    names.push(path.clone());
                    names.len() - 1
                });
            Part::Top {
                slot,
                name: path.clone(),
            }
        };
        let sets = (sets.iter())
            .map(|set| SetKey {
                set: set.clone(),
                parts: match &set.aggregator {
                    Aggregator::Single {} => None,
                    Aggregator::Fields { fields } => Some(fields.iter().map(&mut part).collect()),
                },
            })
            .collect();
        TypeKeys { names, sets }
    }

    pub fn sets(&self) -> &[SetKey] {
        &self.sets
    }

    /// The top-level fields found in each event: a row of `find_fields`.
    pub fn fields_found(&self) -> usize {
        self.names.len()
    }

    /// Finds, in each of `events`, every top-level field a set counts by: one row of
    /// positions an event in `found` (cleared first, reused by the caller).
    pub fn find_fields<'f>(
        &self,
        events: &[Event<'_>],
        found: &'f mut Vec<Option<usize>>,
    ) -> Found<'f> {
        found.clear();
        for event in events {
            found.extend(self.names.iter().map(|name| event.position(name)));
        }
        Found {
            positions: found,
            width: self.names.len(),
        }
    }
}

/// Where each event's fields are, a row an event: what `SetKey::write` reads.
#[derive(Clone, Copy)]
pub struct Found<'f> {
    positions: &'f [Option<usize>],
    width: usize,
}

impl<'f> Found<'f> {
    /// The rows from the `skipped`th event on.
    pub fn skip(self, skipped: usize) -> Found<'f> {
        let from = (skipped * self.width).min(self.positions.len());
        Found {
            positions: &self.positions[from..],
            ..self
        }
    }

    fn row(&self, event: usize) -> &'f [Option<usize>] {
        let from = (event * self.width).min(self.positions.len());
        let to = (from + self.width).min(self.positions.len());
        &self.positions[from..to]
    }
}

impl SetKey {
    /// Whether the `index`th event of `events` (those `found` was made for) has the
    /// previous event's values for this set, so its key: the same texts. `false` when
    /// unsure (a dot path), never `true` for keys that differ.
    pub fn same_as_previous(&self, events: &[Event<'_>], found: Found<'_>, index: usize) -> bool {
        let (Some(before), Some(event)) = (index.checked_sub(1), events.get(index)) else {
            return false;
        };
        let Some(previous) = events.get(before) else {
            return false;
        };
        let Some(parts) = &self.parts else {
            return true;
        };
        let (row_before, row) = (found.row(before), found.row(index));
        parts.iter().all(|part| match part {
            Part::Top { slot, .. } => {
                let at = |row: &[Option<usize>]| row.get(*slot).copied().flatten();
                event.same_field(at(row), previous, at(row_before))
            }
            Part::Path(_) => false,
        })
    }

    /// `Key::of(aggregator, event, max_bytes)` written into `out` (cleared first), the
    /// `index`th event of those `found` was made for.
    pub fn write(
        &self,
        event: &Event<'_>,
        found: Found<'_>,
        index: usize,
        max_bytes: usize,
        out: &mut String,
    ) {
        out.clear();
        let Some(parts) = &self.parts else {
            return;
        };
        let row = found.row(index);
        out.push('[');
        for (index, part) in parts.iter().enumerate() {
            if index > 0 {
                out.push(',');
            }
            match part {
                Part::Top { slot, name } => {
                    let position = row.get(*slot).copied().flatten();
                    event.write_field_json(position, name, out);
                }
                Part::Path(path) => event.write_json(path, out),
            }
        }
        out.push(']');
        if out.len() > max_bytes {
            let key = Key::of(&self.set.aggregator, event, max_bytes);
            out.clear();
            out.push_str(key.as_str());
        }
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    fn set(fields: &[&str]) -> Rc<FieldSet> {
        let aggregator = match fields {
            [] => Aggregator::Single {},
            _ => Aggregator::Fields {
                fields: fields.iter().map(|field| field.to_string()).collect(),
            },
        };
        Rc::new(FieldSet {
            aggregator,
            watchers: vec![Uuid::new_v4()],
            hashed: None,
        })
    }

    /// Whatever the events spell (escapes, numbers of every kind, duplicates, nested and
    /// missing fields, fat values), every set's key is `Key::of`'s, byte for byte, and
    /// a field several sets share is found once an event.
    #[test]
    fn every_sets_key_is_the_canonical_encoding_from_fields_found_once() {
        let bodies = [
            r#"{"a": "plain", "b": 7, "c": true}"#,
            r#"{"a": "\u0041\n\"q\"", "b": -0, "c": null}"#,
            r#"{"a": 1.50, "b": 1e3, "c": -12345678901234567890}"#,
            r#"{"a": 123456789012345678, "b": 1234567890123456789, "c": -42}"#,
            r#"{"a": -9223372036854775808, "b": 18446744073709551616, "c": 0}"#,
            r#"{"a": {"x": [1, 2 ,3]}, "b": [ "s" ], "c": {"d": {"e": "deep"}}}"#,
            r#"{"a": "ünïcödé ✓", "a": "last wins", "b": "/slash"}"#,
            r#"{"esc\u0061ped": 1, "b": 2}"#,
            r#"{}"#,
        ];
        let long = format!(r#"{{"a": "{}", "b": "x", "c": 1}}"#, "y".repeat(3000));
        let bodies: Vec<&str> = bodies.iter().copied().chain([long.as_str()]).collect();
        let events: Vec<Event<'_>> = (bodies.iter())
            .map(|body| Event::parse(body.as_bytes()).unwrap())
            .collect();
        let sets = [
            set(&["a", "b", "c"]),
            set(&["c.d.e", "a.x", "missing"]),
            set(&["b"]),
            set(&["escaped", "a"]),
            set(&[]),
        ];
        let keys = TypeKeys::compile(&sets);
        assert_eq!(keys.names, ["a", "b", "c", "missing", "escaped"]);
        let mut found = Vec::new();
        let found = keys.find_fields(&events, &mut found);
        let mut out = String::new();
        for max_bytes in [1024, 62] {
            for set_key in keys.sets() {
                for (index, event) in events.iter().enumerate() {
                    set_key.write(event, found, index, max_bytes, &mut out);
                    let canonical = Key::of(&set_key.set.aggregator, event, max_bytes);
                    assert_eq!(out, canonical.as_str(), "{:?}", set_key.set.aggregator);
                }
                let last = events.len() - 1;
                set_key.write(&events[last], found.skip(last), 0, max_bytes, &mut out);
                let canonical = Key::of(&set_key.set.aggregator, &events[last], max_bytes);
                assert_eq!(out, canonical.as_str(), "skipped to the last event");
            }
        }
    }
}
