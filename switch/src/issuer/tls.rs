//! TLS on issuer links (DESIGN 2.6): rustls, TLS 1.2 and 1.3. The issuer's certificate must
//! chain to `ca` and name `server_name` (by default the address's IP); with `cert` and `key`
//! the switch presents its own certificate (mutual TLS). Read once at start: an unreadable or
//! invalid file stops the start with the key, file and problem named.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{PrivateKeyDer, ServerName};
use tokio_rustls::TlsConnector;

use super::IssuerSettings;
use crate::acquirer::tls::certificates;

/// `[issuers.tls]`, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuerTls {
    /// PEM certificates the issuer's certificate must chain to.
    pub ca: PathBuf,
    /// The switch's client certificate chain and key (mutual TLS), both or neither.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// The name the issuer's certificate must carry; by default its address's IP.
    pub server_name: Option<String>,
}

/// What a link needs to speak TLS to its issuer.
#[derive(Clone)]
pub struct Client {
    pub connector: TlsConnector,
    pub server_name: ServerName<'static>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// The TLS client of issuer `settings` (`None` without `[issuers.tls]`), or an error naming the
/// issuer's key, the file and the problem.
pub fn client(index: usize, settings: &IssuerSettings) -> Result<Option<Client>, String> {
    let Some(tls) = &settings.tls else {
        return Ok(None);
    };
    let key_name = |k: &str| format!("issuers[{index}].tls.{k}");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for certificate in certificates(&key_name("ca"), &tls.ca)? {
        roots.add(certificate).map_err(|error| {
            format!(
                "{}: {}: not a CA certificate: {error}",
                key_name("ca"),
                tls.ca.display()
            )
        })?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|error| format!("{}: {error}", key_name("")))?
        .with_root_certificates(roots);
    let config = match (&tls.cert, &tls.key) {
        (None, None) => builder.with_no_client_auth(),
        (Some(cert), Some(key)) => {
            let chain = certificates(&key_name("cert"), cert)?;
            std::fs::metadata(key).map_err(|error| {
                format!(
                    "{}: {}: cannot read: {error}",
                    key_name("key"),
                    key.display()
                )
            })?;
            let private = PrivateKeyDer::from_pem_file(key).map_err(|error| {
                format!(
                    "{}: {}: no usable private key ({error})",
                    key_name("key"),
                    key.display()
                )
            })?;
            builder
                .with_client_auth_cert(chain, private)
                .map_err(|error| {
                    format!(
                        "{}: {}: not usable with the certificate of {}: {error}",
                        key_name("key"),
                        key.display(),
                        cert.display()
                    )
                })?
        }
        _ => {
            return Err(format!(
                "{}: cert and key go together (mutual TLS), or neither",
                key_name("cert")
            ));
        }
    };
    let server_name = match &tls.server_name {
        Some(name) => ServerName::try_from(name.clone())
            .map_err(|error| format!("{}: {name:?}: {error}", key_name("server_name")))?,
        None => ServerName::IpAddress(settings.address.ip().into()),
    };
    Ok(Some(Client {
        connector: TlsConnector::from(Arc::new(config)),
        server_name,
    }))
}
