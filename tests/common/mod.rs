//! Test harness: starts the real `eventsd` binary with a temporary config and state
//! folder on a free loopback port, talks HTTP to it, reads its status, and kills every
//! process it started (by process group) when the test ends, also when it fails.
#![allow(dead_code)]

pub mod browser;
pub mod proxy;
pub mod redis;
pub mod rest;
pub mod rules;
pub mod sinks;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde_json::Value;

pub const BINARY: &str = env!("CARGO_BIN_EXE_eventsd");
pub const SECOND: Duration = Duration::from_secs(1);
/// The control program: the same commands as `eventsd COMMAND` but `run`.
pub const CTL: &str = env!("CARGO_BIN_EXE_eventsctl");

/// Polls `condition` every 20 ms until it holds; panics naming `what` after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A loopback port nothing listens on, for a server the test starts next. Taken below
/// the kernel's ephemeral range (32768 and up), where the port-0 binds of sinks and
/// clients in parallel tests land, so that none of them can take it before the server
/// binds it; each test process walks its own sequence from a point its pid picks.
pub fn free_port() -> u16 {
    use std::sync::atomic::AtomicU32;
    const FIRST: u32 = 10_000;
    const SPAN: u32 = 22_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(7_919) % SPAN;
    for _ in 0..SPAN {
        let step = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (FIRST + (start + step) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port between {FIRST} and {}", FIRST + SPAN);
}

/// A config for tests: `[server] listen`, `[daemon]` state and log in the temp folder,
/// workers as the test's own user, file appenders allowed in the temp folder, overlaid section by section with `extra`
/// (TOML).
pub fn config_text(port: u16, extra: &str) -> String {
    // Workers as the user running the tests: as root, eventsd would otherwise drop them
    // to `nobody`, who cannot write in the test's private temp folder.
    let user = nix::unistd::User::from_uid(nix::unistd::geteuid())
        .ok()
        .flatten()
        .expect("the test user has a name")
        .name;
    let mut config: toml::Table = toml::from_str(&format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n\
         [workers]\nuser = \"{user}\"\n\
         [collectors]\nfile_dirs = [\".\"]\n\
         [daemon]\nstate_dir = \"state\"\nlog = \"daemon.log\"\nlog_level = \"debug\"\n"
    ))
    .unwrap();
    let extra: toml::Table = toml::from_str(extra).expect("test config overlay is valid TOML");
    for (section, values) in extra {
        match (config.get_mut(&section), values) {
            (Some(toml::Value::Table(base)), toml::Value::Table(values)) => base.extend(values),
            (_, values) => {
                config.insert(section, values);
            }
        }
    }
    toml::to_string(&config).unwrap()
}

pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub port: u16,
    /// What `spawn_foreground` runs: the built binary, or a copy an upgrade test replaces.
    pub binary: PathBuf,
    /// The foreground `eventsd run`, when the test started it that way.
    foreground: Option<Child>,
    /// Every process group started by this test: killed on drop.
    groups: Vec<Pid>,
}

impl Daemon {
    /// A temp folder with a config, nothing started.
    pub fn new(extra: &str) -> Daemon {
        remember_failures();
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = dir.path().join("eventsd.toml");
        std::fs::write(&config, config_text(port, extra)).unwrap();
        Daemon {
            dir,
            config,
            port,
            binary: PathBuf::from(BINARY),
            foreground: None,
            groups: Vec::new(),
        }
    }

    /// `eventsd run` in the foreground, in its own process group, waited for until
    /// every worker is ready.
    pub fn run(extra: &str) -> Daemon {
        let mut daemon = Daemon::new(extra);
        daemon.spawn_foreground(&[]);
        daemon.wait_ready();
        daemon
    }

    pub fn spawn_foreground(&mut self, env: &[(&str, &str)]) {
        self.spawn_foreground_under(&[], env);
    }

    /// `eventsd run` in the foreground, exec'd by `wrapper` (e.g. systemd-socket-activate).
    pub fn spawn_foreground_under(&mut self, wrapper: &[&str], env: &[(&str, &str)]) {
        let stderr = std::fs::File::create(self.dir.path().join("stderr.log")).unwrap();
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(&self.binary);
                command
            }
            None => Command::new(&self.binary),
        };
        let child = command
            .arg("-c")
            .arg(&self.config)
            .arg("run")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn eventsd under {wrapper:?}: {e}"));
        self.groups.push(Pid::from_raw(child.id() as i32));
        self.foreground = Some(child);
    }

    /// `eventsd start`; the daemon it leaves behind is tracked for clean-up.
    pub fn start(&mut self) -> Output {
        self.cli_tracked(&["start"])
    }

    /// `eventsd ARGS...` of a command that may leave a new master (start, restart,
    /// upgrade): whatever it says, the master it leaves is tracked before the caller
    /// asserts anything, so that a failed command leaks no process.
    pub fn cli_tracked(&mut self, args: &[&str]) -> Output {
        let output = self.cli(args);
        self.track_master();
        output
    }

    /// `eventsctl ARGS...`, tracked as `cli_tracked`.
    pub fn ctl_tracked(&mut self, args: &[&str]) -> Output {
        let output = self.ctl(args);
        self.track_master();
        output
    }

    /// Adds the running master's process group to the groups killed on drop.
    pub fn track_master(&mut self) {
        if let Some(pid) = self.pidfile_pid() {
            if let Ok(group) = nix::unistd::getpgid(Some(pid)) {
                self.groups.push(group);
            }
        }
    }

    /// `eventsd -c CONFIG ARGS...`.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.command(BINARY, args)
    }

    /// `eventsctl -c CONFIG ARGS...`.
    pub fn ctl(&self, args: &[&str]) -> Output {
        self.command(CTL, args)
    }

    /// `eventsd -c CONFIG ARGS...` as the user and group `id` (65534: nobody), from a
    /// test run as root.
    pub fn cli_as(&self, id: u32, args: &[&str]) -> Output {
        Command::new(BINARY)
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .uid(id)
            .gid(id)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run eventsd as {id}: {e}"))
    }

    fn command(&self, program: &str, args: &[&str]) -> Output {
        Command::new(program)
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
    }

    pub fn address(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn pidfile(&self) -> PathBuf {
        self.path("state/eventsd.pid")
    }

    pub fn control_socket(&self) -> PathBuf {
        self.path("state/eventsd.sock")
    }

    pub fn pidfile_pid(&self) -> Option<Pid> {
        let text = std::fs::read_to_string(self.pidfile()).ok()?;
        text.trim().parse().ok().map(Pid::from_raw)
    }

    pub fn log(&self) -> String {
        let mut log = std::fs::read_to_string(self.path("daemon.log")).unwrap_or_default();
        log.push_str(&std::fs::read_to_string(self.path("stderr.log")).unwrap_or_default());
        log
    }

    /// The master's status document, read from its control socket.
    pub fn status(&self) -> Option<Value> {
        let mut stream = std::os::unix::net::UnixStream::connect(self.control_socket()).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let mut document = String::new();
        stream.read_to_string(&mut document).ok()?;
        serde_json::from_str(&document).ok()
    }

    pub fn master_pid(&self) -> Pid {
        let status = self.status().expect("master answers on its control socket");
        Pid::from_raw(status["pid"].as_i64().unwrap() as i32)
    }

    /// The events in the state folder's `counters.json` (every bucket of every key), 0
    /// while it is missing.
    pub fn counted_on_disk(&self) -> u64 {
        let Ok(text) = std::fs::read_to_string(self.path("state/counters.json")) else {
            return 0;
        };
        let document: Value = serde_json::from_str(&text).unwrap();
        let watchers = document["watchers"].as_object().unwrap();
        let keys = watchers
            .values()
            .flat_map(|w| w["keys"].as_object().unwrap().values());
        keys.flat_map(|k| k["buckets"].as_array().unwrap().iter())
            .map(|bucket| bucket[1].as_u64().unwrap())
            .sum()
    }

    /// The ids of the firings the state folder's journal (`pending.jsonl`) holds as
    /// pending, oldest first. A line the daemon is still appending is left for the next
    /// read.
    pub fn journaled_ids(&self) -> Vec<String> {
        let text = std::fs::read_to_string(self.path("state/pending.jsonl")).unwrap_or_default();
        let mut pending: Vec<String> = Vec::new();
        for line in text.lines() {
            let Ok(line) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            if let Some(id) = line["add"]["firing"]["id"].as_str() {
                pending.push(id.to_string());
            }
            if let Some(done) = line["done"].as_array() {
                pending.retain(|id| !done.iter().any(|d| d == id.as_str()));
            }
        }
        pending
    }

    /// The value of one series of `/metrics` (`name{labels}`), if the daemon reports it.
    pub fn metric(&self, series: &str) -> Option<u64> {
        let text = self.get("/metrics").ok()?.body;
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    /// The sum of every series of `/metrics` that starts with `prefix` (a family and the
    /// first of its labels: `eventsd_action_outcomes_total{action="email"`); 0 when none.
    pub fn metric_sum(&self, prefix: &str) -> u64 {
        self.get("/metrics")
            .map_or(0, |response| series_sum(&response.body, prefix))
    }

    /// Workers by state: `("idle", pid)`...
    pub fn workers(&self) -> Vec<(String, Pid)> {
        let Some(status) = self.status() else {
            return Vec::new();
        };
        status["workers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| {
                (
                    w["state"].as_str().unwrap().to_string(),
                    Pid::from_raw(w["pid"].as_i64().unwrap() as i32),
                )
            })
            .collect()
    }

    /// Pids of the workers that serve (not starting, not draining).
    pub fn serving_workers(&self) -> Vec<Pid> {
        self.workers()
            .into_iter()
            .filter(|(state, _)| state == "idle" || state == "busy")
            .map(|(_, pid)| pid)
            .collect()
    }

    /// Waits until the pool is exactly its target, every worker serving.
    pub fn wait_ready(&self) {
        wait_for("every worker ready", Duration::from_secs(20), || {
            self.status().is_some_and(|status| {
                let target = status["target_workers"].as_u64().unwrap() as usize;
                let workers = status["workers"].as_array().unwrap();
                workers.len() == target
                    && workers
                        .iter()
                        .all(|w| matches!(w["state"].as_str(), Some("idle" | "busy")))
            })
        });
    }

    pub fn signal(&self, signal: Signal) {
        kill(self.master_pid(), signal).expect("cannot signal the master");
    }

    pub fn get(&self, path: &str) -> std::io::Result<Response> {
        request(
            self.address(),
            &format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"),
        )
    }

    /// A request with a body and extra header lines (each ending in `\r\n`).
    pub fn send(&self, method: &str, path: &str, body: &str, headers: &str) -> Response {
        let raw = format!(
            "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n{headers}\r\n{body}",
            body.len()
        );
        request(self.address(), &raw).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    pub fn post(&self, path: &str, body: &str) -> Response {
        self.send("POST", path, body, "")
    }

    pub fn delete(&self, path: &str) -> Response {
        self.send("DELETE", path, "", "")
    }

    /// The exit of the foreground `eventsd run`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let child = self.foreground.as_mut().expect("no foreground daemon");
        let mut status = None;
        wait_for("eventsd run to exit", timeout, || {
            status = child.try_wait().unwrap();
            status.is_some()
        });
        status.unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        for group in &self.groups {
            let _ = killpg(*group, Signal::SIGKILL);
        }
        if let Some(mut child) = self.foreground.take() {
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- eventsd log ----\n{}", self.log());
            // Read, not taken: every daemon of the test says it after its log.
            let failure = FAILURE.take();
            FAILURE.set(failure.clone());
            let failure = failure.unwrap_or_default();
            eprintln!("---- end of the eventsd log; the test failed: {failure}");
        }
    }
}

thread_local! {
    /// The panic of this test's thread, said again after the daemon's log (which can
    /// run to thousands of lines) so that a CI summary showing the output's end shows it.
    static FAILURE: std::cell::Cell<Option<String>> = const { std::cell::Cell::new(None) };
}

fn remember_failures() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let report = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |panic| {
            FAILURE.set(Some(panic.to_string()));
            report(panic);
        }));
    });
}

/// The child of `parent` whose process name is `name` (`eventsd-action`, `eventsd`).
pub fn child_named(parent: Pid, name: &str) -> Option<Pid> {
    std::fs::read_dir("/proc").ok()?.find_map(|entry| {
        let pid: i32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let (comm, rest) = stat.split_once(" (")?.1.rsplit_once(") ")?;
        let ppid: i32 = rest.split(' ').nth(1)?.parse().ok()?;
        (ppid == parent.as_raw() && comm == name).then(|| Pid::from_raw(pid))
    })
}

/// Whether `pid` is gone (or a zombie nobody reaped, which the caller may check apart).
pub fn process_state(pid: Pid) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The state follows the parenthesised command name, which may contain spaces.
    stat.rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next())
}

pub fn is_gone(pid: Pid) -> bool {
    process_state(pid).is_none()
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl Response {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name)
                .then(|| value.trim().to_string())
        })
    }
}

/// Sends `raw` on a new connection and reads the reply until the server closes.
pub fn request(address: SocketAddr, raw: &str) -> std::io::Result<Response> {
    let (reply, outcome) = exchange(address, raw);
    outcome?;
    parse_response(&reply)
}

/// Sends `raw` on a connection of its own and reads until the server closes it (at
/// most 40 s without a byte: longer than the 30 s a worker may wait for the master's
/// word on a change): the bytes that came back, and what ended the exchange early (a
/// refused connection, a reset, the timeout), which may have cut a reply midway.
pub fn exchange(address: SocketAddr, raw: &str) -> (Vec<u8>, std::io::Result<()>) {
    let mut reply = Vec::new();
    let mut talk = || {
        let mut stream = TcpStream::connect(address)?;
        stream.set_read_timeout(Some(Duration::from_secs(40)))?;
        stream.write_all(raw.as_bytes())?;
        stream.read_to_end(&mut reply).map(drop)
    };
    let outcome = talk();
    (reply, outcome)
}

/// A client that reads nothing: a small receive window, and writes that give up after
/// 2 s without progress (the server stopped reading). A TLS client reads what it must,
/// also when a write blocks: such a read gives up after 2 s too.
pub fn unread_client(address: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&address.into()).unwrap();
    let stream: TcpStream = socket.into();
    stream.set_write_timeout(Some(2 * SECOND)).unwrap();
    stream.set_read_timeout(Some(2 * SECOND)).unwrap();
    stream
}

/// Writes keep-alive posts of one event to `/event/{event}/` on `stream`, a hundred at
/// a time, and reads no reply, until a write fails (the server stopped reading, or cut
/// the connection) or a minute has passed. How many posts went out whole.
pub fn pipeline_posts_unread(stream: &mut impl Write, event: &str) -> usize {
    const BATCH: usize = 100;
    let body = r#"{"user":"pipelined"}"#;
    let post = format!(
        "POST /event/{event}/ HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let batch = post.repeat(BATCH);
    let started = Instant::now();
    let mut posted = 0;
    while started.elapsed() < 60 * SECOND && stream.write_all(batch.as_bytes()).is_ok() {
        posted += BATCH;
    }
    posted
}

/// Waits for the worker's word that it cut the connection from `client` because the
/// client read nothing for `write_timeout_secs` (it logs why), then for the worker to
/// hold no connection.
pub fn wait_cut_for_reading_nothing(daemon: &Daemon, client: SocketAddr) {
    let cut = format!("connection from {client}: ");
    // However long a debug build takes, on a loaded machine, to get through what the
    // client sent before its replies filled the connection.
    wait_for("the worker to cut the connection", 120 * SECOND, || {
        daemon
            .log()
            .lines()
            .any(|line| line.contains(&cut) && line.contains("read nothing"))
    });
    wait_for("the worker to hold no connection", 30 * SECOND, || {
        daemon.status().unwrap()["workers"][0]["connections"] == 0
    });
}

pub fn read_response(stream: &mut TcpStream) -> std::io::Result<Response> {
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply)?;
    parse_response(&reply)
}

pub fn parse_response(reply: &[u8]) -> std::io::Result<Response> {
    let reply = String::from_utf8_lossy(reply);
    let (head, body) = reply.split_once("\r\n\r\n").ok_or_else(|| {
        std::io::Error::new(
            ErrorKind::UnexpectedEof,
            format!("no complete reply: {reply:?}"),
        )
    })?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| {
            std::io::Error::new(ErrorKind::InvalidData, format!("bad status line: {head:?}"))
        })?;
    Ok(Response {
        status,
        head: head.to_string(),
        body: body.to_string(),
    })
}

/// `POST /event/{event}/` of `body` on a connection of its own.
pub fn post_event(address: SocketAddr, event: &str, body: &str) -> std::io::Result<Response> {
    request(address, &event_request(event, body))
}

/// The bytes of a `POST /event/{event}/` of `body`, closing its connection.
fn event_request(event: &str, body: &str) -> String {
    format!(
        "POST /event/{event}/ HTTP/1.1\r\nHost: load\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Posts every body to `/event/{event}/` from `clients` concurrent clients (each body on
/// a connection of its own, so that the workers share them), each acknowledged; the ids.
/// The clients are scoped threads: none outlives the call, even when one fails.
pub fn post_concurrently(
    address: SocketAddr,
    event: &str,
    bodies: &[String],
    clients: usize,
) -> Vec<String> {
    std::thread::scope(|scope| {
        let clients: Vec<_> = bodies
            .chunks(bodies.len().div_ceil(clients).max(1))
            .map(|chunk| {
                scope.spawn(move || {
                    let post = |body: &String| {
                        let response = post_event(address, event, body)
                            .unwrap_or_else(|e| panic!("POST /event/{event}/: {e}"));
                        assert_eq!(response.status, 200, "{response:?}");
                        response.json()["_id"].as_str().unwrap().to_string()
                    };
                    chunk.iter().map(post).collect::<Vec<_>>()
                })
            })
            .collect();
        let ids = clients
            .into_iter()
            .map(|c| c.join().expect("a client failed"));
        ids.flatten().collect()
    })
}

/// What each client of a `Load` asks, again and again.
#[derive(Clone)]
pub enum Ask {
    /// `GET /health`; the worker pid of each 200 is kept.
    Health,
    /// `POST /event/{type}/` of `{"client": C, "n": N}`; the id of each 200 is kept.
    Events(String),
    /// `POST /event/{type}/` of each body in turn; the id of each 200 is kept.
    Cycling { event: String, bodies: Vec<String> },
}

impl Ask {
    /// The request of client `client`'s `n`th turn.
    fn request(&self, client: usize, n: u64) -> String {
        match self {
            Ask::Health => {
                "GET /health HTTP/1.1\r\nHost: load\r\nConnection: close\r\n\r\n".to_string()
            }
            Ask::Events(event) => {
                event_request(event, &format!("{{\"client\": {client}, \"n\": {n}}}"))
            }
            Ask::Cycling { event, bodies } => {
                event_request(event, &bodies[(client + n as usize) % bodies.len()])
            }
        }
    }
}

/// Clients asking in a loop, one connection per request, recording every outcome,
/// until `finish` (or the drop, when a test fails first: the threads are stopped and
/// joined, none is left running).
pub struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Tally>>,
}

#[derive(Debug, Default)]
pub struct Tally {
    pub ok: u64,
    /// Every request not answered 200, whatever the reason.
    pub failures: Vec<String>,
    /// Among them, those whose reply began (an error status, a reply cut midway), as
    /// opposed to those refused or reset before any byte of a reply.
    pub bad_replies: Vec<String>,
    /// The worker pid of every 200 to `GET /health`, in order.
    pub workers: Vec<i32>,
    /// The id of every acknowledged event.
    pub acknowledged: Vec<String>,
}

impl Tally {
    /// Every request of the load succeeded `during` the fault.
    pub fn assert_none_failed(&self, during: &str) {
        assert!(
            self.failures.is_empty(),
            "{} of {} requests failed {during}: {:?}",
            self.failures.len(),
            self.ok + self.failures.len() as u64,
            self.failures
        );
    }

    fn add(&mut self, other: Tally) {
        self.ok += other.ok;
        self.failures.extend(other.failures);
        self.bad_replies.extend(other.bad_replies);
        self.workers.extend(other.workers);
        self.acknowledged.extend(other.acknowledged);
    }
}

impl Load {
    /// `clients` asking `GET /health`.
    pub fn start(address: SocketAddr, clients: usize) -> Load {
        Load::asking(address, clients, &Ask::Health)
    }

    /// `clients` posting events of `event`.
    pub fn posting(address: SocketAddr, clients: usize, event: &str) -> Load {
        Load::asking(address, clients, &Ask::Events(event.to_string()))
    }

    pub fn asking(address: SocketAddr, clients: usize, ask: &Ask) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..clients)
            .map(|client| {
                let (stop, ask) = (stop.clone(), ask.clone());
                std::thread::spawn(move || {
                    let mut tally = Tally::default();
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        tally.add(Load::ask_once(address, &ask, client, n));
                    }
                    tally
                })
            })
            .collect();
        Load { stop, threads }
    }

    fn ask_once(address: SocketAddr, ask: &Ask, client: usize, n: u64) -> Tally {
        let mut tally = Tally::default();
        let (reply, outcome) = exchange(address, &ask.request(client, n));
        if reply.is_empty() {
            let error = outcome
                .err()
                .map_or("no reply".to_string(), |e| e.to_string());
            tally.failures.push(error);
            return tally;
        }
        match outcome.and_then(|()| parse_response(&reply)) {
            Ok(response) if response.status == 200 => {
                tally.ok = 1;
                let body = response.json();
                match ask {
                    Ask::Health => tally.workers.push(body["worker"].as_i64().unwrap() as i32),
                    Ask::Events(_) | Ask::Cycling { .. } => tally
                        .acknowledged
                        .push(body["_id"].as_str().unwrap().to_string()),
                }
            }
            Ok(response) => {
                tally.failures.push(format!("status {}", response.status));
                tally.bad_replies.push(format!("{response:?}"));
            }
            Err(e) => {
                tally.failures.push(e.to_string());
                let cut = String::from_utf8_lossy(&reply).into_owned();
                tally.bad_replies.push(format!("{e}: {cut}"));
            }
        }
        tally
    }

    /// The requests so far acknowledged: stops the clients, joins them, adds up.
    pub fn finish(mut self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = Tally::default();
        for thread in std::mem::take(&mut self.threads) {
            total.add(thread.join().expect("load thread panicked"));
        }
        total
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in std::mem::take(&mut self.threads) {
            let _ = thread.join();
        }
    }
}

/// The sum of every series of an exposition that starts with `prefix` (see
/// `Daemon::metric_sum`); 0 when none.
pub fn series_sum(exposition: &str, prefix: &str) -> u64 {
    exposition
        .lines()
        .filter(|line| line.starts_with(prefix))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<u64>().ok())
        .sum()
}

/// Runs `promtool check metrics` (Debian's `prometheus`) on an exposition; its findings,
/// empty when it passes.
pub fn promtool_findings(exposition: &str) -> String {
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus) is installed");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let output = promtool.wait_with_output().unwrap();
    let findings = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    if output.status.success() {
        findings.trim().to_string()
    } else {
        format!("promtool failed: {findings}")
    }
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

pub fn exists(path: &Path) -> bool {
    path.exists()
}

/// The value of one line of `/proc/PID/status` (`"CapEff"`, `"VmRSS"`, `"SigIgn"`...),
/// without its name; `None` once the process is gone.
pub fn proc_status(pid: Pid, key: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        (name == key).then(|| value.trim().to_string())
    })
}

/// What the descriptors of `pid` point at (`/proc/PID/fd`).
pub fn open_files(pid: Pid) -> Vec<PathBuf> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .collect()
}

/// Sets the soft limit of open files of `pid` (a daemon's process, or this test's own:
/// `Pid::this()`), within its hard limit.
pub fn set_fd_limit(pid: Pid, soft: u64) {
    let mut current = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit reading into a valid rlimit, then writing a valid one.
    let read = unsafe {
        libc::prlimit(
            pid.as_raw(),
            libc::RLIMIT_NOFILE,
            std::ptr::null(),
            &mut current,
        )
    };
    assert_eq!(read, 0, "prlimit: {}", std::io::Error::last_os_error());
    let wanted = libc::rlimit {
        rlim_cur: soft.min(current.rlim_max),
        rlim_max: current.rlim_max,
    };
    let written = unsafe {
        libc::prlimit(
            pid.as_raw(),
            libc::RLIMIT_NOFILE,
            &wanted,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(written, 0, "prlimit: {}", std::io::Error::last_os_error());
}

/// Leaves `pid` no free descriptor: its limit is what it holds open, so that its next
/// accept or open fails with EMFILE.
pub fn exhaust_descriptors(pid: Pid) {
    set_fd_limit(pid, open_files(pid).len() as u64);
}

/// The first number of a `/proc/PID/status` line (`VmRSS` in KiB, `Uid`'s real id).
pub fn proc_status_number(pid: Pid, key: &str) -> Option<u64> {
    proc_status(pid, key)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A request sent but for its end: a worker holds the connection until `finish` sends
/// the rest (an in-flight request for stop, reload and upgrade tests).
pub struct HalfSent {
    stream: TcpStream,
    rest: Vec<u8>,
}

impl HalfSent {
    /// All of a `GET /health` but its final empty line, once a worker holds it.
    pub fn start(daemon: &Daemon) -> HalfSent {
        let head = b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n";
        HalfSent::hold(daemon, head, b"\r\n".to_vec())
    }

    /// A `POST` of `body` to `path` with the first half of the body sent, once a worker
    /// holds it.
    pub fn post(daemon: &Daemon, path: &str, body: &[u8]) -> HalfSent {
        let mut sent = format!(
            "POST {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        let (first, rest) = body.split_at(body.len() / 2);
        sent.extend_from_slice(first);
        HalfSent::hold(daemon, &sent, rest.to_vec())
    }

    fn hold(daemon: &Daemon, sent: &[u8], rest: Vec<u8>) -> HalfSent {
        let mut stream = TcpStream::connect(daemon.address()).expect("connect to eventsd");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        stream.write_all(sent).unwrap();
        wait_for(
            "a worker holding the half-sent request",
            10 * SECOND,
            || {
                daemon.status().is_some_and(|status| {
                    status["workers"]
                        .as_array()
                        .is_some_and(|w| w.iter().any(|w| w["connections"].as_u64() > Some(0)))
                })
            },
        );
        HalfSent { stream, rest }
    }

    /// Sends the rest; the reply.
    pub fn finish(mut self) -> std::io::Result<Response> {
        self.stream.write_all(&self.rest)?;
        read_response(&mut self.stream)
    }

    /// Sends the rest in five pieces at the pace of a slow client; the reply.
    pub fn finish_slowly(mut self) -> std::io::Result<Response> {
        for piece in self.rest.chunks(self.rest.len() / 5 + 1) {
            self.stream.write_all(piece)?;
            // The pace of a slow client, not a synchronisation.
            std::thread::sleep(Duration::from_millis(50));
        }
        read_response(&mut self.stream)
    }
}
