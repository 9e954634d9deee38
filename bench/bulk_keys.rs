//! The per-line work of `bench/run`'s `_bulk` row without HTTP, for an A/B of two builds
//! under `valgrind --tool=callgrind` (instruction counts hold on a loaded machine; wall
//! clock does not): a 1 MB NDJSON body of the curve payload is split into lines, every
//! line is checked and read as an event, and its key for each of the row's 10 field sets
//! is written from the fields found once (`worker::keys`) and looked up in a per-set map:
//! the worker's own `parse_lines` and keys, then its batch's lookups (without its run of
//! equal keys).
//! A benchmark tool: not built into the daemon.
//!
//! Usage: bulk-keys [ROUNDS] (default 10); prints the events read and their keys' sum.

use std::collections::HashMap;
use std::rc::Rc;

use eventsd::event::{Scratch, parse_lines};
use eventsd::registry::Aggregator;
use eventsd::watch::Key;
use eventsd::watch::plan::FieldSet;
use eventsd::worker::keys::TypeKeys;

/// bench/run's `CURVE_PAYLOAD`, with `ip` and `user` varying so that keys differ.
const PAYLOAD: &str = r#"{"message":"This is test event message","date":"2016-03-04 12:00:00","host":"host-1","category":"unknown","field1":"f1","field2":"f2","ip":"10.0.0.IP","user":"USER"}"#;
/// bench/run's `FIELD_SETS`.
const FIELD_SETS: [&[&str]; 10] = [
    &["host"],
    &["category"],
    &["field1"],
    &["field2"],
    &["field1", "field2"],
    &["ip"],
    &["user"],
    &["ip", "user"],
    &["host", "ip"],
    &["category", "user"],
];
const BODY_BYTES: usize = 1 << 20;
const MAX_KEY_BYTES: usize = 1024;

type Counts = HashMap<Key, u64, foldhash::fast::RandomState>;

fn main() -> Result<(), String> {
    let rounds: usize = match std::env::args().nth(1) {
        Some(text) => text.parse().map_err(|e| format!("ROUNDS {text:?}: {e}"))?,
        None => 10,
    };
    let body = body();
    let sets: Vec<Rc<FieldSet>> = (FIELD_SETS.iter())
        .map(|fields| {
            let fields = fields.iter().map(|field| field.to_string()).collect();
            Rc::new(FieldSet {
                aggregator: Aggregator::Fields { fields },
                watchers: Vec::new(),
                hashed: None,
            })
        })
        .collect();
    let type_keys = TypeKeys::compile(&sets);
    let mut counts: Vec<Counts> = sets.iter().map(|_| HashMap::default()).collect();
    let (mut key, mut found) = (String::new(), Vec::new());
    let mut events_read = 0;
    for _ in 0..rounds {
        let mut scratch = Scratch::default();
        let events = parse_lines(body.as_bytes(), &mut scratch)?;
        events_read += events.len();
        let found = type_keys.find_fields(&events, &mut found);
        for (set, keys) in type_keys.sets().iter().zip(&mut counts) {
            for (index, event) in events.iter().enumerate() {
                set.write(event, found, index, MAX_KEY_BYTES, &mut key);
                match keys.get_mut(key.as_str()) {
                    Some(count) => *count += 1,
                    None => {
                        keys.insert(Key::from(key.as_str()), 1);
                    }
                }
            }
        }
    }
    let keys: usize = counts.iter().map(HashMap::len).sum();
    println!("{events_read} events read, {keys} keys");
    Ok(())
}

/// About `BODY_BYTES` of lines, 256 users over 16 addresses.
fn body() -> String {
    let mut body = String::with_capacity(BODY_BYTES + PAYLOAD.len());
    let mut line = 0;
    while body.len() < BODY_BYTES {
        let event = PAYLOAD
            .replace("IP", &(line % 16).to_string())
            .replace("USER", &format!("user-{}", line % 256));
        body.push_str(&event);
        body.push('\n');
        line += 1;
    }
    body
}
