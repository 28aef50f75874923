//! TLS on the acquirer listener (DESIGN 2.6): rustls, TLS 1.2 and 1.3, the certificate chain and
//! key of `[tls]`, and with `client_ca` mutual TLS (a client certificate chaining to that CA is
//! required). A client certificate's subject common name is what `[[acquirers]]
//! client_cert_cn` binds a connection by.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ServerConnection, WebPkiClientVerifier};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsSettings;

/// What a session needs of `[tls]`.
#[derive(Clone)]
pub struct Listener {
    pub acceptor: TlsAcceptor,
    pub handshake_timeout: std::time::Duration,
    /// A place for each handshake under way (`tls.handshakes_max`).
    pub handshakes: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

/// The listener's TLS for `settings`, or an error naming the key, the file and the problem.
pub fn listener(settings: &TlsSettings) -> Result<Listener, String> {
    Ok(Listener {
        acceptor: acceptor(settings)?,
        handshake_timeout: settings.handshake_timeout,
        handshakes: Arc::new(tokio::sync::Semaphore::new(settings.handshakes_max)),
    })
}

/// The acceptor for `settings`, or an error naming the key, the file and the problem.
fn acceptor(settings: &TlsSettings) -> Result<TlsAcceptor, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certificates("tls.cert", &settings.cert)?;
    std::fs::metadata(&settings.key)
        .map_err(|error| format!("tls.key: {}: cannot read: {error}", settings.key.display()))?;
    let key = PrivateKeyDer::from_pem_file(&settings.key).map_err(|error| {
        format!(
            "tls.key: {}: no usable private key ({error})",
            settings.key.display()
        )
    })?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|error| format!("tls: {error}"))?;
    let builder = match &settings.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for certificate in certificates("tls.client_ca", path)? {
                roots.add(certificate).map_err(|error| {
                    format!(
                        "tls.client_ca: {}: not a CA certificate: {error}",
                        path.display()
                    )
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|error| format!("tls.client_ca: {}: {error}", path.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder.with_single_cert(chain, key).map_err(|error| {
        format!(
            "tls.key: {}: not usable with the certificate of {} (a key that does not go with it, or of a kind not supported): {error}",
            settings.key.display(),
            settings.cert.display()
        )
    })?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Every certificate of a PEM file (at least one).
pub(crate) fn certificates(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let text = std::fs::read(path)
        .map_err(|error| format!("{key}: {}: cannot read: {error}", path.display()))?;
    let certificates = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| format!("{key}: {}: not PEM certificates: {error}", path.display()))?;
    if certificates.is_empty() {
        return Err(format!("{key}: {}: no certificate in it", path.display()));
    }
    Ok(certificates)
}

/// The subject common name of the client's certificate: `Ok(None)` when it sent none; an
/// error when it sent one that does not carry exactly one common name in a text string type
/// (tools disagree on which of several names counts, so none is trusted).
pub fn peer_common_name(connection: &ServerConnection) -> Result<Option<String>, String> {
    let Some(certificate) = connection.peer_certificates().and_then(|c| c.first()) else {
        return Ok(None);
    };
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate.as_ref())
        .map_err(|error| format!("unreadable client certificate: {error}"))?;
    let names: Vec<_> = parsed.subject().iter_common_name().collect();
    let [name] = names.as_slice() else {
        return Err(format!(
            "the client certificate has {} subject common names, not one",
            names.len()
        ));
    };
    let name = name
        .as_str()
        .map_err(|_| "the client certificate's common name is not a text string".to_owned())?;
    Ok(Some(name.to_owned()))
}
