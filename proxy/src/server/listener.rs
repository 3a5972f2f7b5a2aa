//! The accept loop shared by every transport.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::connection::{ConnectionContext, refuse, serve};
use crate::audit::Event;
use crate::server::peer::Peer;
use crate::transport::{Acceptor, Handshake};

/// What every listener's accept loop shares.
pub(super) struct ListenerSet {
    pub(super) ctx: Arc<ConnectionContext>,
    pub(super) connections: Arc<Semaphore>,
    pub(super) tasks: TaskTracker,
    pub(super) shutdown: CancellationToken,
}

impl ListenerSet {
    /// Runs `acceptor`'s accept loop on a tracked task.
    pub(super) fn spawn<A: Acceptor>(&self, acceptor: A) {
        self.tasks.spawn(accept_loop(
            acceptor,
            Arc::clone(&self.ctx),
            Arc::clone(&self.connections),
            self.tasks.clone(),
            self.shutdown.clone(),
        ));
    }
}

/// Accepts connections until `shutdown` fires, serving each on its own task tracked by
/// `tasks`. `connections` bounds open connections across all listeners: at the limit,
/// new clients wait in the kernel's accept backlog. The handshake runs on the
/// connection's task, under `handshake_timeout`, so a slow client holds up nobody.
async fn accept_loop<A: Acceptor>(
    mut acceptor: A,
    ctx: Arc<ConnectionContext>,
    connections: Arc<Semaphore>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
) {
    let transport = acceptor.name();
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&connections).acquire_owned() => permit.expect("never closed"),
            () = shutdown.cancelled() => break,
        };
        let accepted = tokio::select! {
            accepted = acceptor.accept() => accepted,
            () = shutdown.cancelled() => break,
        };
        match accepted {
            Ok((handshake, peer)) => {
                tracing::debug!(transport, %peer, "connection accepted");
                let ctx = Arc::clone(&ctx);
                let shutdown = shutdown.clone();
                tasks.spawn(async move {
                    establish(handshake, peer, transport, ctx, shutdown).await;
                    drop(permit);
                });
            }
            Err(error) => {
                // Out of file descriptors and the like: back off rather than spin.
                tracing::warn!(transport, %error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Runs the handshake, resolves the peer's identity, permissions and quota, and
/// serves the connection (or refuses it, over the identity's connection quota).
async fn establish<H: Handshake>(
    handshake: H,
    addr: String,
    transport: &'static str,
    ctx: Arc<ConnectionContext>,
    shutdown: CancellationToken,
) {
    let finished = tokio::select! {
        finished = tokio::time::timeout(ctx.handshake_timeout, handshake.finish()) => finished,
        () = shutdown.cancelled() => return,
    };
    let outcome = match finished {
        Ok(Ok(established)) => Ok(established),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_elapsed) => Err("handshake timed out".to_owned()),
    };
    let (stream, identity) = match outcome {
        Ok(established) => established,
        Err(error) => {
            tracing::debug!(transport, peer = %addr, %error, "handshake failed");
            ctx.metrics.handshake_failed();
            ctx.audit.record(Event::HandshakeFailed { transport, peer: addr, error });
            return;
        }
    };
    let principal = identity.principal();
    let quota = if ctx.quotas.enabled() {
        match ctx.quotas.connect(&principal) {
            Ok(quota) => Some(quota),
            Err(retry_after) => {
                tracing::debug!(transport, peer = %addr, %principal, "over the identity's connection quota");
                ctx.audit.record(Event::ConnectionRefused {
                    principal,
                    peer: addr,
                    reason: "quotas.max_connections".into(),
                });
                return refuse(stream, ctx, retry_after).await;
            }
        }
    } else {
        None
    };
    let permissions = ctx.acl.permissions(&identity);
    let peer = Peer { addr, principal, permissions, quota };
    serve(stream, ctx, peer, shutdown).await;
}
