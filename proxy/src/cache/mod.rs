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
//! Concurrent misses on the same entry share one backend call ([`single_flight`]).
//! The entries themselves are in [`store`].

mod single_flight;
mod store;

use std::sync::Arc;

use keymux_protocol::SecretBytes;

pub use single_flight::{CacheFill, Join};
pub use store::{CacheKey, EntryHasher, entry_key};

use crate::config::CacheConfig;
use crate::telemetry::Metrics;

/// The unwrap cache: its store and its single-flight table.
pub struct UnwrapCache {
    store: store::Store,
    flights: single_flight::Flights,
    metrics: Arc<Metrics>,
}

impl UnwrapCache {
    /// A cache bounded as `config` says.
    pub fn new(config: &CacheConfig, metrics: Arc<Metrics>) -> Self {
        Self { store: store::Store::new(config, Arc::clone(&metrics)), flights: Default::default(), metrics }
    }

    /// The entry key for `blob` under `aad` (see [`entry_key`]).
    pub fn key_for(&self, blob: &[u8], aad: &[u8]) -> Vec<u8> {
        entry_key(blob, aad)
    }

    /// The cached DEK, if present; counts a hit or a miss.
    pub fn get(&self, key: &[u8]) -> Option<SecretBytes> {
        let found = self.store.get(key);
        match found {
            Some(_) => self.metrics.cache_hit(),
            None => self.metrics.cache_miss(),
        }
        found
    }

    /// Drops every entry of `key` at `version` (a version was disabled or destroyed).
    pub fn invalidate_version(&self, key: &str, version: u32) {
        self.store.invalidate_version(key, version);
    }

    /// Entries currently held (approximate, as moka counts lazily).
    pub fn entry_count(&self) -> u64 {
        self.store.entry_count()
    }
}
