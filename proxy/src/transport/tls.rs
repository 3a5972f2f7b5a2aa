//! TLS 1.3 over TCP (rustls, *ring* provider), and the certificate loading and server
//! configuration that the QUIC listener shares.
//!
//! Only TLS 1.3 is offered (the HTTP front ends may add TLS 1.2, see
//! [`Material::http_server_config`]). With a client CA configured, client certificates are
//! verified against it (chain, validity period, key usage); `client_auth` says whether
//! a client without one is refused or served as anonymous. The live configuration sits
//! behind an [`ArcSwap`], so a certificate reload changes what new connections get
//! while open ones keep the session they negotiated.

use std::fs::File;
use std::io::{self, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;

use super::{Accepted, Acceptor, Handshake};
use crate::access::identity::Identity;
use crate::config::{ClientAuth, TlsConfig};

pub use keymux_protocol::ALPN;

/// Why certificates could not be loaded or a TLS configuration built. Messages name
/// files, never key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read or holds no usable PEM item.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// rustls refused the certificate, key or verifier.
    #[error("TLS configuration: {0}")]
    Config(String),
}

fn file_error(path: &Path, message: impl ToString) -> TlsError {
    TlsError::File { path: path.to_owned(), message: message.to_string() }
}

/// The *ring* crypto provider every keymux TLS configuration uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads every certificate in a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let reader = BufReader::new(File::open(path).map_err(|e| file_error(path, e))?);
    let certs = CertificateDer::pem_reader_iter(reader)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, e))?;
    if certs.is_empty() {
        return Err(file_error(path, "no CERTIFICATE in the file"));
    }
    Ok(certs)
}

/// Reads the first private key (PKCS#8, PKCS#1 or SEC1) in a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| file_error(path, format!("no usable private key: {e}")))
}

/// The modification times and sizes of a configuration's files: reload when it changes.
pub fn fingerprint(config: &TlsConfig) -> Vec<Option<(SystemTime, u64)>> {
    [Some(&config.cert), Some(&config.key), config.client_ca.as_ref()]
        .into_iter()
        .flatten()
        .map(|path| std::fs::metadata(path).ok().and_then(|m| Some((m.modified().ok()?, m.len()))))
        .collect()
}

/// The `[tls]` files, read once and shared by the TLS and QUIC listeners.
pub struct Material {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_roots: Option<Arc<RootCertStore>>,
}

impl Material {
    /// Reads the certificate chain and key, and the client CA when any of `client_auths`
    /// asks for client certificates.
    pub fn load(config: &TlsConfig, client_auths: &[ClientAuth]) -> Result<Self, TlsError> {
        let chain = load_certs(&config.cert)?;
        let key = load_key(&config.key)?;
        let client_roots = match &config.client_ca {
            Some(ca) if client_auths.iter().any(|auth| *auth != ClientAuth::None) => {
                let mut roots = RootCertStore::empty();
                for cert in load_certs(ca)? {
                    roots.add(cert).map_err(|e| file_error(ca, e))?;
                }
                Some(Arc::new(roots))
            }
            _ => None,
        };
        Ok(Self { chain, key, client_roots })
    }

    /// A TLS 1.3 server configuration asking for client certificates as `client_auth`
    /// says, and offering ALPN `keymux/1`.
    pub fn server_config(&self, client_auth: ClientAuth) -> Result<ServerConfig, TlsError> {
        self.build(client_auth, &[&rustls::version::TLS13], vec![ALPN.to_vec()])
    }

    /// The configuration of an HTTP front end's listener: ALPN `h2` and `http/1.1`,
    /// TLS 1.3, and TLS 1.2 as well when `allow_tls12` (AWS XKS clients need it).
    pub fn http_server_config(
        &self,
        client_auth: ClientAuth,
        allow_tls12: bool,
    ) -> Result<ServerConfig, TlsError> {
        let versions: &[&'static rustls::SupportedProtocolVersion] = if allow_tls12 {
            &[&rustls::version::TLS13, &rustls::version::TLS12]
        } else {
            &[&rustls::version::TLS13]
        };
        self.build(client_auth, versions, vec![b"h2".to_vec(), b"http/1.1".to_vec()])
    }

    fn build(
        &self,
        client_auth: ClientAuth,
        versions: &[&'static rustls::SupportedProtocolVersion],
        alpn: Vec<Vec<u8>>,
    ) -> Result<ServerConfig, TlsError> {
        let verifier: Option<Arc<dyn ClientCertVerifier>> = match (client_auth, &self.client_roots) {
            (ClientAuth::None, _) => None,
            (_, None) => return Err(TlsError::Config("client certificates need tls.client_ca".into())),
            (auth, Some(roots)) => {
                let builder = WebPkiClientVerifier::builder_with_provider(Arc::clone(roots), provider());
                let builder =
                    if auth == ClientAuth::Optional { builder.allow_unauthenticated() } else { builder };
                Some(builder.build().map_err(|e| TlsError::Config(e.to_string()))?)
            }
        };
        let builder = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(versions)
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let builder = match verifier {
            Some(verifier) => builder.with_client_cert_verifier(verifier),
            None => builder.with_no_client_auth(),
        };
        let mut server = builder
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| TlsError::Config(e.to_string()))?;
        server.alpn_protocols = alpn;
        Ok(server)
    }
}

/// The identity in a verified peer chain (its first certificate), or anonymous.
pub fn identity_of(chain: Option<&[CertificateDer<'_>]>) -> io::Result<Identity> {
    match chain.and_then(<[_]>::first) {
        Some(leaf) => Identity::from_certificate(leaf).map_err(io::Error::other),
        None => Ok(Identity::anonymous()),
    }
}

/// A TLS 1.3 listener whose configuration can be swapped while it runs.
pub struct TlsAcceptor {
    listener: TcpListener,
    config: Arc<ArcSwap<ServerConfig>>,
}

impl TlsAcceptor {
    /// Binds `addr`, serving `config` (shared with whoever reloads it).
    pub async fn bind(addr: SocketAddr, config: Arc<ArcSwap<ServerConfig>>) -> io::Result<Self> {
        Ok(Self { listener: TcpListener::bind(addr).await?, config })
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

impl Acceptor for TlsAcceptor {
    type Handshake = TlsHandshake;

    async fn accept(&mut self) -> io::Result<Accepted<TlsHandshake>> {
        let (stream, peer) = self.listener.accept().await?;
        stream.set_nodelay(true)?;
        let handshake = TlsHandshake { stream, config: self.config.load_full() };
        Ok(Accepted { handshake, peer: peer.to_string(), ip: Some(peer.ip()) })
    }

    fn name(&self) -> &'static str {
        "tls"
    }
}

/// An accepted TCP connection and the configuration current when it arrived.
pub struct TlsHandshake {
    stream: TcpStream,
    config: Arc<ServerConfig>,
}

impl Handshake for TlsHandshake {
    type Stream = TlsStream<TcpStream>;

    async fn finish(self) -> io::Result<(Self::Stream, Identity)> {
        let stream = tokio_rustls::TlsAcceptor::from(self.config).accept(self.stream).await?;
        let identity = identity_of(stream.get_ref().1.peer_certificates())?;
        Ok((stream, identity))
    }
}
