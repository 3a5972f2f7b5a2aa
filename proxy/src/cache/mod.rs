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

use arc_swap::ArcSwap;
use keymux_protocol::SecretBytes;

pub use single_flight::{CacheFill, Join};
pub use store::{CacheKey, EntryHasher, entry_key};

use crate::config::CacheConfig;
use crate::telemetry::Metrics;

/// The unwrap cache: its store and its single-flight table.
pub struct UnwrapCache {
    /// Replaced (empty) when a config reload changes the bounds.
    store: ArcSwap<store::Store>,
    flights: single_flight::Flights,
    metrics: Arc<Metrics>,
}

impl UnwrapCache {
    /// A cache bounded as `config` says.
    pub fn new(config: &CacheConfig, metrics: Arc<Metrics>) -> Self {
        let store = ArcSwap::from_pointee(store::Store::new(config, Arc::clone(&metrics)));
        Self { store, flights: Default::default(), metrics }
    }

    /// Applies new bounds (entries, time to live, time to idle) from a config reload:
    /// moka cannot change them in place, so the cache starts over empty; the old
    /// entries are dropped (and zeroized) once the requests reading them finish.
    pub fn reconfigure(&self, config: &CacheConfig) {
        self.store.store(Arc::new(store::Store::new(config, Arc::clone(&self.metrics))));
    }

    /// The entry key for `blob` under `aad` (see [`entry_key`]).
    pub fn key_for(&self, blob: &[u8], aad: &[u8]) -> Vec<u8> {
        entry_key(blob, aad)
    }

    /// The cached DEK, if present; counts a hit or a miss.
    pub fn get(&self, key: &[u8]) -> Option<SecretBytes> {
        let found = self.store.load().get(key);
        match found {
            Some(_) => self.metrics.cache_hit(),
            None => self.metrics.cache_miss(),
        }
        found
    }

    /// Drops every entry of `key` at `version` (a version was disabled or destroyed).
    pub fn invalidate_version(&self, key: &str, version: u32) {
        self.store.load().invalidate_version(key, version);
    }

    /// Entries currently held (approximate, as moka counts lazily).
    pub fn entry_count(&self) -> u64 {
        self.store.load().entry_count()
    }
}
