//! Plain TCP.

use std::io;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};

use super::{Accepted, Acceptor, Handshake};
use crate::access::identity::Identity;

/// A TCP listener with Nagle's algorithm off on accepted connections (responses are
/// small and latency matters; the writer already coalesces them).
pub struct TcpAcceptor {
    listener: TcpListener,
}

impl TcpAcceptor {
    /// Binds `addr` (port 0 picks a free port).
    pub async fn bind(addr: SocketAddr) -> io::Result<Self> {
        Ok(Self { listener: TcpListener::bind(addr).await? })
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

impl Acceptor for TcpAcceptor {
    type Handshake = TcpStream;

    async fn accept(&mut self) -> io::Result<Accepted<TcpStream>> {
        let (stream, peer) = self.listener.accept().await?;
        stream.set_nodelay(true)?;
        Ok(Accepted { handshake: stream, peer: peer.to_string(), ip: Some(peer.ip()) })
    }

    fn name(&self) -> &'static str {
        "tcp"
    }
}

/// Plain TCP has no handshake: every client is anonymous.
impl Handshake for TcpStream {
    type Stream = TcpStream;

    async fn finish(self) -> io::Result<(TcpStream, Identity)> {
        Ok((self, Identity::anonymous()))
    }
}
