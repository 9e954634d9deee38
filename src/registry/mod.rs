//! The registry: event types, their collectors and their watchers.
//!
//! Owned by the master, which alone applies changes (`apply`) and declarations from the
//! config file (`declare`), and persists it (`save`, atomic). Workers hold read-only
//! copies pushed by the master. A change is applied to a copy first: a refused or failed
//! change leaves the registry as it was. This module does no I/O beyond its state file.

pub mod address;
mod rules;
pub mod validation;

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use rules::{DEFAULT_WEBHOOK_DENY, Destinations, Rules};
pub use validation::watcher::{Direction, RuleKind, expected_payload};
pub use validation::{
    Action, Aggregator, Appender, CollectorSpec, EventDeclaration, Name, WatcherSpec,
};
use validation::{EventSpec, from_json};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Registry {
    /// Bumped by every change: workers acknowledge the version they hold.
    pub version: u64,
    pub events: BTreeMap<Name, EventType>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventType {
    pub id: Uuid,
    /// Declared in the config file: not deletable over HTTP.
    #[serde(default)]
    pub declared: bool,
    #[serde(default)]
    pub collectors: Vec<Collector>,
    #[serde(default)]
    pub watchers: Vec<Watcher>,
}

/// A collector or a watcher as registered: its definition, its id, its origin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry<S> {
    pub id: Uuid,
    /// Declared in the config file: not deletable or replaceable over HTTP.
    #[serde(default)]
    pub declared: bool,
    /// When the definition was made (seconds since the epoch), which new_value's
    /// learning counts from, the same on every node of a cluster; absent from entries
    /// made before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<u64>,
    pub spec: S,
}

pub type Collector = Entry<CollectorSpec>;
pub type Watcher = Entry<WatcherSpec>;

/// What registration needs to know of a definition.
pub trait Spec: Clone + PartialEq {
    /// "Collector" or "Watcher", for messages.
    const KIND: &'static str;
    fn name(&self) -> &Name;
    /// The definition as a reader without the API token may see it (security.md).
    fn without_secrets(&self) -> Self {
        self.clone()
    }
}

impl Spec for CollectorSpec {
    const KIND: &'static str = "Collector";
    fn name(&self) -> &Name {
        &self.name
    }
}

impl Spec for WatcherSpec {
    const KIND: &'static str = "Watcher";
    fn name(&self) -> &Name {
        &self.name
    }

    /// Webhook URLs lose their path and query (a Slack URL is its own credential),
    /// header values read `***`.
    fn without_secrets(&self) -> Self {
        let mut spec = self.clone();
        if let Action::Webhook { url, headers } = &mut spec.action {
            *url = validation::url_without_secrets(url);
            headers
                .values_mut()
                .for_each(|value| *value = "***".to_string());
        }
        spec
    }
}

/// A registry change as a worker forwards it: the raw body, validated by the master.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Change {
    CreateEvent { body: Vec<u8> },
    DeleteEvent { event: String },
    CreateCollector { event: String, body: Vec<u8> },
    DeleteCollector { event: String, name: String },
    CreateWatcher { event: String, body: Vec<u8> },
    DeleteWatcher { event: String, name: String },
}

/// Who asks for a change: for the rules that depend on it, and the audit line.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Origin {
    pub client: IpAddr,
}

impl Origin {
    /// A client on this host (the tests', or an operator's `curl`).
    pub const LOCAL: Origin = Origin {
        client: IpAddr::V4(Ipv4Addr::LOCALHOST),
    };

    pub fn is_loopback(&self) -> bool {
        self.client.is_loopback()
    }
}

/// Why a change was refused: an HTTP status and a message naming the culprit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Refusal {
    pub status: u16,
    pub message: String,
}

impl Refusal {
    fn new(status: u16, message: String) -> Refusal {
        Refusal { status, message }
    }
}

impl Borrow<str> for Name {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl Change {
    /// What the applied change touched, by name (`shop`, `shop/storm`), for the audit
    /// line: `created` is the id `apply` returned, found in `registry`, the one after it.
    pub fn names(&self, created: Uuid, registry: &Registry) -> String {
        match self {
            Change::DeleteEvent { event } => event.clone(),
            Change::DeleteCollector { event, name } | Change::DeleteWatcher { event, name } => {
                format!("{event}/{name}")
            }
            Change::CreateEvent { .. } => registry
                .events
                .iter()
                .find(|(_, entry)| entry.id == created)
                .map_or_else(|| created.to_string(), |(name, _)| name.to_string()),
            Change::CreateCollector { event, .. } | Change::CreateWatcher { event, .. } => {
                let name = registry.event(event).and_then(|e| e.entry_name(created));
                format!("{event}/{}", name.unwrap_or_else(|| created.to_string()))
            }
        }
    }

    /// A label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Change::CreateEvent { .. } => "create_event",
            Change::DeleteEvent { .. } => "delete_event",
            Change::CreateCollector { .. } => "create_collector",
            Change::DeleteCollector { .. } => "delete_collector",
            Change::CreateWatcher { .. } => "create_watcher",
            Change::DeleteWatcher { .. } => "delete_watcher",
        }
    }

    /// A creation: what may grow the registry past its bounds.
    pub fn grows(&self) -> bool {
        matches!(
            self,
            Change::CreateEvent { .. }
                | Change::CreateCollector { .. }
                | Change::CreateWatcher { .. }
        )
    }
}

impl EventType {
    /// The name of the collector or watcher with this id.
    fn entry_name(&self, id: Uuid) -> Option<String> {
        let collectors = self
            .collectors
            .iter()
            .map(|c| (c.id, c.spec.name.to_string()));
        let watchers = self
            .watchers
            .iter()
            .map(|w| (w.id, w.spec.name.to_string()));
        collectors
            .chain(watchers)
            .find_map(|(entry, name)| (entry == id).then_some(name))
    }
}

impl Registry {
    pub fn event(&self, name: &str) -> Option<&EventType> {
        self.events.get(name)
    }

    /// Applies `change`, within what `rules` allow a client; returns the id of what it
    /// created (nil for a deletion). On a refusal nothing has changed.
    pub fn apply(
        &mut self,
        change: &Change,
        origin: Origin,
        rules: &Rules,
    ) -> Result<Uuid, Refusal> {
        let id = match change {
            Change::CreateEvent { body } => self.create_event(body, rules)?,
            Change::DeleteEvent { event } => {
                let declared = self.event_or_404(event)?.declared;
                if declared {
                    return Err(declared_in_config(format!("Event type `{event}`")));
                }
                self.events.remove(event.as_str());
                Uuid::nil()
            }
            Change::CreateCollector { event, body } => {
                self.create_collector(event, body, origin, rules)?
            }
            Change::DeleteCollector { event, name } => {
                remove(&mut self.event_mut_or_404(event)?.collectors, event, name)?;
                Uuid::nil()
            }
            Change::CreateWatcher { event, body } => self.create_watcher(event, body, rules)?,
            Change::DeleteWatcher { event, name } => {
                remove(&mut self.event_mut_or_404(event)?.watchers, event, name)?;
                Uuid::nil()
            }
        };
        self.version += 1;
        Ok(id)
    }

    fn create_event(&mut self, body: &[u8], rules: &Rules) -> Result<Uuid, Refusal> {
        let spec: EventSpec = from_json(body).map_err(bad_request)?;
        rules
            .check_event_count(self.events.len())
            .map_err(bad_request)?;
        if self.events.contains_key(spec.name.as_str()) {
            return Err(conflict(format!(
                "Event type `{}` already registered",
                spec.name
            )));
        }
        let id = Uuid::new_v4();
        self.events.insert(
            spec.name,
            EventType {
                id,
                declared: false,
                collectors: Vec::new(),
                watchers: Vec::new(),
            },
        );
        Ok(id)
    }

    fn create_collector(
        &mut self,
        event: &str,
        body: &[u8],
        origin: Origin,
        rules: &Rules,
    ) -> Result<Uuid, Refusal> {
        let spec: CollectorSpec = from_json(body).map_err(bad_request)?;
        if let Appender::File { path } = &spec.appender {
            check_file_target(path)?;
            let forbidden = |message| Refusal::new(403, format!("Invalid `appender`: {message}"));
            rules.check_own_files(path).map_err(forbidden)?;
            rules.check_client_file(path).map_err(forbidden)?;
        }
        if matches!(spec.appender, Appender::File { .. })
            && !rules.token_set
            && !origin.is_loopback()
        {
            return Err(Refusal::new(
                403,
                "A `file` appender may be registered only from a loopback client while \
                 server.api_token is unset"
                    .to_string(),
            ));
        }
        let collectors = &mut self.event_mut_or_404(event)?.collectors;
        rules
            .check_collector_count(collectors.len())
            .map_err(bad_request)?;
        add(collectors, event, spec)
    }

    fn create_watcher(&mut self, event: &str, body: &[u8], rules: &Rules) -> Result<Uuid, Refusal> {
        let spec: WatcherSpec = from_json(body).map_err(bad_request)?;
        if matches!(spec.action, Action::Command { .. }) {
            return Err(Refusal::new(
                403,
                "The `command` action is accepted only from the config file".to_string(),
            ));
        }
        rules
            .destinations
            .check_action(&spec.action)
            .map_err(|message| Refusal::new(403, format!("Invalid `action`: {message}")))?;
        let watchers = &mut self.event_mut_or_404(event)?.watchers;
        rules
            .check_watcher(&spec, watchers.iter().map(|w| &w.spec))
            .map_err(bad_request)?;
        add(watchers, event, spec)
    }

    /// Makes the registry hold exactly what the config file declares, next to what was
    /// registered over HTTP: declared entries are added or updated (keeping their ids
    /// when unchanged), entries the file no longer declares are removed. Returns whether
    /// anything changed.
    pub fn declare(&mut self, declarations: &[EventDeclaration]) -> bool {
        let before = self.clone();
        let declared = |name: &str| declarations.iter().find(|d| d.name.as_str() == name);
        self.events
            .retain(|name, event| !event.declared || declared(name.as_str()).is_some());
        for event in self.events.values_mut() {
            event.collectors.retain(|c| !c.declared);
            event.watchers.retain(|w| !w.declared);
        }
        for declaration in declarations {
            let event = self
                .events
                .entry(declaration.name.clone())
                .or_insert_with(|| EventType {
                    id: Uuid::new_v4(),
                    declared: true,
                    collectors: Vec::new(),
                    watchers: Vec::new(),
                });
            event.declared = true;
            let previous = before.event(declaration.name.as_str());
            declare_entries(
                &mut event.collectors,
                previous.map(|p| &p.collectors[..]),
                &declaration.collector,
            );
            declare_entries(
                &mut event.watchers,
                previous.map(|p| &p.watchers[..]),
                &declaration.watcher,
            );
        }
        let changed = self.events != before.events;
        if changed {
            self.version += 1;
        }
        changed
    }

    /// Drops every entry registered over HTTP that `rules` would refuse now: a `command`
    /// action, a file appender outside `file_dirs` or on eventsd's own files, a webhook
    /// to where webhooks may not go or with a header that frames the request, a duration
    /// past 10 years (saved before the bound: Redis could not expire its keys). For what
    /// was loaded from disk, which anyone able to write there could have planted. Returns
    /// what was dropped, as messages.
    pub fn drop_forbidden(&mut self, rules: &Rules) -> Vec<String> {
        let mut dropped = Vec::new();
        for (event, entry) in &mut self.events {
            entry.collectors.retain(|c| {
                let Appender::File { path } = &c.spec.appender else {
                    return true;
                };
                let allowed = rules
                    .check_own_files(path)
                    .and_then(|()| rules.check_client_file(path));
                match allowed {
                    Ok(()) => true,
                    Err(_) if c.declared => true,
                    Err(why) => {
                        dropped.push(format!("collector `{}` of `{event}`: {why}", c.spec.name));
                        false
                    }
                }
            });
            entry
                .watchers
                .retain(|w| match forbidden_watcher(&w.spec, rules) {
                    Some(why) if !w.declared => {
                        dropped.push(format!("watcher `{}` of `{event}`: {why}", w.spec.name));
                        false
                    }
                    _ => true,
                });
        }
        if !dropped.is_empty() {
            self.version += 1;
        }
        dropped
    }

    /// Reads `path`; a missing file is an empty registry. A file that cannot be read is
    /// an error naming it: it is never replaced behind the operator's back.
    pub fn load(path: &Path) -> anyhow::Result<Registry> {
        let Some(text) = crate::files::read_state_file(path, "registry file")? else {
            return Ok(Registry::default());
        };
        serde_json::from_slice(&text).with_context(|| {
            format!(
                "registry file {} is corrupt; restore it from a backup or remove it \
                 (eventsd never overwrites it)",
                path.display()
            )
        })
    }

    /// Refuses (400) a `change` that grew the registry past `registry.max_bytes`, its
    /// `registry.json` being `bytes` long after it (asked only of a creation); a deletion
    /// always passes, also over a lowered limit.
    pub fn check_size(
        change: &Change,
        bytes: impl FnOnce() -> usize,
        rules: &Rules,
    ) -> Result<(), Refusal> {
        if !change.grows() {
            return Ok(());
        }
        rules.check_registry_bytes(bytes()).map_err(bad_request)
    }

    /// The length of `registry.json` for this registry, counted as it is written out,
    /// without holding the document: for a change checked before its document is made
    /// (a cluster's, published first).
    pub fn document_len(&self) -> usize {
        struct Counter(usize);
        impl std::io::Write for Counter {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0 += bytes.len();
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut counter = Counter(0);
        // Cannot fail: every map key is a string and the counter takes every byte.
        let _ = serde_json::to_writer_pretty(&mut counter, self);
        counter.0
    }

    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        crate::files::replace_atomically(path, &self.document()?)
    }

    /// The registry as `registry.json` holds it, and as the master hands it to workers.
    pub fn document(&self) -> anyhow::Result<Vec<u8>> {
        serde_json::to_vec_pretty(self).context("cannot serialize the registry")
    }

    fn event_or_404(&self, event: &str) -> Result<&EventType, Refusal> {
        self.events.get(event).ok_or_else(|| not_registered(event))
    }

    fn event_mut_or_404(&mut self, event: &str) -> Result<&mut EventType, Refusal> {
        self.events
            .get_mut(event)
            .ok_or_else(|| not_registered(event))
    }
}

/// Why a client's watcher would be refused now (its action, its durations), if it would.
fn forbidden_watcher(spec: &WatcherSpec, rules: &Rules) -> Option<String> {
    let action = &spec.action;
    if matches!(action, Action::Command { .. }) {
        return Some("a `command` action, which only the config file may declare".to_string());
    }
    action
        .check_headers()
        .and_then(|()| rules.destinations.check_action(action))
        .and_then(|()| validation::watcher::check_durations(spec))
        .err()
}

/// Adds the declared `specs` to `entries`, keeping the id of an entry declared the same
/// way before (`previous`), so that unchanged declarations keep their identity.
fn declare_entries<S: Spec>(
    entries: &mut Vec<Entry<S>>,
    previous: Option<&[Entry<S>]>,
    specs: &[S],
) {
    for spec in specs {
        let kept = previous
            .and_then(|p| p.iter().find(|e| e.declared && e.spec == *spec))
            .map(|e| (e.id, e.created));
        let (id, created) =
            kept.unwrap_or_else(|| (Uuid::new_v4(), Some(crate::clock::epoch_second())));
        entries.retain(|e| e.spec.name() != spec.name());
        entries.push(Entry {
            id,
            declared: true,
            created,
            spec: spec.clone(),
        });
    }
}

fn add<S: Spec>(entries: &mut Vec<Entry<S>>, event: &str, spec: S) -> Result<Uuid, Refusal> {
    if let Some(existing) = entries.iter().find(|e| e.spec.name() == spec.name()) {
        let subject = format!("{} `{}` of event type `{event}`", S::KIND, spec.name());
        return Err(if existing.declared {
            declared_in_config(subject)
        } else {
            conflict(format!("{subject} already registered"))
        });
    }
    let id = Uuid::new_v4();
    entries.push(Entry {
        id,
        declared: false,
        created: Some(crate::clock::epoch_second()),
        spec,
    });
    Ok(id)
}

fn remove<S: Spec>(entries: &mut Vec<Entry<S>>, event: &str, name: &str) -> Result<(), Refusal> {
    let subject = format!("{} `{name}` of event type `{event}`", S::KIND);
    let index = entries
        .iter()
        .position(|e| e.spec.name().as_str() == name)
        .ok_or_else(|| Refusal::new(404, format!("{subject} is not registered")))?;
    if entries[index].declared {
        return Err(declared_in_config(subject));
    }
    entries.remove(index);
    Ok(())
}

/// A file appender must name a file in an existing folder: a registration that could
/// never write is refused now, not discovered as a 503 on every event.
fn check_file_target(path: &Path) -> Result<(), Refusal> {
    let folder_exists = path.parent().is_some_and(Path::is_dir);
    if path.is_dir() || !folder_exists {
        return Err(bad_request(format!(
            "Invalid `appender`: `path`: `{}` is not a file in an existing folder",
            path.display()
        )));
    }
    Ok(())
}

fn bad_request(message: String) -> Refusal {
    Refusal::new(400, message)
}

fn conflict(message: String) -> Refusal {
    Refusal::new(409, message)
}

fn declared_in_config(subject: String) -> Refusal {
    Refusal::new(
        403,
        format!("{subject} is declared in the config file; change it there"),
    )
}

pub fn not_registered(event: &str) -> Refusal {
    Refusal::new(404, format!("Event type `{event}` is not registered"))
}

#[cfg(test)]
mod tests;
