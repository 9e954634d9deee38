//! The phpd-like control CLI, one implementation behind two programs: `eventsd [-c CONFIG]
//! COMMAND` (every command, `run` included: what init systems start) and `eventsctl [-c
//! CONFIG] COMMAND` (every command but `run`: what operators type).
//!
//! Owns argument parsing, what each command prints and its exit code (LSB codes for
//! `status`); the on-call commands (`silence`, `alerts`, `watcher`) are `oncall::ctl`'s,
//! an HTTP client of the daemon. It talks to a running master only through the pidfile (its lock says
//! whether a master lives), signals, and the control socket; it never touches the
//! master's state files, and never signals a pid the control socket does not confirm.

use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use clap::{CommandFactory, Parser, Subcommand};
use daemonize::{Daemonize, Outcome};
use log::error;
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::config::{self, Config};
use crate::logging::{self, Sink};
use crate::master::{self, Announcer};
use crate::oncall::ctl;
use crate::pidfile::{self, Probe};
use crate::status::Status;

/// LSB exit codes of `status`.
const STATUS_RUNNING: i32 = 0;
const STATUS_DEAD_WITH_PIDFILE: i32 = 1;
const STATUS_NOT_RUNNING: i32 = 3;
const STATUS_UNKNOWN: i32 = 4;
/// LSB exit code of an action on a daemon that is not running (`reload`, `upgrade`).
const NOT_RUNNING: i32 = 7;

/// The packaged configuration, read when neither `-c` nor `EVENTSD_CONFIG` names one, as
/// nginx reads `/etc/nginx/nginx.conf`.
const PACKAGED_CONFIG: &str = "/etc/eventsd/eventsd.toml";

/// How often the CLI looks again while it waits for the master.
const POLL_EVERY: Duration = Duration::from_millis(50);

/// How long a command that signals waits for a master that holds its pidfile to answer on
/// its control socket (it may be starting, or taking over in an upgrade).
const CONFIRM_WITHIN: Duration = Duration::from_secs(10);

#[derive(Parser)]
#[command(
    name = "eventsd",
    version = env!("EVENTSD_VERSION_LINE"),
    about = "Events collector daemon"
)]
struct DaemonCli {
    #[command(flatten)]
    options: Options,
    /// Test the configuration and exit (nginx's -t; the same as `configtest`).
    #[arg(short = 't')]
    test: bool,
    #[command(subcommand)]
    command: Option<DaemonCommand>,
}

#[derive(Parser)]
#[command(
    name = "eventsctl",
    version = env!("EVENTSD_VERSION_LINE"),
    about = "Control the eventsd daemon"
)]
struct CtlCli {
    #[command(flatten)]
    options: Options,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct Options {
    /// Configuration file (TOML); without one, /etc/eventsd/eventsd.toml if it exists,
    /// else the built-in defaults.
    #[arg(short, long, env = "EVENTSD_CONFIG", global = true)]
    config: Option<PathBuf>,
}

impl Options {
    fn config_file(&self) -> Option<PathBuf> {
        self.config.clone().or_else(|| {
            let packaged = Path::new(PACKAGED_CONFIG);
            packaged.exists().then(|| packaged.to_path_buf())
        })
    }
}

#[derive(Subcommand)]
enum DaemonCommand {
    /// Run the master in the foreground (systemd Type=notify).
    Run,
    #[command(flatten)]
    Control(Command),
}

/// The commands both programs share.
#[derive(Subcommand)]
enum Command {
    /// Start in the background; returns once the daemon serves.
    Start(Wait),
    /// Graceful stop (SIGTERM), waiting for the exit.
    Stop(Wait),
    /// Fast stop (SIGQUIT), waiting for the exit.
    HardStop(Wait),
    /// Validate the configuration, then reload it (SIGHUP) and wait for the new workers.
    Reload(Wait),
    /// stop, then start.
    Restart(Wait),
    /// hard-stop, then start.
    HardRestart(Wait),
    /// Replace the running binary with the one on disk (SIGUSR2), without refusing a
    /// request; waits until the new master serves.
    Upgrade(Wait),
    /// Reopen the log files (SIGUSR1), as logrotate's postrotate does.
    Reopen,
    /// One line: running or not (LSB exit codes 0, 1, 3; 4 when it cannot tell).
    Status,
    /// Status and the worker table.
    Fullstatus {
        /// Print the master's status document as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Parse and validate the configuration.
    Configtest,
    /// Print this program's shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Silences: add, list, expire (over HTTP, with the config's address and token).
    #[command(subcommand)]
    Silence(ctl::SilenceCommand),
    /// The recent firings and what became of each.
    Alerts(ctl::AlertsArgs),
    /// A watcher's live state.
    #[command(subcommand)]
    Watcher(ctl::WatcherCommand),
}

#[derive(clap::Args)]
struct Wait {
    /// Seconds to wait for the daemon (default: enough for the configured timeouts).
    #[arg(long)]
    timeout: Option<u64>,
}

/// `eventsd`'s command line; returns the process exit code.
pub fn daemon_main() -> i32 {
    let cli = DaemonCli::parse();
    let command = match (cli.test, cli.command) {
        (true, None) => DaemonCommand::Control(Command::Configtest),
        (false, Some(command)) => command,
        (true, Some(_)) | (false, None) => {
            let _ = DaemonCli::command().print_help();
            eprintln!("\neventsd: give a command, or -t alone");
            return 2;
        }
    };
    exit_code(&cli.options, |source| match command {
        DaemonCommand::Run => run(source, source.load_checked()?),
        DaemonCommand::Control(command) => execute(command, source, DaemonCli::command),
    })
}

/// `eventsctl`'s command line; returns the process exit code.
pub fn ctl_main() -> i32 {
    let cli = CtlCli::parse();
    exit_code(&cli.options, |source| {
        execute(cli.command, source, CtlCli::command)
    })
}

/// The completion script of `program`, made from its clap definition: it cannot drift
/// from the commands it completes.
fn completions(shell: clap_complete::Shell, mut program: clap::Command) -> anyhow::Result<i32> {
    let name = program.get_name().to_string();
    clap_complete::generate(shell, &mut program, name, &mut std::io::stdout());
    Ok(0)
}

fn exit_code(
    options: &Options,
    command: impl FnOnce(&config::Source) -> anyhow::Result<i32>,
) -> i32 {
    let file = options.config_file();
    match config::Source::new(file.as_deref()).and_then(|source| command(&source)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("eventsd: {e:#}");
            1
        }
    }
}

/// Runs a command both programs share; `program` is the running one's definition.
fn execute(
    command: Command,
    source: &config::Source,
    program: fn() -> clap::Command,
) -> anyhow::Result<i32> {
    match command {
        Command::Configtest => configtest(source),
        Command::Status => status(source, Report::Summary),
        Command::Fullstatus { json: false } => status(source, Report::Table),
        Command::Fullstatus { json: true } => status(source, Report::Json),
        Command::Start(wait) => start(source, source.load_checked()?, &wait),
        Command::Stop(wait) => stop(&source.load()?, Signal::SIGTERM, &wait),
        Command::HardStop(wait) => stop(&source.load()?, Signal::SIGQUIT, &wait),
        Command::Reload(wait) => reload(&source.load_checked()?, &wait),
        Command::Restart(wait) => restart(source, source.load_checked()?, Signal::SIGTERM, &wait),
        Command::HardRestart(wait) => {
            restart(source, source.load_checked()?, Signal::SIGQUIT, &wait)
        }
        Command::Upgrade(wait) => upgrade(&source.load_checked()?, &wait),
        Command::Reopen => reopen(&source.load()?),
        Command::Completions { shell } => completions(shell, program()),
        Command::Silence(command) => ctl::silence(&source.load()?, command),
        Command::Alerts(args) => ctl::alerts(&source.load()?, args),
        Command::Watcher(command) => ctl::watcher(&source.load()?, command),
    }
}

fn configtest(source: &config::Source) -> anyhow::Result<i32> {
    match source.load_checked() {
        Ok(_) => {
            println!("eventsd: configuration {} syntax is ok", source.describe());
            Ok(0)
        }
        Err(e) => {
            eprintln!("eventsd: {e:#}");
            eprintln!("eventsd: configuration test failed");
            Ok(1)
        }
    }
}

fn run(source: &config::Source, config: Config) -> anyhow::Result<i32> {
    // Started by an upgrade, a master logs where the one it replaces did.
    let default_sink = master::inherited_default_sink().unwrap_or(Sink::Stderr);
    let sink = Sink::for_target(&config.daemon.log, default_sink.clone());
    logging::init(&sink, config.daemon.log_level)?;
    match master::run(
        source.clone(),
        config,
        default_sink,
        Announcer::foreground(),
    ) {
        Ok(()) => Ok(0),
        Err(e) => {
            error!("{e:#}");
            if sink != Sink::Stderr {
                eprintln!("eventsd: {e:#}");
            }
            Ok(1)
        }
    }
}

fn start(source: &config::Source, config: Config, wait: &Wait) -> anyhow::Result<i32> {
    if let Probe::Running(pid) = pidfile::probe(&config.daemon.pidfile)? {
        // LSB: starting a service that runs is a success.
        println!(
            "eventsd is already running (pid {pid}, pidfile {})",
            config.daemon.pidfile.display()
        );
        return Ok(0);
    }
    let (from_daemon, to_cli) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).context("cannot create a pipe")?;
    match Daemonize::new().working_directory("/").execute() {
        Outcome::Parent(Ok(_)) => {
            drop(to_cli);
            let timeout = wait
                .timeout
                .map_or(Duration::from_secs(30), Duration::from_secs);
            await_start(from_daemon, timeout)
        }
        Outcome::Parent(Err(e)) => Err(anyhow!("cannot daemonize: {e}")),
        Outcome::Child(result) => {
            drop(from_daemon);
            let mut announcer = Announcer::pipe(to_cli);
            let outcome = result
                .map_err(|e| anyhow!("cannot daemonize: {e}"))
                .and_then(|_| {
                    logging::init(
                        &Sink::for_target(&config.daemon.log, Sink::Syslog),
                        config.daemon.log_level,
                    )
                });
            if let Err(e) = outcome {
                announcer.failed(&e);
                return Ok(1);
            }
            match master::run(source.clone(), config, Sink::Syslog, announcer) {
                Ok(()) => Ok(0),
                Err(e) => {
                    error!("{e:#}");
                    Ok(1)
                }
            }
        }
    }
}

/// Waits for the daemon's one-line report on the start pipe.
fn await_start(pipe: OwnedFd, timeout: Duration) -> anyhow::Result<i32> {
    let deadline = Instant::now() + timeout;
    let mut report = Vec::new();
    let mut pipe = std::fs::File::from(pipe);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            eprintln!(
                "eventsd: not ready after {}s; see its log",
                timeout.as_secs()
            );
            return Ok(1);
        }
        let mut fds = [PollFd::new(pipe.as_fd(), PollFlags::POLLIN)];
        let millis = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        match poll(&mut fds, PollTimeout::from(millis)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => return Err(e).context("cannot wait for the daemon"),
        }
        let mut chunk = [0u8; 4096];
        let n = pipe
            .read(&mut chunk)
            .context("cannot read the daemon's report")?;
        report.extend_from_slice(&chunk[..n]);
        if n == 0 || report.contains(&b'\n') {
            break;
        }
    }
    let report = String::from_utf8_lossy(&report);
    let mut words = report.trim().splitn(3, ' ');
    match (words.next(), words.next(), words.next()) {
        (Some("ready"), Some(pid), Some(listen)) => {
            println!("eventsd started (pid {pid}, listening on {listen})");
            Ok(0)
        }
        (Some("error"), _, _) => {
            eprintln!("eventsd: {}", report.trim().trim_start_matches("error "));
            Ok(1)
        }
        _ => {
            eprintln!("eventsd: the daemon exited during start-up; see its log");
            Ok(1)
        }
    }
}

/// Sends `signal` (SIGTERM: graceful, SIGQUIT: fast) and waits for the master to go.
fn stop(config: &Config, signal: Signal, wait: &Wait) -> anyhow::Result<i32> {
    let path = &config.daemon.pidfile;
    let Some(master) = running_master(config)? else {
        println!("eventsd is not running");
        return Ok(0);
    };
    let pid = master.pid;
    kill(pid, signal).with_context(|| format!("cannot send {signal} to eventsd (pid {pid})"))?;
    let timeout = wait.timeout.map_or_else(
        || config.workers.graceful_timeout() + Duration::from_secs(5),
        Duration::from_secs,
    );
    // Until no master holds the pidfile, whichever pid the file names.
    if wait_until(timeout, || {
        Ok(!matches!(pidfile::probe(path)?, Probe::Running(_)))
    })? {
        println!("eventsd stopped (pid {pid})");
        Ok(0)
    } else {
        eprintln!(
            "eventsd: still running (pid {pid}) {}s after {signal}",
            timeout.as_secs()
        );
        Ok(1)
    }
}

/// The master that runs, as its control socket confirms it (security.md): the pidfile's
/// lock says that one lives, but its text is only a claim, and the pid signalled is the
/// one that answers on the control socket. `None` when no master holds the pidfile.
fn running_master(config: &Config) -> anyhow::Result<Option<Confirmed>> {
    let (path, socket) = (&config.daemon.pidfile, &config.daemon.control_socket);
    let Probe::Running(named) = pidfile::probe(path)? else {
        return Ok(None);
    };
    // A master starting, or taking over in an upgrade, answers once it serves.
    let mut answer = Err(anyhow!("not asked yet"));
    wait_until(CONFIRM_WITHIN, || {
        answer = master::query(socket);
        Ok(answer.is_ok() || !matches!(pidfile::probe(path)?, Probe::Running(_)))
    })?;
    let status = match answer {
        Ok(status) => status,
        Err(_) if !matches!(pidfile::probe(path)?, Probe::Running(_)) => return Ok(None),
        Err(e) => {
            return Err(e.context(format!(
                "eventsd holds pidfile {} (pid {named}) but its control socket does not \
                 confirm it: not signalling a pid nothing confirms",
                path.display()
            )));
        }
    };
    let pid = Pid::from_raw(i32::try_from(status.pid).context("the master's pid")?);
    if pid != named {
        eprintln!(
            "eventsd: pidfile {} names pid {named}, but the master answering on control \
             socket {} is pid {pid}: that one is signalled, and the pidfile's pid is not \
             trusted",
            path.display(),
            socket.display()
        );
    }
    Ok(Some(Confirmed { pid, status }))
}

/// A running master and the status it answered with.
struct Confirmed {
    pid: Pid,
    status: Status,
}

fn restart(
    source: &config::Source,
    config: Config,
    signal: Signal,
    wait: &Wait,
) -> anyhow::Result<i32> {
    match stop(&config, signal, wait)? {
        0 => start(source, config, wait),
        failed => Ok(failed),
    }
}

/// The configuration was validated by `execute` before this runs: a bad one is never sent.
fn reload(config: &Config, wait: &Wait) -> anyhow::Result<i32> {
    let Some(Confirmed { pid, status }) = running_master(config)? else {
        eprintln!("eventsd: not running, nothing to reload");
        return Ok(NOT_RUNNING);
    };
    let socket = &config.daemon.control_socket;
    let before = status.reloads;
    kill(pid, Signal::SIGHUP)
        .with_context(|| format!("cannot send SIGHUP to eventsd (pid {pid})"))?;
    let timeout = wait.timeout.map_or_else(
        || config.workers.graceful_timeout() + Duration::from_secs(30),
        Duration::from_secs,
    );
    let mut last = None;
    let done = wait_until(timeout, || {
        let status = master::query(socket)?;
        let done = status.reloads > before && !status.reload_in_progress;
        last = Some(status);
        Ok(done)
    })?;
    match last {
        Some(status) if done => match &status.last_reload_error {
            Some(error) => {
                eprintln!("eventsd: reload refused by the daemon: {error}");
                Ok(1)
            }
            None => {
                println!(
                    "eventsd reloaded (pid {pid}, generation {}, {} workers)",
                    status.generation, status.target_workers
                );
                Ok(0)
            }
        },
        _ => {
            eprintln!(
                "eventsd: reload not complete after {}s; see `eventsd fullstatus`",
                timeout.as_secs()
            );
            Ok(1)
        }
    }
}

/// The configuration was validated by `execute` before this runs: a new master would
/// refuse a bad one anyway, but the operator hears why at once.
fn upgrade(config: &Config, wait: &Wait) -> anyhow::Result<i32> {
    let Some(Confirmed { pid: old, status }) = running_master(config)? else {
        eprintln!("eventsd: not running, nothing to upgrade");
        return Ok(NOT_RUNNING);
    };
    let failed_before = status.upgrades_failed;
    kill(old, Signal::SIGUSR2)
        .with_context(|| format!("cannot send SIGUSR2 to eventsd (pid {old})"))?;
    let timeout = wait.timeout.map_or_else(
        || config.workers.graceful_timeout() + Duration::from_secs(60),
        Duration::from_secs,
    );
    let mut outcome = None;
    wait_until(timeout, || {
        outcome = upgrade_outcome(config, old, failed_before)?;
        Ok(outcome.is_some())
    })?;
    match outcome {
        Some(Ok(new)) => {
            println!("eventsd upgraded (pid {old} -> {new})");
            Ok(0)
        }
        Some(Err(error)) => {
            eprintln!("eventsd: {error}");
            Ok(1)
        }
        None => {
            eprintln!(
                "eventsd: upgrade not complete after {}s; see `eventsd fullstatus`",
                timeout.as_secs()
            );
            Ok(1)
        }
    }
}

/// SIGUSR1: the master, its workers and the action runner reopen their log files.
fn reopen(config: &Config) -> anyhow::Result<i32> {
    let Some(Confirmed { pid, .. }) = running_master(config)? else {
        eprintln!("eventsd: not running, no log to reopen");
        return Ok(NOT_RUNNING);
    };
    kill(pid, Signal::SIGUSR1)
        .with_context(|| format!("cannot send SIGUSR1 to eventsd (pid {pid})"))?;
    println!("eventsd reopens its log files (pid {pid})");
    Ok(0)
}

/// How an upgrade from `old` went, once it is known: the new master answers on the
/// control socket (it took over), or the old one counts one more failure, or none runs.
fn upgrade_outcome(
    config: &Config,
    old: Pid,
    failed_before: u64,
) -> anyhow::Result<Option<Result<u32, String>>> {
    Ok(match master::query(&config.daemon.control_socket) {
        Ok(status) if status.pid != old.as_raw().unsigned_abs() => Some(Ok(status.pid)),
        Ok(status) if status.upgrades_failed > failed_before => {
            Some(Err(status.last_upgrade_error.unwrap_or_default()))
        }
        Ok(_) => None,
        Err(_) => match pidfile::probe(&config.daemon.pidfile)? {
            Probe::Running(_) => None,
            Probe::NotRunning | Probe::Stale(_) => {
                Some(Err("eventsd stopped during the upgrade".to_string()))
            }
        },
    })
}

enum Report {
    Summary,
    Table,
    Json,
}

fn status(source: &config::Source, report: Report) -> anyhow::Result<i32> {
    let config = match source.load() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("eventsd: {e:#}");
            return Ok(STATUS_UNKNOWN);
        }
    };
    let path = &config.daemon.pidfile;
    let probe = match pidfile::probe(path) {
        Ok(probe) => probe,
        // Not "not running": a user who may not read the pidfile cannot tell (LSB 4).
        Err(e) => {
            eprintln!("eventsd: cannot tell whether eventsd runs: {e:#}");
            return Ok(STATUS_UNKNOWN);
        }
    };
    match probe {
        Probe::NotRunning => {
            eprintln!("eventsd is not running");
            Ok(STATUS_NOT_RUNNING)
        }
        Probe::Stale(pid) => {
            let pid = pid.map_or_else(|| "unknown".to_string(), |pid| pid.to_string());
            eprintln!(
                "eventsd is dead but its pidfile remains ({}, pid {pid})",
                path.display()
            );
            Ok(STATUS_DEAD_WITH_PIDFILE)
        }
        Probe::Running(pid) => {
            print_running(pid, &config.daemon.control_socket, report)?;
            Ok(STATUS_RUNNING)
        }
    }
}

fn print_running(pid: Pid, socket: &Path, report: Report) -> anyhow::Result<()> {
    let status: Status = match master::query(socket) {
        Ok(status) => status,
        // The master holds its pidfile lock, so it is alive; it may be starting.
        Err(e) => {
            println!("eventsd is running (pid {pid}); its control socket does not answer: {e:#}");
            return Ok(());
        }
    };
    match report {
        Report::Summary => println!("{}", status.summary()),
        Report::Table => print!("{}", status.table()),
        Report::Json => println!("{}", serde_json::to_string_pretty(&status)?),
    }
    Ok(())
}

/// Polls `done` until it holds or `timeout` passes; tells which.
fn wait_until(
    timeout: Duration,
    mut done: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        if done()? {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(POLL_EVERY);
    }
}
