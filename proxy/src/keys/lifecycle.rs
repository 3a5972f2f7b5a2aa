//! The rules of a key's life, written once for every backend: valid names, "already
//! exists", the next version number, what may be disabled or destroyed, and the
//! minimum decryption version.
//!
//! Each backend implements the narrow [`KeyStore`]: a listing and four writes, each of
//! one record, each atomic on the backend itself (so two admins racing on one HSM
//! cannot both create version 3). [`KeyLifecycle`], implemented for every key store,
//! applies the rules over it. Refusals are a typed [`KeyAdminError`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{KeyInfo, KeyType, VersionState};
use crate::backend::BackendFault;
use crate::error::OpError;

/// What key administration needs from a backend.
pub trait KeyStore: Send + Sync {
    /// Every key and version the backend holds: the source of truth.
    fn list_keys(&self) -> Result<Vec<KeyInfo>, BackendFault>;

    /// Backend-specific limits on key names beyond the common rules (KMS aliases allow
    /// fewer characters, say). Default: none.
    fn check_name(&self, _name: &str) -> Result<(), KeyAdminError> {
        Ok(())
    }

    /// Creates `version` of `name`, of `key_type`, as a new, enabled version (version 1
    /// creates the key). If that version appeared meanwhile (another admin made it),
    /// fails with [`KeyAdminError::ConcurrentChange`] and leaves the other admin's
    /// version alone. A backend that cannot hold `key_type` refuses with
    /// [`KeyAdminError::UnsupportedKeyType`].
    fn write_new_version(&self, name: &str, version: u32, key_type: KeyType) -> Result<(), KeyAdminError>;

    /// The DER SubjectPublicKeyInfo of `version` of `name`, an asymmetric key.
    fn public_key(&self, name: &str, version: u32) -> Result<Vec<u8>, BackendFault>;

    /// Enables or disables an existing version.
    fn write_version_state(&self, name: &str, version: u32, state: VersionState)
    -> Result<(), KeyAdminError>;

    /// Records that blobs from versions below `version` may no longer be unwrapped.
    fn write_min_decryption_version(&self, name: &str, version: u32) -> Result<(), KeyAdminError>;

    /// Destroys one version's key material for good.
    fn erase_version(&self, name: &str, version: u32) -> Result<(), KeyAdminError>;

    /// Whether [`KeyStore::erase_version`] only schedules the destruction, after a
    /// waiting period the backend itself enforces and that can be cancelled (AWS KMS's
    /// pending deletion window). Destroy then needs the version disabled, but not
    /// disabled for `keys.destroy_safe_period` first. Default: no.
    fn erase_is_deferred(&self) -> bool {
        false
    }
}

/// Why a key administration request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyAdminError {
    /// Key names are 1 to 255 bytes of UTF-8 (a str8) with no control characters, and
    /// whatever else the backend requires.
    #[error("invalid key name {name:?}: {reason}")]
    InvalidName {
        /// The name asked for.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// A key of that name exists.
    #[error("key {0:?} already exists")]
    AlreadyExists(String),
    /// This backend cannot hold keys of this type.
    #[error("the {backend} backend cannot hold {key_type} keys")]
    UnsupportedKeyType {
        /// The type asked for.
        key_type: KeyType,
        /// The backend (`soft`, `pkcs11`, `kms`).
        backend: &'static str,
    },
    /// No key of that name.
    #[error("unknown key {0:?}")]
    UnknownKey(String),
    /// The key has no such version (never created, or destroyed).
    #[error("key {key:?} has no version {version}")]
    UnknownVersion {
        /// The key.
        key: String,
        /// The version asked for.
        version: u32,
    },
    /// The current version cannot be destroyed: new wraps use it.
    #[error("version {version} is the current version of {key:?}: rotate first")]
    CurrentVersion {
        /// The key.
        key: String,
        /// The version asked for.
        version: u32,
    },
    /// The latest version cannot be destroyed, even disabled: version numbers are never
    /// reused, so a blob can never name a version other than the one that sealed it.
    #[error(
        "version {version} is the latest version of {key:?}: rotate first, so version numbers are never reused"
    )]
    LatestVersion {
        /// The key.
        key: String,
        /// The version asked for.
        version: u32,
    },
    /// Only a disabled version may be destroyed, so clients learn (KEY_DISABLED) that
    /// its blobs are going before they are gone.
    #[error(
        "version {version} of {key:?} is enabled: disable it, then destroy it once it has been disabled for keys.destroy_safe_period"
    )]
    NotDisabled {
        /// The key.
        key: String,
        /// The version asked for.
        version: u32,
    },
    /// The version has not been disabled for `keys.destroy_safe_period` yet: a proxy
    /// that has not refreshed its keys may still have been wrapping under it, and
    /// clients need time to rewrap.
    #[error(
        "version {version} of {key:?} was disabled {}; it may be destroyed once it has been disabled for {} (keys.destroy_safe_period)",
        disabled_for.map_or("at an unknown time (before keymux recorded it): enable and disable it again to start the period".to_owned(), |d| format!("{} ago", humantime::format_duration(d))),
        humantime::format_duration(*safe_period)
    )]
    DisabledTooRecently {
        /// The key.
        key: String,
        /// The version asked for.
        version: u32,
        /// How long it has been disabled, if known.
        disabled_for: Option<Duration>,
        /// How long it must have been.
        safe_period: Duration,
    },
    /// A minimum decryption version above the current version would leave new wraps no
    /// version to use.
    #[error(
        "version {minimum} of {key:?} is above its current version ({}): rotate or enable a version first",
        current.map_or("none".to_owned(), |v| v.to_string())
    )]
    MinimumAboveCurrent {
        /// The key.
        key: String,
        /// The minimum asked for.
        minimum: u32,
        /// The current version (the highest enabled), if any.
        current: Option<u32>,
    },
    /// Another admin changed the same record at the same time; nothing was changed.
    #[error("key {key:?} version {version} was created concurrently by another admin; retry")]
    ConcurrentChange {
        /// The key.
        key: String,
        /// The version.
        version: u32,
    },
    /// The backend failed.
    #[error(transparent)]
    Backend(#[from] BackendFault),
}

impl KeyAdminError {
    /// The operation error this refusal is on the wire (one status per refusal).
    pub fn into_op_error(self) -> OpError {
        match self {
            KeyAdminError::UnknownKey(key) => OpError::UnknownKey(key),
            KeyAdminError::UnknownVersion { key, version } => OpError::UnknownVersion { key, version },
            KeyAdminError::Backend(fault) => fault.into_op_error("", 0),
            refused => OpError::BadRequest(refused.to_string()),
        }
    }
}

/// The key rules over any [`KeyStore`]: implemented for every store, backends included.
pub trait KeyLifecycle: KeyStore {
    /// The key named `name`.
    fn find_key(&self, name: &str) -> Result<KeyInfo, KeyAdminError> {
        self.list_keys()?
            .into_iter()
            .find(|key| key.name == name)
            .ok_or_else(|| KeyAdminError::UnknownKey(name.to_owned()))
    }

    /// Creates key `name` of `key_type` with version 1.
    fn create_key(&self, name: &str, key_type: KeyType) -> Result<KeyInfo, KeyAdminError> {
        validate_name(name)?;
        self.check_name(name)?;
        if self.list_keys()?.iter().any(|key| key.name == name) {
            return Err(KeyAdminError::AlreadyExists(name.to_owned()));
        }
        self.write_new_version(name, 1, key_type)?;
        self.find_key(name)
    }

    /// Adds a version to `name`, of the key's type, which becomes current; returns its
    /// number (one above the highest ever listed, so numbers are never reused).
    fn rotate_key(&self, name: &str) -> Result<u32, KeyAdminError> {
        let key = self.find_key(name)?;
        let version = key.versions.last().map_or(1, |v| v.version + 1);
        self.write_new_version(name, version, key.key_type)?;
        Ok(version)
    }

    /// Enables or disables one version.
    fn set_version_state(&self, name: &str, version: u32, state: VersionState) -> Result<(), KeyAdminError> {
        check_version_exists(&self.find_key(name)?, version)?;
        self.write_version_state(name, version, state)
    }

    /// Refuses unwraps of blobs from versions below `version`, which must exist and may
    /// not be above the current version (new wraps would have no version left to use).
    fn set_min_decryption_version(&self, name: &str, version: u32) -> Result<(), KeyAdminError> {
        let key = self.find_key(name)?;
        check_version_exists(&key, version)?;
        let current = key.versions.iter().rev().find(|v| v.state == VersionState::Enabled).map(|v| v.version);
        if current.is_none_or(|current| version > current) {
            return Err(KeyAdminError::MinimumAboveCurrent {
                key: name.to_owned(),
                minimum: version,
                current,
            });
        }
        self.write_min_decryption_version(name, version)
    }

    /// Checks that `version` of `name` may be destroyed (see [`check_destroyable`]),
    /// with `safe_period` as `keys.destroy_safe_period`, returning the key as listed.
    fn check_destroyable(
        &self,
        name: &str,
        version: u32,
        safe_period: Duration,
    ) -> Result<KeyInfo, KeyAdminError> {
        let key = self.find_key(name)?;
        let safe_period = (!self.erase_is_deferred()).then_some(safe_period);
        check_destroyable(&key, version, safe_period, unix_now())?;
        Ok(key)
    }

    /// Destroys one version's key material for good: never the current or the latest
    /// version, and only one disabled for at least `safe_period`.
    fn destroy_version(&self, name: &str, version: u32, safe_period: Duration) -> Result<(), KeyAdminError> {
        KeyLifecycle::check_destroyable(self, name, version, safe_period)?;
        self.erase_version(name, version)
    }
}

impl<S: KeyStore + ?Sized> KeyLifecycle for S {}

/// Checks a key name: 1 to 255 bytes of UTF-8 (a str8), no control characters.
pub fn validate_name(name: &str) -> Result<(), KeyAdminError> {
    let reason = if name.is_empty() {
        "empty"
    } else if name.len() > 255 {
        "longer than 255 bytes"
    } else if name.chars().any(char::is_control) {
        "contains a control character"
    } else {
        return Ok(());
    };
    Err(KeyAdminError::InvalidName { name: name.chars().take(64).collect(), reason })
}

fn check_version_exists(key: &KeyInfo, version: u32) -> Result<(), KeyAdminError> {
    if key.versions.iter().any(|v| v.version == version) {
        Ok(())
    } else {
        Err(KeyAdminError::UnknownVersion { key: key.name.clone(), version })
    }
}

/// Seconds since the Unix epoch, as the backends stamp versions.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Checks that `version` of `key` may be destroyed at `now` (seconds since the Unix
/// epoch): it exists, it is neither the current version (new wraps use it) nor the
/// highest (version numbers are never reused, so a blob can never name a version other
/// than the one that sealed it), it is disabled, and, unless `safe_period` is `None`
/// (the backend waits itself), it has been disabled for at least `safe_period`.
pub fn check_destroyable(
    key: &KeyInfo,
    version: u32,
    safe_period: Option<Duration>,
    now: u64,
) -> Result<(), KeyAdminError> {
    check_version_exists(key, version)?;
    let refusal = |version| (key.name.clone(), version);
    if key.current_version().ok() == Some(version) {
        let (key, version) = refusal(version);
        return Err(KeyAdminError::CurrentVersion { key, version });
    }
    if key.versions.last().is_some_and(|v| v.version == version) {
        let (key, version) = refusal(version);
        return Err(KeyAdminError::LatestVersion { key, version });
    }
    let listed = key.versions.iter().find(|v| v.version == version).expect("checked above");
    if listed.state == VersionState::Enabled {
        let (key, version) = refusal(version);
        return Err(KeyAdminError::NotDisabled { key, version });
    }
    if let Some(safe_period) = safe_period {
        let disabled_for = listed.disabled_at.map(|at| Duration::from_secs(now.saturating_sub(at)));
        if disabled_for.is_none_or(|disabled_for| disabled_for < safe_period) {
            let (key, version) = refusal(version);
            return Err(KeyAdminError::DisabledTooRecently { key, version, disabled_for, safe_period });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::keys::VersionInfo;

    /// A key store in memory, to test the rules alone.
    #[derive(Default)]
    struct MemoryStore {
        keys: Mutex<Vec<KeyInfo>>,
    }

    impl KeyStore for MemoryStore {
        fn list_keys(&self) -> Result<Vec<KeyInfo>, BackendFault> {
            Ok(self.keys.lock().unwrap().clone())
        }

        fn write_new_version(
            &self,
            name: &str,
            version: u32,
            key_type: KeyType,
        ) -> Result<(), KeyAdminError> {
            let mut keys = self.keys.lock().unwrap();
            let new = VersionInfo { version, state: VersionState::Enabled, created_at: 0, disabled_at: None };
            match keys.iter_mut().find(|k| k.name == name) {
                Some(key) if key.versions.iter().any(|v| v.version == version) => {
                    return Err(KeyAdminError::ConcurrentChange { key: name.into(), version });
                }
                Some(key) => key.versions.push(new),
                None => keys.push(KeyInfo {
                    name: name.into(),
                    key_type,
                    versions: vec![new],
                    min_decryption_version: 1,
                }),
            }
            Ok(())
        }

        fn public_key(&self, _name: &str, _version: u32) -> Result<Vec<u8>, BackendFault> {
            Err(BackendFault::Final(OpError::Unsupported))
        }

        fn write_version_state(
            &self,
            name: &str,
            version: u32,
            state: VersionState,
        ) -> Result<(), KeyAdminError> {
            let mut keys = self.keys.lock().unwrap();
            let key = keys.iter_mut().find(|k| k.name == name).unwrap();
            let listed = key.versions.iter_mut().find(|v| v.version == version).unwrap();
            listed.state = state;
            listed.disabled_at = (state == VersionState::Disabled).then(unix_now);
            Ok(())
        }

        fn write_min_decryption_version(&self, name: &str, version: u32) -> Result<(), KeyAdminError> {
            self.keys.lock().unwrap().iter_mut().find(|k| k.name == name).unwrap().min_decryption_version =
                version;
            Ok(())
        }

        fn erase_version(&self, name: &str, version: u32) -> Result<(), KeyAdminError> {
            let mut keys = self.keys.lock().unwrap();
            keys.iter_mut().find(|k| k.name == name).unwrap().versions.retain(|v| v.version != version);
            Ok(())
        }
    }

    #[test]
    fn names_are_checked_and_never_reused() {
        let store = MemoryStore::default();
        assert!(matches!(store.create_key("", KeyType::Aes256), Err(KeyAdminError::InvalidName { .. })));
        assert!(matches!(store.create_key("a\nb", KeyType::Aes256), Err(KeyAdminError::InvalidName { .. })));
        assert!(matches!(
            store.create_key(&"x".repeat(256), KeyType::Aes256),
            Err(KeyAdminError::InvalidName { .. })
        ));
        store.create_key("k", KeyType::Aes256).unwrap();
        assert_eq!(store.create_key("k", KeyType::Aes256), Err(KeyAdminError::AlreadyExists("k".into())));
        assert_eq!(store.rotate_key("k"), Ok(2));
        assert_eq!(store.rotate_key("nope"), Err(KeyAdminError::UnknownKey("nope".into())));
    }

    #[test]
    fn rotation_keeps_the_type() {
        let store = MemoryStore::default();
        store.create_key("sig", KeyType::Ed25519).unwrap();
        store.rotate_key("sig").unwrap();
        assert_eq!(store.find_key("sig").unwrap().key_type, KeyType::Ed25519);
    }

    #[test]
    fn destroy_spares_the_current_and_the_latest_version() {
        let store = MemoryStore::default();
        store.create_key("k", KeyType::Aes256).unwrap();
        assert!(matches!(
            store.destroy_version("k", 1, Duration::ZERO),
            Err(KeyAdminError::CurrentVersion { version: 1, .. })
        ));
        store.rotate_key("k").unwrap();
        store.set_version_state("k", 2, VersionState::Disabled).unwrap();
        assert!(matches!(
            store.destroy_version("k", 2, Duration::ZERO),
            Err(KeyAdminError::LatestVersion { version: 2, .. })
        ));
        assert!(matches!(
            store.destroy_version("k", 7, Duration::ZERO),
            Err(KeyAdminError::UnknownVersion { version: 7, .. })
        ));
        store.set_version_state("k", 2, VersionState::Enabled).unwrap();
        store.set_version_state("k", 1, VersionState::Disabled).unwrap();
        store.destroy_version("k", 1, Duration::ZERO).unwrap();
        assert_eq!(store.rotate_key("k"), Ok(3), "numbers are never reused");
    }

    #[test]
    fn only_a_version_disabled_for_the_safe_period_is_destroyed() {
        let store = MemoryStore::default();
        store.create_key("k", KeyType::Aes256).unwrap();
        store.rotate_key("k").unwrap();
        store.rotate_key("k").unwrap();
        let week = Duration::from_secs(7 * 24 * 3600);
        assert!(matches!(
            store.destroy_version("k", 1, week),
            Err(KeyAdminError::NotDisabled { version: 1, .. })
        ));
        store.set_version_state("k", 1, VersionState::Disabled).unwrap();
        let refused = store.destroy_version("k", 1, week).unwrap_err();
        assert!(
            matches!(refused, KeyAdminError::DisabledTooRecently { version: 1, disabled_for: Some(_), .. }),
            "{refused}"
        );
        assert!(refused.to_string().contains("7days"), "the message names the period: {refused}");

        let key = store.find_key("k").unwrap();
        let disabled_at = key.versions[0].disabled_at.unwrap();
        let day = 24 * 3600;
        assert!(check_destroyable(&key, 1, Some(week), disabled_at + 7 * day - 1).is_err(), "a second early");
        assert_eq!(check_destroyable(&key, 1, Some(week), disabled_at + 7 * day), Ok(()));
        assert_eq!(check_destroyable(&key, 1, None, disabled_at), Ok(()), "a backend that waits itself");

        // Disabled before keymux recorded when: refused until disabled again.
        let mut unknown = key.clone();
        unknown.versions[0].disabled_at = None;
        let refused = check_destroyable(&unknown, 1, Some(week), disabled_at + 30 * day).unwrap_err();
        assert!(
            matches!(refused, KeyAdminError::DisabledTooRecently { disabled_for: None, .. }),
            "{refused}"
        );
        assert!(refused.to_string().contains("unknown time"), "{refused}");
        // Enabling again restarts the period.
        store.set_version_state("k", 1, VersionState::Enabled).unwrap();
        assert_eq!(store.find_key("k").unwrap().versions[0].disabled_at, None);
    }

    #[test]
    fn state_and_minimum_need_an_existing_version() {
        let store = MemoryStore::default();
        store.create_key("k", KeyType::Aes256).unwrap();
        assert!(matches!(
            store.set_version_state("k", 2, VersionState::Disabled),
            Err(KeyAdminError::UnknownVersion { version: 2, .. })
        ));
        assert!(matches!(
            store.set_min_decryption_version("k", 3),
            Err(KeyAdminError::UnknownVersion { .. })
        ));
        store.set_min_decryption_version("k", 1).unwrap();
    }

    #[test]
    fn the_minimum_never_passes_the_current_version() {
        let store = MemoryStore::default();
        store.create_key("k", KeyType::Aes256).unwrap();
        store.rotate_key("k").unwrap();
        store.set_version_state("k", 2, VersionState::Disabled).unwrap();
        assert_eq!(
            store.set_min_decryption_version("k", 2),
            Err(KeyAdminError::MinimumAboveCurrent { key: "k".into(), minimum: 2, current: Some(1) })
        );
        store.set_version_state("k", 2, VersionState::Enabled).unwrap();
        store.set_min_decryption_version("k", 2).unwrap();
        assert_eq!(store.find_key("k").unwrap().current_version(), Ok(2));
    }

    #[test]
    fn refusals_map_to_one_status_each() {
        use keymux_protocol::Status;
        assert_eq!(KeyAdminError::UnknownKey("k".into()).into_op_error().status(), Status::UnknownKey);
        assert_eq!(KeyAdminError::AlreadyExists("k".into()).into_op_error().status(), Status::BadRequest);
        let throttled = BackendFault::Retryable {
            reason: crate::backend::RetryReason::Throttled,
            retry_after: std::time::Duration::from_secs(1),
        };
        assert_eq!(KeyAdminError::Backend(throttled).into_op_error().status(), Status::Busy);
    }
}
