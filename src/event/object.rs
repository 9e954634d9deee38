//! The single pass that reads a posted JSON object on the hot path: it checks the whole
//! text and notes each top-level field (key, value as posted, whether the value is already
//! in the form serde_json prints) at once, without building a tree or going through
//! serde's visitors.
//!
//! Owns one promise: whatever it accepts, serde_json (read as `event.rs` reads an event)
//! accepts with the same fields. It never decides a refusal: on anything it does not
//! take (bad JSON, a key with escapes, values nested deeper than `MAX_DEPTH`) it answers
//! `None`, and serde_json reads the text and words the error, so that every reply stays
//! as it was. It does no allocation beyond the caller's vector.

use std::borrow::Cow;

/// One field of an object, borrowed from the posted text.
#[derive(Debug, Clone, PartialEq)]
pub struct Field<'a> {
    /// The key, borrowed unless it held escapes (which only serde_json reads).
    pub key: Cow<'a, str>,
    /// The value's text, from its first to its last byte.
    pub value: &'a str,
    /// Whether serde_json prints the value as `value` itself (see `is_canonical`).
    pub canonical: bool,
}

/// Deeper values go to serde_json, which reads them without a limit.
const MAX_DEPTH: usize = 64;

/// The fields of `text`, pushed onto `fields` (after what it holds: a `_bulk`'s events
/// share one vector), when it is one JSON object whose keys hold no escapes; `None` when
/// serde_json must decide.
pub fn scan<'a>(text: &'a str, fields: &mut Vec<Field<'a>>) -> Option<()> {
    let bytes = text.as_bytes();
    let mut at = skip_blanks(bytes, 0);
    if bytes.get(at) != Some(&b'{') {
        return None;
    }
    at = skip_blanks(bytes, at + 1);
    if bytes.get(at) == Some(&b'}') {
        return (skip_blanks(bytes, at + 1) == bytes.len()).then_some(());
    }
    loop {
        let (key, after_key) = plain_key(text, at)?;
        at = skip_blanks(bytes, after_key);
        if bytes.get(at) != Some(&b':') {
            return None;
        }
        let start = skip_blanks(bytes, at + 1);
        let (end, canonical) = value(bytes, start, 0)?;
        fields.push(Field {
            key: Cow::Borrowed(key),
            value: &text[start..end],
            canonical,
        });
        at = skip_blanks(bytes, end);
        match bytes.get(at) {
            Some(b',') => at = skip_blanks(bytes, at + 1),
            Some(b'}') => return (skip_blanks(bytes, at + 1) == bytes.len()).then_some(()),
            _ => return None,
        }
    }
}

/// Whether serde_json prints the value of `raw` (valid JSON) as `raw` itself: a string
/// without escapes (JSON forbids raw control characters and quotes in one), an integer
/// that fits 64 bits (no sign on zero), `true`, `false`, `null`.
pub fn is_canonical(raw: &str) -> bool {
    let bytes = raw.as_bytes();
    match bytes.first() {
        Some(b'"') => !bytes.contains(&b'\\'),
        Some(b'-' | b'0'..=b'9') => {
            let digits = raw.strip_prefix('-').unwrap_or(raw);
            digits.bytes().all(|b| b.is_ascii_digit()) && digits.len() <= 18 && raw != "-0"
        }
        _ => matches!(raw, "true" | "false" | "null"),
    }
}

/// JSON's white space, as serde_json skips it.
fn skip_blanks(bytes: &[u8], mut at: usize) -> usize {
    while let Some(b' ' | b'\n' | b'\t' | b'\r') = bytes.get(at) {
        at += 1;
    }
    at
}

/// The key starting at `at` (its opening quote) and the index past its closing quote;
/// `None` for anything but a string without escapes.
fn plain_key(text: &str, at: usize) -> Option<(&str, usize)> {
    let bytes = text.as_bytes();
    if bytes.get(at) != Some(&b'"') {
        return None;
    }
    let end = at + 1 + string_run(&bytes[at + 1..]);
    (bytes.get(end) == Some(&b'"')).then(|| (&text[at + 1..end], end + 1))
}

/// The length of the run of bytes that may stand as they are in a string: up to a quote,
/// a backslash, a control character or the end.
fn string_run(bytes: &[u8]) -> usize {
    (bytes.iter())
        .position(|&b| ENDS_A_RUN[usize::from(b)])
        .unwrap_or(bytes.len())
}

/// The bytes that end a run of plain text in a string: a table, one load a byte where
/// three comparisons were (the string scan is most of a `_bulk` line's reading).
const ENDS_A_RUN: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 0x20 {
        table[byte] = true;
        byte += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

/// The end of the value starting at `at`, and whether it is canonical; `None` when there
/// is none, as serde_json reads a value it keeps unparsed (no limit on numbers' size,
/// `\u` escapes not paired).
fn value(bytes: &[u8], at: usize, depth: usize) -> Option<(usize, bool)> {
    match bytes.get(at)? {
        b'"' => string(bytes, at + 1),
        b't' => literal(bytes, at, b"true"),
        b'f' => literal(bytes, at, b"false"),
        b'n' => literal(bytes, at, b"null"),
        b'-' | b'0'..=b'9' => number(bytes, at),
        b'[' | b'{' if depth < MAX_DEPTH => Some((nested(bytes, at, depth + 1)?, false)),
        _ => None,
    }
}

fn literal(bytes: &[u8], at: usize, word: &[u8]) -> Option<(usize, bool)> {
    let end = at + word.len();
    (bytes.get(at..end)? == word).then_some((end, true))
}

/// The string whose text starts at `at` (past its opening quote): its end past the
/// closing quote, canonical when it holds no escape.
fn string(bytes: &[u8], mut at: usize) -> Option<(usize, bool)> {
    let mut canonical = true;
    loop {
        at += string_run(&bytes[at..]);
        match bytes.get(at)? {
            b'"' => return Some((at + 1, canonical)),
            b'\\' => {
                canonical = false;
                at = escape(bytes, at + 1)?;
            }
            _ => return None,
        }
    }
}

/// Past the escape whose letter is at `at`.
fn escape(bytes: &[u8], at: usize) -> Option<usize> {
    match bytes.get(at)? {
        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Some(at + 1),
        b'u' => {
            let hex = bytes.get(at + 1..at + 5)?;
            hex.iter().all(u8::is_ascii_hexdigit).then_some(at + 5)
        }
        _ => None,
    }
}

/// A number as JSON spells it: its end, canonical for an integer serde_json prints as
/// spelt.
fn number(bytes: &[u8], start: usize) -> Option<(usize, bool)> {
    let negative = bytes[start] == b'-';
    let first = start + usize::from(negative);
    let mut at = match bytes.get(first)? {
        b'0' if matches!(bytes.get(first + 1), Some(b'0'..=b'9')) => return None,
        b'0' => first + 1,
        b'1'..=b'9' => digits(bytes, first + 1),
        _ => return None,
    };
    let integer_digits = at - first;
    let integer = !matches!(bytes.get(at), Some(b'.' | b'e' | b'E'));
    if bytes.get(at) == Some(&b'.') {
        at = at_least_one_digit(bytes, at + 1)?;
    }
    if let Some(b'e' | b'E') = bytes.get(at) {
        at += 1;
        if let Some(b'+' | b'-') = bytes.get(at) {
            at += 1;
        }
        at = at_least_one_digit(bytes, at)?;
    }
    let negative_zero = negative && bytes[first] == b'0';
    Some((at, integer && integer_digits <= 18 && !negative_zero))
}

fn digits(bytes: &[u8], mut at: usize) -> usize {
    while let Some(b'0'..=b'9') = bytes.get(at) {
        at += 1;
    }
    at
}

fn at_least_one_digit(bytes: &[u8], at: usize) -> Option<usize> {
    let end = digits(bytes, at);
    (end > at).then_some(end)
}

/// The end of the array or object opening at `at`, `depth` deep.
fn nested(bytes: &[u8], at: usize, depth: usize) -> Option<usize> {
    let object = bytes[at] == b'{';
    let close = if object { b'}' } else { b']' };
    let mut at = skip_blanks(bytes, at + 1);
    if bytes.get(at) == Some(&close) {
        return Some(at + 1);
    }
    loop {
        if object {
            if bytes.get(at) != Some(&b'"') {
                return None;
            }
            at = skip_blanks(bytes, string(bytes, at + 1)?.0);
            if bytes.get(at) != Some(&b':') {
                return None;
            }
            at = skip_blanks(bytes, at + 1);
        }
        at = skip_blanks(bytes, value(bytes, at, depth)?.0);
        match bytes.get(at)? {
            b',' => at = skip_blanks(bytes, at + 1),
            &b if b == close => return Some(at + 1),
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::read_by_serde;
    use super::*;

    /// What the single pass makes of `text` is what serde_json makes of it: the same
    /// fields when it takes it, and it leaves to serde_json only refusals, keys with
    /// escapes and deep values.
    fn agrees(text: &str) -> bool {
        let mut fields = Vec::new();
        let scanned = scan(text, &mut fields);
        match (scanned, read_by_serde(text)) {
            (Some(()), Ok(expected)) => assert_eq!(fields, expected, "{text:?}"),
            (Some(()), Err(refusal)) => panic!("{text:?} taken; serde_json: {refusal}"),
            (None, Ok(expected)) => {
                let unescaped = expected.iter().any(|f| matches!(f.key, Cow::Owned(_)));
                let deep = text.matches(['[', '{']).count() > MAX_DEPTH;
                assert!(unescaped || deep, "{text:?} left to serde_json");
            }
            (None, Err(_)) => {}
        }
        scanned.is_some()
    }

    #[test]
    fn what_it_takes_serde_json_reads_alike_and_what_it_refuses_too() {
        let taken = [
            r#"{}"#,
            " \t\r\n{ \r\n} \n",
            r#"{"a":"plain","b":7,"c":true,"d":false,"e":null}"#,
            r#"{"s":"\"\\\/\b\f\n\r\t","u":"\u00e9\u00E9\ud83d\ude00","lone":"\ud800"}"#,
            r#"{"ü":"ünïcödé ✓","del":"\u007f"}"#,
            r#"{"n":[-0,0,-1,1.5,1e3,1E+3,1e-3,2e99999,123456789012345678,1234567890123456789]}"#,
            r#"{"i":-0,"j":0,"k":-12,"l":123456789012345678,"m":1234567890123456789,"o":1.0}"#,
            r#"{"o":{"x":[1,{"y":"z"},[]],"e":{}},"a":[ "s" , {"\u0041\n":1} ]}"#,
            r#"{"dup":1,"dup":"two","dup":{"three":3}}"#,
        ];
        for text in taken {
            assert!(agrees(text), "{text:?} left to serde_json");
        }
        let deep = format!(r#"{{"d":{}1{}}}"#, "[".repeat(100), "]".repeat(100));
        let left = [r#"{"esc\u0061ped":1}"#, r#"{"a\"b":1}"#, deep.as_str()];
        for text in left {
            assert!(!agrees(text), "{text:?} taken");
        }
        let refused = [
            "",
            " ",
            "[1]",
            "\"text\"",
            "12",
            "null",
            "{",
            "}",
            "{\"a\":}",
            "{} {}",
            "{}x",
            "{\"a\":1,}",
            "{\"a\":1 \"b\":2}",
            "{,}",
            "{\"a\"}",
            "{\"a\" 1}",
            "{a:1}",
            "{'a':1}",
            "{\"a\":01}",
            "{\"a\":1.}",
            "{\"a\":.5}",
            "{\"a\":1e}",
            "{\"a\":-}",
            "{\"a\":+1}",
            "{\"a\":1e+}",
            "{\"a\":tru}",
            "{\"a\":nul}",
            "{\"a\":True}",
            "{\"a\":\"\\x\"}",
            "{\"a\":\"\\u12\"}",
            "{\"a\":\"\\u12g4\"}",
            "{\"a\":\"x",
            "{\"a\":\"\u{1}\"}",
            "{\"\u{1f}\":1}",
            "{\"a\":[1,]}",
            "{\"a\":[,1]}",
            "{\"a\":[1 2]}",
            "{\"a\":{\"b\"}}",
            "{\"a\":{\"b\":1,}}",
            "{\"a\":{1:2}}",
            "{\"a\":[}",
            "{\"a\":{]}",
            "{\"a\":1",
            "{\"a\":\"\\",
            "{\"a\":NaN}",
            "{\"a\":Infinity}",
            "{\"a\":1}\u{0}",
            "\u{feff}{}",
        ];
        for text in refused {
            assert!(!agrees(text), "{text:?} taken");
            assert!(read_by_serde(text).is_err(), "{text:?} is JSON");
        }
    }

    /// Thousands of generated objects, many of them broken by a few edits: the single
    /// pass and serde_json never differ.
    #[test]
    fn generated_lines_read_the_same_both_ways() {
        let mut random = Random(0x9e37_79b9_7f4a_7c15);
        let (mut taken, mut refused) = (0, 0);
        for _ in 0..40_000 {
            let mut text: Vec<char> = random.object().chars().collect();
            if random.below(3) == 0 {
                for _ in 0..=random.below(3) {
                    random.edit(&mut text);
                }
            }
            let text: String = text.into_iter().collect();
            if agrees(&text) {
                taken += 1;
            } else {
                refused += 1;
            }
        }
        assert!(
            taken > 10_000 && refused > 10_000,
            "{taken} taken, {refused} not"
        );
    }

    /// xorshift64: a repeatable stream, no crate needed.
    struct Random(u64);

    const WORDS: [&str; 12] = [
        "a", "ip", "user", "ü", "\\\"", "\\\\", "\\n", "\\u00e9", "\\ud800", "\\uDC00x", "✓ ok", "",
    ];
    const NUMBERS: [&str; 12] = [
        "0",
        "-0",
        "7",
        "-42",
        "1.5",
        "-0.0",
        "1e3",
        "2E-7",
        "1e+400",
        "123456789012345678",
        "-1234567890123456789",
        "18446744073709551616",
    ];
    const BLANKS: [&str; 6] = ["", "", "", " ", "\t", "\r\n "];
    const EDITS: [char; 20] = [
        '{', '}', '[', ']', '"', ',', ':', '\\', ' ', '0', '1', '-', '.', 'e', 'u', 'n', '\u{1}',
        '\u{7f}', 'é', 'x',
    ];

    impl Random {
        fn below(&mut self, n: u64) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n) as usize
        }

        fn pick<'t>(&mut self, from: &[&'t str]) -> &'t str {
            from[self.below(from.len() as u64)]
        }

        fn blank(&mut self) -> &'static str {
            self.pick(&BLANKS)
        }

        fn object(&mut self) -> String {
            self.members(0)
        }

        fn members(&mut self, depth: usize) -> String {
            let count = self.below(6);
            let members: Vec<String> = (0..count)
                .map(|_| {
                    let key = self.pick(&WORDS[..if depth == 0 { 5 } else { 12 }]);
                    let (before, after) = (self.blank(), self.blank());
                    format!(
                        "{before}\"{key}\"{after}:{}{}",
                        self.blank(),
                        self.value(depth)
                    )
                })
                .collect();
            format!("{}{{{}}}{}", self.blank(), members.join(","), self.blank())
        }

        fn value(&mut self, depth: usize) -> String {
            match self.below(if depth < 3 { 7 } else { 5 }) {
                0 | 1 => format!("\"{}{}\"", self.pick(&WORDS), self.pick(&WORDS)),
                2 => self.pick(&NUMBERS).to_string(),
                3 => self.pick(&["true", "false", "null"]).to_string(),
                4 => format!("\"{}\"", self.pick(&WORDS)),
                5 => self.members(depth + 1),
                _ => {
                    let items: Vec<String> = (0..self.below(4))
                        .map(|_| format!("{}{}", self.value(depth + 1), self.blank()))
                        .collect();
                    format!("[{}]", items.join(","))
                }
            }
        }

        fn edit(&mut self, text: &mut Vec<char>) {
            let at = self.below(text.len() as u64 + 1);
            let edit = EDITS[self.below(EDITS.len() as u64)];
            match self.below(3) {
                0 if at < text.len() => {
                    text.remove(at);
                }
                1 if at < text.len() => text[at] = edit,
                _ => text.insert(at, edit),
            }
        }
    }
}
