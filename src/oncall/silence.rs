//! One silence (alerts.md): matchers over a firing's event type, watcher, rule and key
//! values, a time span, who made it and why, in Alertmanager's shape.
//!
//! Owns what a silence may hold (every string and count bounded, regexes compiled by the
//! linear-time `regex` crate, anchored and size-limited) and whether it matches a firing.
//! The same checks judge a client's body and an entry of `silences.json`: the state dir is
//! a client too. No I/O, no clock of its own: `now` is always given.

use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::time::{Millis, rfc3339};

/// At most this many matchers in one silence.
pub const MAX_MATCHERS: usize = 32;
/// The longest matcher value (a regex included).
pub const MAX_VALUE_BYTES: usize = 1024;
pub const MAX_CREATED_BY_BYTES: usize = 256;
pub const MAX_COMMENT_BYTES: usize = 4096;
/// The compiled size of a matcher's regex, and of its lazy DFA's cache: a pattern that
/// would grow beyond (`(a{100}){100}`) is refused instead of eating the master's memory.
const REGEX_SIZE_LIMIT: usize = 256 * 1024;
const REGEX_NEST_LIMIT: u32 = 32;

/// The prefix of a matcher on one value of the firing's key.
const KEY_PREFIX: &str = "key.";

/// What bounds a silence besides the constants above (`[silences]`, `[watchers]`).
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub max_duration_ms: Millis,
    pub max_field_path_bytes: usize,
}

/// A matcher as clients write it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MatcherSpec {
    pub name: String,
    pub value: String,
    #[serde(default)]
    pub is_regex: bool,
    /// `false` negates the matcher.
    #[serde(default = "yes")]
    pub is_equal: bool,
}

fn yes() -> bool {
    true
}

/// The body of `POST /silences`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewSilence {
    pub matchers: Vec<MatcherSpec>,
    #[serde(default, with = "rfc3339::optional")]
    pub starts_at: Option<Millis>,
    #[serde(with = "rfc3339")]
    pub ends_at: Millis,
    pub created_by: String,
    #[serde(default)]
    pub comment: String,
}

/// A silence as it is kept, shared and shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Silence {
    pub id: Uuid,
    pub matchers: Vec<MatcherSpec>,
    #[serde(with = "rfc3339")]
    pub starts_at: Millis,
    #[serde(with = "rfc3339")]
    pub ends_at: Millis,
    #[serde(with = "rfc3339")]
    pub updated_at: Millis,
    pub created_by: String,
    pub comment: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Starts later.
    Pending,
    Active,
    Expired,
}

impl State {
    pub fn parse(text: &str) -> Option<State> {
        match text {
            "pending" => Some(State::Pending),
            "active" => Some(State::Active),
            "expired" => Some(State::Expired),
            _ => None,
        }
    }
}

/// What a silence is matched against: the firing's names and key.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    pub event: &'a str,
    pub watcher: &'a str,
    pub rule: &'a str,
    /// `{field: value}`, or `null` for a `single` watcher.
    pub key: &'a Value,
}

/// A silence with its matchers compiled: what the store holds.
#[derive(Debug, Clone)]
pub struct Checked {
    pub silence: Silence,
    matchers: Vec<Matcher>,
}

#[derive(Debug, Clone)]
struct Matcher {
    target: Target,
    test: Test,
    negated: bool,
}

#[derive(Debug, Clone)]
enum Target {
    Event,
    Watcher,
    Rule,
    Key(String),
}

#[derive(Debug, Clone)]
enum Test {
    Equal(String),
    Regex(Regex),
}

impl NewSilence {
    /// The silence this body makes at `now`, checked; or why not (a 400's message).
    pub fn into_silence(self, id: Uuid, now: Millis, bounds: Bounds) -> Result<Checked, String> {
        let starts_at = self.starts_at.unwrap_or(now).max(now);
        if self.ends_at <= now {
            return Err("endsAt is in the past: a silence must end later than now".into());
        }
        Silence {
            id,
            matchers: self.matchers,
            starts_at,
            ends_at: self.ends_at,
            updated_at: now,
            created_by: self.created_by,
            comment: self.comment,
        }
        .check(bounds)
    }
}

impl Silence {
    /// Checks every bound and compiles the matchers.
    pub fn check(self, bounds: Bounds) -> Result<Checked, String> {
        bounded("createdBy", &self.created_by, MAX_CREATED_BY_BYTES)?;
        if self.created_by.trim().is_empty() {
            return Err("createdBy is required: who made the silence".into());
        }
        bounded("comment", &self.comment, MAX_COMMENT_BYTES)?;
        if self.ends_at <= self.starts_at {
            return Err("endsAt must be later than startsAt".into());
        }
        let duration = self.ends_at - self.starts_at;
        if duration > bounds.max_duration_ms {
            return Err(format!(
                "the silence lasts {}s, more than silences.max_duration_secs ({}s)",
                duration / 1000,
                bounds.max_duration_ms / 1000
            ));
        }
        if self.matchers.is_empty() || self.matchers.len() > MAX_MATCHERS {
            return Err(format!(
                "matchers: between 1 and {MAX_MATCHERS}, not {}",
                self.matchers.len()
            ));
        }
        let matchers = self
            .matchers
            .iter()
            .enumerate()
            .map(|(i, m)| Matcher::compile(m, bounds).map_err(|e| format!("matchers[{i}]: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        // Alertmanager's rule: a silence whose every matcher also matches an empty value
        // (`key.ip=~.*`, `event!=x`) would silence nearly everything.
        if matchers.iter().all(Matcher::matches_empty) {
            return Err(
                "at least one matcher must not match an empty value (a silence \
                        of everything is refused)"
                    .into(),
            );
        }
        Ok(Checked {
            silence: self,
            matchers,
        })
    }

    pub fn state(&self, now: Millis) -> State {
        if now < self.starts_at {
            State::Pending
        } else if now < self.ends_at {
            State::Active
        } else {
            State::Expired
        }
    }
}

impl Checked {
    /// Every matcher matches (AND).
    pub fn matches(&self, facts: &Facts) -> bool {
        self.matchers.iter().all(|m| m.matches(facts))
    }

    pub fn state(&self, now: Millis) -> State {
        self.silence.state(now)
    }
}

impl Matcher {
    fn compile(spec: &MatcherSpec, bounds: Bounds) -> Result<Matcher, String> {
        bounded("value", &spec.value, MAX_VALUE_BYTES)?;
        let target = match spec.name.as_str() {
            "event" => Target::Event,
            "watcher" => Target::Watcher,
            "rule" => Target::Rule,
            name => match name.strip_prefix(KEY_PREFIX) {
                Some(field) if !field.is_empty() => {
                    bounded("a key field", field, bounds.max_field_path_bytes)?;
                    Target::Key(field.to_string())
                }
                _ => {
                    let shown: String = name.chars().take(64).collect();
                    return Err(format!(
                        "name `{shown}`: one of event, watcher, rule or key.FIELD"
                    ));
                }
            },
        };
        let test = if spec.is_regex {
            let anchored = format!("^(?:{})$", spec.value);
            let regex = RegexBuilder::new(&anchored)
                .size_limit(REGEX_SIZE_LIMIT)
                .dfa_size_limit(REGEX_SIZE_LIMIT)
                .nest_limit(REGEX_NEST_LIMIT)
                .build()
                .map_err(|e| format!("not a valid regex: {}", first_line(&e.to_string())))?;
            Test::Regex(regex)
        } else {
            Test::Equal(spec.value.clone())
        };
        Ok(Matcher {
            target,
            test,
            negated: !spec.is_equal,
        })
    }

    fn matches(&self, facts: &Facts) -> bool {
        let key_value;
        let value = match &self.target {
            Target::Event => facts.event,
            Target::Watcher => facts.watcher,
            Target::Rule => facts.rule,
            Target::Key(field) => {
                key_value = key_text(facts.key, field);
                key_value.as_str()
            }
        };
        self.test_value(value)
    }

    fn test_value(&self, value: &str) -> bool {
        let found = match &self.test {
            Test::Equal(expected) => expected == value,
            Test::Regex(regex) => regex.is_match(value),
        };
        found != self.negated
    }

    fn matches_empty(&self) -> bool {
        self.test_value("")
    }
}

/// The text of `field` in a firing's key: a string as it is, another value as JSON, a
/// missing one empty (Alertmanager's rule for a missing label).
fn key_text(key: &Value, field: &str) -> String {
    match key.get(field) {
        Some(Value::String(text)) => text.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    }
}

fn bounded(what: &str, text: &str, max: usize) -> Result<(), String> {
    if text.len() > max {
        return Err(format!("{what}: {} bytes, at most {max}", text.len()));
    }
    if text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(format!("{what}: control characters are refused"));
    }
    Ok(())
}

fn first_line(text: &str) -> String {
    text.lines()
        .rfind(|line| !line.trim().is_empty())
        .unwrap_or(text)
        .trim()
        .chars()
        .take(200)
        .collect()
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use serde_json::json;

    /// The bounds and the time every silence test of `oncall` works with.
    pub(in crate::oncall) const BOUNDS: Bounds = Bounds {
        max_duration_ms: 30 * 86_400_000,
        max_field_path_bytes: 256,
    };
    pub(in crate::oncall) const NOW: Millis = 1_800_000_000_000;

    fn silence(body: Value) -> Result<Checked, String> {
        let new: NewSilence = serde_json::from_value(body).map_err(|e| e.to_string())?;
        new.into_silence(Uuid::new_v4(), NOW, BOUNDS)
    }

    fn body(matchers: Value) -> Value {
        json!({"matchers": matchers, "endsAt": "2027-01-16T00:00:00Z", "createdBy": "ops"})
    }

    fn facts<'a>(key: &'a Value) -> Facts<'a> {
        Facts {
            event: "login",
            watcher: "storm",
            rule: "threshold",
            key,
        }
    }

    #[test]
    fn all_matchers_must_match_and_regexes_are_anchored() {
        let s = silence(body(json!([
            {"name": "event", "value": "login"},
            {"name": "key.ip", "value": "10\\.0\\..*", "isRegex": true}
        ])))
        .unwrap();
        assert!(s.matches(&facts(&json!({"ip": "10.0.3.4"}))));
        assert!(!s.matches(&facts(&json!({"ip": "110.0.3.4"}))), "anchored");
        assert!(!s.matches(&facts(&json!({"user": "x"}))));
        let key = json!({"ip": "10.0.3.4"});
        let other = Facts {
            event: "logout",
            ..facts(&key)
        };
        assert!(!s.matches(&other));
    }

    #[test]
    fn negation_and_non_string_key_values() {
        let s = silence(body(json!([
            {"name": "watcher", "value": "storm"},
            {"name": "key.port", "value": "22", "isEqual": false}
        ])))
        .unwrap();
        assert!(!s.matches(&facts(&json!({"port": 22}))));
        assert!(s.matches(&facts(&json!({"port": 23}))));
    }

    #[test]
    fn a_silence_of_everything_or_of_nothing_is_refused() {
        let everything = silence(body(
            json!([{"name": "key.ip", "value": ".*", "isRegex": true}]),
        ));
        assert!(everything.unwrap_err().contains("at least one matcher"));
        assert!(silence(body(json!([]))).unwrap_err().contains("matchers"));
        let negated = silence(body(
            json!([{"name": "event", "value": "x", "isEqual": false}]),
        ));
        assert!(negated.is_err());
        let unknown = silence(body(json!([{"name": "host", "value": "a"}])));
        assert!(unknown.unwrap_err().contains("key.FIELD"));
    }

    #[test]
    fn a_catastrophic_pattern_is_linear_and_a_huge_one_is_refused() {
        let s = silence(body(
            json!([{"name": "key.ip", "value": "(a+)+$", "isRegex": true}]),
        ))
        .unwrap();
        let evil = json!({"ip": format!("{}!", "a".repeat(10_000))});
        assert!(!s.matches(&facts(&evil)));
        let huge = silence(body(
            json!([{"name": "key.ip", "value": "((a{100}){100}){100}", "isRegex": true}]),
        ));
        assert!(huge.unwrap_err().contains("regex"));
    }

    #[test]
    fn times_are_bounded() {
        let long = json!({"matchers": [{"name": "event", "value": "x"}],
            "endsAt": "2030-01-01T00:00:00Z", "createdBy": "ops"});
        assert!(silence(long).unwrap_err().contains("max_duration_secs"));
        let past = json!({"matchers": [{"name": "event", "value": "x"}],
            "endsAt": "2020-01-01T00:00:00Z", "createdBy": "ops"});
        assert!(silence(past).unwrap_err().contains("past"));
        let anonymous = json!({"matchers": [{"name": "event", "value": "x"}],
            "endsAt": "2027-01-16T00:00:00Z", "createdBy": " "});
        assert!(silence(anonymous).unwrap_err().contains("createdBy"));
    }

    #[test]
    fn states_follow_the_clock() {
        let s = silence(json!({"matchers": [{"name": "event", "value": "x"}],
            "startsAt": "2027-01-16T06:00:00Z", "endsAt": "2027-01-16T08:00:00Z",
            "createdBy": "ops"}))
        .unwrap();
        let start = s.silence.starts_at;
        assert_eq!(s.state(start - 1), State::Pending);
        assert_eq!(s.state(start), State::Active);
        assert_eq!(s.state(s.silence.ends_at), State::Expired);
    }
}
