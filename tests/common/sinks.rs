//! Real protocol peers for action tests, on loopback in the test process: an SMTP server
//! that records the mails it accepts (refusing some recipients with the code a test
//! gives), and an HTTP server that records the requests it gets (optionally answering
//! late, or with the status a test gives for a path).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone, Default)]
pub struct Mail {
    pub from: String,
    pub to: Vec<String>,
    pub data: String,
}

/// A minimal SMTP server (RFC 5321 happy path) that keeps every message.
pub struct SmtpSink {
    pub address: SocketAddr,
    pub mails: Arc<Mutex<Vec<Mail>>>,
    /// Every recipient refused, each time it was.
    pub refused: Arc<Mutex<Vec<String>>>,
}

impl SmtpSink {
    pub fn start() -> SmtpSink {
        SmtpSink::answering(&[])
    }

    /// A sink that answers `RCPT TO` of each listed address with its code (450: greylisted).
    pub fn answering(codes: &[(&str, u16)]) -> SmtpSink {
        let codes: HashMap<String, u16> = codes
            .iter()
            .map(|(address, code)| (format!("<{address}>"), *code))
            .collect();
        let refused = Arc::new(Mutex::new(Vec::new()));
        let noted = refused.clone();
        let (address, mails) = serve("127.0.0.1:0".parse().unwrap(), move |stream| {
            smtp_session(stream, &codes, &noted)
        });
        SmtpSink {
            address,
            mails,
            refused,
        }
    }

    pub fn mails(&self) -> Vec<Mail> {
        self.mails.lock().unwrap().clone()
    }

    pub fn refused(&self) -> Vec<String> {
        self.refused.lock().unwrap().clone()
    }
}

fn smtp_session(
    stream: TcpStream,
    codes: &HashMap<String, u16>,
    refused: &Mutex<Vec<String>>,
) -> Option<Mail> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let mut writer = stream.try_clone().ok()?;
    let mut reader = BufReader::new(stream);
    let mut say = |line: &str| writer.write_all(format!("{line}\r\n").as_bytes());
    say("220 sink ESMTP").ok()?;
    let mut mail = Mail::default();
    let mut delivered = None;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).ok()? == 0 {
            return delivered;
        }
        let command = line.trim_end().to_string();
        let upper = command.to_uppercase();
        if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            say("250 sink").ok()?;
        } else if let Some(from) = upper.strip_prefix("MAIL FROM:") {
            mail.from = command[command.len() - from.len()..].trim().to_string();
            say("250 ok").ok()?;
        } else if let Some(to) = upper.strip_prefix("RCPT TO:") {
            let to = command[command.len() - to.len()..].trim().to_string();
            match codes.get(&to) {
                Some(code) => {
                    say(&format!("{code} not now")).ok()?;
                    refused.lock().unwrap().push(to);
                }
                None => {
                    say("250 ok").ok()?;
                    mail.to.push(to);
                }
            }
        } else if upper == "DATA" {
            say("354 go on").ok()?;
            let mut data = String::new();
            loop {
                line.clear();
                if reader.read_line(&mut line).ok()? == 0 || line == ".\r\n" {
                    break;
                }
                data.push_str(&line);
            }
            mail.data = data;
            delivered = Some(std::mem::take(&mut mail));
            say("250 queued").ok()?;
        } else if upper == "QUIT" {
            say("221 bye").ok()?;
            return delivered;
        } else {
            say("250 ok").ok()?;
        }
    }
}

#[derive(Debug, Clone)]
pub struct Received {
    pub head: String,
    pub body: String,
}

/// An HTTP server that keeps every request it reads, and answers it after `delay`: 200,
/// or the status given for its path.
pub struct HttpSink {
    pub address: SocketAddr,
    pub requests: Arc<Mutex<Vec<Received>>>,
}

impl HttpSink {
    pub fn start(delay: Duration) -> HttpSink {
        HttpSink::start_on("127.0.0.1:0".parse().unwrap(), delay)
    }

    /// A sink on `address`: a target that was down (`dead_address`) comes up.
    pub fn start_on(address: SocketAddr, delay: Duration) -> HttpSink {
        HttpSink::serve(address, delay, HashMap::new())
    }

    /// A sink that answers each listed path with its status, any other with 200.
    pub fn answering(statuses: &[(&str, u16)]) -> HttpSink {
        let statuses = statuses
            .iter()
            .map(|(path, status)| (path.to_string(), *status))
            .collect();
        HttpSink::serve("127.0.0.1:0".parse().unwrap(), Duration::ZERO, statuses)
    }

    fn serve(address: SocketAddr, delay: Duration, statuses: HashMap<String, u16>) -> HttpSink {
        let (address, requests) = serve(address, move |stream| {
            http_exchange(stream, delay, &statuses)
        });
        HttpSink { address, requests }
    }

    /// The requests to `path`.
    pub fn requests_to(&self, path: &str) -> usize {
        let line = format!("POST {path} ");
        self.requests()
            .iter()
            .filter(|r| r.head.starts_with(&line))
            .count()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    pub fn requests(&self) -> Vec<Received> {
        self.requests.lock().unwrap().clone()
    }
}

fn http_exchange(
    mut stream: TcpStream,
    delay: Duration,
    statuses: &HashMap<String, u16>,
) -> Option<Received> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut head = String::new();
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let length = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).ok()?;
    let path = head.split(' ').nth(1).unwrap_or("");
    let status = statuses.get(path).copied().unwrap_or(200);
    let received = Received {
        head,
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    std::thread::sleep(delay);
    let answer =
        format!("HTTP/1.1 {status} Status\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
    stream.write_all(answer.as_bytes()).ok()?;
    Some(received)
}

/// Listens on a free loopback port; runs `exchange` on each connection in its own thread
/// and keeps what it returns.
fn serve<T: Send + 'static>(
    address: SocketAddr,
    exchange: impl Fn(TcpStream) -> Option<T> + Send + Sync + 'static,
) -> (SocketAddr, Arc<Mutex<Vec<T>>>) {
    let listener = TcpListener::bind(address).unwrap();
    let address = listener.local_addr().unwrap();
    let kept = Arc::new(Mutex::new(Vec::new()));
    let shared = kept.clone();
    let exchange = Arc::new(exchange);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (shared, exchange) = (shared.clone(), exchange.clone());
            std::thread::spawn(move || {
                if let Some(item) = exchange(stream) {
                    shared.lock().unwrap().push(item);
                }
            });
        }
    });
    (address, kept)
}

/// A loopback address where nothing listens: connections are refused.
pub fn dead_address() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// A target that accepts connections and never answers (a hung webhook): it holds each
/// one open, unread, until the test ends.
pub struct SilentSink {
    pub address: SocketAddr,
    held: Arc<Mutex<Vec<TcpStream>>>,
}

impl SilentSink {
    pub fn start() -> SilentSink {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let held = Arc::new(Mutex::new(Vec::new()));
        let holding = held.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                holding.lock().unwrap().push(stream);
            }
        });
        SilentSink { address, held }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.held.lock().unwrap().len()
    }
}
