//! What a key's rule remembers besides its buckets and cooldown (`KeyCounter::rule`):
//! whether an episode (a spike, too many or too few distinct values) is under way, so
//! that it fires once, and cardinality's distinct values. One type for every rule, boxed
//! in the key's counter and saved with it in `counters.json`: a key whose rule needs
//! none costs a pointer. Decides nothing: the rules (`rule/spike.rs`,
//! `rule/cardinality.rs`) do.

use serde::{Deserialize, Serialize};

use crate::clock::Second;

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleState {
    /// spike up, cardinality's `max_distinct`: it fired for an episode that still holds.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub high: bool,
    /// spike down, cardinality's `min_distinct`: likewise.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub low: bool,
    /// spike: the second the key was first counted; it may fire once two windows have
    /// passed since (its baseline, ElastAlert's), not on its first events.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub since: Second,
    /// cardinality: (the value's 64-bit hash, the second it was last seen), sorted by
    /// hash, never more than the rule keeps (`see`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub distinct: Vec<(u64, Second)>,
}

fn is_zero(second: &Second) -> bool {
    *second == 0
}

impl RuleState {
    /// Drops the values last seen `window` seconds before `now` or earlier.
    pub fn expire(&mut self, window: u64, now: Second) {
        self.distinct
            .retain(|&(_, seen)| seen.saturating_add(window) > now);
    }

    /// `hash` seen at `now`; a new value past `keep` values replaces the least recently
    /// seen, so that memory per key is bounded by the rule's limit, not by the traffic.
    pub fn see(&mut self, hash: u64, now: Second, keep: usize) {
        match self.distinct.binary_search_by_key(&hash, |&(h, _)| h) {
            Ok(at) => self.distinct[at].1 = self.distinct[at].1.max(now),
            Err(at) => {
                self.distinct.insert(at, (hash, now));
                if self.distinct.len() > keep.max(1) {
                    let oldest = (0..self.distinct.len())
                        .filter(|&i| self.distinct[i].0 != hash)
                        .min_by_key(|&i| self.distinct[i].1);
                    if let Some(oldest) = oldest {
                        self.distinct.remove(oldest);
                    }
                }
            }
        }
    }

    /// The last-seen seconds of the values, newest first.
    pub fn seen_newest_first(&self) -> Vec<Second> {
        let mut seen: Vec<Second> = self.distinct.iter().map(|&(_, at)| at).collect();
        seen.sort_unstable_by(|a, b| b.cmp(a));
        seen
    }
}

#[cfg(test)]
mod tests {
    use super::super::table::KeyCounter;
    use super::*;

    /// Saved in `counters.json` with its key, so that a stop/start or a crash keeps it;
    /// a counter of a file written before it loads without one.
    #[test]
    fn a_key_s_rule_state_is_saved_with_its_counter() {
        let mut counter = KeyCounter::default();
        let state = counter.rule.get_or_insert_default();
        state.high = true;
        state.since = 1000;
        state.see(42, 1010, 3);
        let saved = serde_json::to_string(&counter).unwrap();
        assert_eq!(serde_json::from_str::<KeyCounter>(&saved).unwrap(), counter);
        let before_rules: KeyCounter = serde_json::from_str(r#"{"buckets": [[1, 2]]}"#).unwrap();
        assert_eq!(before_rules.rule, None);
    }

    #[test]
    fn a_key_keeps_at_most_its_limit_of_values_the_newest() {
        let mut state = RuleState::default();
        for n in 0..1_000_000u64 {
            state.see(n.wrapping_mul(0x9E37_79B9_7F4A_7C15), n, 21);
        }
        assert_eq!(state.distinct.len(), 21);
        assert!(
            state
                .distinct
                .iter()
                .all(|&(_, seen)| seen >= 1_000_000 - 21)
        );
        state.see(state.distinct[3].0, 2_000_000, 21);
        assert_eq!(state.distinct.len(), 21, "a value seen again is not new");
        state.expire(10, 1_000_010);
        assert_eq!(
            state.distinct.len(),
            1,
            "only the value seen again is in the window"
        );
    }
}
