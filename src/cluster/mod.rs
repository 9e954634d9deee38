//! The cluster link (cluster.md): the child that talks to Redis for the master, so that
//! nodes share the watchers' counters and the registry.
//!
//! The master starts no thread and never waits on the network, so Redis' client (the
//! `redis` crate, on a tokio runtime built after the fork) lives here, in a child the
//! master supervises like the action runner. The master sends counts (with the rules
//! each key is judged by) and registry writes; this child sums the counts per key and
//! sends them every `cluster.flush_ms` as one `eventsd_count` call per hash slot, each
//! under an id Redis records with the counts (`CountCall`), and answers with the
//! crossings of every call Redis answered, the counts it could not send (the master
//! then counts them locally, "degraded"), whether Redis is reachable, and every newer
//! version of the shared registry (pub/sub, and a version poll every second).
//!
//! A call sent without an answer (a timeout, a connection lost) is in doubt: Redis may
//! have counted it. It is sent again with its id until Redis answers, and never
//! reported as unsent; a stopping link hands the master those still in doubt, for the
//! next link. It never decides a firing: the Redis Function does, atomically per key,
//! and the master turns what it reports into firings.

mod grouping;
mod redis_link;

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::time::{Duration, Instant};

use anyhow::Context;
use log::{info, warn};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::OwnedWriteHalf;
use uuid::Uuid;

use crate::config::{Cluster, Config};
use crate::exposition::Histogram;
use crate::oncall::silence::Silence;
use crate::protocol::cluster::{CountCall, FromCluster, Publication, ToCluster};
use crate::protocol::frame;
use crate::registry::Registry;
use crate::watch::{ClockWatcher, Crossing, Key, SharedCount, clock_watchers};
use redis_link::{Announcement, CALL_ID_TTL, NoReply, Redis, never_ran};
pub use redis_link::{
    CountReply, FUNCTIONS, KEYS_PER_TICK, TickReply, count_command, tick_answer, tick_command,
};

impl CountCall {
    pub fn new(counts: Vec<SharedCount>) -> CountCall {
        CountCall {
            id: Uuid::new_v4(),
            counts,
            sent_at: None,
        }
    }

    fn events(&self) -> u64 {
        self.counts.iter().map(|count| count.events).sum()
    }

    /// Redis' replies, one per counter: its crossings (1 fired, 2 resolved), and the
    /// counters Redis failed on (`eventsd_calls.lua`'s `FAILED`): those counted nothing
    /// (or not all of their rule's state), and sent again they would fail again.
    pub fn answered(&self, replies: Vec<CountReply>) -> Answer {
        let mut answer = Answer::default();
        for (count, (crossed, total, sequence, epoch, previous)) in self.counts.iter().zip(replies)
        {
            if let Some(error) = epoch.strip_prefix(FAILED) {
                answer.failures.push(format!(
                    "key `{}` of watcher {}: {error}; its {} events uncounted",
                    count.key.as_str(),
                    count.watcher,
                    count.events
                ));
            } else if crossed > 0 {
                answer.crossings.push(Crossing {
                    watcher: count.watcher,
                    key: count.key.clone(),
                    count: total,
                    epoch,
                    sequence,
                    resolved: crossed == 2,
                    previous,
                });
            }
        }
        answer
    }
}

/// What Redis answered a count call.
#[derive(Default)]
pub struct Answer {
    pub crossings: Vec<Crossing>,
    /// The keys Redis failed on, each said with its watcher, error and what became of it.
    pub failures: Vec<String>,
}

impl Answer {
    fn add(&mut self, other: Answer) {
        self.crossings.extend(other.crossings);
        self.failures.extend(other.failures);
    }
}

/// Keys Redis failed on, logged at most once every `FAILURES_LOGGED_EVERY`: a key of
/// another type fails with every flush its events come in (up to 100 a second), and
/// with a tick every minute while it is due.
#[derive(Default)]
struct Failures {
    unlogged: usize,
    last: Option<String>,
    logged_at: Option<Instant>,
}

const FAILURES_LOGGED_EVERY: Duration = Duration::from_secs(10);

impl Failures {
    fn note(&mut self, failures: Vec<String>) {
        self.unlogged += failures.len();
        if let Some(last) = failures.into_iter().last() {
            self.last = Some(last);
            self.log_due();
        }
    }

    /// Logs what is unlogged, unless a line went out less than `FAILURES_LOGGED_EVERY`
    /// ago: also called every second, so that the last failures are said too.
    fn log_due(&mut self) {
        if self
            .logged_at
            .is_some_and(|at| at.elapsed() < FAILURES_LOGGED_EVERY)
        {
            return;
        }
        let Some(last) = self.last.take() else {
            return;
        };
        warn!(
            "Redis failed on keys: {} since the last such line (the other keys of their \
             calls went on); the last: {last}",
            self.unlogged
        );
        self.unlogged = 0;
        self.logged_at = Some(Instant::now());
    }
}

/// How a reply says a counter failed (`eventsd_calls.lua`'s `FAILED`), in its epoch.
const FAILED: &str = "failed: ";

/// Latency bounds of Redis calls: a healthy one takes under a millisecond on a LAN.
pub const CALL_BOUNDS: [f64; 9] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5];

/// The link's whole life, in the forked child.
pub fn serve(config: &Config, channel: StdUnixStream) -> anyhow::Result<()> {
    crate::privileges::drop_to(&config.workers.privileges, false)?;
    let cluster = config
        .cluster
        .clone()
        .context("the cluster link needs a [cluster] section")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot build the cluster link's runtime")?;
    runtime.block_on(run(cluster, channel))
}

async fn run(cluster: Cluster, channel: StdUnixStream) -> anyhow::Result<()> {
    channel.set_nonblocking(true)?;
    let (mut reader, writer) = tokio::net::UnixStream::from_std(channel)?.into_split();
    let mut link = Link {
        redis: Redis::new(&cluster),
        master: writer,
        pending: HashMap::new(),
        in_doubt: Vec::new(),
        reachable: None,
        known_version: None,
        silences_version: None,
        unshared_silences: Vec::new(),
        retry_at: Instant::now(),
        backoff: MIN_BACKOFF,
        latency: Histogram::default(),
        errors: 0,
        failures: Failures::default(),
        clock: Vec::new(),
        clock_turns: 0,
    };
    info!(
        "cluster link ready: node {}, {} mode, {}",
        cluster.node_name,
        cluster.mode.name(),
        cluster.urls.join(", ")
    );
    let mut flush = tokio::time::interval(Duration::from_millis(cluster.flush_ms));
    let mut second = tokio::time::interval(Duration::from_secs(1));
    let mut inbound = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        tokio::select! {
            read = reader.read(&mut chunk) => {
                let n = read.context("cannot read from the master")?;
                if n == 0 {
                    break;
                }
                inbound.extend_from_slice(&chunk[..n]);
                // The master's count stream: many small frames a read, cut off at once.
                for message in frame::take_frames::<ToCluster>(&mut inbound)? {
                    if !link.obey(message).await? {
                        return link.finish().await;
                    }
                }
            }
            _ = flush.tick() => link.flush().await?,
            _ = second.tick() => link.every_second().await?,
            announced = link.redis.next_announcement() => match announced {
                Announcement::Registry => link.poll_registry().await?,
                Announcement::Silences => link.poll_silences().await?,
                Announcement::Ended => {}
            },
        }
    }
    Ok(())
}

const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Times a stopping link sends its calls in doubt before it hands them to the master.
const FINAL_ATTEMPTS: u32 = 3;

/// How long a turn of the link asks again for keys still due, beyond one
/// `eventsd_tick` call per watcher: each judges `KEYS_PER_TICK` keys in Redis' one
/// thread, so a node takes at most about a tenth of Redis' time for them (several nodes
/// with a million keys due leave it most of its time for counts), and a turn stays short
/// enough for the registry, silences and counts it also carries.
const MORE_TICKS_FOR: Duration = Duration::from_millis(100);

struct Link {
    redis: Redis,
    master: OwnedWriteHalf,
    /// Counts gathered since the last flush, summed per (watcher, key).
    pending: HashMap<(Uuid, Key), SharedCount>,
    /// Calls sent without an answer: sent again, with their ids, until Redis answers.
    in_doubt: Vec<CountCall>,
    /// What was last reported to the master.
    reachable: Option<bool>,
    /// The registry version last reported (or written).
    known_version: Option<u64>,
    /// The shared silences' version last reported.
    silences_version: Option<u64>,
    /// Silences Redis has not taken yet: written again every second.
    unshared_silences: Vec<Silence>,
    /// While Redis is unreachable: when to try again, and the next wait.
    retry_at: Instant,
    backoff: Duration,
    latency: Histogram,
    errors: u64,
    failures: Failures,
    /// The watchers decided on the clock, read from the shared registry, each with
    /// whether Redis watches its kept keys yet (told again after a failure: Redis may
    /// have restarted empty).
    clock: Vec<(ClockWatcher, bool)>,
    /// The turns judged on the clock: each starts at the next watcher, so that the
    /// time to ask again goes to each watcher's backlog in turn.
    clock_turns: usize,
}

impl Link {
    /// Handles one message; `false` on `Stop`.
    async fn obey(&mut self, message: ToCluster) -> anyhow::Result<bool> {
        match message {
            ToCluster::Count(counts) => {
                for count in counts {
                    match self.pending.entry((count.watcher, count.key.clone())) {
                        Entry::Occupied(mut pending) => pending.get_mut().add(count),
                        Entry::Vacant(pending) => {
                            pending.insert(count);
                        }
                    }
                }
            }
            ToCluster::Publish {
                expected,
                version,
                document,
            } => {
                let started = Instant::now();
                let outcome = self.redis.publish(expected, version, &document).await;
                let publication = match self.judge(started, outcome) {
                    Ok(Publication::Written(version)) => {
                        self.known_version = Some(version);
                        self.follow_clock_watchers(&document);
                        Publication::Written(version)
                    }
                    Ok(other) => other,
                    Err(e) if e.is::<NoReply>() => Publication::InDoubt(format!("{e:#}")),
                    Err(e) => Publication::Failed(format!("{e:#}")),
                };
                self.tell(&FromCluster::Published(publication)).await?;
            }
            ToCluster::Seed { version, document } => {
                let started = Instant::now();
                let outcome = self.redis.seed(version, &document).await;
                if let Ok(true) = self.judge(started, outcome) {
                    info!("the shared registry was empty: seeded it with version {version}");
                    self.known_version = Some(version);
                    self.follow_clock_watchers(&document);
                }
            }
            ToCluster::Resend(calls) => self.in_doubt.extend(calls),
            ToCluster::ShareSilences(silences) => {
                self.unshared_silences.extend(silences);
                self.share_silences().await;
            }
            ToCluster::ForgetSilences(ids) => {
                let started = Instant::now();
                let outcome = self.redis.forget_silences(&ids).await;
                let _ = self.judge(started, outcome);
            }
            ToCluster::Stop => return Ok(false),
        }
        Ok(true)
    }

    /// Sends what was gathered, one call per hash slot, with the calls still in doubt.
    /// Counts never sent (Redis unreachable) go back to the master, which counts them
    /// locally, and so do those of a first call that never ran (not sent after another
    /// failed, or refused by a full Redis); a call sent without an answer stays in
    /// doubt, to be sent again with its id, and is never counted locally: Redis may have
    /// counted it. The crossings of the calls
    /// that were answered are reported whatever became of the others.
    async fn flush(&mut self) -> anyhow::Result<()> {
        if self.pending.is_empty() && self.in_doubt.is_empty() {
            return Ok(());
        }
        let counts: Vec<SharedCount> = self.pending.drain().map(|(_, count)| count).collect();
        if !self.may_call().await {
            if counts.is_empty() {
                return Ok(());
            }
            return self.tell(&FromCluster::Unreached(counts)).await;
        }
        let mut calls = std::mem::take(&mut self.in_doubt);
        calls.extend(self.redis.count_calls(counts));
        let started = Instant::now();
        let outcomes = self.redis.count(&calls).await;
        let mut answered = Answer::default();
        let mut refused = Vec::new();
        let mut failure = None;
        for (mut call, outcome) in calls.into_iter().zip(outcomes) {
            match outcome {
                Ok(answer) => answered.add(answer),
                Err(e) => {
                    if call.sent_at.is_none() && never_ran(&e) {
                        refused.append(&mut call.counts);
                    } else {
                        call.sent_at.get_or_insert_with(crate::watch::now);
                        self.in_doubt.push(call);
                    }
                    failure.get_or_insert(e);
                }
            }
        }
        let _ = self.judge(started, failure.map_or(Ok(()), Err));
        self.give_up_stale_doubts();
        if !refused.is_empty() {
            self.tell(&FromCluster::Unreached(refused)).await?;
        }
        self.report(answered).await
    }

    /// Whether a call may go out now: not during a backoff, and only over a connection
    /// (made again after a failure).
    async fn may_call(&mut self) -> bool {
        if self.reachable == Some(false) && Instant::now() < self.retry_at {
            return false;
        }
        if self.redis.is_connected() {
            return true;
        }
        let started = Instant::now();
        let outcome = self.redis.connect().await;
        self.judge(started, outcome).is_ok()
    }

    /// A call in doubt for half the time Redis remembers its id is not sent again: a
    /// later copy could be counted twice. Its events are logged, never counted locally.
    fn give_up_stale_doubts(&mut self) {
        let horizon = CALL_ID_TTL.as_secs() / 2;
        let now = crate::watch::now();
        let (stale, kept): (Vec<CountCall>, Vec<CountCall>) = std::mem::take(&mut self.in_doubt)
            .into_iter()
            .partition(|call| call.sent_at.is_some_and(|at| now > at + horizon));
        self.in_doubt = kept;
        let events: u64 = stale.iter().map(CountCall::events).sum();
        if events > 0 {
            warn!(
                "{events} events in {} calls Redis never answered in {horizon}s: whether it \
                 counted them is unknown, so they are not sent again, nor counted locally",
                stale.len()
            );
        }
    }

    /// The last flush, on `Stop` (sent once every worker is gone): tried even during a
    /// backoff, the calls in doubt sent again a few times. What Redis is known not to
    /// have goes back to the master (`Unreached`), which saves it for the next start,
    /// and so do the calls still in doubt (`InDoubt`), sent again by the next link.
    async fn finish(&mut self) -> anyhow::Result<()> {
        for _ in 0..FINAL_ATTEMPTS {
            self.retry_at = Instant::now();
            self.flush().await?;
            if self.in_doubt.is_empty() {
                return Ok(());
            }
        }
        let in_doubt = std::mem::take(&mut self.in_doubt);
        self.tell(&FromCluster::InDoubt(in_doubt)).await
    }

    async fn every_second(&mut self) -> anyhow::Result<()> {
        self.failures.log_due();
        if self.reachable != Some(true) && Instant::now() >= self.retry_at {
            let started = Instant::now();
            let outcome = self.redis.connect().await;
            if self.judge(started, outcome).is_ok() {
                // Settled before the master hears that Redis is back.
                self.flush().await?;
            }
        }
        if self.reachable == Some(true) {
            self.poll_registry().await?;
            self.judge_on_the_clock().await?;
            self.share_silences().await;
            self.poll_silences().await?;
        }
        let latency = std::mem::take(&mut self.latency);
        let errors = std::mem::take(&mut self.errors);
        if latency != Histogram::default() || errors > 0 {
            self.tell(&FromCluster::Calls { latency, errors }).await?;
        }
        let reachable = self.reachable == Some(true);
        self.tell(&FromCluster::Reachable(reachable)).await
    }

    /// Asks Redis for the firings of the keys due of every watcher decided on the clock
    /// (rules.md, "In a cluster"): each key due is handed to one node only. A watcher
    /// with more keys due than a call judges is asked again while Redis holds keys due
    /// for it, for `MORE_TICKS_FOR` a turn: at one call a second, a million flatline
    /// keys due at once took 1,000 s to judge on one node.
    async fn judge_on_the_clock(&mut self) -> anyhow::Result<()> {
        let turn = Instant::now();
        let watchers = self.clock.len();
        let first = self.clock_turns % watchers.max(1);
        self.clock_turns = self.clock_turns.wrapping_add(1);
        // Redis' clock, asked once a turn, when a watcher may have keys left.
        let mut redis_now = None;
        let mut answered = Answer::default();
        'watchers: for index in (first..watchers).chain(0..first) {
            loop {
                let (watcher, seeded) = &self.clock[index];
                let started = Instant::now();
                let outcome = self.redis.tick(watcher, !seeded).await;
                let Ok(answer) = self.judge(started, outcome) else {
                    break 'watchers;
                };
                self.clock[index].1 = true;
                answered.add(answer);
                if turn.elapsed() >= MORE_TICKS_FOR {
                    break;
                }
                if redis_now.is_none() {
                    redis_now = self.redis.now().await.ok();
                }
                let watcher = self.clock[index].0.id;
                let Some(now) = redis_now else { break };
                if !self.redis.keys_due(watcher, now).await {
                    break;
                }
            }
        }
        self.report(answered).await
    }

    /// What Redis answered: the keys it failed on counted as errors and logged, the
    /// crossings told to the master.
    async fn report(&mut self, answer: Answer) -> anyhow::Result<()> {
        self.errors += answer.failures.len() as u64;
        self.failures.note(answer.failures);
        if answer.crossings.is_empty() {
            return Ok(());
        }
        self.tell(&FromCluster::Crossed(answer.crossings)).await
    }

    /// The watchers decided on the clock of a registry `document`; those already
    /// followed keep whether Redis watches their kept keys.
    fn follow_clock_watchers(&mut self, document: &str) {
        let registry: Registry = match serde_json::from_str(document) {
            Ok(registry) => registry,
            Err(e) => {
                warn!("the shared registry does not parse ({e}); clock rules unchanged");
                return;
            }
        };
        let previous = std::mem::take(&mut self.clock);
        self.clock = clock_watchers(&registry)
            .into_iter()
            .map(|watcher| {
                let seeded = previous
                    .iter()
                    .any(|(known, seeded)| known.id == watcher.id && *seeded);
                (watcher, seeded)
            })
            .collect();
    }

    /// The shared registry, reported when its version differs from the last one seen
    /// (a restarted, empty Redis included).
    async fn poll_registry(&mut self) -> anyhow::Result<()> {
        let started = Instant::now();
        let outcome = self.redis.registry().await;
        let Ok(shared) = self.judge(started, outcome) else {
            return Ok(());
        };
        let version = shared.as_ref().map_or(0, |(version, _)| *version);
        if self.known_version == Some(version) && version != 0 {
            return Ok(());
        }
        self.known_version = Some(version);
        if let Some((_, document)) = &shared {
            self.follow_clock_watchers(document);
        }
        self.tell(&FromCluster::Registry(shared)).await
    }

    /// Writes the silences Redis has not taken yet; they wait for the next second if it
    /// does not answer.
    async fn share_silences(&mut self) {
        if self.unshared_silences.is_empty() || !self.may_call().await {
            return;
        }
        let started = Instant::now();
        let outcome = self.redis.put_silences(&self.unshared_silences).await;
        if self.judge(started, outcome).is_ok() {
            self.unshared_silences.clear();
        }
    }

    /// The shared silences, reported when their version differs from the last seen.
    async fn poll_silences(&mut self) -> anyhow::Result<()> {
        let started = Instant::now();
        let outcome = self.redis.silences_version().await;
        let Ok(version) = self.judge(started, outcome) else {
            return Ok(());
        };
        if self.silences_version == Some(version) {
            return Ok(());
        }
        let started = Instant::now();
        let outcome = self.redis.silences().await;
        let Ok(silences) = self.judge(started, outcome) else {
            return Ok(());
        };
        self.silences_version = Some(version);
        self.tell(&FromCluster::Silences(silences)).await
    }

    /// Records a call's latency and outcome; a failure starts the backoff.
    fn judge<T>(&mut self, started: Instant, outcome: anyhow::Result<T>) -> anyhow::Result<T> {
        self.latency
            .observe(&CALL_BOUNDS, started.elapsed().as_secs_f64());
        match &outcome {
            Ok(_) => {
                self.backoff = MIN_BACKOFF;
                self.retry_at = Instant::now();
                if self.reachable != Some(true) {
                    info!("Redis reachable: counting shared");
                }
                self.reachable = Some(true);
            }
            Err(e) => {
                self.errors += 1;
                for (_, seeded) in &mut self.clock {
                    *seeded = false;
                }
                self.redis.disconnect();
                if self.reachable != Some(false) {
                    warn!("Redis unreachable ({e:#}): counting locally until it answers");
                }
                self.reachable = Some(false);
                self.retry_at = Instant::now() + self.backoff;
                self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
            }
        }
        outcome
    }

    async fn tell(&mut self, message: &FromCluster) -> anyhow::Result<()> {
        let frame = frame::encode(message)?;
        self.master
            .write_all(&frame)
            .await
            .context("cannot write to the master")
    }
}
