//! Real `redis-server` processes for the cluster tests, on free loopback ports, without
//! persistence, killed when the test ends (also when it fails).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{Daemon, SECOND, free_port, wait_for};

pub struct RedisServer {
    pub port: u16,
    dir: tempfile::TempDir,
    cluster_enabled: bool,
    process: Option<Child>,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        RedisServer::start_with(false)
    }

    fn start_with(cluster_enabled: bool) -> RedisServer {
        // Redis Cluster also listens on port + 10000 (its bus).
        let port = std::iter::repeat_with(free_port)
            .find(|&port| {
                !cluster_enabled
                    || std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok()
            })
            .expect("a free port");
        let mut server = RedisServer {
            port,
            dir: tempfile::tempdir().unwrap(),
            cluster_enabled,
            process: None,
        };
        server.restart();
        server
    }

    /// Starts (again) on the same port, empty: no persistence.
    pub fn restart(&mut self) {
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if self.cluster_enabled {
            command.args(["--cluster-enabled", "yes", "--cluster-config-file"]);
            command.arg(self.dir.path().join("nodes.conf"));
        }
        let process = command
            .spawn()
            .expect("redis-server runs (Debian package redis-server)");
        self.process = Some(process);
        wait_for("redis-server to answer", Duration::from_secs(10), || {
            self.cli(&["PING"]).trim() == "PONG"
        });
    }

    /// Kills the server (an outage); `restart` brings it back empty.
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = process.kill();
            let _ = process.wait();
        }
    }

    /// SIGSTOP: the server hangs, its connections open (a stalled shard); `resume` ends
    /// it, and so does the kill of `stop`.
    pub fn pause(&self) {
        self.signal(nix::sys::signal::Signal::SIGSTOP);
    }

    pub fn resume(&self) {
        self.signal(nix::sys::signal::Signal::SIGCONT);
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        let process = self.process.as_ref().expect("redis-server runs");
        let pid = nix::unistd::Pid::from_raw(process.id() as i32);
        nix::sys::signal::kill(pid, signal).expect("cannot signal redis-server");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// `redis-cli -p PORT ARGS...`, its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let output = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli runs (Debian package redis-tools)");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Events counted in this server, over every counter (bucket fields `b…`).
    pub fn counted(&self) -> u64 {
        self.counted_matching("eventsd:c:*")
    }

    /// Events counted in this server for the watcher of id `watcher`.
    pub fn counted_by(&self, watcher: &str) -> u64 {
        self.counted_matching(&format!("eventsd:c:{{{watcher}/*"))
    }

    fn counted_matching(&self, pattern: &str) -> u64 {
        let mut total = 0;
        for key in self.cli(&["--scan", "--pattern", pattern]).lines() {
            let fields = self.cli(&["HGETALL", key]);
            let lines: Vec<&str> = fields.lines().collect();
            for pair in lines.chunks(2) {
                if let [name, value] = pair {
                    if name.starts_with('b') {
                        total += value.parse::<u64>().unwrap_or(0);
                    }
                }
            }
        }
        total
    }

    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A Redis Cluster of three primaries, slots spread by `redis-cli --cluster create`.
pub struct RedisCluster {
    pub primaries: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        let primaries: Vec<RedisServer> = (0..3).map(|_| RedisServer::start_with(true)).collect();
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for primary in &primaries {
            create.arg(format!("127.0.0.1:{}", primary.port));
        }
        let output = create
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli --cluster create");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stdout)
        );
        let cluster = RedisCluster { primaries };
        wait_for(
            "the Redis Cluster to be ok",
            Duration::from_secs(20),
            || {
                cluster
                    .primaries
                    .iter()
                    .all(|p| p.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok"))
            },
        );
        cluster
    }

    pub fn urls(&self) -> Vec<String> {
        self.primaries
            .iter()
            .map(|p| format!("redis://127.0.0.1:{}", p.port))
            .collect()
    }
}

/// A node of a cluster on `urls` (`mode`: standalone or cluster), serving, with Redis
/// reached; calls time out after `timeout_ms`.
pub fn node_with_timeout(name: &str, mode: &str, urls: &[String], timeout_ms: u64) -> Daemon {
    let urls: Vec<String> = urls.iter().map(|u| format!("\"{u}\"")).collect();
    let daemon = Daemon::run(&format!(
        "[cluster]\nmode = \"{mode}\"\nurls = [{}]\nnode_name = \"{name}\"\n\
         timeout_ms = {timeout_ms}\n",
        urls.join(", ")
    ));
    wait_for(&format!("node {name} reaching Redis"), 10 * SECOND, || {
        shares(&daemon)
    });
    daemon
}

/// A node of a cluster on `urls`, calls timing out after 500 ms.
pub fn node(name: &str, mode: &str, urls: &[String]) -> Daemon {
    node_with_timeout(name, mode, urls, 500)
}

/// Whether the node counts in Redis (not degraded).
pub fn shares(daemon: &Daemon) -> bool {
    daemon
        .status()
        .is_some_and(|s| s["cluster"]["redis_reachable"] == true)
}
