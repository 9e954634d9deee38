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
use uuid::Uuid;
use uuid::fmt::Hyphenated;

pub type Body = Full<Bytes>;

/// How long a registry change or a metrics request may wait for the master.
pub const MASTER_TIMEOUT: Duration = Duration::from_secs(5);

/// A JSON reply.
pub fn json(status: StatusCode, value: &impl Serialize) -> Response<Body> {
    // Serializing our own reply types cannot fail; an empty object is a safe fallback.
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    json_text(status, body)
}

/// `{"_id": UUID}`, the reply to a collected event (the hot path's) or to a creation:
/// written out rather than serialized, the same bytes as serde_json's, in one allocation
/// of their exact size.
pub fn id_reply(status: StatusCode, id: &Uuid) -> Response<Body> {
    json_text(status, id_text(id))
}

fn id_text(id: &Uuid) -> Vec<u8> {
    const OPEN: &[u8] = br#"{"_id":""#;
    const CLOSE: &[u8] = br#""}"#;
    let mut text = Vec::with_capacity(OPEN.len() + Hyphenated::LENGTH + CLOSE.len());
    text.extend_from_slice(OPEN);
    let mut buffer = Uuid::encode_buffer();
    text.extend_from_slice(id.hyphenated().encode_lower(&mut buffer).as_bytes());
    text.extend_from_slice(CLOSE);
    text
}

/// A reply of `body`, JSON text.
fn json_text(status: StatusCode, body: Vec<u8>) -> Response<Body> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_reply_is_what_serde_json_writes_and_fills_its_allocation() {
        let id = Uuid::new_v4();
        let text = id_text(&id);
        assert_eq!(
            text,
            serde_json::to_vec(&serde_json::json!({"_id": id})).unwrap()
        );
        assert_eq!(text.len(), text.capacity());
    }
}
