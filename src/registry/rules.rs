//! What the operator allows a registry change to name or grow (security.md): the folders
//! a client's file appender may write in (`[collectors] file_dirs`), eventsd's own files
//! that no appender may name, whether an API token guards the registry, and the bounds
//! on its size (event types, collectors and watchers per type, fields per watcher and
//! their paths' length, bytes of the whole), and where a firing may go (webhook addresses
//! and prefixes, mail domains).
//!
//! Plain data built from the configuration (`Config::registry_rules`) and checks on
//! paths and addresses (the kernel is asked which addresses are this host's); nothing
//! here opens or writes a file, or resolves a name.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use ipnet::IpNet;

use super::address::{Host, WebhookUrl, canonical, destination};
use super::validation::watcher::{MAX_EXPECTED_PER_TYPE, expected_key_bytes};
use super::validation::{Action, Aggregator, EventDeclaration, WatcherSpec, url_without_secrets};

/// Collectors of one event type: each file collector is a descriptor in every worker.
pub const MAX_COLLECTORS_PER_TYPE: usize = 64;

#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    /// `server.api_token` is set.
    pub token_set: bool,
    /// `[collectors] file_dirs`: the only folders a file appender registered over HTTP
    /// may write in. Empty: HTTP file appenders are refused.
    pub file_dirs: Vec<PathBuf>,
    /// eventsd's own files: the state folder (and all below it), the pidfile, the control
    /// socket and the log file. No appender may name them, whoever registers it.
    pub reserved: Vec<PathBuf>,
    /// `registry.max_event_types`.
    pub max_event_types: usize,
    /// `watchers.max_per_type`.
    pub max_watchers: usize,
    /// `watchers.max_fields`.
    pub max_fields: usize,
    /// `watchers.max_field_path_bytes`.
    pub max_field_path_bytes: usize,
    /// `watchers.max_key_bytes`: an expected key (`expect`) longer than this would be
    /// counted by the workers under its digest, never under itself.
    pub max_key_bytes: usize,
    /// `registry.max_bytes`: of `registry.json`, as a change would leave it.
    pub max_bytes: usize,
    /// Where actions may send firings.
    pub destinations: Destinations,
}

/// Where a firing may go (security.md): webhooks not into the denied networks (the cloud
/// metadata addresses by default) nor to eventsd's own listener (a loop) and, when a list
/// is set, only below allowed URL prefixes; e-mail, when a list is set, only to allowed
/// domains. Checked at registration on what the URL shows (an address in any spelling)
/// and again at delivery on every address its host resolves to.
#[derive(Debug, Clone, PartialEq)]
pub struct Destinations {
    /// `actions.webhook_allow`: URL prefixes; empty allows any URL.
    pub webhook_allow: Vec<String>,
    /// `actions.webhook_deny`: networks no webhook may reach.
    pub webhook_deny: Vec<IpNet>,
    /// `smtp.allowed_domains`: recipient domains; empty allows any.
    pub mail_domains: Vec<String>,
    /// `server.listen`: where eventsd itself answers, which no webhook may call.
    pub own_listener: Option<SocketAddr>,
}

impl Default for Destinations {
    fn default() -> Destinations {
        Destinations {
            webhook_allow: Vec::new(),
            webhook_deny: DEFAULT_WEBHOOK_DENY
                .iter()
                .filter_map(|net| net.parse().ok())
                .collect(),
            mail_domains: Vec::new(),
            own_listener: None,
        }
    }
}

/// Link-local, where the cloud metadata services answer (169.254.169.254, fd00:ec2::254
/// aside, which sits in a private range the operator may deny too).
pub const DEFAULT_WEBHOOK_DENY: [&str; 2] = ["169.254.0.0/16", "fe80::/10"];

impl Destinations {
    /// The URL is below an allowed prefix and, if its host is an address (in any
    /// spelling), that address may be reached. A name is checked when it is resolved,
    /// at delivery.
    pub fn check_webhook_url(&self, url: &str) -> Result<(), String> {
        let parsed = WebhookUrl::parse(url)
            .map_err(|why| format!("webhook `{}` {why}", url_without_secrets(url)))?;
        let allowed = |prefix: &String| {
            WebhookUrl::parse(prefix).is_ok_and(|prefix| parsed.is_below(&prefix))
        };
        if !self.webhook_allow.is_empty() && !self.webhook_allow.iter().any(allowed) {
            return Err(format!(
                "webhook `{}` is not below a prefix of actions.webhook_allow",
                url_without_secrets(url)
            ));
        }
        match parsed.host {
            Host::Address(address) => {
                self.check_webhook_address(SocketAddr::new(address, parsed.port))
            }
            Host::Name(_) => Ok(()),
        }
    }

    /// An address a webhook would connect to: its URL's, or one its host resolved to.
    pub fn check_webhook_address(&self, address: SocketAddr) -> Result<(), String> {
        let (written, ip) = (address.ip(), destination(address.ip()));
        let denied = self
            .webhook_deny
            .iter()
            .find(|net| net.contains(&written) || net.contains(&ip));
        if let Some(net) = denied {
            return Err(format!(
                "webhooks may not reach {ip} (actions.webhook_deny holds {net})"
            ));
        }
        if self.is_own_listener(SocketAddr::new(ip, address.port())) {
            return Err(format!(
                "{address} is eventsd's own listener (server.listen): a webhook there would \
                 call eventsd itself"
            ));
        }
        Ok(())
    }

    /// `address` (where a connection goes: `destination`) reaches eventsd's listener:
    /// the listening address itself or, when eventsd listens on every address
    /// (`0.0.0.0`, `::`), any address of this host, on its port.
    fn is_own_listener(&self, address: SocketAddr) -> bool {
        let Some(listen) = self.own_listener else {
            return false;
        };
        let (listen_ip, ip) = (canonical(listen.ip()), address.ip());
        address.port() == listen.port()
            && (ip == listen_ip || (listen_ip.is_unspecified() && is_this_hosts(ip)))
    }

    pub fn check_recipients(&self, to: &[String]) -> Result<(), String> {
        if self.mail_domains.is_empty() {
            return Ok(());
        }
        let allowed = |address: &String| {
            let domain = address.rsplit('@').next().unwrap_or("");
            self.mail_domains
                .iter()
                .any(|d| d.eq_ignore_ascii_case(domain))
        };
        match to.iter().find(|address| !allowed(address)) {
            Some(address) => Err(format!(
                "`{address}` is not in a domain of smtp.allowed_domains"
            )),
            None => Ok(()),
        }
    }

    /// What an action may reach, for either check.
    pub fn check_action(&self, action: &Action) -> Result<(), String> {
        match action {
            Action::Webhook { url, .. } => self.check_webhook_url(url),
            Action::Email { to, .. } => self.check_recipients(to),
            Action::Null {} | Action::Command { .. } => Ok(()),
        }
    }
}

/// A loopback address, or one of this host's interfaces (asked of the kernel each time:
/// addresses come and go).
fn is_this_hosts(ip: IpAddr) -> bool {
    if ip.is_loopback() {
        return true;
    }
    let Ok(interfaces) = nix::ifaddrs::getifaddrs() else {
        // Not knowing this host's addresses, any may be eventsd's.
        return true;
    };
    interfaces
        .filter_map(|interface| interface.address)
        .filter_map(|address| {
            let v4 = address.as_sockaddr_in().map(|a| IpAddr::V4(a.ip()));
            v4.or_else(|| address.as_sockaddr_in6().map(|a| IpAddr::V6(a.ip())))
        })
        .any(|own| canonical(own) == ip)
}

/// The configuration's defaults.
impl Default for Rules {
    fn default() -> Rules {
        Rules {
            token_set: false,
            file_dirs: Vec::new(),
            reserved: Vec::new(),
            max_event_types: 10_000,
            max_watchers: 256,
            max_fields: 16,
            max_field_path_bytes: 256,
            max_key_bytes: 1024,
            max_bytes: 16 * 1024 * 1024,
            destinations: Destinations::default(),
        }
    }
}

impl Rules {
    /// One more event type, when `count` are registered.
    pub fn check_event_count(&self, count: usize) -> Result<(), String> {
        bounded(
            count,
            self.max_event_types,
            "event types",
            "registry.max_event_types",
        )
    }

    /// One more collector on a type that has `count`.
    pub fn check_collector_count(&self, count: usize) -> Result<(), String> {
        bounded(
            count,
            MAX_COLLECTORS_PER_TYPE,
            "collectors on an event type",
            "the limit",
        )
    }

    /// One more watcher, `spec`, on a type whose watchers are `others`.
    pub fn check_watcher<'a>(
        &self,
        spec: &WatcherSpec,
        others: impl ExactSizeIterator<Item = &'a WatcherSpec>,
    ) -> Result<(), String> {
        bounded(
            others.len(),
            self.max_watchers,
            "watchers on an event type",
            "watchers.max_per_type",
        )?;
        let expected_by_others = others.map(|other| other.expect.as_ref().map_or(0, Vec::len));
        self.check_expect(spec, expected_by_others.sum())?;
        spec.action
            .check_headers()
            .map_err(|message| format!("Invalid `action`: {message}"))?;
        super::validation::watcher::check(spec)?;
        if let Some(max) = spec.cooldown_max_secs {
            if spec.cooldown_secs.is_none_or(|base| max < base) {
                return Err(format!(
                    "Invalid `cooldown_max_secs`: {max} needs a `cooldown_secs` no greater"
                ));
            }
        }
        if let Aggregator::Fields { fields } = &spec.aggregator {
            if fields.len() > self.max_fields {
                return Err(format!(
                    "Invalid `fields`: {} fields, more than watchers.max_fields ({})",
                    fields.len(),
                    self.max_fields
                ));
            }
            if let Some(long) = fields
                .iter()
                .find(|path| path.len() > self.max_field_path_bytes)
            {
                return Err(format!(
                    "Invalid `fields`: a field path of {} bytes, more than \
                     watchers.max_field_path_bytes ({})",
                    long.len(),
                    self.max_field_path_bytes
                ));
            }
        }
        Ok(())
    }

    /// A registry whose `registry.json` would be `bytes` long after a creation.
    pub fn check_registry_bytes(&self, bytes: usize) -> Result<(), String> {
        if bytes > self.max_bytes {
            return Err(format!(
                "The registry would be {bytes} bytes, more than registry.max_bytes ({})",
                self.max_bytes
            ));
        }
        Ok(())
    }

    /// `expect`'s keys, each no longer than a key may be, and with the keys the type's
    /// other watchers expect (`expected_by_others`) no more than `MAX_EXPECTED_PER_TYPE`.
    fn check_expect(&self, spec: &WatcherSpec, expected_by_others: usize) -> Result<(), String> {
        let Some(keys) = &spec.expect else {
            return Ok(());
        };
        if let Some(long) = keys
            .iter()
            .find(|key| expected_key_bytes(key) > self.max_key_bytes)
        {
            return Err(format!(
                "Invalid `expect`: the key {} is {} bytes, more than watchers.max_key_bytes ({})",
                long.to_string().chars().take(64).collect::<String>(),
                expected_key_bytes(long),
                self.max_key_bytes
            ));
        }
        let expected = expected_by_others + keys.len();
        if expected > MAX_EXPECTED_PER_TYPE {
            return Err(format!(
                "Invalid `expect`: the event type's watchers would expect {expected} keys, \
                 more than {MAX_EXPECTED_PER_TYPE}"
            ));
        }
        Ok(())
    }

    /// The same bounds for what the config file declares.
    pub fn check_declaration(&self, declaration: &EventDeclaration) -> Result<(), String> {
        if let Some(extra) = declaration.collector.len().checked_sub(1) {
            self.check_collector_count(extra)?;
        }
        for (count, watcher) in declaration.watcher.iter().enumerate() {
            self.check_watcher(watcher, declaration.watcher[..count].iter())
                .map_err(|message| format!("watcher `{}`: {message}", watcher.name))?;
        }
        Ok(())
    }

    /// Any appender path, from the config file or a client, must not be one of
    /// eventsd's own files (the path's form is checked where it is parsed: `spec`).
    pub fn check_own_files(&self, path: &Path) -> Result<(), String> {
        let real = canonical_parent(path);
        let own = self.reserved.iter().find(|reserved| {
            let real_reserved = std::fs::canonicalize(reserved).unwrap_or(reserved.to_path_buf());
            path.starts_with(reserved)
                || real.as_ref().is_some_and(|r| r.starts_with(&real_reserved))
        });
        match own {
            Some(own) => Err(format!(
                "`{}` is one of eventsd's own files ({})",
                path.display(),
                own.display()
            )),
            None => Ok(()),
        }
    }

    /// A client's file appender: below one of `file_dirs`, once the folder's symlinks
    /// are resolved (a link in an allowed folder must not lead out of it).
    pub fn check_client_file(&self, path: &Path) -> Result<(), String> {
        if self.file_dirs.is_empty() {
            return Err(
                "file appenders may be registered over HTTP only below a folder of \
                 `collectors.file_dirs`, and none is set"
                    .to_string(),
            );
        }
        let allowed = canonical_parent(path).is_some_and(|real| {
            self.file_dirs
                .iter()
                .filter_map(|dir| std::fs::canonicalize(dir).ok())
                .any(|dir| real.starts_with(dir))
        });
        if !allowed {
            return Err(format!(
                "`{}` is not below a folder of `collectors.file_dirs`",
                path.display()
            ));
        }
        Ok(())
    }
}

fn bounded(count: usize, limit: usize, what: &str, setting: &str) -> Result<(), String> {
    if count >= limit {
        return Err(format!(
            "{count} {what} registered: {setting} ({limit}) reached"
        ));
    }
    Ok(())
}

/// `path` with its folder's symlinks resolved (the file itself may not exist yet).
fn canonical_parent(path: &Path) -> Option<PathBuf> {
    let real_dir = std::fs::canonicalize(path.parent()?).ok()?;
    Some(real_dir.join(path.file_name()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(dir: &Path) -> Rules {
        Rules {
            file_dirs: vec![dir.join("events")],
            reserved: vec![dir.join("state"), dir.join("daemon.log")],
            ..Rules::default()
        }
    }

    #[test]
    fn webhooks_stay_out_of_denied_networks_and_inside_allowed_prefixes() {
        let open = Destinations::default();
        for denied in [
            "http://169.254.169.254/latest/meta-data/",
            "http://[fe80::1]:8080/x",
        ] {
            let message = open.check_webhook_url(denied).unwrap_err();
            assert!(
                message.contains("actions.webhook_deny"),
                "{denied}: {message}"
            );
        }
        assert!(
            open.check_webhook_url("https://hooks.slack.com/services/x")
                .is_ok()
        );
        let only_slack = Destinations {
            webhook_allow: vec!["https://hooks.slack.com/".into()],
            ..Destinations::default()
        };
        assert!(
            only_slack
                .check_webhook_url("https://hooks.slack.com/services/x")
                .is_ok()
        );
        assert!(
            only_slack
                .check_webhook_url("https://hooks.slack.com.evil.io/x")
                .is_err()
        );
        let domains = Destinations {
            mail_domains: vec!["example.com".into()],
            ..Destinations::default()
        };
        assert!(
            domains
                .check_recipients(&["ops@EXAMPLE.com".into()])
                .is_ok()
        );
        assert!(
            domains
                .check_recipients(&["ops@example.com".into(), "x@evil.io".into()])
                .is_err()
        );
    }

    #[test]
    fn every_spelling_of_a_denied_address_is_denied() {
        let open = Destinations::default();
        for denied in crate::registry::address::tests::METADATA_SPELLINGS {
            let message = open.check_webhook_url(denied).unwrap_err();
            assert!(message.contains("169.254.169.254"), "{denied}: {message}");
        }
        let mapped = SocketAddr::from(([0, 0, 0, 0, 0, 0xffff, 0xa9fe, 0xa9fe], 80));
        assert!(open.check_webhook_address(mapped).is_err(), "as resolved");
        let no_loopback = Destinations {
            webhook_deny: vec!["127.0.0.0/8".parse().unwrap()],
            ..Destinations::default()
        };
        for loopback in ["http://0.0.0.0:8080/", "http://0:8080/", "http://127.1/"] {
            assert!(
                no_loopback.check_webhook_url(loopback).is_err(),
                "{loopback}"
            );
        }
    }

    #[test]
    fn a_webhook_to_eventsds_own_listener_is_refused() {
        let on = |listen: &str| Destinations {
            own_listener: Some(listen.parse().unwrap()),
            ..Destinations::default()
        };
        let specific = on("127.0.0.1:8080");
        for own in [
            "http://127.0.0.1:8080/event/x/",
            "http://2130706433:8080/",
            "http://[::ffff:127.0.0.1]:8080/",
            "http://0.0.0.0:8080/",
        ] {
            let message = specific.check_webhook_url(own).unwrap_err();
            assert!(message.contains("own listener"), "{own}: {message}");
        }
        assert!(specific.check_webhook_url("http://127.0.0.1:8081/").is_ok());
        assert!(specific.check_webhook_url("http://127.0.0.2:8080/").is_ok());
        let everywhere = on("0.0.0.0:80");
        for own in ["http://127.0.0.2/", "http://[::1]/", "http://0/"] {
            assert!(everywhere.check_webhook_url(own).is_err(), "{own}");
        }
        assert!(everywhere.check_webhook_url("http://192.0.2.1/").is_ok());
    }

    #[test]
    fn eventsds_own_files_are_refused_through_any_spelling() {
        let dir = tempfile::tempdir().unwrap();
        let rules = rules(dir.path());
        std::fs::create_dir(dir.path().join("state")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("state"), dir.path().join("link")).unwrap();
        for own in [
            "state/registry.json",
            "state/sub/x",
            "daemon.log",
            "link/registry.json",
        ] {
            let message = rules.check_own_files(&dir.path().join(own)).unwrap_err();
            assert!(message.contains("eventsd's own files"), "{own}: {message}");
        }
        assert!(
            rules
                .check_own_files(&dir.path().join("events/a.jsonl"))
                .is_ok()
        );
    }

    #[test]
    fn client_files_stay_below_file_dirs_even_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let rules = rules(dir.path());
        std::fs::create_dir(dir.path().join("events")).unwrap();
        assert!(
            rules
                .check_client_file(&dir.path().join("events/a.jsonl"))
                .is_ok()
        );
        assert!(
            rules
                .check_client_file(Path::new("/etc/profile.d/x.sh"))
                .is_err()
        );
        std::os::unix::fs::symlink("/etc", dir.path().join("events/etc")).unwrap();
        let message = rules
            .check_client_file(&dir.path().join("events/etc/x.sh"))
            .unwrap_err();
        assert!(message.contains("collectors.file_dirs"), "{message}");
        let none = Rules::default();
        assert!(
            none.check_client_file(Path::new("/tmp/x"))
                .unwrap_err()
                .contains("none is set")
        );
    }
}
