//! A TCP proxy on loopback between a node and Redis, for faults the network makes: it
//! forwards requests at once and holds every reply for `delay` first (a reply later than
//! `timeout_ms` is a call whose outcome the node cannot know).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

pub struct DelayProxy {
    pub port: u16,
    delay_ms: Arc<AtomicU64>,
    /// Connections whose requests are still being forwarded.
    open: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl DelayProxy {
    /// A proxy to `127.0.0.1:target`, without delay yet.
    pub fn start(target: u16) -> DelayProxy {
        let port = super::free_port();
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let proxy = DelayProxy {
            port,
            delay_ms: Arc::new(AtomicU64::new(0)),
            open: Arc::new(AtomicUsize::new(0)),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let (delay_ms, open, stop) = (
            proxy.delay_ms.clone(),
            proxy.open.clone(),
            proxy.stop.clone(),
        );
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                forward(client, server, delay_ms.clone(), open.clone());
            }
        });
        proxy
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::Relaxed);
    }

    /// Connections whose client has not closed its side yet: 0 once every request sent
    /// through the proxy has reached Redis.
    pub fn forwarding(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the accepting thread, which then sees `stop`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn forward(client: TcpStream, server: TcpStream, delay_ms: Arc<AtomicU64>, open: Arc<AtomicUsize>) {
    let (Ok(mut client_in), Ok(mut server_out)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    open.fetch_add(1, Ordering::Relaxed);
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut client_in, &mut server_out);
        let _ = server_out.shutdown(Shutdown::Write);
        open.fetch_sub(1, Ordering::Relaxed);
    });
    std::thread::spawn(move || {
        let (mut server_in, mut client_out) = (server, client);
        let mut chunk = [0u8; 16 * 1024];
        while let Ok(n) = server_in.read(&mut chunk) {
            if n == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(delay_ms.load(Ordering::Relaxed)));
            if client_out.write_all(&chunk[..n]).is_err() {
                break;
            }
        }
        let _ = client_out.shutdown(Shutdown::Write);
    });
}
