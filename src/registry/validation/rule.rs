//! A watcher's `rule` as its definition states it (rules.md): which rule, and which of
//! the definition's fields it requires or refuses, checked together (`check`) so that a
//! definition is refused naming the field at fault. What the rules decide is
//! `src/watch/rule.rs`'s business.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use super::{Aggregator, WatcherSpec};

/// What a watcher detects.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    /// Too many: a key's count exceeds `threshold` (events-collector's rule).
    #[default]
    Threshold,
    /// Too few: a key's count over the last `window_secs` is below `threshold`.
    Flatline,
}

impl RuleKind {
    pub fn is_threshold(&self) -> bool {
        *self == RuleKind::Threshold
    }

    pub fn name(self) -> &'static str {
        match self {
            RuleKind::Threshold => "threshold",
            RuleKind::Flatline => "flatline",
        }
    }
}

/// Keys a flatline watcher lists in `expect`, at most.
pub const MAX_EXPECTED_KEYS: usize = 1_000;

/// `expect`: the values of the watcher's fields for each key it must hear from: a value
/// per key for one field, an array of values per key for several (checked against the
/// aggregator by `check`). Scalars only: a key is made of the values events carry.
pub(super) fn expected_keys<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<Value>>, D::Error> {
    let keys = Vec::<Value>::deserialize(d).map_err(|e| super::named("expect", e))?;
    if keys.len() > MAX_EXPECTED_KEYS {
        return Err(D::Error::custom(format!(
            "`expect`: {} keys, more than {MAX_EXPECTED_KEYS}",
            keys.len()
        )));
    }
    let scalar = |value: &Value| !value.is_array() && !value.is_object();
    let well_formed = |key: &Value| match key {
        Value::Array(values) => values.iter().all(scalar),
        other => scalar(other),
    };
    if let Some(bad) = keys.iter().find(|key| !well_formed(key)) {
        let shown: String = bad.to_string().chars().take(64).collect();
        return Err(D::Error::custom(format!(
            "`expect`: {shown} is neither a value nor a list of values"
        )));
    }
    Ok(Some(keys))
}

/// The fields the watcher's rule requires are there, and no field of another rule is.
pub fn check(spec: &WatcherSpec) -> Result<(), String> {
    let rule = spec.rule;
    let given = [
        ("threshold", spec.threshold.is_some()),
        ("window_secs", spec.window_secs.is_some()),
        ("expect", spec.expect.is_some()),
        ("forget_after_secs", spec.forget_after_secs.is_some()),
        ("send_resolved", spec.send_resolved.is_some()),
    ];
    let (required, allowed): (&[&str], &[&str]) = match rule {
        RuleKind::Threshold => (&["threshold"], &["window_secs"]),
        RuleKind::Flatline => (
            &["threshold", "window_secs"],
            &["expect", "forget_after_secs", "send_resolved"],
        ),
    };
    for (field, present) in given {
        if !present && required.contains(&field) {
            return Err(format!(
                "Invalid `{field}`: the {} rule requires it",
                rule.name()
            ));
        }
        if present && !required.contains(&field) && !allowed.contains(&field) {
            return Err(format!(
                "Invalid `{field}`: not a field of the {} rule",
                rule.name()
            ));
        }
    }
    check_expected_keys(spec)
}

/// Each key of `expect` names a value for each field of the aggregator.
fn check_expected_keys(spec: &WatcherSpec) -> Result<(), String> {
    let Some(keys) = &spec.expect else {
        return Ok(());
    };
    let Aggregator::Fields { fields } = &spec.aggregator else {
        return Err(
            "Invalid `expect`: a `single` watcher has one key, watched from its creation"
                .to_string(),
        );
    };
    let values = |key: &Value| match key {
        Value::Array(values) => values.len(),
        _ => 1,
    };
    match keys.iter().find(|key| values(key) != fields.len()) {
        Some(bad) => Err(format!(
            "Invalid `expect`: {} holds {} values for {} fields",
            bad.to_string().chars().take(64).collect::<String>(),
            values(bad),
            fields.len()
        )),
        None => Ok(()),
    }
}

/// The fields of `expect`'s `key` as a payload (dot paths made nested objects): what a
/// worker would key an event carrying these values by.
pub fn expected_payload(fields: &[String], key: &Value) -> Map<String, Value> {
    let values: Vec<Value> = match key {
        Value::Array(values) => values.clone(),
        other => vec![other.clone()],
    };
    let mut payload = Map::new();
    for (path, value) in fields.iter().zip(values) {
        insert_at(&mut payload, path, value);
    }
    payload
}

fn insert_at(object: &mut Map<String, Value>, path: &str, value: Value) {
    match path.split_once('.') {
        None => {
            object.insert(path.to_string(), value);
        }
        Some((head, rest)) => {
            let inner = object
                .entry(head)
                .or_insert_with(|| Value::Object(Map::new()));
            if !inner.is_object() {
                *inner = Value::Object(Map::new());
            }
            if let Value::Object(inner) = inner {
                insert_at(inner, rest, value);
            }
        }
    }
}
