//! The unwrap cache: repeated unwraps of the same blob under the same AAD are answered
//! without a backend call.
//!
//! Entries are keyed by the exact bytes of (blob, aad), so two requests share an entry
//! only if they sent the same blob under the same AAD: no hash collision can hand one
//! caller another's DEK. Keys are hashed with a randomly seeded hasher
//! ([`EntryHasher`]). (The keys are ciphertext and AAD, which the clients send in the
//! clear anyway.) Values are the DEKs, zeroized when evicted. The router checks the ACL
//! and the key version's state *before* looking here, so a cached DEK is never served
//! to a caller or for a version that may no longer be unwrapped.
//!
//! Concurrent misses on the same entry share one backend call: the first miss becomes
//! the leader and queues the unwrap; later ones wait on the leader's entry in
//! `pending` and are answered with its outcome.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use keymux_protocol::{Reply, SecretBytes};
use moka::notification::RemovalCause;

use crate::backend::OpResult;
use crate::config::CacheConfig;
use crate::reply::Responder;
use crate::telemetry::Metrics;

/// A cache entry's identity: the blob's length, the blob, then the AAD
/// ([`UnwrapCache::key_for`]), shared by the cache and the single-flight table.
pub type CacheKey = bytes::Bytes;

/// Hashes entry keys: foldhash, seeded at random per process. SipHash cost ~10% of a
/// cache hit's instructions over these ~120-byte keys. Flooding one bucket would need
/// colliding keys without knowing the seed, and entries are only made from blobs that
/// verified, whose bytes a client cannot choose.
pub type EntryHasher = foldhash::quality::RandomState;

struct CachedDek {
    key: Arc<str>,
    version: u32,
    dek: SecretBytes,
}

/// What a caller of [`UnwrapCache::join`] must do next.
#[derive(Debug, PartialEq, Eq)]
pub enum Join {
    /// Queue the unwrap; its completion fills entry `CacheKey` and answers every
    /// waiter.
    Lead(CacheKey),
    /// Another request is already unwrapping this blob, or the entry was just filled:
    /// the answer comes (or came) without a new backend call.
    Wait,
}

/// The unwrap cache and its single-flight table.
pub struct UnwrapCache {
    entries: moka::sync::Cache<CacheKey, Arc<CachedDek>, EntryHasher>,
    pending: Mutex<HashMap<CacheKey, Pending>>,
    metrics: Arc<Metrics>,
}

struct Pending {
    key: Arc<str>,
    version: u32,
    waiters: Vec<Responder>,
}

impl UnwrapCache {
    /// A cache bounded as `config` says.
    pub fn new(config: &CacheConfig, metrics: Arc<Metrics>) -> Self {
        let evictions = Arc::clone(&metrics);
        let entries = moka::sync::Cache::builder()
            .max_capacity(config.max_entries)
            .time_to_live(config.ttl)
            .time_to_idle(config.tti)
            .support_invalidation_closures()
            .eviction_listener(move |_, _, cause: RemovalCause| {
                if cause.was_evicted() {
                    evictions.cache_eviction();
                }
            })
            .build_with_hasher(EntryHasher::default());
        Self { entries, pending: Mutex::default(), metrics }
    }

    /// The entry key for `blob` under `aad`, to look up with (a hit needs no shared
    /// copy of it). The length prefix keeps the split between the two unambiguous.
    pub fn key_for(&self, blob: &[u8], aad: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(8 + blob.len() + aad.len());
        bytes.extend_from_slice(&(blob.len() as u64).to_be_bytes());
        bytes.extend_from_slice(blob);
        bytes.extend_from_slice(aad);
        bytes
    }

    /// The cached DEK, if present; counts a hit or a miss.
    pub fn get(&self, key: &[u8]) -> Option<SecretBytes> {
        match self.entries.get(key) {
            Some(entry) => {
                self.metrics.cache_hit();
                Some(entry.dek.clone())
            }
            None => {
                self.metrics.cache_miss();
                None
            }
        }
    }

    /// Registers `responder` as waiting for entry `key` of blob key `name`, `version`.
    /// If a leader filled the entry since the caller's miss, answers from it at once.
    pub fn join(&self, key: Vec<u8>, name: &str, version: u32, responder: Responder) -> Join {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = self.entries.get(key.as_slice()) {
            drop(pending);
            responder.send(Ok(Reply::Unwrap { plaintext: entry.dek.clone() }));
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
    pub fn complete(&self, key: &CacheKey, result: OpResult) {
        let mut table = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let Some(pending) = table.remove(key) else {
            return;
        };
        // Cache before the entry leaves the table (both under its lock), so a request
        // arriving in between finds one or the other, never neither.
        if let Ok(Reply::Unwrap { plaintext }) = &result {
            let entry =
                CachedDek { key: Arc::clone(&pending.key), version: pending.version, dek: plaintext.clone() };
            self.entries.insert(key.clone(), Arc::new(entry));
        }
        drop(table);
        for responder in pending.waiters {
            responder.send(result.clone());
        }
    }

    /// Drops every entry of `key` at `version` (a version was disabled or destroyed).
    pub fn invalidate_version(&self, key: &str, version: u32) {
        let key: Arc<str> = Arc::from(key);
        // Only fails if closures were not enabled at build time, which `new` does.
        let _ = self
            .entries
            .invalidate_entries_if(move |_, entry| *entry.key == *key && entry.version == version);
    }

    /// Entries currently held (approximate, as moka counts lazily).
    pub fn entry_count(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalidating_a_version_removes_its_entries() {
        let cache = UnwrapCache::new(&CacheConfig::default(), Metrics::new());
        let entry = |key: &str, version| {
            Arc::new(CachedDek { key: Arc::from(key), version, dek: SecretBytes::zeroed(32) })
        };
        cache.entries.insert(cache.key_for(b"1", b"").into(), entry("k", 1));
        cache.entries.insert(cache.key_for(b"2", b"").into(), entry("k", 2));
        cache.entries.insert(cache.key_for(b"3", b"").into(), entry("other", 1));
        cache.invalidate_version("k", 1);
        assert!(cache.entries.get(&cache.key_for(b"1", b"")[..]).is_none(), "never served once invalidated");
        assert!(cache.entries.get(&cache.key_for(b"2", b"")[..]).is_some());
        assert!(cache.entries.get(&cache.key_for(b"3", b"")[..]).is_some());
        for _ in 0..50 {
            if cache.entry_count() == 2 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(cache.entry_count(), 2, "and removed for good");
    }
}
