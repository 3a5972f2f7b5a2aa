//! The accept loop shared by every transport, and the admission steps each connection
//! goes through (see [`super::admission`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::admission::{HandshakeBudget, HandshakeSlot, SourceLimits, SourceSlot};
use super::connection::{ConnectionContext, refuse, serve};
use crate::audit::Event;
use crate::error::OpError;
use crate::server::peer::Peer;
use crate::transport::{Accepted, Acceptor, Handshake};

/// The retry hint sent with BUSY to a connection past `server.max_connections`.
const CONNECTION_LIMIT_RETRY_AFTER: Duration = Duration::from_millis(100);

/// What every listener's accept loop shares.
pub(super) struct ListenerSet {
    pub(super) ctx: Arc<ConnectionContext>,
    /// Open connections across all listeners (`server.max_connections`).
    pub(super) connections: Arc<Semaphore>,
    /// Connections per source across all listeners.
    pub(super) sources: Arc<SourceLimits>,
    /// Each listener's handshake budget (`server.max_handshakes`).
    pub(super) max_handshakes: usize,
    pub(super) tasks: TaskTracker,
    pub(super) shutdown: CancellationToken,
}

impl ListenerSet {
    /// Runs `acceptor`'s accept loop on a tracked task, with its own handshake budget.
    pub(super) fn spawn<A: Acceptor>(&self, acceptor: A) {
        let admission = Admission {
            connections: Arc::clone(&self.connections),
            sources: Arc::clone(&self.sources),
            handshakes: HandshakeBudget::new(self.max_handshakes),
        };
        self.tasks.spawn(accept_loop(
            acceptor,
            Arc::clone(&self.ctx),
            admission,
            self.tasks.clone(),
            self.shutdown.clone(),
        ));
    }
}

/// One listener's view of the admission limits.
struct Admission {
    connections: Arc<Semaphore>,
    sources: Arc<SourceLimits>,
    handshakes: Arc<HandshakeBudget>,
}

/// Accepts connections until `shutdown` fires, serving each on its own task tracked by
/// `tasks`. Nothing is waited for before `accept()`: a connection first takes a slot
/// of its source and of this listener's handshake budget, runs its handshake on its
/// own task under `handshake_timeout`, and only then takes a connection slot.
async fn accept_loop<A: Acceptor>(
    mut acceptor: A,
    ctx: Arc<ConnectionContext>,
    admission: Admission,
    tasks: TaskTracker,
    shutdown: CancellationToken,
) {
    let transport = acceptor.name();
    loop {
        let accepted = tokio::select! {
            accepted = acceptor.accept() => accepted,
            () = shutdown.cancelled() => break,
        };
        let Accepted { handshake, peer, ip } = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: back off rather than spin.
                tracing::warn!(transport, %error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(handshake) = acceptor.screen(handshake, admission.handshakes.under_pressure()) else {
            ctx.metrics.address_validation_sent();
            continue;
        };
        let Ok(source_slot) = admission.sources.admit(ip) else {
            tracing::debug!(transport, %peer, "source address at server.max_connections_per_source");
            ctx.metrics.connection_refused("per_source");
            ctx.audit.record(Event::ConnectionRefused {
                principal: "unauthenticated".into(),
                peer,
                reason: "server.max_connections_per_source".into(),
            });
            continue;
        };
        let (handshake_slot, evicted) = admission.handshakes.admit();
        if evicted {
            ctx.metrics.handshake_evicted();
        }
        tracing::debug!(transport, %peer, "connection accepted");
        let ctx = Arc::clone(&ctx);
        let shutdown = shutdown.clone();
        let connections = Arc::clone(&admission.connections);
        tasks.spawn(async move {
            let slots = Slots { handshake: handshake_slot, _source: source_slot, connections };
            establish(handshake, peer, transport, ctx, slots, shutdown).await;
        });
    }
}

/// The slots a connection holds while it is set up.
struct Slots {
    handshake: HandshakeSlot,
    /// Held until the connection closes.
    _source: Option<SourceSlot>,
    connections: Arc<Semaphore>,
}

/// Runs the handshake, resolves the peer's identity, permissions and quota, and
/// serves the connection (or refuses it: over its identity's connection quota, or past
/// `server.max_connections`).
async fn establish<H: Handshake>(
    handshake: H,
    addr: String,
    transport: &'static str,
    ctx: Arc<ConnectionContext>,
    slots: Slots,
    shutdown: CancellationToken,
) {
    let finished = tokio::select! {
        finished = tokio::time::timeout(ctx.handshake_timeout, handshake.finish()) => finished,
        () = slots.handshake.evicted() => Ok(Err(std::io::Error::other("evicted: server.max_handshakes were pending"))),
        () = shutdown.cancelled() => return,
    };
    drop(slots.handshake);
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
            Ok(quota) => Some(Arc::new(quota)),
            Err(retry_after) => {
                tracing::debug!(transport, peer = %addr, %principal, "over the identity's connection quota");
                ctx.audit.record(Event::ConnectionRefused {
                    principal,
                    peer: addr,
                    reason: "quotas.max_connections".into(),
                });
                return refuse(stream, ctx, OpError::OverQuota { retry_after }).await;
            }
        }
    } else {
        None
    };
    let Ok(_connection_slot) = slots.connections.try_acquire_owned() else {
        tracing::debug!(transport, peer = %addr, "at server.max_connections");
        ctx.metrics.connection_refused("connection_limit");
        return refuse(stream, ctx, OpError::ConnectionLimit { retry_after: CONNECTION_LIMIT_RETRY_AFTER })
            .await;
    };
    let permissions = ctx.acl.permissions(&identity);
    let peer = Peer { addr, principal, permissions, quota };
    serve(stream, ctx, peer, shutdown).await;
}
