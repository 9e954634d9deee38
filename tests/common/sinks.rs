//! Real protocol peers for action tests, on loopback in the test process: an SMTP server
//! that records the mails it accepts and every command it reads (answering a recipient
//! with the codes a test gives, in turn; offering AUTH when asked, never STARTTLS), and an
//! HTTP server that records the requests it gets (optionally answering late, or a path
//! with the statuses a test gives, in turn: a sink that can be told to fail).

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Answers in turn per key (a recipient, a path): each answer is used once, the last one
/// for good; a key not listed gets the default.
#[derive(Clone, Default)]
struct InTurn(Arc<Mutex<HashMap<String, VecDeque<u16>>>>);

impl InTurn {
    fn new(answers: &[(&str, &[u16])], key: impl Fn(&str) -> String) -> InTurn {
        let answers = answers
            .iter()
            .map(|(name, codes)| (key(name), codes.iter().copied().collect()))
            .collect();
        InTurn(Arc::new(Mutex::new(answers)))
    }

    fn next(&self, key: &str, default: u16) -> u16 {
        let mut answers = self.0.lock().unwrap();
        match answers.get_mut(key) {
            Some(codes) if codes.len() > 1 => codes.pop_front().unwrap(),
            Some(codes) => codes.front().copied().unwrap_or(default),
            None => default,
        }
    }

    fn set(&self, key: String, codes: &[u16]) {
        self.0
            .lock()
            .unwrap()
            .insert(key, codes.iter().copied().collect());
    }
}

#[derive(Debug, Clone, Default)]
pub struct Mail {
    pub from: String,
    pub to: Vec<String>,
    pub data: String,
}

/// A minimal SMTP server (RFC 5321) that keeps every message, and every command line it
/// read. It never offers STARTTLS: a relay where TLS cannot be had.
pub struct SmtpSink {
    pub address: SocketAddr,
    pub mails: Arc<Mutex<Vec<Mail>>>,
    /// Every recipient refused, each time it was.
    pub refused: Arc<Mutex<Vec<String>>>,
    /// Every command line read, in order, over all sessions.
    pub commands: Arc<Mutex<Vec<String>>>,
}

/// What an `SmtpSink` says besides the happy path.
#[derive(Clone, Default)]
struct SmtpAnswers {
    /// `RCPT TO` codes by `<address>`; 250 accepts.
    recipients: InTurn,
    /// Whether EHLO offers `AUTH PLAIN LOGIN` (a relay that takes credentials).
    offers_auth: bool,
}

impl SmtpSink {
    pub fn start() -> SmtpSink {
        SmtpSink::answering(&[])
    }

    /// The `[smtp]` section of a daemon that relays its mail through this sink.
    pub fn config(&self) -> String {
        format!(
            "[smtp]\nhost = \"127.0.0.1\"\nport = {}\nfrom = \"eventsd@test.example\"\n",
            self.address.port()
        )
    }

    /// A sink that answers `RCPT TO` of each listed address with its code (450: greylisted).
    pub fn answering(codes: &[(&str, u16)]) -> SmtpSink {
        let in_turn: Vec<(&str, [u16; 1])> = codes.iter().map(|(a, c)| (*a, [*c])).collect();
        let in_turn: Vec<(&str, &[u16])> = in_turn.iter().map(|(a, c)| (*a, &c[..])).collect();
        SmtpSink::answering_in_turn(&in_turn)
    }

    /// A sink that answers `RCPT TO` of each listed address with its codes in turn, the
    /// last one for good (`[450, 250]`: greylisted once, then accepted).
    pub fn answering_in_turn(codes: &[(&str, &[u16])]) -> SmtpSink {
        SmtpSink::serve(SmtpAnswers {
            recipients: InTurn::new(codes, |address| format!("<{address}>")),
            offers_auth: false,
        })
    }

    /// A relay that offers AUTH but not STARTTLS: credentials could only go in clear.
    pub fn offering_auth_without_tls() -> SmtpSink {
        SmtpSink::serve(SmtpAnswers {
            offers_auth: true,
            ..SmtpAnswers::default()
        })
    }

    fn serve(answers: SmtpAnswers) -> SmtpSink {
        let refused = Arc::new(Mutex::new(Vec::new()));
        let commands = Arc::new(Mutex::new(Vec::new()));
        let (noted, heard) = (refused.clone(), commands.clone());
        let (address, mails) = serve("127.0.0.1:0".parse().unwrap(), move |stream| {
            smtp_session(stream, &answers, &noted, &heard)
        });
        SmtpSink {
            address,
            mails,
            refused,
            commands,
        }
    }

    pub fn mails(&self) -> Vec<Mail> {
        self.mails.lock().unwrap().clone()
    }

    pub fn refused(&self) -> Vec<String> {
        self.refused.lock().unwrap().clone()
    }

    /// The times `address` was refused.
    pub fn refusals_of(&self, address: &str) -> usize {
        let address = format!("<{address}>");
        self.refused().iter().filter(|r| **r == address).count()
    }

    /// Every command line read, in order.
    pub fn commands(&self) -> Vec<String> {
        self.commands.lock().unwrap().clone()
    }
}

fn smtp_session(
    stream: TcpStream,
    answers: &SmtpAnswers,
    refused: &Mutex<Vec<String>>,
    commands: &Mutex<Vec<String>>,
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
        commands.lock().unwrap().push(command.clone());
        let upper = command.to_uppercase();
        if upper.starts_with("EHLO") && answers.offers_auth {
            say("250-sink").ok()?;
            say("250 AUTH PLAIN LOGIN").ok()?;
        } else if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            say("250 sink").ok()?;
        } else if upper.starts_with("AUTH") {
            say("235 accepted").ok()?;
        } else if let Some(from) = upper.strip_prefix("MAIL FROM:") {
            mail.from = command[command.len() - from.len()..].trim().to_string();
            say("250 ok").ok()?;
        } else if let Some(to) = upper.strip_prefix("RCPT TO:") {
            let to = command[command.len() - to.len()..].trim().to_string();
            match answers.recipients.next(&to, 250) {
                250 => {
                    say("250 ok").ok()?;
                    mail.to.push(to);
                }
                code => {
                    say(&format!("{code} not now")).ok()?;
                    refused.lock().unwrap().push(to);
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
/// or the statuses given for its path, in turn.
pub struct HttpSink {
    pub address: SocketAddr,
    pub requests: Arc<Mutex<Vec<Received>>>,
    statuses: InTurn,
}

impl HttpSink {
    pub fn start(delay: Duration) -> HttpSink {
        HttpSink::start_on("127.0.0.1:0".parse().unwrap(), delay)
    }

    /// A sink on `address`: a target that was down (`dead_address`) comes up.
    pub fn start_on(address: SocketAddr, delay: Duration) -> HttpSink {
        HttpSink::serve(address, delay, InTurn::default())
    }

    /// A sink that answers each listed path with its status, any other with 200.
    pub fn answering(statuses: &[(&str, u16)]) -> HttpSink {
        let sink = HttpSink::answering_in_turn(&[]);
        for (path, status) in statuses {
            sink.set_statuses(path, &[*status]);
        }
        sink
    }

    /// A sink that answers each listed path with its statuses in turn, the last one for
    /// good (`[503, 200]`: fails once, then takes it); any other path with 200.
    pub fn answering_in_turn(statuses: &[(&str, &[u16])]) -> HttpSink {
        let statuses = InTurn::new(statuses, str::to_string);
        HttpSink::serve("127.0.0.1:0".parse().unwrap(), Duration::ZERO, statuses)
    }

    /// From now on, `path` is answered with `statuses` in turn.
    pub fn set_statuses(&self, path: &str, statuses: &[u16]) {
        self.statuses.set(path.to_string(), statuses);
    }

    fn serve(address: SocketAddr, delay: Duration, statuses: InTurn) -> HttpSink {
        let answers = statuses.clone();
        let (address, requests) = serve(address, move |stream| {
            http_exchange(stream, delay, &answers)
        });
        HttpSink {
            address,
            requests,
            statuses,
        }
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

fn http_exchange(mut stream: TcpStream, delay: Duration, statuses: &InTurn) -> Option<Received> {
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
    let status = statuses.next(path, 200);
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

/// A loopback address where nothing listens: connections are refused. Its port comes
/// from `free_port`, below the ephemeral range where the sinks' and clients' port-0
/// binds land: no sink of a parallel test takes it meanwhile.
pub fn dead_address() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], super::free_port()))
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
