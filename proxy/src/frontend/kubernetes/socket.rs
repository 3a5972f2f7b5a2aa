//! The plugin's Unix socket: made private (mode 0600, or 0660 for a configured group)
//! before it listens, so no other user can connect even for a moment; every accepted
//! connection resolved once to its [`Peer`] from the Unix peer credentials.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use rustix::fs::{Gid, Mode};
use socket2::{Domain, SockAddr, Socket, Type};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tonic::transport::server::Connected;

use crate::access::identity::Identity;
use crate::frontend::FrontDoor;
use crate::server::peer::Peer;
use crate::transport::uds::clear_stale_socket;

/// The bound socket; the file is removed when this is dropped.
pub(super) struct PluginSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl PluginSocket {
    /// Binds `path` (replacing a stale socket file), sets its mode and group, then
    /// listens.
    pub(super) fn bind(path: &Path, group: Option<u32>) -> io::Result<Self> {
        clear_stale_socket(path)?;
        let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
        socket.bind(&SockAddr::unix(path)?)?;
        // From here on the file is ours: remove it again if anything below fails.
        let bound = Self::remove_on_error(path);
        let mode = if group.is_some() { 0o660 } else { 0o600 };
        rustix::fs::chmod(path, Mode::from_raw_mode(mode))?;
        if let Some(gid) = group {
            rustix::fs::chown(path, None, Some(Gid::from_raw(gid)))?;
        }
        socket.listen(1024)?;
        socket.set_nonblocking(true)?;
        let listener = UnixListener::from_std(std::os::unix::net::UnixListener::from(socket))?;
        std::mem::forget(bound);
        Ok(Self { listener, path: path.to_owned() })
    }

    fn remove_on_error(path: &Path) -> impl Drop {
        struct Remove(PathBuf);
        impl Drop for Remove {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
        Remove(path.to_owned())
    }

    /// The connections, each with its peer resolved (ACL permissions, quota). A peer
    /// over its identity's connection quota is closed at once; accept errors (out of
    /// file descriptors) pause accepting briefly instead of ending the server.
    pub(super) fn incoming(self, door: FrontDoor) -> impl Stream<Item = io::Result<PeerStream>> {
        futures_util::stream::unfold((self, door), |(socket, door)| async move {
            loop {
                let stream = match socket.listener.accept().await {
                    Ok((stream, _)) => stream,
                    Err(error) => {
                        tracing::warn!(%error, "kubernetes_kms: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let uid = match stream.peer_cred() {
                    Ok(cred) => cred.uid(),
                    Err(error) => {
                        tracing::debug!(%error, "kubernetes_kms: no peer credentials; closed");
                        continue;
                    }
                };
                match door.peer(&Identity::unix(uid), format!("kubernetes_kms uid {uid}")) {
                    Ok(peer) => {
                        let stream = PeerStream { stream, peer: Arc::new(peer) };
                        return Some((Ok(stream), (socket, door)));
                    }
                    Err(_) => tracing::debug!(uid, "kubernetes_kms: over the connection quota; closed"),
                }
            }
        })
    }
}

impl Drop for PluginSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// An accepted connection and its peer, which tonic hands to every call on it (the
/// peer's quota share is released when the connection and its calls are gone).
pub(super) struct PeerStream {
    stream: UnixStream,
    peer: Arc<Peer>,
}

impl Connected for PeerStream {
    type ConnectInfo = Arc<Peer>;

    fn connect_info(&self) -> Arc<Peer> {
        Arc::clone(&self.peer)
    }
}

impl AsyncRead for PeerStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for PeerStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
