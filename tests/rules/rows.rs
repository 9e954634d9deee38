//! The rows of the scenario table (tests/rules.rs), one function per rule: events at
//! given seconds and the firings both engines must make of them.

use super::{Scenario, every, fired, resolved, seen, spiked};

pub(crate) fn threshold() -> Vec<Scenario> {
    vec![
        Scenario::on_counts(
            "threshold: exceeded once, then the count starts again from zero",
            r#"{"threshold": 3}"#,
            every(1, 1000, 1000, "k", 1).repeat(8),
            vec![fired(1000, "k", 4), fired(1000, "k", 4)],
        ),
        Scenario::on_counts(
            "threshold: reached exactly, it does not fire",
            r#"{"threshold": 3}"#,
            vec![(1000, "k", 1), (1001, "k", 2)],
            vec![],
        ),
        Scenario::on_counts(
            "threshold: one batch of many events fires once with their count",
            r#"{"threshold": 3}"#,
            vec![(1000, "k", 50)],
            vec![fired(1000, "k", 50)],
        ),
        Scenario::on_counts(
            "threshold: an event window_secs old has left the window",
            r#"{"threshold": 2, "window_secs": 10}"#,
            vec![(100, "k", 1), (105, "k", 1), (110, "k", 1), (111, "k", 1)],
            vec![fired(111, "k", 3)],
        ),
        Scenario::on_counts(
            "threshold: an event one second younger than the window still counts",
            r#"{"threshold": 2, "window_secs": 10}"#,
            vec![(100, "k", 2), (109, "k", 1)],
            vec![fired(109, "k", 3)],
        ),
        Scenario::on_counts(
            "threshold: after the clock stepped back, the later seconds' events leave the \
             window window_secs after the step, not when the clock reaches them again",
            r#"{"threshold": 4, "window_secs": 10}"#,
            vec![(1000, "k", 3), (900, "k", 1), (911, "k", 1), (912, "k", 1)],
            vec![],
        ),
        Scenario::on_counts(
            "threshold: without a window the count runs until it fires",
            r#"{"threshold": 2}"#,
            vec![
                (0, "k", 1),
                (5000, "k", 1),
                (10_000, "k", 1),
                (10_001, "k", 1),
            ],
            vec![fired(10_000, "k", 3)],
        ),
        Scenario::on_counts(
            "threshold: keys count apart",
            r#"{"threshold": 1}"#,
            vec![(1, "a", 1), (1, "b", 1), (2, "a", 1), (3, "c", 5)],
            vec![fired(2, "a", 2), fired(3, "c", 5)],
        ),
        Scenario::on_counts(
            "cooldown: no firing while cooling, the events still count",
            r#"{"threshold": 1, "cooldown_secs": 60}"#,
            vec![
                (1000, "k", 2),
                (1010, "k", 2),
                (1059, "k", 1),
                (1060, "k", 1),
            ],
            vec![fired(1000, "k", 2), fired(1060, "k", 4)],
        ),
        Scenario::on_counts(
            "cooldown: exponential realert doubles a busy cooldown up to its maximum, \
             and a quiet one resets it",
            r#"{"threshold": 1, "cooldown_secs": 10, "cooldown_max_secs": 40}"#,
            // Crossings every 5 s until 1100, one at 1250, then every 5 s from 1300.
            [
                every(5, 1000, 1095, "k", 2),
                every(5, 1250, 1250, "k", 2),
                every(5, 1300, 1315, "k", 2),
            ]
            .concat(),
            // Busy cooldowns: 10, 20, 40, 40 (the cap); the one from 1070 saw crossings,
            // so 1250's is 40 again; it stays quiet, so 1300's is back to 10.
            vec![
                fired(1000, "k", 2),
                fired(1010, "k", 4),
                fired(1030, "k", 8),
                fired(1070, "k", 16),
                fired(1250, "k", 12),
                fired(1300, "k", 2),
                fired(1310, "k", 4),
            ],
        ),
    ]
}

const HEARTBEAT: &str = r#"{"rule": "flatline", "threshold": 1, "window_secs": 10}"#;

pub(crate) fn flatline() -> Vec<Scenario> {
    vec![
        Scenario::on_the_clock(
            "flatline: a key heard from within every window never fires",
            HEARTBEAT,
            (vec![""], 1000, 1030),
            [1000, 1005, 1012, 1019, 1025].map(|s| (s, "", 1)).to_vec(),
            vec![],
        ),
        Scenario::on_the_clock(
            "flatline: a key fires a window after its last event, once per silence",
            HEARTBEAT,
            (vec![""], 990, 1040),
            vec![(995, "", 1), (1000, "", 1)],
            vec![fired(1010, "", 0)],
        ),
        Scenario::on_the_clock(
            "flatline: after a start, no key fires before one full window",
            HEARTBEAT,
            (vec![""], 1000, 1015),
            vec![],
            vec![fired(1010, "", 0)],
        ),
        Scenario::on_the_clock(
            "flatline: after a downtime (in a cluster: every node down, or none reaching \
             Redis), no key fires before one full window: the events of that time were \
             never counted",
            HEARTBEAT,
            (vec![""], 1000, 1040),
            [1000, 1005, 1010, 1015].map(|s| (s, "", 1)).to_vec(),
            vec![fired(1030, "", 0)],
        )
        .down_between((1016, 1020)),
        Scenario::on_the_clock(
            "flatline: a key first heard during the grace, below its threshold, waits \
             for the grace's end",
            r#"{"rule": "flatline", "threshold": 3, "window_secs": 10}"#,
            (vec![], 1000, 1015),
            vec![(1002, "a", 1)],
            vec![fired(1010, "a", 1)],
        ),
        Scenario::on_the_clock(
            "flatline: the count over the window is what falls below the threshold",
            r#"{"rule": "flatline", "threshold": 3, "window_secs": 10}"#,
            (vec![""], 1000, 1015),
            vec![(1000, "", 1), (1001, "", 1), (1002, "", 1)],
            vec![fired(1010, "", 2)],
        ),
        Scenario::on_the_clock(
            "flatline: a recovery fires with send_resolved, the next silence fires again",
            r#"{"rule": "flatline", "threshold": 1, "window_secs": 10, "send_resolved": true}"#,
            (vec![""], 1000, 1040),
            vec![(1000, "", 1), (1015, "", 1)],
            vec![
                fired(1010, "", 0),
                resolved(1015, "", 1),
                fired(1025, "", 0),
            ],
        ),
        Scenario::on_the_clock(
            "flatline: a key not always watched that recovers fires again at its next \
             silence, not at its forget",
            HEARTBEAT,
            (vec![], 1000, 1040),
            vec![(1000, "b", 1), (1015, "b", 1)],
            vec![fired(1010, "b", 0), fired(1025, "b", 0)],
        ),
        Scenario::on_the_clock(
            "flatline: a key that recovers and is silent again within a cooldown longer \
             than its forget fires when the cooldown ends",
            r#"{"rule": "flatline", "threshold": 1, "window_secs": 10,
                "forget_after_secs": 20, "cooldown_secs": 100}"#,
            (vec![], 1000, 1115),
            vec![(1000, "b", 1), (1012, "b", 1)],
            vec![fired(1010, "b", 0), fired(1110, "b", 0)],
        ),
        Scenario::on_the_clock(
            "flatline: an expected key that never sent fires, so does a key seen then silent",
            HEARTBEAT,
            (vec!["c"], 1000, 1030),
            [every(5, 1000, 1030, "a", 1), vec![(1000, "b", 1)]].concat(),
            vec![fired(1010, "b", 0), fired(1010, "c", 0)],
        ),
        Scenario::on_the_clock(
            "flatline: a key silent forget_after_secs after it fired is dropped, an \
             expected one is kept",
            r#"{"rule": "flatline", "threshold": 1, "window_secs": 10,
                "forget_after_secs": 20, "send_resolved": true}"#,
            (vec!["c"], 1000, 1050),
            vec![(1000, "b", 1), (1035, "b", 1), (1035, "c", 1)],
            vec![
                fired(1010, "b", 0),
                fired(1010, "c", 0),
                resolved(1035, "c", 1),
                fired(1045, "b", 0),
                fired(1045, "c", 0),
            ],
        ),
        Scenario::on_the_clock(
            "flatline: with a cooldown, a key still silent fires again once it is over",
            r#"{"rule": "flatline", "threshold": 1, "window_secs": 10, "cooldown_secs": 15}"#,
            (vec![""], 1000, 1045),
            vec![],
            vec![fired(1010, "", 0), fired(1025, "", 0), fired(1040, "", 0)],
        ),
        Scenario::on_the_clock(
            "flatline: silent again within its cooldown, a key waits for its end",
            r#"{"rule": "flatline", "threshold": 1, "window_secs": 10, "cooldown_secs": 30}"#,
            (vec![""], 1000, 1045),
            vec![(1012, "", 1)],
            vec![fired(1010, "", 0), fired(1040, "", 0)],
        ),
    ]
}

const SPIKE_UP: &str = r#"{"rule": "spike", "window_secs": 10, "ratio": 3, "direction": "up"}"#;
const SPIKE_DOWN: &str = r#"{"rule": "spike", "window_secs": 10, "ratio": 3, "direction": "down"}"#;

pub(crate) fn spike() -> Vec<Scenario> {
    vec![
        Scenario::on_counts(
            "spike: a window three times the one before fires once, with both counts, \
             never before the key's baseline of two windows",
            SPIKE_UP,
            [every(1, 1000, 1029, "k", 1), every(1, 1030, 1039, "k", 4)].concat(),
            vec![spiked(1036, "k", 31, 10)],
        ),
        Scenario::on_counts(
            "spike: a steady rate never fires, nor does a rise short of the ratio",
            SPIKE_UP,
            [every(1, 1000, 1029, "k", 2), every(1, 1030, 1039, "k", 5)].concat(),
            vec![],
        ),
        Scenario::on_counts(
            "spike: the previous window must hold min_previous events",
            r#"{"rule": "spike", "window_secs": 10, "ratio": 3, "direction": "up",
                "min_previous": 5}"#,
            vec![
                (1000, "k", 1),
                (1015, "k", 4),
                (1025, "k", 50),
                (1040, "k", 5),
                (1050, "k", 16),
            ],
            vec![spiked(1050, "k", 16, 5)],
        ),
        Scenario::on_counts(
            "spike: an event window_secs old is in the previous window, not the current",
            SPIKE_UP,
            vec![(1000, "k", 1), (1020, "k", 2), (1030, "k", 6)],
            vec![spiked(1030, "k", 6, 2)],
        ),
        Scenario::on_counts(
            "spike: once per spike; again after the condition stopped holding",
            SPIKE_UP,
            vec![
                (1000, "k", 1),
                (1020, "k", 2),
                (1030, "k", 6),
                (1031, "k", 1),
                (1045, "k", 3),
                (1055, "k", 9),
            ],
            vec![spiked(1030, "k", 6, 2), spiked(1055, "k", 9, 3)],
        ),
        Scenario::on_counts(
            "spike: with a cooldown, a spike that holds fires again once it is over",
            r#"{"rule": "spike", "window_secs": 10, "ratio": 3, "direction": "up",
                "cooldown_secs": 5}"#,
            vec![
                (1000, "k", 1),
                (1020, "k", 2),
                (1030, "k", 6),
                (1032, "k", 1),
                (1035, "k", 1),
            ],
            vec![spiked(1030, "k", 6, 2), spiked(1035, "k", 8, 2)],
        ),
        Scenario::on_the_clock(
            "spike: a drop is decided on the clock, once, when a window moves",
            SPIKE_DOWN,
            (vec![], 1000, 1060),
            [every(1, 1000, 1029, "k", 3), every(1, 1030, 1039, "k", 1)].concat(),
            vec![spiked(1039, "k", 10, 30)],
        ),
        Scenario::on_the_clock(
            "spike: events that stop drop on their way to none; none is min_current's",
            SPIKE_DOWN,
            (vec![], 1000, 1060),
            every(1, 1000, 1029, "k", 3),
            vec![spiked(1036, "k", 9, 30)],
        ),
        Scenario::on_the_clock(
            "spike: a drop that emptied its window and then trickles is the same drop",
            SPIKE_DOWN,
            (vec![], 1000, 1070),
            [every(1, 1000, 1029, "k", 3), vec![(1045, "k", 1)]].concat(),
            vec![spiked(1036, "k", 9, 30)],
        ),
        Scenario::on_the_clock(
            "spike: a window of exactly min_current events may be a drop",
            r#"{"rule": "spike", "window_secs": 10, "ratio": 3, "direction": "down",
                "min_current": 10}"#,
            (vec![], 1000, 1060),
            [every(1, 1000, 1029, "k", 3), every(1, 1030, 1039, "k", 1)].concat(),
            vec![spiked(1039, "k", 10, 30)],
        ),
        Scenario::on_the_clock(
            "spike: with a cooldown, a drop that holds fires again as its cooldown ends, \
             though no window moves then",
            r#"{"rule": "spike", "window_secs": 10, "ratio": 2, "direction": "down",
                "cooldown_secs": 5}"#,
            (vec![], 1000, 1045),
            vec![
                (1000, "k", 20),
                (1010, "k", 25),
                (1011, "k", 5),
                (1020, "k", 4),
            ],
            vec![spiked(1020, "k", 9, 25), spiked(1025, "k", 4, 30)],
        ),
    ]
}

const CARDINALITY: &str =
    r#"{"rule": "cardinality", "field": "user", "window_secs": 10, "max_distinct": 3}"#;

pub(crate) fn cardinality() -> Vec<Scenario> {
    vec![
        Scenario::on_counts(
            "cardinality: after the clock stepped back, the values of later seconds leave \
             the window window_secs after the step",
            r#"{"rule": "cardinality", "field": "user", "max_distinct": 2, "window_secs": 10}"#,
            vec![],
            vec![],
        )
        .with_values(
            [
                seen(1000, "k", &["u1", "u2"]),
                seen(900, "k", &["u1"]),
                seen(911, "k", &["u3"]),
            ]
            .concat(),
        ),
        Scenario::on_counts(
            "cardinality: more than max_distinct values fire once, with their number",
            CARDINALITY,
            vec![],
            vec![fired(1002, "k", 4)],
        )
        .with_values(
            [
                seen(1000, "k", &["u1", "u2", "u3"]),
                seen(1001, "k", &["u1"]),
                seen(1002, "k", &["u4", "u5"]),
            ]
            .concat(),
        ),
        Scenario::on_counts(
            "cardinality: max_distinct values, seen again and again, do not fire; keys \
             count apart",
            CARDINALITY,
            vec![],
            vec![],
        )
        .with_values(
            [
                seen(1000, "a", &["u1", "u2", "u3"]),
                seen(1005, "a", &["u3", "u2", "u1"]),
                seen(1006, "b", &["u4"]),
            ]
            .concat(),
        ),
        Scenario::on_counts(
            "cardinality: a value window_secs old has left the window, one a second \
             younger has not",
            CARDINALITY,
            vec![],
            vec![fired(1019, "k", 4)],
        )
        .with_values(
            [
                seen(1000, "k", &["u1", "u2", "u3"]),
                seen(1010, "k", &["u4"]),
                seen(1019, "k", &["u5", "u6", "u7"]),
            ]
            .concat(),
        ),
        Scenario::on_counts(
            "cardinality: once per episode; again after it ended",
            CARDINALITY,
            vec![],
            vec![fired(1000, "k", 4), fired(1020, "k", 4)],
        )
        .with_values(
            [
                seen(1000, "k", &["u1", "u2", "u3", "u4", "u5"]),
                seen(1020, "k", &["u5", "u6", "u7", "u8"]),
            ]
            .concat(),
        ),
        Scenario::on_the_clock(
            "cardinality: fewer than min_distinct values is decided on the clock, once \
             per episode, after the grace",
            r#"{"rule": "cardinality", "field": "user", "window_secs": 10, "min_distinct": 2}"#,
            (vec![], 1000, 1040),
            vec![],
            vec![fired(1010, "a", 1), fired(1015, "a", 1)],
        )
        .with_values(
            [
                seen(1000, "a", &["u1", "u2"]),
                seen(1005, "a", &["u1"]),
                seen(1012, "a", &["u3"]),
            ]
            .concat(),
        ),
        Scenario::on_the_clock(
            "cardinality: a single min_distinct watcher that never gets a value fires once \
             after its grace, with 0 values",
            r#"{"rule": "cardinality", "field": "user", "window_secs": 3, "min_distinct": 2}"#,
            (vec![""], 1000, 1012),
            vec![],
            vec![fired(1003, "", 0)],
        ),
        Scenario::on_the_clock(
            "cardinality: a single min_distinct watcher without values, with a cooldown, \
             fires again each cooldown",
            r#"{"rule": "cardinality", "field": "user", "window_secs": 3, "min_distinct": 2,
                "cooldown_secs": 4}"#,
            (vec![""], 1000, 1012),
            vec![],
            vec![fired(1003, "", 0), fired(1007, "", 0), fired(1011, "", 0)],
        ),
        Scenario::on_the_clock(
            "cardinality: a single min_distinct watcher without values fires once, and not \
             again after restarts",
            r#"{"rule": "cardinality", "field": "user", "window_secs": 3, "min_distinct": 2}"#,
            (vec![""], 1000, 1020),
            vec![],
            vec![fired(1003, "", 0)],
        )
        .restarted_at(vec![1008, 1014]),
    ]
}

const FR: &str = r#"["FR"]"#;
const NZ: &str = r#"["NZ"]"#;

pub(crate) fn new_value() -> Vec<Scenario> {
    vec![
        Scenario::on_counts(
            "new_value: values seen while learning are known; a new one fires once; one \
             not seen for remember_secs is new again; a missing one never fires",
            r#"{"rule": "new_value", "field": "country", "learn_secs": 10, "remember_secs": 100}"#,
            vec![
                (1000, FR, 1),
                (1009, FR, 1),
                (1010, NZ, 1),
                (1011, FR, 1),
                (1012, NZ, 2),
                (1200, FR, 1),
                (1201, "[null]", 1),
            ],
            vec![fired(1010, NZ, 1), fired(1200, FR, 1)],
        )
        .created_at(1000),
        Scenario::on_counts(
            "new_value: without learn_secs, the first value fires",
            r#"{"rule": "new_value", "field": "country"}"#,
            vec![(1000, FR, 3), (1001, FR, 1), (1001, NZ, 1)],
            vec![fired(1000, FR, 3), fired(1001, NZ, 1)],
        )
        .created_at(1000),
        Scenario::on_counts(
            "new_value: a value last seen remember_secs ago is new again; one seen a \
             second later is still known",
            r#"{"rule": "new_value", "field": "country", "remember_secs": 100}"#,
            vec![(1000, FR, 1), (1100, FR, 1), (1199, FR, 1)],
            vec![fired(1000, FR, 1), fired(1100, FR, 1)],
        )
        .created_at(1000),
    ]
}
