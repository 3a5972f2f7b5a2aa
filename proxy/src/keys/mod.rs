//! Keys and their versions: what a key is ([`KeyInfo`]), the snapshot the request path
//! consults ([`registry`]), the rules of creating, rotating, disabling and destroying
//! versions ([`lifecycle`]), and how a running proxy follows the backend ([`refresh`]).
//!
//! A key is a name with numbered versions. The backend is the source of truth; the
//! registry holds a snapshot of what it reported, swapped atomically on refresh, so
//! the request path reads it without locks.

pub mod lifecycle;
mod refresh;
mod registry;

use serde::{Deserialize, Serialize};

pub use lifecycle::{KeyAdminError, KeyLifecycle, KeyStore};
pub use refresh::KeyRefresher;
pub use registry::{KeyRegistry, changes};

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

/// Key `k` with one version per state, numbered from 1, for the modules' tests.
#[cfg(test)]
pub(crate) fn test_key(states: &[VersionState], min_decryption_version: u32) -> KeyInfo {
    KeyInfo {
        name: "k".into(),
        versions: states
            .iter()
            .enumerate()
            .map(|(i, &state)| VersionInfo { version: i as u32 + 1, state, created_at: 0 })
            .collect(),
        min_decryption_version,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_key as key;

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
}
