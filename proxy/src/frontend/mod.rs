//! The standard front ends (Vault Transit, Kubernetes KMS v2, AWS XKS) and what they
//! share: [`FrontDoor`], the one way a front end reaches the router.
//!
//! A front end is a translation, not a second proxy: it maps its own credential to an
//! [`Identity`], its own request to a [`Request`], and the router's answer back. The
//! requests then take the binary protocol's own path (ACL, per-identity quota, per-key
//! queues and batching, unwrap cache, audit, metrics), because they go through the
//! same [`Router::dispatch`](crate::router::Router::dispatch) with the same
//! [`Responder`].

pub mod http;
pub mod kubernetes;
pub mod vault;
pub mod xks;

use std::sync::Arc;
use std::time::{Duration, Instant};

use keymux_protocol::{Failure, Reply, Request, RequestFrame};
use tokio::sync::mpsc;

use crate::access::identity::Identity;
use crate::audit::Event;
use crate::error::OpError;
use crate::server::connection::ConnectionContext;
use crate::server::peer::Peer;
use crate::server::responder::Responder;

/// The router as a front end reaches it.
#[derive(Clone)]
pub struct FrontDoor {
    ctx: Arc<ConnectionContext>,
}

/// What one call asks besides its request.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallOptions {
    /// The deadline, from when the call is made (`None`: the router's own limits only).
    pub timeout: Option<Duration>,
    /// UNWRAP/REWRAP: skip the unwrap cache.
    pub bypass_cache: bool,
}

impl FrontDoor {
    /// The front door over a server's shared connection context.
    pub(crate) fn new(ctx: Arc<ConnectionContext>) -> Self {
        Self { ctx }
    }

    /// The peer for `identity` calling from `addr`, resolved as a binary-protocol
    /// connection is: ACL permissions and its identity's quota. `Err` carries the
    /// retry hint when the identity is over its connection quota (recorded in the
    /// audit log, as on the binary protocol).
    pub fn peer(&self, identity: &Identity, addr: String) -> Result<Peer, Duration> {
        let principal = identity.principal();
        let quota = if self.ctx.quotas.enabled() {
            match self.ctx.quotas.connect(&principal) {
                Ok(quota) => Some(Arc::new(quota)),
                Err(retry_after) => {
                    self.ctx.audit.record(Event::ConnectionRefused {
                        principal,
                        peer: addr,
                        reason: "quotas.max_connections".into(),
                    });
                    return Err(retry_after);
                }
            }
        } else {
            None
        };
        let permissions = self.ctx.acl.permissions(identity);
        Ok(Peer { addr, principal, permissions, quota })
    }

    /// One request from `peer`, answered when the router answers it.
    pub async fn call(&self, peer: &Peer, request: Request, options: CallOptions) -> Result<Reply, Failure> {
        let mut answers = self.call_many(peer, vec![request], options).await;
        answers.pop().unwrap_or_else(|| Err(OpError::Internal("no answer".into()).into()))
    }

    /// Several requests from `peer`, all submitted before any answer is awaited, so
    /// each is its own job on its key's queue and they batch there (a Vault
    /// `batch_input` of 1,000 items becomes full backend batches, not 1,000 round
    /// trips). Answers come back in the order of `requests`.
    pub async fn call_many(
        &self,
        peer: &Peer,
        requests: Vec<Request>,
        options: CallOptions,
    ) -> Vec<Result<Reply, Failure>> {
        let count = requests.len();
        let (sink, mut answers) = mpsc::unbounded_channel();
        let timeout_ms =
            options.timeout.map(|timeout| u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX));
        for (index, request) in requests.into_iter().enumerate() {
            let received = Instant::now();
            let opcode = request.opcode();
            let frame = RequestFrame {
                request_id: index as u64,
                bypass_cache: options.bypass_cache,
                timeout_ms,
                request,
            };
            let responder = Responder::new(
                frame.request_id,
                opcode as u8,
                received,
                sink.clone(),
                None,
                Arc::clone(&self.ctx.metrics),
            );
            match peer.quota.as_ref().map(|quota| quota.admit(received)) {
                Some(Err(retry_after)) => responder.send(Err(OpError::OverQuota { retry_after })),
                admitted => {
                    let identity_permit = admitted.and_then(Result::ok).flatten();
                    self.ctx.router.dispatch(
                        frame,
                        responder.with_identity_permit(identity_permit),
                        received,
                        peer,
                    );
                }
            }
        }
        drop(sink);
        let mut results: Vec<Option<Result<Reply, Failure>>> = (0..count).map(|_| None).collect();
        while let Some(outgoing) = answers.recv().await {
            if let Some(slot) = results.get_mut(outgoing.frame.request_id as usize) {
                *slot = Some(outgoing.frame.result);
            }
        }
        results
            .into_iter()
            .map(|result| {
                result.unwrap_or_else(|| {
                    Err(OpError::Internal("request dropped without an answer".into()).into())
                })
            })
            .collect()
    }
}
