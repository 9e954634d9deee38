//! The master's on-call component (alerts.md): told of every firing, delivery attempt
//! and outcome, it says which firings a silence holds back, records what became of each
//! in the alert list, and answers `Request`s with the reply's status and JSON body.
//!
//! Owns the silences and the alert history (`src/oncall/`: `silences.json`,
//! `alerts.jsonl`, whose lines it writes once a tick, before an answer and at a stop:
//! one `write` for a burst of firings, in the master's loop). Never delivers, never
//! counts, never waits: the master asks, it answers at once; the journal and the runner
//! stay `Alerts`'.

use std::collections::BTreeMap;
use std::time::Duration;

use log::info;
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

use crate::action::target_of;
use crate::config::Config;
use crate::exposition::{label_value, write_family};
use crate::oncall::history::{self, Alert, AlertState, Filter, History};
use crate::oncall::silence::{Bounds, Facts, Silence};
use crate::oncall::silences::{self, Silences};
use crate::oncall::time::{self, Millis};
use crate::oncall::{HISTORY_FILE, SILENCES_FILE};
use crate::protocol::oncall::{Reply, Request};
use crate::protocol::runner::{Delivery, DropReason, Outcome};
use crate::registry::Refusal;
use crate::watch::{Firing, Job, WatcherState};

pub struct OnCall {
    silences: Silences,
    history: History,
    /// Silenced firings by (event type, watcher).
    silenced: BTreeMap<(String, String), u64>,
    /// When the last tick looked: a silence that started since must settle what waits.
    looked_at: Millis,
    /// Silences changed since the pending firings were last held against them.
    recheck_pending: bool,
    /// Silences made or expired here, to share with the other nodes (a cluster).
    outbox: Vec<Silence>,
}

impl OnCall {
    /// Loads the silences and the alert history of the state dir.
    pub fn open(config: &Config) -> anyhow::Result<OnCall> {
        let path = config.daemon.state_dir.join(HISTORY_FILE);
        let history = History::open(&path, config.alerts.history)?;
        OnCall::with_history(config, history)
    }

    /// For a master that upgrades the running one: the silences, and an alert history
    /// left to the old master until it takes over (then `open`).
    pub fn unopened(config: &Config) -> anyhow::Result<OnCall> {
        let path = config.daemon.state_dir.join(HISTORY_FILE);
        OnCall::with_history(config, History::unopened(&path, config.alerts.history))
    }

    fn with_history(config: &Config, history: History) -> anyhow::Result<OnCall> {
        let path = config.daemon.state_dir.join(SILENCES_FILE);
        let silences = Silences::load(&path, bounds(config), config.silences.max)?;
        Ok(OnCall {
            silences,
            history,
            silenced: BTreeMap::new(),
            looked_at: time::now(),
            recheck_pending: true,
            outbox: Vec::new(),
        })
    }

    /// A reload: new bounds apply from now on.
    pub fn reconfigure(&mut self, config: &Config) {
        self.silences
            .set_limits(bounds(config), config.silences.max);
        self.history.set_capacity(config.alerts.history);
    }

    /// A new firing: recorded, and the silence that holds it back, if one does (then it
    /// must not be delivered).
    pub fn fired(&mut self, job: &Job) -> Option<Uuid> {
        let firing = &job.firing;
        let silenced_by = self.silence_of(firing, time::now());
        let state = match silenced_by {
            Some(silence) => {
                *self
                    .silenced
                    .entry((firing.event.clone(), firing.watcher.clone()))
                    .or_default() += 1;
                AlertState::Silenced {
                    silenced_by: silence,
                }
            }
            None => AlertState::Pending {
                target: target_of(&job.action),
                attempts: 0,
                last_error: None,
                next_attempt_at: None,
            },
        };
        self.history
            .record(Alert::of(firing, firing.rule.name(), state));
        silenced_by
    }

    /// The pending firings among `pending` that an active silence now matches, once
    /// silences changed or started: recorded as silenced and counted. The master
    /// settles them in its journal and tells the runner to forget them.
    pub fn newly_silenced<'a>(&mut self, pending: impl Iterator<Item = &'a Job>) -> Vec<Uuid> {
        if !std::mem::take(&mut self.recheck_pending) {
            return Vec::new();
        }
        let now = time::now();
        if !self.silences.any_active(now) {
            return Vec::new();
        }
        let held: Vec<(Uuid, Uuid, String, String)> = pending
            .filter_map(|job| {
                let firing = &job.firing;
                let silence = self.silence_of(firing, now)?;
                Some((
                    firing.id,
                    silence,
                    firing.event.clone(),
                    firing.watcher.clone(),
                ))
            })
            .collect();
        for (id, silence, event, watcher) in &held {
            *self
                .silenced
                .entry((event.clone(), watcher.clone()))
                .or_default() += 1;
            self.history.update(&[*id], |_| AlertState::Silenced {
                silenced_by: *silence,
            });
        }
        held.into_iter().map(|(id, ..)| id).collect()
    }

    /// Firings the master gave up itself (a full queue, a watcher deleted, a journal
    /// entry refused).
    pub fn dropped(&mut self, ids: &[Uuid], reason: DropReason) {
        self.history.update(ids, |_| AlertState::Dropped {
            reason: reason.name().to_string(),
            error: None,
        });
    }

    /// An attempt failed and will be retried in `retry_in`.
    pub fn retrying(&mut self, ids: &[Uuid], error: &str, retry_in: Duration) {
        let next = time::format(time::now().saturating_add(retry_in.as_millis() as u64));
        let error = history::cut(error);
        self.history.update(ids, |state| match state {
            AlertState::Pending {
                target, attempts, ..
            } => AlertState::Pending {
                target: target.clone(),
                attempts: attempts + 1,
                last_error: Some(error.clone()),
                next_attempt_at: Some(next.clone()),
            },
            other => other.clone(),
        });
    }

    /// What the runner settled.
    pub fn settled(&mut self, outcome: &Outcome) {
        let now = time::format(time::now());
        self.history
            .update(&outcome.ids, |state| match outcome.result {
                Delivery::Delivered => AlertState::Delivered {
                    delivered_at: now.clone(),
                    attempts: previous_attempts(state) + 1,
                },
                Delivery::Failed => AlertState::Dropped {
                    reason: "permanent_failure".to_string(),
                    error: Some(history::cut(&outcome.detail)),
                },
                Delivery::Dropped(reason) => AlertState::Dropped {
                    reason: reason.name().to_string(),
                    error: Some(history::cut(&outcome.detail)),
                },
            });
    }

    /// Answers a worker's question about silences and alerts; `WatcherState` is the
    /// master's to answer (it holds the counters), so it is not asked here.
    pub fn answer(&mut self, request: Request) -> Reply {
        // What a client is shown of the alert list is on disk.
        self.flush();
        let now = time::now();
        match request {
            Request::CreateSilence { body, client } => match self.silences.create(&body, now) {
                Ok(silence) => {
                    info!(
                        "silence {} made by {} ({client}) until {}",
                        silence.id,
                        silence.created_by,
                        time::format(silence.ends_at)
                    );
                    let id = silence.id;
                    self.outbox.push(silence.clone());
                    self.recheck_pending = true;
                    Reply::ok(201, &json!({"silenceID": id}))
                }
                Err(refusal) => Reply::refused(&refusal),
            },
            Request::ExpireSilence { id, client } => match self.silences.expire(id, now) {
                Ok(()) => {
                    info!("silence {id} expired by {client}");
                    self.outbox.extend(self.silences.get(id).cloned());
                    Reply::ok(200, &json!({"acknowledged": true}))
                }
                Err(refusal) => Reply::refused(&refusal),
            },
            Request::ListSilences { state } => Reply::ok(200, &self.silences.list(state, now)),
            Request::GetSilence { id } => match self.silences.show(id, now) {
                Some(shown) => Reply::ok(200, &shown),
                None => Reply::refused(&Refusal {
                    status: 404,
                    message: format!("Silence `{id}` does not exist"),
                }),
            },
            Request::Alerts(filter) => Reply::ok(200, &self.alerts(&filter)),
            Request::WatcherState { .. } => Reply::refused(&Refusal {
                status: 500,
                message: "a watcher's state is the master's to answer".to_string(),
            }),
        }
    }

    /// A watcher's live state with its newest firing, as `/state` and `/status` show it.
    pub fn live_state(&self, state: WatcherState, reveal_keys: bool) -> LiveState {
        let filter = Filter {
            event: Some(state.event.clone()),
            watcher: Some(state.watcher.clone()),
            state: None,
            limit: 1,
            reveal_keys,
        };
        let last_firing = self.alerts(&filter).into_iter().next();
        LiveState { state, last_firing }
    }

    /// The alerts `filter` selects, newest first, as whoever asks may see them (the
    /// alert list, the status page).
    pub fn alerts(&self, filter: &Filter) -> Vec<Alert> {
        let listed = self.history.list(filter).into_iter().cloned();
        listed.map(|a| shown(a, filter.reveal_keys)).collect()
    }

    /// Every silence with its state now, as `GET /silences` lists them (the status page).
    pub fn silences(&self) -> Vec<silences::Shown<'_>> {
        self.silences.list(None, time::now())
    }

    /// Once a second: forgets silences expired a day ago, and notes silences that
    /// started since the last look (their matches among pending firings are settled).
    /// Returns the silences forgotten, for a cluster to forget too.
    pub fn tick(&mut self) -> Vec<Uuid> {
        let now = time::now();
        if self.silences.started_between(self.looked_at, now) {
            self.recheck_pending = true;
        }
        self.looked_at = now;
        self.flush();
        self.silences.forget_expired(now)
    }

    /// Writes the alert list's new lines: on the tick, before an answer, and at a stop
    /// or a hand-over, once the last counts have fired.
    pub fn flush(&mut self) {
        self.history.flush();
    }

    /// Silences another node made or expired (a cluster).
    pub fn merge_shared(&mut self, shared: Vec<Silence>) {
        if self.silences.merge(shared, time::now()) {
            self.recheck_pending = true;
        }
    }

    /// Every silence this node holds: for a shared store that lost them.
    pub fn every_silence(&self) -> Vec<Silence> {
        self.silences.all().cloned().collect()
    }

    /// Silences made or expired here since the last call, to share.
    pub fn take_outbox(&mut self) -> Vec<Silence> {
        std::mem::take(&mut self.outbox)
    }

    pub fn render(&self, out: &mut String) {
        write_family(
            out,
            "eventsd_firings_silenced_total",
            "counter",
            "Firings a silence held back, by watcher.",
            self.silenced.iter().map(|((event, watcher), n)| {
                let labels = format!(
                    "event=\"{}\",watcher=\"{}\"",
                    label_value(event),
                    label_value(watcher)
                );
                (labels, *n)
            }),
        );
    }

    fn silence_of(&self, firing: &Firing, now: Millis) -> Option<Uuid> {
        let facts = Facts {
            event: &firing.event,
            watcher: &firing.watcher,
            rule: firing.rule.name(),
            key: &firing.key,
        };
        self.silences.silencing(&facts, now)
    }
}

/// A watcher's live state (alerts.md): its hottest keys and its newest firing.
#[derive(Serialize)]
pub struct LiveState {
    #[serde(flatten)]
    state: WatcherState,
    last_firing: Option<Alert>,
}

/// An alert as whoever asks may see it: key values masked unless `reveal_keys`.
fn shown(mut alert: Alert, reveal_keys: bool) -> Alert {
    if !reveal_keys {
        alert.key = crate::watch::hidden(alert.key);
    }
    alert
}

fn previous_attempts(state: &AlertState) -> u32 {
    match state {
        AlertState::Pending { attempts, .. } => *attempts,
        _ => 0,
    }
}

fn bounds(config: &Config) -> Bounds {
    Bounds {
        max_duration_ms: config.silences.max_duration_secs.saturating_mul(1000),
        max_field_path_bytes: config.watchers.max_field_path_bytes,
    }
}
