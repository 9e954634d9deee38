//! The status page's files (ui.md): one HTML page, its script and its style sheet,
//! compiled into the binary, served by every worker with the headers of ui.md (a CSP
//! that allows only these files and requests to this origin, `nosniff`, no referrer).
//!
//! Owns the files and their headers, and hands `GET /status` to the master, which
//! builds the page's data. Never serves anything read from disk or from a request: an
//! unknown file name is a 404.

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Response, StatusCode};

use super::link::Link;
use super::reply::{Body, MASTER_TIMEOUT, error, master_unavailable};
use crate::protocol::worker::{Answer, Question};

const INDEX: &str = include_str!("index.html");
const SCRIPT: &str = include_str!("app.js");
const STYLE: &str = include_str!("app.css");

/// ui.md's policy: nothing inline, nothing from elsewhere, no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; \
    base-uri 'none'; form-action 'self'";

/// The headers every response of the page carries (its data, `/status`, too).
const PAGE_HEADERS: [(HeaderName, &str); 4] = [
    (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::REFERRER_POLICY, "no-referrer"),
    // An upgrade changes the files; the data changes every second.
    (header::CACHE_CONTROL, "no-cache"),
];

/// `GET /ui/`: the page. With `server.api_token` set it is the same page: it shows only
/// its token field until `/status` accepts the token it is given.
pub fn page() -> Response<Body> {
    file(INDEX, "text/html; charset=utf-8")
}

/// `GET /ui/{asset}`: the script or the style sheet.
pub fn asset(name: &str) -> Response<Body> {
    match name {
        "app.js" => file(SCRIPT, "text/javascript; charset=utf-8"),
        "app.css" => file(STYLE, "text/css; charset=utf-8"),
        _ => with_page_headers(error(
            StatusCode::NOT_FOUND,
            &format!("The status page has no file `{name}`"),
        )),
    }
}

/// `GET /status` (its token already checked): the master's document, as it is.
pub async fn status(link: &Link, reveal_keys: bool) -> Response<Body> {
    match link
        .ask(Question::Status { reveal_keys }, MASTER_TIMEOUT)
        .await
    {
        Some(Answer::Status(document)) => {
            let mut response = Response::new(Full::new(Bytes::from(document)));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            with_page_headers(response)
        }
        _ => master_unavailable(),
    }
}

fn file(content: &'static str, content_type: &'static str) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from_static(content.as_bytes())));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    with_page_headers(response)
}

pub fn with_page_headers(mut response: Response<Body>) -> Response<Body> {
    let headers = response.headers_mut();
    for (name, value) in PAGE_HEADERS {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}
