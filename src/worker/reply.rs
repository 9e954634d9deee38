//! The replies every route shares: the body type, JSON and error replies in the PHP
//! events-collector's shape, 405 and "the master did not answer". Low in the worker: the
//! API and the routes beside it (on-call, the status page) take them from here, never
//! from each other.

use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use serde::Serialize;

pub type Body = Full<Bytes>;

/// How long a registry change or a metrics request may wait for the master.
pub const MASTER_TIMEOUT: Duration = Duration::from_secs(5);

/// A JSON reply.
pub fn json(status: StatusCode, value: &impl Serialize) -> Response<Body> {
    // Serializing our own reply types cannot fail; an empty object is a safe fallback.
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// An error reply in the shape the PHP events-collector used.
pub fn error(status: StatusCode, message: &str) -> Response<Body> {
    json(
        status,
        &serde_json::json!({"status_code": status.as_u16(), "message": message}),
    )
}

pub fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut response = error(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

/// Nothing was applied: the master said it dropped the question (read past its
/// deadline), or the question changes nothing.
pub fn master_unavailable() -> Response<Body> {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "The master did not answer in time; nothing was changed (eventsd may be busy or \
         shutting down)",
    )
}
