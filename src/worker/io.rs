//! A client connection's byte stream, as `hot` and hyper read it: the TCP stream with
//! the two things hyper does not do itself (process-model.md).
//!
//! - A write deadline (`server.write_timeout_secs`, nginx's `send_timeout`): a write that
//!   makes no progress for that long fails the connection, so a client that never reads
//!   its reply cannot hold the worker's memory.
//! - A lingering close: closing while the client may still be sending, the worker shuts
//!   its side down, then reads and discards what the client still sends, until it closes
//!   or `LINGER` passes. A client that sends its whole body before reading (Python's
//!   http.client) then gets the early 413, and a keep-alive client whose next request
//!   crosses the close (a drain, an idle timeout) gets an end of stream, where closing
//!   with unread data would have made the kernel reset the connection. Only a connection
//!   whose client said its request was the last (`Connection: close`, HTTP/1.0), that
//!   request read to its end, closes at once: lingering there cost a `shutdown`, a
//!   timer, a wake-up and a read per connection for nothing. Its reply is sent held
//!   back (`MSG_MORE`), and the shutdown that follows sends it with the FIN, in one
//!   segment: on short connections, 8 segments a request where there were 10.
//!
//! It also tells the server (`Exchange`) when a reply read slowly is out at last, and
//! when the connection closes: the header deadline, which the server keeps, counts a
//! wait for the next request from then, never a reply going out nor a lingering close.
//!
//! Never blocks: both are timers polled with the stream.

use std::cell::Cell;
use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use socket2::SockRef;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::{Sleep, sleep};

/// The longest a closing connection is read from for nothing.
const LINGER: Duration = Duration::from_secs(5);
/// How a connection's last reply is sent: held back for the FIN of the close that
/// follows, and without SIGPIPE should the client be gone.
const LAST_REPLY: libc::c_int = libc::MSG_MORE | libc::MSG_NOSIGNAL;

/// What a connection's stream, its service and the task serving it share (one thread).
#[derive(Clone)]
pub struct Exchange(Rc<ExchangeState>);

struct ExchangeState {
    /// Whether the client may still send, or have sent, bytes that no request will read:
    /// set by every read that returns bytes, cleared once the service has read to its
    /// end a request that the client said was its last.
    unread: Cell<bool>,
    /// Since when the connection waits for a request's head (`None` while a request is
    /// served, or once the connection is closing): what the header deadline counts from.
    waiting_since: Cell<Option<Instant>>,
    /// Whether a write waits for the client to read: the reply is still going out.
    write_stalled: Cell<bool>,
    /// Told once, when the first request's head arrives (a drain gives a silent new
    /// connection a grace to send it).
    first_request: Notify,
    request_seen: Cell<bool>,
}

impl Exchange {
    /// A connection just accepted: nothing read yet (closed now, it lingers), and
    /// waiting for its first request.
    pub fn new(accepted_at: Instant) -> Exchange {
        Exchange(Rc::new(ExchangeState {
            unread: Cell::new(true),
            waiting_since: Cell::new(Some(accepted_at)),
            write_stalled: Cell::new(false),
            first_request: Notify::new(),
            request_seen: Cell::new(false),
        }))
    }

    pub fn last_request_read_to_end(&self) {
        self.0.unread.set(false);
    }

    /// Whether the connection closes at once after the reply being written (no linger).
    fn closes_after_reply(&self) -> bool {
        !self.0.unread.get()
    }

    /// A request's head has arrived: no deadline runs until its reply is made.
    pub fn request_started(&self) {
        self.0.waiting_since.set(None);
        if !self.0.request_seen.replace(true) {
            self.0.first_request.notify_one();
        }
    }

    /// Resolves once the connection's first request has arrived (at once if it has).
    pub async fn first_request(&self) {
        self.0.first_request.notified().await;
    }

    /// The reply was made at `at`: the connection waits for the next head from then (or
    /// from when its reply is written out, if the client reads it slowly), until it
    /// closes (`poll_shutdown`).
    pub fn reply_made(&self, at: Instant) {
        self.0.waiting_since.set(Some(at));
    }

    /// A write waits for the client to read: no head is awaited while the reply goes out.
    fn write_stalled(&self) {
        self.0.write_stalled.set(true);
    }

    /// A stalled write went out: the wait for the next head, if any, starts now.
    fn write_went_out(&self) {
        let state = &self.0;
        state.write_stalled.set(false);
        if state.waiting_since.get().is_some() {
            state.waiting_since.set(Some(Instant::now()));
        }
    }

    /// When the connection's wait for a head passes `timeout`, if it waits for one and
    /// no reply is still going out; `None` if it does not wait.
    pub fn head_deadline(&self, timeout: Duration) -> Option<Instant> {
        if self.0.write_stalled.get() {
            return None;
        }
        Some(self.0.waiting_since.get()? + timeout)
    }
}

pub struct ClientStream {
    stream: TcpStream,
    exchange: Exchange,
    write_timeout: Duration,
    /// Armed while a write waits for the client to read.
    write_stalled: Option<Pin<Box<Sleep>>>,
    /// Armed once our side is shut down: the end of the lingering close.
    lingering: Option<Pin<Box<Sleep>>>,
}

impl ClientStream {
    pub fn new(stream: TcpStream, write_timeout: Duration, exchange: Exchange) -> ClientStream {
        ClientStream {
            stream,
            exchange,
            write_timeout,
            write_stalled: None,
            lingering: None,
        }
    }

    /// Writes the last reply of a connection that closes at once after it, held back
    /// (`MSG_MORE`) for the close to send with its FIN: one segment where there were two.
    fn poll_send_last(
        &self,
        cx: &mut Context<'_>,
        send: impl Fn(SockRef<'_>) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.stream.poll_write_ready(cx))?;
            let sent = self
                .stream
                .try_io(Interest::WRITABLE, || send(SockRef::from(&self.stream)));
            match sent {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                sent => return Poll::Ready(sent),
            }
        }
    }

    /// After a write: progress disarms the deadline, a wait arms it (once) and fails the
    /// write when it passes.
    fn deadline<T>(
        &mut self,
        cx: &mut Context<'_>,
        written: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if written.is_ready() {
            if self.write_stalled.take().is_some() {
                self.exchange.write_went_out();
            }
            return written;
        }
        self.exchange.write_stalled();
        let timeout = self.write_timeout;
        let stalled = self
            .write_stalled
            .get_or_insert_with(|| Box::pin(sleep(timeout)));
        match stalled.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the client read nothing for {}s", timeout.as_secs()),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = Pin::new(&mut this.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.exchange.0.unread.set(true);
        }
        read
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = if this.exchange.closes_after_reply() {
            this.poll_send_last(cx, |socket| socket.send_with_flags(buf, LAST_REPLY))
        } else {
            Pin::new(&mut this.stream).poll_write(cx, buf)
        };
        this.deadline(cx, written)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = if this.exchange.closes_after_reply() {
            this.poll_send_last(cx, |socket| {
                socket.send_vectored_with_flags(bufs, LAST_REPLY)
            })
        } else {
            Pin::new(&mut this.stream).poll_write_vectored(cx, bufs)
        };
        this.deadline(cx, written)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let flushed = Pin::new(&mut this.stream).poll_flush(cx);
        this.deadline(cx, flushed)
    }

    /// Done at once after the client's last request, read to its end (the close that
    /// follows sends the FIN); otherwise the lingering close: FIN first, then what the
    /// client sends is discarded until it closes, errs, or `LINGER` passes.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // Closing, the connection waits for no head: the linger has its own bound, and
        // the header deadline firing in it would drop the connection with unread bytes,
        // the reset the linger is there to prevent.
        this.exchange.0.waiting_since.set(None);
        if this.lingering.is_none() {
            if this.exchange.closes_after_reply() {
                // The reply held back leaves with the FIN now, not at the close: a byte
                // the client sent late would make the close a reset, which would
                // discard a reply still in the send queue.
                return Pin::new(&mut this.stream).poll_shutdown(cx);
            }
            ready!(Pin::new(&mut this.stream).poll_shutdown(cx))?;
            this.lingering = Some(Box::pin(sleep(LINGER)));
        }
        let mut discard = [0u8; 16 * 1024];
        loop {
            let mut buf = ReadBuf::new(&mut discard);
            match Pin::new(&mut this.stream).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if buf.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => continue,
                Poll::Ready(Err(_)) => return Poll::Ready(Ok(())),
                Poll::Pending => {
                    let over = this
                        .lingering
                        .as_mut()
                        .is_none_or(|linger| linger.as_mut().poll(cx).is_ready());
                    return if over {
                        Poll::Ready(Ok(()))
                    } else {
                        Poll::Pending
                    };
                }
            }
        }
    }
}
