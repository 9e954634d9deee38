//! How a cluster link groups counts into `eventsd_count` calls: by Redis Cluster slot
//! (a call's keys must share one), and in runs of a bounded number of values' hashes (a
//! call's time in Redis). Pure functions: never talks to Redis (`redis_link` does).

use crate::watch::SharedCount;

/// cardinality's values' hashes per `eventsd_count` call, at most (but a key's, which
/// its rule bounds: `SharedCount::add`): each is judged in the call, so they bound its
/// time as `redis_link::KEYS_PER_CALL` does the keys'.
const HASHES_PER_CALL: usize = 16 * 1024;

/// The Redis Cluster slot of `key` (CRC16-XMODEM of its hash tag, modulo 16384), so that
/// one call carries only keys of one slot.
pub(super) fn slot(key: &[u8]) -> u16 {
    let tagged = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(key);
    let mut crc: u16 = 0;
    for &byte in tagged {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

/// `counts` in runs of at most `HASHES_PER_CALL` values' hashes (at least one count each),
/// in their order.
pub(super) fn by_hashes(counts: Vec<SharedCount>) -> Vec<Vec<SharedCount>> {
    let mut runs = Vec::new();
    let (mut run, mut hashes) = (Vec::new(), 0);
    for count in counts {
        let more = count.values.len();
        if !run.is_empty() && more > 0 && hashes + more > HASHES_PER_CALL {
            runs.push(std::mem::take(&mut run));
            hashes = 0;
        }
        hashes += more;
        run.push(count);
    }
    if !run.is_empty() {
        runs.push(run);
    }
    runs
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;
    use crate::watch::Key;
    use crate::watch::rule::RuleParams;

    /// A call carries at most `HASHES_PER_CALL` hashes, or one key's; counts in order.
    #[test]
    fn calls_are_cut_by_the_hashes_they_carry() {
        let rule: RuleParams = serde_json::from_str(
            r#"{"rule": {"threshold": {"threshold": 1, "window_secs": null}},
                "cooldown_secs": null, "cooldown_max_secs": null}"#,
        )
        .unwrap();
        let count = |events: u64, hashes: usize| SharedCount {
            watcher: Uuid::nil(),
            key: Key::default(),
            events,
            rule,
            values: vec![0; hashes],
        };
        let sizes = [10_000, 10_000, 1, 0, 20_000, 0, 16_383, 1];
        let counts = (0..).zip(sizes).map(|(n, h)| count(n, h)).collect();
        let runs: Vec<Vec<u64>> = by_hashes(counts)
            .iter()
            .map(|run| run.iter().map(|c| c.events).collect())
            .collect();
        assert_eq!(runs, [vec![0], vec![1, 2, 3], vec![4, 5], vec![6, 7]]);
    }

    #[test]
    fn slots_are_redis_cluster_ones() {
        // From the Redis Cluster specification's examples and `CLUSTER KEYSLOT`.
        // CRC16-XMODEM("123456789") is 0x31C3, the specification's check value.
        assert_eq!(slot(b"123456789"), 0x31C3);
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"{user1000}.following"), slot(b"user1000"));
    }
}
