//! A posted event on the hot path: checked to be a JSON object and read without building
//! a tree. Its fields are borrowed from the body, and a field is parsed only when a
//! watcher asks for it. Its line for file collectors is the posted text plus three fields.
//!
//! Owns the rules of what a valid event is and what its line holds. It does no I/O.
//! An event is read in one pass (`object`); serde_json reads what that pass does not
//! take, and alone words a refusal.

mod object;

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use uuid::Uuid;

use object::{Field, is_canonical};

/// The fields eventsd adds to every written event.
const ADDED: [&str; 3] = ["event_uuid", "event_type", "received_at"];

/// What a watcher reads of an event.
pub trait Fields {
    /// The value at `path` (dot paths reach into objects); `None` when missing.
    fn get(&self, path: &str) -> Option<Value>;
}

/// A posted JSON object, borrowed from the request body.
#[derive(Debug)]
pub struct Event<'a> {
    /// The object's text, on one line.
    text: &'a str,
    /// Its own, or its part of a `_bulk`'s fields (`Scratch`).
    fields: Cow<'a, [Field<'a>]>,
}

/// Where the events of one `_bulk` keep their fields, one after the other: one vector
/// for the whole body instead of an allocation an event. Lives as long as the events.
#[derive(Debug, Default)]
pub struct Scratch<'a>(Vec<Field<'a>>);

/// A `_bulk` body, NDJSON: one object a line; blank lines are skipped; any bad line
/// rejects the batch. The worker's, and `bench/bulk_keys.rs`'s.
pub fn parse_lines<'a>(
    body: &'a [u8],
    scratch: &'a mut Scratch<'a>,
) -> Result<Vec<Event<'a>>, String> {
    // `memchr` finds the line ends a word at a time: byte by byte, the split alone was a
    // tenth of a large `_bulk`'s cost. Counted first, so that each vector is allocated
    // once, not grown by copies; but never sized past what the body's bytes can hold (an
    // event takes 3 of them, `{}` and its newline; a field 5, `,"":0`), so that a body of
    // blank lines reserves no more than one of events.
    let lines = memchr::memchr_iter(b'\n', body).count() + 1;
    let events = lines.min(body.len() / 3 + 1);
    let fields = &mut scratch.0;
    fields.reserve((events * FIELDS_AT_ONCE).min(body.len() / 5 + 1));
    let mut spans = Vec::with_capacity(events);
    // The whole body checked as UTF-8 at once; line by line only to name a bad line.
    let whole = std::str::from_utf8(body).ok();
    let mut start = 0;
    let ends = memchr::memchr_iter(b'\n', body).chain(std::iter::once(body.len()));
    for (index, end) in ends.enumerate() {
        let (line, text) = (
            &body[start..end],
            whole.and_then(|text| text.get(start..end)),
        );
        start = end + 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let first = fields.len();
        let read = match text {
            Some(text) => read_text_into(text, fields),
            None => read_into(line, fields),
        };
        let text = read.map_err(|e| format!("Line {}: {e}", index + 1))?;
        spans.push((text, first..fields.len()));
    }
    if spans.is_empty() {
        return Err("The body holds no event (NDJSON: one JSON object a line)".to_string());
    }
    let fields: &'a [Field<'a>] = fields;
    let events = spans.into_iter().map(|(text, span)| Event {
        text,
        fields: Cow::Borrowed(fields.get(span).unwrap_or_default()),
    });
    Ok(events.collect())
}

/// Reads `body`, which must be one JSON object, pushing its fields onto `fields`; its
/// text, trimmed.
fn read_into<'a>(body: &'a [u8], fields: &mut Vec<Field<'a>>) -> Result<&'a str, String> {
    let text = std::str::from_utf8(body)
        .map_err(|_| "Only JSON object payload is accepted: the body is not UTF-8".to_string())?;
    read_text_into(text, fields)
}

/// `read_into` of a text known to be UTF-8.
fn read_text_into<'a>(text: &'a str, fields: &mut Vec<Field<'a>>) -> Result<&'a str, String> {
    let first = fields.len();
    if object::scan(text, fields).is_none() {
        fields.truncate(first);
        fields.extend(read_by_serde(text)?);
    }
    Ok(text.trim())
}

impl<'a> Event<'a> {
    /// Parses `body`, which must be one JSON object.
    pub fn parse(body: &'a [u8]) -> Result<Event<'a>, String> {
        // Room for a typical event's fields at once: one allocation, not three.
        let mut fields = Vec::with_capacity(FIELDS_AT_ONCE);
        let text = read_into(body, &mut fields)?;
        Ok(Event {
            text,
            fields: Cow::Owned(fields),
        })
    }

    /// The line a file collector writes: the object plus `event_uuid`, `event_type` and
    /// `received_at`, ending in `\n`.
    pub fn line(&self, id: &Uuid, event: &str, received_at: &str) -> String {
        let added = [id.to_string(), event.to_string(), received_at.to_string()];
        if self
            .fields
            .iter()
            .any(|field| ADDED.contains(&field.key.as_ref()))
        {
            // The client sent one of our fields: ours replace it, as in a JSON object.
            return self.rebuilt_line(added);
        }
        // Outside strings, a line break in JSON is only white space: a blank does the same.
        let body = self.text.strip_suffix('}').unwrap_or(self.text).trim_end();
        let mut line = String::with_capacity(self.text.len() + 128);
        line.extend(
            body.chars()
                .map(|c| if c == '\n' || c == '\r' { ' ' } else { c }),
        );
        for (index, (name, value)) in ADDED.iter().zip(&added).enumerate() {
            if index > 0 || !self.fields.is_empty() {
                line.push(',');
            }
            line.push_str(&format!("\"{name}\":{}", Value::from(value.as_str())));
        }
        line.push_str("}\n");
        line
    }

    /// The line from the borrowed fields, leaving out the client's copies of ours. Values
    /// are copied as posted, never re-parsed: a number too large for a float stays whole.
    fn rebuilt_line(&self, added: [String; 3]) -> String {
        let mut line = String::from("{");
        for field in self
            .fields
            .iter()
            .filter(|field| !ADDED.contains(&field.key.as_ref()))
        {
            line.push_str(&Value::from(field.key.as_ref()).to_string());
            line.push(':');
            line.push_str(field.value);
            line.push(',');
        }
        let ours: Vec<String> = ADDED
            .iter()
            .zip(&added)
            .map(|(name, value)| format!("\"{name}\":{}", Value::from(value.as_str())))
            .collect();
        line.push_str(&ours.join(","));
        line.push_str("}\n");
        line
    }

    /// Appends the compact JSON of the value at `path` (`null` when missing) to `out`,
    /// exactly as `get(path)` would print. The hot path of every `fields` watcher: a
    /// top-level string without escapes, an integer, `true`, `false` or `null` is already
    /// in that form, and is copied as it came; anything else takes `get`'s way.
    pub fn write_json(&self, path: &str, out: &mut String) {
        if path.contains('.') {
            return self.write_value(path, out);
        }
        self.write_field_json(self.position(path), path, out);
    }

    /// `write_json(key, out)` for the top-level field `key` found at `position` (what
    /// `position(key)` answered): a caller that needs a field for several keys looks it
    /// up once.
    pub fn write_field_json(&self, position: Option<usize>, key: &str, out: &mut String) {
        match position.and_then(|at| self.fields.get(at)) {
            None => out.push_str("null"),
            Some(field) if field.canonical => out.push_str(field.value),
            Some(_) => self.write_value(key, out),
        }
    }

    /// Where the top-level field `key` is among the event's fields: the last occurrence
    /// wins, as when a JSON object is read into a map.
    pub fn position(&self, key: &str) -> Option<usize> {
        let key = key.as_bytes();
        (self.fields.iter()).rposition(|field| same_bytes(field.key.as_bytes(), key))
    }

    /// Whether the field at `position` (`position`'s answer) holds the same text as
    /// `other`'s at `other_position`, both missing included: the same text is the same
    /// value, so the same key.
    pub fn same_field(
        &self,
        position: Option<usize>,
        other: &Event<'_>,
        other_position: Option<usize>,
    ) -> bool {
        let this = position.and_then(|at| self.fields.get(at));
        let that = other_position.and_then(|at| other.fields.get(at));
        match (
            this.map(|f| f.value.as_bytes()),
            that.map(|f| f.value.as_bytes()),
        ) {
            (None, None) => true,
            (Some(this), Some(that)) => same_bytes(this, that),
            _ => false,
        }
    }

    /// The value at `path` printed by serde_json: the way of values not in print form.
    fn write_value(&self, path: &str, out: &mut String) {
        let value = self.get(path).unwrap_or(Value::Null);
        let _ = fmt::Write::write_fmt(out, format_args!("{value}"));
    }

    /// The top-level field `key` (see `position`).
    fn field(&self, key: &str) -> Option<&Field<'a>> {
        self.fields.get(self.position(key)?)
    }
}

impl Fields for Event<'_> {
    fn get(&self, path: &str) -> Option<Value> {
        let mut parts = path.split('.');
        let field = self.field(parts.next()?)?;
        let value: Value = serde_json::from_str(field.value).ok()?;
        parts.try_fold(value, |value, part| match value {
            Value::Object(mut object) => object.remove(part),
            _ => None,
        })
    }
}

impl Fields for Map<String, Value> {
    fn get(&self, path: &str) -> Option<Value> {
        let mut parts = path.split('.');
        let first = Map::get(self, parts.next()?)?;
        parts
            .try_fold(first, |value, part| value.get(part))
            .cloned()
    }
}

/// A typical event's fields.
const FIELDS_AT_ONCE: usize = 8;

/// `a == b`, a word at a time and inline: field names are a few bytes, and a call to
/// `memcmp` for each cost more than the comparison (a tenth of a `_bulk`'s time).
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (words_a, words_b) = (a.chunks_exact(8), b.chunks_exact(8));
    let (rest_a, rest_b) = (words_a.remainder(), words_b.remainder());
    let word = |chunk: &[u8]| <[u8; 8]>::try_from(chunk).ok().map(u64::from_ne_bytes);
    words_a.zip(words_b).all(|(x, y)| word(x) == word(y))
        && rest_a.iter().zip(rest_b).all(|(x, y)| x == y)
}

/// `text`'s fields as serde_json reads them, or why it is no JSON object.
fn read_by_serde(text: &str) -> Result<Vec<Field<'_>>, String> {
    let fields: Borrowed = serde_json::from_str(text).map_err(|e| {
        if e.is_syntax() || e.is_eof() {
            format!("Only JSON object payload is accepted: {e}")
        } else {
            "Only JSON object payload is accepted".to_string()
        }
    })?;
    Ok(fields.0)
}

/// The fields of an object, keys borrowed unless they hold escapes.
struct Borrowed<'a>(Vec<Field<'a>>);

impl<'de> Deserialize<'de> for Borrowed<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Object;
        impl<'de> Visitor<'de> for Object {
            type Value = Borrowed<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Borrowed<'de>, A::Error> {
                let mut fields = Vec::with_capacity(FIELDS_AT_ONCE);
                while let Some(Key(key)) = map.next_key()? {
                    let value: &RawValue = map.next_value()?;
                    let value = value.get();
                    let canonical = is_canonical(value);
                    fields.push(Field {
                        key,
                        value,
                        canonical,
                    });
                }
                Ok(Borrowed(fields))
            }
        }
        deserializer.deserialize_map(Object)
    }
}

struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Text;
        impl<'de> Visitor<'de> for Text {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, key: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(key)))
            }
            fn visit_str<E>(self, key: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(key.to_string())))
            }
        }
        deserializer.deserialize_str(Text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line_of(body: &str) -> Value {
        let event = Event::parse(body.as_bytes()).unwrap();
        let line = event.line(&Uuid::nil(), "logins", "2026-11-23T00:00:00.000Z");
        assert!(
            line.ends_with('\n') && line.matches('\n').count() == 1,
            "{line:?}"
        );
        serde_json::from_str(&line).unwrap()
    }

    #[test]
    fn only_objects_are_events() {
        for bad in [
            "[1]", "\"text\"", "12", "null", "", "{", "{\"a\":}", "{} {}",
        ] {
            let message = Event::parse(bad.as_bytes())
                .err()
                .unwrap_or_else(|| panic!("{bad:?} accepted"));
            assert!(
                message.starts_with("Only JSON object payload is accepted"),
                "{message}"
            );
        }
        assert!(Event::parse(b"{\xff}").unwrap_err().contains("UTF-8"));
    }

    /// A `_bulk`'s events, their fields in one vector, read as each line alone would:
    /// serde_json's lines (escaped keys) among the single pass's, duplicates, blanks.
    #[test]
    fn a_bulks_events_read_as_each_line_alone() {
        let body = "{\"ip\": \"a\", \"ip\": \"b\"}\n\n{\"esc\\u0061ped\": 1, \"n\": {\"x\": 2}}\r\n  {}  \n{\"last\": true}";
        let mut scratch = Scratch::default();
        let events = parse_lines(body.as_bytes(), &mut scratch).unwrap();
        let lines: Vec<&str> = body.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(events.len(), 4);
        for (event, line) in events.iter().zip(lines) {
            let alone = Event::parse(line.as_bytes()).unwrap();
            assert_eq!(
                (event.text, &event.fields[..]),
                (alone.text, &alone.fields[..])
            );
        }
        assert_eq!(events[0].get("ip"), Some(Value::from("b")));
        assert_eq!(events[1].get("escaped"), Some(Value::from(1)));
    }

    #[test]
    fn the_line_is_the_object_plus_three_fields_on_one_line() {
        let line = line_of("{\n  \"ip\": \"10.0.0.1\",\n  \"n\": {\"a\": [1, 2]}\n}\n");
        assert_eq!(
            line,
            serde_json::json!({"ip": "10.0.0.1", "n": {"a": [1, 2]}, "event_uuid": Uuid::nil(),
                               "event_type": "logins", "received_at": "2026-11-23T00:00:00.000Z"})
        );
        assert_eq!(line_of("{}")["event_type"], "logins");
        assert_eq!(line_of("{ }")["event_type"], "logins");
    }

    #[test]
    fn numbers_beyond_a_float_are_kept_whole_even_when_the_line_is_rebuilt() {
        let body = r#"{"event_type": "forged", "big": 2e99999, "ip": "a"}"#;
        let event = Event::parse(body.as_bytes()).unwrap();
        let line = event.line(&Uuid::nil(), "logins", "now");
        assert!(line.contains("\"big\":2e99999"), "{line}");
        let again = Event::parse(line.trim_end().as_bytes()).unwrap();
        assert_eq!(again.get("event_type"), Some(Value::from("logins")));
        assert_eq!(again.get("ip"), Some(Value::from("a")));
    }

    #[test]
    fn our_fields_replace_the_clients() {
        let line = line_of(r#"{"event_type": "forged", "x": 1}"#);
        assert_eq!(line["event_type"], "logins");
        assert_eq!(line["x"], 1);
    }

    #[test]
    fn watchers_read_fields_by_dot_path_and_the_last_duplicate() {
        let event =
            Event::parse(br#"{"ip": "a", "user": {"id": 7}, "ip": "b", "esc\u0061ped": 1}"#)
                .unwrap();
        assert_eq!(event.get("ip"), Some(Value::from("b")));
        assert_eq!(event.get("user.id"), Some(Value::from(7)));
        assert_eq!(event.get("escaped"), Some(Value::from(1)));
        assert_eq!(event.get("user.name"), None);
        assert_eq!(event.get("missing"), None);
    }
}
