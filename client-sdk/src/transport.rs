//! Opening a byte stream to an endpoint and handing it to the pipeline.
//!
//! Everything above this module works on any `AsyncRead + AsyncWrite` stream: TCP, a
//! Unix socket, TLS over TCP, or a QUIC connection's one bidirectional stream.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};

use crate::config::{ClientConfig, Endpoint};
use crate::error::{ConfigError, Error};
use crate::pipeline::Connection;

/// What connecting needs beyond the endpoint: the TLS configuration, built once, and
/// the QUIC client sockets (one per address family, opened on first use and shared by
/// every QUIC connection of the client).
pub(crate) struct Connector {
    client_name: String,
    tls: Option<TlsClient>,
    quic: Option<quinn::ClientConfig>,
    quic_v4: Mutex<Option<quinn::Endpoint>>,
    quic_v6: Mutex<Option<quinn::Endpoint>>,
}

/// The client TLS configuration, built once. Only the server name is kept from
/// [`crate::TlsConfig`], not a second copy of the client's private key.
struct TlsClient {
    server_name: Option<String>,
    rustls: Arc<rustls::ClientConfig>,
}

impl TlsClient {
    /// The name to verify in the certificate of `host`.
    fn name<'a>(&'a self, host: &'a str) -> &'a str {
        self.server_name.as_deref().unwrap_or(host)
    }
}

impl Connector {
    /// A connector for `config` (already validated).
    pub(crate) fn new(config: &ClientConfig) -> Result<Self, Error> {
        let tls = match &config.tls {
            Some(tls) => {
                Some(TlsClient { server_name: tls.server_name_override(), rustls: Arc::new(tls.rustls()?) })
            }
            None => None,
        };
        let quic = match &tls {
            Some(TlsClient { rustls, .. })
                if config.endpoints.iter().any(|e| matches!(e, Endpoint::Quic { .. })) =>
            {
                let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(Arc::clone(rustls))
                    .map_err(|e| ConfigError { key: "tls", reason: e.to_string() })?;
                Some(quinn::ClientConfig::new(Arc::new(crypto)))
            }
            _ => None,
        };
        Ok(Self {
            client_name: config.client_name.clone(),
            tls,
            quic,
            quic_v4: Mutex::new(None),
            quic_v6: Mutex::new(None),
        })
    }

    /// Connects to `endpoint` and performs the HELLO exchange, all before `deadline`.
    pub(crate) async fn connect(&self, endpoint: &Endpoint, deadline: Instant) -> Result<Connection, Error> {
        match timeout_at(deadline, self.open(endpoint)).await {
            Ok(result) => result,
            Err(_elapsed) => Err(Error::Connect {
                endpoint: endpoint.clone(),
                source: io::Error::new(io::ErrorKind::TimedOut, "connect and HELLO timed out"),
            }),
        }
    }

    async fn open(&self, endpoint: &Endpoint) -> Result<Connection, Error> {
        let failed = |source| Error::Connect { endpoint: endpoint.clone(), source };
        let client_name = self.client_name.as_str();
        match endpoint {
            Endpoint::Tcp { host, port } => {
                let stream = tcp(host, *port).await.map_err(failed)?;
                Connection::handshake(stream, endpoint.clone(), client_name).await
            }
            Endpoint::Tls { host, port } => {
                let tls = self.tls.as_ref().ok_or_else(|| failed(no_tls()))?;
                let name = server_name(tls.name(host)).map_err(failed)?;
                let stream = tcp(host, *port).await.map_err(failed)?;
                let connector = tokio_rustls::TlsConnector::from(Arc::clone(&tls.rustls));
                let stream = connector.connect(name, stream).await.map_err(failed)?;
                Connection::handshake(stream, endpoint.clone(), client_name).await
            }
            Endpoint::Quic { host, port } => {
                let stream = self.quic(host, *port).await.map_err(failed)?;
                Connection::handshake(stream, endpoint.clone(), client_name).await
            }
            #[cfg(unix)]
            Endpoint::Unix(path) => {
                let stream = tokio::net::UnixStream::connect(path).await.map_err(failed)?;
                Connection::handshake(stream, endpoint.clone(), client_name).await
            }
            #[cfg(not(unix))]
            Endpoint::Unix(_) => {
                Err(failed(io::Error::new(io::ErrorKind::Unsupported, "unix sockets need a unix platform")))
            }
        }
    }

    /// A QUIC connection to `host:port` and its one bidirectional stream.
    async fn quic(
        &self,
        host: &str,
        port: u16,
    ) -> io::Result<tokio::io::Join<quinn::RecvStream, quinn::SendStream>> {
        let (Some(tls), Some(config)) = (&self.tls, &self.quic) else { return Err(no_tls()) };
        let addr = tokio::net::lookup_host((host, port))
            .await?
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{host} has no address")))?;
        let endpoint = self.quic_endpoint(addr)?;
        let connecting =
            endpoint.connect_with(config.clone(), addr, tls.name(host)).map_err(io::Error::other)?;
        let connection = connecting.await?;
        let (send, recv) = connection.open_bi().await?;
        Ok(tokio::io::join(recv, send))
    }

    fn quic_endpoint(&self, remote: SocketAddr) -> io::Result<quinn::Endpoint> {
        let (slot, local) = match remote {
            SocketAddr::V4(_) => (&self.quic_v4, SocketAddr::from(([0, 0, 0, 0], 0))),
            SocketAddr::V6(_) => (&self.quic_v6, SocketAddr::from(([0u16; 8], 0))),
        };
        let mut slot = slot.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(endpoint) = slot.as_ref() {
            return Ok(endpoint.clone());
        }
        let endpoint = quinn::Endpoint::client(local)?;
        *slot = Some(endpoint.clone());
        Ok(endpoint)
    }
}

async fn tcp(host: &str, port: u16) -> io::Result<TcpStream> {
    let stream = TcpStream::connect((host, port)).await?;
    // Requests are small and latency-bound; the writer already batches.
    stream.set_nodelay(true)?;
    Ok(stream)
}

fn server_name(name: &str) -> io::Result<ServerName<'static>> {
    ServerName::try_from(name.to_owned())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("server name {name:?}: {e}")))
}

fn no_tls() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "tls:// and quic:// endpoints need ClientConfig::tls")
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("tls_server_name", &self.tls.as_ref().map(|tls| &tls.server_name))
            .finish_non_exhaustive()
    }
}
