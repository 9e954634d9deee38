//! Configuration: the TOML file of `process-model.md`, its built-in defaults and its checks.
//!
//! Owns parsing, validation and path resolution (the defaults are `defaults.rs`', a
//! key's range `values.rs`'). A `Config` that exists has been validated: every other
//! module may trust its values. This module never touches the running daemon; it only
//! reads files (and the user database, to resolve `workers.user`/`workers.group`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use log::LevelFilter;
use nix::unistd::{Gid, Group, Uid, User};
use serde::Deserialize;

use ipnet::IpNet;

mod checks;
mod cluster;
mod defaults;
mod include;
mod oncall;
mod values;

pub use cluster::{Cluster, ClusterMode};
pub use oncall::{Alerts, Silences};
pub use values::LogTarget;
use values::{
    DAY, GIB, HOUR, WEEK, listen_address, log_level, log_target, networks, optional_path, within,
};

use crate::registry::address::WebhookUrl;
use crate::registry::{Appender, Destinations, EventDeclaration, Rules};

/// The longest path a Unix socket address can hold (`sun_path` minus its NUL).
const MAX_UNIX_SOCKET_PATH: usize = 107;

/// Where the configuration comes from, kept by the master so that a reload reads the
/// same file again.
#[derive(Debug, Clone)]
pub struct Source {
    /// The config file, absolute; `None` means built-in defaults.
    pub file: Option<PathBuf>,
    /// The folder that relative paths are resolved against: the config file's folder,
    /// or the working directory at launch when there is no file.
    base_dir: PathBuf,
}

impl Source {
    /// `file` may be relative to the working directory; it is made absolute now,
    /// because a daemon changes its working directory to `/`.
    pub fn new(file: Option<&Path>) -> anyhow::Result<Source> {
        let cwd = std::env::current_dir().context("cannot read the working directory")?;
        Ok(match file {
            Some(file) => {
                let file = cwd.join(file);
                let base_dir = file.parent().unwrap_or(Path::new("/")).to_path_buf();
                Source {
                    file: Some(file),
                    base_dir,
                }
            }
            None => Source {
                file: None,
                base_dir: cwd,
            },
        })
    }

    /// The folder that relative paths are resolved against.
    pub fn base_dir(&self) -> &Path {
        &self.base_dir
    }

    /// A human name for messages: the file, or "built-in defaults".
    pub fn describe(&self) -> String {
        match &self.file {
            Some(file) => file.display().to_string(),
            None => "built-in defaults".to_string(),
        }
    }

    /// The configuration a daemon would serve with: `load`, and what would fail later
    /// (files, programs, certificates: `checks.rs`). For configtest, start and reload;
    /// the commands that only find or signal a running daemon (`status`, `stop`) take
    /// `load`, so that a user who may read the config but not, say, the TLS key, can
    /// still ask.
    pub fn load_checked(&self) -> anyhow::Result<Config> {
        let config = self.load()?;
        config
            .check_what_would_fail_later()
            .with_context(|| format!("invalid configuration in {}", self.describe()))?;
        Ok(config)
    }

    /// Reads, parses and validates the configuration.
    pub fn load(&self) -> anyhow::Result<Config> {
        let text = match &self.file {
            Some(file) => std::fs::read_to_string(file)
                .with_context(|| format!("cannot read config file {}", file.display()))?,
            None => String::new(),
        };
        Config::parse(&text, &self.base_dir)
            .with_context(|| format!("invalid configuration in {}", self.describe()))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: Server,
    pub collectors: Collectors,
    pub workers: Workers,
    pub watchers: Watchers,
    pub registry: RegistryLimits,
    pub actions: Actions,
    pub daemon: Daemon,
    pub smtp: Smtp,
    pub silences: Silences,
    pub alerts: Alerts,
    /// `[[event]]`: event types, collectors and watchers declared by the operator.
    pub event: Vec<EventDeclaration>,
    /// `[cluster]`: shared through Redis; `None`, a node alone.
    pub cluster: Option<Cluster>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Server {
    #[serde(deserialize_with = "listen_address")]
    pub listen: SocketAddr,
    #[serde(deserialize_with = "within::<_, _, 1, 65_535>")]
    pub backlog: i32,
    #[serde(deserialize_with = "within::<_, _, 1, GIB>")]
    pub max_body_bytes: u64,
    #[serde(deserialize_with = "within::<_, _, 1, HOUR>")]
    pub read_timeout_secs: u64,
    /// A reply that makes no progress for this long is cut (nginx's `send_timeout`).
    #[serde(deserialize_with = "within::<_, _, 1, HOUR>")]
    pub write_timeout_secs: u64,
    #[serde(deserialize_with = "within::<_, _, 1, 1_000_000>")]
    pub max_connections: usize,
    /// The request line and headers together; beyond, 431 (hyper's floor is 8 KiB).
    #[serde(deserialize_with = "within::<_, _, 8_192, 1_048_576>")]
    pub max_header_bytes: usize,
    pub api_token: String,
    /// TLS on the listener: the certificate chain and its key (PEM); plain HTTP when unset.
    #[serde(deserialize_with = "optional_path")]
    pub tls_cert: Option<PathBuf>,
    #[serde(deserialize_with = "optional_path")]
    pub tls_key: Option<PathBuf>,
    /// With TLS, client certificates signed by these CAs (PEM) are required.
    #[serde(deserialize_with = "optional_path")]
    pub tls_client_ca: Option<PathBuf>,
    /// Key values in a watcher's live state without the token (alerts.md): off where
    /// they are personal data.
    pub expose_keys_without_token: bool,
    /// A new connection is offered to the workers once its first bytes arrive
    /// (TCP_DEFER_ACCEPT, nginx's `deferred`), or after 1 s of silence.
    pub deferred_accept: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Collectors {
    /// The only folders a file appender registered over HTTP may write in; none by
    /// default (security.md). Config-declared appenders may name any path but eventsd's
    /// own files.
    pub file_dirs: Vec<PathBuf>,
    /// The syslog daemon's socket of `syslog` appenders; unset: `/dev/log`.
    #[serde(deserialize_with = "optional_path")]
    pub syslog_socket: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Workers {
    #[serde(deserialize_with = "within::<_, _, 1, 1_024>")]
    pub min: usize,
    #[serde(deserialize_with = "within::<_, _, 1, 1_024>")]
    pub max: usize,
    #[serde(deserialize_with = "within::<_, _, 1, DAY>")]
    pub idle_timeout_secs: u64,
    /// A worker sends a heartbeat every half second, so anything under 2 s would kill
    /// healthy workers that were merely scheduled late.
    #[serde(deserialize_with = "within::<_, _, 2, HOUR>")]
    pub heartbeat_timeout_secs: u64,
    #[serde(deserialize_with = "within::<_, _, 0, DAY>")]
    pub graceful_timeout_secs: u64,
    pub max_requests: u64,
    pub user: String,
    pub group: String,
    pub chroot: PathBuf,
    /// What `user`, `group` and `chroot` resolve to; filled in by validation.
    #[serde(skip)]
    pub privileges: Privileges,
}

/// The identity a worker takes after the fork. Empty when workers keep the master's.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Privileges {
    pub uid: Option<Uid>,
    pub gid: Option<Gid>,
    pub chroot: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Watchers {
    #[serde(deserialize_with = "within::<_, _, 1, 100_000_000>")]
    pub max_keys: usize,
    #[serde(deserialize_with = "within::<_, _, 1, 10_000_000>")]
    pub action_queue: usize,
    /// Fields of one `fields` aggregator.
    #[serde(deserialize_with = "within::<_, _, 1, 256>")]
    pub max_fields: usize,
    /// The longest field path a `fields` aggregator may name.
    #[serde(deserialize_with = "within::<_, _, 1, 65_536>")]
    pub max_field_path_bytes: usize,
    /// The longest aggregation key; longer values are cut to a digest.
    #[serde(deserialize_with = "within::<_, _, 64, 65_536>")]
    pub max_key_bytes: usize,
    /// Watchers of one event type.
    #[serde(deserialize_with = "within::<_, _, 1, 10_000>")]
    pub max_per_type: usize,
    /// How often changed counters are written to the state folder (a crash loses at
    /// most that much counting).
    #[serde(deserialize_with = "within::<_, _, 1, HOUR>")]
    pub snapshot_secs: u64,
    /// A snapshot child still writing after this long is hung: killed, tried again.
    #[serde(deserialize_with = "within::<_, _, 1, HOUR>")]
    pub snapshot_timeout_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Actions {
    /// URL prefixes webhooks must start with; empty allows any URL.
    pub webhook_allow: Vec<String>,
    /// Networks no webhook may reach, checked on the resolved address.
    #[serde(deserialize_with = "networks")]
    pub webhook_deny: Vec<IpNet>,
    /// The longest wait between two attempts of a delivery.
    #[serde(deserialize_with = "within::<_, _, 1, DAY>")]
    pub retry_max_interval_secs: u64,
    /// A firing still undelivered this long after it was made is dropped.
    #[serde(deserialize_with = "within::<_, _, 1, WEEK>")]
    pub max_age_secs: u64,
    /// Deliveries to one target (an origin, the SMTP relay, a command) at the same time.
    #[serde(deserialize_with = "within::<_, _, 1, 64>")]
    pub max_in_flight_per_target: usize,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryLimits {
    #[serde(deserialize_with = "within::<_, _, 1, 1_000_000>")]
    pub max_event_types: usize,
    /// The largest `registry.json` a change may leave: every change rewrites it and
    /// pushes the registry to every worker.
    #[serde(deserialize_with = "within::<_, _, 4_096, 1_073_741_824>")]
    pub max_bytes: usize,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Daemon {
    pub state_dir: PathBuf,
    pub pidfile: PathBuf,
    pub control_socket: PathBuf,
    #[serde(deserialize_with = "log_target")]
    pub log: LogTarget,
    #[serde(deserialize_with = "log_level")]
    pub log_level: LevelFilter,
    /// One JSON line per request, written by the workers; off when unset.
    #[serde(deserialize_with = "optional_path")]
    pub access_log: Option<PathBuf>,
    /// Files laid over this one (`conf.d/*.toml`), in name order.
    pub include: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Smtp {
    pub host: String,
    #[serde(deserialize_with = "within::<_, _, 1, 65_535>")]
    pub port: u16,
    pub from: String,
    /// Credentials for the relay; none when empty.
    pub username: String,
    pub password: String,
    /// Require STARTTLS before sending.
    pub starttls: bool,
    #[serde(deserialize_with = "within::<_, _, 1, HOUR>")]
    pub timeout_secs: u64,
    /// Recipient domains e-mail actions may write to; empty allows any.
    pub allowed_domains: Vec<String>,
}

impl Server {
    /// The TLS files, when the listener speaks TLS (validation checked both are set).
    pub fn tls_files(&self) -> Option<crate::tls::Files<'_>> {
        Some(crate::tls::Files {
            cert: self.tls_cert.as_deref()?,
            key: self.tls_key.as_deref()?,
            client_ca: self.tls_client_ca.as_deref(),
        })
    }
}

impl Config {
    /// Parses `text` (TOML), resolves relative paths against `base_dir` and validates
    /// what a single key cannot say alone.
    /// With `daemon.include`, the included files are read and laid over `text` first.
    pub fn parse(text: &str, base_dir: &Path) -> anyhow::Result<Config> {
        let mut config = Config::typed(text)?;
        let included = include::files(&config.daemon.include, base_dir)?;
        if !included.is_empty() {
            config = include::merged(text, &included)?;
        }
        config.resolve_paths(base_dir);
        config.validate()?;
        Ok(config)
    }

    /// One file's keys and values, each checked alone, an error naming its key and line.
    fn typed(text: &str) -> anyhow::Result<Config> {
        let document = toml::Deserializer::parse(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        serde_path_to_error::deserialize(document)
            .map_err(|e| anyhow::anyhow!("{}", values::in_words(text, e)))
    }

    fn resolve_paths(&mut self, base_dir: &Path) {
        let daemon = &mut self.daemon;
        daemon.state_dir = base_dir.join(&daemon.state_dir);
        daemon.pidfile = if daemon.pidfile.as_os_str().is_empty() {
            daemon.state_dir.join("eventsd.pid")
        } else {
            base_dir.join(&daemon.pidfile)
        };
        daemon.control_socket = if daemon.control_socket.as_os_str().is_empty() {
            daemon.state_dir.join("eventsd.sock")
        } else {
            base_dir.join(&daemon.control_socket)
        };
        if let LogTarget::File(path) = &mut daemon.log {
            *path = base_dir.join(&*path);
        }
        let server = &mut self.server;
        let paths = [
            &mut daemon.access_log,
            &mut server.tls_cert,
            &mut server.tls_key,
            &mut server.tls_client_ca,
            &mut self.collectors.syslog_socket,
        ];
        for path in paths.into_iter().flatten() {
            *path = base_dir.join(&*path);
        }
        for dir in &mut self.collectors.file_dirs {
            *dir = base_dir.join(&*dir);
        }
    }

    fn validate(&mut self) -> anyhow::Result<()> {
        let workers = &self.workers;
        let mut names: Vec<&str> = self.event.iter().map(|e| e.name.as_str()).collect();
        names.sort_unstable();
        if let Some(twice) = names.windows(2).find(|pair| pair[0] == pair[1]) {
            bail!("event type `{}` is declared twice", twice[0]);
        }
        let server = &self.server;
        if server.tls_cert.is_some() != server.tls_key.is_some() {
            bail!("server.tls_cert and server.tls_key go together: set both, or neither");
        }
        if server.tls_client_ca.is_some() && server.tls_cert.is_none() {
            bail!("server.tls_client_ca needs server.tls_cert and server.tls_key");
        }
        if workers.min > workers.max {
            bail!(
                "workers.min ({}) is greater than workers.max ({})",
                workers.min,
                workers.max
            );
        }
        let socket_len = self.daemon.control_socket.as_os_str().len();
        if socket_len > MAX_UNIX_SOCKET_PATH {
            bail!(
                "daemon.control_socket: {} is {socket_len} bytes long, more than the \
                 {MAX_UNIX_SOCKET_PATH} a Unix socket path may have",
                self.daemon.control_socket.display()
            );
        }
        let watchers = &self.watchers;
        let smallest_key = watchers.max_fields * crate::watch::DIGEST_BYTES + 2;
        if watchers.max_key_bytes < smallest_key {
            bail!(
                "watchers.max_key_bytes ({}) is too small for watchers.max_fields ({}): \
                 at least {smallest_key}",
                watchers.max_key_bytes,
                watchers.max_fields
            );
        }
        let allow = &self.actions.webhook_allow;
        if let Some(bad) = allow
            .iter()
            .find(|prefix| WebhookUrl::parse(prefix).is_err())
        {
            bail!(
                "actions.webhook_allow: `{bad}` is not an http or https URL prefix \
                 (like `https://hooks.slack.com/services/`)"
            );
        }
        self.workers.privileges = resolve_privileges(&self.workers)?;
        if let Some(cluster) = &mut self.cluster {
            cluster.validate()?;
        }
        self.check_declared_entries()
    }

    /// Declared entries may name any path the operator likes but eventsd's own files,
    /// within the bounds that hold for everyone.
    fn check_declared_entries(&self) -> anyhow::Result<()> {
        let rules = self.registry_rules();
        for event in &self.event {
            rules
                .check_declaration(event)
                .map_err(|message| anyhow::anyhow!("event `{}`: {message}", event.name))?;
            for collector in &event.collector {
                if let Appender::File { path } = &collector.appender {
                    rules.check_own_files(path).map_err(|message| {
                        anyhow::anyhow!(
                            "event `{}`, collector `{}`: {message}",
                            event.name,
                            collector.name
                        )
                    })?;
                }
            }
        }
        Ok(())
    }

    /// What this configuration allows a client's registry change to name.
    pub fn registry_rules(&self) -> Rules {
        let daemon = &self.daemon;
        let mut reserved = vec![
            daemon.state_dir.clone(),
            daemon.pidfile.clone(),
            daemon.control_socket.clone(),
        ];
        if let LogTarget::File(log) = &daemon.log {
            reserved.push(log.clone());
        }
        reserved.extend(daemon.access_log.clone());
        let server = &self.server;
        reserved.extend(
            [&server.tls_cert, &server.tls_key, &server.tls_client_ca]
                .into_iter()
                .flatten()
                .cloned(),
        );
        Rules {
            token_set: !self.server.api_token.is_empty(),
            file_dirs: self.collectors.file_dirs.clone(),
            reserved,
            max_event_types: self.registry.max_event_types,
            max_watchers: self.watchers.max_per_type,
            max_fields: self.watchers.max_fields,
            max_field_path_bytes: self.watchers.max_field_path_bytes,
            max_key_bytes: self.watchers.max_key_bytes,
            max_bytes: self.registry.max_bytes,
            destinations: self.destinations(),
        }
    }

    /// Where actions may send firings.
    pub fn destinations(&self) -> Destinations {
        Destinations {
            webhook_allow: self.actions.webhook_allow.clone(),
            webhook_deny: self.actions.webhook_deny.clone(),
            mail_domains: self.smtp.allowed_domains.clone(),
            own_listener: Some(self.server.listen),
        }
    }

    pub fn read_timeout(&self) -> Duration {
        Duration::from_secs(self.server.read_timeout_secs)
    }

    pub fn write_timeout(&self) -> Duration {
        Duration::from_secs(self.server.write_timeout_secs)
    }
}

impl Workers {
    pub fn heartbeat_timeout(&self) -> Duration {
        Duration::from_secs(self.heartbeat_timeout_secs)
    }

    pub fn graceful_timeout(&self) -> Duration {
        Duration::from_secs(self.graceful_timeout_secs)
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }
}

/// The user workers run as when eventsd is started as root and `workers.user` is unset:
/// nginx's default. Keeping root takes `workers.user = "root"`, written out.
pub const DEFAULT_ROOT_WORKERS_USER: &str = "nobody";

fn resolve_privileges(workers: &Workers) -> anyhow::Result<Privileges> {
    let mut privileges = Privileges::default();
    let user = match workers.user.as_str() {
        "" if nix::unistd::geteuid().is_root() => DEFAULT_ROOT_WORKERS_USER,
        user => user,
    };
    if !user.is_empty() {
        let user = User::from_name(user)
            .with_context(|| format!("workers.user: cannot look up `{user}`"))?
            .with_context(|| format!("workers.user: no such user `{user}`"))?;
        privileges.uid = Some(user.uid);
        privileges.gid = Some(user.gid);
    }
    if !workers.group.is_empty() {
        let group = Group::from_name(&workers.group)
            .with_context(|| format!("workers.group: cannot look up `{}`", workers.group))?
            .with_context(|| format!("workers.group: no such group `{}`", workers.group))?;
        privileges.gid = Some(group.gid);
    }
    if !workers.chroot.as_os_str().is_empty() {
        if !workers.chroot.is_absolute() {
            bail!(
                "workers.chroot: `{}` must be an absolute path",
                workers.chroot.display()
            );
        }
        if !workers.chroot.is_dir() {
            bail!(
                "workers.chroot: `{}` is not a directory",
                workers.chroot.display()
            );
        }
        privileges.chroot = Some(workers.chroot.clone());
    }
    Ok(privileges)
}

#[cfg(test)]
mod tests;
