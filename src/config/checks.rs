//! What `configtest` catches that would otherwise fail later (process-model.md, "configtest
//! catches what would fail later"): values that parse but cannot work, checked across
//! keys and against the file system at load, so that a start, a reload or the first
//! delivery never finds them.
//!
//! Owns those checks only; it reads the file system and never changes it.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::bail;

use super::{Config, LogTarget};
use crate::registry::Action;

impl Config {
    /// Every check of this file, in the order of the file's sections.
    pub(super) fn check_what_would_fail_later(&self) -> anyhow::Result<()> {
        self.check_own_folders()?;
        crate::tls::load(self.server.tls_files())?;
        self.check_smtp()?;
        self.check_webhook_allow()?;
        self.check_declared_actions()
    }

    /// eventsd creates its own folders (the state folder, the pidfile's and the log's),
    /// one level deep: never a chain of parents as root from a mistyped path.
    fn check_own_folders(&self) -> anyhow::Result<()> {
        let daemon = &self.daemon;
        let mut folders = vec![("daemon.state_dir", daemon.state_dir.as_path())];
        let files = [
            ("daemon.pidfile", Some(daemon.pidfile.as_path())),
            (
                "daemon.control_socket",
                Some(daemon.control_socket.as_path()),
            ),
            ("daemon.access_log", daemon.access_log.as_deref()),
            (
                "daemon.log",
                match &daemon.log {
                    LogTarget::File(path) => Some(path.as_path()),
                    _ => None,
                },
            ),
        ];
        for (key, file) in files {
            if let Some(folder) = file.and_then(Path::parent) {
                folders.push((key, folder));
            }
        }
        for (key, folder) in folders {
            let creatable = folder.parent().is_none_or(Path::is_dir);
            if !folder.is_dir() && !creatable {
                bail!(
                    "{key}: folder {} does not exist, nor does its parent (eventsd creates \
                     its own folder, not a chain of them)",
                    folder.display()
                );
            }
        }
        Ok(())
    }

    fn check_smtp(&self) -> anyhow::Result<()> {
        let from = &self.smtp.from;
        if from.parse::<lettre::message::Mailbox>().is_err() {
            bail!(
                "smtp.from: expected an e-mail address such as eventsd@example.com, found \"{from}\""
            );
        }
        Ok(())
    }

    fn check_webhook_allow(&self) -> anyhow::Result<()> {
        for prefix in &self.actions.webhook_allow {
            let host = prefix
                .strip_prefix("https://")
                .or_else(|| prefix.strip_prefix("http://"));
            if host.is_none_or(|host| host.is_empty() || host.starts_with('/')) {
                bail!(
                    "actions.webhook_allow: expected the start of an http(s) URL with its \
                     host, such as https://hooks.example.com/, found \"{prefix}\""
                );
            }
        }
        Ok(())
    }

    /// A declared action must be deliverable: the runner checks every delivery against
    /// the same rules, and a command must be a program that can run.
    fn check_declared_actions(&self) -> anyhow::Result<()> {
        let destinations = self.destinations();
        for event in &self.event {
            for watcher in &event.watcher {
                let at = || format!("event `{}`, watcher `{}`", event.name, watcher.name);
                if let Err(why) = destinations.check_action(&watcher.action) {
                    bail!("{}: {why}", at());
                }
                if let Action::Command { argv, .. } = &watcher.action {
                    let program = argv.first().map_or("", String::as_str);
                    if !is_executable(program) {
                        bail!(
                            "{}: command `{program}` is not an executable file (give its \
                             absolute path, or a name found in PATH)",
                            at()
                        );
                    }
                }
            }
        }
        Ok(())
    }
}

/// As `execvp` finds a program: a path with a slash as it is, a bare name in `PATH`.
fn is_executable(program: &str) -> bool {
    let runs = |path: &Path| {
        path.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.is_empty() {
        return false;
    }
    if program.contains('/') {
        return runs(Path::new(program));
    }
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| runs(&dir.join(program))))
}
