//! `[cluster]`: several nodes sharing the registry and the watchers' counters through Redis
//! (cluster.md). Without the section, a node is alone, as it always was.

use serde::Deserialize;

use super::values::within;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    #[serde(default)]
    pub mode: ClusterMode,
    /// Standalone: the one server; cluster: seed nodes.
    pub urls: Vec<String>,
    /// So that several eventsd clusters can share one Redis.
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    /// Per call; beyond it the call counts as failed and the node counts locally.
    #[serde(
        default = "default_timeout_ms",
        deserialize_with = "within::<_, _, 1, 60_000>"
    )]
    pub timeout_ms: u64,
    /// Shown in firings and status; the host name when empty.
    #[serde(default)]
    pub node_name: String,
    /// How often the counts gathered meanwhile go to Redis, as one call per slot.
    #[serde(
        default = "default_flush_ms",
        deserialize_with = "within::<_, _, 1, 10_000>"
    )]
    pub flush_ms: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClusterMode {
    /// One server (or a Sentinel-managed or managed primary behind one address).
    #[default]
    Standalone,
    /// Redis Cluster.
    Cluster,
}

impl ClusterMode {
    /// As the configuration spells it.
    pub fn name(self) -> &'static str {
        match self {
            ClusterMode::Standalone => "standalone",
            ClusterMode::Cluster => "cluster",
        }
    }
}

fn default_key_prefix() -> String {
    "eventsd".to_string()
}

fn default_timeout_ms() -> u64 {
    100
}

fn default_flush_ms() -> u64 {
    10
}

impl Cluster {
    /// What one key cannot say alone; fills in the node name.
    pub(super) fn validate(&mut self) -> anyhow::Result<()> {
        if self.urls.is_empty() {
            anyhow::bail!("cluster.urls: at least one Redis URL is needed");
        }
        if self.mode == ClusterMode::Standalone && self.urls.len() > 1 {
            anyhow::bail!(
                "cluster.urls: mode \"standalone\" takes one URL, not {}; use mode = \
                 \"cluster\" for Redis Cluster seed nodes",
                self.urls.len()
            );
        }
        for url in &self.urls {
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                anyhow::bail!("cluster.urls: `{url}` is not a redis:// URL");
            }
            redis::Client::open(url.as_str())
                .map_err(|e| anyhow::anyhow!("cluster.urls: `{url}`: {e}"))?;
        }
        let printable = |text: &str| text.chars().all(|c| c.is_ascii_graphic());
        // Braces would change the hash tags that keep each counter in one slot.
        if self.key_prefix.is_empty()
            || self.key_prefix.len() > 64
            || !printable(&self.key_prefix)
            || self.key_prefix.contains(['{', '}'])
        {
            anyhow::bail!(
                "cluster.key_prefix: 1 to 64 printable characters without spaces or braces"
            );
        }
        if self.node_name.is_empty() {
            self.node_name = nix::unistd::gethostname()
                .ok()
                .and_then(|name| name.into_string().ok())
                .unwrap_or_else(|| "eventsd".to_string());
        }
        if self.node_name.len() > 64 || !printable(&self.node_name) {
            anyhow::bail!("cluster.node_name: 1 to 64 printable characters without spaces");
        }
        Ok(())
    }
}
