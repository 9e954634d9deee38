//! File-system helpers shared by the daemon's parts: folders for the files it creates,
//! and removal of the files it owns when their owner goes away.
//!
//! Every error names the path and what was being done with it.

use std::path::Path;

use anyhow::Context;

/// Creates the folder that will hold `path`, if missing.
pub fn create_parent_dir(path: &Path) -> anyhow::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create folder {}", dir.display())),
        _ => Ok(()),
    }
}

/// Removes `path`, a `what` (e.g. "pidfile") this process owns; a failure is logged,
/// because it happens on the way out, where nothing else can be done about it.
pub fn remove_owned(path: &Path, what: &str) {
    if let Err(e) = std::fs::remove_file(path) {
        log::warn!("cannot remove {what} {}: {e}", path.display());
    }
}
