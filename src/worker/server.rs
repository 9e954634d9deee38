//! The worker's HTTP/1.1 server: the accept loop on the inherited socket and the limits
//! a worker enforces by itself.
//!
//! Owns connections: the per-worker connection cap, the header deadline (kept here, one
//! lazy timer a connection, also while a keep-alive connection waits for its next
//! request: hyper's armed a timer every request), the header
//! size (`max_header_bytes`: hyper answers 431 beyond its read buffer), accept errors
//! survived, draining without refusing (process-model.md: a connection accepted before
//! the drain gets its first request served, with `Connection: close`), TLS when the
//! master read a certificate (the handshake under the header deadline), and the figures
//! the heartbeat reports. Each connection's requests are read by `hot` while they are
//! plain posts of one event, then by hyper from the first other one on (`Drain::serve`).
//! What a request means is `api`'s business.

use std::cell::Cell;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::{HttpService, Service, service_fn};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use log::{debug, warn};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;

use super::api::{Api, Handled};
use super::hot::{self, HotRequest, Rewind, Served};
use super::io::{ClientStream, Exchange};
use super::link::Link;
use super::reply::Body;
use super::shutdown::Shutdown;
use crate::config::Config;
use crate::protocol::worker::{Heartbeat, WorkerMessage};
use crate::tls::Tls;

/// How long the accept loop pauses after an accept error (EMFILE...) before retrying.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// A worker whose accepts have failed this long retires, and the master replaces it.
const ACCEPT_FAILURE_LIMIT: Duration = Duration::from_secs(5);
/// When the drain begins, a connection whose first request has not arrived yet waits this
/// long for it (at most the read timeout) before it is closed.
const FIRST_REQUEST_GRACE: Duration = Duration::from_secs(1);

/// Accepts connections until `shutdown`, then waits for every connection to finish its
/// in-flight request (and for a silent new one to send its first).
pub async fn accept_until_shutdown(
    listener: TcpListener,
    config: &Config,
    connections: &Connections,
    link: &Link,
    shutdown: &Shutdown,
) {
    let slots = Arc::new(Semaphore::new(config.server.max_connections));
    let mut failing_since: Option<Instant> = None;
    loop {
        // At the cap, stop accepting: new clients wait in the shared backlog, where
        // another worker may take them.
        let slot = tokio::select! {
            biased;
            () = shutdown.wait() => break,
            slot = slots.clone().acquire_owned() => slot,
        };
        let Ok(slot) = slot else { break };
        let accepted = tokio::select! {
            biased;
            () = shutdown.wait() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                failing_since = None;
                connections.spawn(stream, peer, slot);
            }
            Err(e) => {
                let since = *failing_since.get_or_insert_with(Instant::now);
                if !survive_accept_error(&e, since, link, shutdown).await {
                    break;
                }
            }
        }
    }
    drop(listener);
    // Every connection holds a slot until it ends: having them all back means drained.
    let every_slot = u32::try_from(config.server.max_connections).unwrap_or(u32::MAX);
    let _ = slots.acquire_many(every_slot).await;
}

/// After an accept error (EMFILE...): pauses and says go on, or, when accepts have
/// failed for `ACCEPT_FAILURE_LIMIT`, retires the worker and says stop.
async fn survive_accept_error(
    error: &std::io::Error,
    failing_since: Instant,
    link: &Link,
    shutdown: &Shutdown,
) -> bool {
    if failing_since.elapsed() >= ACCEPT_FAILURE_LIMIT {
        // Descriptors leaked or exhausted for good: a fresh worker serves better.
        let reason = format!(
            "accept has failed for {}s ({error})",
            ACCEPT_FAILURE_LIMIT.as_secs()
        );
        link.send(WorkerMessage::Retiring { reason });
        shutdown.trigger("accept keeps failing");
        return false;
    }
    warn!(
        "accept failed: {error}; retrying in {}ms",
        ACCEPT_ERROR_PAUSE.as_millis()
    );
    tokio::select! {
        () = shutdown.wait() => false,
        () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => true,
    }
}

/// What serving an accepted connection needs: the HTTP settings, the optional TLS
/// handshake, and what a request reaches.
pub struct Connections {
    http: Rc<http1::Builder>,
    tls: Option<TlsAcceptor>,
    /// How long a TLS handshake, and a wait for a request's head, may take.
    read_timeout: Duration,
    grace: Duration,
    write_timeout: Duration,
    hot_limits: hot::Limits,
    requests: Rc<Requests>,
}

/// What every request reaches, shared by the connections: one `Rc` to clone a request
/// (a `Link` clone alone is two atomic channel handles).
struct Requests {
    api: Rc<Api>,
    stats: Rc<Stats>,
    link: Link,
    shutdown: Shutdown,
    max_requests: u64,
}

impl Requests {
    /// A request hyper read.
    async fn serve(
        self: Rc<Self>,
        request: Request<Incoming>,
        peer: SocketAddr,
        exchange: Exchange,
    ) -> Result<Response<Body>, Infallible> {
        let in_flight = self.started(&exchange);
        let last = asks_to_close(&request);
        let handled = self.api.handle(request, peer).await;
        Ok(self.finished(&exchange, in_flight, last, handled))
    }

    /// A request of the hot route, read by `hot`.
    fn serve_hot(
        &self,
        request: &HotRequest<'_>,
        peer: SocketAddr,
        exchange: &Exchange,
    ) -> Response<Body> {
        let in_flight = self.started(exchange);
        let handled = (self.api).handle_posted(request.event, request.path, request.body, peer);
        self.finished(exchange, in_flight, !request.keep_alive, handled)
    }

    /// A request's head has arrived, by whichever reader.
    fn started(&self, exchange: &Exchange) -> InFlight<'_> {
        exchange.request_started();
        self.stats.request_started()
    }

    /// Its reply is made: the connection waits for the next head from then, and the
    /// worker retires once it has served `workers.max_requests`.
    fn finished(
        &self,
        exchange: &Exchange,
        in_flight: InFlight<'_>,
        last: bool,
        handled: Handled,
    ) -> Response<Body> {
        let Handled {
            response,
            read_to_end,
            finished,
        } = handled;
        if last && read_to_end {
            exchange.last_request_read_to_end();
        }
        exchange.reply_made(finished);
        drop(in_flight);
        let max_requests = self.max_requests;
        if max_requests > 0
            && self.stats.requests() >= max_requests
            && !self.shutdown.is_triggered()
        {
            self.link.send(WorkerMessage::Retiring {
                reason: format!("served workers.max_requests ({max_requests}) requests"),
            });
            self.shutdown.trigger("max_requests reached");
        }
        response
    }
}

impl Connections {
    pub fn new(
        config: &Config,
        tls: Option<Tls>,
        api: &Rc<Api>,
        stats: &Rc<Stats>,
        link: &Link,
        shutdown: &Shutdown,
    ) -> Connections {
        // No timer for hyper: its header deadline armed, registered and dropped a timer
        // each request; `Drain::serve` keeps the same deadline with one per connection.
        // Both limits: the buffer's bounds what one read takes, the head's each request's
        // head (with the buffer's alone, a head behind a short request read with it
        // could be nearly twice the limit).
        let mut http = http1::Builder::new();
        http.header_read_timeout(None)
            .max_buf_size(config.server.max_header_bytes)
            .max_header_size(config.server.max_header_bytes)
            .keep_alive(true);
        Connections {
            http: Rc::new(http),
            tls: tls.map(TlsAcceptor::from),
            read_timeout: config.read_timeout(),
            grace: FIRST_REQUEST_GRACE.min(config.read_timeout()),
            write_timeout: config.write_timeout(),
            hot_limits: hot::Limits {
                max_head: config.server.max_header_bytes,
                max_body: config.server.max_body_bytes,
            },
            requests: Rc::new(Requests {
                api: api.clone(),
                stats: stats.clone(),
                link: link.clone(),
                shutdown: shutdown.clone(),
                max_requests: config.workers.max_requests,
            }),
        }
    }

    /// Serves `stream` on its own task, which holds `slot` until the connection ends.
    fn spawn(&self, stream: TcpStream, peer: SocketAddr, slot: OwnedSemaphorePermit) {
        let exchange = Exchange::new(Instant::now());
        let drain = Drain {
            shutdown: self.requests.shutdown.clone(),
            exchange: exchange.clone(),
            grace: self.grace,
            read_timeout: self.read_timeout,
            hot_limits: self.hot_limits,
        };
        let (requests, hot_exchange) = (self.requests.clone(), exchange.clone());
        let answer =
            move |request: &HotRequest<'_>| requests.serve_hot(request, peer, &hot_exchange);
        let service = self.service(peer, exchange.clone());
        let stream = ClientStream::new(stream, self.write_timeout, exchange);
        let open = self.requests.stats.connection_opened();
        let (http, tls, read_timeout) = (self.http.clone(), self.tls.clone(), self.read_timeout);
        tokio::task::spawn_local(async move {
            // The TLS path is boxed: inline, its handshake and TLS stream made every
            // connection's task the size of a TLS one, allocated and copied at each
            // accept.
            let served = match tls {
                None => drain.serve(&http, stream, answer, service).await,
                Some(tls) => {
                    Box::pin(async {
                        match tokio::time::timeout(read_timeout, tls.accept(stream)).await {
                            Ok(Ok(stream)) => drain.serve(&http, stream, answer, service).await,
                            Ok(Err(e)) => Err(format!("TLS handshake failed: {e}")),
                            Err(_) => Err("no TLS handshake within the read timeout".to_string()),
                        }
                    })
                    .await
                }
            };
            if let Err(e) = served {
                debug!("connection from {peer}: {e}");
            }
            drop(open);
            drop(slot);
        });
    }

    /// The request handler of one connection.
    fn service(
        &self,
        peer: SocketAddr,
        exchange: Exchange,
    ) -> impl Service<Request<Incoming>, Response = Response<Body>, Error = Infallible> + use<>
    {
        let requests = self.requests.clone();
        service_fn(move |request| requests.clone().serve(request, peer, exchange.clone()))
    }
}

/// Whether the client said that it sends nothing after this request (RFC 9112 9.6:
/// `Connection: close`, or HTTP/1.0 without keep-alive).
fn asks_to_close<B>(request: &Request<B>) -> bool {
    let mut options = request
        .headers()
        .get_all(hyper::header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim);
    if request.version() == hyper::Version::HTTP_10 {
        !options.any(|option| option.eq_ignore_ascii_case("keep-alive"))
    } else {
        options.any(|option| option.eq_ignore_ascii_case("close"))
    }
}

/// How a connection ends: when it waits for a request's head longer than the read
/// timeout, and when the worker drains.
struct Drain {
    shutdown: Shutdown,
    exchange: Exchange,
    grace: Duration,
    read_timeout: Duration,
    hot_limits: hot::Limits,
}

impl Drain {
    /// Serves HTTP/1.1 on `io` (plain, or TLS once the handshake is done) until the
    /// connection ends, waits too long for a head, or the worker drains: the hot route's
    /// requests by `hot` (`answer`) while they come, then whatever follows by hyper
    /// (`service`), which keeps the connection from its first other request on.
    async fn serve<I, A, S>(
        &self,
        http: &http1::Builder,
        io: I,
        answer: A,
        service: S,
    ) -> Result<(), String>
    where
        I: AsyncRead + AsyncWrite + Unpin + 'static,
        A: FnMut(&HotRequest<'_>) -> Response<Body>,
        S: Service<Request<Incoming>, Response = Response<Body>, Error = Infallible>,
    {
        let served = async {
            let io = match hot::serve(io, self.hot_limits, &self.shutdown, answer).await {
                Ok(Served::Closed) => return Ok(()),
                Ok(Served::HandedOver(io)) => io,
                Err(e) => return Err(e.to_string()),
            };
            let connection = std::pin::pin!(http.serve_connection(TokioIo::new(io), service));
            self.serve_until_drained(connection)
                .await
                // With its causes: hyper's words name the step ("error writing a body
                // to connection"), its source the reason (the write deadline, a reset).
                .map_err(|e| format!("{:#}", anyhow::Error::new(e)))
        };
        tokio::select! {
            biased;
            outcome = served => outcome,
            () = self.head_overdue() => Err(format!(
                "no request head within the read timeout ({}s)",
                self.read_timeout.as_secs()
            )),
        }
    }

    /// Serves `connection` until it ends or the worker drains. Draining, it closes at
    /// once only a connection with nothing in progress; one whose first request has not
    /// been seen gets the grace to send it, and is answered with `Connection: close`.
    async fn serve_until_drained<I, S>(
        &self,
        mut connection: std::pin::Pin<&mut http1::Connection<TokioIo<Rewind<I>>, S>>,
    ) -> hyper::Result<()>
    where
        I: AsyncRead + AsyncWrite + Unpin + 'static,
        S: HttpService<Incoming>,
        S::ResBody: 'static,
        <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        tokio::select! {
            biased;
            outcome = connection.as_mut() => return outcome,
            () = self.shutdown.wait() => {}
        }
        // A connection whose first request was seen does not wait at all.
        let first_request = async {
            let _ = tokio::time::timeout(self.grace, self.exchange.first_request()).await;
        };
        tokio::select! {
            biased;
            outcome = connection.as_mut() => return outcome,
            () = first_request => {}
        }
        connection.as_mut().graceful_shutdown();
        connection.await
    }

    /// Resolves once the connection has waited for a request's head (since it was
    /// accepted, or since its previous reply) longer than the read timeout: slowloris
    /// clients and idle keep-alive connections. One timer a connection, moved only when
    /// it fires (nginx's lazy timers): a request costs no timer.
    async fn head_overdue(&self) {
        let timeout = self.read_timeout;
        let timer = tokio::time::sleep(timeout);
        tokio::pin!(timer);
        loop {
            timer.as_mut().await;
            let now = Instant::now();
            match self.exchange.head_deadline(timeout) {
                Some(deadline) if deadline <= now => return,
                Some(deadline) => timer.as_mut().reset(deadline.into()),
                None => timer.as_mut().reset((now + timeout).into()),
            }
        }
    }
}

/// The worker's figures, shared by its connections on one thread.
#[derive(Default)]
pub struct Stats {
    requests: Cell<u64>,
    in_flight: Cell<u32>,
    connections: Cell<u32>,
    busy_since: Cell<Option<Instant>>,
    busy_time: Cell<Duration>,
    sampled_at: Cell<Option<Instant>>,
}

impl Stats {
    pub fn requests(&self) -> u64 {
        self.requests.get()
    }

    pub fn request_started(&self) -> InFlight<'_> {
        self.in_flight.set(self.in_flight.get() + 1);
        InFlight(self)
    }

    /// Counts a connection as open until the guard drops, and tracks the time during
    /// which at least one connection was open: what "busy" means for the dynamic pool,
    /// as in Apache's prefork (a child holding a connection is busy).
    pub fn connection_opened(self: &Rc<Self>) -> OpenConnection {
        if self.connections.get() == 0 {
            self.busy_since.set(Some(Instant::now()));
        }
        self.connections.set(self.connections.get() + 1);
        OpenConnection(self.clone())
    }

    /// The heartbeat: busy if connections were open more than half of the time since
    /// the previous sample.
    pub fn sample(&self, rss_bytes: u64) -> Heartbeat {
        let now = Instant::now();
        let mut busy_time = self.busy_time.replace(Duration::ZERO);
        if let Some(since) = self.busy_since.get() {
            busy_time += now.duration_since(since);
            self.busy_since.set(Some(now));
        }
        let interval = self
            .sampled_at
            .replace(Some(now))
            .map_or(Duration::MAX, |at| now.duration_since(at));
        Heartbeat {
            busy: busy_time * 2 > interval,
            requests: self.requests.get(),
            in_flight: self.in_flight.get(),
            connections: self.connections.get(),
            rss_bytes,
            ..Heartbeat::default()
        }
    }
}

pub struct InFlight<'a>(&'a Stats);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let stats = &self.0;
        stats.requests.set(stats.requests.get() + 1);
        stats.in_flight.set(stats.in_flight.get() - 1);
    }
}

pub struct OpenConnection(Rc<Stats>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        let stats = &self.0;
        stats.connections.set(stats.connections.get() - 1);
        if stats.connections.get() == 0 {
            if let Some(since) = stats.busy_since.take() {
                stats.busy_time.set(stats.busy_time.get() + since.elapsed());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_says_its_request_is_the_last_by_close_or_by_http_1_0() {
        let asks = |version, connection: Option<&str>| {
            let mut request = Request::builder().version(version);
            if let Some(value) = connection {
                request = request.header(hyper::header::CONNECTION, value);
            }
            asks_to_close(&request.body(()).unwrap())
        };
        use hyper::Version;
        assert!(!asks(Version::HTTP_11, None));
        assert!(asks(Version::HTTP_11, Some("close")));
        assert!(asks(Version::HTTP_11, Some("Upgrade, Close")));
        assert!(!asks(Version::HTTP_11, Some("keep-alive")));
        assert!(asks(Version::HTTP_10, None));
        assert!(!asks(Version::HTTP_10, Some("Keep-Alive")));
    }

    #[test]
    fn busy_means_connections_open_most_of_the_interval() {
        let stats = Rc::new(Stats::default());
        stats.sample(0);
        assert!(!stats.sample(0).busy, "no connection open");
        let connection = stats.connection_opened();
        let request = stats.request_started();
        std::thread::sleep(Duration::from_millis(20));
        let sample = stats.sample(0);
        assert!(sample.busy);
        assert_eq!((sample.connections, sample.in_flight), (1, 1));
        drop(request);
        drop(connection);
        let sample = stats.sample(0);
        assert_eq!(
            (sample.requests, sample.in_flight, sample.connections),
            (1, 0, 0)
        );
    }
}
