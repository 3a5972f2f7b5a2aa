//! Keys and their versions: what a key is ([`KeyInfo`]), the snapshot the request path
//! consults ([`registry`]), the rules of creating, rotating, disabling and destroying
//! versions ([`lifecycle`]), and how a running proxy follows the backend ([`refresh`]).
//!
//! A key is a name with numbered versions. The backend is the source of truth; the
//! registry holds a snapshot of what it reported, swapped atomically on refresh, so
//! the request path reads it without locks.

pub mod lifecycle;
mod public_keys;
mod refresh;
mod registry;

use serde::{Deserialize, Serialize};

pub use keymux_crypto::KeyType;
pub use lifecycle::{KeyAdminError, KeyLifecycle, KeyStore};
pub use public_keys::PublicKeys;
pub use refresh::KeyRefresher;
pub use registry::{KeyRegistry, changes};

use keymux_protocol::Algorithm;

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
    /// When it was disabled, seconds since the Unix epoch: `None` while enabled, or
    /// where the backend cannot tell (a version disabled by an older keymux, or on AWS
    /// KMS, whose own deletion window does the waiting).
    pub disabled_at: Option<u64>,
}

/// A key as its backend reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// The key name.
    pub name: String,
    /// What kind of key it is; every version has the same type (rotation keeps it).
    pub key_type: KeyType,
    /// Its versions, in ascending order.
    pub versions: Vec<VersionInfo>,
    /// Unwraps of blobs from versions below this are refused.
    pub min_decryption_version: u32,
}

impl KeyInfo {
    /// The wire algorithm of the key's public key, for an asymmetric key. The protocol
    /// crate and the crypto crate name key types alike, so the name is the mapping.
    pub fn algorithm(&self) -> Option<Algorithm> {
        self.key_type.name().parse().ok()
    }

    /// Refuses an operation this key's type cannot do, saying why (BAD_REQUEST).
    pub fn check_wraps(&self) -> Result<(), OpError> {
        if self.key_type.is_wrapping() {
            return Ok(());
        }
        Err(OpError::BadRequest(format!(
            "key {:?} is a {} signing key: it signs and verifies, it does not wrap",
            self.name, self.key_type
        )))
    }

    /// Refuses SIGN and VERIFY on a key that does not sign, saying why (BAD_REQUEST).
    pub fn check_signs(&self) -> Result<Algorithm, OpError> {
        match self.algorithm() {
            Some(algorithm) if algorithm.signs() => Ok(algorithm),
            _ => Err(OpError::BadRequest(format!(
                "key {:?} is a {} wrapping key: it wraps and unwraps, it does not sign",
                self.name, self.key_type
            ))),
        }
    }

    /// Checks that `version` exists and is enabled for verification or a public-key
    /// read: UNKNOWN_KEY if it never existed or was destroyed, KEY_DISABLED if it is
    /// disabled or below the minimum version.
    pub fn check_usable(&self, version: u32) -> Result<(), OpError> {
        match self.check_decryptable(version) {
            Err(OpError::UnknownVersion { key, version }) => Err(OpError::VersionNotFound { key, version }),
            other => other,
        }
    }

    /// The version new wraps use: the highest enabled one.
    ///
    /// Only a version at or above `min_decryption_version` can be current: a wrap under a
    /// lower one would make a blob that can never be unwrapped.
    pub fn current_version(&self) -> Result<u32, OpError> {
        self.versions
            .iter()
            .rev()
            .find(|v| v.state == VersionState::Enabled && v.version >= self.min_decryption_version)
            .map(|v| v.version)
            .ok_or_else(|| OpError::KeyDisabled {
                key: self.name.clone(),
                version: self.versions.last().map_or(0, |v| v.version),
            })
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

    /// The version an ENCRYPT asking for `version` uses: the current one for 0, else
    /// `version` itself if it may be used (as [`KeyInfo::check_decryptable`]).
    pub fn encryption_version(&self, version: u32) -> Result<u32, OpError> {
        if version == 0 {
            return self.current_version();
        }
        self.check_decryptable(version)?;
        Ok(version)
    }
}

/// Key `k` with one version per state, numbered from 1, for the modules' tests.
#[cfg(test)]
pub(crate) fn test_key(states: &[VersionState], min_decryption_version: u32) -> KeyInfo {
    KeyInfo {
        name: "k".into(),
        key_type: KeyType::Aes256,
        versions: states
            .iter()
            .enumerate()
            .map(|(i, &state)| VersionInfo { version: i as u32 + 1, state, created_at: 0, disabled_at: None })
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
        // Never a version below the minimum: its blobs could not be unwrapped.
        assert!(matches!(
            key(&[Enabled, Enabled, Disabled], 3).current_version(),
            Err(OpError::KeyDisabled { .. })
        ));
        assert_eq!(key(&[Enabled, Enabled, Enabled], 2).current_version(), Ok(3));
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
