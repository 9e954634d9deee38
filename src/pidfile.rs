//! The pidfile and its lock: the one thing that says "a master is running here".
//!
//! The master holds an exclusive `flock` on the pidfile for its whole life. The lock, not
//! the file's existence, is the truth: a pidfile nobody holds is stale (its master was
//! killed) and is taken over. The CLI only probes; it never signals a pid from a file
//! that no live master holds.
//!
//! An upgrade hands the lock over without a gap: the new master inherits the descriptor
//! (a `flock` belongs to the open file, which both then share), and the old one writes the
//! new pid and leaves the file in place when it exits.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

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
        let file = open(path)?;
        let file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => locked,
            Err((mut file, Errno::EWOULDBLOCK)) => {
                let pid = read_pid(&mut file)
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
        };
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

    fn write(&mut self, pid: u32) -> anyhow::Result<()> {
        let file = &mut self.file;
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{pid}"))
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

/// Tells whether a master holds `path`, without disturbing it.
pub fn probe(path: &Path) -> anyhow::Result<Probe> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Probe::NotRunning),
        Err(e) => return Err(e).with_context(|| format!("cannot open pidfile {}", path.display())),
    };
    let pid = read_pid(&mut file);
    // A shared lock succeeds only when no master holds the exclusive one.
    match Flock::lock(file, FlockArg::LockSharedNonblock) {
        Ok(_released_on_drop) => Ok(Probe::Stale(pid)),
        Err((_, Errno::EWOULDBLOCK)) => match pid {
            Some(pid) => Ok(Probe::Running(pid)),
            None => bail!("pidfile {} is locked but holds no pid", path.display()),
        },
        Err((_, errno)) => {
            Err(errno).with_context(|| format!("cannot probe pidfile {}", path.display()))
        }
    }
}

fn open(path: &Path) -> anyhow::Result<File> {
    crate::files::open_state_file(path, "pidfile", 0o644)
}

fn read_pid(file: &mut File) -> Option<Pid> {
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    text.trim()
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
