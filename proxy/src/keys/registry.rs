//! The keys the proxy serves: a snapshot of the backend's, swapped atomically on each
//! refresh so the request path reads it without locks, and what changed between two
//! snapshots (for the audit log).

// Operator-chosen key names: a fast hasher, no flooding to fear.
use foldhash::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use super::{KeyInfo, VersionState};
use crate::error::OpError;

/// The keys the proxy serves, as last reported by the backend, and when that was.
pub struct KeyRegistry {
    keys: ArcSwap<HashMap<String, Arc<KeyInfo>>>,
    epoch: Instant,
    /// Nanoseconds from `epoch` to the last [`KeyRegistry::replace`].
    refreshed: AtomicU64,
}

impl Default for KeyRegistry {
    fn default() -> Self {
        Self { keys: ArcSwap::default(), epoch: Instant::now(), refreshed: AtomicU64::new(0) }
    }
}

impl KeyRegistry {
    /// A registry holding `keys`.
    pub fn new(keys: Vec<KeyInfo>) -> Self {
        let registry = Self::default();
        registry.replace(keys);
        registry
    }

    /// Replaces the whole snapshot, as of now.
    pub fn replace(&self, keys: Vec<KeyInfo>) {
        let map = keys.into_iter().map(|key| (key.name.clone(), Arc::new(key))).collect();
        self.keys.store(Arc::new(map));
        let since = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.refreshed.store(since, Ordering::Release);
    }

    /// How long ago the snapshot was last replaced (read from the backend).
    pub fn age(&self) -> Duration {
        let refreshed = Duration::from_nanos(self.refreshed.load(Ordering::Acquire));
        self.epoch.elapsed().saturating_sub(refreshed)
    }

    /// Refuses new wraps on a snapshot older than `max_age`: an admin may have retired
    /// its current version since (and may destroy it next), so blobs made under it could
    /// be lost. Unwraps still work from the last snapshot. BACKEND_UNAVAILABLE, which a
    /// client retries.
    pub fn check_fresh(&self, max_age: Duration) -> Result<(), OpError> {
        let age = self.age();
        if age <= max_age {
            return Ok(());
        }
        Err(OpError::BackendUnavailable {
            reason: format!(
                "the key list was last read from the backend {}s ago (keys.max_staleness is {}s): \
                 new wraps wait for a successful refresh",
                age.as_secs(),
                max_age.as_secs()
            ),
            retry_after: Duration::from_secs(1),
        })
    }

    /// The key named `name`.
    pub fn get(&self, name: &str) -> Result<Arc<KeyInfo>, OpError> {
        self.keys.load().get(name).cloned().ok_or_else(|| OpError::UnknownKey(name.to_owned()))
    }

    /// Every key, sorted by name.
    pub fn list(&self) -> Vec<Arc<KeyInfo>> {
        let mut keys: Vec<_> = self.keys.load().values().cloned().collect();
        keys.sort_by(|a, b| a.name.cmp(&b.name));
        keys
    }
}

/// What changed between two snapshots of the keys, one line each, for the audit log:
/// keys and versions created or gone, versions enabled or disabled, minimum decryption
/// versions moved.
pub fn changes(old: &[Arc<KeyInfo>], new: &[KeyInfo]) -> Vec<String> {
    let mut out = Vec::new();
    for key in new {
        let Some(before) = old.iter().find(|k| k.name == key.name) else {
            out.push(format!("key {:?} appeared with versions {:?}", key.name, versions(key)));
            continue;
        };
        for version in &key.versions {
            match before.versions.iter().find(|v| v.version == version.version) {
                None => out.push(format!("key {:?} version {} created", key.name, version.version)),
                Some(was) if was.state != version.state => out.push(format!(
                    "key {:?} version {} {}",
                    key.name,
                    version.version,
                    if version.state == VersionState::Enabled { "enabled" } else { "disabled" }
                )),
                Some(_) => {}
            }
        }
        for version in &before.versions {
            if !key.versions.iter().any(|v| v.version == version.version) {
                out.push(format!("key {:?} version {} destroyed", key.name, version.version));
            }
        }
        if before.min_decryption_version != key.min_decryption_version {
            out.push(format!(
                "key {:?} min_decryption_version {} -> {}",
                key.name, before.min_decryption_version, key.min_decryption_version
            ));
        }
    }
    for key in old {
        if !new.iter().any(|k| k.name == key.name) {
            out.push(format!("key {:?} is gone", key.name));
        }
    }
    out
}

fn versions(key: &KeyInfo) -> Vec<u32> {
    key.versions.iter().map(|v| v.version).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::test_key as key;

    #[test]
    fn changes_between_snapshots() {
        use VersionState::*;
        let old = vec![Arc::new(key(&[Enabled, Enabled], 1))];
        let mut new = key(&[Disabled, Enabled, Enabled], 2);
        new.versions.remove(1);
        let other = KeyInfo { name: "other".into(), ..key(&[Enabled], 1) };
        let lines = changes(&old, &[new, other]);
        assert_eq!(
            lines,
            vec![
                "key \"k\" version 1 disabled",
                "key \"k\" version 3 created",
                "key \"k\" version 2 destroyed",
                "key \"k\" min_decryption_version 1 -> 2",
                "key \"other\" appeared with versions [1]",
            ]
        );
        assert!(changes(&old, &[key(&[Enabled, Enabled], 1)]).is_empty());
        assert_eq!(changes(&old, &[]), vec!["key \"k\" is gone"]);
    }

    #[test]
    fn a_stale_snapshot_refuses_new_wraps() {
        let registry = KeyRegistry::new(vec![key(&[VersionState::Enabled], 1)]);
        assert_eq!(registry.check_fresh(Duration::from_secs(60)), Ok(()));
        std::thread::sleep(Duration::from_millis(20));
        assert!(matches!(
            registry.check_fresh(Duration::from_millis(10)),
            Err(OpError::BackendUnavailable { .. })
        ));
        registry.replace(vec![key(&[VersionState::Enabled], 1)]);
        assert_eq!(registry.check_fresh(Duration::from_millis(10)), Ok(()), "fresh again once refreshed");
    }

    #[test]
    fn registry_lookup() {
        let registry = KeyRegistry::new(vec![key(&[VersionState::Enabled], 1)]);
        assert!(registry.get("k").is_ok());
        assert_eq!(registry.get("nope").unwrap_err(), OpError::UnknownKey("nope".into()));
    }
}
