//! A watcher's definition (`WatcherSpec`) and its `rule` as the definition states it
//! (rules.md): the list of rules (`every_rule`, from which `RuleKind` and the watch's
//! engine are made), and which of the definition's fields each rule requires or refuses,
//! checked together (`check`) so that a definition is refused naming the field at
//! fault. What the rules decide is `src/watch/rule/`'s business (a file per rule);
//! nothing here knows it.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use super::{Action, Aggregator, Name};

/// A watcher: what it watches for (its rule and the rule's figures), per which key, and
/// what it does when a key fires.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatcherSpec {
    pub name: Name,
    /// What the watcher detects (rules.md); absent, `threshold`, so that every
    /// definition written before rules keeps its meaning and its form.
    #[serde(default, skip_serializing_if = "RuleKind::is_threshold")]
    pub rule: RuleKind,
    /// Which figures each rule requires or refuses: `check`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::optional_at_least_one"
    )]
    pub threshold: Option<u64>,
    pub aggregator: Aggregator,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::optional_at_least_one"
    )]
    pub window_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown_secs: Option<u64>,
    /// Exponential realert (ElastAlert's): a key that keeps crossing during its cooldown
    /// gets the next one doubled, up to this; a quiet cooldown resets it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown_max_secs: Option<u64>,
    /// flatline: keys watched from the watcher's creation, before any event.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "expected_keys"
    )]
    pub expect: Option<Vec<serde_json::Value>>,
    /// flatline: a key silent this long after it fired is dropped (default a day).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::optional_at_least_one"
    )]
    pub forget_after_secs: Option<u64>,
    /// flatline: a key back at its threshold fires once more, `"resolved": true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_resolved: Option<bool>,
    /// spike: how many times the window before the current one must be exceeded (up) or
    /// undercut (down); greater than 1.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "spike_ratio"
    )]
    pub ratio: Option<f64>,
    /// spike: `up`, `down` or `both`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
    /// spike: the fewest events of the previous window that may make a spike (default 1).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::optional_at_least_one"
    )]
    pub min_previous: Option<u64>,
    /// spike: the fewest events of the current window that may make a spike (default 1).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::optional_at_least_one"
    )]
    pub min_current: Option<u64>,
    /// cardinality, new_value: the field whose values are watched (a path like `user.id`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "value_field"
    )]
    pub field: Option<String>,
    /// new_value: the fields whose values together are watched, instead of `field`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "value_fields"
    )]
    pub fields: Option<Vec<String>>,
    /// cardinality: a key fires with more distinct values than this within the window.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "distinct_limit"
    )]
    pub max_distinct: Option<u64>,
    /// cardinality: a key fires with fewer distinct values than this within the window.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "distinct_limit"
    )]
    pub min_distinct: Option<u64>,
    /// new_value: values are recorded without firing for this long after the watcher's
    /// creation (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learn_secs: Option<u64>,
    /// new_value: a value not seen for this long is new again (default 30 days).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::optional_at_least_one"
    )]
    pub remember_secs: Option<u64>,
    pub action: Action,
}

/// Every rule, once (rules.md): its kind, `RuleKind`'s variant, and its file in
/// `src/watch/rule/`, whose name is the rule's (`"rule": "new_value"`). `RuleKind` is
/// made from this list, and so is the watch's (`watch::rule::Rule`, the engine's), so
/// that a rule is registered by one row: the registry sits below the watch and cannot
/// name its types, the watch reads the list through this macro. `$make` is a macro
/// taking the rows.
macro_rules! every_rule {
    ($make:ident) => {
        $make! {
            /// Too many: a key's count exceeds `threshold` (events-collector's rule).
            #[default]
            Threshold threshold,
            /// Too few: a key's count over the last `window_secs` is below `threshold`.
            Flatline flatline,
            /// Suddenly more (or fewer) than the window before.
            Spike spike,
            /// Too many (or too few) distinct values of a field per key.
            Cardinality cardinality,
            /// A value never seen before for the key.
            NewValue new_value,
        }
    };
}
pub(crate) use every_rule;

/// `RuleKind` from the rows of `every_rule`.
macro_rules! rule_kinds {
    ($($(#[$attr:meta])* $kind:ident $file:ident,)*) => {
        /// What a watcher detects.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum RuleKind {
            $($(#[$attr])* $kind,)*
        }

        impl RuleKind {
            /// The name the rule goes by in a definition, a firing, a state.
            pub fn name(self) -> &'static str {
                match self {
                    $(RuleKind::$kind => stringify!($file),)*
                }
            }
        }
    };
}

every_rule!(rule_kinds);

/// Which way a spike goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Up,
    Down,
    Both,
}

impl Direction {
    pub fn up(self) -> bool {
        self != Direction::Down
    }

    pub fn down(self) -> bool {
        self != Direction::Up
    }
}

impl RuleKind {
    pub fn is_threshold(&self) -> bool {
        *self == RuleKind::Threshold
    }
}

/// Keys a flatline watcher lists in `expect`, at most.
pub const MAX_EXPECTED_KEYS: usize = 1_000;

/// Keys the watchers of one event type list in `expect`, together, at most: they share the
/// type's counter tables, where an expected key is never evicted, so their sum is what
/// stays beside `watchers.max_keys` evictable keys.
pub const MAX_EXPECTED_PER_TYPE: usize = 10_000;

/// The largest `max_distinct` or `min_distinct`: a key keeps that many values' hashes.
pub const MAX_DISTINCT_LIMIT: u64 = 10_000;

/// The most fields a new_value watcher's value is made of.
pub const MAX_VALUE_FIELDS: usize = 8;

/// The longest duration a watcher names (`window_secs`, cooldowns, `forget_after_secs`,
/// `learn_secs`, `remember_secs`): 10 years. Beyond it no rule means anything more, and a
/// sum of them must stay an exact Lua number and a TTL Redis accepts (a refused `EXPIRE`
/// failed the call, and every node counted alone).
pub const MAX_DURATION_SECS: u64 = 10 * 365 * 86_400;

/// `ratio`: a finite number greater than 1.
pub(super) fn spike_ratio<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    let ratio = f64::deserialize(d)?;
    if !ratio.is_finite() || ratio <= 1.0 {
        return Err(D::Error::custom("must be a number greater than 1"));
    }
    Ok(Some(ratio))
}

/// `max_distinct`, `min_distinct`: 1 to `MAX_DISTINCT_LIMIT`.
pub(super) fn distinct_limit<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let limit = u64::deserialize(d)?;
    if !(1..=MAX_DISTINCT_LIMIT).contains(&limit) {
        return Err(D::Error::custom(format!(
            "must be an integer from 1 to {MAX_DISTINCT_LIMIT}"
        )));
    }
    Ok(Some(limit))
}

/// `field`: one field path.
pub(super) fn value_field<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let field = String::deserialize(d)?;
    if field.is_empty() || field.len() > 256 || field.split('.').any(str::is_empty) {
        return Err(D::Error::custom(format!(
            "`{}` is not a field path like `user.id`",
            field.chars().take(64).collect::<String>()
        )));
    }
    Ok(Some(field))
}

/// `fields` (new_value): 1 to `MAX_VALUE_FIELDS` field paths.
pub(super) fn value_fields<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<String>>, D::Error> {
    let fields = super::field_paths(d)?;
    if fields.len() > MAX_VALUE_FIELDS {
        return Err(D::Error::custom(format!(
            "`fields`: {} fields, more than {MAX_VALUE_FIELDS}",
            fields.len()
        )));
    }
    Ok(Some(fields))
}

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
        ("ratio", spec.ratio.is_some()),
        ("direction", spec.direction.is_some()),
        ("min_previous", spec.min_previous.is_some()),
        ("min_current", spec.min_current.is_some()),
        ("field", spec.field.is_some()),
        ("fields", spec.fields.is_some()),
        ("max_distinct", spec.max_distinct.is_some()),
        ("min_distinct", spec.min_distinct.is_some()),
        ("learn_secs", spec.learn_secs.is_some()),
        ("remember_secs", spec.remember_secs.is_some()),
    ];
    let (required, allowed): (&[&str], &[&str]) = match rule {
        RuleKind::Threshold => (&["threshold"], &["window_secs"]),
        RuleKind::Flatline => (
            &["threshold", "window_secs"],
            &["expect", "forget_after_secs", "send_resolved"],
        ),
        RuleKind::Spike => (
            &["window_secs", "ratio", "direction"],
            &["min_previous", "min_current"],
        ),
        RuleKind::Cardinality => (&["field", "window_secs"], &["max_distinct", "min_distinct"]),
        RuleKind::NewValue => (&[], &["field", "fields", "learn_secs", "remember_secs"]),
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
    check_durations(spec)?;
    check_expected_keys(spec)?;
    check_watched_values(spec)
}

/// Every duration within `MAX_DURATION_SECS`.
pub(crate) fn check_durations(spec: &WatcherSpec) -> Result<(), String> {
    let durations = [
        ("window_secs", spec.window_secs),
        ("cooldown_secs", spec.cooldown_secs),
        ("cooldown_max_secs", spec.cooldown_max_secs),
        ("forget_after_secs", spec.forget_after_secs),
        ("learn_secs", spec.learn_secs),
        ("remember_secs", spec.remember_secs),
    ];
    match durations
        .iter()
        .find(|(_, secs)| secs.is_some_and(|s| s > MAX_DURATION_SECS))
    {
        Some((field, _)) => Err(format!(
            "Invalid `{field}`: must be at most {MAX_DURATION_SECS} (10 years)"
        )),
        None => Ok(()),
    }
}

/// cardinality names a limit; new_value names its value by `field` or `fields`, one of
/// them, and a field that is not already the key's.
fn check_watched_values(spec: &WatcherSpec) -> Result<(), String> {
    match spec.rule {
        RuleKind::Cardinality if spec.max_distinct.is_none() && spec.min_distinct.is_none() => Err(
            "Invalid `max_distinct`: the cardinality rule requires `max_distinct` or \
                 `min_distinct` (or both)"
                .to_string(),
        ),
        RuleKind::NewValue if spec.field.is_some() == spec.fields.is_some() => Err(
            "Invalid `field`: the new_value rule requires `field` or `fields`, one of them"
                .to_string(),
        ),
        _ => {
            let key_fields: &[String] = match &spec.aggregator {
                Aggregator::Fields { fields } => fields,
                Aggregator::Single {} => &[],
            };
            match spec.value_fields().iter().find(|f| key_fields.contains(f)) {
                Some(field) => Err(format!(
                    "Invalid `field`: `{field}` is already a field of the aggregator's key"
                )),
                None => Ok(()),
            }
        }
    }
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

/// The aggregation key `key` of `expect` is: its values as a compact JSON array, the
/// encoding of `watch::key` (a key within `watchers.max_key_bytes` is kept whole there,
/// so an expected key of this length is the key the workers count that host's events by).
pub fn expected_key_bytes(key: &Value) -> usize {
    match key {
        Value::Array(_) => key.to_string().len(),
        scalar => Value::Array(vec![scalar.clone()]).to_string().len(),
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

impl WatcherSpec {
    /// The fields whose values a cardinality or new_value watcher watches; none for
    /// another rule.
    pub fn value_fields(&self) -> &[String] {
        match (&self.field, &self.fields) {
            (Some(field), _) => std::slice::from_ref(field),
            (None, Some(fields)) => fields,
            (None, None) => &[],
        }
    }

    /// What a worker keys the watcher's counts by: its aggregator, and for new_value the
    /// watched value's fields after the aggregator's, so that each (key, value) is a
    /// counter of its own: remembered, bounded and evicted as counters are.
    pub fn counted_by(&self) -> Aggregator {
        let key_fields: &[String] = match &self.aggregator {
            Aggregator::Fields { fields } => fields,
            Aggregator::Single {} => &[],
        };
        if self.rule != RuleKind::NewValue || self.value_fields().is_empty() {
            return self.aggregator.clone();
        }
        Aggregator::Fields {
            fields: [key_fields, self.value_fields()].concat(),
        }
    }

    /// The field whose values' hashes a worker ships for the watcher (cardinality).
    pub fn hashed_field(&self) -> Option<&str> {
        (self.rule == RuleKind::Cardinality)
            .then_some(self.field.as_deref())
            .flatten()
    }
}
