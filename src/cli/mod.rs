//! The phpd-like control CLI, one implementation behind two programs: `eventsd [-c CONFIG]
//! COMMAND` (every command, `run` included: what init systems start) and `eventsctl [-c
//! CONFIG] COMMAND` (every command but `run`: what operators type).
//!
//! Owns argument parsing and dispatch, `run`, `configtest` and `restart`; `start` is
//! `start.rs`', the commands that signal a master `signals.rs`', `status` `status.rs`',
//! the on-call commands (`silence`, `alerts`, `watcher`) `oncall::ctl`'s, an HTTP client
//! of the daemon. It talks to a running master only through the pidfile (its lock says
//! whether a master lives), signals, and the control socket; it never touches the
//! master's state files, and never signals a pid the control socket does not confirm.

mod signals;
mod start;
mod status;

use std::path::{Path, PathBuf};

use clap::{CommandFactory, Parser, Subcommand};
use log::error;
use nix::sys::signal::Signal;

use crate::config::{self, Config};
use crate::logging::{self, Sink};
use crate::master::{self, Announcer};
use crate::oncall::ctl;
use signals::{Wait, reload, reopen, stop, upgrade};
use start::start;
use status::{Report, status};

/// The packaged configuration, read when neither `-c` nor `EVENTSD_CONFIG` names one, as
/// nginx reads `/etc/nginx/nginx.conf`.
const PACKAGED_CONFIG: &str = "/etc/eventsd/eventsd.toml";

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

/// What a command says when no master holds the pidfile: which pidfile it looked at,
/// since a daemon started with another `daemon.pidfile` (or `state_dir`) is not found
/// there, and the operator must see where the command looked.
fn not_running(config: &Config) -> String {
    format!(
        "eventsd is not running (pidfile {})",
        config.daemon.pidfile.display()
    )
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
