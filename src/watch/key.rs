//! The aggregation key: which counter of a watcher an event counts for. Empty for a
//! `single` watcher; for a `fields` watcher, the values of its fields in their order.
//!
//! One encoding, made here and read back here only: the values as a compact JSON array
//! (`["10.0.0.1",7,null]`), which is hashable, cheap to ship to the master, and the form
//! `counters.json` keeps. A key is at most `watchers.max_key_bytes` long (security.md),
//! so a hostile client cannot make keys, and so the master's memory, large: values too
//! long are cut to a digest (`"#5f1d..."`), so two different long values still count apart.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::event::Fields;
use crate::registry::Aggregator;

/// Encoded values longer than this are the first to be replaced by their digest.
const LONG_VALUE_BYTES: usize = 32;
/// The longest a digest takes in a key: `"#` + 16 hex digits + `",`.
pub const DIGEST_BYTES: usize = 20;

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
    /// paths reach into objects), at most `max_bytes` long (`watchers.max_key_bytes`,
    /// which the configuration keeps at least `DIGEST_BYTES` per field).
    pub fn of(aggregator: &Aggregator, payload: &impl Fields, max_bytes: usize) -> Key {
        match aggregator {
            Aggregator::Single {} => Key::default(),
            Aggregator::Fields { fields } => {
                let mut values: Vec<Value> = fields
                    .iter()
                    .map(|path| payload.get(path).unwrap_or(Value::Null))
                    .collect();
                let mut key = Key::encode(&values);
                // Long values go first, then, if that is not enough, all of them.
                for longer_than in [LONG_VALUE_BYTES, 0] {
                    if key.0.len() <= max_bytes {
                        break;
                    }
                    for value in &mut values {
                        let encoded = value.to_string();
                        if encoded.len() > longer_than {
                            *value = Value::String(format!("#{:016x}", fnv1a(encoded.as_bytes())));
                        }
                    }
                    key = Key::encode(&values);
                }
                key
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

/// Lets a map of keys be searched with a `&str` (a key the worker wrote, a slot's text).
impl std::borrow::Borrow<str> for Key {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Key {
    fn from(text: &str) -> Key {
        Key(text.to_string())
    }
}

/// A UUID (version 8: made of our own bits) derived from `name`: the same on every node
/// for the same name. Two FNV-1a digests, of the name and of the name salted, fill it.
pub fn uuid_of(name: &str) -> uuid::Uuid {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&fnv1a(name.as_bytes()).to_be_bytes());
    let salted = [b"eventsd:".as_slice(), name.as_bytes()].concat();
    bytes[8..].copy_from_slice(&fnv1a(&salted).to_be_bytes());
    uuid::Uuid::new_v8(bytes)
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a, 64 bits: the same digest in every worker and across restarts and versions,
/// which a key needs (the std hasher promises neither).
fn fnv1a(bytes: &[u8]) -> u64 {
    fnv1a_from(FNV_OFFSET, bytes)
}

fn fnv1a_from(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// FNV-1a, unkeyed: the hash of a watched value, the same in every worker and across
/// restarts, and the hasher of maps whose keys no client chooses (the worker's batch
/// finds its field sets by address).
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Fnv {
        Fnv(FNV_OFFSET)
    }
}

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0 = fnv1a_from(self.0, bytes);
    }
}

pub type FnvBuildHasher = std::hash::BuildHasherDefault<Fnv>;

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
            1024,
        );
        assert_eq!(key.as_str(), r#"["10.0.0.1",7,null]"#);
    }

    #[test]
    fn fat_keys_are_cut_to_digests_within_the_limit_and_still_count_apart() {
        let by = fields(&["a", "b", "c"]);
        let fat = |tail: &str| json!({"a": format!("{}{tail}", "\u{1}".repeat(100_000)), "b": "x", "c": 7});
        let one = Key::of(&by, fat("1").as_object().unwrap(), 64);
        let other = Key::of(&by, fat("2").as_object().unwrap(), 64);
        assert!(one.as_str().len() <= 64, "{}", one.as_str());
        assert_ne!(
            one, other,
            "values that differ only at their end count apart"
        );
        let values = one.decode().unwrap();
        assert!(values[0].as_str().unwrap().starts_with('#'), "{values:?}");
        assert_eq!(
            (&values[1], &values[2]),
            (&json!("x"), &json!(7)),
            "short values kept"
        );
        let all_long = json!({"a": "y".repeat(30), "b": "z".repeat(30), "c": "w".repeat(30)});
        let cut = Key::of(&by, all_long.as_object().unwrap(), 3 * DIGEST_BYTES + 2);
        assert!(
            cut.as_str().len() <= 3 * DIGEST_BYTES + 2,
            "{}",
            cut.as_str()
        );
        assert_eq!(
            fnv1a(b"a"),
            0xaf63_dc4c_8601_ec8c,
            "FNV-1a's published value"
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
            Key::of(&Aggregator::Single {}, &serde_json::Map::new(), 1024)
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
