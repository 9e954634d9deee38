//! The HTTP API of a worker: the REST API of the PHP events-collector (routes, bodies,
//! replies, errors) plus `/health`, `/metrics`, `_bulk`, and the status page (`/status`,
//! `/ui/`, whose files are `ui`'s); the on-call routes are `oncall`'s.
//!
//! Owns what a request means and how every reply is shaped (`{"status_code","message"}`
//! for errors). Reads come from the worker's copy of the registry; changes go to the
//! master, which alone applies them. Collecting writes through the appenders and only
//! then acknowledges. A body is read only within `server.max_body_bytes` and
//! `server.read_timeout_secs`, and nothing here blocks the worker's event loop beyond
//! the appenders' `O_APPEND` writes.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant, SystemTime};

use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::http::request::Parts;
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;
use serde_json::{Map, Value, json};
use tokio::time::error::Elapsed;
use uuid::Uuid;

use super::access_log::{self, AccessLog};
use super::batcher::Batcher;
use super::ids::EventIds;
use super::link::{Link, Served};
use super::oncall;
use super::reply::{
    Body, MASTER_TIMEOUT, error, id_reply, json, master_unavailable, method_not_allowed,
};
use super::routes::Route;
pub use super::routes::{ROUTES, route_template};
use super::ui;
use crate::appender::Appenders;
use crate::config::Config;
use crate::event::{Event, Scratch, parse_lines};
use crate::protocol::worker::{Answer, Deltas, Question};
use crate::registry::{self, Appender, Change, Entry, EventType, Origin, Registry, Spec};

/// A request's reply, and whether the request was read to its end: one refused before
/// its body was read (411, 413, 408, 400 for a body that cannot be read) may leave the
/// client still sending.
pub struct Handled {
    pub response: Response<Body>,
    pub read_to_end: bool,
    /// When the reply was made.
    pub finished: Instant,
}

pub struct Api {
    pid: u32,
    max_body_bytes: u64,
    max_key_bytes: usize,
    read_timeout: Duration,
    api_token: Option<String>,
    expose_keys_without_token: bool,
    link: Link,
    appenders: Rc<Appenders>,
    deltas: RefCell<Deltas>,
    ids: EventIds,
    batcher: Rc<Batcher>,
    access_log: Option<Rc<AccessLog>>,
}

impl Api {
    pub fn new(
        config: &Config,
        link: Link,
        appenders: Rc<Appenders>,
        batcher: Rc<Batcher>,
        access_log: Option<Rc<AccessLog>>,
    ) -> Api {
        let token = &config.server.api_token;
        Api {
            pid: std::process::id(),
            max_body_bytes: config.server.max_body_bytes,
            max_key_bytes: config.watchers.max_key_bytes,
            read_timeout: config.read_timeout(),
            api_token: (!token.is_empty()).then(|| token.clone()),
            expose_keys_without_token: config.server.expose_keys_without_token,
            link,
            appenders,
            deltas: RefCell::default(),
            ids: EventIds::new(),
            batcher,
            access_log,
        }
    }

    /// The counters since the previous call, for the heartbeat.
    pub fn take_deltas(&self) -> Deltas {
        self.deltas.take()
    }

    pub async fn handle(&self, request: Request<Incoming>, peer: SocketAddr) -> Handled {
        let started = Instant::now();
        let (parts, body) = request.into_parts();
        let route = Route::parse(parts.uri.path());
        let (response, read_to_end) = match self.read_body(&parts, body).await {
            Err(refusal) => (refusal, false),
            Ok(body) => match route {
                Some(route) => (self.dispatch(route, &parts, body, peer).await, true),
                None => (
                    error(
                        StatusCode::NOT_FOUND,
                        &format!("No route for {} {}", parts.method, parts.uri.path()),
                    ),
                    true,
                ),
            },
        };
        let asked = Asked {
            route,
            method: &parts.method,
            path: parts.uri.path(),
            peer,
        };
        self.handled(started, asked, response, read_to_end)
    }

    /// One event posted to `event` (`POST path`), its body read with its head: the hot
    /// route, as `hot` reads it without hyper; the same reply as `handle` gives.
    pub fn handle_posted(&self, event: &str, path: &str, body: &[u8], peer: SocketAddr) -> Handled {
        let started = Instant::now();
        let response = self.collect(&self.link.registry(), event, body, Posted::One);
        let asked = Asked {
            route: Some(Route::Event(event)),
            method: &Method::POST,
            path,
            peer,
        };
        self.handled(started, asked, response, true)
    }

    /// A request answered: its figures and its access log line.
    fn handled(
        &self,
        started: Instant,
        asked: Asked<'_>,
        response: Response<Body>,
        read_to_end: bool,
    ) -> Handled {
        let template = asked.route.map_or("(unknown)", Route::template);
        let finished = Instant::now();
        let (status, elapsed) = (response.status().as_u16(), finished - started);
        self.deltas
            .borrow_mut()
            .record_request(template, status, elapsed.as_secs_f64());
        if let Some(access_log) = &self.access_log {
            access_log.record(&access_log::Request {
                client: asked.peer.ip(),
                method: asked.method.as_str(),
                route: template,
                path: asked.path,
                status,
                bytes: hyper::body::Body::size_hint(response.body())
                    .exact()
                    .unwrap_or(0),
                duration_ms: elapsed.as_secs_f64() * 1000.0,
            });
        }
        Handled {
            response,
            read_to_end,
            finished,
        }
    }

    async fn dispatch(
        &self,
        route: Route<'_>,
        parts: &Parts,
        body: Bytes,
        peer: SocketAddr,
    ) -> Response<Body> {
        let served = self.link.registry();
        let registry = &served.registry;
        match (route, &parts.method) {
            (Route::Health, &Method::GET | &Method::HEAD) => {
                json(StatusCode::OK, &json!({"status": "ok", "worker": self.pid}))
            }
            (Route::Metrics, &Method::GET) => Box::pin(self.metrics()).await,
            (Route::Status, &Method::GET) if !self.authorized(&parts.headers) => {
                ui::with_page_headers(unauthorized("The status needs"))
            }
            (Route::Status, &Method::GET) => {
                Box::pin(ui::status(&self.link, self.reveals_keys(true))).await
            }
            (Route::Ui, &Method::GET) => ui::page(),
            (Route::UiAsset(name), &Method::GET) => ui::asset(name),
            (Route::Events, &Method::GET) => json(StatusCode::OK, &list_events(registry)),
            (Route::Event(event), &Method::GET) => {
                with_event(registry, event, |e| show_event(event, e))
            }
            (Route::Event(event), &Method::POST) => {
                self.collect(&served, event, &body, Posted::One)
            }
            (Route::Bulk(event), &Method::POST) => {
                let with_ids = wants_ids(parts.uri.query());
                self.collect(&served, event, &body, Posted::Bulk { with_ids })
            }
            (Route::Collectors(event), &Method::GET) => {
                with_event(registry, event, |e| list(&e.collectors))
            }
            (Route::Collector(event, name), &Method::GET) => {
                with_event(registry, event, |e| show(&e.collectors, event, name, false))
            }
            (Route::Watchers(event), &Method::GET) => {
                with_event(registry, event, |e| list(&e.watchers))
            }
            (Route::Watcher(event, name), &Method::GET) => {
                let reveal = self.api_token.is_some() && self.authorized(&parts.headers);
                with_event(registry, event, |e| show(&e.watchers, event, name, reveal))
            }
            (route, _) if oncall::serves(route) => {
                Box::pin(self.oncall(route, parts, body, peer)).await
            }
            (route, method) => match route.change(method, body) {
                Some(change) => Box::pin(self.change(change, &parts.headers, peer)).await,
                None => method_not_allowed(route.allow()),
            },
        }
    }

    /// The hot path: validate, write through every collector, then acknowledge.
    fn collect(&self, served: &Served, event: &str, body: &[u8], posted: Posted) -> Response<Body> {
        let Some(entry) = served.registry.event(event) else {
            return refusal(registry::not_registered(event));
        };
        let mut scratch = Scratch::default();
        let parsed = match posted {
            Posted::Bulk { .. } => parse_lines(body, &mut scratch).map(OneOrMany::Many),
            Posted::One => Event::parse(body).map(|event| OneOrMany::One([event])),
        };
        let events = match parsed {
            Ok(events) => events,
            Err(message) => return error(StatusCode::BAD_REQUEST, &message),
        };
        // `null` collectors write nothing: the lines are built only for those that do,
        // and an event's id is made only where it is seen (a line, a reply).
        let writes = entry
            .collectors
            .iter()
            .any(|c| c.spec.appender != Appender::Null {});
        let replied = !matches!(posted, Posted::Bulk { with_ids: false });
        let ids: OneOrMany<Uuid> = if writes || replied {
            events.iter().map(|_| self.ids.next()).collect()
        } else {
            OneOrMany::Many(Vec::new())
        };
        if writes {
            let received_at = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
            let lines: String = events
                .iter()
                .zip(ids.iter())
                .map(|(e, id)| e.line(id, event, &received_at))
                .collect();
            for collector in &entry.collectors {
                if let Err(reason) = self.appenders.write(&collector.spec.appender, &lines) {
                    log::error!("collector `{}` of `{event}`: {reason}", collector.spec.name);
                    let message = format!(
                        "Collector `{}` could not write the event: {reason}",
                        collector.spec.name
                    );
                    return error(StatusCode::SERVICE_UNAVAILABLE, &message);
                }
            }
        }
        // Counted only once acknowledged: the reply goes out right after.
        let collected = events.len() as u64;
        self.deltas.borrow_mut().record_collected(event, collected);
        if let Some(keys) = served.keys.of(event) {
            self.batcher.add_keys(keys, &events, self.max_key_bytes);
        }
        self.batcher.add_events(event, collected);
        match posted {
            Posted::One => id_reply(StatusCode::OK, &ids[0]),
            Posted::Bulk { with_ids: true } => json(
                StatusCode::OK,
                &json!({"collected": collected, "_ids": &*ids}),
            ),
            Posted::Bulk { with_ids: false } => {
                json(StatusCode::OK, &json!({"collected": collected}))
            }
        }
    }

    /// Forwards a registry change to the master and replies once every worker serves it.
    async fn change(
        &self,
        change: Change,
        headers: &HeaderMap,
        peer: SocketAddr,
    ) -> Response<Body> {
        if !self.authorized(headers) {
            return unauthorized("Changes need");
        }
        let deletion = matches!(
            change,
            Change::DeleteEvent { .. }
                | Change::DeleteCollector { .. }
                | Change::DeleteWatcher { .. }
        );
        let origin = Origin { client: peer.ip() };
        match self.ask(Question::Change { change, origin }).await {
            Some(Answer::Change(Ok(_))) if deletion => {
                json(StatusCode::OK, &json!({"acknowledged": true}))
            }
            Some(Answer::Change(Ok(id))) => id_reply(StatusCode::CREATED, &id),
            Some(Answer::Change(Err(refused))) => refusal(refused),
            _ => master_unavailable(),
        }
    }

    /// Silences, alerts, a watcher's state: asked of the master; changes need the token
    /// as registry changes do, and key values are shown only as the config says.
    async fn oncall(
        &self,
        route: Route<'_>,
        parts: &Parts,
        body: Bytes,
        peer: SocketAddr,
    ) -> Response<Body> {
        let authorized = self.authorized(&parts.headers);
        let access = oncall::Access {
            client: peer.ip().to_string(),
            reveal_keys: self.reveals_keys(authorized),
        };
        let query = parts.uri.query();
        let request = match oncall::request(route, &parts.method, query, body, &access) {
            Ok(request) if request.is_change() && !authorized => {
                return unauthorized("Changes need");
            }
            Ok(request) => request,
            Err(refusal) => return *refusal,
        };
        match self.ask(Question::OnCall(request)).await {
            Some(Answer::OnCall(reply)) => oncall::reply(reply),
            _ => master_unavailable(),
        }
    }

    async fn metrics(&self) -> Response<Body> {
        match self.ask(Question::Metrics).await {
            Some(Answer::Metrics(text)) => {
                let mut response = Response::new(Full::new(Bytes::from(text)));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4"),
                );
                response
            }
            _ => master_unavailable(),
        }
    }

    /// Key values may be shown: `server.expose_keys_without_token`, or the token.
    fn reveals_keys(&self, authorized: bool) -> bool {
        self.expose_keys_without_token || (self.api_token.is_some() && authorized)
    }

    async fn ask(&self, question: Question) -> Option<Answer> {
        self.link.ask(question, MASTER_TIMEOUT).await
    }

    /// With `server.api_token` set, the request must carry it; compared in constant time.
    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(token) = &self.api_token else {
            return true;
        };
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(bearer_credentials)
            .unwrap_or("");
        constant_time_eq(presented.as_bytes(), token.as_bytes())
    }

    /// Reads the whole body, or answers why not: 411 without a length, 413 beyond the
    /// limit (before reading it when the length is declared), 408 when it does not arrive
    /// within the read timeout.
    async fn read_body(&self, parts: &Parts, body: Incoming) -> Result<Bytes, Response<Body>> {
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
        let chunked = parts.headers.contains_key(header::TRANSFER_ENCODING);
        let carries_body = matches!(parts.method, Method::POST | Method::PUT | Method::PATCH);
        if carries_body && declared.is_none() && !chunked {
            return Err(error(
                StatusCode::LENGTH_REQUIRED,
                "A Content-Length header is required",
            ));
        }
        if declared.is_some_and(|length| length > self.max_body_bytes) {
            return Err(too_large(self.max_body_bytes));
        }
        if declared == Some(0) || (declared.is_none() && !chunked) {
            return Ok(Bytes::new());
        }
        let limit = usize::try_from(self.max_body_bytes).unwrap_or(usize::MAX);
        let collecting = Limited::new(body, limit).collect();
        match within(self.read_timeout, collecting).await {
            Ok(Ok(collected)) => Ok(collected.to_bytes()),
            Ok(Err(e)) if e.is::<LengthLimitError>() => Err(too_large(self.max_body_bytes)),
            Ok(Err(e)) => Err(error(
                StatusCode::BAD_REQUEST,
                &format!("Cannot read the request body: {e}"),
            )),
            Err(_) => Err(closing(error(
                StatusCode::REQUEST_TIMEOUT,
                &format!(
                    "The request body did not arrive within {}s",
                    self.read_timeout.as_secs()
                ),
            ))),
        }
    }
}

/// `future`'s output, or `Elapsed` if it takes longer than `limit`. A future that is
/// ready at once (a body that came with its head: the hot path) gets no timer: arming
/// and cancelling one takes the timer driver's lock and wheel, every request.
async fn within<F: Future>(limit: Duration, future: F) -> Result<F::Output, Elapsed> {
    let mut future = std::pin::pin!(future);
    let at_once = std::future::poll_fn(|cx| Poll::Ready(future.as_mut().poll(cx))).await;
    match at_once {
        Poll::Ready(output) => Ok(output),
        Poll::Pending => Box::pin(tokio::time::timeout(limit, future)).await,
    }
}

/// 401: what `needs` the token (registry changes and silences alike, the status page's
/// data), with RFC 6750's challenge.
fn unauthorized(needs: &str) -> Response<Body> {
    let mut response = error(
        StatusCode::UNAUTHORIZED,
        &format!("{needs} an `Authorization: Bearer` header with server.api_token"),
    );
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// The body was not read: the connection cannot be reused for another request.
fn too_large(limit: u64) -> Response<Body> {
    closing(error(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("The request body exceeds server.max_body_bytes ({limit} bytes)"),
    ))
}

fn closing(mut response: Response<Body>) -> Response<Body> {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

fn refusal(refused: registry::Refusal) -> Response<Body> {
    let status = StatusCode::from_u16(refused.status).unwrap_or(StatusCode::BAD_REQUEST);
    error(status, &refused.message)
}

/// What a request asked, as its figures and access log name it.
struct Asked<'a> {
    route: Option<Route<'a>>,
    method: &'a Method,
    path: &'a str,
    peer: SocketAddr,
}

/// What a collecting request posted, and so what its reply holds.
#[derive(Clone, Copy)]
enum Posted {
    /// `POST /event/{type}/`: `{"_id"}`.
    One,
    /// `POST /event/{type}/_bulk`: `{"collected"}`, and the events' `_ids` only when
    /// asked (`?ids=true`): ids would make the reply up to 13 times the request.
    Bulk { with_ids: bool },
}

/// `ids=true` (or `ids=1`) in the query string.
fn wants_ids(query: Option<&str>) -> bool {
    query.is_some_and(|query| {
        query
            .split('&')
            .any(|pair| pair == "ids=true" || pair == "ids=1")
    })
}

/// One item held without a vector, or many: one event and its id are the hot path, and
/// a vector each was two allocations a request.
enum OneOrMany<T> {
    One([T; 1]),
    Many(Vec<T>),
}

impl<T> std::ops::Deref for OneOrMany<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        match self {
            OneOrMany::One(one) => one,
            OneOrMany::Many(many) => many,
        }
    }
}

impl<T> FromIterator<T> for OneOrMany<T> {
    fn from_iter<I: IntoIterator<Item = T>>(items: I) -> OneOrMany<T> {
        let mut items = items.into_iter().fuse();
        match (items.next(), items.next()) {
            (Some(only), None) => OneOrMany::One([only]),
            (first, second) => {
                OneOrMany::Many(first.into_iter().chain(second).chain(items).collect())
            }
        }
    }
}

/// `[{"_id","name"}, ...]`
fn list<S: Spec>(entries: &[Entry<S>]) -> Response<Body> {
    json(StatusCode::OK, &summaries(entries))
}

/// One collector or watcher as registered, with its `_id`; its secrets only if `reveal`
/// (the request carries the API token).
fn show<S: Spec + Serialize>(
    entries: &[Entry<S>],
    event: &str,
    name: &str,
    reveal: bool,
) -> Response<Body> {
    match entries.iter().find(|e| e.spec.name().as_str() == name) {
        Some(entry) if reveal => json(StatusCode::OK, &with_id(entry.id, &entry.spec)),
        Some(entry) => json(
            StatusCode::OK,
            &with_id(entry.id, &entry.spec.without_secrets()),
        ),
        None => error(
            StatusCode::NOT_FOUND,
            &format!(
                "{} `{name}` of event type `{event}` is not registered",
                S::KIND
            ),
        ),
    }
}

fn summaries<S: Spec>(entries: &[Entry<S>]) -> Vec<Value> {
    entries
        .iter()
        .map(|e| json!({"_id": e.id, "name": e.spec.name()}))
        .collect()
}

/// Runs `reply` on the event type `event`, or answers 404.
fn with_event(
    registry: &Registry,
    event: &str,
    reply: impl FnOnce(&EventType) -> Response<Body>,
) -> Response<Body> {
    match registry.event(event) {
        Some(entry) => reply(entry),
        None => refusal(registry::not_registered(event)),
    }
}

fn list_events(registry: &Registry) -> Vec<Value> {
    registry
        .events
        .iter()
        .map(|(name, event)| json!({"_id": event.id, "type": name}))
        .collect()
}

fn show_event(name: &str, event: &EventType) -> Response<Body> {
    json(
        StatusCode::OK,
        &json!({"_id": event.id, "type": name,
                "collectors": summaries(&event.collectors), "watchers": summaries(&event.watchers)}),
    )
}

/// `value` as registered, with its `_id` first.
fn with_id(id: Uuid, value: &impl Serialize) -> Value {
    let mut object = Map::new();
    object.insert("_id".into(), json!(id));
    if let Ok(Value::Object(fields)) = serde_json::to_value(value) {
        object.extend(fields);
    }
    Value::Object(object)
}

/// Compares without an early exit, so the time taken does not tell how much matched.
/// The credentials of an `Authorization: Bearer` value. RFC 7235: the scheme is
/// case-insensitive and one or more spaces separate it from the credentials.
fn bearer_credentials(value: &str) -> Option<&str> {
    let (scheme, credentials) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| credentials.trim_start_matches(' '))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let differences = a
        .iter()
        .zip(b)
        .fold((a.len() ^ b.len()) as u8, |acc, (x, y)| acc | (x ^ y));
    a.len() == b.len() && differences == 0
}

#[cfg(test)]
mod tests;
