//! What the operator allows a registry change to name or grow (security.md): the folders
//! a client's file appender may write in (`[collectors] file_dirs`), eventsd's own files
//! that no appender may name, whether an API token guards the registry, and the bounds
//! on its size (event types, collectors and watchers per type, fields per watcher).
//!
//! Plain data built from the configuration (`Config::registry_rules`) and checks on
//! paths; nothing here opens or writes a file.

use std::path::{Path, PathBuf};

use super::spec::{Aggregator, EventDeclaration, WatcherSpec};

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

    /// One more watcher, `spec`, on a type that has `count`.
    pub fn check_watcher(&self, spec: &WatcherSpec, count: usize) -> Result<(), String> {
        bounded(
            count,
            self.max_watchers,
            "watchers on an event type",
            "watchers.max_per_type",
        )?;
        if let Aggregator::Fields { fields } = &spec.aggregator {
            if fields.len() > self.max_fields {
                return Err(format!(
                    "Invalid `fields`: {} fields, more than watchers.max_fields ({})",
                    fields.len(),
                    self.max_fields
                ));
            }
        }
        Ok(())
    }

    /// The same bounds for what the config file declares.
    pub fn check_declaration(&self, declaration: &EventDeclaration) -> Result<(), String> {
        if let Some(extra) = declaration.collector.len().checked_sub(1) {
            self.check_collector_count(extra)?;
        }
        for (count, watcher) in declaration.watcher.iter().enumerate() {
            self.check_watcher(watcher, count)
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
