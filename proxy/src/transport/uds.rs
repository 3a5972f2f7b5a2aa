//! Unix domain sockets.

use std::io;
use std::path::{Path, PathBuf};

use tokio::net::{UnixListener, UnixStream};

use super::{Accepted, Acceptor, Handshake};
use crate::access::identity::Identity;

/// A Unix socket listener. The socket file is removed when the acceptor is dropped.
pub struct UnixAcceptor {
    listener: UnixListener,
    path: PathBuf,
}

impl UnixAcceptor {
    /// Binds `path`, replacing a stale socket file left by an earlier run (but never a
    /// socket some other process is still serving).
    pub fn bind(path: &Path) -> io::Result<Self> {
        clear_stale_socket(path)?;
        Ok(Self { listener: UnixListener::bind(path)?, path: path.to_owned() })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Removes a socket file left at `path` by an earlier run, so it can be bound again;
/// refuses (`AddrInUse`) when some process still serves it.
pub(crate) fn clear_stale_socket(path: &Path) -> io::Result<()> {
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{} is in use by another process", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    Ok(())
}

impl Drop for UnixAcceptor {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Acceptor for UnixAcceptor {
    type Handshake = UnixStream;

    async fn accept(&mut self) -> io::Result<Accepted<UnixStream>> {
        let (stream, _) = self.listener.accept().await?;
        let peer = match stream.peer_cred() {
            Ok(cred) => format!("uid {}", cred.uid()),
            Err(_) => "unix peer".to_owned(),
        };
        Ok(Accepted { handshake: stream, peer, ip: None })
    }

    fn name(&self) -> &'static str {
        "unix"
    }
}

/// A Unix socket client is identified by its uid (from `SO_PEERCRED`).
impl Handshake for UnixStream {
    type Stream = UnixStream;

    async fn finish(self) -> io::Result<(UnixStream, Identity)> {
        let uid = self.peer_cred()?.uid();
        Ok((self, Identity::unix(uid)))
    }
}
