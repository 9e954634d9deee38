//! The action runner's pending firings, one queue per delivery target (watchers.md,
//! "Delivery"): a webhook URL's origin, the SMTP relay, a command. Alertmanager's shape:
//! a dead or slow target holds only its own queue and at most `IN_FLIGHT_PER_TARGET`
//! delivery threads; retries wait on their due time, not in a sleeping thread; a firing
//! of a (watcher, key) that is still waiting absorbs the next ones (`firings` counts the
//! crossings it stands for).
//!
//! Pure bookkeeping over the times it is given: no thread, no I/O, unit-tested alone.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::registry::Action;
use crate::registry::address::origin;
use crate::watch::Job;

/// Deliveries to one target at the same time.
pub const IN_FLIGHT_PER_TARGET: usize = 1;
/// The first retry waits this long; each next one twice as long, up to the configured cap.
const FIRST_RETRY: Duration = Duration::from_secs(1);

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
    Dropped(Pending, &'static str, String),
}

#[derive(Debug, Default)]
struct Target {
    waiting: VecDeque<Pending>,
    in_flight: usize,
}

pub struct Queues {
    targets: BTreeMap<String, Target>,
    /// Firings waiting, in all targets (`watchers.action_queue`).
    capacity: usize,
    retry_max: Duration,
    max_age: Duration,
}

impl Queues {
    pub fn new(capacity: usize, retry_max: Duration, max_age: Duration) -> Queues {
        Queues {
            targets: BTreeMap::new(),
            capacity: capacity.max(1),
            retry_max,
            max_age,
        }
    }

    /// Queues `job`, or lets a waiting firing of the same (watcher, key, target) absorb it.
    /// Returns what a full queue pushed out, if anything.
    pub fn submit(&mut self, job: Job, now: Instant) -> Option<Settled> {
        let target = target_of(&job.action);
        let queue = self.targets.entry(target).or_default();
        if let Some(waiting) = queue.waiting.iter_mut().find(|p| same_alert(&p.job, &job)) {
            absorb(waiting, job);
            return None;
        }
        queue.waiting.push_back(Pending {
            ids: vec![job.firing.id],
            job,
            attempts: 0,
            received_at: now,
            due_at: now,
        });
        (self.len() > self.capacity)
            .then(|| self.drop_oldest())
            .flatten()
    }

    /// A firing due now, from a target with a free delivery slot; the slot is taken.
    pub fn next_due(&mut self, now: Instant) -> Option<(String, Pending)> {
        let (target, queue) = self.targets.iter_mut().find(|(_, q)| {
            q.in_flight < IN_FLIGHT_PER_TARGET && q.waiting.front().is_some_and(|p| p.due_at <= now)
        })?;
        let pending = queue.waiting.pop_front()?;
        queue.in_flight += 1;
        Some((target.clone(), pending))
    }

    /// When the next firing falls due, among targets with a free slot.
    pub fn next_due_at(&self) -> Option<Instant> {
        self.targets
            .values()
            .filter(|q| q.in_flight < IN_FLIGHT_PER_TARGET)
            .filter_map(|q| q.waiting.front().map(|p| p.due_at))
            .min()
    }

    /// Frees the slot `pending` held and files the attempt: settled, or due again after
    /// a backoff (ahead of its target's queue: the order of alerts is kept).
    pub fn finished(
        &mut self,
        target: &str,
        mut pending: Pending,
        attempt: Attempt,
        now: Instant,
    ) -> Option<Settled> {
        let queue = self.targets.entry(target.to_string()).or_default();
        queue.in_flight = queue.in_flight.saturating_sub(1);
        pending.attempts += 1;
        match attempt {
            Attempt::Delivered => Some(Settled::Delivered(pending)),
            Attempt::Permanent(why) => Some(Settled::Failed(pending, why)),
            Attempt::Transient(why) if now.duration_since(pending.received_at) >= self.max_age => {
                let detail = format!("{why}; given up after {} attempts", pending.attempts);
                Some(Settled::Dropped(pending, "too_old", detail))
            }
            Attempt::Transient(_) => {
                let doublings = pending.attempts.saturating_sub(1).min(20);
                let backoff = FIRST_RETRY
                    .saturating_mul(1 << doublings)
                    .min(self.retry_max);
                pending.due_at = now + backoff;
                queue.waiting.push_front(pending);
                None
            }
        }
    }

    /// Everything still waiting (the runner stops: the master's journal keeps them).
    pub fn drain(&mut self) -> Vec<Pending> {
        self.targets
            .values_mut()
            .flat_map(|q| q.waiting.drain(..))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.targets.values().map(|q| q.waiting.len()).sum()
    }

    /// The oldest waiting firing of all, pushed out.
    fn drop_oldest(&mut self) -> Option<Settled> {
        let queue = self
            .targets
            .values_mut()
            .filter(|q| !q.waiting.is_empty())
            .min_by_key(|q| q.waiting.front().map(|p| p.received_at))?;
        let oldest = queue.waiting.pop_front()?;
        let detail = format!("the action queue is full ({} firings)", self.capacity);
        Some(Settled::Dropped(oldest, "queue_full", detail))
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

/// Two firings of one alert: same watcher, event, key and action.
fn same_alert(a: &Job, b: &Job) -> bool {
    a.firing.watcher == b.firing.watcher
        && a.firing.event == b.firing.event
        && a.firing.key == b.firing.key
        && a.action == b.action
}

/// `waiting` now stands for `later` too: the latest count and wording, its own id.
fn absorb(waiting: &mut Pending, later: Job) {
    waiting.ids.push(later.firing.id);
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

    fn queues() -> Queues {
        Queues::new(100, Duration::from_secs(300), Duration::from_secs(3600))
    }

    #[test]
    fn a_busy_target_does_not_hold_another() {
        let now = Instant::now();
        let mut queues = queues();
        for _ in 0..3 {
            queues.submit(job("slow", "http://slow:1/a"), now);
        }
        queues.submit(job("ok", "http://ok:2/b"), now);
        let (first, _) = queues.next_due(now).unwrap();
        let (second, _) = queues.next_due(now).unwrap();
        assert_ne!(first, second, "one slot per target");
        assert!(queues.next_due(now).is_none(), "both targets busy");
    }

    #[test]
    fn a_waiting_firing_absorbs_the_next_of_its_alert() {
        let now = Instant::now();
        let mut queues = queues();
        let first = job("w", "http://t/");
        let first_id = first.firing.id;
        queues.submit(first, now);
        let mut later = job("w", "http://t/");
        later.firing.count = 9;
        queues.submit(later, now);
        queues.submit(job("other", "http://t/"), now);
        assert_eq!(queues.len(), 2);
        let (_, pending) = queues.next_due(now).unwrap();
        assert_eq!(pending.job.firing.firings, 2);
        assert_eq!(pending.job.firing.count, 9, "the latest count");
        assert_eq!(pending.job.firing.id, first_id, "the first id");
        assert_eq!(pending.ids.len(), 2);
    }

    #[test]
    fn transient_failures_back_off_exponentially_up_to_the_cap_then_give_up() {
        let start = Instant::now();
        let mut queues = Queues::new(10, Duration::from_secs(4), Duration::from_secs(60));
        queues.submit(job("w", "http://dead/"), start);
        let mut now = start;
        let mut waits = Vec::new();
        loop {
            let (target, pending) = queues.next_due(now).expect("due");
            match queues.finished(&target, pending, Attempt::Transient("refused".into()), now) {
                Some(Settled::Dropped(p, reason, _)) => {
                    assert_eq!(reason, "too_old");
                    assert!(p.attempts > 5);
                    break;
                }
                Some(other) => panic!("{other:?}"),
                None => {}
            }
            let due = queues.next_due_at().unwrap();
            assert!(queues.next_due(now).is_none(), "not before its time");
            waits.push(due.duration_since(now).as_secs());
            now = due;
        }
        assert_eq!(&waits[..5], [1, 2, 4, 4, 4]);
    }

    #[test]
    fn a_full_queue_drops_the_oldest_firing() {
        let now = Instant::now();
        let mut queues = Queues::new(2, Duration::from_secs(1), Duration::from_secs(1));
        queues.submit(job("a", "http://t/"), now);
        queues.submit(job("b", "http://u/"), now + Duration::from_secs(1));
        let dropped = queues.submit(job("c", "http://v/"), now + Duration::from_secs(2));
        match dropped {
            Some(Settled::Dropped(p, "queue_full", _)) => assert_eq!(p.job.firing.watcher, "a"),
            other => panic!("{other:?}"),
        }
        assert_eq!(queues.len(), 2);
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
