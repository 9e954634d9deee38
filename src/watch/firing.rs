//! A firing as actions deliver it: the document (`Firing`) and its job (`Job`), the
//! figures a command action gets (`rule_env`). Made from a rule's verdict in the rule's
//! words (`Firing::new`, `figure_lines`, through `rule::wording`); never decides whether
//! anything fires, and says nothing of one rule: the rules do.

use std::time::SystemTime;

use log::warn;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::Key;
use super::rule::{Reported, RuleFigures, Said, Verdict, shown, wording};
use crate::registry::{Action, Aggregator, RuleKind, WatcherSpec};

/// A crossing: the document actions deliver (its `text` makes it a valid Slack or
/// Mattermost incoming-webhook body).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Firing {
    /// The crossing's id: the same across delivery attempts and restarts.
    pub id: Uuid,
    pub watcher: String,
    pub event: String,
    /// `{field: value}` for a `fields` watcher, `null` for `single`.
    pub key: Value,
    /// The rule that fired (rules.md); journals written before rules hold threshold's.
    #[serde(default)]
    pub rule: RuleKind,
    pub count: u64,
    pub threshold: u64,
    pub window_secs: Option<u64>,
    pub fired_at: String,
    pub text: String,
    /// The crossings this delivery stands for: more than 1 when later firings of the
    /// same key joined it while it waited.
    pub firings: u64,
    /// The node that fired it, in a cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// `watcher/key/epoch/sequence`, the crossing's name across nodes, in a cluster:
    /// `id` is derived from it, so a crossing fired twice (a Redis failover) has one id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crossing: Option<String>,
    /// Fired from this node's own counts while Redis was unreachable.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub degraded: bool,
    /// A flatline key heard from again (`send_resolved`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resolved: bool,
    /// The figures of the rule that fired besides those above (`RuleFigures`: each
    /// rule's own, from its file in `rule/`).
    #[serde(flatten)]
    pub figures: RuleFigures,
}

/// A firing with the action that must deliver it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub firing: Firing,
    pub action: Action,
    /// The registry id of the watcher that fired: a job outlives neither its watcher nor
    /// a change to it (a changed watcher gets a new id). Nil in journals written before
    /// it was kept.
    #[serde(default)]
    pub watcher_id: Uuid,
}

#[cfg(test)]
impl Job {
    /// A firing of `watcher` (a `single` key, count 2 over threshold 1) for `action`.
    pub fn example(watcher: &str, action: Action) -> Job {
        Job {
            firing: Firing {
                id: Uuid::new_v4(),
                watcher: watcher.to_string(),
                event: "logins".to_string(),
                key: Value::Null,
                rule: RuleKind::Threshold,
                count: 2,
                threshold: 1,
                window_secs: None,
                fired_at: String::new(),
                text: String::new(),
                firings: 1,
                node: None,
                crossing: None,
                degraded: false,
                resolved: false,
                figures: RuleFigures::default(),
            },
            action,
            watcher_id: Uuid::nil(),
        }
    }
}

/// `{field: value}` of a `fields` watcher's key, `null` for `single`; a new_value
/// watcher's key without its value.
pub(super) fn key_values(spec: &WatcherSpec, key: &Key) -> Value {
    split_key(spec, key).0
}

/// The key's `{field: value}` (`null` for `single`) and, for a watcher that counts by
/// its watched value too (new_value: `WatcherSpec::counted_by`), the value's.
pub(super) fn split_key(spec: &WatcherSpec, key: &Key) -> (Value, Option<Value>) {
    let fields = match spec.counted_by() {
        Aggregator::Single {} => return (Value::Null, None),
        Aggregator::Fields { fields } => fields,
    };
    let values = match key.decode() {
        Ok(values) => values,
        // Keys are made by `Key::of` alone; the firing still goes out, without them.
        Err(e) => {
            warn!("watcher `{}`: {e}", spec.name);
            return (Value::Null, None);
        }
    };
    let mut named: Vec<(String, Value)> = fields.into_iter().zip(values).collect();
    let value_fields = spec.value_fields().len();
    let value = (spec.counted_by() != spec.aggregator).then(|| {
        let at = named.len().saturating_sub(value_fields);
        Value::Object(named.split_off(at).into_iter().collect())
    });
    let key = match (&spec.aggregator, named.is_empty()) {
        (Aggregator::Single {}, _) | (_, true) => Value::Null,
        _ => Value::Object(named.into_iter().collect()),
    };
    (key, value)
}

impl Firing {
    /// The rule and its figures as a command action's `EVENTSD_*` variables, besides
    /// those every firing has: `EVENTSD_RULE`, `EVENTSD_RESOLVED` (`true`/`false`), and
    /// the figures the firing carries (`EVENTSD_CURRENT`, `EVENTSD_PREVIOUS`,
    /// `EVENTSD_RATIO`, `EVENTSD_DISTINCT`, `EVENTSD_MAX_DISTINCT`,
    /// `EVENTSD_MIN_DISTINCT`, `EVENTSD_VALUE` as JSON).
    pub fn rule_env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("EVENTSD_RULE", self.rule.name().to_string()),
            ("EVENTSD_RESOLVED", self.resolved.to_string()),
        ];
        env.extend(self.figures.env());
        env
    }
}

impl Firing {
    /// The firing of `key` that `verdict` decided.
    pub(in crate::watch) fn new(
        event: &str,
        spec: &WatcherSpec,
        key: &Key,
        verdict: Verdict,
    ) -> Firing {
        let (key, value) = split_key(spec, key);
        let wording = wording(spec.rule);
        let for_key = match &key {
            Value::Object(_) => format!(" for {}", shown(&key)),
            _ => String::new(),
        };
        let said = Said {
            event,
            spec,
            for_key: &for_key,
            value: value.as_ref(),
            verdict,
        };
        Firing {
            id: Uuid::new_v4(),
            watcher: spec.name.to_string(),
            event: event.to_string(),
            text: wording.text(&said),
            key,
            rule: spec.rule,
            count: verdict.count,
            threshold: spec.threshold.unwrap_or(0),
            window_secs: spec.window_secs,
            fired_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            firings: 1,
            node: None,
            crossing: None,
            degraded: false,
            resolved: verdict.resolved,
            figures: wording.figures(&said),
        }
    }

    /// The rule and its figures as an e-mail body lists them (`Name: value`), in the
    /// rule's words: what the webhook document and `rule_env` carry, for a reader.
    pub fn figure_lines(&self) -> Vec<(&'static str, String)> {
        let mut lines = vec![("Rule", self.rule.name().to_string())];
        let reported = Reported {
            count: self.count,
            threshold: self.threshold,
            window_secs: self.window_secs,
            resolved: self.resolved,
            figures: &self.figures,
        };
        lines.extend(wording(self.rule).figure_lines(&reported));
        lines
    }
}
