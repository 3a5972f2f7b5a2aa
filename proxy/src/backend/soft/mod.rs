//! The embedded soft keystore: the default backend, so that a first run needs nothing
//! installed. **For development only**: the KEKs live in this process's memory and in
//! a local file sealed under a passphrase, not in an HSM.
//!
//! Every key type lives here. `aes-256` blobs are direct mode; the body is
//! `nonce:[12] ciphertext+tag` from AES-256-GCM under the key version's KEK, with the
//! blob header followed by the client AAD as the associated data. Nonces are 96 random
//! bits from the OS CSPRNG: safe up to about 2^32 wraps per key version, far beyond a
//! development keystore's use; rotate sooner. `ml-kem-768` blobs are KEM mode (3):
//! see `keymux_crypto::kem`. Signing keys sign with `keymux_crypto`, and the private
//! keys of both are kept as PKCS#8 DER in the sealed file.

mod config;
mod keystore;
mod worker;

pub use config::SoftConfig;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use zeroize::Zeroizing;

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::KeyInit;
use keymux_crypto::PrivateKey;

use keystore::{Contents, Keystore, Material, StoredKey, StoredVersion, fill_random};
pub use keystore::{KdfParams, KeystoreError};

use crate::backend::{Backend, BackendFault, BackendWorker};
use crate::error::OpError;
use crate::keys::lifecycle::unix_now;
use crate::keys::{KeyAdminError, KeyInfo, KeyStore, KeyType, VersionState};

const NONCE_LEN: usize = 12;

/// The key created in a new keystore.
pub const DEFAULT_KEY: &str = "default";

/// A version's key, ready to use.
pub(super) enum VersionKey {
    /// An `aes-256` key's expanded key schedule.
    Aes(Box<Aes256Gcm>),
    /// A signing or ML-KEM key's parsed private key.
    Private(Box<PrivateKey>),
}

pub(super) struct SoftState {
    keystore: Keystore,
    contents: Contents,
    /// Every version's key, ready to use, by key name, then version.
    pub(super) keys: HashMap<String, HashMap<u32, Arc<VersionKey>>>,
    passphrase: Zeroizing<String>,
    /// The file's stamp when last read or written, to notice changes made by
    /// `keymux key ...` from another process.
    stamp: Option<FileStamp>,
}

/// A keystore file that cannot be read or written: final, since retrying the same
/// file will not help (the message names the file, never the passphrase).
fn store_fault(error: KeystoreError) -> BackendFault {
    BackendFault::Final(OpError::Internal(error.to_string()))
}

/// What identifies one written version of the keystore file: every write replaces the
/// file (a new inode), so the inode tells a rewrite apart even within one mtime tick.
fn file_stamp(path: &std::path::Path) -> Option<FileStamp> {
    let metadata = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&metadata);
    #[cfg(not(unix))]
    let inode = 0;
    Some((metadata.modified().ok()?, metadata.len(), inode))
}

/// The modification time, size and inode of the keystore file.
type FileStamp = (SystemTime, u64, u64);

/// Holds the keystore's lock file exclusively, so one writer at a time (in this process
/// or another: `keymux key ...` beside a running proxy) reads, changes and saves.
/// Released on drop.
struct WriteLock(#[allow(dead_code)] std::fs::File);

impl WriteLock {
    fn take(keystore: &std::path::Path) -> Result<Self, BackendFault> {
        let path = keystore.with_extension("kmx.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .and_then(|file| {
                rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
                    .map(|()| file)
                    .map_err(std::io::Error::from)
            })
            .map_err(|error| {
                BackendFault::Final(OpError::Internal(format!("cannot lock {}: {error}", path.display())))
            })?;
        Ok(Self(file))
    }
}

impl SoftState {
    fn new(
        keystore: Keystore,
        contents: Contents,
        passphrase: Zeroizing<String>,
        path: &std::path::Path,
    ) -> Self {
        let mut state =
            Self { keystore, contents, keys: HashMap::new(), passphrase, stamp: file_stamp(path) };
        state.rebuild_keys();
        state
    }

    /// Re-reads the keystore if another process changed it (its stamp moved).
    fn reload_if_changed(&mut self, path: &std::path::Path) -> Result<(), BackendFault> {
        let stamp = file_stamp(path);
        if stamp == self.stamp {
            return Ok(());
        }
        self.reload(path)?;
        tracing::info!(path = %path.display(), "soft keystore changed on disk; reloaded");
        Ok(())
    }

    /// Re-reads the keystore whatever its stamp says: under the write lock, a rewrite
    /// whose stamp matches (an inode reused within one mtime tick) must not be missed.
    /// The key derived from the passphrase is reused unless the file was recreated.
    fn reload(&mut self, path: &std::path::Path) -> Result<(), BackendFault> {
        let stamp = file_stamp(path);
        match self.keystore.reread().map_err(store_fault)? {
            Some(contents) => self.contents = contents,
            None => {
                let (keystore, contents) = Keystore::open(path, &self.passphrase).map_err(store_fault)?;
                self.keystore = keystore;
                self.contents = contents;
            }
        }
        self.stamp = stamp;
        self.rebuild_keys();
        Ok(())
    }

    /// Expands every version's key once (AES key schedules, parsed private keys), so
    /// batches only look them up. A version whose material does not parse is left out
    /// (its operations fail as for a missing version) and logged.
    fn rebuild_keys(&mut self) {
        self.keys = self
            .contents
            .keys
            .iter()
            .map(|key| {
                let versions = key.versions.iter().filter_map(|v| {
                    let ready = match key.key_type {
                        KeyType::Aes256 => {
                            Aes256Gcm::new_from_slice(&v.material.0).map(|aes| VersionKey::Aes(Box::new(aes))).ok()
                        }
                        key_type => PrivateKey::from_pkcs8_der(key_type, &v.material.0).map(|key| VersionKey::Private(Box::new(key))).ok(),
                    };
                    if ready.is_none() {
                        tracing::error!(key = %key.name, version = v.version, "soft keystore: key material does not parse");
                    }
                    Some((v.version, Arc::new(ready?)))
                });
                (key.name.clone(), versions.collect())
            })
            .collect();
    }

    fn key_mut(&mut self, name: &str) -> Result<&mut StoredKey, KeyAdminError> {
        self.contents
            .keys
            .iter_mut()
            .find(|k| k.name == name)
            .ok_or_else(|| KeyAdminError::UnknownKey(name.into()))
    }

    fn version_mut(&mut self, name: &str, version: u32) -> Result<&mut StoredVersion, KeyAdminError> {
        self.key_mut(name)?
            .versions
            .iter_mut()
            .find(|v| v.version == version)
            .ok_or_else(|| KeyAdminError::UnknownVersion { key: name.into(), version })
    }

    fn persist(&mut self, path: &std::path::Path) -> Result<(), BackendFault> {
        self.rebuild_keys();
        self.keystore.save(&self.contents).map_err(store_fault)?;
        self.stamp = file_stamp(path);
        Ok(())
    }
}

/// The soft keystore backend.
#[derive(Clone)]
pub struct SoftBackend {
    state: Arc<RwLock<SoftState>>,
    path: PathBuf,
}

/// A new `aes-256` version: 32 random bytes.
fn aes_version(version: u32) -> StoredVersion {
    let mut material = Material(vec![0; 32]);
    fill_random(&mut material.0);
    StoredVersion {
        version,
        state: VersionState::Enabled,
        created_at: unix_now(),
        disabled_at: None,
        material,
    }
}

/// A new version of `key_type`: [`aes_version`], or a generated private key (PKCS#8
/// DER).
fn new_version(version: u32, key_type: KeyType) -> Result<StoredVersion, KeyAdminError> {
    if key_type == KeyType::Aes256 {
        return Ok(aes_version(version));
    }
    let generated = PrivateKey::generate(key_type).map_err(|error| {
        BackendFault::Final(OpError::Internal(format!("cannot generate a {key_type} key: {error}")))
    })?;
    let material = Material(generated.to_pkcs8_der().to_vec());
    Ok(StoredVersion {
        version,
        state: VersionState::Enabled,
        created_at: unix_now(),
        disabled_at: None,
        material,
    })
}

impl SoftBackend {
    /// Opens the keystore named by `config`, creating it with a key named `default`
    /// when it is missing and `create_if_missing` is set.
    pub fn open(config: &SoftConfig) -> Result<Self, KeystoreError> {
        let source = config
            .passphrase
            .as_ref()
            .ok_or(KeystoreError::Passphrase(crate::secrets::SecretError::Empty))?;
        let passphrase = source.resolve()?;
        let path = config.keystore_path();
        let (keystore, contents) = if path.exists() {
            Keystore::open(&path, &passphrase)?
        } else if config.create_if_missing {
            let params = KdfParams { memory_kib: config.kdf_memory_kib, passes: config.kdf_passes, lanes: 1 };
            let keystore = Keystore::create(&path, &passphrase, params)?;
            let contents = Contents {
                keys: vec![StoredKey {
                    name: DEFAULT_KEY.into(),
                    min_decryption_version: 1,
                    key_type: KeyType::Aes256,
                    versions: vec![aes_version(1)],
                }],
            };
            keystore.save(&contents)?;
            tracing::info!(path = %path.display(), "created soft keystore with key \"default\"");
            (keystore, contents)
        } else {
            return Err(KeystoreError::Io {
                path,
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "keystore not found (set create_if_missing = true to create it)",
                ),
            });
        };
        let state = SoftState::new(keystore, contents, passphrase, &path);
        Ok(Self { state: Arc::new(RwLock::new(state)), path })
    }

    /// The keystore file.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Applies `change` to the freshest contents and saves them; on any failure the
    /// contents are as they were.
    fn write<T>(
        &self,
        change: impl FnOnce(&mut SoftState) -> Result<T, KeyAdminError>,
    ) -> Result<T, KeyAdminError> {
        let mut state = self.state.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        // Read-modify-write under the file lock: another process's write between our read
        // and our save would otherwise be lost.
        let _lock = WriteLock::take(&self.path)?;
        state.reload(&self.path)?;
        let backup = state.contents.clone();
        let result = change(&mut state)
            .and_then(|value| state.persist(&self.path).map(|()| value).map_err(Into::into));
        if result.is_err() {
            state.contents = backup;
            state.rebuild_keys();
        }
        result
    }
}

impl Backend for SoftBackend {
    fn kind(&self) -> &'static str {
        "soft"
    }

    fn open_worker(&self) -> Result<Box<dyn BackendWorker>, BackendFault> {
        Ok(Box::new(worker::SoftWorker::new(Arc::clone(&self.state))))
    }
}

impl KeyStore for SoftBackend {
    fn list_keys(&self) -> Result<Vec<KeyInfo>, BackendFault> {
        let mut state = self.state.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        state.reload_if_changed(&self.path)?;
        Ok(state.contents.keys.iter().map(StoredKey::info).collect())
    }

    fn write_new_version(&self, name: &str, version: u32, key_type: KeyType) -> Result<(), KeyAdminError> {
        let new = new_version(version, key_type)?;
        self.write(|state| match state.contents.keys.iter_mut().find(|k| k.name == name) {
            Some(key) if key.versions.iter().any(|v| v.version == version) => {
                Err(KeyAdminError::ConcurrentChange { key: name.into(), version })
            }
            Some(key) if key.key_type != key_type => Err(KeyAdminError::Backend(BackendFault::Final(
                OpError::Internal(format!("key {name:?} is {}, not {key_type}", key.key_type)),
            ))),
            Some(key) => {
                key.versions.push(new);
                Ok(())
            }
            None => {
                let key =
                    StoredKey { name: name.into(), key_type, min_decryption_version: 1, versions: vec![new] };
                state.contents.keys.push(key);
                Ok(())
            }
        })
    }

    fn public_key(&self, name: &str, version: u32) -> Result<Vec<u8>, BackendFault> {
        let state = self.state.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        match state.keys.get(name).and_then(|versions| versions.get(&version)).map(|key| &**key) {
            Some(VersionKey::Private(private)) => Ok(private.public_key().spki_der().to_vec()),
            Some(VersionKey::Aes(_)) => Err(BackendFault::Final(OpError::BadRequest(format!(
                "key {name:?} is symmetric: it has no public key"
            )))),
            None => Err(BackendFault::Final(OpError::VersionNotFound { key: name.into(), version })),
        }
    }

    fn write_version_state(
        &self,
        name: &str,
        version: u32,
        new_state: VersionState,
    ) -> Result<(), KeyAdminError> {
        self.write(|state| {
            let stored = state.version_mut(name, version)?;
            if stored.state != new_state {
                stored.disabled_at = (new_state == VersionState::Disabled).then(unix_now);
            }
            stored.state = new_state;
            Ok(())
        })
    }

    fn write_min_decryption_version(&self, name: &str, version: u32) -> Result<(), KeyAdminError> {
        self.write(|state| {
            state.version_mut(name, version)?;
            state.key_mut(name)?.min_decryption_version = version;
            Ok(())
        })
    }

    fn erase_version(&self, name: &str, version: u32) -> Result<(), KeyAdminError> {
        self.write(|state| {
            state.version_mut(name, version)?;
            state.key_mut(name)?.versions.retain(|v| v.version != version);
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use keymux_protocol::{BlobHeader, Reply, SecretBytes};

    use super::*;
    use crate::backend::{BatchOp, Op, OpResult, ParsedBlob};
    use crate::keys::KeyLifecycle;

    fn open(dir: &std::path::Path) -> SoftBackend {
        SoftBackend::open(&SoftConfig::throwaway(dir)).unwrap()
    }

    fn run(backend: &SoftBackend, op: Op) -> OpResult {
        let key = backend.find_key(DEFAULT_KEY).unwrap();
        let mut worker = backend.open_worker().unwrap();
        crate::backend::run_collect(&mut *worker, &key, &[BatchOp::new(op)]).pop().unwrap()
    }

    fn wrap(backend: &SoftBackend, aad: &[u8], dek: &[u8]) -> Vec<u8> {
        let op = Op::Wrap { aad: aad.to_vec(), plaintext: SecretBytes::copy_from(dek) };
        match run(backend, op).unwrap() {
            Reply::Wrap { blob } => blob,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn unwrap(backend: &SoftBackend, aad: &[u8], blob: Vec<u8>) -> Result<Vec<u8>, OpError> {
        let op = Op::Unwrap { aad: aad.to_vec(), blob: ParsedBlob::parse(blob)? };
        run(backend, op).map(|reply| match reply {
            Reply::Unwrap { plaintext } => plaintext.expose().to_vec(),
            other => panic!("unexpected {other:?}"),
        })
    }

    #[test]
    fn wrap_unwrap_and_integrity() {
        let dir = tempfile::tempdir().unwrap();
        let backend = open(dir.path());
        let blob = wrap(&backend, b"ctx", &[9; 32]);
        assert_eq!(unwrap(&backend, b"ctx", blob.clone()).unwrap(), vec![9; 32]);
        assert_eq!(unwrap(&backend, b"other", blob.clone()), Err(OpError::Integrity));
        let mut tampered = blob;
        let last = tampered.len() - 1;
        tampered[last] ^= 0x40;
        assert_eq!(unwrap(&backend, b"ctx", tampered), Err(OpError::Integrity));
    }

    #[test]
    fn rotation_persists_and_old_blobs_still_unwrap() {
        let dir = tempfile::tempdir().unwrap();
        let backend = open(dir.path());
        let old = wrap(&backend, b"", &[1; 16]);
        assert_eq!(backend.rotate_key(DEFAULT_KEY).unwrap(), 2);
        let new = wrap(&backend, b"", &[1; 16]);
        assert_eq!(BlobHeader::parse(&new).unwrap().0.version, 2);
        let reopened = open(dir.path());
        assert_eq!(unwrap(&reopened, b"", old).unwrap(), vec![1; 16]);
        assert_eq!(unwrap(&reopened, b"", new).unwrap(), vec![1; 16]);
    }

    #[test]
    fn concurrent_writers_on_one_keystore_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        open(dir.path());
        // Two backends on one file, as `keymux key ...` beside a running proxy, or two
        // admins: each creates keys at the same time.
        let writers: Vec<_> = (0..2)
            .map(|writer| {
                let backend = open(dir.path());
                std::thread::spawn(move || {
                    for key in 0..10 {
                        backend.create_key(&format!("w{writer}-{key}"), KeyType::Aes256).unwrap();
                    }
                })
            })
            .collect();
        writers.into_iter().for_each(|writer| writer.join().unwrap());
        let keys = open(dir.path()).list_keys().unwrap();
        assert_eq!(keys.len(), 1 + 2 * 10, "every key created survives: {:?}", keys.len());
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .filter(|name| name.ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "no temporary file is left behind: {leftovers:?}");
    }

    #[test]
    fn disabled_versions_refuse_unwrap() {
        let dir = tempfile::tempdir().unwrap();
        let backend = open(dir.path());
        let blob = wrap(&backend, b"", &[1; 16]);
        backend.rotate_key(DEFAULT_KEY).unwrap();
        backend.set_version_state(DEFAULT_KEY, 1, VersionState::Disabled).unwrap();
        assert!(matches!(unwrap(&backend, b"", blob), Err(OpError::KeyDisabled { version: 1, .. })));
    }
}
