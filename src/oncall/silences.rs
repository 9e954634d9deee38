//! The silences of this node (alerts.md): created, expired, listed, merged with those
//! of other nodes, and persisted in `STATE_DIR/silences.json`.
//!
//! Owns the set and its bounds: at most `silences.max` active and pending ones; an
//! expired one stays listed for a day, then is forgotten (earlier when expired ones pile
//! up beyond the same bound). Every change is written whole and atomically before it is
//! answered; on load each entry is checked as a client's body is, and what fails is
//! dropped with a log line. Never matches a firing against an expired or pending silence.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use log::warn;
use serde::Serialize;
use uuid::Uuid;

use super::silence::{Bounds, Checked, Facts, NewSilence, Silence, State};
use super::time::Millis;
use crate::registry::Refusal;

/// How long an expired silence stays listed.
pub const EXPIRED_KEPT_MS: Millis = 24 * 3600 * 1000;

/// A silence as `GET /silences` shows it: Alertmanager's shape, with its state.
#[derive(Debug, Serialize)]
pub struct Shown<'a> {
    #[serde(flatten)]
    pub silence: &'a Silence,
    pub status: Status,
}

#[derive(Debug, Serialize)]
pub struct Status {
    pub state: State,
}

pub struct Silences {
    path: PathBuf,
    by_id: BTreeMap<Uuid, Checked>,
    bounds: Bounds,
    max: usize,
}

impl Silences {
    /// Loads `path` (a missing file: none), keeping what passes the checks a client's
    /// silence passes; the rest is logged and dropped. A file that is not a JSON list of
    /// objects is logged and set aside whole: silences are not worth refusing to start.
    pub fn load(path: &Path, bounds: Bounds, max: usize) -> anyhow::Result<Silences> {
        let mut silences = Silences {
            path: path.to_path_buf(),
            by_id: BTreeMap::new(),
            bounds,
            max,
        };
        let Some(document) = crate::files::read_state_file(path, "silences file")? else {
            return Ok(silences);
        };
        let entries: Vec<serde_json::Value> = match serde_json::from_slice(&document) {
            Ok(entries) => entries,
            Err(e) => {
                warn!(
                    "{}: not a JSON list ({e}); no silence loaded",
                    path.display()
                );
                return Ok(silences);
            }
        };
        for (index, entry) in entries.into_iter().enumerate() {
            let checked = serde_json::from_value::<Silence>(entry)
                .map_err(|e| e.to_string())
                .and_then(|s| s.check(bounds));
            match checked {
                Ok(checked) => {
                    silences.by_id.insert(checked.silence.id, checked);
                }
                Err(why) => warn!("{} entry {index}: {why}; dropped", path.display()),
            }
        }
        Ok(silences)
    }

    /// Makes a silence of a client's `body`, persisted before it is answered.
    pub fn create(&mut self, body: &[u8], now: Millis) -> Result<&Silence, Refusal> {
        let new: NewSilence = serde_json::from_slice(body).map_err(|e| bad_request(&e))?;
        let checked = new
            .into_silence(Uuid::new_v4(), now, self.bounds)
            .map_err(|message| Refusal {
                status: 400,
                message,
            })?;
        let live = self.live(now);
        if live >= self.max {
            return Err(Refusal {
                status: 400,
                message: format!(
                    "{live} silences are active or pending, the most silences.max allows"
                ),
            });
        }
        let id = checked.silence.id;
        self.by_id.insert(id, checked);
        self.forget_expired(now);
        if let Err(e) = self.save() {
            self.by_id.remove(&id);
            return Err(not_saved(&e));
        }
        Ok(&self.by_id[&id].silence)
    }

    /// Expires a silence now (`DELETE`): it stays listed as expired. Expiring an
    /// expired one changes nothing.
    pub fn expire(&mut self, id: Uuid, now: Millis) -> Result<(), Refusal> {
        let Some(checked) = self.by_id.get_mut(&id) else {
            return Err(not_found(id));
        };
        if checked.state(now) == State::Expired {
            return Ok(());
        }
        let before = checked.silence.clone();
        let silence = &mut checked.silence;
        silence.starts_at = silence.starts_at.min(now);
        silence.ends_at = now;
        silence.updated_at = now;
        if let Err(e) = self.save() {
            if let Some(checked) = self.by_id.get_mut(&id) {
                checked.silence = before;
            }
            return Err(not_saved(&e));
        }
        Ok(())
    }

    pub fn get(&self, id: Uuid) -> Option<&Silence> {
        self.by_id.get(&id).map(|c| &c.silence)
    }

    /// The silences in `state` (every one without), the latest to end first.
    pub fn list(&self, state: Option<State>, now: Millis) -> Vec<Shown<'_>> {
        let mut shown: Vec<Shown> = self
            .by_id
            .values()
            .map(|c| Shown {
                silence: &c.silence,
                status: Status {
                    state: c.state(now),
                },
            })
            .filter(|s| state.is_none_or(|wanted| s.status.state == wanted))
            .collect();
        shown.sort_by_key(|s| std::cmp::Reverse(s.silence.ends_at));
        shown
    }

    pub fn show(&self, id: Uuid, now: Millis) -> Option<Shown<'_>> {
        self.by_id.get(&id).map(|c| Shown {
            silence: &c.silence,
            status: Status {
                state: c.state(now),
            },
        })
    }

    /// The active silence that matches `facts`, if one does.
    pub fn silencing(&self, facts: &Facts, now: Millis) -> Option<Uuid> {
        self.by_id
            .values()
            .find(|c| c.state(now) == State::Active && c.matches(facts))
            .map(|c| c.silence.id)
    }

    /// Whether any silence is active at `now` (else nothing needs matching).
    pub fn any_active(&self, now: Millis) -> bool {
        self.by_id.values().any(|c| c.state(now) == State::Active)
    }

    /// Whether a silence started between `since` (excluded) and `now`.
    pub fn started_between(&self, since: Millis, now: Millis) -> bool {
        self.by_id
            .values()
            .any(|c| c.silence.starts_at > since && c.silence.starts_at <= now)
    }

    /// Takes in silences another node made or expired (a cluster): unknown ones are
    /// added, and of two versions of one the earlier end wins (expiring is the only
    /// change a silence sees). Returns whether anything changed; saved if so.
    pub fn merge(&mut self, others: Vec<Silence>, now: Millis) -> bool {
        let mut changed = false;
        for other in others {
            if now.saturating_sub(other.ends_at) > EXPIRED_KEPT_MS {
                continue;
            }
            let newer = match self.by_id.get(&other.id) {
                Some(mine) => other.ends_at < mine.silence.ends_at,
                None => true,
            };
            if !newer {
                continue;
            }
            match other.check(self.bounds) {
                Ok(checked) => {
                    self.by_id.insert(checked.silence.id, checked);
                    changed = true;
                }
                Err(why) => warn!("a shared silence refused: {why}"),
            }
        }
        if changed {
            if let Err(e) = self.save() {
                warn!("{e:#}");
            }
        }
        changed
    }

    /// Every silence, for sharing.
    pub fn all(&self) -> impl Iterator<Item = &Silence> {
        self.by_id.values().map(|c| &c.silence)
    }

    /// Forgets silences expired more than a day ago (and the oldest expired ones beyond
    /// `max` of them); returns their ids. Saved if any.
    pub fn forget_expired(&mut self, now: Millis) -> Vec<Uuid> {
        let mut expired: Vec<(Millis, Uuid)> = self
            .by_id
            .values()
            .filter(|c| c.state(now) == State::Expired)
            .map(|c| (c.silence.ends_at, c.silence.id))
            .collect();
        expired.sort_unstable();
        let beyond_bound = expired.len().saturating_sub(self.max);
        let forgotten: Vec<Uuid> = expired
            .iter()
            .enumerate()
            .filter(|(i, (ended, _))| *i < beyond_bound || now - ended > EXPIRED_KEPT_MS)
            .map(|(_, (_, id))| *id)
            .collect();
        for id in &forgotten {
            self.by_id.remove(id);
        }
        if !forgotten.is_empty() {
            if let Err(e) = self.save() {
                warn!("{e:#}");
            }
        }
        forgotten
    }

    /// `[silences]` changed by a reload: applies to what is made from now on.
    pub fn set_limits(&mut self, bounds: Bounds, max: usize) {
        self.bounds = bounds;
        self.max = max;
    }

    fn live(&self, now: Millis) -> usize {
        self.by_id
            .values()
            .filter(|c| c.state(now) != State::Expired)
            .count()
    }

    fn save(&self) -> anyhow::Result<()> {
        let silences: Vec<&Silence> = self.all().collect();
        let document = serde_json::to_vec_pretty(&silences).context("cannot serialize silences")?;
        crate::files::replace_atomically(&self.path, &document)
    }
}

fn bad_request(e: &serde_json::Error) -> Refusal {
    let message = if e.is_syntax() || e.is_eof() {
        "Only JSON object payload is accepted".to_string()
    } else {
        format!("Invalid silence: {e}")
    };
    Refusal {
        status: 400,
        message,
    }
}

fn not_found(id: Uuid) -> Refusal {
    Refusal {
        status: 404,
        message: format!("Silence `{id}` does not exist"),
    }
}

fn not_saved(e: &anyhow::Error) -> Refusal {
    warn!("silences not saved: {e:#}");
    Refusal {
        status: 503,
        message: format!("The silences could not be saved: {e:#}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oncall::silence::tests::{BOUNDS, NOW};

    fn body(event: &str) -> Vec<u8> {
        format!(
            r#"{{"matchers": [{{"name": "event", "value": "{event}"}}],
                "endsAt": "2027-01-16T00:00:00Z", "createdBy": "ops"}}"#
        )
        .into_bytes()
    }

    #[test]
    fn silences_survive_a_reload_and_bad_entries_are_dropped_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("silences.json");
        let mut silences = Silences::load(&path, BOUNDS, 10).unwrap();
        let id = silences.create(&body("login"), NOW).unwrap().id;
        let mut entries: Vec<serde_json::Value> =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        entries.push(serde_json::json!({"id": Uuid::new_v4(), "matchers": []}));
        entries.push(serde_json::json!("not a silence"));
        std::fs::write(&path, serde_json::to_vec(&entries).unwrap()).unwrap();
        let reloaded = Silences::load(&path, BOUNDS, 10).unwrap();
        assert_eq!(reloaded.all().map(|s| s.id).collect::<Vec<_>>(), [id]);
    }

    #[test]
    fn live_silences_are_bounded_and_expired_ones_are_forgotten_after_a_day() {
        let dir = tempfile::tempdir().unwrap();
        let mut silences = Silences::load(&dir.path().join("s.json"), BOUNDS, 2).unwrap();
        let first = silences.create(&body("a"), NOW).unwrap().id;
        silences.create(&body("b"), NOW).unwrap();
        assert_eq!(silences.create(&body("c"), NOW).unwrap_err().status, 400);
        silences.expire(first, NOW + 1).unwrap();
        assert_eq!(silences.list(Some(State::Expired), NOW + 2).len(), 1);
        silences.create(&body("c"), NOW + 2).unwrap();
        assert_eq!(silences.forget_expired(NOW + 2 + EXPIRED_KEPT_MS), [first]);
        assert_eq!(silences.expire(first, NOW).unwrap_err().status, 404);
    }

    #[test]
    fn merging_takes_new_silences_and_the_earlier_end() {
        let dir = tempfile::tempdir().unwrap();
        let mut mine = Silences::load(&dir.path().join("a.json"), BOUNDS, 10).unwrap();
        let mut theirs = Silences::load(&dir.path().join("b.json"), BOUNDS, 10).unwrap();
        let id = theirs.create(&body("login"), NOW).unwrap().id;
        let shared = || theirs.all().cloned().collect::<Vec<_>>();
        assert!(mine.merge(shared(), NOW));
        assert!(!mine.merge(shared(), NOW), "nothing new");
        theirs.expire(id, NOW + 5).unwrap();
        assert!(mine.merge(theirs.all().cloned().collect(), NOW + 6));
        assert_eq!(mine.show(id, NOW + 6).unwrap().status.state, State::Expired);
    }
}
