//! The floor under eventsd's hot path, for `bench/run` and `bench/instructions`: hyper
//! 1.x on a tokio `current_thread` runtime in two pre-forked processes, as eventsd's
//! workers run it, answering every request with the reply eventsd gives to a posted event
//! after reading its body, and doing nothing else (no parsing, no counting, no timeouts).
//!
//! What eventsd costs beyond it is eventsd's own; what it costs beyond nginx is the
//! price of hyper and tokio on this machine. With `--without-hyper`, the same on tokio
//! and httparse (the parser hyper uses) alone, read and written by hand: the least an
//! HTTP layer of our own could cost, to weigh against hyper's price. That mode knows
//! only what this benchmark sends (a head, a `Content-Length` body, HTTP/1.0 and 1.1
//! keep-alive): none of the rules a server must keep (chunked bodies, limits, timeouts,
//! `Expect`, refusals). A benchmark tool: not built into the daemon.
//!
//! Usage: bare-hyper PORT [--without-hyper] (its workers end when it does).

use std::cell::RefCell;
use std::convert::Infallible;
use std::net::TcpListener;
use std::time::{Duration, SystemTime};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const REPLY: &[u8] = br#"{"_id":"b0f0c6d4-9cbe-4d55-9d2a-6b7f2f0f1e59"}"#;
const WORKERS: usize = 2;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let port: u16 = args
        .next()
        .ok_or("usage: bare-hyper PORT [--without-hyper]")?
        .parse()?;
    let without_hyper = match args.next().as_deref() {
        None => false,
        Some("--without-hyper") => true,
        Some(other) => return Err(format!("unknown argument {other}").into()),
    };
    let listener = TcpListener::bind(("127.0.0.1", port))?;
    listener.set_nonblocking(true)?;
    for _ in 0..WORKERS {
        // SAFETY: nothing but this thread runs yet; the child builds its runtime after.
        match unsafe { libc::fork() } {
            -1 => return Err(std::io::Error::last_os_error().into()),
            0 => {
                // SAFETY: a plain prctl; the worker ends with the process bench/run stops.
                unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) };
                return serve(listener, without_hyper);
            }
            _ => {}
        }
    }
    loop {
        // SAFETY: pause only waits for a signal.
        unsafe { libc::pause() };
    }
}

fn serve(listener: TcpListener, without_hyper: bool) -> Result<(), Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        loop {
            let (stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            if without_hyper {
                tokio::task::spawn_local(serve_by_hand(stream));
                continue;
            }
            tokio::task::spawn_local(async move {
                let service = hyper::service::service_fn(reply);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

async fn reply(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let _ = request.into_body().collect().await;
    let mut response = Response::new(Full::new(Bytes::from_static(REPLY)));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}

/// A connection served without hyper: each head parsed by httparse where it lies in the
/// read buffer, the body waited for by its length, the reply written from one buffer
/// with the headers hyper writes (its date cached a second, as hyper does).
async fn serve_by_hand(mut stream: TcpStream) {
    // Filled from its end (`read_buf`), never zeroed: zeroing 8 KB a connection was
    // most of this floor's cost a connection.
    let mut buffer = Vec::with_capacity(BUFFER);
    let mut start = 0;
    let mut out = Vec::with_capacity(256);
    loop {
        let parsed = {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut request = httparse::Request::new(&mut headers);
            match request.parse(&buffer[start..]) {
                Ok(httparse::Status::Complete(head)) => Some(Head::of(&request, head)),
                Ok(httparse::Status::Partial) => None,
                Err(_) => return,
            }
        };
        let Some(head) = parsed else {
            buffer.drain(..start);
            start = 0;
            if !read_more(&mut stream, &mut buffer).await {
                return;
            }
            continue;
        };
        let end = start + head.length;
        if end - start > BUFFER {
            return;
        }
        while buffer.len() < end {
            if !read_more(&mut stream, &mut buffer).await {
                return;
            }
        }
        start = end;
        if start == buffer.len() {
            buffer.clear();
            start = 0;
        }
        out.clear();
        out.extend_from_slice(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n");
        if head.keep_alive_1_0 {
            out.extend_from_slice(b"connection: keep-alive\r\n");
        }
        out.extend_from_slice(format!("content-length: {}\r\ndate: ", REPLY.len()).as_bytes());
        DATE.with(|date| out.extend_from_slice(date.borrow_mut().now()));
        out.extend_from_slice(b"\r\n\r\n");
        out.extend_from_slice(REPLY);
        if stream.write_all(&out).await.is_err() || head.closes {
            return;
        }
    }
}

/// The most a request (head and body) may take.
const BUFFER: usize = 8192;

/// Reads what the stream has into `buffer`'s spare room; false at its end, on an error,
/// or when a request outgrows the buffer.
async fn read_more(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> bool {
    if buffer.len() >= BUFFER {
        return false;
    }
    buffer.reserve(BUFFER - buffer.len());
    matches!(stream.read_buf(buffer).await, Ok(read) if read > 0)
}

/// What the floor reads of a request's head.
struct Head {
    /// Head and body.
    length: usize,
    keep_alive_1_0: bool,
    closes: bool,
}

impl Head {
    fn of(request: &httparse::Request, head: usize) -> Head {
        let value = |name: &str| {
            let header = request
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name));
            header.and_then(|h| std::str::from_utf8(h.value).ok())
        };
        let body = value("content-length").and_then(|v| v.trim().parse().ok());
        let connection = value("connection").unwrap_or_default();
        let keep_alive_1_0 =
            request.version == Some(0) && connection.eq_ignore_ascii_case("keep-alive");
        let closes = if request.version == Some(0) {
            !keep_alive_1_0
        } else {
            connection.eq_ignore_ascii_case("close")
        };
        Head {
            length: head + body.unwrap_or(0),
            keep_alive_1_0,
            closes,
        }
    }
}

thread_local! {
    static DATE: RefCell<CachedDate> = RefCell::new(CachedDate::default());
}

/// The `Date` header's value, made again once a second.
#[derive(Default)]
struct CachedDate {
    text: String,
    next: Option<SystemTime>,
}

impl CachedDate {
    fn now(&mut self) -> &[u8] {
        let now = SystemTime::now();
        if self.next.is_none_or(|next| now >= next) {
            self.text = httpdate::fmt_http_date(now);
            self.next = Some(now + Duration::from_secs(1));
        }
        self.text.as_bytes()
    }
}
