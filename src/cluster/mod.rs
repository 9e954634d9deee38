//! The cluster link (cluster.md): the child that talks to Redis for the master, so that
//! nodes share the watchers' counters and the registry.
//!
//! The master starts no thread and never waits on the network, so Redis' client (the
//! `redis` crate, on a tokio runtime built after the fork) lives here, in a child the
//! master supervises like the action runner. The master sends counts (with the rules
//! each key is judged by) and registry writes; this child sums the counts per key and
//! sends them every `cluster.flush_ms` as one `eventsd_count` call per hash slot, and
//! answers with the crossings Redis saw, the counts it could not deliver (the master then
//! counts them locally, "degraded"), whether Redis is reachable, and every newer version
//! of the shared registry (pub/sub, and a version poll every second).
//!
//! It never decides a firing: the Redis Function does, atomically per key, and the master
//! turns what it reports into firings. It holds no state that a restart could not lose.

mod redis_link;

use std::collections::HashMap;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::time::{Duration, Instant};

use anyhow::Context;
use log::{info, warn};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::OwnedWriteHalf;
use uuid::Uuid;

use crate::config::{Cluster, Config};
use crate::ipc;
use crate::metrics::Histogram;
use crate::watch::{Crossing, Key, SharedCount};
use redis_link::Redis;

/// What the master tells the link.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ToCluster {
    Count(Vec<SharedCount>),
    /// Write the registry `document` as `version` over `expected`, or report the conflict.
    Publish {
        expected: u64,
        version: u64,
        document: String,
    },
    /// Write this node's copy into a Redis that has none, or an older one.
    Seed {
        version: u64,
        document: String,
    },
    Stop,
}

/// What the link tells the master.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FromCluster {
    /// Redis answered again (`true`) or a call failed (`false`); sent on every change.
    Reachable(bool),
    Crossed(Vec<Crossing>),
    /// Counts Redis did not take: the master counts them locally.
    Unreached(Vec<SharedCount>),
    /// The shared registry (version, document), newer than the last one reported; `None`
    /// when Redis holds none.
    Registry(Option<(u64, String)>),
    Published(Publication),
    /// Calls to Redis since the last report: their latency and how many failed.
    Calls {
        latency: Histogram,
        errors: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Publication {
    Written(u64),
    /// Another node wrote first: its version and document.
    Conflict(u64, String),
    Failed(String),
}

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
        reachable: None,
        known_version: None,
        retry_at: Instant::now(),
        backoff: MIN_BACKOFF,
        latency: Histogram::default(),
        errors: 0,
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
                while let Some(message) = ipc::take_frame::<ToCluster>(&mut inbound)? {
                    if !link.obey(message).await? {
                        return link.finish().await;
                    }
                }
            }
            _ = flush.tick() => link.flush().await?,
            _ = second.tick() => link.every_second().await?,
            announced = link.redis.next_announcement() => {
                if announced {
                    link.poll_registry().await?;
                }
            }
        }
    }
    Ok(())
}

const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

struct Link {
    redis: Redis,
    master: OwnedWriteHalf,
    /// Counts gathered since the last flush, summed per (watcher, key).
    pending: HashMap<(Uuid, Key), SharedCount>,
    /// What was last reported to the master.
    reachable: Option<bool>,
    /// The registry version last reported (or written).
    known_version: Option<u64>,
    /// While Redis is unreachable: when to try again, and the next wait.
    retry_at: Instant,
    backoff: Duration,
    latency: Histogram,
    errors: u64,
}

impl Link {
    /// Handles one message; `false` on `Stop`.
    async fn obey(&mut self, message: ToCluster) -> anyhow::Result<bool> {
        match message {
            ToCluster::Count(counts) => {
                for count in counts {
                    self.pending
                        .entry((count.watcher, count.key.clone()))
                        .and_modify(|pending| {
                            pending.events += count.events;
                            pending.rules = count.rules;
                        })
                        .or_insert(count);
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
                        Publication::Written(version)
                    }
                    Ok(other) => other,
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
                }
            }
            ToCluster::Stop => return Ok(false),
        }
        Ok(true)
    }

    /// Sends what was gathered: one call per hash slot. What Redis does not take goes
    /// back to the master, which counts it locally.
    async fn flush(&mut self) -> anyhow::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let counts: Vec<SharedCount> = self.pending.drain().map(|(_, count)| count).collect();
        if self.reachable == Some(false) && Instant::now() < self.retry_at {
            return self.tell(&FromCluster::Unreached(counts)).await;
        }
        let started = Instant::now();
        let outcome = self.redis.count(&counts).await;
        match self.judge(started, outcome) {
            Ok(crossings) if crossings.is_empty() => Ok(()),
            Ok(crossings) => self.tell(&FromCluster::Crossed(crossings)).await,
            Err(_) => self.tell(&FromCluster::Unreached(counts)).await,
        }
    }

    /// The last flush, on `Stop` (sent once every worker is gone): tried even during a
    /// backoff, since what Redis does not take now the master saves for the next start.
    async fn finish(&mut self) -> anyhow::Result<()> {
        self.retry_at = Instant::now();
        self.flush().await
    }

    async fn every_second(&mut self) -> anyhow::Result<()> {
        if self.reachable != Some(true) && Instant::now() >= self.retry_at {
            let started = Instant::now();
            let outcome = self.redis.connect().await;
            let _ = self.judge(started, outcome);
        }
        if self.reachable == Some(true) {
            self.poll_registry().await?;
        }
        let latency = std::mem::take(&mut self.latency);
        let errors = std::mem::take(&mut self.errors);
        if latency != Histogram::default() || errors > 0 {
            self.tell(&FromCluster::Calls { latency, errors }).await?;
        }
        let reachable = self.reachable == Some(true);
        self.tell(&FromCluster::Reachable(reachable)).await
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
        self.tell(&FromCluster::Registry(shared)).await
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
        let frame = ipc::encode(message)?;
        self.master
            .write_all(&frame)
            .await
            .context("cannot write to the master")
    }
}
