//! What a worker enforces on its own connections (process-model.md, "Connections and
//! HTTP"): deadlines, limits, the connection cap, accept errors, recycling, privileges.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::rest::register;
use common::{
    Daemon, Response, SECOND, exhaust_descriptors, parse_response, read_response, request,
    set_fd_limit, wait_for,
};

/// Reads until the server closes the connection; fails if it stays open `limit`.
fn closed_by_server_within(stream: &mut TcpStream, limit: Duration) -> Vec<u8> {
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut received = Vec::new();
    match stream.read_to_end(&mut received) {
        Ok(_) => received,
        Err(e) if e.kind() == ErrorKind::ConnectionReset => received,
        Err(e) => panic!("connection still open after {limit:?}: {e}"),
    }
}

#[test]
fn health_answers_with_the_worker_pid_and_a_trailing_slash_is_optional() {
    let daemon = Daemon::run("");
    let workers = daemon.serving_workers();
    for path in ["/health", "/health/"] {
        let response = daemon.get(path).unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(
            response.header("content-type").as_deref(),
            Some("application/json")
        );
        let body = response.json();
        assert_eq!(body["status"], "ok");
        let worker = nix::unistd::Pid::from_raw(body["worker"].as_i64().unwrap() as i32);
        assert!(workers.contains(&worker), "{worker} is not a worker");
    }
}

#[test]
fn unknown_paths_and_wrong_methods_get_json_errors() {
    let daemon = Daemon::run("");
    let missing = daemon.get("/nowhere").unwrap();
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["status_code"], 404);

    let wrong = request(
        daemon.address(),
        "DELETE /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(wrong.status, 405);
    assert_eq!(wrong.json()["message"], "Method Not Allowed");
    assert_eq!(wrong.header("allow").as_deref(), Some("GET, HEAD"));
}

#[test]
fn a_body_over_the_limit_is_refused_with_413_before_it_is_sent() {
    let daemon = Daemon::run("[server]\nmax_body_bytes = 1024\n");
    // Only the head is sent: the reply must come without the 10 MB.
    let response = request(
        daemon.address(),
        "POST /health HTTP/1.1\r\nHost: t\r\nContent-Length: 10485760\r\n\r\n",
    )
    .unwrap();
    assert_eq!(response.status, 413);
    assert!(
        response.json()["message"]
            .as_str()
            .unwrap()
            .contains("max_body_bytes")
    );

    let chunk = "x".repeat(2000);
    let chunked = request(
        daemon.address(),
        &format!(
            "POST /health HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
            chunk.len()
        ),
    )
    .unwrap();
    assert_eq!(chunked.status, 413, "chunked bodies are limited too");
}

#[test]
fn a_body_without_a_length_gets_411() {
    let daemon = Daemon::run("");
    let response = request(
        daemon.address(),
        "POST /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(response.status, 411);
    assert_eq!(response.json()["status_code"], 411);
}

#[test]
fn a_body_shorter_than_its_length_times_out_with_408() {
    let daemon = Daemon::run("[server]\nread_timeout_secs = 1\n");
    let mut stream = TcpStream::connect(daemon.address()).unwrap();
    stream
        .write_all(b"POST /health HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nonly a part")
        .unwrap();
    let reply = closed_by_server_within(&mut stream, 10 * SECOND);
    let response = parse_response(&reply).unwrap();
    assert_eq!(response.status, 408);
}

#[test]
fn headers_that_never_end_are_cut_after_the_read_timeout() {
    let daemon = Daemon::run("[server]\nread_timeout_secs = 1\n");
    let mut stream = TcpStream::connect(daemon.address()).unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n")
        .unwrap();
    let started = Instant::now();
    closed_by_server_within(&mut stream, 10 * SECOND);
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "cut too early"
    );
}

#[test]
fn a_client_still_sending_after_its_head_was_refused_gets_the_431_and_no_reset() {
    // hyper refuses a head over max_header_bytes and closes, lingering: it reads and
    // discards what the client still sends. The header deadline must not cut that linger,
    // or the client, still sending when it fires, gets a reset instead of its reply.
    let daemon = Daemon::run("[server]\nread_timeout_secs = 1\n");
    let mut stream = TcpStream::connect(daemon.address()).unwrap();
    let head = format!(
        "POST /health HTTP/1.1\r\nHost: t\r\nX-Padding: {}",
        "a".repeat(20 * 1024)
    );
    stream.write_all(head.as_bytes()).unwrap();
    // Sending for longer than the read timeout before reading is what is tested here.
    for _ in 0..25 {
        std::thread::sleep(Duration::from_millis(100));
        stream
            .write_all(&[b'a'; 512])
            .expect("the worker still reads what it discards");
    }
    stream.set_read_timeout(Some(10 * SECOND)).unwrap();
    let mut reply = Vec::new();
    stream
        .read_to_end(&mut reply)
        .expect("the reply and an end of stream, not a reset");
    assert_eq!(parse_response(&reply).unwrap().status, 431);
}

#[test]
fn an_idle_keep_alive_connection_is_closed_after_the_read_timeout() {
    let daemon = Daemon::run("[server]\nread_timeout_secs = 1\n");
    let mut stream = TcpStream::connect(daemon.address()).unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 1024];
    stream.set_read_timeout(Some(10 * SECOND)).unwrap();
    let n = stream.read(&mut first).unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
    let started = Instant::now();
    let rest = closed_by_server_within(&mut stream, 10 * SECOND);
    assert!(rest.is_empty());
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed too early"
    );
}

#[test]
fn a_client_reading_a_long_reply_slowly_keeps_its_connection_past_the_read_timeout() {
    // The header deadline counts a wait for the next request, not a reply going out
    // slowly: the client below reads nothing for longer than the read timeout while a
    // reply larger than both sockets' buffers waits, then reads it all and asks again.
    let daemon = Daemon::run("[server]\nread_timeout_secs = 1\n");
    register(&daemon, "logins");
    let events = "{}\n".repeat(200_000);
    let bulk = format!(
        "POST /event/logins/_bulk?ids=true HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{events}",
        events.len()
    );
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    // A small receive window (no autotuning): the reply cannot hide in the client's kernel.
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    socket.connect(&daemon.address().into()).unwrap();
    let mut stream = TcpStream::from(socket);
    stream.write_all(bulk.as_bytes()).unwrap();
    stream.set_read_timeout(Some(10 * SECOND)).unwrap();
    let mut first = [0u8; 1024];
    let n = stream.read(&mut first).unwrap();
    let head = String::from_utf8_lossy(&first[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length: "))
        .and_then(|value| value.trim().parse().ok())
        .expect("a content-length");
    assert!(
        length > 4 * 1024 * 1024,
        "the reply must outgrow the server's send buffer"
    );
    let body_start = head.find("\r\n\r\n").unwrap() + 4;
    // Reading nothing for more than twice the read timeout is what is tested here.
    std::thread::sleep(Duration::from_millis(2500));
    let mut rest = vec![0u8; length - (n - body_start)];
    stream
        .read_exact(&mut rest)
        .expect("the whole reply, not cut by the header deadline");
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut stream).unwrap().status, 200);
}

#[test]
fn the_connection_cap_holds_new_clients_until_a_slot_frees() {
    let daemon = Daemon::run(
        "[server]\nmax_connections = 1\nread_timeout_secs = 30\n[workers]\nmin = 1\nmax = 1\n",
    );
    let holder = TcpStream::connect(daemon.address()).unwrap();
    wait_for(
        "the worker to hold the first connection",
        5 * SECOND,
        || daemon.status().unwrap()["workers"][0]["connections"] == 1,
    );

    let mut waiting = TcpStream::connect(daemon.address()).unwrap();
    waiting
        .write_all(b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    // Seen where it waits: in the listening socket's accept queue, not taken by the
    // worker, which still holds one connection.
    wait_for("the second client in the backlog", 10 * SECOND, || {
        accept_queue(daemon.port) == Some(1)
    });
    assert_eq!(daemon.status().unwrap()["workers"][0]["connections"], 1);

    drop(holder);
    waiting.set_read_timeout(Some(10 * SECOND)).unwrap();
    assert_eq!(read_response(&mut waiting).unwrap().status, 200);
}

/// A request read to its end needs no lingering close (that is for a client still
/// sending what no one reads): the connection's slot is free once the reply is sent,
/// though the client keeps its socket open.
#[test]
fn a_connection_closed_after_its_request_was_read_frees_its_slot_at_once() {
    let daemon = Daemon::run("[server]\nmax_connections = 1\n[workers]\nmin = 1\nmax = 1\n");
    let body = r#"{"type": "logins"}"#;
    let mut first = TcpStream::connect(daemon.address()).unwrap();
    let head = format!(
        "POST /event/ HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    first.write_all(format!("{head}{body}").as_bytes()).unwrap();
    let reply = closed_by_server_within(&mut first, 10 * SECOND);
    assert_eq!(parse_response(&reply).unwrap().status, 201);

    // `first` stays open. Lingering, the worker would hold its one slot until `first`
    // closed or 5 s passed, and `second` would wait in the backlog that long.
    let mut second = TcpStream::connect(daemon.address()).unwrap();
    assert_eq!(last_health_check(&mut second).unwrap().status, 200);
    drop(first);
}

/// Asks `/health` on `stream` as its last request (`Connection: close`): the reply,
/// waited for at most 3 s.
fn last_health_check(stream: &mut TcpStream) -> std::io::Result<Response> {
    stream.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")?;
    stream.set_read_timeout(Some(3 * SECOND))?;
    read_response(stream)
}

/// The rows of `/proc/net/tcp`, split into fields: local address, remote address, state
/// (`01` established, `03` SYN_RECV, `0A` listening), `tx_queue:rx_queue`...
fn tcp_table() -> Vec<Vec<String>> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let rows = table.lines().skip(1);
    rows.map(|line| {
        line.split_whitespace()
            .skip(1)
            .map(str::to_string)
            .collect()
    })
    .collect()
}

fn loopback(port: u16) -> String {
    format!("0100007F:{port:04X}")
}

/// Connections waiting to be accepted on the loopback listener of `port`: the receive
/// queue that `/proc/net/tcp` shows for a listening socket.
fn accept_queue(port: u16) -> Option<u64> {
    let row = tcp_table().into_iter().find(|row| {
        row.first() == Some(&loopback(port)) && row.get(2).is_some_and(|s| s == "0A")
    })?;
    let queue = row.get(3)?.split_once(':')?.1;
    u64::from_str_radix(queue, 16).ok()
}

/// The state of the server's side of `client`'s connection to the loopback `port`.
fn server_side_state(port: u16, client: &TcpStream) -> Option<String> {
    let peer = loopback(client.local_addr().ok()?.port());
    let row = tcp_table()
        .into_iter()
        .find(|row| row.first() == Some(&loopback(port)) && row.get(1) == Some(&peer))?;
    row.get(2).cloned()
}

/// The kernel offers a silent connection to the workers after 1 s even when accepts are
/// deferred: a try that took longer than this tells nothing, and is made again.
const BEFORE_SILENCE_IS_OFFERED: Duration = Duration::from_millis(900);

/// With one connection slot and a client that connected first and says nothing: whether
/// a second client is served (within 3 s), the state of the silent one's server side
/// then, and how long since the silent client connected.
fn served_beside_a_silent_client(daemon: &Daemon) -> (bool, Option<String>, Duration) {
    let silent = TcpStream::connect(daemon.address()).unwrap();
    let connected = Instant::now();
    let mut speaking = TcpStream::connect(daemon.address()).unwrap();
    let served = last_health_check(&mut speaking).is_ok_and(|reply| reply.status == 200);
    let state = server_side_state(daemon.port, &silent);
    (served, state, connected.elapsed())
}

#[test]
fn a_client_that_connects_and_says_nothing_holds_no_slot_until_it_speaks() {
    // The kernel offers a connection to the workers once its first bytes arrive
    // (`server.deferred_accept`, TCP_DEFER_ACCEPT): until then it is not accepted, takes
    // none of a worker's `max_connections`, and the worker is not woken for it.
    let config = |deferred: bool| {
        format!(
            "[server]\nmax_connections = 1\nread_timeout_secs = 30\ndeferred_accept = {deferred}\n\
             [workers]\nmin = 1\nmax = 1\n"
        )
    };
    let daemon = Daemon::run(&config(true));
    let seen = (0..5).find_map(|_| {
        let (served, state, took) = served_beside_a_silent_client(&daemon);
        (took < BEFORE_SILENCE_IS_OFFERED).then_some((served, state))
    });
    assert_eq!(
        seen,
        Some((true, Some("03".to_string()))),
        "(served at once, the silent client's server side SYN_RECV)"
    );
    let mut silent = TcpStream::connect(daemon.address()).unwrap();
    assert_eq!(last_health_check(&mut silent).unwrap().status, 200);
    drop(silent);

    // Turned off by a reload, which keeps the socket: a silent client is accepted at once
    // and holds the one slot, as before the deferred accept.
    let off = common::config_text(daemon.port, &config(false));
    std::fs::write(&daemon.config, off).unwrap();
    daemon.signal(nix::sys::signal::Signal::SIGHUP);
    wait_for("the new generation alone", 20 * SECOND, || {
        let reloaded = daemon.status().is_some_and(|s| s["generation"] == 2);
        reloaded && daemon.workers().len() == 1 && daemon.serving_workers().len() == 1
    });
    let (served, state, _) = served_beside_a_silent_client(&daemon);
    assert!(!served, "served while a silent client held the only slot");
    assert_eq!(
        state.as_deref(),
        Some("01"),
        "the silent client accepted (ESTABLISHED)"
    );
}

#[test]
fn accept_errors_are_survived_by_the_worker() {
    let daemon = Daemon::run("[workers]\nmin = 1\nmax = 1\n");
    let worker = daemon.serving_workers()[0];
    // Every accept fails with EMFILE.
    exhaust_descriptors(worker);
    let clients: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(daemon.address()).unwrap())
        .collect();
    wait_for("the accept error to be logged", 5 * SECOND, || {
        daemon.log().contains("accept failed")
    });

    set_fd_limit(worker, 1024);
    drop(clients);
    let response = daemon.get("/health").unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(
        response.json()["worker"],
        worker.as_raw(),
        "the same worker serves again"
    );
}

#[test]
fn a_worker_is_recycled_after_max_requests_without_a_failed_request() {
    let daemon = Daemon::run("[workers]\nmin = 1\nmax = 1\nmax_requests = 5\n");
    let first = daemon.serving_workers()[0];
    let mut served_by = Vec::new();
    for _ in 0..12 {
        let response = daemon
            .get("/health")
            .expect("no request fails across a recycle");
        assert_eq!(response.status, 200);
        served_by.push(response.json()["worker"].as_i64().unwrap());
    }
    assert_eq!(served_by[..5], [first.as_raw() as i64; 5]);
    assert!(
        served_by[5..]
            .iter()
            .all(|pid| *pid != first.as_raw() as i64),
        "{served_by:?}"
    );
    assert!(
        daemon
            .log()
            .contains("served workers.max_requests (5) requests")
    );
}

/// Run as root by `.ci/run` (`cargo test -- --ignored`).
#[test]
#[ignore = "needs root"]
fn workers_drop_to_the_configured_user_when_started_as_root() {
    assert!(nix::unistd::geteuid().is_root(), "run this test as root");
    let daemon = Daemon::run("[workers]\nmin = 1\nmax = 1\nuser = \"nobody\"\n");
    let worker = daemon.serving_workers()[0];
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let uid_line = common::proc_status(worker, "Uid").expect("the worker runs");
    let uids: Vec<u32> = uid_line
        .split_whitespace()
        .map(|u| u.parse().unwrap())
        .collect();
    assert!(
        uids.iter().all(|uid| *uid == nobody.uid.as_raw()),
        "{uid_line}"
    );
    let groups = common::proc_status(worker, "Groups").expect("the worker runs");
    assert_eq!(
        groups.split_whitespace().count(),
        1,
        "supplementary groups kept: {groups}"
    );
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{worker}/comm"))
            .unwrap()
            .trim(),
        "eventsd-worker"
    );
    assert_eq!(daemon.get("/health").unwrap().status, 200);

    // After a rotation, the unprivileged worker can open the file the master created.
    std::fs::rename(daemon.path("daemon.log"), daemon.path("daemon.log.1")).unwrap();
    daemon.signal(nix::sys::signal::Signal::SIGUSR1);
    wait_for("the worker to reopen the new log file", 5 * SECOND, || {
        std::fs::read_to_string(daemon.path("daemon.log"))
            .is_ok_and(|log| log.contains(&format!("worker[{worker}]: reopened log files")))
    });
}

#[test]
fn a_worker_out_of_descriptors_for_good_is_replaced_and_the_daemon_keeps_serving() {
    let daemon = Daemon::run("[workers]\nmin = 1\nmax = 1\n");
    let exhausted = daemon.serving_workers()[0];
    exhaust_descriptors(exhausted);
    let _clients: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(daemon.address()).unwrap())
        .collect();
    wait_for("a replacement worker", 15 * SECOND, || {
        daemon.serving_workers().iter().any(|pid| *pid != exhausted)
    });
    assert!(
        daemon.log().contains("accept has failed for 5s"),
        "{}",
        daemon.log()
    );
    let response = daemon.get("/health").unwrap();
    assert_eq!(response.status, 200);
    assert_ne!(response.json()["worker"], exhausted.as_raw());
}

/// systemd's socket activation: the master serves on the socket it is handed (the port is
/// the service manager's, so binding it again would fail) and never binds its own.
#[test]
fn a_socket_handed_over_by_systemd_socket_activate_is_served() {
    let mut daemon = Daemon::new("");
    let held = format!("127.0.0.1:{}", common::free_port());
    daemon.spawn_foreground_under(&["systemd-socket-activate", "-l", &held, "--"], &[]);
    // systemd-socket-activate binds, then starts eventsd on the first connection, which
    // waits in the backlog until a worker accepts it.
    let address: std::net::SocketAddr = held.parse().unwrap();
    let health = "GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    let mut status = None;
    wait_for("a reply on the handed-over socket", 10 * SECOND, || {
        status = common::request(address, health).ok().map(|r| r.status);
        status.is_some()
    });
    assert_eq!(status, Some(200));
    daemon.wait_ready();
    assert!(
        daemon.get("/health").is_err(),
        "server.listen was bound too"
    );
    assert!(daemon.log().contains("serving on the socket handed over"));
}

/// A Unix-domain socket handed over (`ListenStream=/run/eventsd.sock`) is refused at
/// start with the reason, not taken by a master whose workers cannot accept on it and
/// retire one after the other.
#[test]
fn a_unix_socket_handed_over_by_systemd_is_refused_at_start() {
    let mut daemon = Daemon::new("");
    let held = daemon.path("held.sock");
    let held = held.to_str().unwrap();
    daemon.spawn_foreground_under(&["systemd-socket-activate", "-l", held, "--"], &[]);
    // systemd-socket-activate starts eventsd on the first connection.
    wait_for("the held socket", 10 * SECOND, || {
        std::os::unix::net::UnixStream::connect(held).is_ok()
    });
    let status = daemon.wait_exit(10 * SECOND);
    assert!(!status.success(), "{status:?}");
    assert!(
        daemon.log().contains("is not a TCP socket"),
        "{}",
        daemon.log()
    );
}

/// Reads one reply from a connection that stays open: its head, then as many body bytes
/// as its `content-length` says.
fn read_one_reply(stream: &mut TcpStream) -> Vec<u8> {
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    while !reply.ends_with(b"\r\n\r\n") {
        assert_eq!(
            stream.read(&mut byte).unwrap(),
            1,
            "closed mid-head: {reply:?}"
        );
        reply.push(byte[0]);
    }
    let head = parse_response(&reply).unwrap();
    let length: usize = head.header("content-length").unwrap().parse().unwrap();
    let mut body = vec![0; length];
    stream.read_exact(&mut body).unwrap();
    reply.extend(body);
    reply
}

/// A reply with what differs from one request to the next (the date, an event's id)
/// blanked out.
fn without_date_and_id(reply: &[u8]) -> String {
    let text = String::from_utf8_lossy(reply);
    let lines = text.split("\r\n").map(|line| match line.split_once(": ") {
        Some(("date", _)) => "date: (now)".to_string(),
        _ => line.to_string(),
    });
    let text = lines.collect::<Vec<_>>().join("\r\n");
    match text.split_once(r#"{"_id":""#) {
        Some((head, _)) => format!("{head}{{\"_id\":\"(an id)\"}}"),
        None => text,
    }
}

/// Whether the server closed `stream` after its reply, or serves another request on it.
fn closed_after_reply(stream: &mut TcpStream) -> bool {
    stream.set_read_timeout(Some(5 * SECOND)).unwrap();
    if stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
        .is_err()
    {
        return true;
    }
    let mut first = [0u8; 1];
    match stream.read(&mut first) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) if e.kind() == ErrorKind::ConnectionReset => true,
        Err(e) => panic!("neither a reply nor a close: {e}"),
    }
}

#[test]
fn the_hot_route_answers_byte_for_byte_as_hyper_does() {
    // A post of one event as the first request of a connection is served without hyper;
    // after another request on the same connection, by hyper. Both must read alike: the
    // same status line, headers in the same order, body, and the same keep-alive.
    let daemon = Daemon::run("");
    register(&daemon, "hot");
    let cases = [
        ("HTTP/1.1", "", r#"{"a":1}"#, "hot"),
        ("HTTP/1.1", "Connection: close\r\n", r#"{"a":1}"#, "hot"),
        (
            "HTTP/1.1",
            "Connection: keep-alive\r\n",
            r#"{"a":1}"#,
            "hot",
        ),
        (
            "HTTP/1.0",
            "Connection: keep-alive\r\n",
            r#"{"a":1}"#,
            "hot",
        ),
        ("HTTP/1.0", "", r#"{"a":1}"#, "hot"),
        ("HTTP/1.1", "", r#"{"a":"#, "hot"),
        ("HTTP/1.1", "", r#"[1]"#, "hot"),
        ("HTTP/1.1", "", r#"{"a":1}"#, "not-registered"),
        ("HTTP/1.0", "Connection: keep-alive\r\n", r#"{"a""#, "hot"),
    ];
    for (version, connection, body, event) in cases {
        let post = format!(
            "POST /event/{event}/?q=1 {version}\r\nHost: t\r\n{connection}\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let mut hot = TcpStream::connect(daemon.address()).unwrap();
        hot.write_all(post.as_bytes()).unwrap();
        let hot_reply = read_one_reply(&mut hot);

        let mut by_hyper = TcpStream::connect(daemon.address()).unwrap();
        by_hyper
            .write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        read_one_reply(&mut by_hyper);
        by_hyper.write_all(post.as_bytes()).unwrap();
        let hyper_reply = read_one_reply(&mut by_hyper);

        let case = format!("{version} {connection:?} {body} to {event}");
        assert_eq!(
            without_date_and_id(&hot_reply),
            without_date_and_id(&hyper_reply),
            "{case}"
        );
        assert_eq!(
            closed_after_reply(&mut hot),
            closed_after_reply(&mut by_hyper),
            "{case}: one closed, not the other"
        );
    }
}

#[test]
fn posts_pipelined_split_or_followed_by_other_requests_are_all_answered_in_order() {
    let daemon = Daemon::run("");
    register(&daemon, "hot");
    let post = |body: &str| {
        format!(
            "POST /event/hot/ HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let mut stream = TcpStream::connect(daemon.address()).unwrap();
    stream.set_read_timeout(Some(10 * SECOND)).unwrap();
    // Two posts in one write, then a third whose body comes later, then a request of
    // another route, then a post again.
    let third = post(r#"{"n":3}"#);
    let (third_head, third_body) = third.split_at(third.len() - 3);
    let first_write = format!("{}{}{third_head}", post(r#"{"n":1}"#), post(r#"{"n":2}"#));
    stream.write_all(first_write.as_bytes()).unwrap();
    for _ in 0..2 {
        let reply = parse_response(&read_one_reply(&mut stream)).unwrap();
        assert_eq!(reply.status, 200, "{reply:?}");
    }
    stream.write_all(third_body.as_bytes()).unwrap();
    let rest = format!(
        "GET /health HTTP/1.1\r\nHost: t\r\n\r\n{}",
        post(r#"{"n":4}"#)
    );
    stream.write_all(rest.as_bytes()).unwrap();
    let statuses: Vec<(u16, bool)> = (0..3)
        .map(|_| {
            let reply = parse_response(&read_one_reply(&mut stream)).unwrap();
            (reply.status, reply.body.contains("_id"))
        })
        .collect();
    assert_eq!(statuses, [(200, true), (200, false), (200, true)]);
    wait_for("the four events counted", 10 * SECOND, || {
        daemon.metric_sum("eventsd_events_collected_total") == 4
    });
}

/// The segments a client's connection has received that carried no data (its SYN-ACK,
/// pure ACKs, a FIN sent alone), from the kernel's own count (`TCP_INFO`).
fn segments_without_data_received(stream: &TcpStream) -> u32 {
    use std::os::fd::AsRawFd;
    // SAFETY: an all-zero tcp_info is a valid value of a plain C struct.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut length = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `length` bytes into `info`, which has them.
    let got = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &mut length,
        )
    };
    assert_eq!(got, 0, "TCP_INFO: {}", std::io::Error::last_os_error());
    info.tcpi_segs_in - info.tcpi_data_segs_in
}

#[test]
fn the_last_reply_of_a_connection_arrives_with_its_fin() {
    // A client that said its request was its last gets the reply and the end of the
    // stream in one segment: one packet fewer each way on every short connection.
    let daemon = Daemon::run("");
    register(&daemon, "hot");
    let body = r#"{"a":1}"#;
    let post = |version: &str, connection: &str| {
        format!(
            "POST /event/hot/ {version}\r\nHost: t\r\n{connection}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let cases = [
        ("the hot route, HTTP/1.0", post("HTTP/1.0", "")),
        (
            "the hot route, close",
            post("HTTP/1.1", "Connection: close\r\n"),
        ),
        (
            "hyper",
            "GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".to_string(),
        ),
    ];
    for (case, request) in cases {
        // A try slower than the deferred accept's 1 s also counts the SYN-ACK sent again.
        let alone = (0..5).find_map(|_| {
            let mut stream = TcpStream::connect(daemon.address()).unwrap();
            let connected = Instant::now();
            stream.write_all(request.as_bytes()).unwrap();
            let reply = closed_by_server_within(&mut stream, 10 * SECOND);
            let reply = parse_response(&reply).unwrap();
            assert_eq!(reply.status, 200, "{case}: {reply:?}");
            let alone = segments_without_data_received(&stream);
            (connected.elapsed() < BEFORE_SILENCE_IS_OFFERED).then_some(alone)
        });
        // The SYN-ACK and, at most, the ACK of the request: no FIN of its own.
        assert!(
            alone.is_some_and(|n| n <= 2),
            "{case}: {alone:?} segments without data"
        );
    }
}
