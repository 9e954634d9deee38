//! The master process: binds the listening socket, holds the pidfile, forks and
//! supervises the worker pool, serves its status on the control socket.
//!
//! Its loop has the shape of gunicorn's arbiter: wait for events (signals through a
//! signalfd, IPC from workers, control clients), handle them, then always reap children
//! and reconcile the pool to its target. Reload, SIGTTIN/SIGTTOU, crashes and the dynamic
//! pool only move the target or the generation; `reconcile` converges.
//!
//! The master never starts a thread (a fork would copy only one of them, with any lock
//! another one held) and never blocks: every socket it polls is non-blocking, and
//! everything slow happens in children.

mod changes;
mod control;
mod pool;
mod runner;
mod signals;

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use log::{debug, error, info, warn};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork};
use socket2::{Domain, Socket, Type};

pub use control::query;
pub use signals::unblock_all as unblock_signals;

use crate::config::{self, Config};
use crate::ipc::{Channel, MasterMessage, WorkerMessage};
use crate::logging::{self, Sink};
use crate::metrics::Totals;
use crate::notify;
use crate::pidfile::Pidfile;
use crate::registry::Registry;
use crate::status::{CrashLoop, Status};
use crate::watch::{CountBatch, Watch};
use crate::worker;
use changes::{HeldAnswers, load_registry, registry_path};
use control::ControlSocket;
use pool::{Pool, Worker};
use runner::Actions;
use signals::Signals;

/// How the outcome of start-up reaches whoever launched the master: systemd
/// (`NOTIFY_SOCKET`, always tried) and, for `eventsd start`, a pipe to the waiting CLI.
pub struct Announcer {
    pipe: Option<File>,
}

impl Announcer {
    /// For `run`: only the service manager is told.
    pub fn foreground() -> Announcer {
        Announcer { pipe: None }
    }

    /// For `start`: the CLI reads one line from the other end of `pipe`.
    pub fn pipe(pipe: OwnedFd) -> Announcer {
        Announcer {
            pipe: Some(File::from(pipe)),
        }
    }

    fn ready(&mut self, listen: &str) {
        notify::send(notify::READY);
        self.write_line(&format!("ready {} {listen}", std::process::id()));
    }

    pub fn failed(&mut self, error: &anyhow::Error) {
        self.write_line(&format!("error {error:#}"));
    }

    fn write_line(&mut self, line: &str) {
        if let Some(mut pipe) = self.pipe.take() {
            let _ = writeln!(pipe, "{}", line.replace('\n', " "));
        }
    }

    fn raw_fd(&self) -> Option<RawFd> {
        self.pipe.as_ref().map(|pipe| pipe.as_raw_fd())
    }
}

/// What a polled descriptor belongs to.
#[derive(Clone, Copy)]
enum Source {
    Signals,
    Control,
    Runner,
    Worker(Pid),
}

/// Poll for input always, for output while bytes wait to be written.
fn interest(wants_write: bool) -> PollFlags {
    if wants_write {
        PollFlags::POLLIN | PollFlags::POLLOUT
    } else {
        PollFlags::POLLIN
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Waiting for the first workers to become ready.
    Starting,
    Running,
    /// SIGTERM: workers drain, then the master exits.
    Draining,
    /// SIGINT/SIGQUIT: workers were killed, the master exits once they are reaped.
    Halting,
}

struct Master {
    source: config::Source,
    config: Config,
    /// Where logs go when `daemon.log` says nothing: stderr for `run`, syslog for `start`.
    default_sink: Sink,
    listener: Socket,
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
    actions: Actions,
}

/// Runs a master until it stops. Start-up failures are reported to `announcer` too.
pub fn run(
    source: config::Source,
    config: Config,
    default_sink: Sink,
    mut announcer: Announcer,
) -> anyhow::Result<()> {
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
            master.wait_for_every_worker();
        }
        // A no-op once ready was announced: the pipe is gone by then.
        Ok(()) => master
            .announcer
            .failed(&anyhow!("stopped before it became ready")),
    }
    master.clean_up();
    outcome
}

impl Master {
    fn new(source: config::Source, config: Config, default_sink: Sink) -> anyhow::Result<Master> {
        let daemon = &config.daemon;
        create_state_dir(&daemon.state_dir)?;
        let pidfile = Pidfile::acquire(&daemon.pidfile)?;
        check_privileges(&config)?;
        logging::hand_over(&config.workers.privileges)?;
        let registry = load_registry(&config)?;
        let store = crate::watch::load_store(&counters_path(&config), config.watchers.max_keys)?;
        let mut watch = Watch::new(store);
        watch.sync(&registry);
        let listener = bind(&config)?;
        let control = ControlSocket::bind(&daemon.control_socket)?;
        let signals = Signals::install()?;
        let pool = Pool::new(config.workers.min);
        info!(
            "eventsd {} starting: listening on {}, {} workers, config {}",
            env!("CARGO_PKG_VERSION"),
            config.server.listen,
            config.workers.min,
            source.describe()
        );
        Ok(Master {
            source,
            config,
            default_sink,
            listener,
            signals,
            control: Some(control),
            pidfile: Some(pidfile),
            announcer: Announcer::foreground(),
            pool,
            phase: Phase::Starting,
            started_at: Instant::now(),
            reloads: 0,
            last_reload_error: None,
            reload_in_progress: false,
            registry,
            held_answers: HeldAnswers::default(),
            totals: Totals::default(),
            watch,
            actions: Actions::default(),
        })
    }

    fn run_loop(&mut self) -> anyhow::Result<()> {
        self.reconcile();
        loop {
            self.wait_for_events()?;
            self.reap()?;
            self.send_ready_answers();
            self.reconcile();
            if self.is_stopping() && self.pool.is_empty() && self.actions.runner.is_none() {
                return Ok(());
            }
        }
    }

    /// One poll over the signalfd, the control socket and every worker channel, and
    /// the handling of whatever became ready.
    fn wait_for_events(&mut self) -> anyhow::Result<()> {
        let ready: Vec<(Source, PollFlags)> = {
            let mut sources = vec![Source::Signals];
            let mut fds = vec![PollFd::new(self.signals.as_fd(), PollFlags::POLLIN)];
            if let Some(control) = &self.control {
                sources.push(Source::Control);
                fds.push(PollFd::new(control.as_fd(), PollFlags::POLLIN));
            }
            if let Some(fd) = self.runner_fd() {
                sources.push(Source::Runner);
                fds.push(PollFd::new(fd, interest(self.runner_wants_write())));
            }
            for worker in self.pool.iter() {
                if let Some(channel) = &worker.channel {
                    sources.push(Source::Worker(worker.pid));
                    fds.push(PollFd::new(
                        channel.as_fd(),
                        interest(channel.wants_write()),
                    ));
                }
            }
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Err(e).context("poll failed in the master loop"),
            }
            let events = fds
                .iter()
                .map(|fd| fd.revents().unwrap_or(PollFlags::empty()));
            sources
                .into_iter()
                .zip(events)
                .filter(|(_, e)| !e.is_empty())
                .collect()
        };
        for (source, events) in ready {
            match source {
                Source::Signals => self.handle_signals()?,
                Source::Control => self.serve_control_clients(),
                Source::Runner => self.handle_runner_channel(events),
                Source::Worker(pid) => self.handle_channel(pid, events),
            }
        }
        Ok(())
    }

    fn handle_signals(&mut self) -> anyhow::Result<()> {
        while let Some(signal) = self.signals.next()? {
            debug!("received {signal}");
            match signal {
                // Reaping happens after every wake-up anyway; the signal only wakes us.
                Signal::SIGCHLD => {}
                Signal::SIGTERM => self.begin_graceful_stop(),
                Signal::SIGINT | Signal::SIGQUIT => self.begin_fast_stop(signal),
                Signal::SIGHUP => self.reload(),
                Signal::SIGUSR1 => self.reopen_logs(),
                Signal::SIGTTIN => self.resize(1),
                Signal::SIGTTOU => self.resize(-1),
                Signal::SIGALRM => self.tick(),
                other => debug!("ignoring {other}"),
            }
        }
        Ok(())
    }

    fn serve_control_clients(&mut self) {
        let status = self.status();
        if let Some(control) = &self.control {
            control.serve_pending(|| status.clone());
        }
    }

    fn handle_channel(&mut self, pid: Pid, events: PollFlags) {
        let Some(worker) = self.pool.get_mut(pid) else {
            return;
        };
        let Some(channel) = worker.channel.as_mut() else {
            return;
        };
        let received = channel.exchange::<WorkerMessage>(events.contains(PollFlags::POLLOUT));
        let closed = received.as_ref().map_or(true, |r| r.closed);
        if closed {
            debug!("worker {pid} closed its IPC channel");
            worker.channel = None;
        }
        match received {
            Ok(received) => {
                for message in received.messages {
                    self.handle_message(pid, message);
                }
            }
            Err(e) => self.kill_worker(pid, "its IPC channel broke", &e.to_string()),
        }
    }

    fn handle_message(&mut self, pid: Pid, message: WorkerMessage) {
        let now = Instant::now();
        let Some(worker) = self.pool.get_mut(pid) else {
            return;
        };
        match message {
            WorkerMessage::Ready => {
                worker.ready = true;
                worker.last_heartbeat = now;
                worker.idle_since = Some(now);
                info!("worker {pid} ready (generation {})", worker.generation);
            }
            WorkerMessage::Heartbeat(mut report) => {
                self.totals.add(std::mem::take(&mut report.deltas));
                worker.record_heartbeat(report, now);
            }
            WorkerMessage::RegistryAck { version } => worker.registry_version = version,
            WorkerMessage::Counts(batch) => self.count(batch),
            WorkerMessage::Ask { id, question } => self.answer(pid, id, question),
            WorkerMessage::Retiring { reason } => {
                info!("worker {pid} retiring: {reason}");
                worker.stopping_since.get_or_insert(now);
            }
            WorkerMessage::StartupFailed { reason } => {
                error!("worker {pid} failed to start: {reason}");
                worker.startup_failure = Some(reason);
            }
        }
    }

    fn broadcast(&mut self, message: &MasterMessage) {
        let pids: Vec<Pid> = self.pool.iter().map(|w| w.pid).collect();
        for pid in pids {
            self.send_to(pid, message.clone());
        }
    }

    fn send_to(&mut self, pid: Pid, message: MasterMessage) {
        let Some(channel) = self.pool.get_mut(pid).and_then(|w| w.channel.as_mut()) else {
            return;
        };
        if let Err(e) = channel.send(&message) {
            warn!("cannot send to worker {pid}: {e}");
        }
    }

    /// Adds a worker's counts; every key that crossed its threshold fires.
    fn count(&mut self, batch: CountBatch) {
        for job in self.watch.count(batch, crate::watch::now()) {
            self.dispatch(job);
        }
    }

    /// Reaps every exited child (`waitpid(-1, WNOHANG)` until none is left).
    fn reap(&mut self) -> anyhow::Result<()> {
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return Ok(()),
                Ok(status) => {
                    if let Some(pid) = status.pid() {
                        self.on_child_exit(pid, describe_exit(status))?;
                    }
                }
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e).context("waitpid failed"),
            }
        }
    }

    fn on_child_exit(&mut self, pid: Pid, how: String) -> anyhow::Result<()> {
        if self.on_runner_exit(pid, &how) {
            return Ok(());
        }
        let Some(worker) = self.pool.remove(pid) else {
            debug!("reaped child {pid} ({how})");
            return Ok(());
        };
        let now = Instant::now();
        let age = now.duration_since(worker.spawned_at);
        if self.phase == Phase::Starting && !worker.ready {
            let reason = worker
                .startup_failure
                .unwrap_or_else(|| format!("it {how} before it was ready; see the log"));
            return Err(anyhow!("worker {pid} failed to start: {reason}"));
        }
        if worker.is_stopping() || self.is_stopping() {
            info!(
                "worker {pid} exited ({how}) after {}",
                crate::status::format_duration(age.as_secs())
            );
            return Ok(());
        }
        let what = match (worker.killed_because, worker.startup_failure) {
            (Some(why), _) => format!("was killed because {why}"),
            (None, Some(reason)) => format!("failed to start ({reason})"),
            (None, None) => how,
        };
        match self.pool.backoff.record_exit(age, what.clone(), now) {
            None => warn!(
                "worker {pid} {what} after {:.1}s; replacing it",
                age.as_secs_f64()
            ),
            Some(delay) => {
                let quick_exits = self.pool.backoff.quick_exits();
                // A crash loop is logged with its count, not once per attempt.
                let message = format!(
                    "worker {pid} {what} {:.1}s after it started; crash loop: {quick_exits} quick \
                     exits in a row, next respawn in {}s",
                    age.as_secs_f64(),
                    delay.as_secs()
                );
                if quick_exits <= 3 || quick_exits.is_power_of_two() {
                    error!("{message}");
                } else {
                    debug!("{message}");
                }
            }
        }
        Ok(())
    }

    /// Converges the pool to its target: forks what is missing (paced by the crash
    /// backoff), retires what is surplus, and retires the previous generation once the
    /// current one is ready (new workers before old ones go: no refused request).
    fn reconcile(&mut self) {
        if self.is_stopping() {
            return;
        }
        self.keep_runner();
        let now = Instant::now();
        while self.pool.active_count() < self.pool.target && self.pool.backoff.may_spawn(now) {
            if let Err(e) = self.spawn_worker() {
                error!("cannot fork a worker: {e:#}");
                self.pool
                    .backoff
                    .record_exit(Duration::ZERO, format!("fork failed: {e}"), now);
                break;
            }
            self.pool.backoff.spawned(now);
        }
        while self.pool.active_count() > self.pool.target {
            let Some(pid) = self.pool.youngest_active() else {
                break;
            };
            self.stop_worker(pid, "the pool shrinks");
        }
        if self.pool.ready_count() >= self.pool.target {
            for pid in self.pool.previous_generation() {
                self.stop_worker(pid, "a newer generation is ready");
            }
            self.finish_start_or_reload();
        }
    }

    fn finish_start_or_reload(&mut self) {
        if self.phase == Phase::Starting {
            self.phase = Phase::Running;
            info!(
                "eventsd ready: {} workers serving {}",
                self.pool.ready_count(),
                self.config.server.listen
            );
            self.announcer.ready(&self.config.server.listen.to_string());
        } else if self.reload_in_progress {
            self.reload_in_progress = false;
            info!(
                "reload complete: generation {} serving",
                self.pool.generation
            );
            notify::send(notify::READY);
        }
    }

    fn spawn_worker(&mut self) -> anyhow::Result<()> {
        let (master_end, worker_end) =
            UnixStream::pair().context("cannot create an IPC socketpair")?;
        let mut inherited = self.master_only_fds();
        inherited.push(master_end.as_raw_fd());
        // SAFETY: the master is single-threaded, so the child starts with a consistent
        // copy of it, and `worker::run` never returns into the master's code.
        match unsafe { fork() }.context("fork failed")? {
            ForkResult::Child => worker::run(worker::Setup {
                listener: self.listener.as_raw_fd(),
                channel: worker_end,
                master_fds: inherited,
                config: self.config.clone(),
                registry: self.registry.clone(),
            }),
            ForkResult::Parent { child } => {
                let channel = Channel::new(master_end).context("cannot set up the IPC channel")?;
                debug!(
                    "forked worker {child} (generation {})",
                    self.pool.generation
                );
                let version = self.registry.version;
                let worker = Worker::new(
                    child,
                    self.pool.generation,
                    channel,
                    version,
                    Instant::now(),
                );
                self.pool.add(worker);
                Ok(())
            }
        }
    }

    /// Descriptors a worker must close right after the fork: the pidfile (or it would
    /// hold the lock after the master died), the signalfd, the control socket, the start
    /// pipe and every other worker's channel.
    fn master_only_fds(&self) -> Vec<RawFd> {
        let mut fds = vec![self.signals.raw_fd()];
        fds.extend(self.pidfile.as_ref().map(Pidfile::raw_fd));
        fds.extend(self.control.as_ref().map(ControlSocket::raw_fd));
        fds.extend(self.announcer.raw_fd());
        fds.extend(self.runner_fd().map(|fd| fd.as_raw_fd()));
        fds.extend(
            self.pool
                .iter()
                .filter_map(|w| w.channel.as_ref().map(|c| c.as_fd().as_raw_fd())),
        );
        fds
    }

    fn stop_worker(&mut self, pid: Pid, why: &str) {
        let Some(worker) = self.pool.get_mut(pid) else {
            return;
        };
        if worker.is_stopping() {
            return;
        }
        info!("stopping worker {pid}: {why}");
        worker.stopping_since = Some(Instant::now());
        let told = worker
            .channel
            .as_mut()
            .map(|channel| channel.send(&MasterMessage::Stop));
        if !matches!(told, Some(Ok(()))) {
            // Without a channel the worker cannot be told; SIGTERM asks the same of it.
            let _ = kill(pid, Signal::SIGTERM);
        }
    }

    fn kill_worker(&mut self, pid: Pid, because: &'static str, details: &str) {
        let Some(worker) = self.pool.get_mut(pid) else {
            return;
        };
        if worker.killed_because.is_some() {
            return;
        }
        let report = &worker.report;
        warn!(
            "killing worker {pid}: {because} ({details}; last state {}, {} requests in flight, \
             {} connections, up {})",
            worker.state().name(),
            report.in_flight,
            report.connections,
            crate::status::format_duration(worker.spawned_at.elapsed().as_secs()),
        );
        worker.killed_because = Some(because);
        if let Err(e) = kill(pid, Signal::SIGKILL) {
            warn!("cannot SIGKILL worker {pid}: {e}");
        }
    }

    /// The SIGALRM tick: every timeout the master enforces.
    fn tick(&mut self) {
        self.enforce_runner_deadline();
        let now = Instant::now();
        let heartbeat_timeout = self.config.workers.heartbeat_timeout();
        let graceful_timeout = self.config.workers.graceful_timeout();
        let mut hung = Vec::new();
        let mut overdue = Vec::new();
        for worker in self.pool.iter() {
            let silent = now.duration_since(worker.last_heartbeat);
            if silent > heartbeat_timeout {
                hung.push((worker.pid, silent));
            } else if let Some(since) = worker.stopping_since {
                if now.duration_since(since) > graceful_timeout {
                    overdue.push(worker.pid);
                }
            }
        }
        for (pid, silent) in hung {
            let details = format!("no heartbeat for {}s", silent.as_secs());
            self.kill_worker(pid, "it hung", &details);
        }
        for pid in overdue {
            let details = format!("graceful timeout of {}s", graceful_timeout.as_secs());
            self.kill_worker(pid, "it was still draining", &details);
        }
        let spawn_times: Vec<Instant> = self.pool.iter().map(|w| w.spawned_at).collect();
        if self.pool.backoff.settle(spawn_times.into_iter(), now) {
            info!("crash loop over: a new worker has stayed up");
        }
        if self.phase == Phase::Running {
            self.adjust_dynamic_pool(now);
        }
    }

    /// Prefork MPM: when `min < max`, grow by one when every worker is busy and none is
    /// still starting; retire a worker that has been idle for `idle_timeout_secs`.
    fn adjust_dynamic_pool(&mut self, now: Instant) {
        let (min, max) = (self.config.workers.min, self.config.workers.max);
        if min == max {
            return;
        }
        let all_ready = self.pool.ready_count() == self.pool.active_count();
        let all_busy = self.pool.active().all(|w| w.report.busy);
        if all_ready && all_busy && self.pool.target < max {
            self.pool.target += 1;
            info!(
                "all {} workers busy: growing the pool to {}",
                self.pool.active_count(),
                self.pool.target
            );
            return;
        }
        if self.pool.target <= min {
            return;
        }
        let idle_timeout = self.config.workers.idle_timeout();
        let idle = self
            .pool
            .active()
            .filter(|w| {
                w.idle_since
                    .is_some_and(|since| now.duration_since(since) >= idle_timeout)
            })
            .min_by_key(|w| w.idle_since)
            .map(|w| w.pid);
        if let Some(pid) = idle {
            self.pool.target -= 1;
            self.stop_worker(pid, "idle for the idle timeout, above workers.min");
        }
    }

    /// SIGTTIN / SIGTTOU: one worker more or fewer, within the configured bounds.
    fn resize(&mut self, delta: isize) {
        if self.phase != Phase::Running {
            return;
        }
        let wanted = self.pool.target.saturating_add_signed(delta);
        let (min, max) = (self.config.workers.min, self.config.workers.max);
        let target = wanted.clamp(min, max);
        if target == self.pool.target {
            info!(
                "pool stays at {} workers: workers.min is {}, workers.max is {}",
                target, min, max
            );
        } else {
            info!("pool target {} -> {}", self.pool.target, target);
            self.pool.target = target;
        }
    }

    /// SIGHUP: validate the new configuration, then roll a new generation of workers.
    fn reload(&mut self) {
        if self.phase != Phase::Running {
            warn!("reload ignored: the master is {:?}", self.phase);
            return;
        }
        notify::send(notify::RELOADING);
        self.reloads += 1;
        match self.apply_new_config() {
            Ok(()) => {
                self.last_reload_error = None;
                self.pool.generation += 1;
                self.reload_in_progress = true;
                info!(
                    "reloading {}: starting generation {} with {} workers",
                    self.source.describe(),
                    self.pool.generation,
                    self.pool.target
                );
            }
            Err(e) => {
                error!("reload refused, the running configuration stays: {e:#}");
                self.last_reload_error = Some(format!("{e:#}"));
                notify::send(notify::READY);
            }
        }
    }

    fn apply_new_config(&mut self) -> anyhow::Result<()> {
        let mut new = self.source.load()?;
        let old = &self.config;
        if new.daemon.state_dir != old.daemon.state_dir
            || new.daemon.pidfile != old.daemon.pidfile
            || new.daemon.control_socket != old.daemon.control_socket
        {
            warn!("daemon.state_dir, pidfile and control_socket change only on restart");
            new.daemon.state_dir.clone_from(&old.daemon.state_dir);
            new.daemon.pidfile.clone_from(&old.daemon.pidfile);
            new.daemon
                .control_socket
                .clone_from(&old.daemon.control_socket);
        }
        check_privileges(&new)?;
        let listener =
            if new.server.listen != old.server.listen || new.server.backlog != old.server.backlog {
                Some(bind(&new)?)
            } else {
                None
            };
        logging::reconfigure(
            &Sink::for_target(&new.daemon.log, self.default_sink.clone()),
            new.daemon.log_level,
        )?;
        logging::hand_over(&new.workers.privileges)?;
        // Saved last: nothing after it can fail, so a refused reload leaves no trace.
        let mut registry = self.registry.clone();
        let declarations_changed = registry.declare(&new.event);
        if declarations_changed {
            registry.save(&registry_path(&new))?;
            self.registry = registry;
            self.watch.sync(&self.registry);
            self.push_registry();
        }
        self.watch.set_max_keys(new.watchers.max_keys);
        if let Some(listener) = listener {
            info!("now listening on {}", new.server.listen);
            // Old workers keep their copy of the previous socket until they have drained.
            self.listener = listener;
        }
        self.pool.clamp_target(new.workers.min, new.workers.max);
        self.config = new;
        Ok(())
    }

    fn reopen_logs(&mut self) {
        let privileges = &self.config.workers.privileges;
        match logging::reopen().and_then(|()| logging::hand_over(privileges)) {
            Ok(()) => info!("reopened log files"),
            Err(e) => error!("cannot reopen log files: {e:#}"),
        }
        self.broadcast(&MasterMessage::ReopenLogs);
        if let Some(channel) = self
            .actions
            .runner
            .as_mut()
            .and_then(|r| r.channel.as_mut())
        {
            if let Err(e) = channel.send(&crate::action::ToRunner::ReopenLogs) {
                warn!("cannot tell the action runner to reopen its logs: {e}");
            }
        }
    }

    fn begin_graceful_stop(&mut self) {
        if self.is_stopping() {
            return;
        }
        info!(
            "graceful stop: draining {} workers (up to {}s)",
            self.pool.iter().count(),
            self.config.workers.graceful_timeout_secs
        );
        notify::send(notify::STOPPING);
        self.phase = Phase::Draining;
        let pids: Vec<Pid> = self.pool.iter().map(|w| w.pid).collect();
        for pid in pids {
            self.stop_worker(pid, "eventsd is stopping");
        }
        self.stop_runner();
    }

    fn begin_fast_stop(&mut self, signal: Signal) {
        if self.phase == Phase::Halting {
            return;
        }
        info!("fast stop ({signal}): killing every worker");
        notify::send(notify::STOPPING);
        self.halt();
    }

    fn halt(&mut self) {
        self.phase = Phase::Halting;
        for worker in self.pool.iter_mut() {
            worker.stopping_since.get_or_insert_with(Instant::now);
            let _ = kill(worker.pid, Signal::SIGKILL);
        }
        self.kill_runner();
    }

    /// After `halt`: every child got SIGKILL, so this blocking wait is short.
    fn wait_for_every_worker(&mut self) {
        while !self.pool.is_empty() || self.actions.runner.is_some() {
            match waitpid(None, None) {
                Ok(status) => {
                    if let Some(pid) = status.pid() {
                        if !self.on_runner_exit(pid, "was killed") {
                            self.pool.remove(pid);
                        }
                    }
                }
                Err(Errno::EINTR) => continue,
                Err(_) => break,
            }
        }
    }

    /// Saves the counters, removes the control socket, then the pidfile: the last sign
    /// of life goes last.
    fn clean_up(&mut self) {
        match self.watch.save(&counters_path(&self.config)) {
            Ok(()) => info!("counters saved"),
            Err(e) => error!("counters not saved: {e:#}"),
        }
        drop(self.control.take());
        drop(self.pidfile.take());
        info!("eventsd stopped");
    }

    fn is_stopping(&self) -> bool {
        matches!(self.phase, Phase::Draining | Phase::Halting)
    }

    fn status(&self) -> Status {
        let now = Instant::now();
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

fn counters_path(config: &Config) -> std::path::PathBuf {
    config.daemon.state_dir.join("counters.json")
}

fn create_state_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(dir)
        .with_context(|| format!("cannot create state folder {}", dir.display()))
}

/// Only root may hand workers another identity or a chroot.
fn check_privileges(config: &Config) -> anyhow::Result<()> {
    let privileges = &config.workers.privileges;
    let needs_root = privileges.chroot.is_some()
        || privileges
            .uid
            .is_some_and(|uid| uid != nix::unistd::geteuid())
        || privileges
            .gid
            .is_some_and(|gid| gid != nix::unistd::getegid());
    if needs_root && !nix::unistd::geteuid().is_root() {
        anyhow::bail!(
            "workers.user, workers.group and workers.chroot need eventsd to be started as root"
        );
    }
    Ok(())
}

/// Binds the listening socket that every worker inherits.
fn bind(config: &Config) -> anyhow::Result<Socket> {
    let address = config.server.listen;
    let socket = Socket::new(Domain::for_address(address), Type::STREAM, None)
        .with_context(|| format!("cannot create a socket for {address}"))?;
    socket
        .set_reuse_address(true)
        .and_then(|()| socket.bind(&address.into()))
        .and_then(|()| socket.listen(config.server.backlog))
        .and_then(|()| socket.set_nonblocking(true))
        .with_context(|| format!("cannot listen on {address}"))?;
    Ok(socket)
}

fn describe_exit(status: WaitStatus) -> String {
    match status {
        WaitStatus::Exited(_, code) => format!("exited with code {code}"),
        WaitStatus::Signaled(_, signal, core) => {
            format!(
                "was killed by {signal}{}",
                if core { " (core dumped)" } else { "" }
            )
        }
        other => format!("changed state: {other:?}"),
    }
}
