//! TLS on the listener (process-model.md, "Operated like nginx, part two"), against the
//! real binary, with certificates made by `openssl` and requests made by `curl`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use common::{Daemon, SECOND, stderr, stdout, wait_for};
use nix::sys::signal::Signal;
use rustls::crypto::ring;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, StreamOwned};

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl (Debian package openssl) is installed");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        stderr(&output)
    );
}

/// A certificate authority in `dir`: `NAME.pem` and `NAME.key`.
fn authority(dir: &Path, name: &str) {
    let (pem, key) = (format!("{name}.pem"), format!("{name}.key"));
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &key,
            "-out",
            &pem,
        ],
    );
}

/// A certificate for 127.0.0.1 signed by authority `ca`: `NAME.pem` and `NAME.key`;
/// `usage` is `serverAuth` or `clientAuth`.
fn certificate(dir: &Path, name: &str, ca: &str, usage: &str) {
    let (pem, key, csr) = (
        format!("{name}.pem"),
        format!("{name}.key"),
        format!("{name}.csr"),
    );
    let extensions = format!("{name}.ext");
    std::fs::write(
        dir.join(&extensions),
        format!("subjectAltName=IP:127.0.0.1\nextendedKeyUsage={usage}\n"),
    )
    .unwrap();
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &key,
            "-out",
            &csr,
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &extensions,
            "-out",
            &pem,
        ],
    );
}

/// `curl --cacert CA https://127.0.0.1:PORT/health`, with `extra` arguments.
fn curl(daemon: &Daemon, ca: &Path, extra: &[&str]) -> Output {
    curl_paths(daemon, ca, extra, &["/health"])
}

/// `curl --cacert CA` of each of `paths` in turn (on one connection), with `extra`.
fn curl_paths(daemon: &Daemon, ca: &Path, extra: &[&str], paths: &[&str]) -> Output {
    Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "5", "--cacert"])
        .arg(ca)
        .args(extra)
        .args(
            paths
                .iter()
                .map(|path| format!("https://127.0.0.1:{}{path}", daemon.port)),
        )
        .output()
        .expect("curl (Debian package curl) is installed")
}

/// A daemon serving TLS with `server.pem` (signed by `ca`), made in its own folder.
fn daemon_with_tls(extra: &str) -> (Daemon, PathBuf) {
    let daemon = Daemon::new("");
    let dir = daemon.path("");
    authority(&dir, "ca");
    certificate(&dir, "server", "ca", "serverAuth");
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:{}\"\ntls_cert = \"server.pem\"\ntls_key = \"server.key\"\n{extra}",
        daemon.port
    );
    let text = common::config_text(daemon.port, &config);
    std::fs::write(&daemon.config, text).unwrap();
    (daemon, dir)
}

/// A TLS client on `stream` that trusts the authority in `ca`.
fn tls_client(stream: TcpStream, ca: &Path) -> StreamOwned<ClientConnection, TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(certificate.unwrap()).unwrap();
    }
    let config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let server = ServerName::try_from("127.0.0.1").unwrap();
    let connection = ClientConnection::new(Arc::new(config), server).unwrap();
    StreamOwned::new(connection, stream)
}

fn run(mut daemon: Daemon) -> Daemon {
    daemon.spawn_foreground(&[]);
    daemon.wait_ready();
    daemon
}

#[test]
fn https_is_served_to_a_client_that_trusts_the_certificate_and_plain_http_is_refused() {
    let (daemon, dir) = daemon_with_tls("");
    let daemon = run(daemon);
    let output = curl(&daemon, &dir.join("ca.pem"), &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("\"status\":\"ok\""),
        "{}",
        stdout(&output)
    );

    // Plain HTTP on the TLS port: no HTTP reply, and the daemon serves on.
    let mut stream = TcpStream::connect(daemon.address()).unwrap();
    stream.set_read_timeout(Some(5 * SECOND)).unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    assert!(
        !reply.starts_with(b"HTTP/"),
        "plain HTTP answered: {}",
        String::from_utf8_lossy(&reply)
    );
    assert!(curl(&daemon, &dir.join("ca.pem"), &[]).status.success());

    // Posts of one event over TLS (read without hyper), two on one connection.
    let ca = dir.join("ca.pem");
    let created = curl_paths(&daemon, &ca, &["-d", r#"{"type":"tls"}"#], &["/event/"]);
    assert!(stdout(&created).contains("_id"), "{}", stdout(&created));
    let posts = ["/event/tls/", "/event/tls/"];
    let posted = curl_paths(&daemon, &ca, &["-d", r#"{"a":1}"#], &posts);
    assert!(posted.status.success(), "{}", stderr(&posted));
    assert_eq!(
        stdout(&posted).matches(r#"{"_id":""#).count(),
        2,
        "{}",
        stdout(&posted)
    );
}

/// A client that pipelines posts over TLS and never reads a reply is cut at
/// `write_timeout_secs`, as over plain TCP (faults.rs): TLS takes the replies into its
/// own buffer, and only the flush, under the write deadline, sends them.
#[test]
fn a_client_that_pipelines_posts_over_tls_and_never_reads_is_cut_at_the_write_timeout() {
    let (daemon, dir) = daemon_with_tls("write_timeout_secs = 1\n[workers]\nmin = 1\nmax = 1\n");
    let daemon = run(daemon);
    let ca = dir.join("ca.pem");
    let created = curl_paths(&daemon, &ca, &["-d", r#"{"type":"tls"}"#], &["/event/"]);
    assert!(stdout(&created).contains("_id"), "{}", stdout(&created));

    let stream = common::unread_client(daemon.address());
    let client = stream.local_addr().unwrap();
    let mut tls = tls_client(stream, &ca);
    let posted = common::pipeline_posts_unread(&mut tls, "tls");
    eprintln!("{posted} posts written before the worker stopped reading");
    common::wait_cut_for_reading_nothing(&daemon, client);
    assert!(curl(&daemon, &ca, &[]).status.success());
}

#[test]
fn with_a_client_ca_a_client_without_a_certificate_is_refused() {
    let (daemon, dir) = daemon_with_tls("tls_client_ca = \"clients.pem\"\n");
    authority(&dir, "clients");
    certificate(&dir, "client", "clients", "clientAuth");
    let daemon = run(daemon);
    let ca = dir.join("ca.pem");

    let refused = curl(&daemon, &ca, &[]);
    assert!(
        !refused.status.success(),
        "served without a client certificate"
    );
    let (cert, key) = (dir.join("client.pem"), dir.join("client.key"));
    let with_certificate = [
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ];
    let served = curl(&daemon, &ca, &with_certificate);
    assert!(served.status.success(), "{}", stderr(&served));
}

#[test]
fn a_renewed_certificate_is_served_after_a_reload() {
    let (daemon, dir) = daemon_with_tls("");
    let daemon = run(daemon);
    assert!(curl(&daemon, &dir.join("ca.pem"), &[]).status.success());

    // Renewed by another authority, so that a client can tell which one is served.
    authority(&dir, "renewed-ca");
    certificate(&dir, "server", "renewed-ca", "serverAuth");
    daemon.signal(Signal::SIGHUP);
    wait_for("the renewed certificate to be served", 10 * SECOND, || {
        curl(&daemon, &dir.join("renewed-ca.pem"), &[])
            .status
            .success()
    });
    wait_for("the old workers to be gone", 10 * SECOND, || {
        !curl(&daemon, &dir.join("ca.pem"), &[]).status.success()
    });
}

#[test]
fn a_key_that_does_not_match_the_certificate_is_refused_by_configtest() {
    let (daemon, dir) = daemon_with_tls("");
    authority(&dir, "other");
    std::fs::copy(dir.join("other.key"), dir.join("server.key")).unwrap();
    let output = daemon.cli(&["configtest"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("server.tls_key"),
        "{}",
        stderr(&output)
    );
}

/// A user who may read the config but not the TLS key (root's alone) can still ask
/// `status`: only configtest, start and reload read what would fail later. Run as root by
/// `.ci/run`.
#[test]
#[ignore = "needs root"]
fn status_needs_no_access_to_the_tls_key() {
    use std::os::unix::fs::PermissionsExt;
    let (daemon, dir) = daemon_with_tls("");
    let daemon = run(daemon);
    let mode = |path: &Path, mode| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    mode(&dir, 0o755);
    mode(&daemon.config, 0o644);
    mode(&dir.join("server.pem"), 0o644);
    mode(&dir.join("server.key"), 0o600);
    mode(&daemon.path("state"), 0o755);
    let output = daemon.cli_as(65_534, &["status"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(stdout(&output).contains("running"), "{}", stdout(&output));
}
