//! Keeps a running proxy's registry in step with its backend.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{KeyRegistry, KeyStore, PublicKeys, changes};
use crate::audit::{AuditLog, Event};
use crate::backend::BackendFault;
use crate::cache::UnwrapCache;

/// Re-reads keys and versions so new and disabled versions take effect, drops cached
/// DEKs of versions that may no longer be unwrapped, and audits every change it sees.
/// Key administration (`keymux key ...`) happens in another process, or another proxy;
/// this is where the running proxy, the audit log's one writer, learns of it.
pub struct KeyRefresher {
    store: Arc<dyn KeyStore>,
    registry: Arc<KeyRegistry>,
    public_keys: Arc<PublicKeys>,
    cache: Option<Arc<UnwrapCache>>,
    audit: AuditLog,
}

impl KeyRefresher {
    /// A refresher of `registry` and `public_keys` from `store`, invalidating `cache`
    /// and recording changes in `audit`.
    pub fn new(
        store: Arc<dyn KeyStore>,
        registry: Arc<KeyRegistry>,
        public_keys: Arc<PublicKeys>,
        cache: Option<Arc<UnwrapCache>>,
        audit: AuditLog,
    ) -> Self {
        Self { store, registry, public_keys, cache, audit }
    }

    /// Re-reads the keys now.
    pub fn refresh(&self) -> Result<(), BackendFault> {
        let keys = self.store.list_keys()?;
        let old = self.registry.list();
        if let Some(cache) = &self.cache {
            // Only transitions matter: a version that could be unwrapped before and
            // cannot now (disabled, below the minimum, or destroyed) leaves the cache.
            for old in &old {
                let new = keys.iter().find(|k| k.name == old.name);
                for version in &old.versions {
                    let was = old.check_decryptable(version.version).is_ok();
                    let is = new.is_some_and(|k| k.check_decryptable(version.version).is_ok());
                    if was && !is {
                        cache.invalidate_version(&old.name, version.version);
                    }
                }
            }
        }
        for change in changes(&old, &keys) {
            tracing::info!(%change, "key change");
            self.audit.record(Event::Admin { action: "key_change".into(), detail: change });
        }
        self.public_keys.refresh(&*self.store, &keys);
        self.registry.replace(keys);
        Ok(())
    }

    /// Refreshes every `interval` until `shutdown`, on a blocking thread (a backend's
    /// listing may be slow HSM calls).
    pub async fn run(self: Arc<Self>, interval: Duration, shutdown: CancellationToken) {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = shutdown.cancelled() => return,
            }
            let refresher = Arc::clone(&self);
            if let Ok(Err(error)) = tokio::task::spawn_blocking(move || refresher.refresh()).await {
                tracing::warn!(%error, "key refresh failed; keeping the last known keys");
            }
        }
    }
}
