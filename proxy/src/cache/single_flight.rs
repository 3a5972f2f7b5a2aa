//! Single flight: concurrent misses on one entry share one backend call. The first
//! miss becomes the leader and queues the unwrap with a [`CacheFill`] as its
//! completion; later misses wait in the leader's [`Pending`] entry and are answered
//! with its outcome.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use keymux_protocol::Reply;

use super::UnwrapCache;
use super::store::CacheKey;
use crate::backend::OpResult;
use crate::error::OpError;
use crate::server::responder::Responder;

/// What a caller of [`UnwrapCache::join`] must do next.
#[derive(Debug, PartialEq, Eq)]
pub enum Join {
    /// Queue the unwrap, completing it with the [`CacheFill`]: its outcome fills the
    /// entry and answers every waiter.
    Lead(CacheKey),
    /// Another request is already unwrapping this blob, or the entry was just filled:
    /// the answer comes (or came) without a new backend call.
    Wait,
}

/// The misses in flight, by entry.
#[derive(Default)]
pub(super) struct Flights {
    pub(super) table: Mutex<HashMap<CacheKey, Pending>>,
}

/// One entry being unwrapped, and who waits for it.
pub(super) struct Pending {
    pub(super) key: Arc<str>,
    pub(super) version: u32,
    pub(super) waiters: Vec<Responder>,
}

/// The leader's claim on a pending cache entry. Dropped unanswered (a job discarded at
/// shutdown, say), it answers every waiter rather than leave them hanging.
pub struct CacheFill {
    cache: Arc<UnwrapCache>,
    key: CacheKey,
    done: bool,
}

impl CacheFill {
    /// The claim on entry `key` of `cache`.
    pub fn new(cache: Arc<UnwrapCache>, key: CacheKey) -> Self {
        Self { cache, key, done: false }
    }

    /// Fills the entry (on success) and answers every waiter with `result`.
    pub fn complete(mut self, result: OpResult) {
        self.finish(result);
    }

    fn finish(&mut self, result: OpResult) {
        self.done = true;
        self.cache.complete(&self.key, result);
    }
}

impl Drop for CacheFill {
    fn drop(&mut self) {
        if !self.done {
            self.finish(Err(OpError::ShuttingDown));
        }
    }
}

impl UnwrapCache {
    /// Registers `responder` as waiting for entry `key` of blob key `name`, `version`.
    /// If a leader filled the entry since the caller's miss, answers from it at once.
    pub fn join(&self, key: Vec<u8>, name: &str, version: u32, responder: Responder) -> Join {
        let mut pending = self.flights.table.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(dek) = self.store.load().get(key.as_slice()) {
            drop(pending);
            responder.send(Ok(Reply::Unwrap { plaintext: dek }));
            return Join::Wait;
        }
        match pending.get_mut(key.as_slice()) {
            Some(entry) => {
                entry.waiters.push(responder);
                Join::Wait
            }
            None => {
                let key = CacheKey::from(key);
                let waiting = Pending { key: Arc::from(name), version, waiters: vec![responder] };
                pending.insert(key.clone(), waiting);
                Join::Lead(key)
            }
        }
    }

    /// Delivers the leader's outcome: caches a successful unwrap and answers every
    /// waiter.
    fn complete(&self, key: &CacheKey, result: OpResult) {
        let mut table = self.flights.table.lock().unwrap_or_else(|p| p.into_inner());
        let Some(pending) = table.remove(key) else {
            return;
        };
        // Cache before the entry leaves the table (both under its lock), so a request
        // arriving in between finds one or the other, never neither.
        if let Ok(Reply::Unwrap { plaintext }) = &result {
            self.store.load().insert(
                key.clone(),
                Arc::clone(&pending.key),
                pending.version,
                plaintext.clone(),
            );
        }
        drop(table);
        for responder in pending.waiters {
            responder.send(result.clone());
        }
    }
}
