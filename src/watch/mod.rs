//! Watchers at work: workers compute aggregation keys (`plan`, `Key`) and ship counts in
//! batches (`CountBatch`); the master alone adds them up and decides every firing (`Watch`), so a crossing fires once
//! however many workers saw the events.
//!
//! `Watch` follows the registry and applies each watcher's rule (`rule`) over the
//! master's `CounterStore`. It does no I/O and never waits: a firing is handed back to
//! the master, which passes it to the action runner.

mod batch;
mod column;
mod counter;
mod due;
mod firing;
mod key;
pub mod plan;
pub mod rule;
mod rule_state;
mod state;
pub mod store;
mod table;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::exposition::{label_value, write_family};
use crate::registry::{Aggregator, Registry, Watcher, WatcherSpec, expected_payload};
pub use batch::{CountBatch, SetCounts, SetValues};
pub use firing::{Firing, Job};
pub use key::{DIGEST_BYTES, FnvBuildHasher, Key};
use rule::{OnTheClock, RuleParams, Verdict};
pub use state::{KeyCount, WatcherState, hidden};
use store::{CounterStore, Second, WatcherKey};

/// Events of one (watcher, key), with what Redis judges the key by.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SharedCount {
    pub watcher: Uuid,
    pub key: Key,
    pub events: u64,
    pub rule: RuleParams,
    /// cardinality: the hashes of the values the key was seen with. (Always written:
    /// bincode frames carry it, and bincode cannot skip a field.)
    #[serde(default)]
    pub values: Vec<u64>,
}

impl SharedCount {
    /// More of the same (watcher, key), as a cluster link sums them until it flushes.
    /// cardinality's hashes are kept once each and, past twice what the rule keeps, cut
    /// to the highest it keeps: of one call's values, all seen at its second, the rule
    /// keeps the highest hashes (`RuleState::see_all`), so the call judges the same
    /// without the others, and a key's hashes in a call are bounded by its rule, not by
    /// the traffic of a flush.
    pub fn add(&mut self, more: SharedCount) {
        self.events += more.events;
        self.rule = more.rule;
        self.values.extend(more.values);
        let Some(keep) = self.rule.kept_values() else {
            return;
        };
        if self.values.len() > keep.saturating_mul(2) {
            self.values.sort_unstable();
            self.values.dedup();
            let over = self.values.len().saturating_sub(keep);
            self.values.drain(..over);
        }
    }
}

/// A crossing Redis reported to this node alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Crossing {
    pub watcher: Uuid,
    pub key: Key,
    pub count: u64,
    /// The counter's incarnation in Redis: a Redis restarted empty starts the sequence
    /// again under another one.
    pub epoch: String,
    /// The key's firings so far in this epoch, this one included: with the watcher, the
    /// key and the epoch, the crossing's id across nodes.
    pub sequence: u64,
    /// A flatline key heard from again (`send_resolved`).
    #[serde(default)]
    pub resolved: bool,
    /// spike: the count of the window before.
    #[serde(default)]
    pub previous: u64,
}

struct Watched {
    event: String,
    spec: WatcherSpec,
    rule: RuleParams,
    /// Rules decided on the clock: no key fires before this second.
    grace_until: Second,
    /// Rules decided on the clock: the keys watched from the start, never forgotten
    /// (`single`'s one key, `expect`'s).
    kept: HashSet<Key>,
}

impl Watched {
    fn new(event: &str, spec: &WatcherSpec, created: Second, now: Second) -> Watched {
        let rule = RuleParams::of(spec, created);
        let kept = match (&spec.aggregator, &spec.expect) {
            _ if !rule.on_the_clock() => HashSet::new(),
            (Aggregator::Single {}, _) => HashSet::from([Key::default()]),
            (Aggregator::Fields { fields }, Some(expected)) => expected
                .iter()
                .map(|key| Key::of(&spec.aggregator, &expected_payload(fields, key), usize::MAX))
                .collect(),
            (Aggregator::Fields { .. }, None) => HashSet::new(),
        };
        Watched {
            event: event.to_string(),
            spec: spec.clone(),
            rule,
            grace_until: rule.grace_until(now),
            kept,
        }
    }
}

/// A watcher decided on the clock, as a cluster link asks Redis to judge it every second
/// (rules.md, "In a cluster").
#[derive(Debug, Clone)]
pub struct ClockWatcher {
    pub id: Uuid,
    pub rule: RuleParams,
    /// The keys it always watches (`single`'s, `expect`'s).
    pub kept: Vec<Key>,
}

/// The watchers of `registry` decided on the clock.
pub fn clock_watchers(registry: &Registry) -> Vec<ClockWatcher> {
    registry
        .events
        .iter()
        .flat_map(|(event, entry)| entry.watchers.iter().map(move |w| (event, w)))
        .map(|(event, w)| {
            let created = w.created.unwrap_or(0);
            (w.id, Watched::new(event.as_str(), &w.spec, created, 0))
        })
        .filter(|(_, watched)| watched.rule.on_the_clock())
        .map(|(id, watched)| ClockWatcher {
            id,
            rule: watched.rule,
            kept: watched.kept.into_iter().collect(),
        })
        .collect()
}

/// The master's counters and firing decisions, over whichever store holds the counts.
pub struct Watch {
    store: Box<dyn CounterStore>,
    watchers: HashMap<Uuid, Watched>,
    counted: BTreeMap<String, u64>,
    /// Firings by (event type, watcher): watcher names are unique only within a type.
    firings: BTreeMap<(String, String), u64>,
    /// The counters changed since the last snapshot was taken.
    changed: bool,
    /// Where the next slice on the clock starts among the watchers decided on it: after
    /// the one that spent the last slice's budget, so that a watcher with a backlog of
    /// keys due takes turns with the others instead of holding them up.
    clock_turn: usize,
}

impl Watch {
    pub fn new(store: Box<dyn CounterStore>) -> Watch {
        Watch {
            store,
            watchers: HashMap::new(),
            counted: BTreeMap::new(),
            firings: BTreeMap::new(),
            changed: false,
            clock_turn: 0,
        }
    }

    /// Follows the registry. A watcher whose definition changes gets a new id, so
    /// keeping counters by id keeps exactly those of unchanged watchers. A watcher
    /// decided on the clock that this master sees first (created, changed, or restored
    /// at a start) has its keys queued for the end of its grace.
    pub fn sync(&mut self, registry: &Registry) {
        let now = now();
        let mut previous = std::mem::take(&mut self.watchers);
        for (event, entry) in &registry.events {
            for w in &entry.watchers {
                let watched = previous
                    .remove(&w.id)
                    .unwrap_or_else(|| self.first_seen(w, event.as_str(), now));
                self.watchers.insert(w.id, watched);
            }
        }
        let sets = plan::Plans::compile(registry).field_sets();
        self.store.arrange(&sets);
        self.changed = true;
    }

    fn first_seen(&mut self, w: &Watcher, event: &str, now: Second) -> Watched {
        let created = w.created.unwrap_or(0);
        let watched = Watched::new(event, &w.spec, created, now);
        watched.rule.on_first_sight(
            self.store.as_mut(),
            w.id,
            watched.kept.iter(),
            watched.grace_until,
        );
        watched
    }

    /// The firings of the rules decided on the clock at `now`, of at most `budget` keys
    /// due (less the keys judged; none left: more may be due): the master judges a
    /// second's keys a slice at a time, answering between two (a million keys due at
    /// once, after a restart's grace, took a second).
    pub fn tick(&mut self, now: Second, budget: &mut usize) -> Vec<Job> {
        let mut on_the_clock: Vec<Uuid> = (self.watchers.iter())
            .filter(|(_, watched)| watched.rule.on_the_clock())
            .map(|(&id, _)| id)
            .collect();
        on_the_clock.sort_unstable();
        let count = on_the_clock.len();
        let mut jobs = Vec::new();
        for turn in self.clock_turn..self.clock_turn + count {
            if *budget == 0 {
                break;
            }
            let id = on_the_clock[turn % count];
            let watched = &self.watchers[&id];
            let kept = |key: &str| watched.kept.contains(key);
            let clock = OnTheClock {
                grace_until: watched.grace_until,
                kept: &kept,
            };
            let store = self.store.as_mut();
            for (key, verdict) in watched.rule.on_tick(store, (id, now), &clock, budget) {
                self.changed = true;
                record_firing(
                    &mut self.firings,
                    &watched.event,
                    watched.spec.name.as_str(),
                );
                jobs.push(Job {
                    firing: Firing::new(&watched.event, &watched.spec, &key, verdict),
                    action: watched.spec.action.clone(),
                    watcher_id: id,
                });
            }
            if *budget == 0 {
                self.clock_turn = (turn + 1) % count;
            }
        }
        jobs
    }

    /// Whether the counters changed since the last call: a snapshot is worth taking.
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// A snapshot failed: the counters still differ from what is on disk.
    pub fn mark_changed(&mut self) {
        self.changed = true;
    }

    pub fn set_max_keys(&mut self, max_keys: usize) {
        self.store.set_max_keys(max_keys);
    }

    /// Evicts keys past `watchers.max_keys`, for at most `budget` updates (less those
    /// spent): a reload that lowered it, or a counters file saved under a higher one,
    /// leaves tables larger than the bound, which shrink a slice at a time, as keys due
    /// are judged (a million evictions at once would hold the master's loop).
    pub fn evict_past_max_keys(&mut self, budget: &mut usize) {
        let spent = self.store.evict_past_max_keys(*budget);
        *budget = budget.saturating_sub(spent);
        self.changed |= spent > 0;
    }

    /// Records the events of a batch as counted, for metrics.
    fn record_counted(&mut self, events: Vec<(String, u64)>) {
        for (event, n) in events {
            *self.counted.entry(event).or_default() += n;
        }
    }

    /// A worker's batch as the counts Redis judges (cluster.md), each with its watcher's
    /// rules; counts for a watcher deleted meanwhile are dropped.
    pub fn shared_counts(&mut self, batch: CountBatch) -> Vec<SharedCount> {
        self.record_counted(batch.events);
        let counts = batch
            .sets
            .iter()
            .flat_map(SetCounts::counts)
            .filter_map(|(watcher, key, events)| self.shared_count(watcher, key.clone(), events));
        let values =
            batch
                .values
                .iter()
                .flat_map(SetValues::values)
                .filter_map(|(watcher, key, hashes)| {
                    let mut count = self.shared_count(watcher, key.clone(), hashes.len() as u64)?;
                    count.values = hashes.to_vec();
                    Some(count)
                });
        counts.chain(values).collect()
    }

    /// Takes every count out of the store, as the counts Redis judges: a cluster node's
    /// `counters.json` holds what Redis does not have yet (cluster.md, round two).
    pub fn take_shared_counts(&mut self, now: Second) -> Vec<SharedCount> {
        let watchers = &self.watchers;
        let windows = |id: Uuid| watchers.get(&id).and_then(|w| w.rule.window_secs());
        let counts = self.store.take_counts(now, &windows);
        self.changed = true;
        counts
            .into_iter()
            .filter_map(|(watcher, key, events)| self.shared_count(watcher, key, events))
            .collect()
    }

    /// `events` of `key` with its watcher's rule; `None` for a watcher deleted meanwhile.
    fn shared_count(&self, watcher: Uuid, key: Key, events: u64) -> Option<SharedCount> {
        let rule = self.watchers.get(&watcher)?.rule;
        Some(SharedCount {
            watcher,
            key,
            events,
            rule,
            values: Vec::new(),
        })
    }

    /// The job of a crossing Redis reported to this node: its id is derived from
    /// `watcher/key/epoch/sequence`, the same on every node.
    pub fn job_of(&mut self, crossing: &Crossing, node: &str) -> Option<Job> {
        let watched = self.watchers.get(&crossing.watcher)?;
        let spec = &watched.spec;
        let verdict = Verdict {
            count: crossing.count,
            previous: crossing.previous,
            resolved: crossing.resolved,
        };
        let mut firing = Firing::new(&watched.event, spec, &crossing.key, verdict);
        let name = format!(
            "{}/{}/{}/{}",
            crossing.watcher,
            crossing.key.as_str(),
            crossing.epoch,
            crossing.sequence
        );
        firing.id = key::uuid_of(&name);
        firing.crossing = Some(name);
        firing.node = Some(node.to_string());
        record_firing(&mut self.firings, &watched.event, spec.name.as_str());
        Some(Job {
            firing,
            action: spec.action.clone(),
            watcher_id: crossing.watcher,
        })
    }

    /// Forgets every count and what every rule remembers (a node back on Redis drops
    /// what it counted alone, cardinality's and new_value's values with the counts:
    /// Redis judges on what it saw itself); returns the keys dropped.
    pub fn clear_counts(&mut self) -> usize {
        let keys = self.store.sizes().iter().map(|(_, keys, _)| keys).sum();
        self.store.clear();
        self.changed = true;
        keys
    }

    /// Adds a worker's batch; returns the jobs of the keys that crossed their threshold.
    /// Each key is found once for its field set, each watcher of the set decides on its
    /// own counter of it.
    pub fn count(&mut self, batch: CountBatch, now: Second) -> Vec<Job> {
        self.record_counted(batch.events);
        self.changed |= batch.sets.iter().any(|set| !set.keys.is_empty());
        self.changed |= !batch.values.is_empty();
        let mut jobs = Vec::new();
        for set in &batch.sets {
            // Counts for a watcher deleted since the worker computed them are dropped.
            let (ids, watched): (Vec<Uuid>, Vec<&Watched>) = (set.watchers.iter())
                .filter_map(|id| Some((*id, self.watchers.get(id)?)))
                .unzip();
            let firings = &mut self.firings;
            let mut judge = |at: usize, mut key: WatcherKey<'_>, events: u64| {
                let verdict = watched[at].rule.on_count(&mut key, events, now);
                if let Some(verdict) = verdict {
                    jobs.push(fired(firings, watched[at], ids[at], key.key(), verdict));
                }
            };
            self.store.count_set(&ids, &set.keys, &mut judge);
        }
        let values = batch.values.iter().flat_map(SetValues::values);
        jobs.extend(
            values
                .filter_map(|(watcher, key, hashes)| self.count_values(watcher, key, hashes, now)),
        );
        jobs
    }

    /// The hashes of `key`'s values for `watcher` (cardinality); its job if its rule fires.
    fn count_values(&mut self, id: Uuid, key: &Key, hashes: &[u64], now: Second) -> Option<Job> {
        // Values for a watcher deleted since the worker computed them are dropped.
        let watched = self.watchers.get(&id)?;
        let store = self.store.as_mut();
        let verdict = watched.rule.on_values(store, id, key, hashes, now)?;
        Some(fired(&mut self.firings, watched, id, key, verdict))
    }

    pub fn store(&self) -> &dyn CounterStore {
        self.store.as_ref()
    }

    /// Saves every counter with its window position (`counters.json`, atomically).
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        self.store.save(path)
    }

    /// Metrics families of the watchers.
    pub fn render(&self, out: &mut String) {
        write_family(
            out,
            "eventsd_events_counted_total",
            "counter",
            "Events counted by the master, by event type.",
            self.counted
                .iter()
                .map(|(event, n)| (format!("type=\"{event}\""), *n)),
        );
        write_family(
            out,
            "eventsd_watcher_firings_total",
            "counter",
            "Firings by watcher.",
            self.firings
                .iter()
                .map(|((event, watcher), n)| (watcher_labels(event, watcher), *n)),
        );
        let sizes: Vec<(String, usize, u64)> = self
            .store
            .sizes()
            .into_iter()
            .filter_map(|(id, keys, evictions)| {
                self.watchers.get(&id).map(|w| {
                    (
                        watcher_labels(&w.event, w.spec.name.as_str()),
                        keys,
                        evictions,
                    )
                })
            })
            .collect();
        write_family(
            out,
            "eventsd_watcher_keys",
            "gauge",
            "Aggregation keys held, by watcher.",
            sizes
                .iter()
                .map(|(labels, keys, _)| (labels.clone(), *keys as u64)),
        );
        write_family(
            out,
            "eventsd_watcher_key_evictions_total",
            "counter",
            "Keys evicted at watchers.max_keys, by watcher.",
            sizes
                .iter()
                .map(|(labels, _, evictions)| (labels.clone(), *evictions)),
        );
    }
}

/// The job of `watched`'s key that fired, recorded for metrics.
fn fired(
    firings: &mut BTreeMap<(String, String), u64>,
    watched: &Watched,
    id: Uuid,
    key: &Key,
    verdict: Verdict,
) -> Job {
    let spec = &watched.spec;
    record_firing(firings, &watched.event, spec.name.as_str());
    Job {
        firing: Firing::new(&watched.event, spec, key, verdict),
        action: spec.action.clone(),
        watcher_id: id,
    }
}

fn record_firing(firings: &mut BTreeMap<(String, String), u64>, event: &str, watcher: &str) {
    *firings
        .entry((event.to_string(), watcher.to_string()))
        .or_default() += 1;
}

/// A watcher's labels: its type and its name, since names are unique only within a type
/// (two types' `storm` watchers are two series).
fn watcher_labels(event: &str, watcher: &str) -> String {
    format!(
        "event=\"{}\",watcher=\"{}\"",
        label_value(event),
        label_value(watcher)
    )
}

/// Now, in the store's unit.
pub use crate::clock::epoch_second as now;

#[cfg(test)]
mod tests;
