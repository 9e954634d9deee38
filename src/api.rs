//! The HTTP API of a worker: routing, request bodies and JSON replies and errors.
//!
//! Owns what a request means and how every reply is shaped (`{"status_code","message"}`
//! for errors, as the PHP events-collector answered). It reads a request body only
//! within `server.max_body_bytes` and `server.read_timeout_secs`, and never blocks the
//! worker's event loop.

use std::time::Duration;

use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::http::request::Parts;
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;

use crate::config::Config;

pub type Body = Full<Bytes>;

pub struct Api {
    pid: u32,
    max_body_bytes: u64,
    read_timeout: Duration,
}

impl Api {
    pub fn new(config: &Config) -> Api {
        Api {
            pid: std::process::id(),
            max_body_bytes: config.server.max_body_bytes,
            read_timeout: config.read_timeout(),
        }
    }

    pub async fn handle(&self, request: Request<Incoming>) -> Response<Body> {
        let (parts, body) = request.into_parts();
        let body = match self.read_body(&parts, body).await {
            Ok(body) => body,
            Err(refusal) => return refusal,
        };
        self.route(&parts, body)
    }

    fn route(&self, parts: &Parts, _body: Bytes) -> Response<Body> {
        let path = parts.uri.path();
        // A trailing slash is optional on every path.
        let path = path
            .strip_suffix('/')
            .filter(|p| !p.is_empty())
            .unwrap_or(path);
        match path {
            "/health" => match parts.method {
                Method::GET | Method::HEAD => json(
                    StatusCode::OK,
                    &serde_json::json!({"status": "ok", "worker": self.pid}),
                ),
                _ => method_not_allowed("GET, HEAD"),
            },
            _ => error(
                StatusCode::NOT_FOUND,
                &format!("No route for {} {path}", parts.method),
            ),
        }
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
        match tokio::time::timeout(self.read_timeout, Limited::new(body, limit).collect()).await {
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

fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut response = error(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
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
