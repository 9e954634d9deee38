//! The on-call routes of a worker (alerts.md): `/silences`, `/silences/{id}`, `/alerts`
//! and a watcher's `/state`. Owns how their methods, paths and queries become a question
//! for the master (`protocol::oncall::Request`), refusing what is malformed before asking, and how
//! the master's answer becomes a reply. Holds nothing: the master alone keeps silences,
//! alerts and counters.

use hyper::body::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Response, StatusCode};
use uuid::Uuid;

use super::reply::{Body, error};
use super::routes::Route;
use crate::oncall::history::Filter;
use crate::oncall::silence::State;
use crate::oncall::{DEFAULT_ALERTS, MAX_ALERTS};
use crate::protocol::oncall::{Reply, Request};

/// Keys a watcher's state lists when `?limit=` says nothing, and the most it may ask.
const DEFAULT_KEYS: usize = 20;
const MAX_KEYS: usize = 1000;

/// A reply that refuses the request, before the master is asked.
pub(super) type Refused = Box<Response<Body>>;

/// What the request may see and do.
pub(super) struct Access {
    /// Who asks, for the audit line.
    pub client: String,
    /// Key values may be shown: `server.expose_keys_without_token`, or the token.
    pub reveal_keys: bool,
}

/// Whether `route` is one of the on-call routes.
pub(super) fn serves(route: Route) -> bool {
    matches!(
        route,
        Route::WatcherState(..) | Route::Silences | Route::Silence(_) | Route::Alerts
    )
}

/// The question a request asks, or the reply that refuses it (400, 404, 405).
pub(super) fn request(
    route: Route,
    method: &Method,
    query: Option<&str>,
    body: Bytes,
    access: &Access,
) -> Result<Request, Refused> {
    let client = access.client.clone();
    Ok(match (route, method) {
        (Route::Silences, &Method::POST) => Request::CreateSilence {
            body: body.to_vec(),
            client,
        },
        (Route::Silences, &Method::GET) => {
            Request::ListSilences {
                state: match query_value(query, "state") {
                    None => None,
                    Some(state) => Some(State::parse(&state).ok_or_else(|| {
                        bad_request("`state` is one of active, pending or expired")
                    })?),
                },
            }
        }
        (Route::Silence(id), &Method::GET) => Request::GetSilence {
            id: silence_id(id)?,
        },
        (Route::Silence(id), &Method::DELETE) => Request::ExpireSilence {
            id: silence_id(id)?,
            client,
        },
        (Route::Alerts, &Method::GET) => Request::Alerts(alerts_filter(query, access)?),
        (Route::WatcherState(event, watcher), &Method::GET) => Request::WatcherState {
            event: event.to_string(),
            watcher: watcher.to_string(),
            limit: limit(query, DEFAULT_KEYS, MAX_KEYS)?,
            reveal_keys: access.reveal_keys,
        },
        (route, _) => return Err(Box::new(super::reply::method_not_allowed(route.allow()))),
    })
}

/// The master's answer as the reply.
pub(super) fn reply(reply: Reply) -> Response<Body> {
    let mut response = Response::new(Body::from(Bytes::from(reply.body)));
    *response.status_mut() =
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn alerts_filter(query: Option<&str>, access: &Access) -> Result<Filter, Refused> {
    let state = query_value(query, "state");
    let known = ["pending", "delivered", "dropped", "silenced"];
    if state.as_deref().is_some_and(|s| !known.contains(&s)) {
        return Err(bad_request(
            "`state` is one of pending, delivered, dropped or silenced",
        ));
    }
    Ok(Filter {
        event: query_value(query, "event"),
        watcher: query_value(query, "watcher"),
        state,
        limit: limit(query, DEFAULT_ALERTS, MAX_ALERTS)?,
        reveal_keys: access.reveal_keys,
    })
}

/// `?limit=`: 1 to `max`, `default` when absent.
fn limit(query: Option<&str>, default: usize, max: usize) -> Result<usize, Refused> {
    match query_value(query, "limit") {
        None => Ok(default),
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| bad_request(&format!("`limit` is a number from 1 to {max}"))),
    }
}

/// The first value of `name` in the query string, percent-decoded.
fn query_value(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
        .filter(|value| !value.is_empty())
}

fn silence_id(text: &str) -> Result<Uuid, Refused> {
    Uuid::parse_str(text).map_err(|_| {
        let shown: String = text.chars().take(64).collect();
        let message = format!("Silence `{shown}` does not exist");
        Box::new(error(StatusCode::NOT_FOUND, &message))
    })
}

fn bad_request(message: &str) -> Refused {
    Box::new(error(StatusCode::BAD_REQUEST, message))
}
