//! The keys the proxy serves: a snapshot of the backend's, swapped atomically on each
//! refresh so the request path reads it without locks, and what changed between two
//! snapshots (for the audit log).

// Operator-chosen key names: a fast hasher, no flooding to fear.
use foldhash::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::{KeyInfo, VersionState};
use crate::error::OpError;

/// The keys the proxy serves, as last reported by the backend.
#[derive(Default)]
pub struct KeyRegistry {
    keys: ArcSwap<HashMap<String, Arc<KeyInfo>>>,
}

impl KeyRegistry {
    /// A registry holding `keys`.
    pub fn new(keys: Vec<KeyInfo>) -> Self {
        let registry = Self::default();
        registry.replace(keys);
        registry
    }

    /// Replaces the whole snapshot.
    pub fn replace(&self, keys: Vec<KeyInfo>) {
        let map = keys.into_iter().map(|key| (key.name.clone(), Arc::new(key))).collect();
        self.keys.store(Arc::new(map));
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
    fn registry_lookup() {
        let registry = KeyRegistry::new(vec![key(&[VersionState::Enabled], 1)]);
        assert!(registry.get("k").is_ok());
        assert_eq!(registry.get("nope").unwrap_err(), OpError::UnknownKey("nope".into()));
    }
}
