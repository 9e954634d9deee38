//! File-system helpers shared by the daemon's parts: folders for the files it creates,
//! its state files read and replaced without ever following a symlink (security.md), its
//! JSON-lines state files (`JsonLines`: the journal of pending firings, the alert
//! history), and removal of the files it owns when their owner goes away.
//!
//! Every error names the path and what was being done with it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use log::warn;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Creates the folder that will hold `path`, if missing: that one folder, never a chain
/// of parents (a mistyped path run as root must not build a tree).
pub fn create_parent_dir(path: &Path) -> anyhow::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => match std::fs::create_dir(dir) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                Err(e).with_context(|| format!("cannot create folder {}", dir.display()))
            }
            _ => Ok(()),
        },
        _ => Ok(()),
    }
}

/// Reads a state file (`what`: "registry file"...); `None` when it does not exist. A
/// symlink at `path` is an error, never followed: the state folder is eventsd's alone.
pub fn read_state_file(path: &Path, what: &str) -> anyhow::Result<Option<Vec<u8>>> {
    let opened = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path);
    let mut file = match opened {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(refused(e, what, path)),
    };
    check_regular(&file, what, path)?;
    let mut contents = Vec::new();
    file.read_to_end(&mut contents)
        .with_context(|| format!("cannot read {what} {}", path.display()))?;
    Ok(Some(contents))
}

/// Opens `path` for appending, creating it 0640 (whatever more the umask would allow),
/// never through a symlink (`ELOOP`), never blocking on a FIFO (`ENXIO`), and only if it
/// is a regular file: for log files and file appenders alike.
pub fn open_for_append(path: &Path) -> std::io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    Ok(file)
}

/// Opens (or creates, `mode`) a file eventsd keeps, such as the pidfile, read-write, never
/// through a symlink, and only if it is a regular file.
pub fn open_state_file(path: &Path, what: &str, mode: u32) -> anyhow::Result<File> {
    create_parent_dir(path)?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| refused(e, what, path))?;
    check_regular(&file, what, path)?;
    Ok(file)
}

fn refused(error: std::io::Error, what: &str, path: &Path) -> anyhow::Error {
    if error.raw_os_error() == Some(libc::ELOOP) {
        anyhow::anyhow!(
            "{what} {} is a symlink; eventsd never follows one in its own files",
            path.display()
        )
    } else {
        anyhow::Error::new(error).context(format!("cannot open {what} {}", path.display()))
    }
}

fn check_regular(file: &File, what: &str, path: &Path) -> anyhow::Result<()> {
    let metadata = file
        .metadata()
        .with_context(|| format!("cannot inspect {what} {}", path.display()))?;
    if !metadata.is_file() {
        anyhow::bail!("{what} {} is not a regular file", path.display());
    }
    Ok(())
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
/// fsync the folder so that the rename itself is durable. The temporary file has a
/// random name and is created `O_EXCL`: nothing planted under a guessable name is
/// ever written through (rename replaces a symlink at `path`, never its target).
pub fn replace_atomically(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    create_parent_dir(path)?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let temporary = dir.join(format!(".{name}.tmp-{}", uuid::Uuid::new_v4().simple()));
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o640)
        .custom_flags(libc::O_NOFOLLOW)
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

/// A state file of JSON lines, one record a line, the later lines of a record winning
/// on replay: appended as things happen, compacted now and then by an atomic replace with
/// what is still live. Lines are gathered by `push` and written by `flush`, each batch in
/// one `write` of whole lines (no fsync: a crash of the process loses nothing written, a
/// power loss may lose the last lines).
pub struct JsonLines {
    path: PathBuf,
    /// `None` until opened: a master that upgrades the running one leaves the file to the
    /// old one until it takes over (two writers, one compacting, would lose lines).
    file: Option<File>,
    /// Lines pushed and not written yet.
    unwritten: Vec<u8>,
    /// Lines in the file, and pushed: compaction is due when they far outnumber what is
    /// live.
    lines: usize,
}

impl JsonLines {
    /// The file at `path`, not open: `replace` opens it.
    pub fn unopened(path: &Path) -> JsonLines {
        JsonLines {
            path: path.to_path_buf(),
            file: None,
            unwritten: Vec::new(),
            lines: 0,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its descriptor, while open: for a child to close.
    pub fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        self.file.as_ref().map(std::os::fd::AsRawFd::as_raw_fd)
    }

    /// Whether the lines far outnumber the `live` records: time to `replace`.
    pub fn wants_compaction(&self, live: usize) -> bool {
        self.lines > 2 * live + 1000
    }

    /// One record, as a line to write at the next `flush`.
    pub fn push(&mut self, record: &impl Serialize) {
        if self.file.is_none() {
            warn!("{}: not open yet; a line is lost", self.path.display());
            return;
        }
        match serde_json::to_writer(&mut self.unwritten, record) {
            Ok(()) => {
                self.unwritten.push(b'\n');
                self.lines += 1;
            }
            Err(e) => warn!("cannot write to {}: {e}", self.path.display()),
        }
    }

    /// Writes what was pushed, in one `write`.
    pub fn flush(&mut self) {
        if self.unwritten.is_empty() {
            return;
        }
        let lines = std::mem::take(&mut self.unwritten);
        let Some(file) = self.file.as_mut() else {
            return;
        };
        if let Err(e) = file.write_all(&lines) {
            warn!("cannot write to {}: {e}", self.path.display());
        }
    }

    /// Replaces the file with `records` (`what` they are, for errors), atomically, then
    /// appends to it. What was pushed and not written is dropped: `records` holds it.
    pub fn replace<T: Serialize>(
        &mut self,
        records: impl IntoIterator<Item = T>,
        what: &str,
    ) -> anyhow::Result<()> {
        let (mut text, mut lines) = (Vec::new(), 0);
        for record in records {
            serde_json::to_writer(&mut text, &record)
                .with_context(|| format!("cannot serialize {what}"))?;
            text.push(b'\n');
            lines += 1;
        }
        replace_atomically(&self.path, &text)?;
        let file = open_for_append(&self.path)
            .with_context(|| format!("cannot open {}", self.path.display()))?;
        self.file = Some(file);
        self.unwritten.clear();
        self.lines = lines;
        Ok(())
    }

    /// The records of the file at `path` (`what` it is, for errors; missing: none) in
    /// the order they were written, each with where it stands (`FILE line N`) for the
    /// reader's own checks. Lines cut by a crash, malformed, or longer than
    /// `max_line_bytes` (no line eventsd writes is) are skipped with a log line.
    pub fn read<T: DeserializeOwned>(
        path: &Path,
        what: &str,
        max_line_bytes: usize,
    ) -> anyhow::Result<Vec<(String, T)>> {
        let Some(text) = read_state_file(path, what)? else {
            return Ok(Vec::new());
        };
        let mut records = Vec::new();
        for (number, line) in text.split(|&b| b == b'\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            let where_ = format!("{} line {}", path.display(), number + 1);
            if line.len() > max_line_bytes {
                warn!(
                    "{where_}: {} bytes, more than any line of a {what}; skipped",
                    line.len()
                );
                continue;
            }
            match serde_json::from_slice(line) {
                Ok(record) => records.push((where_, record)),
                Err(e) => warn!("{where_}: {e}; skipped"),
            }
        }
        Ok(records)
    }
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
    fn state_files_are_never_read_or_opened_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "secret").unwrap();
        let link = dir.path().join("registry.json");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let read = read_state_file(&link, "registry file").unwrap_err();
        assert!(format!("{read:#}").contains("is a symlink"), "{read:#}");
        let opened = open_state_file(&link, "pidfile", 0o644).unwrap_err();
        assert!(format!("{opened:#}").contains("is a symlink"), "{opened:#}");
        assert_eq!(
            read_state_file(&dir.path().join("none"), "x").unwrap(),
            None
        );
        replace_atomically(&link, b"new").unwrap();
        assert_eq!(
            std::fs::read_to_string(&victim).unwrap(),
            "secret",
            "target untouched"
        );
        assert_eq!(
            std::fs::read(&link).unwrap(),
            b"new",
            "the link itself was replaced"
        );
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
