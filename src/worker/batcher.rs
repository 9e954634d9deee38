//! The worker's count batcher: the watcher counts of acknowledged events, gathered and
//! shipped to the master at most `BATCH_DELAY` after the first of them (or at once when
//! the batch is large), so that the master handles one message per batch, not per event.
//!
//! Owns the counts between the reply and the master; the last batch goes out before the
//! worker exits (`flush`), so an acknowledged event is never left uncounted. A batch is
//! shipped as soon as it reaches `BATCH_SHIP_AT` entries or `BATCH_SHIP_BYTES` of keys,
//! also in the middle of one request's counts (a 1 MB `_bulk` × 200 watchers): every
//! frame stays far below the frame limit, which is a transport detail, never a reason
//! to lose counts.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::Notify;
use uuid::Uuid;

use super::link::Link;
use crate::ipc::WorkerMessage;
use crate::watch::{CountBatch, Key};

/// Watcher counts reach the master at most this long after the event was acknowledged...
const BATCH_DELAY: Duration = Duration::from_millis(10);
/// ...or at once when the batch holds this many entries...
const BATCH_SHIP_AT: usize = 1024;
/// ...or this many bytes of keys.
const BATCH_SHIP_BYTES: usize = 1024 * 1024;

pub struct Batcher {
    link: Link,
    batch: RefCell<Batch>,
    started: Notify,
}

impl Batcher {
    pub fn new(link: Link) -> Batcher {
        Batcher {
            link,
            batch: RefCell::default(),
            started: Notify::new(),
        }
    }

    /// Counts `collected` events of `event`, and one per (watcher, key) in `keys`.
    pub fn count(&self, event: &str, collected: u64, keys: Vec<(Uuid, Key)>) {
        let mut batch = self.batch.borrow_mut();
        let was_empty = batch.is_empty();
        for key in keys {
            batch.add_key(key);
            if batch.is_full() {
                self.link.send(WorkerMessage::Counts(batch.take()));
            }
        }
        // The events go with the request's last keys: once the master has counted the
        // events, it has every one of their keys too.
        batch.add_events(event, collected);
        if was_empty {
            self.started.notify_one();
        }
    }

    /// Ships the counts gathered so far, at most `BATCH_DELAY` after the first of them.
    pub async fn ship_periodically(&self) {
        loop {
            self.started.notified().await;
            tokio::time::sleep(BATCH_DELAY).await;
            self.flush();
        }
    }

    /// Ships what is left in the batch now (the worker is exiting).
    pub fn flush(&self) {
        let mut batch = self.batch.borrow_mut();
        if !batch.is_empty() {
            self.link.send(WorkerMessage::Counts(batch.take()));
        }
    }
}

/// The batch being filled, summed per event type and per (watcher, key).
#[derive(Debug, Default)]
struct Batch {
    events: HashMap<String, u64>,
    keys: HashMap<(Uuid, Key), u64>,
    key_bytes: usize,
}

impl Batch {
    fn add_events(&mut self, event: &str, events: u64) {
        match self.events.get_mut(event) {
            Some(count) => *count += events,
            None => {
                self.events.insert(event.to_string(), events);
            }
        }
    }

    fn add_key(&mut self, key: (Uuid, Key)) {
        let bytes = key.1.as_str().len();
        let count = self.keys.entry(key).or_insert_with(|| 0);
        if *count == 0 {
            self.key_bytes += bytes;
        }
        *count += 1;
    }

    fn is_empty(&self) -> bool {
        self.events.is_empty() && self.keys.is_empty()
    }

    fn is_full(&self) -> bool {
        self.keys.len() + self.events.len() >= BATCH_SHIP_AT || self.key_bytes >= BATCH_SHIP_BYTES
    }

    fn take(&mut self) -> CountBatch {
        self.key_bytes = 0;
        CountBatch {
            events: self.events.drain().collect(),
            keys: self
                .keys
                .drain()
                .map(|((id, key), n)| (id, key, n))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Aggregator;

    fn ip(value: &str) -> Key {
        key_of_at_most(value, 1024)
    }

    fn key_of_at_most(value: &str, max_bytes: usize) -> Key {
        let by_ip = Aggregator::Fields {
            fields: vec!["ip".into()],
        };
        Key::of(
            &by_ip,
            serde_json::json!({ "ip": value }).as_object().unwrap(),
            max_bytes,
        )
    }

    #[test]
    fn a_batch_sums_per_event_and_per_key() {
        let (w1, w2) = (Uuid::new_v4(), Uuid::new_v4());
        let mut batch = Batch::default();
        batch.add_events("logins", 3);
        for key in [
            (w1, ip("a")),
            (w2, Key::default()),
            (w1, ip("a")),
            (w1, ip("b")),
        ] {
            batch.add_key(key);
        }
        let mut taken = batch.take();
        taken.keys.sort();
        let mut expected = vec![(w1, ip("a"), 2), (w1, ip("b"), 1), (w2, Key::default(), 1)];
        expected.sort();
        assert_eq!(taken.events, vec![("logins".to_string(), 3)]);
        assert_eq!(taken.keys, expected);
        assert!(batch.is_empty());
    }

    #[test]
    fn a_batch_is_full_by_entries_or_by_key_bytes() {
        let w = Uuid::new_v4();
        let mut batch = Batch::default();
        for n in 0..BATCH_SHIP_AT - 1 {
            batch.add_key((w, ip(&n.to_string())));
        }
        assert!(!batch.is_full());
        batch.add_key((w, ip("last")));
        assert!(batch.is_full());
        batch.take();
        let fat = "x".repeat(60_000);
        for n in 0..18 {
            batch.add_key((w, key_of_at_most(&format!("{fat}{n}"), 65_536)));
        }
        assert!(batch.is_full(), "{} key bytes", batch.key_bytes);
    }
}
