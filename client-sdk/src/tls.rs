//! TLS settings for `tls://` and `quic://` endpoints: which CA to trust, an optional
//! client certificate for mutual TLS, and the name to verify in the server's
//! certificate.
//!
//! Only TLS 1.3 is offered (QUIC requires it, and keymux servers accept nothing
//! else), with the *ring* crypto provider and ALPN `keymux/1`.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use keymux_protocol::ALPN;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::ConfigError;

/// Trust anchors, client certificate and server name for TLS and QUIC.
///
/// ```no_run
/// use keymux_client::{ClientConfig, TlsConfig};
///
/// # fn demo() -> Result<(), keymux_client::ConfigError> {
/// let tls = TlsConfig::from_ca_file("/etc/keymux/ca.pem")?
///     .with_client_cert_files("/etc/keymux/client.pem", "/etc/keymux/client.key")?;
/// let mut config = ClientConfig::new(vec!["tls://keymux.internal:7443".parse().unwrap()]);
/// config.tls = Some(tls);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct TlsConfig {
    roots: Vec<CertificateDer<'static>>,
    client_cert: Option<(Vec<CertificateDer<'static>>, Arc<PrivateKeyDer<'static>>)>,
    server_name: Option<String>,
}

fn invalid(key: &'static str, reason: impl fmt::Display) -> ConfigError {
    ConfigError { key, reason: reason.to_string() }
}

fn certs_from_pem(key: &'static str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let certs =
        CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>().map_err(|e| invalid(key, e))?;
    if certs.is_empty() {
        return Err(invalid(key, "no CERTIFICATE in the PEM"));
    }
    Ok(certs)
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|e| invalid(key, format!("{}: {e}", path.display())))
}

impl TlsConfig {
    /// Trusts the CA certificate(s) in `pem`.
    pub fn from_ca_pem(pem: &[u8]) -> Result<Self, ConfigError> {
        Ok(Self { roots: certs_from_pem("tls.ca", pem)?, client_cert: None, server_name: None })
    }

    /// Trusts the CA certificate(s) in the PEM file at `path`.
    pub fn from_ca_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        Self::from_ca_pem(&read("tls.ca", path.as_ref())?)
    }

    /// Presents this client certificate chain (leaf first) and private key, for
    /// mutual TLS.
    pub fn with_client_cert_pem(mut self, cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, ConfigError> {
        let chain = certs_from_pem("tls.client_cert", cert_pem)?;
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| invalid("tls.client_key", e))?;
        self.client_cert = Some((chain, Arc::new(key)));
        Ok(self)
    }

    /// [`TlsConfig::with_client_cert_pem`] from files.
    pub fn with_client_cert_files(
        self,
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<Self, ConfigError> {
        let cert = read("tls.client_cert", cert.as_ref())?;
        let key = read("tls.client_key", key.as_ref())?;
        self.with_client_cert_pem(&cert, &key)
    }

    /// Verifies the server certificate against `name` instead of the endpoint's host
    /// (for connecting by IP address to a server whose certificate names a host).
    pub fn with_server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// The name to verify instead of each endpoint's host, if one was set.
    pub(crate) fn server_name_override(&self) -> Option<String> {
        self.server_name.clone()
    }

    /// The rustls client configuration: TLS 1.3 only, ALPN `keymux/1`.
    pub(crate) fn rustls(&self) -> Result<rustls::ClientConfig, ConfigError> {
        let mut roots = RootCertStore::empty();
        for cert in &self.roots {
            roots.add(cert.clone()).map_err(|e| invalid("tls.ca", e))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| invalid("tls", e))?
            .with_root_certificates(roots);
        let mut config = match &self.client_cert {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain.clone(), key.clone_key())
                .map_err(|e| invalid("tls.client_cert", e))?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![ALPN.to_vec()];
        Ok(config)
    }
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("roots", &self.roots.len())
            .field("client_cert", &self.client_cert.is_some())
            .field("server_name", &self.server_name)
            .finish()
    }
}
