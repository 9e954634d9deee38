//! Upgrade in place (process-model.md): SIGUSR2, or `eventsd upgrade`, replaces the
//! running binary without refusing a request or losing a count — nginx's and unicorn's
//! USR2, in one step.
//!
//! The old master forks a child that executes the binary on disk as the new master (the
//! successor), handing it the listening socket, the control socket, the locked pidfile
//! and a channel, by descriptor numbers named in `EVENTSD_UPGRADE`. The successor starts
//! its workers on the same listening socket and says `Ready`; from then on both serve. The
//! old master drains its workers and its action runner, saves its counters, names the
//! successor in the pidfile and to systemd (`MAINPID=`), and exits. Its end of the channel
//! closes with it: that, and nothing else, tells the successor to take over, so an old
//! master that dies half-way hands over too.
//!
//! Until it takes over, the successor changes no state the old master still writes: it
//! holds its workers' counts and registry changes (their replies wait, their events are
//! acknowledged at once), and opens neither the counters nor the journal. Taking over, it
//! loads what the old master left, then applies what it held, in order.
//!
//! A successor that fails (exec, configuration, a worker that cannot start) or is not
//! ready within `READY_WITHIN` is reaped or killed, and the old master carries on: the
//! failure is in its status (`upgrades_failed`, `last_upgrade_error`), which `eventsd
//! upgrade` reads to exit 1.
//!
//! The verbs, both sides: the state they drive is the `Succession` component
//! (`succession.rs`).

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use log::{error, info, warn};
use nix::poll::PollFlags;
use nix::unistd::Pid;

use super::alerts::open_journal;
use super::oncall_state::OnCall;
use super::succession::{INHERITANCE, Inheritance, Mode, SuccessorMessage, Upgrade};
use super::{Master, Phase, setup};
use crate::child::{self, Child, Role};
use crate::config;
use crate::logging::Sink;
use crate::notify;
use crate::pidfile::Pidfile;
use crate::watch::Watch;
use crate::watch::store::MemoryStore;

use super::control::ControlSocket;

/// A successor not ready by then is killed, and the old master carries on.
const READY_WITHIN: Duration = Duration::from_secs(60);

impl Master {
    /// SIGUSR2: starts a successor from the binary on disk, unless something else is
    /// under way.
    pub(super) fn begin_upgrade(&mut self) {
        let busy = match self.succession.mode {
            Mode::Upgrading(_) => {
                warn!("upgrade requested while one is under way; ignored");
                return;
            }
            Mode::TakingOver(_) => Some("this master is itself still taking over"),
            Mode::Settled => None,
        };
        let busy = if busy.is_some() {
            busy
        } else if self.lifecycle.reload_in_progress {
            Some("a reload is under way")
        } else if self.lifecycle.phase != Phase::Running {
            Some("eventsd is starting or stopping")
        } else {
            None
        };
        if let Some(why) = busy {
            self.succession.failed(format!("upgrade refused: {why}"));
            return;
        }
        match self.spawn_successor() {
            Ok(successor) => {
                info!(
                    "upgrade: new master {} started from {}",
                    successor.pid,
                    self.ground.binary.display()
                );
                self.succession.mode = Mode::Upgrading(Upgrade {
                    successor,
                    ready: false,
                });
            }
            Err(e) => (self.succession).failed(format!("cannot start the new master: {e:#}")),
        }
    }

    fn spawn_successor(&mut self) -> anyhow::Result<Child> {
        let (Some(control), Some(pidfile)) = (&self.ground.control, &self.ground.pidfile) else {
            anyhow::bail!("this master holds no control socket or pidfile to hand over");
        };
        let inheritance = Inheritance {
            listener: self.ground.listener.as_raw_fd(),
            control: control.raw_fd(),
            pidfile: pidfile.raw_fd(),
            predecessor: -1,
            syslog_by_default: self.ground.default_sink == Sink::Syslog,
        };
        let binary = self.ground.binary.clone();
        let source = self.ground.source.clone();
        // Nothing to close by number: `exec` closes every descriptor but the inherited
        // ones, which are the only ones not marked close-on-exec.
        child::fork_child(Role::Successor, &[], move |channel| {
            exec_successor(&binary, &source, inheritance, &channel)
        })
    }

    /// The successor's messages on the old master's side.
    pub(super) fn read_successor(&mut self, events: PollFlags) {
        let Mode::Upgrading(upgrade) = &mut self.succession.mode else {
            return;
        };
        for message in upgrade.successor.exchange::<SuccessorMessage>(events) {
            match message {
                SuccessorMessage::Ready if !upgrade.ready => {
                    upgrade.ready = true;
                    info!(
                        "upgrade: new master {} is ready; handing over",
                        upgrade.successor.pid
                    );
                    self.lifecycle.phase = Phase::HandingOver;
                    self.stop_children_but_the_successor("the new master serves");
                    return;
                }
                SuccessorMessage::Ready => {}
            }
        }
    }

    /// On the tick: a successor that is not ready in time is killed.
    pub(super) fn enforce_upgrade_deadline(&mut self, now: Instant) {
        if let Mode::Upgrading(upgrade) = &mut self.succession.mode {
            if !upgrade.ready && upgrade.successor.age(now) > READY_WITHIN {
                let details = format!("not ready within {}s", READY_WITHIN.as_secs());
                upgrade.successor.kill("it was too slow to start", &details);
            }
        }
    }

    /// Called by the reaper for the successor. It exits while this master still runs
    /// only when it failed: this master carries on, workers and all.
    pub(super) fn on_successor_exit(&mut self, pid: Pid, how: &str) {
        let Mode::Upgrading(upgrade) = &self.succession.mode else {
            return;
        };
        if upgrade.successor.pid != pid {
            return;
        }
        let Mode::Upgrading(upgrade) = std::mem::replace(&mut self.succession.mode, Mode::Settled)
        else {
            return;
        };
        let why = upgrade.successor.killed_because.map_or_else(
            || how.to_string(),
            |because| format!("was killed: {because}"),
        );
        self.succession.failed(format!(
            "upgrade failed: the new master {pid} {why}; see its log"
        ));
        if self.lifecycle.phase == Phase::HandingOver {
            // Its workers are draining: `reconcile` replaces them.
            self.lifecycle.phase = Phase::Running;
        }
    }

    /// The old master's last act, once its children are gone: what the successor loads
    /// is saved, then the pidfile and the control socket are left to it.
    pub(super) fn hand_over(&mut self) {
        let Mode::Upgrading(upgrade) = std::mem::replace(&mut self.succession.mode, Mode::Settled)
        else {
            return;
        };
        let successor = upgrade.successor.pid;
        self.count_everything();
        self.keep_what_redis_lacks();
        self.oncall.flush();
        if let Err(e) = self
            .counting
            .watch
            .save(&setup::counters_path(&self.ground.config))
        {
            error!("counters not saved for the new master: {e:#}");
        }
        if let Some(pidfile) = self.ground.pidfile.take() {
            if let Err(e) = pidfile.hand_over(successor.as_raw() as u32) {
                error!("{e:#}");
            }
        }
        if let Some(control) = self.ground.control.take() {
            control.hand_over();
        }
        notify::send(&format!("MAINPID={successor}"));
        info!("upgrade: handed over to new master {successor}; exiting");
    }

    /// Ready: a successor tells the old master, which may hand over; a master on its
    /// own tells whoever started it.
    pub(super) fn announce_ready(&mut self) {
        let Mode::TakingOver(predecessor) = &mut self.succession.mode else {
            self.ground
                .announcer
                .ready(&self.ground.config.server.listen.to_string());
            return;
        };
        info!("ready; waiting for the old master to hand over");
        if let Err(e) = predecessor.channel.send(&SuccessorMessage::Ready) {
            warn!("cannot tell the old master that this one is ready: {e}");
        }
    }

    /// The successor's side: the old master's channel; its closing is the hand-over.
    pub(super) fn read_predecessor(&mut self, events: PollFlags) -> anyhow::Result<()> {
        let Mode::TakingOver(predecessor) = &mut self.succession.mode else {
            return Ok(());
        };
        let handed_over = match predecessor
            .channel
            .exchange::<()>(events.contains(PollFlags::POLLOUT))
        {
            Ok(received) => received.closed,
            Err(e) => {
                warn!("the channel to the old master broke ({e}); taking over");
                true
            }
        };
        if handed_over {
            self.take_over()?;
        }
        Ok(())
    }

    /// The components built held while taking over, released: from now on this master
    /// keeps a runner and a link, and snapshots its counters.
    fn release_what_waited_for_the_take_over(&mut self) {
        self.actions.release_runner();
        self.cluster.release_link();
        self.counting.release_snapshots();
    }

    /// Loads what the old master left, applies what was held, then serves as the master.
    fn take_over(&mut self) -> anyhow::Result<()> {
        let Mode::TakingOver(predecessor) =
            std::mem::replace(&mut self.succession.mode, Mode::Settled)
        else {
            return Ok(());
        };
        self.reroute_counts();
        let daemon = &self.ground.config.daemon;
        self.ground.pidfile = Some(Pidfile::adopt(predecessor.pidfile, &daemon.pidfile)?);
        self.ground.control = Some(ControlSocket::adopt(
            predecessor.control,
            &daemon.control_socket,
        )?);
        match setup::load_registry(&self.ground.config) {
            Ok(registry) => self.registry = registry,
            Err(e) => error!("keeping the registry read at start: {e:#}"),
        }
        let counters = setup::counters_path(&self.ground.config);
        let store = MemoryStore::load(&counters, self.ground.config.watchers.max_keys)
            .unwrap_or_else(|e| {
                error!("starting with empty counters: {e:#}");
                MemoryStore::new(self.ground.config.watchers.max_keys)
            });
        self.counting.watch = Watch::new(Box::new(store));
        self.counting.watch.sync(&self.registry);
        self.take_restored_counts();
        self.push_registry();
        let journal = open_journal(&self.ground.config, &self.registry, self.board.totals_mut())?;
        self.actions.replace_journal(journal);
        self.oncall = OnCall::open(&self.ground.config)?;
        self.release_what_waited_for_the_take_over();
        let (counts, changes) = (
            predecessor.deferred_counts.len(),
            predecessor.deferred_changes.len(),
        );
        for (at, batch) in predecessor.deferred_counts {
            self.counting.backlog.push(None, at, batch);
        }
        // What expired meanwhile was answered 503 by its worker, and is dropped.
        for (asker, question) in predecessor.deferred_changes {
            self.answer(asker, question);
        }
        info!(
            "took over from the old master ({counts} count batches and {changes} registry \
             changes held meanwhile)"
        );
        notify::send(&format!("MAINPID={}", std::process::id()));
        self.ground
            .announcer
            .ready(&self.ground.config.server.listen.to_string());
        Ok(())
    }
}

/// In the forked child: the inherited descriptors stay open across `exec`, the binary on
/// disk replaces this process, with the same configuration and working folder.
fn exec_successor(
    binary: &Path,
    source: &config::Source,
    mut inheritance: Inheritance,
    channel: &UnixStream,
) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;
    inheritance.predecessor = channel.as_raw_fd();
    inheritance.close_on_exec(false)?;
    let mut command = std::process::Command::new(binary);
    if let Some(file) = &source.file {
        command.arg("--config").arg(file);
    }
    command
        .arg("run")
        .env(INHERITANCE, serde_json::to_string(&inheritance)?)
        .current_dir(source.base_dir());
    let error = command.exec();
    Err(error).with_context(|| format!("cannot execute {}", binary.display()))
}
