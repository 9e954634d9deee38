//! The master process: binds the listening socket, holds the pidfile, forks and
//! supervises its children (the worker pool, the action runner, counters snapshots, a new
//! master during an upgrade, and in a cluster the cluster link), owns the registry and
//! every counter, serves its status on the control socket.
//!
//! `run_loop` is the whole cycle, in the fixed order of gunicorn's arbiter and nginx's
//! master cycle: wait (poll every descriptor; read what the children sent; turn signals
//! into flags) → act on the signal flags → reap → count a slice of the waiting counts →
//! enforce timeouts (on the tick) → reconcile the pool to its target → release the
//! answers held for read-your-writes. The tick also starts a counters snapshot when they
//! changed (`snapshot.rs`). While counts wait, the wait only looks and does not sleep.
//! Reload, SIGTTIN/SIGTTOU, crashes and the dynamic pool only move the target or the
//! generation; `reconcile` converges. An upgrade (SIGUSR2) starts a new master from the
//! binary on disk and hands everything over to it (`upgrade`).
//!
//! The master never starts a thread (a fork would copy only one of them, with any lock
//! another one held) and never blocks: every socket it polls is non-blocking, and
//! everything slow happens in children.
//!
//! `Master` holds components, each the owner of its state, in files that never name
//! `Master`: `ground` (the configuration in force, the descriptors), `pool` (workers,
//! held answers), `counting` (counters, backlog, the route counts take, `snapshot`s),
//! `alerts` (the `journal` and the runner), `succession` (an upgrade, either side),
//! `cluster_state` (alone or a member of a cluster: a mode only it and `cluster` open,
//! hooks that answer alike either way), `oncall_state` (silences and
//! the alert list), `board` (the figures `/metrics` adds up, the status page's document and its
//! per-second `traffic` rings), and `kept` (the keep-alive of a role kept at one child). The loop's verbs,
//! which combine them, are the files above: `events` (the wait, what children say,
//! handed to their role's owner), `reap` (the one exit path), `timeouts` (every child's
//! deadlines on the tick), `workers` (spawn, stop, reconcile, keep the runner up),
//! `route` (where counts go, the firings they make), `answers` (registry changes and
//! questions), `oncall` (silences on the master's hooks), `status_page` (the facts of
//! `/status`), `reload` (SIGHUP, SIGUSR1), `upgrade` (both sides of a binary upgrade),
//! `cluster` (counts, registry and silences shared through Redis); `setup`,
//! `announcer`, `control`, `signals` are their plumbing. The process table is
//! `Master::children`.

mod alerts;
mod announcer;
mod answers;
mod board;
mod cluster;
mod cluster_state;
mod control;
mod counting;
mod events;
mod ground;
mod journal;
mod kept;
mod oncall;
mod oncall_state;
mod pool;
mod reap;
mod reload;
mod route;
mod setup;
mod signals;
mod snapshot;
mod status_page;
mod succession;
mod timeouts;
mod traffic;
mod upgrade;
mod workers;

use std::os::fd::{AsRawFd, RawFd};
use std::time::Instant;

use anyhow::anyhow;
use log::{error, info};
use nix::sys::signal::Signal;
use nix::unistd::Pid;

pub use announcer::Announcer;
pub use control::query;
pub use succession::inherited_default_sink;

use crate::child::{Child, Role};
use crate::config::{self, Config};
use crate::logging::{self, Sink};
use crate::metrics::Totals;
use crate::notify;
use crate::pidfile::Pidfile;
use crate::registry::Registry;
use crate::status::{CrashLoop, Status};
use crate::title;
use crate::watch::Watch;
use crate::watch::store::MemoryStore;
use alerts::Alerts;
use board::Board;
use cluster_state::Cluster;
use counting::Counting;
use ground::Ground;
use oncall_state::OnCall;
use pool::Pool;
use signals::Requested;
use succession::Succession;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Waiting for the first workers to become ready.
    Starting,
    Running,
    /// SIGTERM: children drain, then the master exits.
    Draining,
    /// SIGINT/SIGQUIT: children were killed, the master exits once they are reaped.
    Halting,
    /// A new master serves: children drain, then this one hands over and exits.
    HandingOver,
}

/// The supervisor: a few components, each the owner of its state, and the loop that
/// drives them (`run_loop`).
struct Master {
    /// The configuration in force, how it was started, and the descriptors it holds for
    /// the outside world.
    ground: Ground,
    lifecycle: Lifecycle,
    /// The workers, and the answers held until they all serve a registry version.
    pool: Pool,
    registry: Registry,
    /// The watchers' counters, the counts waiting for them, and their snapshots.
    counting: Counting,
    /// Alert delivery: the journal of pending firings and the action runner.
    actions: Alerts,
    /// An upgrade in place, either side of it.
    succession: Succession,
    /// This node alone, or a member of a cluster sharing counters and registry through
    /// Redis.
    cluster: Cluster,
    /// The figures `/metrics` shows, added up since start, and the status page's traffic
    /// rings and last document.
    board: Board,
    /// Silences and the alert list.
    oncall: OnCall,
}

/// Where the master stands in its life, and how its reloads went (for the status).
struct Lifecycle {
    phase: Phase,
    started_at: Instant,
    reloads: u64,
    last_reload_error: Option<String>,
    /// A reload is rolling: the new generation is not ready yet.
    reload_in_progress: bool,
}

impl Lifecycle {
    fn new() -> Lifecycle {
        Lifecycle {
            phase: Phase::Starting,
            started_at: Instant::now(),
            reloads: 0,
            last_reload_error: None,
            reload_in_progress: false,
        }
    }
}

/// Runs a master until it stops. Start-up failures are reported to `announcer` too.
pub fn run(
    source: config::Source,
    config: Config,
    default_sink: Sink,
    mut announcer: Announcer,
) -> anyhow::Result<()> {
    // While this is the only thread: `ps` shows the role, as nginx's master does.
    let command_line = title::init();
    title::set(&format!("eventsd: master process {command_line}"));
    let mut master = match Master::new(source, config, default_sink) {
        Ok(master) => master,
        Err(e) => {
            announcer.failed(&e);
            return Err(e);
        }
    };
    master.ground.announcer = announcer;
    let outcome = master.run_loop();
    match &outcome {
        Err(e) => {
            master.ground.announcer.failed(e);
            master.halt();
            master.wait_for_every_child();
        }
        // A no-op once ready was announced: the pipe is gone by then.
        Ok(()) => master
            .ground
            .announcer
            .failed(&anyhow!("stopped before it became ready")),
    }
    if master.lifecycle.phase == Phase::HandingOver {
        master.hand_over();
    } else {
        master.clean_up();
    }
    outcome
}

impl Master {
    fn new(source: config::Source, config: Config, default_sink: Sink) -> anyhow::Result<Master> {
        let daemon = &config.daemon;
        setup::prepare_state_dir(&daemon.state_dir)?;
        let (inherited, succession) = Succession::inherited()?;
        // A successor shares its predecessor's pidfile lock, and touches no state file
        // the predecessor still writes until it takes over.
        let taking_over = succession.is_taking_over();
        let pidfile = if taking_over {
            None
        } else {
            Some(Pidfile::acquire(&daemon.pidfile)?)
        };
        setup::check_privileges(&config)?;
        logging::hand_over(&config.workers.privileges)?;
        logging::prepare_access_log(&config)?;
        let registry = setup::load_registry(&config)?;
        let mut totals = Totals::default();
        let (store, journal) = if taking_over {
            (
                MemoryStore::new(config.watchers.max_keys),
                journal::Journal::unopened(
                    &setup::journal_path(&config),
                    config.watchers.action_queue,
                ),
            )
        } else {
            (
                MemoryStore::load(&setup::counters_path(&config), config.watchers.max_keys)?,
                alerts::open_journal(&config, &registry, &mut totals)?,
            )
        };
        let oncall = if taking_over {
            OnCall::unopened(&config)?
        } else {
            OnCall::open(&config)?
        };
        let mut watch = Watch::new(Box::new(store));
        watch.sync(&registry);
        let pool = Pool::new(config.workers.min);
        let cluster = Cluster::new(config.cluster.clone());
        info!(
            "eventsd {} starting: listening on {}, {} workers, config {}",
            env!("CARGO_PKG_VERSION"),
            config.server.listen,
            config.workers.min,
            source.describe()
        );
        let ground = Ground::open(config, source, default_sink, pidfile, inherited)?;
        let mut master = Master {
            ground,
            lifecycle: Lifecycle::new(),
            pool,
            registry,
            counting: Counting::new(watch),
            actions: Alerts::new(journal),
            succession,
            cluster,
            board: Board::new(totals),
            oncall,
        };
        master.reroute_counts();
        if taking_over {
            master.hold_what_waits_for_the_take_over();
        } else {
            master.take_restored_counts();
        }
        Ok(master)
    }

    /// The master's cycle; every step is one call, in this order.
    fn run_loop(&mut self) -> anyhow::Result<()> {
        self.reconcile();
        loop {
            let requested = self.wait()?;
            self.act_on(&requested);
            self.reap()?;
            self.count_a_slice();
            if requested.tick {
                self.on_tick();
            }
            self.judge_on_the_clock();
            self.reconcile();
            self.release_held_answers();
            if self.may_exit() {
                return Ok(());
            }
        }
    }

    /// The once-a-second tick: timeouts enforced on every child (`timeouts.rs`), then
    /// each component's turn. A component that acts on the clock adds its call here.
    fn on_tick(&mut self) {
        // Judged from this turn on, a slice a turn (`judge_on_the_clock`).
        self.counting.due_on_the_clock = true;
        self.enforce_timeouts();
        // What a forked snapshot closes: it serves no HTTP either.
        let fork_fds = (!self.is_stopping()).then(|| {
            let mut fds = self.master_only_fds();
            fds.push(self.ground.listener.as_raw_fd());
            fds
        });
        self.counting
            .on_tick(&self.ground.config, fork_fds.as_deref());
        self.sample_traffic();
        self.oncall_tick();
    }

    /// What the signals asked for; the stops first, since they make the rest moot.
    fn act_on(&mut self, requested: &Requested) {
        if let Some(signal) = requested.fast_stop {
            self.begin_fast_stop(signal);
        }
        if requested.graceful_stop {
            self.begin_graceful_stop();
        }
        if requested.reload {
            self.reload();
        }
        if requested.reopen_logs {
            self.reopen_logs();
        }
        if requested.upgrade {
            self.begin_upgrade();
        }
        if requested.resize != 0 {
            self.resize(requested.resize);
        }
    }

    /// A stop during a hand-over stops both masters: the new one, not yet in charge,
    /// leaves every file to this one, which cleans up as on any stop.
    fn begin_graceful_stop(&mut self) {
        if self.lifecycle.phase == Phase::HandingOver {
            info!("graceful stop during the hand-over: the new master stops too");
            self.lifecycle.phase = Phase::Draining;
        }
        if self.is_stopping() {
            self.succession.stop_successor("eventsd is stopping");
            return;
        }
        info!(
            "graceful stop: draining {} workers (up to {}s)",
            self.pool.iter().count(),
            self.ground.config.workers.graceful_timeout_secs
        );
        notify::send(notify::STOPPING);
        self.lifecycle.phase = Phase::Draining;
        self.stop_children_but_the_successor("eventsd is stopping");
        // A new master still starting gives up, and leaves every file to this one.
        self.succession.stop_successor("eventsd is stopping");
    }

    /// Workers drain and a snapshot under way finishes; the outputs stop after them
    /// (`stop_outputs_once_inputs_are_gone`). Each is killed if it overstays the
    /// graceful timeout.
    fn stop_children_but_the_successor(&mut self, why: &str) {
        let pids: Vec<Pid> = self.pool.iter().map(pool::Worker::pid).collect();
        for pid in pids {
            self.stop_worker(pid, why);
        }
        self.counting.stop_snapshot(why);
        self.stop_outputs_once_inputs_are_gone();
    }

    /// Outputs stop last: the cluster link once every worker is gone (their final
    /// batches reach Redis through it), the action runner once the link is gone (the
    /// crossings of its last flush are delivered).
    fn stop_outputs_once_inputs_are_gone(&mut self) {
        if self.pool.iter().next().is_some() {
            return;
        }
        let why = "every worker has stopped";
        if self.children().any(|c| c.role == Role::ClusterLink) {
            self.cluster.stop_link(why);
        } else {
            self.actions.stop_runner(why);
        }
    }

    fn begin_fast_stop(&mut self, signal: Signal) {
        if self.lifecycle.phase == Phase::Halting {
            return;
        }
        info!("fast stop ({signal}): killing every child");
        notify::send(notify::STOPPING);
        self.halt();
    }

    fn halt(&mut self) {
        self.lifecycle.phase = Phase::Halting;
        for child in self.children_mut() {
            child.halt();
        }
    }

    /// Saves the counters, removes the control socket, then the pidfile: the last sign
    /// of life goes last. A successor that never took over owns none of them.
    fn clean_up(&mut self) {
        if self.succession.is_taking_over() {
            info!("new master stopped before taking over; the old one carries on");
            return;
        }
        self.count_everything();
        self.keep_what_redis_lacks();
        self.oncall.flush();
        match self
            .counting
            .watch
            .save(&setup::counters_path(&self.ground.config))
        {
            Ok(()) => info!("counters saved"),
            Err(e) => error!("counters not saved: {e:#}"),
        }
        drop(self.ground.control.take());
        drop(self.ground.pidfile.take());
        info!("eventsd stopped");
    }

    fn is_stopping(&self) -> bool {
        matches!(
            self.lifecycle.phase,
            Phase::Draining | Phase::Halting | Phase::HandingOver
        )
    }

    /// Stopping, once every child it waits for is gone: all of them, or, handing over,
    /// all but the new master.
    fn may_exit(&self) -> bool {
        match self.lifecycle.phase {
            Phase::Draining | Phase::Halting => self.children().next().is_none(),
            Phase::HandingOver => self.children().all(|c| c.role == Role::Successor),
            Phase::Starting | Phase::Running => false,
        }
    }

    /// A master taking over from an old one starts no runner, link or snapshot until
    /// it has (`upgrade.rs::take_over` releases them).
    fn hold_what_waits_for_the_take_over(&mut self) {
        self.actions.hold_runner();
        self.cluster.hold_link();
        self.counting.hold_snapshots();
    }

    /// The process table: every live child, workers, the action runner, a snapshot, a
    /// new master and the cluster link alike.
    pub(super) fn children(&self) -> impl Iterator<Item = &Child> {
        let workers = self.pool.iter().map(|w| &w.child);
        workers
            .chain(self.actions.runner())
            .chain(self.counting.snapshot())
            .chain(self.succession.child())
            .chain(self.cluster.link())
    }

    pub(super) fn children_mut(&mut self) -> impl Iterator<Item = &mut Child> {
        let workers = self.pool.iter_mut().map(|w| &mut w.child);
        workers
            .chain(self.actions.runner_mut())
            .chain(self.counting.snapshot_mut())
            .chain(self.succession.child_mut())
            .chain(self.cluster.link_mut())
    }

    pub(super) fn child_mut(&mut self, pid: Pid) -> Option<&mut Child> {
        self.children_mut().find(|child| child.pid == pid)
    }

    pub(super) fn role_of(&self, pid: Pid) -> Option<Role> {
        self.children()
            .find(|child| child.pid == pid)
            .map(|c| c.role)
    }

    /// Descriptors a new child must close right after the fork: the pidfile (or it would
    /// hold the lock after the master died), the signalfd, the control socket, the start
    /// pipe, the journal of pending firings, every other child's channels, and what a
    /// successor inherited.
    pub(super) fn master_only_fds(&self) -> Vec<RawFd> {
        let mut fds = vec![self.ground.signals.raw_fd()];
        fds.extend(self.actions.journal_fd());
        fds.extend(self.succession.raw_fds());
        fds.extend(self.ground.pidfile.as_ref().map(Pidfile::raw_fd));
        fds.extend(
            self.ground
                .control
                .as_ref()
                .map(control::ControlSocket::raw_fd),
        );
        fds.extend(self.ground.announcer.raw_fd());
        fds.extend(self.children().filter_map(Child::channel_fd));
        fds.extend(self.pool.iter().filter_map(pool::Worker::counts_fd));
        fds
    }

    fn status(&self) -> Status {
        let now = Instant::now();
        let (upgrade_in_progress, upgrades_failed, last_upgrade_error) = self.succession.report();
        let backoff = &self.pool.backoff;
        Status {
            pid: std::process::id(),
            uptime_secs: self.lifecycle.started_at.elapsed().as_secs(),
            listen: self.ground.config.server.listen.to_string(),
            config: self.ground.source.describe(),
            generation: self.pool.generation,
            reloads: self.lifecycle.reloads,
            last_reload_error: self.lifecycle.last_reload_error.clone(),
            reload_in_progress: self.lifecycle.reload_in_progress,
            upgrade_in_progress,
            upgrades_failed,
            last_upgrade_error,
            cluster: self.cluster.status(self.registry.version),
            target_workers: self.pool.target,
            min_workers: self.ground.config.workers.min,
            max_workers: self.ground.config.workers.max,
            crash_loop: backoff.in_crash_loop().then(|| CrashLoop {
                quick_exits: backoff.quick_exits(),
                last_exit: backoff.last_exit().to_string(),
                next_respawn_in_secs: backoff.next_spawn_in(now).as_secs(),
            }),
            workers: self.pool.statuses(now),
        }
    }
}
