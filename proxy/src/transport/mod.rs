//! Transports: each turns a listening socket into a stream of connections that the
//! shared connection loop serves.
//!
//! Accepting is split in two so that a slow client never holds up the accept loop:
//! [`Acceptor::accept`] only takes the next connection off the socket, and
//! [`Handshake::finish`] (TLS or QUIC handshake, identity extraction) runs on the
//! connection's own task, under the handshake timeout.

pub mod quic;
pub mod tcp;
pub mod tls;
#[cfg(unix)]
pub mod uds;

use std::future::Future;
use std::io;
use std::net::IpAddr;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::access::identity::Identity;

/// A listening transport.
pub trait Acceptor: Send + 'static {
    /// An accepted connection whose handshake has yet to run.
    type Handshake: Handshake;

    /// Waits for the next connection.
    fn accept(&mut self) -> impl Future<Output = io::Result<Accepted<Self::Handshake>>> + Send;

    /// Looks at a connection before it takes a handshake slot; `None` when the
    /// transport dealt with it itself. QUIC asks a client whose address is unproven to
    /// prove it with a Retry (always, or while its listener is `under_pressure`, as
    /// configured), so spoofed Initials cost nothing. Others pass everything.
    fn screen(&self, handshake: Self::Handshake, under_pressure: bool) -> Option<Self::Handshake> {
        let _ = under_pressure;
        Some(handshake)
    }

    /// A short name for logs and the audit log (`tcp`, `unix`, `tls`, `quic`).
    fn name(&self) -> &'static str;
}

/// A connection taken off a listening socket.
pub struct Accepted<H> {
    /// What is left of accepting it.
    pub handshake: H,
    /// The peer, for logs and the audit log.
    pub peer: String,
    /// The peer's IP address, which per-source limits count by; `None` on a Unix socket.
    pub ip: Option<IpAddr>,
}

/// The second half of accepting: whatever the transport does before frames flow.
pub trait Handshake: Send + 'static {
    /// The byte stream carrying frames.
    type Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static;

    /// Completes the handshake, returning the stream and who is on the other end.
    fn finish(self) -> impl Future<Output = io::Result<(Self::Stream, Identity)>> + Send;
}
