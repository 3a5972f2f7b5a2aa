//! Opening a byte stream to an endpoint and handing it to the pipeline.
//!
//! Everything above this module works on any `AsyncRead + AsyncWrite` stream; adding a
//! transport (TLS, QUIC) means adding an [`Endpoint`] variant and an arm here.

use std::io;

use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};

use crate::config::Endpoint;
use crate::error::Error;
use crate::pipeline::Connection;

/// Connects to `endpoint` and performs the HELLO exchange, all before `deadline`.
pub(crate) async fn connect(
    endpoint: &Endpoint,
    client_name: &str,
    deadline: Instant,
) -> Result<Connection, Error> {
    match timeout_at(deadline, open(endpoint, client_name)).await {
        Ok(result) => result,
        Err(_elapsed) => Err(Error::Connect {
            endpoint: endpoint.clone(),
            source: io::Error::new(io::ErrorKind::TimedOut, "connect and HELLO timed out"),
        }),
    }
}

async fn open(endpoint: &Endpoint, client_name: &str) -> Result<Connection, Error> {
    let failed = |source| Error::Connect { endpoint: endpoint.clone(), source };
    match endpoint {
        Endpoint::Tcp { host, port } => {
            let stream = TcpStream::connect((host.as_str(), *port)).await.map_err(failed)?;
            // Requests are small and latency-bound; the writer already batches.
            stream.set_nodelay(true).map_err(failed)?;
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
