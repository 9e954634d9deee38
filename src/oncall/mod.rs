//! On call (alerts.md): silences and the alert list, as data with its rules: one silence
//! and what it matches (`silence`), the set of them (`silences`), the alert history
//! (`history`), their wall-clock times (`time`), and `eventsctl`'s on-call commands, an
//! HTTP client of the daemon (`ctl`). The master's component that uses them is
//! `master/oncall_state.rs::OnCall`; the questions workers ask about them travel as
//! `protocol::oncall`'s `Request` and `Reply`.
//!
//! Owns `silences.json` and `alerts.jsonl` in the state dir and the bounds of what they
//! hold. Never delivers, never counts, never waits, and imports no process role nor
//! their protocol.

pub mod ctl;
pub mod history;
pub mod silence;
pub mod silences;
pub mod time;

/// In the state dir.
pub const SILENCES_FILE: &str = "silences.json";
pub const HISTORY_FILE: &str = "alerts.jsonl";

/// Alerts listed when `?limit=` says nothing, and the most it may ask.
pub const DEFAULT_ALERTS: usize = 100;
pub const MAX_ALERTS: usize = 100_000;
