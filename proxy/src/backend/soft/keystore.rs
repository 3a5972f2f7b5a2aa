//! The soft keystore file: key material sealed under a passphrase.
//!
//! ```text
//! file := "KMXKS" format:u8 (=1) m_cost:u32 t_cost:u32 p_cost:u32 salt:[16] nonce:[12] sealed
//! ```
//! `sealed` is AES-256-GCM, under a key derived from the passphrase with Argon2id (the
//! memory-hard KDF; its costs are stored so they can be raised later), of a JSON
//! document listing keys and versions; the associated data is everything before it, so
//! the costs cannot be tampered with. Writes go to a temporary file that is renamed
//! over the old one, so a crash never leaves a half-written keystore.

use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::keys::{KeyInfo, KeyType, VersionInfo, VersionState};
use crate::secrets::{SecretError, write_private};

const MAGIC: &[u8; 5] = b"KMXKS";
const FORMAT: u8 = 1;
const SALT_LEN: usize = 16;
const NONCE_LEN: usize = 12;
const HEADER_LEN: usize = MAGIC.len() + 1 + 12 + SALT_LEN + NONCE_LEN;

/// What can go wrong with the keystore file. Never carries the passphrase.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeystoreError {
    /// The file or the passphrase file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The passphrase source gave nothing usable.
    #[error("passphrase: {0}")]
    Passphrase(#[from] SecretError),
    /// The file is not a keystore, or is damaged.
    #[error("{0}: not a keymux keystore, or damaged")]
    Format(PathBuf),
    /// The passphrase is wrong or the file was modified.
    #[error("{0}: wrong passphrase, or the keystore was modified")]
    Unseal(PathBuf),
    /// The KDF parameters are out of range.
    #[error("key derivation: {0}")]
    Kdf(String),
}

/// A version's key material, wiped on drop: 32 bytes for an `aes-256` key, the PKCS#8
/// DER of the private key for the others. (The JSON is an array of bytes either way, so
/// keystores written before signing keys existed read unchanged.)
#[derive(Clone, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
#[serde(transparent)]
pub(crate) struct Material(pub(crate) Vec<u8>);

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Material(<redacted>)")
    }
}

/// One stored key version.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StoredVersion {
    pub(crate) version: u32,
    pub(crate) state: VersionState,
    pub(crate) created_at: u64,
    /// When it was disabled; absent while enabled, and in keystores written before
    /// keymux recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) disabled_at: Option<u64>,
    pub(crate) material: Material,
}

/// One stored key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StoredKey {
    pub(crate) name: String,
    /// `aes-256` when absent: keystores written before key types existed.
    #[serde(default)]
    pub(crate) key_type: KeyType,
    pub(crate) min_decryption_version: u32,
    pub(crate) versions: Vec<StoredVersion>,
}

impl StoredKey {
    pub(crate) fn info(&self) -> KeyInfo {
        KeyInfo {
            name: self.name.clone(),
            key_type: self.key_type,
            versions: self
                .versions
                .iter()
                .map(|v| VersionInfo {
                    version: v.version,
                    state: v.state,
                    created_at: v.created_at,
                    disabled_at: v.disabled_at,
                })
                .collect(),
            min_decryption_version: self.min_decryption_version,
        }
    }
}

/// The keystore's decrypted contents.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Contents {
    pub(crate) keys: Vec<StoredKey>,
}

/// Argon2id costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes.
    pub passes: u32,
    /// Lanes.
    pub lanes: u32,
}

/// A keystore file and the key that seals it.
pub(crate) struct Keystore {
    path: PathBuf,
    params: KdfParams,
    salt: [u8; SALT_LEN],
    seal_key: Zeroizing<[u8; 32]>,
}

/// Fills `out` from the operating system's CSPRNG.
pub(crate) fn fill_random(out: &mut [u8]) {
    // The OS RNG failing is unrecoverable: continuing would risk weak keys or nonces.
    getrandom::fill(out).expect("the operating system's random number generator failed");
}

fn derive(passphrase: &str, salt: &[u8], params: KdfParams) -> Result<Zeroizing<[u8; 32]>, KeystoreError> {
    let argon_params = argon2::Params::new(params.memory_kib, params.passes, params.lanes, Some(32))
        .map_err(|e| KeystoreError::Kdf(e.to_string()))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, argon_params);
    let mut key = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into(passphrase.as_bytes(), salt, key.as_mut())
        .map_err(|e| KeystoreError::Kdf(e.to_string()))?;
    Ok(key)
}

impl Keystore {
    /// Creates a keystore handle for a new file (nothing is written yet).
    pub(crate) fn create(path: &Path, passphrase: &str, params: KdfParams) -> Result<Self, KeystoreError> {
        let mut salt = [0u8; SALT_LEN];
        fill_random(&mut salt);
        let seal_key = derive(passphrase, &salt, params)?;
        Ok(Self { path: path.to_owned(), params, salt, seal_key })
    }

    /// Opens and decrypts an existing file.
    pub(crate) fn open(path: &Path, passphrase: &str) -> Result<(Self, Contents), KeystoreError> {
        let bytes =
            std::fs::read(path).map_err(|source| KeystoreError::Io { path: path.to_owned(), source })?;
        let format_error = || KeystoreError::Format(path.to_owned());
        if bytes.len() < HEADER_LEN + 16 || &bytes[..MAGIC.len()] != MAGIC || bytes[MAGIC.len()] != FORMAT {
            return Err(format_error());
        }
        let word = |at: usize| u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
        let base = MAGIC.len() + 1;
        let params = KdfParams { memory_kib: word(base), passes: word(base + 4), lanes: word(base + 8) };
        let mut salt = [0u8; SALT_LEN];
        salt.copy_from_slice(&bytes[base + 12..base + 12 + SALT_LEN]);
        let seal_key = derive(passphrase, &salt, params)?;
        let store = Self { path: path.to_owned(), params, salt, seal_key };
        let nonce = &bytes[HEADER_LEN - NONCE_LEN..HEADER_LEN];
        let json = store.cipher().decrypt(
            &Nonce::try_from(nonce).map_err(|_| format_error())?,
            Payload { msg: &bytes[HEADER_LEN..], aad: &bytes[..HEADER_LEN] },
        );
        let json = Zeroizing::new(json.map_err(|_| KeystoreError::Unseal(path.to_owned()))?);
        let contents = serde_json::from_slice(&json).map_err(|_| format_error())?;
        Ok((store, contents))
    }

    /// Reads the file again with the key already derived, when its KDF header (costs
    /// and salt) is still this handle's; `None` if it changed (the file was recreated),
    /// and [`Keystore::open`] with the passphrase is needed.
    pub(crate) fn reread(&self) -> Result<Option<Contents>, KeystoreError> {
        let bytes = std::fs::read(&self.path)
            .map_err(|source| KeystoreError::Io { path: self.path.clone(), source })?;
        let format_error = || KeystoreError::Format(self.path.clone());
        if bytes.len() < HEADER_LEN + 16 || &bytes[..MAGIC.len()] != MAGIC || bytes[MAGIC.len()] != FORMAT {
            return Err(format_error());
        }
        let base = MAGIC.len() + 1;
        let mut header = Vec::with_capacity(12 + SALT_LEN);
        for word in [self.params.memory_kib, self.params.passes, self.params.lanes] {
            header.extend_from_slice(&word.to_be_bytes());
        }
        header.extend_from_slice(&self.salt);
        if bytes[base..base + 12 + SALT_LEN] != header[..] {
            return Ok(None);
        }
        let nonce = &bytes[HEADER_LEN - NONCE_LEN..HEADER_LEN];
        let json = self.cipher().decrypt(
            &Nonce::try_from(nonce).map_err(|_| format_error())?,
            Payload { msg: &bytes[HEADER_LEN..], aad: &bytes[..HEADER_LEN] },
        );
        let json = Zeroizing::new(json.map_err(|_| KeystoreError::Unseal(self.path.clone()))?);
        serde_json::from_slice(&json).map(Some).map_err(|_| format_error())
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new_from_slice(self.seal_key.as_ref()).expect("a 32-byte key")
    }

    /// Seals `contents` and replaces the file atomically.
    pub(crate) fn save(&self, contents: &Contents) -> Result<(), KeystoreError> {
        let json = Zeroizing::new(serde_json::to_vec(contents).expect("keystore contents serialize"));
        let mut out = Vec::with_capacity(HEADER_LEN + json.len() + 16);
        out.extend_from_slice(MAGIC);
        out.push(FORMAT);
        for word in [self.params.memory_kib, self.params.passes, self.params.lanes] {
            out.extend_from_slice(&word.to_be_bytes());
        }
        out.extend_from_slice(&self.salt);
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce);
        out.extend_from_slice(&nonce);
        let sealed = self
            .cipher()
            .encrypt(&Nonce::try_from(&nonce[..]).expect("12 bytes"), Payload { msg: &json, aad: &out })
            .map_err(|_| KeystoreError::Format(self.path.clone()))?;
        out.extend_from_slice(&sealed);
        write_private(&self.path, &out)
            .map_err(|source| KeystoreError::Io { path: self.path.clone(), source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: KdfParams = KdfParams { memory_kib: 8 * 1024, passes: 1, lanes: 1 };

    fn sample() -> Contents {
        Contents {
            keys: vec![StoredKey {
                name: "default".into(),
                key_type: KeyType::Aes256,
                min_decryption_version: 1,
                versions: vec![StoredVersion {
                    version: 1,
                    state: VersionState::Enabled,
                    created_at: 1,
                    disabled_at: None,
                    material: Material(vec![7; 32]),
                }],
            }],
        }
    }

    #[test]
    fn save_and_open_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keystore.kmx");
        Keystore::create(&path, "pass", FAST).unwrap().save(&sample()).unwrap();
        let (_, contents) = Keystore::open(&path, "pass").unwrap();
        assert_eq!(contents.keys[0].versions[0].material.0, [7; 32]);
        let raw = std::fs::read(&path).unwrap();
        assert!(!raw.windows(32).any(|w| w == [7; 32]), "material must not be stored in the clear");
    }

    #[test]
    fn wrong_passphrase_and_tampering_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keystore.kmx");
        Keystore::create(&path, "pass", FAST).unwrap().save(&sample()).unwrap();
        assert!(matches!(Keystore::open(&path, "other"), Err(KeystoreError::Unseal(_))));
        let mut raw = std::fs::read(&path).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        std::fs::write(&path, &raw).unwrap();
        assert!(matches!(Keystore::open(&path, "pass"), Err(KeystoreError::Unseal(_))));
        std::fs::write(&path, b"not a keystore").unwrap();
        assert!(matches!(Keystore::open(&path, "pass"), Err(KeystoreError::Format(_))));
    }
}
