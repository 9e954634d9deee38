//! The action runner's pending firings, one queue per delivery target (watchers.md,
//! "Delivery"): a webhook URL's origin, the SMTP relay, a command. Alertmanager's shape,
//! with order kept per alert only. An alert is a (watcher, key): it has at most one
//! firing waiting, which absorbs the next ones (`firings` counts the crossings it stands
//! for), and at most one in flight. A target delivers up to `max_in_flight` alerts at
//! once, the oldest due first; a failing alert waits for its retry on its own timer, not
//! in a thread, so it holds neither its target's other alerts nor any other target.
//!
//! Pure bookkeeping over the times it is given: no thread, no I/O, unit-tested alone.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::config::Config;
use crate::protocol::runner::DropReason;
use crate::registry::Action;
use crate::registry::address::origin;
use crate::watch::Job;

/// The first retry waits this long; each next one twice as long, up to the configured cap.
const FIRST_RETRY: Duration = Duration::from_secs(1);

/// What bounds the queues, from `[actions]` and `watchers.action_queue`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Firings waiting, in all targets.
    pub capacity: usize,
    /// Deliveries to one target at the same time.
    pub max_in_flight: usize,
    pub retry_max: Duration,
    pub max_age: Duration,
}

impl Limits {
    pub fn of(config: &Config) -> Limits {
        let actions = &config.actions;
        Limits {
            capacity: config.watchers.action_queue.max(1),
            max_in_flight: actions.max_in_flight_per_target.max(1),
            retry_max: Duration::from_secs(actions.retry_max_interval_secs),
            max_age: Duration::from_secs(actions.max_age_secs),
        }
    }
}

/// The firings of one (watcher, key): delivered in order, one at a time.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Alert {
    watcher_id: Uuid,
    event: String,
    watcher: String,
    key: String,
}

impl Alert {
    fn of(job: &Job) -> Alert {
        Alert {
            watcher_id: job.watcher_id,
            event: job.firing.event.clone(),
            watcher: job.firing.watcher.clone(),
            key: job.firing.key.to_string(),
        }
    }
}

/// A firing waiting for delivery, with what its attempts taught.
#[derive(Debug, Clone)]
pub struct Pending {
    pub job: Job,
    /// Every firing id this delivery settles: its own and those it absorbed.
    pub ids: Vec<Uuid>,
    pub attempts: u32,
    /// When the runner received the first firing it stands for.
    pub received_at: Instant,
    due_at: Instant,
    /// Its place in the order of arrival, kept across retries: the oldest due goes first.
    seq: u64,
    alert: Alert,
}

/// How a delivery attempt ended, as the queue needs to know it.
#[derive(Debug, Clone, PartialEq)]
pub enum Attempt {
    Delivered,
    Permanent(String),
    Transient(String),
}

/// A pending firing that left the queue for good, and why.
#[derive(Debug)]
pub enum Settled {
    Delivered(Pending),
    Failed(Pending, String),
    /// Given up: too old to be worth delivering, or pushed out of a full queue.
    Dropped(Pending, DropReason, String),
}

/// One target's firings.
#[derive(Debug, Default)]
struct Target {
    /// Waiting firings, by arrival.
    waiting: BTreeMap<u64, Pending>,
    /// The waiting firing of each alert.
    by_alert: HashMap<Alert, u64>,
    /// Waiting firings due now, by arrival.
    due: BTreeSet<u64>,
    /// Waiting firings that wait for a retry, by due time.
    retrying: BTreeSet<(Instant, u64)>,
    /// Alerts being delivered, with the firings each delivery settles.
    in_flight: HashMap<Alert, InFlight>,
}

#[derive(Debug)]
struct InFlight {
    ids: Vec<Uuid>,
    /// Settled by the master meanwhile (its watcher is gone): whatever the attempt
    /// says, it is not reported, nor tried again.
    forgotten: bool,
}

pub struct Queues {
    targets: HashMap<String, Target>,
    limits: Limits,
    next_seq: u64,
    /// Firings waiting, in all targets.
    waiting: usize,
}

impl Queues {
    pub fn new(limits: Limits) -> Queues {
        Queues {
            targets: HashMap::new(),
            limits,
            next_seq: 0,
            waiting: 0,
        }
    }

    /// Queues `job`, or lets the waiting firing of its alert absorb it. Returns what a
    /// full queue pushed out, if anything.
    pub fn submit(&mut self, job: Job, now: Instant) -> Option<Settled> {
        let alert = Alert::of(&job);
        let target = self.targets.entry(target_of(&job.action)).or_default();
        if let Some(waiting) = target
            .by_alert
            .get(&alert)
            .and_then(|seq| target.waiting.get_mut(seq))
        {
            waiting.ids.push(job.firing.id);
            absorb(waiting, job);
            return None;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let pending = Pending {
            ids: vec![job.firing.id],
            job,
            attempts: 0,
            received_at: now,
            due_at: now,
            seq,
            alert,
        };
        target.insert(pending, now);
        self.waiting += 1;
        (self.waiting > self.limits.capacity)
            .then(|| self.drop_oldest())
            .flatten()
    }

    /// Up to `limit` firings to deliver now: of each target, the oldest due whose alert
    /// is not in flight, while the target has a free slot. Each takes its slot.
    pub fn take_due(&mut self, now: Instant, limit: usize) -> Vec<(String, Pending)> {
        let mut taken = Vec::new();
        for (name, target) in &mut self.targets {
            target.promote(now);
            while taken.len() < limit && target.in_flight.len() < self.limits.max_in_flight {
                let Some(pending) = target.take_first_due() else {
                    break;
                };
                taken.push((name.clone(), pending));
            }
        }
        self.waiting -= taken.len();
        taken
    }

    /// When the next retry falls due, among targets with a free slot.
    pub fn next_due_at(&self) -> Option<Instant> {
        self.targets
            .values()
            .filter(|t| t.in_flight.len() < self.limits.max_in_flight)
            .filter_map(|t| t.retrying.first().map(|(at, _)| *at))
            .min()
    }

    /// Frees the slot `pending` held and files the attempt: settled, or waiting again for
    /// a retry after a backoff (absorbing a firing of its alert that came meanwhile).
    pub fn finished(
        &mut self,
        target_name: &str,
        mut pending: Pending,
        attempt: Attempt,
        now: Instant,
    ) -> Option<Settled> {
        let target = self.targets.entry(target_name.to_string()).or_default();
        let flight = target.in_flight.remove(&pending.alert);
        pending.attempts += 1;
        let settled = match attempt {
            _ if flight.is_some_and(|f| f.forgotten) => None,
            Attempt::Delivered => Some(Settled::Delivered(pending)),
            Attempt::Permanent(why) => Some(Settled::Failed(pending, why)),
            Attempt::Transient(why)
                if now.duration_since(pending.received_at) >= self.limits.max_age =>
            {
                let detail = format!("{why}; given up after {} attempts", pending.attempts);
                Some(Settled::Dropped(pending, DropReason::TooOld, detail))
            }
            Attempt::Transient(_) => {
                let doublings = pending.attempts.saturating_sub(1).min(20);
                let backoff = FIRST_RETRY
                    .saturating_mul(1 << doublings)
                    .min(self.limits.retry_max);
                pending.due_at = now + backoff;
                let newer = target.by_alert.get(&pending.alert).copied();
                if let Some(newer) = newer.and_then(|seq| target.remove(seq)) {
                    pending.ids.extend(newer.ids);
                    absorb(&mut pending, newer.job);
                    self.waiting -= 1;
                }
                target.insert(pending, now);
                self.waiting += 1;
                None
            }
        };
        if target.is_idle() {
            self.targets.remove(target_name);
        }
        settled
    }

    /// When the waiting delivery of `job`'s alert at `target_name` is tried next, and
    /// the firings it stands for: what a failed attempt left waiting.
    pub fn retry_of(&self, target_name: &str, job: &Job) -> Option<(Instant, Vec<Uuid>)> {
        let target = self.targets.get(target_name)?;
        let pending = target.waiting.get(target.by_alert.get(&Alert::of(job))?)?;
        Some((pending.due_at, pending.ids.clone()))
    }

    /// Forgets the firings of `ids` (the master settled them): those waiting leave at
    /// once, those in flight will be neither reported nor retried. Returns how many left.
    pub fn forget(&mut self, ids: &HashSet<Uuid>) -> usize {
        let mut forgotten = 0;
        for target in self.targets.values_mut() {
            let gone: Vec<u64> = target
                .waiting
                .values()
                .filter(|p| p.ids.iter().any(|id| ids.contains(id)))
                .map(|p| p.seq)
                .collect();
            for seq in gone {
                target.remove(seq);
                forgotten += 1;
            }
            for flight in target.in_flight.values_mut() {
                flight.forgotten |= flight.ids.iter().any(|id| ids.contains(id));
            }
        }
        self.waiting -= forgotten;
        self.targets.retain(|_, t| !t.is_idle());
        forgotten
    }

    /// Firings waiting, in all targets.
    pub fn len(&self) -> usize {
        self.waiting
    }

    /// The oldest waiting firing of all, pushed out.
    fn drop_oldest(&mut self) -> Option<Settled> {
        let target = self
            .targets
            .values_mut()
            .filter_map(|t| t.waiting.keys().next().copied().map(|seq| (seq, t)))
            .min_by_key(|(seq, _)| *seq)
            .and_then(|(seq, t)| t.remove(seq))?;
        self.waiting -= 1;
        let detail = format!(
            "the action queue is full ({} firings)",
            self.limits.capacity
        );
        Some(Settled::Dropped(target, DropReason::QueueFull, detail))
    }
}

impl Target {
    fn insert(&mut self, pending: Pending, now: Instant) {
        let seq = pending.seq;
        if pending.due_at <= now {
            self.due.insert(seq);
        } else {
            self.retrying.insert((pending.due_at, seq));
        }
        self.by_alert.insert(pending.alert.clone(), seq);
        self.waiting.insert(seq, pending);
    }

    fn remove(&mut self, seq: u64) -> Option<Pending> {
        let pending = self.waiting.remove(&seq)?;
        self.by_alert.remove(&pending.alert);
        self.due.remove(&seq);
        self.retrying.remove(&(pending.due_at, seq));
        Some(pending)
    }

    /// Retries whose time has come join the firings due now.
    fn promote(&mut self, now: Instant) {
        while let Some(&(at, seq)) = self.retrying.first() {
            if at > now {
                break;
            }
            self.retrying.pop_first();
            self.due.insert(seq);
        }
    }

    /// The oldest firing due whose alert is not in flight (at most `in_flight` are
    /// skipped), put in flight.
    fn take_first_due(&mut self) -> Option<Pending> {
        let seq = self.due.iter().copied().find(|seq| {
            self.waiting
                .get(seq)
                .is_some_and(|p| !self.in_flight.contains_key(&p.alert))
        })?;
        let pending = self.remove(seq)?;
        let flight = InFlight {
            ids: pending.ids.clone(),
            forgotten: false,
        };
        self.in_flight.insert(pending.alert.clone(), flight);
        Some(pending)
    }

    fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.in_flight.is_empty()
    }
}

/// Where an action delivers: deliveries to one target share its queue. A webhook's
/// target is its URL's origin, without credentials, path or query: the name shows in
/// metric labels and logs (security.md, "Secrets stay secret everywhere").
pub fn target_of(action: &Action) -> String {
    match action {
        Action::Null {} => "null".to_string(),
        Action::Email { .. } => "smtp".to_string(),
        Action::Webhook { url, .. } => format!("webhook {}", origin(url)),
        Action::Command { argv, .. } => {
            format!("command {}", argv.first().map_or("", String::as_str))
        }
    }
}

/// `waiting` now stands for `later` too: the latest count and wording, its own id.
fn absorb(waiting: &mut Pending, later: Job) {
    let firings = waiting.job.firing.firings + later.firing.firings;
    let id = waiting.job.firing.id;
    waiting.job.firing = later.firing;
    waiting.job.firing.firings = firings;
    waiting.job.firing.id = id;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(watcher: &str, url: &str) -> Job {
        let action = Action::Webhook {
            url: url.to_string(),
            headers: Default::default(),
        };
        Job::example(watcher, action)
    }

    fn limits(capacity: usize, max_in_flight: usize) -> Limits {
        Limits {
            capacity,
            max_in_flight,
            retry_max: Duration::from_secs(300),
            max_age: Duration::from_secs(3600),
        }
    }

    fn queues() -> Queues {
        Queues::new(limits(100, 2))
    }

    fn watchers(taken: &[(String, Pending)]) -> Vec<String> {
        taken
            .iter()
            .map(|(_, p)| p.job.firing.watcher.clone())
            .collect()
    }

    #[test]
    fn a_busy_target_holds_only_its_own_slots() {
        let now = Instant::now();
        let mut queues = queues();
        for n in 0..3 {
            queues.submit(job(&format!("slow{n}"), "http://slow:1/a"), now);
        }
        queues.submit(job("ok", "http://ok:2/b"), now);
        let mut taken = watchers(&queues.take_due(now, 100));
        taken.sort();
        assert_eq!(taken, ["ok", "slow0", "slow1"], "two slots per target");
        assert!(queues.take_due(now, 100).is_empty(), "both targets busy");
    }

    #[test]
    fn a_failing_alert_retries_on_its_own_timer_while_its_target_delivers_the_others() {
        let now = Instant::now();
        let mut queues = queues();
        queues.submit(job("failing", "http://t/500"), now);
        let (target, failing) = queues.take_due(now, 100).pop().unwrap();
        assert!(
            queues
                .finished(&target, failing, Attempt::Transient("500".into()), now)
                .is_none()
        );
        queues.submit(job("healthy", "http://t/200"), now);
        assert_eq!(watchers(&queues.take_due(now, 100)), ["healthy"]);
        let retry = now + FIRST_RETRY;
        assert_eq!(queues.next_due_at(), Some(retry));
        assert_eq!(watchers(&queues.take_due(retry, 100)), ["failing"]);
    }

    #[test]
    fn an_alert_is_delivered_in_order_and_a_retry_absorbs_what_came_meanwhile() {
        let now = Instant::now();
        let mut queues = queues();
        let first = job("w", "http://t/");
        let first_id = first.firing.id;
        queues.submit(first, now);
        let (target, in_flight) = queues.take_due(now, 100).pop().unwrap();
        let mut later = job("w", "http://t/");
        later.firing.count = 9;
        queues.submit(later, now);
        assert!(
            queues.take_due(now, 100).is_empty(),
            "not past its alert's delivery"
        );
        queues.finished(
            &target,
            in_flight,
            Attempt::Transient("refused".into()),
            now,
        );
        assert_eq!(queues.len(), 1, "one firing waits for the alert");
        let retry = now + FIRST_RETRY;
        let (_, pending) = queues.take_due(retry, 100).pop().unwrap();
        assert_eq!(pending.job.firing.firings, 2);
        assert_eq!(pending.job.firing.count, 9, "the latest count");
        assert_eq!(pending.job.firing.id, first_id, "the first id");
        assert_eq!((pending.ids.len(), pending.attempts), (2, 1));
    }

    #[test]
    fn a_waiting_firing_absorbs_the_next_of_its_alert() {
        let now = Instant::now();
        let mut queues = queues();
        queues.submit(job("w", "http://t/"), now);
        queues.submit(job("w", "http://t/"), now);
        queues.submit(job("other", "http://t/"), now);
        assert_eq!(queues.len(), 2);
        let taken = queues.take_due(now, 100);
        assert_eq!(watchers(&taken), ["w", "other"], "oldest first");
        assert_eq!(taken[0].1.ids.len(), 2);
    }

    #[test]
    fn transient_failures_back_off_exponentially_up_to_the_cap_then_give_up() {
        let start = Instant::now();
        let mut queues = Queues::new(Limits {
            retry_max: Duration::from_secs(4),
            max_age: Duration::from_secs(60),
            ..limits(10, 1)
        });
        queues.submit(job("w", "http://dead/"), start);
        let mut now = start;
        let mut waits = Vec::new();
        loop {
            let (target, pending) = queues.take_due(now, 100).pop().expect("due");
            match queues.finished(&target, pending, Attempt::Transient("refused".into()), now) {
                Some(Settled::Dropped(p, reason, _)) => {
                    assert_eq!(reason, DropReason::TooOld);
                    assert!(p.attempts > 5);
                    break;
                }
                Some(other) => panic!("{other:?}"),
                None => {}
            }
            let due = queues.next_due_at().unwrap();
            assert!(queues.take_due(now, 100).is_empty(), "not before its time");
            waits.push(due.duration_since(now).as_secs());
            now = due;
        }
        assert_eq!(&waits[..5], [1, 2, 4, 4, 4]);
    }

    #[test]
    fn a_full_queue_drops_the_oldest_firing() {
        let now = Instant::now();
        let mut queues = Queues::new(limits(2, 1));
        queues.submit(job("a", "http://t/"), now);
        queues.submit(job("b", "http://u/"), now + Duration::from_secs(1));
        let dropped = queues.submit(job("c", "http://v/"), now + Duration::from_secs(2));
        match dropped {
            Some(Settled::Dropped(p, DropReason::QueueFull, _)) => {
                assert_eq!(p.job.firing.watcher, "a");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(queues.len(), 2);
    }

    #[test]
    fn forgotten_firings_leave_and_one_in_flight_is_neither_reported_nor_retried() {
        let now = Instant::now();
        let mut queues = queues();
        let (flying, waiting) = (job("gone", "http://t/a"), job("gone", "http://t/b"));
        let ids = HashSet::from([flying.firing.id, waiting.firing.id]);
        queues.submit(flying, now);
        let (target, in_flight) = queues.take_due(now, 1).pop().unwrap();
        queues.submit(waiting, now);
        queues.submit(job("kept", "http://t/c"), now);
        assert_eq!(queues.forget(&ids), 1);
        let settled = queues.finished(&target, in_flight, Attempt::Transient("x".into()), now);
        assert!(settled.is_none());
        assert_eq!(queues.len(), 1);
        assert_eq!(watchers(&queues.take_due(now, 100)), ["kept"]);
    }

    #[test]
    fn targets_are_origins() {
        let hook = |url: &str| Action::Webhook {
            url: url.into(),
            headers: Default::default(),
        };
        assert_eq!(
            target_of(&hook("https://a.io:8443/x?y")),
            "webhook https://a.io:8443"
        );
        assert_eq!(
            target_of(&hook("https://a.io/z")),
            target_of(&hook("https://a.io/w"))
        );
        assert_eq!(
            target_of(&hook("https://user:SECRET@a.io/T0/B0?token=x")),
            "webhook https://a.io"
        );
    }
}
