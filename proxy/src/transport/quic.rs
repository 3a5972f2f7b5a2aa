//! QUIC (quinn, *ring* provider): ALPN `keymux/1`, one long-lived bidirectional stream
//! per connection, opened by the client, carrying the same frames as TCP through the
//! same connection loop.
//!
//! One stream suffices because requests are already multiplexed by id within it, and
//! the connection loop's per-connection backpressure then applies unchanged; more
//! connections, not more streams, spread load over the server's cores. The server
//! therefore allows one bidirectional stream and no unidirectional ones. 0-RTT is off
//! unless `quic.enable_0rtt` is set (see its caveat).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::QuicServerConfig;
use quinn::{Endpoint, IdleTimeout, Incoming, RecvStream, SendStream, VarInt};
use tokio::io::Join;

use super::tls::{TlsError, identity_of};
use super::{Accepted, Acceptor, Handshake};
use crate::access::identity::Identity;
use crate::config::AddressValidation;

/// The byte stream of a QUIC connection: its one bidirectional stream. The streams keep
/// their connection alive.
pub type QuicStream = Join<RecvStream, SendStream>;

/// A quinn server configuration over `tls` (made by [`super::tls::server_config`]):
/// one bidirectional stream per connection, `idle_timeout` as QUIC's idle timeout
/// (zero: none), 0-RTT only when `enable_0rtt`.
pub fn server_config(
    mut tls: rustls::ServerConfig,
    idle_timeout: Duration,
    enable_0rtt: bool,
) -> Result<quinn::ServerConfig, TlsError> {
    // QUIC allows only 0 (no early data) or u32::MAX.
    tls.max_early_data_size = if enable_0rtt { u32::MAX } else { 0 };
    let crypto = QuicServerConfig::try_from(tls).map_err(|e| TlsError::Config(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let transport = Arc::get_mut(&mut config.transport).expect("a fresh transport config is not shared");
    transport
        .max_concurrent_bidi_streams(VarInt::from_u32(1))
        .max_concurrent_uni_streams(VarInt::from_u32(0));
    let idle = (!idle_timeout.is_zero()).then(|| IdleTimeout::try_from(idle_timeout)).transpose();
    transport.max_idle_timeout(idle.map_err(|e| TlsError::Config(format!("idle timeout: {e}")))?);
    Ok(config)
}

/// A QUIC listener.
pub struct QuicAcceptor {
    endpoint: Endpoint,
    address_validation: AddressValidation,
}

impl QuicAcceptor {
    /// Binds the UDP address `addr` with `config`, asking clients to prove their
    /// address with a Retry as `address_validation` says.
    pub fn bind(
        addr: SocketAddr,
        config: quinn::ServerConfig,
        address_validation: AddressValidation,
    ) -> io::Result<Self> {
        Ok(Self { endpoint: Endpoint::server(config, addr)?, address_validation })
    }

    /// The endpoint, to swap its configuration on certificate reload.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }
}

impl Acceptor for QuicAcceptor {
    type Handshake = QuicHandshake;

    async fn accept(&mut self) -> io::Result<Accepted<QuicHandshake>> {
        match self.endpoint.accept().await {
            Some(incoming) => {
                let address = incoming.remote_address();
                let peer = address.to_string();
                Ok(Accepted { handshake: QuicHandshake { incoming }, peer, ip: Some(address.ip()) })
            }
            None => Err(io::Error::new(io::ErrorKind::NotConnected, "QUIC endpoint closed")),
        }
    }

    fn screen(&self, handshake: QuicHandshake, under_pressure: bool) -> Option<QuicHandshake> {
        let retry = match self.address_validation {
            AddressValidation::Always => true,
            AddressValidation::UnderLoad => under_pressure,
            AddressValidation::Never => false,
        };
        if !retry || handshake.incoming.remote_address_validated() {
            return Some(handshake);
        }
        // Stateless: the client comes back with a token only if it received the Retry
        // at the address it claims. (`retry` fails only for an already validated one.)
        if let Err(refused) = handshake.incoming.retry() {
            refused.into_incoming().ignore();
        }
        None
    }

    fn name(&self) -> &'static str {
        "quic"
    }
}

/// An incoming QUIC connection, before its handshake.
pub struct QuicHandshake {
    incoming: Incoming,
}

impl Handshake for QuicHandshake {
    type Stream = QuicStream;

    async fn finish(self) -> io::Result<(QuicStream, Identity)> {
        let connection = self.incoming.accept()?.await?;
        let certificates = connection
            .peer_identity()
            .and_then(|any| any.downcast::<Vec<rustls_pki_types::CertificateDer<'static>>>().ok());
        let identity = identity_of(certificates.as_deref().map(Vec::as_slice))?;
        let (send, recv) = connection.accept_bi().await?;
        Ok((tokio::io::join(recv, send), identity))
    }
}
