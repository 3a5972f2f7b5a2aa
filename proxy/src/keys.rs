//! Keys, their versions, and the registry the request path consults.
//!
//! A key is a name with numbered versions. The backend is the source of truth; the
//! registry holds a snapshot of what it reported, swapped atomically on refresh, so
//! the request path reads it without locks.

// Operator-chosen key names: a fast hasher, no flooding to fear.
use foldhash::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};

use crate::error::OpError;

/// Whether a key version may be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VersionState {
    /// Wraps (if current) and unwraps.
    Enabled,
    /// Neither wraps nor unwraps; can be enabled again.
    Disabled,
}

/// One version of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionInfo {
    /// Version number, from 1.
    pub version: u32,
    /// Enabled or disabled.
    pub state: VersionState,
    /// Creation time, seconds since the Unix epoch.
    pub created_at: u64,
}

/// A key as its backend reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// The key name.
    pub name: String,
    /// Its versions, in ascending order.
    pub versions: Vec<VersionInfo>,
    /// Unwraps of blobs from versions below this are refused.
    pub min_decryption_version: u32,
}

impl KeyInfo {
    /// The version new wraps use: the highest enabled one.
    pub fn current_version(&self) -> Result<u32, OpError> {
        self.versions.iter().rev().find(|v| v.state == VersionState::Enabled).map(|v| v.version).ok_or_else(
            || OpError::KeyDisabled {
                key: self.name.clone(),
                version: self.versions.last().map_or(0, |v| v.version),
            },
        )
    }

    /// Checks that a blob from `version` may be unwrapped.
    pub fn check_decryptable(&self, version: u32) -> Result<(), OpError> {
        let info = self
            .versions
            .iter()
            .find(|v| v.version == version)
            .ok_or_else(|| OpError::UnknownVersion { key: self.name.clone(), version })?;
        if info.state != VersionState::Enabled || version < self.min_decryption_version {
            return Err(OpError::KeyDisabled { key: self.name.clone(), version });
        }
        Ok(())
    }
}

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

    fn key(states: &[VersionState], min: u32) -> KeyInfo {
        KeyInfo {
            name: "k".into(),
            versions: states
                .iter()
                .enumerate()
                .map(|(i, &state)| VersionInfo { version: i as u32 + 1, state, created_at: 0 })
                .collect(),
            min_decryption_version: min,
        }
    }

    #[test]
    fn current_is_the_highest_enabled_version() {
        use VersionState::*;
        assert_eq!(key(&[Enabled, Enabled], 1).current_version(), Ok(2));
        assert_eq!(key(&[Enabled, Disabled], 1).current_version(), Ok(1));
        assert!(matches!(key(&[Disabled], 1).current_version(), Err(OpError::KeyDisabled { .. })));
    }

    #[test]
    fn decryptable_respects_state_and_minimum() {
        use VersionState::*;
        let k = key(&[Enabled, Disabled, Enabled], 1);
        assert_eq!(k.check_decryptable(1), Ok(()));
        assert!(matches!(k.check_decryptable(2), Err(OpError::KeyDisabled { version: 2, .. })));
        assert!(matches!(k.check_decryptable(9), Err(OpError::UnknownVersion { .. })));
        let k = key(&[Enabled, Enabled], 2);
        assert!(matches!(k.check_decryptable(1), Err(OpError::KeyDisabled { version: 1, .. })));
    }

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
