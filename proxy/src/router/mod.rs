//! The router: turns a decoded request into an answer, inline when it can (PING,
//! HELLO, cache hits, requests that fail validation, VERIFY and GET_PUBLIC_KEY, which
//! [`signing`] answers from the public keys in memory) and through a per-key queue
//! otherwise.
//!
//! The ACL is checked first, before the key registry and before the unwrap cache: a
//! client that may not use a key learns nothing about it (not even whether it exists),
//! and a cached DEK is never served to a client that may not unwrap it.

mod signing;

use std::sync::Arc;
use std::time::{Duration, Instant};

use keymux_protocol::{Reply, Request, RequestFrame};

use crate::access::ops::AclOp;
use crate::audit::{AuditLog, Event};
use crate::backend::{BatchOp, Op, ParsedBlob};
use crate::batch::{Completion, Job, KeyQueues};
use crate::cache::{CacheFill, Join, UnwrapCache};
use crate::error::OpError;
use crate::keys::{KeyInfo, KeyRegistry, PublicKeys};
use crate::server::peer::Peer;
use crate::server::responder::Responder;

/// What HELLO tells clients.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    /// The largest frame accepted.
    pub max_frame: u32,
    /// Requests read ahead per connection.
    pub max_in_flight: u32,
    /// How old the key snapshot may be for new wraps (`keys.max_staleness`).
    pub max_staleness: Duration,
}

/// Routes requests to the cache or the key queues.
pub struct Router {
    registry: Arc<KeyRegistry>,
    public_keys: Arc<PublicKeys>,
    queues: Arc<KeyQueues>,
    cache: Option<Arc<UnwrapCache>>,
    info: ServerInfo,
    audit: AuditLog,
}

impl Router {
    /// A router over these parts; `cache` is `None` when caching is disabled.
    pub fn new(
        registry: Arc<KeyRegistry>,
        public_keys: Arc<PublicKeys>,
        queues: Arc<KeyQueues>,
        cache: Option<Arc<UnwrapCache>>,
        info: ServerInfo,
        audit: AuditLog,
    ) -> Self {
        Self { registry, public_keys, queues, cache, info, audit }
    }

    /// Handles one request from `peer`; `responder` is answered exactly once, now or
    /// later.
    pub fn dispatch(&self, frame: RequestFrame, responder: Responder, received: Instant, peer: &Peer) {
        let deadline = frame.timeout_ms.map(|ms| received + Duration::from_millis(u64::from(ms)));
        // Already expired on arrival; `received` is as good as now for that test.
        if frame.timeout_ms == Some(0) {
            return responder.send(Err(OpError::Timeout));
        }
        let job =
            |op, responder| Job { op: BatchOp { op, deadline }, completion: Completion::Respond(responder) };
        match frame.request {
            Request::Ping => responder.send(Ok(Reply::Pong)),
            Request::Hello { .. } => responder.send(Ok(Reply::Hello {
                max_frame: self.info.max_frame,
                max_in_flight: self.info.max_in_flight,
                server_version: env!("CARGO_PKG_VERSION").into(),
            })),
            Request::Wrap { key, aad, plaintext } => {
                match self.authorize(peer, AclOp::Wrap, &key).and_then(|()| self.key_for_new_wraps(&key)) {
                    Ok(_) => self.queues.submit(&key, job(Op::Wrap { aad, plaintext }, responder)),
                    Err(error) => responder.send(Err(error)),
                }
            }
            Request::GenerateDataKey { key, aad, length } => {
                let checked = self
                    .authorize(peer, AclOp::GenerateDataKey, &key)
                    .and_then(|()| self.key_for_new_wraps(&key));
                match checked {
                    Ok(_) => self.queues.submit(&key, job(Op::GenerateDataKey { aad, length }, responder)),
                    Err(error) => responder.send(Err(error)),
                }
            }
            Request::Sign { key, input, digest } => match self.check_sign(peer, &key, &input, digest) {
                Ok(()) => self.queues.submit(&key, job(Op::Sign { input, digest }, responder)),
                Err(error) => responder.send(Err(error)),
            },
            Request::Verify { key, version, input, signature, digest } => {
                responder.send(self.verify(peer, &key, version, &input, &signature, digest))
            }
            Request::GetPublicKey { key, version } => responder.send(self.public_key(peer, &key, version)),
            Request::Encrypt { key, version, aad, plaintext } => {
                let checked = self
                    .authorize(peer, AclOp::Encrypt, &key)
                    .and_then(|()| self.key_for_new_wraps(&key))
                    .and_then(|info| if version == 0 { Ok(()) } else { info.check_decryptable(version) });
                match checked {
                    Ok(()) => {
                        self.queues.submit(&key, job(Op::Encrypt { version, aad, plaintext }, responder))
                    }
                    Err(error) => responder.send(Err(error)),
                }
            }
            Request::Decrypt { key, version, aad, iv, ciphertext, tag } => {
                let checked = self
                    .authorize(peer, AclOp::Decrypt, &key)
                    .and_then(|()| self.wrapping_key(&key))
                    .and_then(|info| info.check_decryptable(version));
                match checked {
                    Ok(()) => {
                        let op = Op::Decrypt { version, aad, iv, ciphertext, tag };
                        self.queues.submit(&key, job(op, responder));
                    }
                    Err(error) => responder.send(Err(error)),
                }
            }
            Request::Rewrap { aad, blob } => match self
                .check_blob(blob, peer, AclOp::Rewrap)
                .and_then(|blob| self.registry.check_fresh(self.info.max_staleness).map(|()| blob))
            {
                // `check_blob` found the key: queue straight away.
                Ok(blob) => {
                    let key = blob.header.key.clone();
                    self.queues.submit(&key, job(Op::Rewrap { aad, blob }, responder));
                }
                Err(error) => responder.send(Err(error)),
            },
            Request::Unwrap { aad, blob } => match self.check_blob(blob, peer, AclOp::Unwrap) {
                Ok(blob) => self.unwrap(blob, aad, frame.bypass_cache, deadline, responder),
                Err(error) => responder.send(Err(error)),
            },
            _ => responder.send(Err(OpError::Unsupported)),
        }
    }

    /// FORBIDDEN, and an audit record, unless the peer may do `op` on `key`.
    fn authorize(&self, peer: &Peer, op: AclOp, key: &str) -> Result<(), OpError> {
        if peer.permissions.allows(op, key) {
            return Ok(());
        }
        tracing::debug!(principal = %peer.principal, op = op.name(), key, "denied by the ACL");
        self.audit.record(Event::Denied {
            principal: peer.principal.clone(),
            peer: peer.addr.clone(),
            op: op.name(),
            key: key.to_owned(),
        });
        Err(OpError::Forbidden)
    }

    /// Parses a blob, checks the ACL on its key, then that the key exists, wraps, and
    /// the version may be unwrapped.
    fn check_blob(&self, blob: Vec<u8>, peer: &Peer, op: AclOp) -> Result<ParsedBlob, OpError> {
        let blob = ParsedBlob::parse(blob)?;
        self.authorize(peer, op, &blob.header.key)?;
        self.wrapping_key(&blob.header.key)?.check_decryptable(blob.header.version)?;
        Ok(blob)
    }

    /// The key named `key` for a new wrap: as [`Router::wrapping_key`], on a snapshot
    /// no older than `keys.max_staleness`.
    fn key_for_new_wraps(&self, key: &str) -> Result<Arc<KeyInfo>, OpError> {
        self.registry.check_fresh(self.info.max_staleness)?;
        self.wrapping_key(key)
    }

    /// The key named `key`, if the registry knows it and it is a wrapping key.
    fn wrapping_key(&self, key: &str) -> Result<Arc<KeyInfo>, OpError> {
        let info = self.registry.get(key)?;
        info.check_wraps()?;
        Ok(info)
    }

    fn unwrap(
        &self,
        blob: ParsedBlob,
        aad: Vec<u8>,
        bypass_cache: bool,
        deadline: Option<Instant>,
        responder: Responder,
    ) {
        let cache = self.cache.as_ref().filter(|_| !bypass_cache);
        let Some(cache) = cache else {
            let key = blob.header.key.clone();
            let op = BatchOp { op: Op::Unwrap { aad, blob }, deadline };
            let job = Job { op, completion: Completion::Respond(responder) };
            return self.queues.submit(&key, job);
        };
        let lookup = cache.key_for(blob.bytes(), &aad);
        if let Some(plaintext) = cache.get(&lookup) {
            return responder.send(Ok(Reply::Unwrap { plaintext }));
        }
        // A miss: only now is the key's name worth a copy.
        let key = blob.header.key.clone();
        if let Join::Lead(entry) = cache.join(lookup, &key, blob.header.version, responder) {
            // The outcome is shared by every waiter, so it must not inherit one client's
            // deadline; each client still enforces its own.
            let completion = Completion::FillCache(CacheFill::new(Arc::clone(cache), entry));
            self.queues.submit(&key, Job { op: BatchOp::new(Op::Unwrap { aad, blob }), completion });
        }
    }
}
