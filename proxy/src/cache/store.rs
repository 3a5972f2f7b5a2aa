//! The cache's store: DEKs by the bytes of (blob, aad), bounded by entries, time to live
//! and time to idle, zeroized when evicted.

use std::sync::Arc;

use keymux_protocol::SecretBytes;
use moka::notification::RemovalCause;

use crate::config::CacheConfig;
use crate::telemetry::Metrics;

/// A cache entry's identity: the blob's length, the blob, then the AAD
/// ([`entry_key`]), shared by the store and the single-flight table.
pub type CacheKey = bytes::Bytes;

/// Hashes entry keys: foldhash, seeded at random per process. SipHash cost ~10% of a
/// cache hit's instructions over these ~120-byte keys. Flooding one bucket would need
/// colliding keys without knowing the seed, and entries are only made from blobs that
/// verified, whose bytes a client cannot choose.
pub type EntryHasher = foldhash::quality::RandomState;

/// The entry key for `blob` under `aad`, to look up with (a hit needs no shared copy
/// of it). The length prefix keeps the split between the two unambiguous.
pub fn entry_key(blob: &[u8], aad: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(8 + blob.len() + aad.len());
    bytes.extend_from_slice(&(blob.len() as u64).to_be_bytes());
    bytes.extend_from_slice(blob);
    bytes.extend_from_slice(aad);
    bytes
}

/// One cached DEK, with the key version that wrapped it (for invalidation).
pub(super) struct CachedDek {
    pub(super) key: Arc<str>,
    pub(super) version: u32,
    pub(super) dek: SecretBytes,
}

/// The bounded store of unwrapped DEKs.
pub(super) struct Store {
    entries: moka::sync::Cache<CacheKey, Arc<CachedDek>, EntryHasher>,
}

impl Store {
    /// A store bounded as `config` says, counting evictions on `metrics`.
    pub(super) fn new(config: &CacheConfig, metrics: Arc<Metrics>) -> Self {
        let entries = moka::sync::Cache::builder()
            .max_capacity(config.max_entries)
            .time_to_live(config.ttl)
            .time_to_idle(config.tti)
            .support_invalidation_closures()
            .eviction_listener(move |_, _, cause: RemovalCause| {
                if cause.was_evicted() {
                    metrics.cache_eviction();
                }
            })
            .build_with_hasher(EntryHasher::default());
        Self { entries }
    }

    /// The DEK cached under `key`.
    pub(super) fn get(&self, key: &[u8]) -> Option<SecretBytes> {
        self.entries.get(key).map(|entry| entry.dek.clone())
    }

    /// Caches `dek`, unwrapped from a blob of `name` at `version`, under `key`.
    pub(super) fn insert(&self, key: CacheKey, name: Arc<str>, version: u32, dek: SecretBytes) {
        self.entries.insert(key, Arc::new(CachedDek { key: name, version, dek }));
    }

    /// Drops every entry of `key` at `version`.
    pub(super) fn invalidate_version(&self, key: &str, version: u32) {
        let key: Arc<str> = Arc::from(key);
        // Only fails if closures were not enabled at build time, which `new` does.
        let _ = self
            .entries
            .invalidate_entries_if(move |_, entry| *entry.key == *key && entry.version == version);
    }

    /// Entries currently held (approximate, as moka counts lazily).
    pub(super) fn entry_count(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalidating_a_version_removes_its_entries() {
        let store = Store::new(&CacheConfig::default(), Metrics::new());
        let dek = || SecretBytes::zeroed(32);
        store.insert(entry_key(b"1", b"").into(), Arc::from("k"), 1, dek());
        store.insert(entry_key(b"2", b"").into(), Arc::from("k"), 2, dek());
        store.insert(entry_key(b"3", b"").into(), Arc::from("other"), 1, dek());
        store.invalidate_version("k", 1);
        assert!(store.get(&entry_key(b"1", b"")).is_none(), "never served once invalidated");
        assert!(store.get(&entry_key(b"2", b"")).is_some());
        assert!(store.get(&entry_key(b"3", b"")).is_some());
        for _ in 0..50 {
            if store.entry_count() == 2 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(store.entry_count(), 2, "and removed for good");
    }
}
