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
    /// hash, never more than the rule keeps (`see_all`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub distinct: Vec<(u64, Second)>,
}

/// The values (sorted by hash) and a call's `fresh` hashes (sorted, once each) as one
/// list sorted by hash: (hash, last seen, seen in this call).
fn merge_seen(values: &[(u64, Second)], fresh: &[u64], now: Second) -> Vec<(u64, Second, bool)> {
    let mut merged = Vec::with_capacity(values.len() + fresh.len());
    let (mut old, mut new) = (values.iter().peekable(), fresh.iter().peekable());
    loop {
        let next = match (old.peek(), new.peek()) {
            (Some(&&(hash, seen)), Some(&&other)) if hash == other => {
                new.next();
                old.next();
                (hash, seen.max(now), true)
            }
            (Some(&&(hash, seen)), Some(&&other)) if hash < other => {
                old.next();
                (hash, seen, false)
            }
            (_, Some(&&hash)) => {
                new.next();
                (hash, now, true)
            }
            (Some(&&(hash, seen)), None) => {
                old.next();
                (hash, seen, false)
            }
            (None, None) => return merged,
        };
        merged.push(next);
    }
}

fn is_zero(second: &Second) -> bool {
    *second == 0
}

impl RuleState {
    /// Drops the values last seen `window` seconds before `now` or earlier; those seen
    /// later than `now` (the wall clock stepped back) are seen `now`, as a counter's
    /// buckets are (`Buckets::keep_within`), so that they leave the window `window`
    /// seconds after the step.
    pub fn expire(&mut self, window: u64, now: Second) {
        self.distinct.retain_mut(|(_, seen)| {
            *seen = (*seen).min(now);
            seen.saturating_add(window) > now
        });
    }

    /// `hashes` (one call's: any order, repeats allowed) seen at `now`. Past `keep`
    /// values, the values not seen in this call go first, then this call's, each the least
    /// recently seen first, of equals the lowest hash: memory per key is bounded by the
    /// rule's limit, not by the traffic. The call's hashes are sorted, merged into the
    /// values (sorted by hash) and trimmed once: O(m log m + n) for m hashes and n values,
    /// where seeing them one by one cost O(n) each once the key was full.
    pub fn see_all(&mut self, hashes: &[u64], now: Second, keep: usize) {
        if self.distinct.len() <= keep.max(1) && self.refresh_known(hashes, now) {
            return;
        }
        let mut fresh = hashes.to_vec();
        fresh.sort_unstable();
        fresh.dedup();
        let mut merged = merge_seen(&self.distinct, &fresh, now);
        let over = merged.len().saturating_sub(keep.max(1));
        if over > 0 {
            let rank = |&(hash, seen, fresh): &(u64, Second, bool)| (fresh, seen, hash);
            let mut ranks: Vec<(bool, Second, u64)> = merged.iter().map(rank).collect();
            let (_, &mut last_dropped, _) = ranks.select_nth_unstable(over - 1);
            merged.retain(|value| rank(value) > last_dropped);
        }
        self.distinct = merged
            .into_iter()
            .map(|(hash, seen, _)| (hash, seen))
            .collect();
    }

    /// `hashes` seen again at `now`, if every one is known already: what the merge would
    /// make of them, in place. The steady state (the same users again) then costs a
    /// binary search a hash and no allocation: the merge's three vectors a call made the
    /// master's cost of a cardinality event half as much again (bench/rules). `false` at
    /// the first new hash, the ones before it refreshed as the merge will leave them.
    fn refresh_known(&mut self, hashes: &[u64], now: Second) -> bool {
        hashes.iter().all(|hash| {
            match self
                .distinct
                .binary_search_by_key(hash, |&(value, _)| value)
            {
                Ok(at) => {
                    let seen = &mut self.distinct[at].1;
                    *seen = (*seen).max(now);
                    true
                }
                Err(_) => false,
            }
        })
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
        state.see_all(&[42], 1010, 3);
        let saved = serde_json::to_string(&counter).unwrap();
        assert_eq!(serde_json::from_str::<KeyCounter>(&saved).unwrap(), counter);
        let before_rules: KeyCounter = serde_json::from_str(r#"{"buckets": [[1, 2]]}"#).unwrap();
        assert_eq!(before_rules.rule, None);
    }

    #[test]
    fn a_key_keeps_at_most_its_limit_of_values_the_newest() {
        let mut state = RuleState::default();
        for n in 0..1_000_000u64 {
            state.see_all(&[n.wrapping_mul(0x9E37_79B9_7F4A_7C15)], n, 21);
        }
        assert_eq!(state.distinct.len(), 21);
        assert!(
            state
                .distinct
                .iter()
                .all(|&(_, seen)| seen >= 1_000_000 - 21)
        );
        state.see_all(&[state.distinct[3].0], 2_000_000, 21);
        assert_eq!(state.distinct.len(), 21, "a value seen again is not new");
        state.expire(10, 1_000_010);
        assert_eq!(
            state.distinct.len(),
            1,
            "only the value seen again is in the window"
        );
    }

    /// What `see_all` did one hash at a time before: the reference it must agree with.
    fn see_one_by_one(state: &mut RuleState, hash: u64, now: Second, keep: usize) {
        let distinct = &mut state.distinct;
        match distinct.binary_search_by_key(&hash, |&(h, _)| h) {
            Ok(at) => distinct[at].1 = distinct[at].1.max(now),
            Err(at) => {
                distinct.insert(at, (hash, now));
                if distinct.len() > keep.max(1) {
                    let oldest = (0..distinct.len())
                        .filter(|&i| distinct[i].0 != hash)
                        .min_by_key(|&i| distinct[i].1);
                    if let Some(oldest) = oldest {
                        distinct.remove(oldest);
                    }
                }
            }
        }
    }

    /// A small deterministic stream of hashes (few distinct, so that values repeat).
    fn hashes(seed: u64, n: usize, spread: u64) -> Vec<u64> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                (x >> 33) % spread
            })
            .collect()
    }

    /// One hash a call, as before, exactly; many a call, the same number of values with
    /// the same last-seen seconds (what the rule decides by), and, when the call's values
    /// fit and no other was seen in its second, the same values (else which of the
    /// second's values stay depended on their order). Keys full, values repeating.
    #[test]
    fn seeing_a_call_s_hashes_at_once_decides_as_seeing_them_one_by_one() {
        for keep in [1, 3, 21, 200] {
            let (mut at_once, mut one_by_one) = (RuleState::default(), RuleState::default());
            let (mut single, mut reference) = (RuleState::default(), RuleState::default());
            for call in 0..300u64 {
                let now = 1000 + call / 3;
                let batch = hashes(call * 7 + keep as u64, (call % 40) as usize, 500);
                at_once.see_all(&batch, now, keep);
                for &hash in &batch {
                    see_one_by_one(&mut one_by_one, hash, now, keep);
                    single.see_all(&[hash], now, keep);
                    see_one_by_one(&mut reference, hash, now, keep);
                }
                assert_eq!(single, reference, "one a call, keep {keep}");
                assert_eq!(at_once.distinct.len(), one_by_one.distinct.len());
                let fits = batch.len() <= keep && call % 3 == 0;
                assert_eq!(at_once.seen_newest_first(), one_by_one.seen_newest_first());
                if fits {
                    assert_eq!(at_once, one_by_one, "keep {keep}, call {call}");
                }
                at_once = one_by_one.clone();
            }
        }
    }
}
