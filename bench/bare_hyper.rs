//! The floor under eventsd's hot path, for `bench/run`: hyper 1.x on a tokio
//! `current_thread` runtime in two pre-forked processes, as eventsd's workers run it,
//! answering every request with the reply eventsd gives to a posted event after reading
//! its body, and doing nothing else (no parsing, no counting, no timeouts).
//!
//! What eventsd costs beyond it is eventsd's own; what it costs beyond nginx is the
//! price of hyper and tokio on this machine. A benchmark tool: not built into the daemon.
//!
//! Usage: bare-hyper PORT (its workers end when it does).

use std::convert::Infallible;
use std::net::TcpListener;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

const REPLY: &[u8] = br#"{"_id":"b0f0c6d4-9cbe-4d55-9d2a-6b7f2f0f1e59"}"#;
const WORKERS: usize = 2;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = std::env::args()
        .nth(1)
        .ok_or("usage: bare-hyper PORT")?
        .parse()?;
    let listener = TcpListener::bind(("127.0.0.1", port))?;
    listener.set_nonblocking(true)?;
    for _ in 0..WORKERS {
        // SAFETY: nothing but this thread runs yet; the child builds its runtime after.
        match unsafe { libc::fork() } {
            -1 => return Err(std::io::Error::last_os_error().into()),
            0 => {
                // SAFETY: a plain prctl; the worker ends with the process bench/run stops.
                unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) };
                return serve(listener);
            }
            _ => {}
        }
    }
    loop {
        // SAFETY: pause only waits for a signal.
        unsafe { libc::pause() };
    }
}

fn serve(listener: TcpListener) -> Result<(), Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        loop {
            let (stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
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
