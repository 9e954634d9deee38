//! The aggregation key: which counter of a watcher an event counts for. Empty for a
//! `single` watcher; for a `fields` watcher, the values of its fields in their order.
//!
//! One encoding, made here and read back here only: the values as a compact JSON array
//! (`["10.0.0.1",7,null]`), which is hashable, cheap to ship to the master, and the form
//! `counters.json` keeps. Values are bounded before they are encoded, so a hostile client
//! cannot make keys, and so the master's memory, large.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::event::Fields;
use crate::registry::Aggregator;

/// A field value longer than this is cut in the key.
const MAX_VALUE_CHARS: usize = 256;

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Key(String);

/// A key that is not an encoding of values: it came from a damaged counters file or a
/// peer that does not speak this version.
#[derive(Debug)]
pub struct BadKey {
    key: String,
    reason: serde_json::Error,
}

impl fmt::Display for BadKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "aggregation key {:?} is not a JSON array: {}",
            self.key, self.reason
        )
    }
}

impl std::error::Error for BadKey {}

impl Key {
    /// The key `payload` counts for under `aggregator` (a missing field is `null`; dot
    /// paths reach into objects).
    pub fn of(aggregator: &Aggregator, payload: &impl Fields) -> Key {
        match aggregator {
            Aggregator::Single {} => Key::default(),
            Aggregator::Fields { fields } => {
                let values: Vec<Value> = fields
                    .iter()
                    .map(|path| payload.get(path).as_ref().map_or(Value::Null, bounded))
                    .collect();
                Key::encode(&values)
            }
        }
    }

    fn encode(values: &[Value]) -> Key {
        Key(Value::from(values).to_string())
    }

    /// The values the key was made of; none for a `single` watcher's key.
    pub fn decode(&self) -> Result<Vec<Value>, BadKey> {
        if self.0.is_empty() {
            return Ok(Vec::new());
        }
        serde_json::from_str(&self.0).map_err(|reason| BadKey {
            key: self.0.clone(),
            reason,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `value`, or its text cut to `MAX_VALUE_CHARS` when it is longer.
fn bounded(value: &Value) -> Value {
    let cut = |text: &str| Value::String(text.chars().take(MAX_VALUE_CHARS).collect());
    match value {
        Value::String(text) if text.chars().count() > MAX_VALUE_CHARS => cut(text),
        Value::Array(_) | Value::Object(_) => {
            let text = value.to_string();
            if text.chars().count() > MAX_VALUE_CHARS {
                cut(&text)
            } else {
                value.clone()
            }
        }
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn fields(names: &[&str]) -> Aggregator {
        Aggregator::Fields {
            fields: names.iter().map(|name| name.to_string()).collect(),
        }
    }

    #[test]
    fn keys_are_the_values_of_the_fields() {
        let payload = json!({"ip": "10.0.0.1", "user": {"id": 7}});
        let key = Key::of(
            &fields(&["ip", "user.id", "missing"]),
            payload.as_object().unwrap(),
        );
        assert_eq!(key.as_str(), r#"["10.0.0.1",7,null]"#);
        let huge = json!({"ip": "x".repeat(100_000)});
        assert!(
            Key::of(&fields(&["ip"]), huge.as_object().unwrap())
                .as_str()
                .len()
                < 400
        );
    }

    #[test]
    fn a_key_decodes_to_the_values_it_was_made_of() {
        let values = vec![
            json!("a \"quoted\", comma-separated\nline"),
            json!(-1.5e300),
            json!(18446744073709551615u64),
            json!(null),
            json!(true),
            json!({"nested": [1, "two"]}),
            json!("ünïcödé ✓ \u{1}"),
        ];
        assert_eq!(Key::encode(&values).decode().unwrap(), values);
        assert_eq!(
            Key::of(&Aggregator::Single {}, &serde_json::Map::new())
                .decode()
                .unwrap(),
            Vec::<Value>::new()
        );
    }

    #[test]
    fn a_key_that_is_no_encoding_is_an_error_naming_it() {
        let error = Key("not json".into()).decode().unwrap_err();
        assert!(error.to_string().contains("\"not json\""), "{error}");
    }

    #[test]
    fn a_key_is_shipped_and_saved_as_its_text() {
        let key = Key::encode(&[json!("a")]);
        assert_eq!(serde_json::to_string(&key).unwrap(), r#""[\"a\"]""#);
        let back: Key = serde_json::from_str(r#""[\"a\"]""#).unwrap();
        assert_eq!(back, key);
    }
}
