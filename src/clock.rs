//! The one clock by which the master and its children judge each other's times:
//! `CLOCK_MONOTONIC`, which on Linux is one clock for the whole system, so that a time a
//! worker stamps (a heartbeat's, a question's deadline) means the same in the master.
//! Neither wall-clock steps nor a stalled process move it.
//!
//! Beside it, the wall clock's second (`Second`), which saved state is stamped with: a
//! counter's buckets and a watcher's creation must mean the same after a restart, where
//! the monotonic clock starts again.
//!
//! Owns only reading those clocks; it never sleeps or waits.

use std::time::{Duration, SystemTime};

use nix::time::{ClockId, clock_gettime};
use serde::{Deserialize, Serialize};

/// Seconds since the Unix epoch.
pub type Second = u64;

/// Now, in `Second`s (0 for a clock set before the epoch).
pub fn epoch_second() -> Second {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A point on the system's monotonic clock, comparable across processes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Stamp(Duration);

impl Stamp {
    /// Now. `CLOCK_MONOTONIC` cannot fail on Linux; were it to, the zero stamp would make
    /// every deadline past and every heartbeat old: caution, not a panic.
    pub fn now() -> Stamp {
        clock_gettime(ClockId::CLOCK_MONOTONIC)
            .map_or(Stamp::default(), |t| Stamp(Duration::from(t)))
    }

    /// This stamp moved `by` later.
    pub fn after(self, by: Duration) -> Stamp {
        Stamp(self.0.saturating_add(by))
    }

    /// How long before `now` this stamp was (zero for a stamp in the future).
    pub fn age(self, now: Stamp) -> Duration {
        now.0.saturating_sub(self.0)
    }

    /// How long from `now` until this stamp (zero once it passed).
    pub fn remaining(self, now: Stamp) -> Duration {
        self.0.saturating_sub(now.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_order_and_measure_in_both_directions() {
        let earlier = Stamp::now();
        let later = earlier.after(Duration::from_millis(1500));
        assert!(earlier < later);
        assert_eq!(earlier.age(later), Duration::from_millis(1500));
        assert_eq!(later.age(earlier), Duration::ZERO);
        assert_eq!(later.remaining(earlier), Duration::from_millis(1500));
        assert_eq!(earlier.remaining(later), Duration::ZERO);
        assert!(Stamp::now() >= earlier);
    }
}
