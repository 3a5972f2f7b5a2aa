//! Transports: each turns a listening socket into a stream of byte streams that the
//! shared connection loop serves.

pub mod tcp;
#[cfg(unix)]
pub mod uds;

use std::future::Future;
use std::io;

use tokio::io::{AsyncRead, AsyncWrite};

/// A listening transport.
pub trait Acceptor: Send + 'static {
    /// The byte stream of one accepted connection.
    type Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static;

    /// Waits for the next connection; `peer` describes it for logs.
    fn accept(&mut self) -> impl Future<Output = io::Result<(Self::Stream, String)>> + Send;

    /// A short name for logs (`tcp`, `unix`).
    fn name(&self) -> &'static str;
}
