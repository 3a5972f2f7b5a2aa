//! Intermediate mode: KMS wraps an intermediate key once per epoch, and DEKs are sealed
//! locally under it.
//!
//! Wraps of one key version share the epoch's intermediate key until it reaches its
//! lifetime or use count; then the next wrap generates a new one (one KMS
//! GenerateDataKey), single-flight per key version. Unwrapped intermediate keys are
//! cached by a hash of their KMS ciphertext, and a miss is single-flight too: a burst
//! of unwraps of DEKs from one epoch costs one KMS Decrypt. The keys live only as
//! expanded AES-256-GCM ciphers (zeroized on drop); their bytes are never logged.
//!
//! The body of an intermediate blob:
//!
//! ```text
//! body := wrapped_len:u16 wrapped_ik nonce:[12] sealed_dek tag:[16]
//! ```
//!
//! `wrapped_ik` is KMS's ciphertext of the intermediate key, bound by the encryption
//! context to the blob header (key, version, mode); the DEK is sealed with AES-256-GCM
//! under the intermediate key, with the blob header followed by the client AAD as the
//! associated data, and a random 96-bit nonce (an epoch's use count is at most 2^32).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use keymux_protocol::SecretBytes;
use tokio::sync::OnceCell;

use super::config::IntermediateConfig;
use super::metrics::KmsMetrics;
use crate::access::glob::glob_match;
use crate::error::OpError;

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// One epoch's intermediate key, for wraps.
struct Epoch {
    cipher: Arc<Aes256Gcm>,
    wrapped: Arc<[u8]>,
    born: Instant,
    /// Counted under the slot's lock.
    uses: u64,
}

/// The live epoch of one key version, locked while a new one is generated (so that
/// concurrent wraps wait for one GenerateDataKey rather than each making one).
type EpochSlot = Arc<tokio::sync::Mutex<Option<Epoch>>>;

/// A cached unwrapped intermediate key: empty until the one KMS call fills it.
type Slot = Arc<OnceCell<Arc<Aes256Gcm>>>;

/// The intermediate keys of a backend: live epochs and unwrapped keys.
pub(crate) struct Intermediate {
    settings: IntermediateConfig,
    /// By key name, then version (nested, so a wrap looks up without copying the name).
    epochs: Mutex<HashMap<String, HashMap<u32, EpochSlot>>>,
    unwrapped: moka::sync::Cache<[u8; 32], Slot>,
    metrics: KmsMetrics,
}

/// The parts of an intermediate blob body.
pub(crate) struct Body<'a> {
    /// KMS's ciphertext of the intermediate key.
    pub(crate) wrapped: &'a [u8],
    nonce: [u8; NONCE_LEN],
    sealed: &'a [u8],
}

impl<'a> Body<'a> {
    /// Splits a body; anything malformed is INTEGRITY.
    pub(crate) fn parse(body: &'a [u8]) -> Result<Self, OpError> {
        let (len, rest) = body.split_first_chunk::<2>().ok_or(OpError::Integrity)?;
        let len = usize::from(u16::from_be_bytes(*len));
        if len == 0 || rest.len() < len + NONCE_LEN + TAG_LEN {
            return Err(OpError::Integrity);
        }
        let (wrapped, rest) = rest.split_at(len);
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        Ok(Self { wrapped, nonce: nonce.try_into().map_err(|_| OpError::Integrity)?, sealed })
    }
}

fn digest(wrapped: &[u8]) -> [u8; 32] {
    *blake3::hash(wrapped).as_bytes()
}

fn cipher(key: &SecretBytes) -> Result<Arc<Aes256Gcm>, OpError> {
    Aes256Gcm::new_from_slice(key.expose()).map(Arc::new).map_err(|_| {
        OpError::Internal(format!("KMS returned a {}-byte intermediate key", key.expose().len()))
    })
}

impl Intermediate {
    /// Epochs and a cache as `settings` describe.
    pub(crate) fn new(settings: IntermediateConfig, metrics: KmsMetrics) -> Self {
        let unwrapped = moka::sync::Cache::builder()
            .max_capacity(settings.cache_entries)
            .time_to_live(settings.cache_ttl)
            .build();
        Self { settings, epochs: Mutex::default(), unwrapped, metrics }
    }

    /// Whether new wraps of `key` use intermediate mode.
    pub(crate) fn applies_to(&self, key: &str) -> bool {
        self.settings.keys.iter().any(|pattern| glob_match(pattern, key))
    }

    /// Seals `dek` under the current epoch of (`key`, `version`), calling `generate`
    /// (which returns the intermediate key and KMS's ciphertext of it) when a new epoch
    /// is due. `associated` is the blob header followed by the client AAD. Returns the
    /// blob body.
    pub(crate) async fn seal<F, Fut>(
        &self,
        key: &str,
        version: u32,
        associated: &[u8],
        dek: &[u8],
        generate: F,
    ) -> Result<Vec<u8>, OpError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(SecretBytes, Vec<u8>), OpError>>,
    {
        let slot = {
            let mut epochs = self.epochs.lock().unwrap_or_else(|p| p.into_inner());
            match epochs.get_mut(key) {
                Some(versions) => Arc::clone(versions.entry(version).or_default()),
                None => Arc::clone(epochs.entry(key.to_owned()).or_default().entry(version).or_default()),
            }
        };
        let (cipher, wrapped) = {
            let mut current = slot.lock().await;
            let live = current.as_mut().is_some_and(|epoch| {
                epoch.uses += 1;
                epoch.born.elapsed() < self.settings.lifetime && epoch.uses <= self.settings.max_uses
            });
            if !live {
                let (plaintext, wrapped) = generate().await?;
                let cipher = cipher(&plaintext)?;
                self.unwrapped
                    .insert(digest(&wrapped), Arc::new(OnceCell::new_with(Some(Arc::clone(&cipher)))));
                self.metrics.intermediate_epoch();
                tracing::debug!(key, version, "new intermediate key");
                *current = Some(Epoch { cipher, wrapped: wrapped.into(), born: Instant::now(), uses: 1 });
            }
            let epoch = current.as_ref().ok_or_else(|| OpError::Internal("no intermediate key".into()))?;
            (Arc::clone(&epoch.cipher), Arc::clone(&epoch.wrapped))
        };
        let len = u16::try_from(wrapped.len())
            .map_err(|_| OpError::Internal("KMS ciphertext of the intermediate key is too long".into()))?;
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|e| OpError::Internal(format!("random nonce: {e}")))?;
        let sealed = cipher
            .encrypt(&nonce.into(), Payload { msg: dek, aad: associated })
            .map_err(|_| OpError::Internal("AES-GCM encryption failed".into()))?;
        let mut body = Vec::with_capacity(2 + wrapped.len() + NONCE_LEN + sealed.len());
        body.extend_from_slice(&len.to_be_bytes());
        body.extend_from_slice(&wrapped);
        body.extend_from_slice(&nonce);
        body.extend_from_slice(&sealed);
        Ok(body)
    }

    /// Opens a DEK sealed in `body`, unwrapping its intermediate key with `unwrap`
    /// (one KMS Decrypt) only if no earlier or concurrent unwrap did.
    pub(crate) async fn open<F, Fut>(
        &self,
        body: &Body<'_>,
        associated: &[u8],
        unwrap: F,
    ) -> Result<SecretBytes, OpError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<SecretBytes, OpError>>,
    {
        let slot = self.unwrapped.get_with(digest(body.wrapped), || Arc::new(OnceCell::new()));
        let fetched = AtomicBool::new(false);
        let cipher = slot
            .get_or_try_init(|| async {
                fetched.store(true, Ordering::Relaxed);
                cipher(&unwrap().await?)
            })
            .await?;
        self.metrics.intermediate_lookup(!fetched.load(Ordering::Relaxed));
        cipher
            .decrypt(&body.nonce.into(), Payload { msg: body.sealed, aad: associated })
            .map(SecretBytes::new)
            .map_err(|_| OpError::Integrity)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;

    use super::*;

    fn settings(max_uses: u64) -> IntermediateConfig {
        IntermediateConfig { keys: vec!["im-*".into()], max_uses, ..IntermediateConfig::default() }
    }

    #[tokio::test]
    async fn epochs_end_by_use_count_and_blobs_open_after_a_restart() {
        let intermediate = Intermediate::new(settings(2), KmsMetrics::default());
        assert!(intermediate.applies_to("im-a") && !intermediate.applies_to("a"));
        let generated = AtomicU64::new(0);
        let generate = || async {
            let n = generated.fetch_add(1, Ordering::Relaxed) as u8;
            Ok((SecretBytes::new(vec![n; 32]), vec![n; 40]))
        };
        let mut bodies = Vec::new();
        for _ in 0..5 {
            bodies.push(intermediate.seal("im-a", 1, b"ad", &[7; 32], generate).await.unwrap());
        }
        assert_eq!(generated.load(Ordering::Relaxed), 3, "two uses per epoch");

        let restarted = Intermediate::new(settings(2), KmsMetrics::default());
        let unwrapped = AtomicU64::new(0);
        for body in &bodies {
            let body = Body::parse(body).unwrap();
            let unwrap = || async {
                unwrapped.fetch_add(1, Ordering::Relaxed);
                Ok(SecretBytes::new(vec![body.wrapped[0]; 32]))
            };
            assert_eq!(restarted.open(&body, b"ad", unwrap).await.unwrap().expose(), &[7; 32]);
            let wrong = restarted.open(&body, b"other", || async { Err(OpError::Internal("cached".into())) });
            let wrong = wrong.await;
            assert_eq!(wrong.unwrap_err(), OpError::Integrity);
        }
        assert_eq!(unwrapped.load(Ordering::Relaxed), 3, "one unwrap per epoch");
    }

    #[test]
    fn malformed_bodies_are_integrity() {
        for body in [&[][..], &[0, 0], &[0, 1, 9], &[0, 5, 1, 2, 3, 4, 5, 6]] {
            assert!(matches!(Body::parse(body), Err(OpError::Integrity)));
        }
    }
}
