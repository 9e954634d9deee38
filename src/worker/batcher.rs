//! The worker's count batcher: the watcher counts of acknowledged events, gathered and
//! shipped to the master at most `BATCH_DELAY` after the first of them (or at once when
//! the batch is large), so that the master handles one message per batch, not per event.
//!
//! Owns the counts between the reply and the master; the last batch goes out before the
//! worker exits (`flush`), so an acknowledged event is never left uncounted.

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
/// ...or at once when the batch holds this many entries.
const BATCH_SHIP_AT: usize = 1024;

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
        batch.add(event, collected, keys);
        if batch.len() >= BATCH_SHIP_AT {
            self.link.send(WorkerMessage::Counts(batch.take()));
        } else if was_empty {
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
}

impl Batch {
    fn add(&mut self, event: &str, events: u64, keys: Vec<(Uuid, Key)>) {
        match self.events.get_mut(event) {
            Some(count) => *count += events,
            None => {
                self.events.insert(event.to_string(), events);
            }
        }
        for key in keys {
            *self.keys.entry(key).or_default() += 1;
        }
    }

    fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    fn len(&self) -> usize {
        self.keys.len() + self.events.len()
    }

    fn take(&mut self) -> CountBatch {
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
        let by_ip = Aggregator::Fields {
            fields: vec!["ip".into()],
        };
        Key::of(
            &by_ip,
            serde_json::json!({ "ip": value }).as_object().unwrap(),
            1024,
        )
    }

    #[test]
    fn a_batch_sums_per_event_and_per_key() {
        let (w1, w2) = (Uuid::new_v4(), Uuid::new_v4());
        let mut batch = Batch::default();
        batch.add("logins", 1, vec![(w1, ip("a")), (w2, Key::default())]);
        batch.add("logins", 2, vec![(w1, ip("a")), (w1, ip("b"))]);
        let mut taken = batch.take();
        taken.keys.sort();
        let mut expected = vec![(w1, ip("a"), 2), (w1, ip("b"), 1), (w2, Key::default(), 1)];
        expected.sort();
        assert_eq!(taken.events, vec![("logins".to_string(), 3)]);
        assert_eq!(taken.keys, expected);
        assert!(batch.is_empty());
    }
}
