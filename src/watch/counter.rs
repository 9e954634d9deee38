//! One watcher's counter of one key (a block of its column, `column.rs`): its events in
//! buckets of a second, its cooldown, and what the other rules remember of it
//! (`rule_state.rs`). Saved without the fields at their defaults, buckets as the list of
//! `[second, count]` that `counters.json` always had.

use std::collections::VecDeque;
use std::fmt;
use std::num::NonZeroU64;

use serde::de::{SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::rule_state::RuleState;

/// Counters are saved and restored across restarts: their seconds are the wall clock's.
pub use crate::clock::Second;

/// One key's count and cooldown. Saved without the fields at their defaults: a million
/// keys are a million of these in `counters.json`.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyCounter {
    /// (second, events in it), oldest first; one entry when there is no window.
    #[serde(default)]
    pub buckets: Buckets,
    /// The second of its last firing (never 0: seconds since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_fired: Option<NonZeroU64>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cooldown_secs: u32,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub crossed_while_cooling: bool,
    /// flatline: it fired for a silence it has not recovered from.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub silent: bool,
    /// What the other rules remember of the key (`rule_state.rs`); none for threshold
    /// and flatline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<Box<RuleState>>,
}

fn is_zero(secs: &u32) -> bool {
    *secs == 0
}

/// A key's buckets: inline while there is at most one.
#[derive(Debug, Default, Clone, PartialEq)]
pub enum Buckets {
    #[default]
    Empty,
    One(Second, u64),
    // Boxed on purpose: the enum stays 24 bytes, not 40, in every key's counter.
    #[allow(clippy::box_collection)]
    Many(Box<VecDeque<(Second, u64)>>),
}

impl Buckets {
    /// The buckets within `window` seconds of `now`: the older ones dropped, those of
    /// later seconds (the clock stepped back) restamped `now`.
    pub fn keep_within(&mut self, window: u64, now: Second) {
        self.restamp_later_than(now);
        self.drop_front_while(|second| second.saturating_add(window) <= now);
    }

    /// Drops the buckets `expired` says are past, oldest first.
    fn drop_front_while(&mut self, expired: impl Fn(Second) -> bool) {
        match self {
            Buckets::Empty => {}
            Buckets::One(second, _) => {
                if expired(*second) {
                    *self = Buckets::Empty;
                }
            }
            Buckets::Many(buckets) => {
                while buckets.front().is_some_and(|&(second, _)| expired(second)) {
                    buckets.pop_front();
                }
            }
        }
    }

    /// After the wall clock stepped back: the buckets stamped later than `now`, merged
    /// into one of `now`, so that their events leave the window `window` seconds from
    /// now, not from a second the clock may not reach again for hours (a threshold
    /// watcher counted every event of those hours as within its window).
    fn restamp_later_than(&mut self, now: Second) {
        match self {
            Buckets::Empty => {}
            Buckets::One(second, _) => *second = (*second).min(now),
            Buckets::Many(buckets) => {
                let mut later = 0;
                while let Some(&(second, n)) = buckets.back() {
                    if second <= now {
                        break;
                    }
                    buckets.pop_back();
                    later += n;
                }
                if later > 0 {
                    self.add(now, later);
                }
            }
        }
    }

    /// Adds `n` to the newest bucket if it is at least `second`, else in a new one.
    pub fn add(&mut self, second: Second, n: u64) {
        match self {
            Buckets::Empty => *self = Buckets::One(second, n),
            Buckets::One(last, count) if *last >= second => *count += n,
            Buckets::One(last, count) => {
                *self = Buckets::Many(Box::new(VecDeque::from([(*last, *count), (second, n)])));
            }
            Buckets::Many(buckets) => match buckets.back_mut() {
                Some((last, count)) if *last >= second => *count += n,
                _ => buckets.push_back((second, n)),
            },
        }
    }

    /// (second, events) of each bucket, the newest first.
    pub fn newest_first(&self) -> impl Iterator<Item = (Second, u64)> + '_ {
        let (one, many) = match self {
            Buckets::Empty => (None, None),
            Buckets::One(second, count) => (Some((*second, *count)), None),
            Buckets::Many(buckets) => (None, Some(buckets.iter().rev().copied())),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }

    /// Adds `n` to the one bucket of a count without a window.
    pub fn add_to_first(&mut self, second: Second, n: u64) {
        match self {
            Buckets::Empty => *self = Buckets::One(second, n),
            Buckets::One(_, count) => *count += n,
            Buckets::Many(buckets) => match buckets.front_mut() {
                Some((_, count)) => *count += n,
                None => buckets.push_back((second, n)),
            },
        }
    }

    pub fn total(&self) -> u64 {
        match self {
            Buckets::Empty => 0,
            Buckets::One(_, count) => *count,
            Buckets::Many(buckets) => buckets.iter().map(|(_, count)| count).sum(),
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        match self {
            Buckets::Empty => 0,
            Buckets::One(..) => 1,
            Buckets::Many(buckets) => buckets.len(),
        }
    }
}

/// Saved as `counters.json` always had it: a list of `[second, count]`.
impl Serialize for Buckets {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Buckets::Empty => serializer.collect_seq(std::iter::empty::<(Second, u64)>()),
            Buckets::One(second, count) => serializer.collect_seq([(*second, *count)]),
            Buckets::Many(buckets) => serializer.collect_seq(buckets.iter()),
        }
    }
}

/// Read bucket by bucket, with no list in between: a restore reads a million of these.
impl<'de> Deserialize<'de> for Buckets {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BucketsVisitor;
        impl<'de> Visitor<'de> for BucketsVisitor {
            type Value = Buckets;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of [second, count]")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Buckets, A::Error> {
                let mut buckets = Buckets::Empty;
                while let Some((second, count)) = seq.next_element::<(Second, u64)>()? {
                    buckets.add(second, count);
                }
                Ok(buckets)
            }
        }
        deserializer.deserialize_seq(BucketsVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_stay_inline_until_a_second_one_and_save_as_a_list() {
        let mut buckets = Buckets::default();
        buckets.add(100, 2);
        buckets.add(100, 1);
        assert_eq!(buckets, Buckets::One(100, 3));
        buckets.add(101, 4);
        assert_eq!((buckets.len(), buckets.total()), (2, 7));
        assert_eq!(
            serde_json::to_string(&buckets).unwrap(),
            "[[100,3],[101,4]]"
        );
        buckets.drop_front_while(|second| second < 101);
        assert_eq!(buckets.total(), 4);
    }
}
