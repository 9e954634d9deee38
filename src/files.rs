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

/// Replaces `path` with `contents` so that a crash leaves either the old or the new file,
/// never a mix: write a temporary file beside it, fsync it, rename it over `path`, then
/// fsync the folder so that the rename itself is durable.
pub fn replace_atomically(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;

    create_parent_dir(path)?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let temporary = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o640)
        .open(&temporary)
        .and_then(|mut file| file.write_all(contents).and_then(|()| file.sync_all()))
        .and_then(|()| std::fs::rename(&temporary, path))
        .and_then(|()| std::fs::File::open(dir)?.sync_all());
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temporary);
        return Err(e).with_context(|| format!("cannot replace {}", path.display()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_atomically_leaves_only_the_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/registry.json");
        replace_atomically(&path, b"old").unwrap();
        replace_atomically(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(names.len(), 1, "temporary file left behind");
    }

    #[test]
    fn a_failed_replace_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.json");
        replace_atomically(&path, b"old").unwrap();
        // A folder in the way of the rename makes it fail.
        let blocked = dir.path().join("blocked");
        std::fs::create_dir_all(blocked.join("inside")).unwrap();
        assert!(replace_atomically(&blocked, b"new").is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
    }
}
