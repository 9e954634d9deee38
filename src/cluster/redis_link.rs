//! Redis, as the cluster link sees it: one connection (a server, or Redis Cluster through
//! the `redis` crate's cluster client), the Functions loaded on every primary, the calls
//! that count and that read and write the shared registry, and the pub/sub channel that
//! announces new registry versions.
//!
//! Every call is bounded by `cluster.timeout_ms`; after a failed one the link drops the
//! connection (`disconnect`), and the next call connects again. A call sent without an
//! answer fails with `NoReply`: Redis may have run it.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::StreamExt;
use redis::aio::{MultiplexedConnection, PubSubStream};
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, Client, Cmd, FromRedisValue, cmd};
use serde::Serialize;
use uuid::Uuid;

use super::grouping::{by_hashes, slot};
use super::{Answer, CountCall};
use crate::config::{Cluster, ClusterMode};
use crate::oncall::silence::Silence;
use crate::watch::rule::RuleParams;
use crate::watch::store::Second;
use crate::watch::{ClockWatcher, Crossing, Key, SharedCount};

/// The Functions (`FUNCTION LOAD REPLACE`: the running version's, after an upgrade too).
pub const FUNCTIONS: &str = concat!(
    include_str!("eventsd.lua"),
    include_str!("eventsd_rules.lua"),
    include_str!("eventsd_calls.lua")
);

/// Keys per `eventsd_count` call on one server: bounds the time Redis spends in one call.
const KEYS_PER_CALL: usize = 512;

/// `eventsd_count` calls sent at once: Redis runs them one after the other, and each
/// one's timeout runs from its sending, so the last of a burst waits for all the others.
/// A `_bulk` of 20,000 new flatline keys, 40 calls sent together, timed out its last
/// ones (the node counted them alone, degraded, and they never fired).
const CALLS_AT_ONCE: usize = 4;

/// `eventsd_count`'s reply per counter: {crossed (1 fired, 2 resolved), count,
/// sequence, epoch, the previous window's count (spike)}.
pub type CountReply = (u64, u64, u64, String, u64);

/// Attempts of a call to a Redis Cluster that is redirected (MOVED, ASK) or asked to
/// try again (TRYAGAIN) during a reshard or a failover.
const REDIRECTS_FOLLOWED: u32 = 5;

/// How long Redis remembers a count call's id (and its replies): a call sent again
/// within it adds nothing twice. The link stops sending a call again well before.
pub(super) const CALL_ID_TTL: Duration = Duration::from_secs(600);

/// What a message on a subscribed channel announces.
pub(super) enum Announcement {
    Registry,
    Silences,
    /// The subscription ended: made again at the next connection.
    Ended,
}

enum Connection {
    Server(MultiplexedConnection),
    Cluster(ClusterConnection),
}

/// A call sent without an answer (none in time, the connection lost, a reply that does
/// not read): Redis may have run it.
#[derive(Debug)]
pub(super) struct NoReply(String);

impl std::fmt::Display for NoReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NoReply {}

/// A call not sent: one before it in the same flush failed (`Redis::count`).
#[derive(Debug)]
struct NotSent;

impl std::fmt::Display for NotSent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("not sent: a call before it failed")
    }
}

impl std::error::Error for NotSent {}

/// Whether a failed call may still have run: anything but an error Redis answered, or a
/// connection it refused, leaves it in doubt.
fn in_doubt(error: &redis::RedisError) -> bool {
    use redis::ErrorKind;
    matches!(
        error.kind(),
        ErrorKind::Io | ErrorKind::Parse | ErrorKind::UnexpectedReturnType
    ) && !error.is_connection_refusal()
}

/// Whether a call never ran: not sent (`NotSent`), or refused by Redis before running
/// any of it, out of memory (`maxmemory` with `noeviction`), which Redis checks before a
/// Function that writes starts. Such a call counted nothing, unlike one `in_doubt` or
/// one that failed while it ran.
pub(super) fn never_ran(error: &anyhow::Error) -> bool {
    error.is::<NotSent>()
        || (error.downcast_ref::<redis::RedisError>()).is_some_and(|e| e.code() == Some("OOM"))
}

pub(super) struct Redis {
    mode: ClusterMode,
    urls: Vec<String>,
    timeout: Duration,
    prefix: String,
    connection: Option<Connection>,
    announcements: Option<PubSubStream>,
}

impl Redis {
    pub(super) fn new(cluster: &Cluster) -> Redis {
        Redis {
            mode: cluster.mode,
            urls: cluster.urls.clone(),
            timeout: Duration::from_millis(cluster.timeout_ms),
            prefix: cluster.key_prefix.clone(),
            connection: None,
            announcements: None,
        }
    }

    fn registry_key(&self) -> String {
        format!("{}:registry", self.prefix)
    }

    /// The shared silences: one hash (`s:ID` the silence, `e:ID` its end, `version`),
    /// announced on a channel of the same name.
    fn silences_key(&self) -> String {
        format!("{}:silences", self.prefix)
    }

    /// Whether a connection is up: a call sent now reaches Redis' socket.
    pub(super) fn is_connected(&self) -> bool {
        self.connection.is_some()
    }

    /// Connects, loads the Functions and subscribes to registry announcements.
    pub(super) async fn connect(&mut self) -> anyhow::Result<()> {
        if self.connection.is_some() {
            return self.call::<String>(&cmd("PING")).await.map(|_| ());
        }
        let connection = tokio::time::timeout(self.timeout * 10, self.open())
            .await
            .context("timed out connecting")??;
        self.connection = Some(connection);
        let mut load = cmd("FUNCTION");
        load.arg("LOAD").arg("REPLACE").arg(FUNCTIONS);
        self.call::<redis::Value>(&load)
            .await
            .context("cannot load eventsd's Redis Functions")?;
        self.subscribe().await;
        Ok(())
    }

    async fn open(&self) -> anyhow::Result<Connection> {
        Ok(match self.mode {
            ClusterMode::Standalone => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(self.timeout * 10))
                    .set_response_timeout(Some(self.timeout));
                let client = Client::open(self.urls[0].as_str())?;
                Connection::Server(
                    client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await?,
                )
            }
            ClusterMode::Cluster => {
                // MOVED, ASK and TRYAGAIN (a reshard, a failover) are followed several
                // times within one call's timeout: the waits between attempts are
                // fractions of it, not the client's default second and more.
                let timeout_ms = self.timeout.as_millis() as u64;
                let client = redis::cluster::ClusterClientBuilder::new(self.urls.clone())
                    .connection_timeout(self.timeout * 10)
                    .response_timeout(self.timeout)
                    .retries(REDIRECTS_FOLLOWED)
                    .min_retry_wait((timeout_ms / 10).max(1))
                    .max_retry_wait((timeout_ms / 4).max(2))
                    .build()?;
                Connection::Cluster(client.get_async_connection().await?)
            }
        })
    }

    /// Registry announcements are a hint (the version poll is the safety net): a
    /// subscription that fails is logged and tried again at the next connection.
    async fn subscribe(&mut self) {
        let channel = self.registry_key();
        let channels = [channel.clone(), self.silences_key()];
        let subscribed = async {
            let mut pubsub = Client::open(self.urls[0].as_str())?
                .get_async_pubsub()
                .await?;
            pubsub.subscribe(&channels).await?;
            anyhow::Ok(pubsub.into_on_message())
        };
        match tokio::time::timeout(self.timeout * 10, subscribed).await {
            Ok(Ok(stream)) => self.announcements = Some(stream),
            Ok(Err(e)) => log::warn!("cannot subscribe to {channel}: {e:#}"),
            Err(_) => log::warn!("cannot subscribe to {channel}: timed out"),
        }
    }

    /// Resolves on the next announcement of a registry or silences change, or when the
    /// subscription ends; never while there is none.
    pub(super) async fn next_announcement(&mut self) -> Announcement {
        let silences = self.silences_key();
        let Some(stream) = self.announcements.as_mut() else {
            return std::future::pending().await;
        };
        match stream.next().await {
            Some(message) if message.get_channel_name() == silences => Announcement::Silences,
            Some(_) => Announcement::Registry,
            None => {
                self.announcements = None;
                Announcement::Ended
            }
        }
    }

    /// Writes silences made or expired on this node (of two copies, Redis keeps the
    /// one that ends first).
    pub(super) async fn put_silences(&mut self, silences: &[Silence]) -> anyhow::Result<()> {
        let mut put = cmd("FCALL");
        let key = self.silences_key();
        put.arg("eventsd_silences_put").arg(1).arg(&key).arg(&key);
        for silence in silences {
            let document = serde_json::to_string(silence).context("cannot encode a silence")?;
            put.arg(silence.id.to_string())
                .arg(silence.ends_at)
                .arg(document);
        }
        self.ensure_connected().await?;
        self.call::<u64>(&put).await.map(|_| ())
    }

    /// Drops silences every node has forgotten.
    pub(super) async fn forget_silences(&mut self, ids: &[Uuid]) -> anyhow::Result<()> {
        let mut forget = cmd("FCALL");
        forget
            .arg("eventsd_silences_forget")
            .arg(1)
            .arg(self.silences_key());
        for id in ids {
            forget.arg(id.to_string());
        }
        self.ensure_connected().await?;
        self.call::<u64>(&forget).await.map(|_| ())
    }

    /// The shared silences' version (0: none yet).
    pub(super) async fn silences_version(&mut self) -> anyhow::Result<u64> {
        let mut get = cmd("HGET");
        get.arg(self.silences_key()).arg("version");
        self.ensure_connected().await?;
        Ok(self.call::<Option<u64>>(&get).await?.unwrap_or(0))
    }

    /// Every shared silence; one that does not parse is logged and skipped (the master
    /// checks the rest as it checks a client's).
    pub(super) async fn silences(&mut self) -> anyhow::Result<Vec<Silence>> {
        let mut get = cmd("HGETALL");
        get.arg(self.silences_key());
        self.ensure_connected().await?;
        let fields: BTreeMap<String, String> = self.call(&get).await?;
        let documents = fields.iter().filter(|(field, _)| field.starts_with("s:"));
        Ok(documents
            .filter_map(|(field, document)| {
                serde_json::from_str(document)
                    .inspect_err(|e| log::warn!("shared silence {field} skipped: {e}"))
                    .ok()
            })
            .collect())
    }

    /// The counts grouped as `eventsd_count` calls: one per hash slot (per
    /// `KEYS_PER_CALL` keys on one server), each under a new id.
    pub(super) fn count_calls(&self, counts: Vec<SharedCount>) -> Vec<CountCall> {
        let mut groups: BTreeMap<u16, Vec<SharedCount>> = BTreeMap::new();
        for (index, count) in counts.into_iter().enumerate() {
            let group = match self.mode {
                ClusterMode::Standalone => (index / KEYS_PER_CALL) as u16,
                ClusterMode::Cluster => slot(counter_key(&self.prefix, &count).as_bytes()),
            };
            groups.entry(group).or_default().push(count);
        }
        (groups.into_values())
            .flat_map(by_hashes)
            .map(CountCall::new)
            .collect()
    }

    /// Sends the calls `CALLS_AT_ONCE` at a time; each one's crossings, or why it has no
    /// answer. After a wave that failed, the others are not sent (Redis is unreachable,
    /// or too slow to take more): `NotSent`, they counted nothing.
    pub(super) async fn count(&self, calls: &[CountCall]) -> Vec<anyhow::Result<Answer>> {
        let mut outcomes = Vec::with_capacity(calls.len());
        let mut waves = calls.chunks(CALLS_AT_ONCE);
        for wave in waves.by_ref() {
            let commands: Vec<Cmd> = wave
                .iter()
                .map(|call| count_command(&self.prefix, call, None))
                .collect();
            let replies = futures_util::future::join_all(
                commands
                    .iter()
                    .map(|command| self.call::<Vec<CountReply>>(command)),
            )
            .await;
            let failed = replies.iter().any(Result::is_err);
            let answers = wave.iter().zip(replies);
            outcomes.extend(answers.map(|(call, reply)| Ok(call.answered(reply?))));
            if failed {
                break;
            }
        }
        let unsent = waves.flatten();
        outcomes.extend(unsent.map(|_| Err(NotSent.into())));
        outcomes
    }

    /// The firings of `watcher`'s keys due now, judged by Redis for this node alone;
    /// with `seed`, its kept keys are watched from now on (a link's first tick of it).
    pub(super) async fn tick(&self, watcher: &ClockWatcher, seed: bool) -> anyhow::Result<Answer> {
        let kept = seed.then_some(watcher.kept.as_slice());
        let command = tick_command(&self.prefix, watcher.id, &watcher.rule, kept, None);
        let replies = self.call(&command).await?;
        Ok(tick_answer(watcher.id, replies))
    }

    /// Redis' clock, in seconds: what `eventsd_tick` judges by (node clocks do not
    /// matter, cluster.md).
    pub(super) async fn now(&self) -> anyhow::Result<Second> {
        let (seconds, _micros): (Second, u64) = self.call(&cmd("TIME")).await?;
        Ok(seconds)
    }

    /// Whether `watcher`'s due queue still holds keys due at `now` (Redis' clock). A
    /// failed question is a no: the next turn asks again.
    pub(super) async fn keys_due(&self, watcher: Uuid, now: Second) -> bool {
        let mut count = cmd("ZCOUNT");
        count
            .arg(due_key(&self.prefix, watcher))
            .arg("-inf")
            .arg(now);
        self.call::<u64>(&count).await.is_ok_and(|due| due > 0)
    }

    /// `FCALL function 1 KEY`: a registry Function on the registry's key; its
    /// arguments follow.
    fn registry_call(&self, function: &str) -> Cmd {
        let mut call = cmd("FCALL");
        call.arg(function).arg(1).arg(self.registry_key());
        call
    }

    /// The shared registry, if Redis holds one.
    pub(super) async fn registry(&mut self) -> anyhow::Result<Option<(u64, String)>> {
        let get = self.registry_call("eventsd_registry_get");
        self.ensure_connected().await?;
        let (version, document): (u64, String) = self.call(&get).await?;
        Ok((version > 0).then_some((version, document)))
    }

    /// Writes `document` as `version` if Redis still holds `expected`.
    pub(super) async fn publish(
        &mut self,
        expected: u64,
        version: u64,
        document: &str,
    ) -> anyhow::Result<super::Publication> {
        let mut set = self.registry_call("eventsd_registry_set");
        // The announcement goes out on a channel named as the key.
        set.arg(expected)
            .arg(version)
            .arg(document)
            .arg(self.registry_key());
        self.ensure_connected().await?;
        let (written, current, document): (u64, u64, String) = self.call(&set).await?;
        Ok(if written == 1 {
            super::Publication::Written(current)
        } else {
            super::Publication::Conflict(current, document)
        })
    }

    /// Writes this node's copy if Redis holds none or an older one; whether it did.
    pub(super) async fn seed(&mut self, version: u64, document: &str) -> anyhow::Result<bool> {
        let mut seed = self.registry_call("eventsd_registry_seed");
        seed.arg(version).arg(document).arg(self.registry_key());
        self.ensure_connected().await?;
        Ok(self.call::<u64>(&seed).await? == 1)
    }

    /// After a failed call: the next one connects again (and reloads the Functions, in
    /// case Redis restarted without them).
    pub(super) fn disconnect(&mut self) {
        self.connection = None;
        self.announcements = None;
    }

    async fn ensure_connected(&mut self) -> anyhow::Result<()> {
        if self.connection.is_none() {
            self.connect().await?;
        }
        Ok(())
    }

    /// One call, bounded by the timeout; a failure drops the connection.
    async fn call<T: FromRedisValue>(&self, call: &Cmd) -> anyhow::Result<T> {
        let reply = match &self.connection {
            None => bail!("not connected"),
            Some(Connection::Server(connection)) => {
                let mut connection = connection.clone();
                tokio::time::timeout(self.timeout, call.query_async(&mut connection)).await
            }
            Some(Connection::Cluster(connection)) => {
                let mut connection = connection.clone();
                tokio::time::timeout(self.timeout, call.query_async(&mut connection)).await
            }
        };
        match reply {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) if in_doubt(&e) => Err(NoReply(e.to_string()).into()),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => {
                Err(NoReply(format!("no reply within {} ms", self.timeout.as_millis())).into())
            }
        }
    }
}

/// One counter's key; the hash tag keeps the whole counter in one slot, and the keys of
/// a rule decided on the clock in their watcher's (with its queue: `eventsd.lua`'s
/// `flatline_names`), so that one call judges them.
fn counter_key(prefix: &str, count: &SharedCount) -> String {
    if count.rule.on_the_clock() {
        return format!("{prefix}:c:{{{}}}:{}", count.watcher, count.key.as_str());
    }
    format!("{prefix}:c:{{{}/{}}}", count.watcher, count.key.as_str())
}

/// An `eventsd_count` call as Redis reads it: one JSON argument (`eventsd_calls.lua`'s `count`).
#[derive(Serialize)]
struct CallDocument<'a> {
    /// The second the call counts at; absent, Redis' own clock (only the scenario table
    /// sets it).
    #[serde(skip_serializing_if = "Option::is_none")]
    now: Option<Second>,
    /// Random, so that a Redis restarted empty never numbers a crossing as an earlier
    /// one was.
    epoch: String,
    /// How long Redis keeps the call's id.
    ttl: u64,
    /// The counters' key prefix (`cluster.key_prefix`).
    prefix: &'a str,
    /// The rule of each watcher the call counts for, once, and the watcher.
    rules: Vec<&'a RuleParams>,
    watchers: Vec<Uuid>,
    /// [events, index in `rules`] per counter key, in the keys' order.
    counts: Vec<(u64, usize)>,
    /// cardinality: [index in `counts`, the values' hashes] of the counters that have
    /// them, each hash as 16 hex digits (JSON numbers would lose bits in Lua).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    values: Vec<(usize, Vec<String>)>,
}

/// `FCALL eventsd_count`: the counter keys, then the call's own key (in the slot of the
/// first counter, so a Redis Cluster takes them together), then the call as one JSON
/// argument, each watcher's rule in it once. `now` is Redis' own clock when `None`.
pub fn count_command(prefix: &str, call: &CountCall, now: Option<Second>) -> Cmd {
    let mut command = cmd("FCALL");
    command.arg("eventsd_count").arg(call.counts.len() + 1);
    for count in &call.counts {
        command.arg(counter_key(prefix, count));
    }
    let first = &call.counts[0];
    command.arg(format!(
        "{prefix}:f:{{{}/{}}}:{}",
        first.watcher,
        first.key.as_str(),
        call.id
    ));
    let mut rule_of: HashMap<Uuid, usize> = HashMap::new();
    let mut document = CallDocument {
        now,
        epoch: Uuid::new_v4().simple().to_string(),
        ttl: CALL_ID_TTL.as_secs(),
        prefix,
        rules: Vec::new(),
        watchers: Vec::new(),
        counts: Vec::with_capacity(call.counts.len()),
        values: Vec::new(),
    };
    for (at, count) in call.counts.iter().enumerate() {
        if !count.values.is_empty() {
            let hashes = count.values.iter().map(|h| format!("{h:016x}")).collect();
            document.values.push((at, hashes));
        }
        let index = *rule_of.entry(count.watcher).or_insert_with(|| {
            document.rules.push(&count.rule);
            document.watchers.push(count.watcher);
            document.rules.len() - 1
        });
        document.counts.push((count.events, index));
    }
    // A document of numbers and hex strings always serializes.
    command.arg(serde_json::to_string(&document).unwrap_or_default());
    command
}

/// Keys of one watcher judged on the clock by one `eventsd_tick` call, at most: bounds
/// the time Redis spends in it; the rest are judged by the next call
/// (`cluster::Link::judge_on_the_clock`).
pub const KEYS_PER_TICK: usize = 1_000;

/// The sorted set of `watcher`'s keys by the second they are due (`eventsd.lua`'s
/// `flatline_names`).
fn due_key(prefix: &str, watcher: Uuid) -> String {
    format!("{prefix}:due:{{{watcher}}}")
}

/// An `eventsd_tick` call as Redis reads it: one JSON argument (`eventsd_calls.lua`'s `tick`).
#[derive(Serialize)]
struct TickDocument<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    now: Option<Second>,
    prefix: &'a str,
    watcher: Uuid,
    params: &'a RuleParams,
    /// Keys to watch from now on, never forgotten (`single`'s, `expect`'s).
    #[serde(skip_serializing_if = "Option::is_none")]
    kept: Option<Vec<&'a str>>,
    limit: usize,
    /// Random: the epoch of the counters it creates.
    epoch: String,
}

/// `FCALL eventsd_tick`: judges the keys of `watcher` due at `now` (Redis' own clock when
/// `None`), each handed to one caller only; `kept` are watched from then on.
pub fn tick_command(
    prefix: &str,
    watcher: Uuid,
    params: &RuleParams,
    kept: Option<&[Key]>,
    now: Option<Second>,
) -> Cmd {
    let document = TickDocument {
        now,
        prefix,
        watcher,
        params,
        kept: kept.map(|keys| keys.iter().map(Key::as_str).collect()),
        limit: KEYS_PER_TICK,
        epoch: Uuid::new_v4().simple().to_string(),
    };
    let mut command = cmd("FCALL");
    command
        .arg("eventsd_tick")
        .arg(1)
        .arg(due_key(prefix, watcher))
        // A document of numbers and plain strings always serializes.
        .arg(serde_json::to_string(&document).unwrap_or_default());
    command
}

/// An entry of an `eventsd_tick` reply: {key, 1, count, sequence, epoch, previous} for a
/// key that fired, {key, "failed: ", 0, 0, error, 0} for a key Redis failed on (judged
/// again a minute later).
pub type TickReply = (String, redis::Value, u64, u64, String, u64);

/// The firings of an `eventsd_tick` reply, and the keys Redis failed on.
pub fn tick_answer(watcher: Uuid, replies: Vec<TickReply>) -> Answer {
    let mut answer = Answer::default();
    for (key, fired, count, sequence, epoch, previous) in replies {
        if fired == redis::Value::Int(1) {
            answer.crossings.push(Crossing {
                watcher,
                key: Key::from(key.as_str()),
                count,
                epoch,
                sequence,
                resolved: false,
                previous,
            });
        } else {
            answer.failures.push(format!(
                "key `{key}` of watcher {watcher}, due: {epoch}; judged again in a minute"
            ));
        }
    }
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A call not sent counted nothing (its counts go back to the master); one sent
    /// without an answer may have run (it stays in doubt).
    #[test]
    fn a_call_not_sent_never_ran_and_one_without_an_answer_may_have() {
        assert!(never_ran(&NotSent.into()));
        assert!(!never_ran(&NoReply("no reply within 100 ms".into()).into()));
    }
}
