use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

fn firing() -> Firing {
    Firing {
        id: uuid::Uuid::nil(),
        firings: 1,
        watcher: "storm".into(),
        event: "logins".into(),
        key: serde_json::json!({"ip": "10.0.0.1"}),
        rule: crate::registry::RuleKind::Threshold,
        count: 101,
        threshold: 100,
        window_secs: Some(60),
        fired_at: "2026-11-23T00:00:00Z".into(),
        text: "Event `logins` repeated 101 times in 60 s for ip=\"10.0.0.1\"".into(),
        node: None,
        crossing: None,
        degraded: false,
        resolved: false,
        figures: Default::default(),
    }
}

#[test]
fn a_command_gets_the_firing_in_its_environment_and_on_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let script = format!(
        "cat > {0}.json; echo \"$EVENTSD_WATCHER $EVENTSD_COUNT $EVENTSD_RULE\" > {0}",
        out.display()
    );
    let argv = vec!["/bin/sh".to_string(), "-c".to_string(), script];
    command(&firing(), &argv, Duration::from_secs(5)).unwrap();
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "storm 101 threshold\n"
    );
    let stdin: Firing =
        serde_json::from_slice(&std::fs::read(dir.path().join("out.json")).unwrap()).unwrap();
    assert_eq!(stdin, firing());
}

#[test]
fn a_command_is_killed_after_its_timeout() {
    let argv = vec!["/bin/sleep".to_string(), "30".to_string()];
    let started = Instant::now();
    let failure = command(&firing(), &argv, Duration::from_millis(200)).unwrap_err();
    assert!(
        matches!(failure, Failure::Permanent(ErrorClass::Command, ref m) if m.contains("killed")),
        "{failure:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// A listener that answers every request with `answer` and counts them.
fn listener(ip: &str, answer: &'static str) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    use std::io::Read;
    let listener = std::net::TcpListener::bind((ip, 0)).unwrap();
    let address = listener.local_addr().unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let counted = requests.clone();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            counted.fetch_add(1, Ordering::SeqCst);
            let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
            let _ = stream.read(&mut [0u8; 4096]);
            let _ = stream.write_all(answer.as_bytes());
        }
    });
    (address, requests)
}

const OK: &str = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

/// A name server that answers each lookup with the next address of its list.
#[derive(Debug)]
struct Rebinding {
    answers: Vec<std::net::SocketAddr>,
    lookups: Arc<AtomicUsize>,
}

impl Resolver for Rebinding {
    fn resolve(
        &self,
        _: &ureq::http::Uri,
        _: &ureq::config::Config,
        _: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let n = self.lookups.fetch_add(1, Ordering::SeqCst);
        let mut addresses = self.empty();
        addresses.push(self.answers[n.min(self.answers.len() - 1)]);
        Ok(addresses)
    }
}

fn denying(address: std::net::SocketAddr) -> Destinations {
    Destinations {
        webhook_deny: vec![ipnet::IpNet::from(address.ip())],
        ..Destinations::default()
    }
}

#[test]
fn the_address_checked_is_the_address_connected_to() {
    let (allowed, allowed_requests) = listener("127.0.0.1", OK);
    let (metadata, metadata_requests) = listener("127.0.0.2", OK);
    let lookups = Arc::new(AtomicUsize::new(0));
    let http = webhook_agent(CheckedResolver {
        lookup: Rebinding {
            // The first answer passes the check; a client that looked the name up
            // again would get the second.
            answers: vec![allowed, metadata],
            lookups: lookups.clone(),
        },
        destinations: denying(metadata),
    });
    let url = "http://rebinding.test/hook";
    webhook(&firing(), url, &Default::default(), &http).unwrap();
    assert_eq!(lookups.load(Ordering::SeqCst), 1, "one lookup a delivery");
    assert_eq!(allowed_requests.load(Ordering::SeqCst), 1);
    let failure = webhook(&firing(), url, &Default::default(), &http).unwrap_err();
    assert!(
        matches!(failure, Failure::Permanent(ErrorClass::Denied, ref m) if m.contains("actions.webhook_deny")),
        "{failure:?}"
    );
    assert_eq!(metadata_requests.load(Ordering::SeqCst), 0, "reached");
}

#[test]
fn a_request_that_cannot_be_sent_as_asked_fails_for_good() {
    let (target, _) = listener("127.0.0.1", OK);
    let http = webhook_agent(CheckedResolver {
        lookup: DefaultResolver::default(),
        destinations: Destinations::default(),
    });
    let headers = [("Content-Length".to_string(), "2".to_string())].into();
    let url = format!("http://{target}/secret-path?token=x");
    let failure = webhook(&firing(), &url, &headers, &http).unwrap_err();
    let Failure::Permanent(_, message) = failure else {
        panic!("{failure:?}");
    };
    assert!(message.contains("cannot be sent as asked"), "{message}");
    assert!(
        !message.contains("secret") && !message.contains("token"),
        "{message}"
    );
}

#[test]
fn values_from_events_cannot_mention_or_link_in_slack() {
    let mut forged = firing();
    forged.text = "for user=\"<!channel> <https://evil|Reset> & more\"".into();
    assert_eq!(
        with_slack_text(&forged).text,
        "for user=\"&lt;!channel&gt; &lt;https://evil|Reset&gt; &amp; more\""
    );
}

#[test]
fn the_mail_body_names_type_key_count_and_window() {
    let body = email_body(&firing());
    for part in [
        "logins",
        "10.0.0.1",
        "101",
        "threshold 100",
        "60 s",
        "storm",
    ] {
        assert!(body.contains(part), "{part} missing from {body}");
    }
}

/// Each rule's body states its own figures, never threshold's.
#[test]
fn the_mail_body_states_the_rule_and_its_figures_in_its_words() {
    let mut spike = firing();
    spike.rule = crate::registry::RuleKind::Spike;
    spike.figures.spike.current = Some(96);
    spike.figures.spike.previous = Some(12);
    spike.figures.spike.ratio = Some(5.0);
    let body = email_body(&spike);
    for part in [
        "Rule: spike",
        "Current window: 96 events",
        "Previous window: 12 events",
        "Ratio: 5",
        "Window: the last 60 s",
    ] {
        assert!(body.contains(part), "{part} missing from {body}");
    }
    assert!(!body.contains("threshold"), "{body}");
    let mut flatline = firing();
    flatline.rule = crate::registry::RuleKind::Flatline;
    flatline.resolved = true;
    let body = email_body(&flatline);
    assert!(body.contains("(expected at least 100)"), "{body}");
    assert!(body.contains("Resolved: yes"), "{body}");
}
