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
//! Files, by owner: `events` (the wait and what children say), `table` (the process
//! table, the keep-alive of the runner and the link), `workers` (spawn, stop,
//! reconcile), `reap` (the one exit path), `timeouts` (the tick), `reload` (SIGHUP,
//! SIGUSR1), `answers` (registry changes and questions), `counting` (counts in slices),
//! `actions` (counts to firings to the runner), `journal` (pending firings kept across
//! stops and crashes), `oncall` (silences and the alert list, on the firing, outcome,
//! question and tick hooks), `board` and `traffic` (the status page's document and its
//! per-second rings), `snapshot` (counters written by a forked child), `upgrade` (both
//! sides of a binary upgrade), `cluster` (the cluster link: counts and registry shared
//! through Redis), `setup`, `announcer`, `control`, `signals`, `pool`.

mod actions;
mod announcer;
mod answers;
mod board;
mod cluster;
mod control;
mod counting;
mod events;
mod journal;
mod oncall;
mod pool;
mod reap;
mod reload;
mod setup;
mod signals;
mod snapshot;
mod table;
mod timeouts;
mod traffic;
mod upgrade;
mod workers;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, anyhow};
use log::{error, info};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use socket2::Socket;

pub use announcer::Announcer;
pub use control::query;
pub use upgrade::inherited_default_sink;

use crate::child::Role;
use crate::config::{self, Config};
use crate::logging::{self, Sink};
use crate::metrics::Totals;
use crate::notify;
use crate::oncall::OnCall;
use crate::pidfile::Pidfile;
use crate::registry::Registry;
use crate::status::{CrashLoop, Status};
use crate::title;
use crate::tls::{self, Tls};
use crate::watch::Watch;
use crate::watch::store::MemoryStore;
use actions::Actions;
use answers::HeldAnswers;
use board::Board;
use control::ControlSocket;
use counting::Backlog;
use pool::Pool;
use signals::{Requested, Signals};
use snapshot::Snapshots;
use upgrade::Succession;

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

struct Master {
    source: config::Source,
    config: Config,
    /// Where logs go when `daemon.log` says nothing: stderr for `run`, syslog for `start`.
    default_sink: Sink,
    listener: Socket,
    /// The listener's TLS, read at start and at each reload; `None` for plain HTTP.
    tls: Option<Tls>,
    signals: Signals,
    control: Option<ControlSocket>,
    pidfile: Option<Pidfile>,
    announcer: Announcer,
    pool: Pool,
    phase: Phase,
    started_at: Instant,
    reloads: u64,
    last_reload_error: Option<String>,
    /// A reload is rolling: the new generation is not ready yet.
    reload_in_progress: bool,
    registry: Registry,
    held_answers: HeldAnswers,
    totals: Totals,
    watch: Watch,
    /// Count batches read and not counted yet.
    backlog: Backlog,
    actions: Actions,
    snapshots: Snapshots,
    /// The binary this master runs, as it was on disk at start: what an upgrade executes.
    binary: PathBuf,
    /// An upgrade in place, either side of it.
    succession: Succession,
    /// `[cluster]`: counters and registry shared through Redis.
    cluster: Option<cluster::ClusterState>,
    /// The status page's traffic rings and last document.
    board: Board,
    /// Silences and the alert list.
    oncall: OnCall,
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
    master.announcer = announcer;
    let outcome = master.run_loop();
    match &outcome {
        Err(e) => {
            master.announcer.failed(e);
            master.halt();
            master.wait_for_every_child();
        }
        // A no-op once ready was announced: the pipe is gone by then.
        Ok(()) => master
            .announcer
            .failed(&anyhow!("stopped before it became ready")),
    }
    if master.phase == Phase::HandingOver {
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
        let binary = std::env::current_exe().context("cannot tell which binary runs")?;
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
                actions::open_journal(&config, &registry, &mut totals)?,
            )
        };
        let oncall = if taking_over {
            OnCall::unopened(&config)?
        } else {
            OnCall::open(&config)?
        };
        let mut watch = Watch::new(Box::new(store));
        watch.sync(&registry);
        let listener = match inherited {
            Some(socket) => socket,
            None => setup::activated_listener()?.map_or_else(|| setup::bind(&config), Ok)?,
        };
        let control = if taking_over {
            None
        } else {
            Some(ControlSocket::bind(&daemon.control_socket)?)
        };
        let tls = tls::load(config.server.tls_files())?;
        let signals = Signals::install()?;
        let pool = Pool::new(config.workers.min);
        let cluster = config.cluster.clone().map(cluster::ClusterState::new);
        info!(
            "eventsd {} starting: listening on {}, {} workers, config {}",
            env!("CARGO_PKG_VERSION"),
            config.server.listen,
            config.workers.min,
            source.describe()
        );
        let mut master = Master {
            source,
            config,
            default_sink,
            listener,
            tls,
            signals,
            control,
            pidfile,
            announcer: Announcer::foreground(),
            pool,
            phase: Phase::Starting,
            started_at: Instant::now(),
            reloads: 0,
            last_reload_error: None,
            reload_in_progress: false,
            registry,
            held_answers: HeldAnswers::default(),
            totals,
            watch,
            backlog: Backlog::default(),
            actions: Actions::new(journal),
            snapshots: Snapshots::default(),
            binary,
            succession,
            cluster,
            board: Board::default(),
            oncall,
        };
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
                self.enforce_timeouts();
                self.snapshot_counters_if_due();
                self.sample_traffic();
                self.oncall_tick();
            }
            self.reconcile();
            self.release_held_answers();
            if self.may_exit() {
                return Ok(());
            }
        }
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
        if self.phase == Phase::HandingOver {
            info!("graceful stop during the hand-over: the new master stops too");
            self.phase = Phase::Draining;
        }
        if self.is_stopping() {
            self.succession.stop_successor("eventsd is stopping");
            return;
        }
        info!(
            "graceful stop: draining {} workers (up to {}s)",
            self.pool.iter().count(),
            self.config.workers.graceful_timeout_secs
        );
        notify::send(notify::STOPPING);
        self.phase = Phase::Draining;
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
        if let Some(snapshot) = self.snapshots.child.as_mut() {
            snapshot.stop(&(), why);
        }
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
        match self.cluster.as_ref().and_then(|c| c.link.get()) {
            Some(_) => self.stop_cluster_link(why),
            None => self.stop_runner(why),
        }
    }

    fn begin_fast_stop(&mut self, signal: Signal) {
        if self.phase == Phase::Halting {
            return;
        }
        info!("fast stop ({signal}): killing every child");
        notify::send(notify::STOPPING);
        self.halt();
    }

    fn halt(&mut self) {
        self.phase = Phase::Halting;
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
        match self.watch.save(&setup::counters_path(&self.config)) {
            Ok(()) => info!("counters saved"),
            Err(e) => error!("counters not saved: {e:#}"),
        }
        drop(self.control.take());
        drop(self.pidfile.take());
        info!("eventsd stopped");
    }

    fn is_stopping(&self) -> bool {
        matches!(
            self.phase,
            Phase::Draining | Phase::Halting | Phase::HandingOver
        )
    }

    /// Stopping, once every child it waits for is gone: all of them, or, handing over,
    /// all but the new master.
    fn may_exit(&self) -> bool {
        match self.phase {
            Phase::Draining | Phase::Halting => self.children().next().is_none(),
            Phase::HandingOver => self.children().all(|c| c.role == Role::Successor),
            Phase::Starting | Phase::Running => false,
        }
    }

    /// A master taking over from an old one starts no runner, link or snapshot until
    /// it has (`upgrade.rs::take_over` releases them).
    fn hold_what_waits_for_the_take_over(&mut self) {
        self.actions.runner.hold();
        self.hold_cluster_link();
        self.snapshots.hold();
    }

    fn status(&self) -> Status {
        let now = Instant::now();
        let (upgrade_in_progress, upgrades_failed, last_upgrade_error) = self.succession.report();
        let backoff = &self.pool.backoff;
        Status {
            pid: std::process::id(),
            uptime_secs: self.started_at.elapsed().as_secs(),
            listen: self.config.server.listen.to_string(),
            config: self.source.describe(),
            generation: self.pool.generation,
            reloads: self.reloads,
            last_reload_error: self.last_reload_error.clone(),
            reload_in_progress: self.reload_in_progress,
            upgrade_in_progress,
            upgrades_failed,
            last_upgrade_error,
            cluster: self
                .cluster
                .as_ref()
                .map(|c| c.status(self.registry.version)),
            target_workers: self.pool.target,
            min_workers: self.config.workers.min,
            max_workers: self.config.workers.max,
            crash_loop: backoff.in_crash_loop().then(|| CrashLoop {
                quick_exits: backoff.quick_exits(),
                last_exit: backoff.last_exit().to_string(),
                next_respawn_in_secs: backoff.next_spawn_in(now).as_secs(),
            }),
            workers: self.pool.statuses(now),
        }
    }
}
