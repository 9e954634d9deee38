//! The hot route served without hyper: `POST /event/{type}/` of one event, which nearly
//! all traffic is, read with httparse (the parser hyper uses) and answered by hand.
//! hyper's own work was more than all of eventsd's a request (bench/RESULTS.md,
//! 2026-12-02: 9,000 instructions a keep-alive request, against eventsd's 6,900).
//!
//! Owns one decision: whether the bytes read so far begin with a request that is plainly
//! the hot route's, whole (head and body), in the form clients send it: HTTP/1.0 or 1.1,
//! one plain `Content-Length` within `max_body_bytes`, no `Transfer-Encoding`, `Expect`
//! or `Upgrade`, `Connection` saying at most `close` or `keep-alive`, a head within
//! `max_header_bytes`. Anything else (another route, a body still on its way, bad
//! syntax, the drain) goes to hyper with the connection and every byte read, and hyper
//! serves that connection from then on: every refusal, limit and rule of HTTP stays
//! hyper's and `api`'s. It never refuses a request, never answers one it has not read
//! whole, and writes the reply as hyper would (status line, the reply's headers,
//! `content-length`, `date`, and `connection` as hyper adds it: a test holds the two
//! side by side). Two differences are kept on purpose: a client that shuts its side
//! down after sending its post still gets the reply (hyper, with `half_close` off, drops
//! the request), and the reply that starts the drain (`workers.max_requests`) says
//! `connection: close`.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime};

use bytes::{Buf, BytesMut};
use hyper::body::Body as _;
use hyper::body::Bytes;
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Response, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::reply::Body;
use super::routes::Route;
use super::shutdown::Shutdown;

/// What a read asks for at least: hyper's first read buffer.
const READ_AT_LEAST: usize = 8 * 1024;
/// Headers a hot request may have; one with more goes to hyper, which allows 100.
const MAX_HEADERS: usize = 32;
/// hyper's limit on a request target (`MAX_URI_LEN`); a longer one is hyper's 414.
const MAX_TARGET: usize = (u16::MAX - 1) as usize;

/// How the hot route's loop ended.
pub enum Served<I> {
    /// The connection ended: the client closed it, or the last reply went out.
    Closed,
    /// hyper serves the rest, from the bytes read so far.
    HandedOver(Rewind<I>),
}

/// The limits a hot request stays within; a request beyond them goes to hyper, which
/// refuses it.
#[derive(Clone, Copy)]
pub struct Limits {
    pub max_head: usize,
    pub max_body: u64,
}

/// A request of the hot route, read whole from the front of the buffer.
pub struct HotRequest<'a> {
    /// The type the event is posted to, as the path names it.
    pub event: &'a str,
    /// The path, for the access log.
    pub path: &'a str,
    pub body: &'a [u8],
    /// Whether the connection stays open after the reply, by the client's word.
    pub keep_alive: bool,
    http_1_0: bool,
    /// Head and body.
    length: usize,
}

/// Serves the hot route's requests on `io` while they come whole; hands the connection
/// over at the first byte that is anything else, or when the worker drains. `answer`
/// makes a request's reply.
pub async fn serve<I, F>(
    mut io: I,
    limits: Limits,
    shutdown: &Shutdown,
    mut answer: F,
) -> io::Result<Served<I>>
where
    I: AsyncRead + AsyncWrite + Unpin,
    F: FnMut(&HotRequest<'_>) -> Response<Body>,
{
    let mut read = BytesMut::new();
    let mut out = Vec::new();
    loop {
        if read.is_empty() {
            read.reserve(READ_AT_LEAST);
            // Draining, hyper decides what an idle connection gets (the first request's
            // grace, then the close).
            let got = tokio::select! {
                biased;
                () = shutdown.wait() => return Ok(Served::HandedOver(Rewind::new(read, io))),
                got = io.read_buf(&mut read) => got,
            };
            // A TLS client gone without its close_notify ends an idle connection as an
            // end of stream does, as hyper takes it.
            let gone = |e: &io::Error| e.kind() == io::ErrorKind::UnexpectedEof;
            if matches!(got, Ok(0)) || got.as_ref().is_err_and(gone) {
                // As hyper closes: over TLS, this says close_notify.
                io.shutdown().await?;
                return Ok(Served::Closed);
            }
            got?;
        }
        let request = match HotRequest::read(&read, limits) {
            Some(request) if !shutdown.is_triggered() => request,
            _ => return Ok(Served::HandedOver(Rewind::new(read, io))),
        };
        let response = answer(&request);
        // A reply that started the drain (`workers.max_requests`) says it closes, so
        // that the client sends its next request elsewhere rather than into the close.
        let keep_alive = write_reply(&mut out, &request, response, shutdown.is_triggered());
        let length = request.length;
        read.advance(length);
        // Flushed as hyper does: TLS takes a reply into its buffer even when the socket
        // is full, and only a flush sends it (under the write timeout).
        io.write_all(&out).await?;
        io.flush().await?;
        if !keep_alive {
            io.shutdown().await?;
            return Ok(Served::Closed);
        }
    }
}

impl<'a> HotRequest<'a> {
    /// The hot request at the front of `read`, if it is one and all of it is there.
    fn read(read: &'a [u8], limits: Limits) -> Option<HotRequest<'a>> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        let httparse::Status::Complete(head) = request.parse(read).ok()? else {
            return None;
        };
        let target = request.path?;
        if head > limits.max_head || request.method? != "POST" || !plain_target(target) {
            return None;
        }
        // Origin form only; the query is not the route's.
        let path = match memchr::memchr(b'?', target.as_bytes()) {
            Some(query) => &target[..query],
            None => target,
        };
        if !path.starts_with('/') {
            return None;
        }
        let Route::Event(event) = Route::parse(path)? else {
            return None;
        };
        let http_1_0 = match request.version? {
            0 => true,
            1 => false,
            _ => return None,
        };
        let (length, connection) = plain_headers(request.headers)?;
        let length = length.filter(|&length| length <= limits.max_body)?;
        let end = head.checked_add(usize::try_from(length).ok()?)?;
        let body = read.get(head..end)?;
        let keep_alive = match connection {
            Connection::Close => false,
            Connection::KeepAlive => true,
            Connection::Unsaid => !http_1_0,
        };
        Some(HotRequest {
            event,
            path,
            body,
            keep_alive,
            http_1_0,
            length: end,
        })
    }
}

/// Whether `target` holds only what URIs are made of (RFC 3986's unreserved characters,
/// sub-delimiters, `%`, `/`, `:`, `@`, `?`), within hyper's length: httparse takes more
/// than hyper's URI parser does, and what hyper would refuse must reach it.
fn plain_target(target: &str) -> bool {
    target.len() <= MAX_TARGET && target.bytes().all(|b| IN_A_PLAIN_TARGET[usize::from(b)])
}

/// The bytes `plain_target` takes: a table, one load a byte.
const IN_A_PLAIN_TARGET: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 256 {
        let b = byte as u8;
        table[byte] = b.is_ascii_alphanumeric();
        byte += 1;
    }
    let others = b"-._~!$&'()*+,;=%/:@?";
    let mut at = 0;
    while at < others.len() {
        table[others[at] as usize] = true;
        at += 1;
    }
    table
};

/// What a request's `Connection` headers say, of what the hot route takes.
#[derive(PartialEq)]
enum Connection {
    Unsaid,
    KeepAlive,
    Close,
}

/// The body's length and the `Connection` a hot request's headers give, when they hold
/// nothing that hyper must judge: one `Content-Length` of digits alone, no
/// `Transfer-Encoding`, `Expect` or `Upgrade`, `Connection` options among `close` and
/// `keep-alive`.
fn plain_headers(headers: &[httparse::Header<'_>]) -> Option<(Option<u64>, Connection)> {
    let (mut length, mut connection) = (None, Connection::Unsaid);
    for header in headers {
        let name = header.name;
        if name.eq_ignore_ascii_case("content-length") {
            let digits = header.value;
            let plain = !digits.is_empty() && digits.len() <= 18;
            if length.is_some() || !plain || !digits.iter().all(u8::is_ascii_digit) {
                return None;
            }
            length = std::str::from_utf8(digits).ok()?.parse().ok();
        } else if name.eq_ignore_ascii_case("connection") {
            for option in header.value.split(|&b| b == b',') {
                match option.trim_ascii() {
                    o if o.eq_ignore_ascii_case(b"close") => connection = Connection::Close,
                    o if o.eq_ignore_ascii_case(b"keep-alive") => {
                        if connection != Connection::Close {
                            connection = Connection::KeepAlive;
                        }
                    }
                    _ => return None,
                }
            }
        } else if ["transfer-encoding", "expect", "upgrade"]
            .iter()
            .any(|other| name.eq_ignore_ascii_case(other))
        {
            return None;
        }
    }
    Some((length, connection))
}

/// Writes `response` to `request` into `out` as hyper does (`Server::encode`,
/// `Conn::enforce_version`), and says whether the connection stays open: HTTP/1.0
/// answered in 1.0, with `keep-alive` added to `connection` when kept; HTTP/1.1 with
/// `close` added when not; one `connection` line, values joined; `content-length`
/// unless the reply has one; `date` last unless the reply has one. Only for the replies
/// `api` makes to a post: none is 1xx, 204 or 304, which hyper writes otherwise.
fn write_reply(
    out: &mut Vec<u8>,
    request: &HotRequest<'_>,
    response: Response<Body>,
    draining: bool,
) -> bool {
    let (parts, body) = response.into_parts();
    let headers = parts.headers;
    debug_assert!(
        !parts.status.is_informational()
            && parts.status != StatusCode::NO_CONTENT
            && parts.status != StatusCode::NOT_MODIFIED
            && !headers.contains_key(header::TRANSFER_ENCODING)
            && !headers.contains_key(header::TRAILER)
            && headers.get_all(header::CONTENT_LENGTH).iter().count() <= 1,
        "a reply hyper writes otherwise: {} {headers:?}",
        parts.status
    );
    let (mut closes, mut says_keep_alive) = (false, false);
    for value in headers.get_all(header::CONNECTION) {
        for token in value.as_bytes().split(|&b| b == b',') {
            closes |= token.trim_ascii().eq_ignore_ascii_case(b"close");
            says_keep_alive |= token.trim_ascii().eq_ignore_ascii_case(b"keep-alive");
        }
    }
    let keep_alive = request.keep_alive && !closes && !draining;
    // What hyper adds to `connection` (at its end, or as a header of its own after the
    // reply's): to HTTP/1.0, `keep-alive` when the client asked for it and the reply
    // does not say it (even beside a `close`, which still closes); to HTTP/1.1, `close`.
    let added: &[u8] = match (request.http_1_0, keep_alive) {
        (true, _) if request.keep_alive && !draining && !says_keep_alive => b"keep-alive",
        (false, false) if !closes => b"close",
        _ => b"",
    };
    out.clear();
    out.extend_from_slice(if request.http_1_0 {
        b"HTTP/1.0 "
    } else {
        b"HTTP/1.1 "
    });
    out.extend_from_slice(parts.status.as_str().as_bytes());
    out.push(b' ');
    let reason = parts.status.canonical_reason().unwrap_or("<none>");
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    let (mut has_length, mut has_date, mut has_connection) = (false, false, false);
    for name in headers.keys() {
        let values = headers.get_all(name).iter().map(HeaderValue::as_bytes);
        if name == header::CONNECTION {
            has_connection = true;
            header_line(
                out,
                name,
                values.chain((!added.is_empty()).then_some(added)),
            );
        } else {
            has_length |= name == header::CONTENT_LENGTH;
            has_date |= name == header::DATE;
            values.for_each(|value| header_line(out, name, std::iter::once(value)));
        }
    }
    if !has_connection && !added.is_empty() {
        header_line(out, &header::CONNECTION, std::iter::once(added));
    }
    let body = body_bytes(body);
    if !has_length {
        let mut digits = [0u8; 20];
        let length = decimal(body.len(), &mut digits);
        header_line(out, &header::CONTENT_LENGTH, std::iter::once(length));
    }
    if !has_date {
        DATE.with(|date| header_line(out, &header::DATE, std::iter::once(date.borrow_mut().now())));
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&body);
    keep_alive
}

/// `n` in decimal, written at the end of `digits`.
fn decimal(mut n: usize, digits: &mut [u8; 20]) -> &[u8] {
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &digits[at..];
        }
    }
}

/// `name: ` and `values` joined by `, `, one line.
fn header_line<'v>(out: &mut Vec<u8>, name: &HeaderName, values: impl Iterator<Item = &'v [u8]>) {
    out.extend_from_slice(name.as_str().as_bytes());
    out.extend_from_slice(b": ");
    for (index, value) in values.enumerate() {
        if index > 0 {
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(value);
    }
    out.extend_from_slice(b"\r\n");
}

/// A reply's body, whole: `Full` holds it, ready at once.
fn body_bytes(mut body: Body) -> Bytes {
    let mut context = Context::from_waker(Waker::noop());
    match Pin::new(&mut body).poll_frame(&mut context) {
        Poll::Ready(Some(Ok(frame))) => frame.into_data().unwrap_or_default(),
        _ => Bytes::new(),
    }
}

thread_local! {
    static DATE: RefCell<CachedDate> = RefCell::new(CachedDate::default());
}

/// The `date` header's value, formatted once a second, as hyper does.
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
            let into_second = now
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(Duration::ZERO, |since| {
                    Duration::from_nanos(u64::from(since.subsec_nanos()))
                });
            self.next = Some(now - into_second + Duration::from_secs(1));
        }
        self.text.as_bytes()
    }
}

/// A stream handed to hyper: the bytes the hot route read and did not serve come first.
pub struct Rewind<I> {
    read: BytesMut,
    io: I,
}

impl<I> Rewind<I> {
    fn new(read: BytesMut, io: I) -> Rewind<I> {
        // An empty buffer still holds its room for a read: it goes at once.
        let read = if read.is_empty() {
            BytesMut::new()
        } else {
            read
        };
        Rewind { read, io }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Rewind<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.read.is_empty() {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        let given = this.read.len().min(buf.remaining());
        buf.put_slice(&this.read[..given]);
        this.read.advance(given);
        if this.read.is_empty() {
            // hyper reads into its own buffer from now on: ours goes.
            this.read = BytesMut::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Rewind<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_head: 1024,
        max_body: 100,
    };

    fn read(text: &str) -> Option<(String, String, bool, usize)> {
        let request = HotRequest::read(text.as_bytes(), LIMITS)?;
        let body = String::from_utf8(request.body.to_vec()).unwrap();
        Some((
            request.event.to_string(),
            body,
            request.keep_alive,
            request.length,
        ))
    }

    fn post(version: &str, headers: &str, body: &str) -> String {
        format!("POST /event/logins/ {version}\r\nHost: t\r\n{headers}\r\n{body}")
    }

    #[test]
    fn a_plain_post_of_one_event_whole_in_the_buffer_is_hot() {
        let text = post("HTTP/1.1", "Content-Length: 7\r\n", r#"{"a":1}"#);
        let next = "GET /health HTTP/1.1\r\n\r\n";
        let read = read(&format!("{text}{next}")).unwrap();
        assert_eq!(
            read,
            ("logins".into(), r#"{"a":1}"#.into(), true, text.len())
        );
        let query = "POST /event/logins?x=1 HTTP/1.1\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(self::read(query).unwrap().0, "logins");
    }

    #[test]
    fn keep_alive_follows_the_version_and_close_wins() {
        let keeps = |version, connection: &str| {
            let headers = format!("Content-Length: 2\r\n{connection}");
            read(&post(version, &headers, "{}")).unwrap().2
        };
        assert!(keeps("HTTP/1.1", ""));
        assert!(!keeps("HTTP/1.1", "Connection: close\r\n"));
        assert!(!keeps("HTTP/1.1", "Connection: keep-alive, Close\r\n"));
        assert!(!keeps(
            "HTTP/1.1",
            "Connection: close\r\nConnection: keep-alive\r\n"
        ));
        assert!(!keeps("HTTP/1.0", ""));
        assert!(keeps("HTTP/1.0", "Connection: Keep-Alive\r\n"));
    }

    #[test]
    fn anything_but_the_plainest_post_goes_to_hyper() {
        let cases = [
            post("HTTP/1.1", "Content-Length: 7\r\n", r#"{"a":"#),
            post("HTTP/1.1", "", "{}"),
            post(
                "HTTP/1.1",
                "Content-Length: 2\r\nContent-Length: 2\r\n",
                "{}",
            ),
            post("HTTP/1.1", "Content-Length: +2\r\n", "{}"),
            post("HTTP/1.1", "Content-Length: 101\r\n", &"x".repeat(101)),
            post(
                "HTTP/1.1",
                "Transfer-Encoding: chunked\r\n",
                "2\r\n{}\r\n0\r\n\r\n",
            ),
            post(
                "HTTP/1.1",
                "Content-Length: 2\r\nExpect: 100-continue\r\n",
                "{}",
            ),
            post("HTTP/1.1", "Content-Length: 2\r\nUpgrade: h2c\r\n", "{}"),
            post(
                "HTTP/1.1",
                "Content-Length: 2\r\nConnection: upgrade\r\n",
                "{}",
            ),
            post(
                "HTTP/1.1",
                &format!("Content-Length: 2\r\nX: {}\r\n", "y".repeat(1024)),
                "{}",
            ),
            post(
                "HTTP/1.1",
                &format!("Content-Length: 2\r\n{}", "X: y\r\n".repeat(MAX_HEADERS)),
                "{}",
            ),
            post("HTTP/1.1", "Content-Length: 2\r\nBad header: y\r\n", "{}"),
            post("HTTP/2.0", "Content-Length: 2\r\n", "{}"),
            "PUT /event/logins/ HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}".to_string(),
            "post /event/logins/ HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}".to_string(),
            "POST /event/logins/_bulk HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}".to_string(),
            "POST /event/ HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}".to_string(),
            "POST /event/a<b/ HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}".to_string(),
            "POST /event/a\"b/ HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}".to_string(),
            "POST http://t/event/logins/ HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}".to_string(),
            "POST /event/logins/ HTTP/1.1\r\nContent-Length: 2\r\n".to_string(),
        ];
        for case in cases {
            assert!(read(&case).is_none(), "{case:?} was taken");
        }
    }

    #[test]
    fn the_loop_answers_posts_as_they_come_and_hands_over_at_the_first_other_request() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (mut client, server) = tokio::io::duplex(4096);
            let shutdown = Shutdown::new();
            let mut answered = Vec::new();
            let answer = |request: &HotRequest<'_>| {
                answered.push(String::from_utf8(request.body.to_vec()).unwrap());
                Response::new(Body::new(Bytes::from_static(b"{}")))
            };
            let serving = serve(server, LIMITS, &shutdown, answer);
            let talking = async {
                let mut replies = Vec::new();
                for body in ["1", "22"] {
                    let post = post(
                        "HTTP/1.1",
                        &format!("Content-Length: {}\r\n", body.len()),
                        body,
                    );
                    client.write_all(post.as_bytes()).await.unwrap();
                    let mut reply = vec![0; 4096];
                    let read = client.read(&mut reply).await.unwrap();
                    replies.push(String::from_utf8_lossy(&reply[..read]).into_owned());
                }
                client
                    .write_all(b"GET /health HTTP/1.1\r\n\r\n")
                    .await
                    .unwrap();
                (client, replies)
            };
            // A loop that served nothing would leave the client waiting: bounded.
            let both = async { tokio::join!(serving, talking) };
            let (served, (client, replies)) = tokio::time::timeout(Duration::from_secs(10), both)
                .await
                .expect("the posts were not answered");
            for reply in &replies {
                assert!(reply.starts_with("HTTP/1.1 200 OK\r\ncontent-length: 2\r\ndate: "));
                assert!(reply.ends_with("GMT\r\n\r\n{}"), "{reply:?}");
            }
            let Ok(Served::HandedOver(mut rewind)) = served else {
                panic!("not handed over");
            };
            drop(client);
            let mut rest = String::new();
            rewind.read_to_string(&mut rest).await.unwrap();
            assert_eq!(rest, "GET /health HTTP/1.1\r\n\r\n");
            assert_eq!(answered, ["1", "22"]);
        });
    }

    /// `make()`'s reply to `raw` as hyper writes it, served over an in-memory stream, and
    /// whether hyper closed the connection after it (it serves another request, or not).
    async fn hyper_reply(raw: &str, make: fn() -> Response<Body>) -> (Vec<u8>, bool) {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let service = hyper::service::service_fn(move |_| async move {
            Ok::<_, std::convert::Infallible>(make())
        });
        let serving = hyper::server::conn::http1::Builder::new()
            .serve_connection(hyper_util::rt::TokioIo::new(server), service);
        let talking = async {
            client.write_all(raw.as_bytes()).await.unwrap();
            let reply = read_reply(&mut client).await.unwrap();
            let asked_again = client.write_all(b"GET / HTTP/1.1\r\n\r\n").await;
            let closed = asked_again.is_err() || read_reply(&mut client).await.is_none();
            drop(client);
            (reply, closed)
        };
        let (_, reply) = tokio::join!(serving, talking);
        reply
    }

    /// One reply: its head, then its `content-length` bytes; `None` at the end of stream.
    async fn read_reply(stream: &mut tokio::io::DuplexStream) -> Option<Vec<u8>> {
        let mut reply = Vec::new();
        while !reply.ends_with(b"\r\n\r\n") {
            let byte = stream.read_u8().await.ok()?;
            reply.push(byte);
        }
        let head = String::from_utf8_lossy(&reply).to_lowercase();
        let length = head.split("content-length: ").nth(1)?.split('\r').next()?;
        let mut body = vec![0; length.parse().ok()?];
        stream.read_exact(&mut body).await.ok()?;
        reply.extend(body);
        Some(reply)
    }

    fn without_date(reply: &[u8]) -> String {
        let text = String::from_utf8_lossy(reply);
        let lines = text
            .split("\r\n")
            .map(|line| match line.starts_with("date: ") {
                true => "date: (now)",
                false => line,
            });
        lines.collect::<Vec<_>>().join("\r\n")
    }

    #[test]
    fn a_reply_is_written_as_hyper_writes_it_and_keeps_the_connection_as_hyper_does() {
        fn json(status: StatusCode) -> Response<Body> {
            let mut reply = Response::new(Body::new(Bytes::from_static(br#"{"a":1}"#)));
            *reply.status_mut() = status;
            let headers = reply.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            reply
        }
        fn with(
            mut reply: Response<Body>,
            name: &'static str,
            value: &'static str,
        ) -> Response<Body> {
            let value = HeaderValue::from_static(value);
            reply
                .headers_mut()
                .append(HeaderName::from_static(name), value);
            reply
        }
        let replies: [fn() -> Response<Body>; 6] = [
            || json(StatusCode::OK),
            || json(StatusCode::BAD_REQUEST),
            || with(json(StatusCode::REQUEST_TIMEOUT), "connection", "close"),
            || with(json(StatusCode::OK), "connection", "keep-alive"),
            || with(with(json(StatusCode::OK), "x-b", "1"), "x-b", "2"),
            || {
                with(
                    with(json(StatusCode::OK), "connection", "x"),
                    "connection",
                    "y",
                )
            },
        ];
        let requests = [
            post("HTTP/1.1", "Content-Length: 2\r\n", "{}"),
            post(
                "HTTP/1.1",
                "Content-Length: 2\r\nConnection: close\r\n",
                "{}",
            ),
            post("HTTP/1.0", "Content-Length: 2\r\n", "{}"),
            post(
                "HTTP/1.0",
                "Content-Length: 2\r\nConnection: keep-alive\r\n",
                "{}",
            ),
        ];
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        for raw in &requests {
            for make in replies {
                let (by_hyper, hyper_closed) = runtime.block_on(hyper_reply(raw, make));
                let request = HotRequest::read(raw.as_bytes(), LIMITS).unwrap();
                let mut ours = Vec::new();
                let keeps = write_reply(&mut ours, &request, make(), false);
                let case = format!("{raw:?} answered {:?}", make());
                assert_eq!(without_date(&ours), without_date(&by_hyper), "{case}");
                assert_eq!(keeps, !hyper_closed, "{case}: keep-alive");
            }
        }
    }

    #[test]
    fn a_handed_over_stream_gives_what_was_read_first() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (mut client, server) = tokio::io::duplex(64);
            let mut rewind = Rewind::new(BytesMut::from(&b"read before"[..]), server);
            client.write_all(b", then sent").await.unwrap();
            drop(client);
            let mut all = String::new();
            rewind.read_to_string(&mut all).await.unwrap();
            assert_eq!(all, "read before, then sent");
        });
    }
}
