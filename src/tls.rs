//! TLS on the listener (`[server] tls_cert`, `tls_key`, `tls_client_ca`;
//! process-model.md, "Operated like nginx, part two"): the files read into one rustls
//! server configuration, TLS 1.2 and 1.3 only, HTTP/1.1.
//!
//! Owns reading and checking the PEM files. The master reads them (as root, at start and
//! at every reload, so that a renewed certificate is served by the next generation of
//! workers) and hands the result to the workers it forks, which may not be able to read
//! a key that only root may read. Building the configuration starts no thread.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

/// What a worker needs to accept TLS connections.
pub type Tls = Arc<rustls::ServerConfig>;

/// The PEM files of `[server]`: `tls_cert`, `tls_key`, `tls_client_ca`.
pub struct Files<'a> {
    pub cert: &'a Path,
    pub key: &'a Path,
    pub client_ca: Option<&'a Path>,
}

/// The listener's TLS configuration, or `None` when it serves plain HTTP.
pub fn load(files: Option<Files>) -> anyhow::Result<Option<Tls>> {
    let Some(Files {
        cert,
        key,
        client_ca,
    }) = files
    else {
        return Ok(None);
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("server.tls_cert: the TLS versions are not supported")?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for certificate in certificates(ca, "server.tls_client_ca")? {
                roots.add(certificate).with_context(|| {
                    format!(
                        "server.tls_client_ca: {} holds a bad certificate",
                        ca.display()
                    )
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                .build()
                .with_context(|| format!("server.tls_client_ca: {}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        anyhow::anyhow!(
            "server.tls_key: no private key read from {}: {e}",
            key.display()
        )
    })?;
    let mut config = builder
        .with_single_cert(certificates(cert, "server.tls_cert")?, key)
        .context("server.tls_key: the key does not match server.tls_cert, or is not usable")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(Arc::new(config)))
}

/// Every certificate of a PEM file; at least one.
fn certificates(path: &Path, key: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certificates = CertificateDer::pem_file_iter(path)
        .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("{key}: cannot read {}: {e}", path.display()))?;
    if certificates.is_empty() {
        anyhow::bail!("{key}: {} holds no PEM certificate", path.display());
    }
    Ok(certificates)
}
