//! A posted event body: parsing never panics; an accepted body gives a file line that is
//! one JSON object holding the three added fields (read back the way the daemon reads:
//! JSON allows numbers beyond a float), and watcher keys can be read from it.
#![no_main]

use eventsd::event::{Event, Fields};
use eventsd::registry::Aggregator;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let Ok(event) = Event::parse(body) else { return };
    let line = event.line(&uuid::Uuid::nil(), "logins", "2026-11-23T00:00:00.000Z");
    assert_eq!(line.matches('\n').count(), 1, "{line:?}");
    let again = Event::parse(line.trim_end().as_bytes()).expect("the line is a JSON object");
    assert_eq!(again.get("event_type"), Some(serde_json::Value::from("logins")));
    assert_eq!(again.get("event_uuid"), Some(serde_json::Value::from(uuid::Uuid::nil().to_string())));
    for path in ["ip", "user.id", "a.b.c", ""] {
        let _ = event.get(path);
    }
    let fields = Aggregator::Fields { fields: vec!["ip".into(), "user.id".into()] };
    let key = eventsd::watch::Key::of(&fields, &event, 64);
    assert!(key.as_str().len() <= 64);
    assert_eq!(key.decode().expect("a key decodes").len(), 2);
});
