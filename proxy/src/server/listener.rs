//! The accept loop shared by every transport.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::connection::{ConnectionContext, serve};
use crate::transport::Acceptor;

/// Accepts connections until `shutdown` fires, serving each on its own task tracked by
/// `tasks`. `connections` bounds open connections across all listeners: at the limit,
/// new clients wait in the kernel's accept backlog.
pub(super) async fn accept_loop<A: Acceptor>(
    mut acceptor: A,
    ctx: Arc<ConnectionContext>,
    connections: Arc<Semaphore>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
) {
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
            Ok((stream, peer)) => {
                tracing::debug!(transport = acceptor.name(), %peer, "connection accepted");
                let ctx = Arc::clone(&ctx);
                let shutdown = shutdown.clone();
                tasks.spawn(async move {
                    serve(stream, ctx, shutdown).await;
                    drop(permit);
                });
            }
            Err(error) => {
                // Out of file descriptors and the like: back off rather than spin.
                tracing::warn!(transport = acceptor.name(), %error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
