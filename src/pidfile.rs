//! The pidfile and its lock: the one thing that says "a master is running here".
//!
//! The master holds an exclusive `flock` on the pidfile for its whole life. The lock, not
//! the file's existence, is the truth: a pidfile nobody holds is stale (its master was
//! killed) and is taken over. The CLI only probes; it never signals a pid from a file
//! that no live master holds, nor one the control socket does not confirm. A pidfile
//! that others could write (its folder, or the file itself) is refused at start
//! (security.md). Locked, it always holds a whole pid: written over, never truncated
//! first.
//!
//! An upgrade hands the lock over without a gap: the new master inherits the descriptor
//! (a `flock` belongs to the open file, which both then share), and the old one writes the
//! new pid and leaves the file in place when it exits.

use std::fs::File;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::unistd::Pid;

/// A pidfile whose lock this process holds.
pub struct Pidfile {
    path: PathBuf,
    file: Flock<File>,
}

/// What the CLI learns from a pidfile without taking it.
#[derive(Debug, PartialEq)]
pub enum Probe {
    /// No pidfile.
    NotRunning,
    /// A pidfile that no process holds: its master died without cleaning up.
    Stale(Option<Pid>),
    /// A live master holds the lock.
    Running(Pid),
}

impl Pidfile {
    /// Takes the lock and writes our pid; fails with the running master's pid if there is one.
    pub fn acquire(path: &Path) -> anyhow::Result<Pidfile> {
        crate::files::create_parent_dir(path)?;
        check_folder(path)?;
        let file = open(path)?;
        check_owner(&file, path)?;
        let file = lock_exclusive(file, path)?;
        // Readable by all, whatever the umask (systemd's is 027): any user who may read
        // the config may ask `status`, which probes the lock (process-model.md).
        file.set_permissions(std::fs::Permissions::from_mode(0o644))
            .with_context(|| format!("cannot make pidfile {} readable", path.display()))?;
        let mut pidfile = Pidfile {
            path: path.to_path_buf(),
            file,
        };
        pidfile.write(std::process::id())?;
        Ok(pidfile)
    }

    /// The pidfile whose locked descriptor the previous master handed over (upgrade in
    /// place): the lock is already ours; the file now names this process.
    pub fn adopt(fd: OwnedFd, path: &Path) -> anyhow::Result<Pidfile> {
        let file = Flock::lock(File::from(fd), FlockArg::LockExclusiveNonblock)
            .map_err(|(_, errno)| errno)
            .with_context(|| format!("cannot take over the lock of pidfile {}", path.display()))?;
        let mut pidfile = Pidfile {
            path: path.to_path_buf(),
            file,
        };
        pidfile.write(std::process::id())?;
        Ok(pidfile)
    }

    /// Names `successor` in the file and leaves the file and its lock to it. Neither
    /// removed nor unlocked: `Flock`'s drop would release the lock for the successor
    /// too, since both share the open file. The descriptor closes when this process exits.
    pub fn hand_over(mut self, successor: u32) -> anyhow::Result<()> {
        let written = self.write(successor);
        std::mem::forget(self);
        written
    }

    /// Writes `pid` over the start of the file, then cuts what a longer pid left after
    /// it: a reader sees the old pid or the new one, never an empty file (truncating
    /// first would show one), and readers take the first line only.
    fn write(&mut self, pid: u32) -> anyhow::Result<()> {
        use std::os::unix::fs::FileExt;
        let line = format!("{pid}\n");
        let file = &self.file;
        file.write_all_at(line.as_bytes(), 0)
            .and_then(|()| file.set_len(line.len() as u64))
            .and_then(|()| file.sync_all())
            .with_context(|| format!("cannot write pidfile {}", self.path.display()))
    }

    /// The descriptor a forked child must close, or it would keep the lock alive.
    pub fn raw_fd(&self) -> i32 {
        use std::os::fd::AsRawFd;
        self.file.as_raw_fd()
    }
}

/// Dropping the pidfile removes it, while the lock is still held, so that no one sees it
/// half-gone. A forked child never drops the master's copy: it exits without unwinding.
impl Drop for Pidfile {
    fn drop(&mut self) {
        crate::files::remove_owned(&self.path, "pidfile");
    }
}

/// Tells whether a master holds `path`, without disturbing it. A pidfile caught
/// mid-change (a master between creating it and writing its pid, or one that just removed
/// it) is looked at again for a moment rather than misreported.
pub fn probe(path: &Path) -> anyhow::Result<Probe> {
    let deadline = Instant::now() + SETTLE;
    loop {
        match look(path)? {
            Look::Settled(probe) => return Ok(probe),
            Look::Changing { .. } if Instant::now() < deadline => std::thread::sleep(LOOK_AGAIN),
            Look::Changing { locked: true } => {
                bail!("pidfile {} is locked but holds no pid", path.display())
            }
            Look::Changing { locked: false } => return Ok(Probe::Stale(None)),
        }
    }
}

/// How long a pidfile may look half-made before a probe believes it, and how long a
/// start waits out a probe's shared lock (which lasts microseconds; a master's lasts its
/// life).
const SETTLE: Duration = Duration::from_millis(500);
const LOOK_AGAIN: Duration = Duration::from_millis(10);

/// One look at a pidfile.
enum Look {
    Settled(Probe),
    /// No pid in it yet, or no longer at its path since it was opened.
    Changing {
        locked: bool,
    },
}

fn look(path: &Path) -> anyhow::Result<Look> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Look::Settled(Probe::NotRunning));
        }
        Err(e) => return Err(e).with_context(|| format!("cannot open pidfile {}", path.display())),
    };
    // A shared lock succeeds only when no master holds the exclusive one. The pid is read
    // once the lock says who holds the file: a master writes it only under its lock.
    match Flock::lock(file, FlockArg::LockSharedNonblock) {
        Ok(mut unheld) if still_at(path, &unheld) => Ok(match read_pid(&mut unheld) {
            Some(pid) => Look::Settled(Probe::Stale(Some(pid))),
            None => Look::Changing { locked: false },
        }),
        Ok(_removed_by_its_master) => Ok(Look::Changing { locked: false }),
        Err((mut held, Errno::EWOULDBLOCK)) => Ok(match read_pid(&mut held) {
            Some(pid) => Look::Settled(Probe::Running(pid)),
            None => Look::Changing { locked: true },
        }),
        Err((_, errno)) => {
            Err(errno).with_context(|| format!("cannot probe pidfile {}", path.display()))
        }
    }
}

/// Whether `file` is still the one at `path`: a master removes its pidfile on the way
/// out, so one opened just before that is no longer the pidfile.
fn still_at(path: &Path, file: &File) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::symlink_metadata(path), file.metadata()) {
        (Ok(at_path), Ok(opened)) => (at_path.dev(), at_path.ino()) == (opened.dev(), opened.ino()),
        _ => false,
    }
}

/// Takes the exclusive lock, waiting out a probe's shared one for a moment; fails with
/// the running master's pid if a master holds it.
fn lock_exclusive(file: File, path: &Path) -> anyhow::Result<Flock<File>> {
    let deadline = Instant::now() + SETTLE;
    let mut file = file;
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => return Ok(locked),
            Err((unlocked, Errno::EWOULDBLOCK)) if Instant::now() < deadline => {
                file = unlocked;
                std::thread::sleep(LOOK_AGAIN);
            }
            Err((mut held, Errno::EWOULDBLOCK)) => {
                let pid = read_pid(&mut held)
                    .map(|pid| format!("pid {pid}"))
                    .unwrap_or_else(|| "unknown pid".to_string());
                bail!(
                    "eventsd is already running ({pid}, pidfile {})",
                    path.display()
                );
            }
            Err((_, errno)) => {
                return Err(errno)
                    .with_context(|| format!("cannot lock pidfile {}", path.display()));
            }
        }
    }
}

/// systemd's rule for the pidfile of a root service: its folder is written by root or
/// eventsd's user alone. Anyone else who may write there may plant a pid for `stop` to
/// kill; a sticky folder such as /tmp is no exception, since the planter owns the file it
/// leaves. A folder above it that others may write without the sticky bit would let them
/// swap the folder itself.
fn check_folder(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let me = nix::unistd::geteuid().as_raw();
    let folders = path
        .ancestors()
        .skip(1)
        .filter(|dir| !dir.as_os_str().is_empty());
    for (depth, dir) in folders.enumerate() {
        let metadata = std::fs::metadata(dir)
            .with_context(|| format!("cannot inspect folder {}", dir.display()))?;
        let mode = metadata.mode() & 0o7777;
        let refused = if depth == 0 {
            (metadata.uid() != 0 && metadata.uid() != me) || mode & 0o022 != 0
        } else {
            mode & 0o022 != 0 && mode & 0o1000 == 0
        };
        if refused {
            bail!(
                "pidfile {} is refused: folder {} (uid {}, mode {mode:o}) may be written by \
                 others than root and eventsd's user (uid {me}), who could plant a pid for \
                 `stop` to kill; choose a folder such as /run/eventsd",
                path.display(),
                dir.display(),
                metadata.uid()
            );
        }
    }
    Ok(())
}

/// A pidfile another user owns or may write could name any process: refused, not taken over.
fn check_owner(file: &File, path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let metadata = file
        .metadata()
        .with_context(|| format!("cannot inspect pidfile {}", path.display()))?;
    let me = nix::unistd::geteuid().as_raw();
    let mode = metadata.mode() & 0o7777;
    if metadata.uid() != me || mode & 0o022 != 0 {
        bail!(
            "pidfile {} is refused: owned by uid {} with mode {mode:o}, it may be written by \
             others than eventsd's user (uid {me}); remove it",
            path.display(),
            metadata.uid()
        );
    }
    Ok(())
}

fn open(path: &Path) -> anyhow::Result<File> {
    crate::files::open_state_file(path, "pidfile", 0o644)
}

/// The pid on the first line: the only one a master writes, whatever a longer pid
/// written before it left for the moment until the file is cut.
fn read_pid(file: &mut File) -> Option<Pid> {
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    text.lines()
        .next()?
        .trim()
        .parse()
        .ok()
        .filter(|&pid: &i32| pid > 0)
        .map(Pid::from_raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_is_exclusive_and_the_file_goes_with_its_holder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/eventsd.pid");
        assert_eq!(probe(&path).unwrap(), Probe::NotRunning);

        let held = Pidfile::acquire(&path).unwrap();
        let me = Pid::from_raw(std::process::id() as i32);
        assert_eq!(probe(&path).unwrap(), Probe::Running(me));
        let second = Pidfile::acquire(&path)
            .err()
            .expect("second lock must fail");
        assert!(format!("{second}").contains("already running"), "{second}");

        drop(held);
        assert_eq!(probe(&path).unwrap(), Probe::NotRunning);
    }

    #[test]
    fn a_pidfile_nobody_holds_is_stale_and_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("eventsd.pid");
        std::fs::write(&path, "4242\n").unwrap();
        assert_eq!(
            probe(&path).unwrap(),
            Probe::Stale(Some(Pid::from_raw(4242)))
        );

        let taken_over = Pidfile::acquire(&path).unwrap();
        let written = std::fs::read_to_string(&path).unwrap();
        assert_eq!(written.trim(), std::process::id().to_string());
        drop(taken_over);
    }
}
