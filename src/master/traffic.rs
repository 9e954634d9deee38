//! The status page's traffic: events collected per second per event type, and requests
//! refused per second per status, over the last 5 minutes (ui.md), as rings of 300
//! one-second slots.
//!
//! Fed on the master's 1 s tick from the totals the workers' heartbeats already carry
//! (`metrics::Totals`): the difference since the previous tick goes into the newest
//! slot. It must never be touched per event or per request: the hot path pays nothing
//! for the page.

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use serde::Serialize;

/// One slot a second for 5 minutes.
pub const SLOTS: usize = 300;

/// A per-second series, oldest first, at most `SLOTS` long.
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Ring(VecDeque<u64>);

impl Ring {
    /// `gap` empty seconds (ticks the master missed), then `value`.
    fn push(&mut self, gap: usize, value: u64) {
        for _ in 0..gap.min(SLOTS) {
            self.0.push_back(0);
        }
        self.0.push_back(value);
        while self.0.len() > SLOTS {
            self.0.pop_front();
        }
    }

    fn is_idle(&self) -> bool {
        self.0.iter().all(|&n| n == 0)
    }
}

/// What `/status` shows of the traffic.
#[derive(Debug, Serialize)]
pub struct TrafficReport<'a> {
    /// Seconds a slot stands for.
    pub slot_secs: u64,
    /// Events collected, per event type, per second, oldest first.
    pub events: &'a BTreeMap<String, Ring>,
    /// Requests refused (status 400 and above), per status, per second, oldest first.
    pub rejected: &'a BTreeMap<u16, Ring>,
}

#[derive(Debug, Default)]
pub struct Traffic {
    events: BTreeMap<String, Ring>,
    rejected: BTreeMap<u16, Ring>,
    /// The totals seen at the previous tick.
    collected_before: BTreeMap<String, u64>,
    rejected_before: BTreeMap<u16, u64>,
    last_tick: Option<Instant>,
}

impl Traffic {
    /// One tick: what the totals grew by since the previous one becomes the newest
    /// second. Types no longer `registered` and statuses idle for 5 minutes are dropped,
    /// so the rings stay as many as the registry's types.
    pub fn tick(
        &mut self,
        now: Instant,
        collected: &BTreeMap<String, u64>,
        rejected: &BTreeMap<u16, u64>,
        registered: impl Fn(&str) -> bool,
    ) {
        let gap = self.last_tick.map_or(0, |last| {
            (now.saturating_duration_since(last).as_secs_f64().round() as usize).saturating_sub(1)
        });
        self.last_tick = Some(now);
        advance(&mut self.events, &mut self.collected_before, collected, gap);
        advance(&mut self.rejected, &mut self.rejected_before, rejected, gap);
        self.events.retain(|event, _| registered(event));
        self.rejected.retain(|_, ring| !ring.is_idle());
    }

    pub fn report(&self) -> TrafficReport<'_> {
        TrafficReport {
            slot_secs: 1,
            events: &self.events,
            rejected: &self.rejected,
        }
    }
}

/// Pushes each series' growth since `before` (every ring moves, so they stay aligned),
/// and remembers `totals` for the next tick.
fn advance<K: Ord + Clone>(
    rings: &mut BTreeMap<K, Ring>,
    before: &mut BTreeMap<K, u64>,
    totals: &BTreeMap<K, u64>,
    gap: usize,
) {
    for key in totals.keys() {
        rings.entry(key.clone()).or_default();
    }
    for (key, ring) in rings.iter_mut() {
        let total = totals.get(key).copied().unwrap_or(0);
        let previous = before.get(key).copied().unwrap_or(0);
        ring.push(gap, total.saturating_sub(previous));
    }
    before.clone_from(totals);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn totals(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn each_tick_holds_what_the_totals_grew_by() {
        let (mut traffic, start) = (Traffic::default(), Instant::now());
        let none = BTreeMap::new();
        traffic.tick(start, &totals(&[("login", 5)]), &none, |_| true);
        let later = start + Duration::from_secs(1);
        traffic.tick(later, &totals(&[("login", 12)]), &none, |_| true);
        assert_eq!(traffic.events["login"].0, [5, 7]);
    }

    #[test]
    fn missed_ticks_are_empty_seconds_and_the_ring_keeps_five_minutes() {
        let (mut traffic, start) = (Traffic::default(), Instant::now());
        let none = BTreeMap::new();
        traffic.tick(start, &totals(&[("a", 1)]), &none, |_| true);
        traffic.tick(
            start + Duration::from_secs(3),
            &totals(&[("a", 2)]),
            &none,
            |_| true,
        );
        assert_eq!(traffic.events["a"].0, [1, 0, 0, 1]);
        for second in 4..400 {
            let at = start + Duration::from_secs(second);
            traffic.tick(at, &totals(&[("a", second)]), &none, |_| true);
        }
        assert_eq!(traffic.events["a"].0.len(), SLOTS);
    }

    #[test]
    fn deleted_types_and_idle_statuses_are_dropped() {
        let (mut traffic, start) = (Traffic::default(), Instant::now());
        let refused: BTreeMap<u16, u64> = [(404, 1)].into();
        traffic.tick(start, &totals(&[("gone", 1)]), &refused, |t| t != "gone");
        assert!(traffic.events.is_empty());
        assert!(traffic.rejected.contains_key(&404));
        for second in 1..=SLOTS as u64 {
            let at = start + Duration::from_secs(second);
            traffic.tick(at, &BTreeMap::new(), &refused, |_| true);
        }
        assert!(traffic.rejected.is_empty());
    }
}
