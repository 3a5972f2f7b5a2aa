//! The ML-KEM-768 envelope: the body of a wrapped blob in mode 3.
//!
//! [`seal`] encapsulates to an ML-KEM-768 encapsulation key (FIPS 203) and seals the DEK
//! with AES-256-GCM under a key derived from the shared secret; [`open`] reverses it
//! with the decapsulation key. The body is
//!
//! ```text
//! body      := kem_ct:[1088] nonce:[12] sealed
//! sealed    := AES-256-GCM(key, nonce, plaintext = dek, aad = associated_data)  (dek || tag:[16])
//! key       := HKDF-SHA-256(ikm = shared_secret, salt = none, info = "keymux blob mode 3 v1", L = 32)
//! ```
//!
//! - `kem_ct` and `shared_secret` (32 bytes) come from `ML-KEM.Encaps(ek)` with fresh
//!   randomness; `nonce` is 12 fresh random bytes. The key is new for every blob, so a
//!   nonce never repeats under a key; the random nonce costs 12 bytes and keeps the
//!   AEAD use conventional.
//! - HKDF has no salt (RFC 5869's default, 32 zero bytes); `info` is the 21 ASCII bytes
//!   of [`HKDF_INFO`], which separates this use of the shared secret from any other.
//! - `associated_data` is chosen by the caller. In a keymux blob it is the blob header
//!   (everything before the body) followed by the client's aad, as for every mode, so
//!   a body cannot be moved to another key, version or context.
//! - The DEK length is the body length less [`OVERHEAD`] (1116 bytes).
//!
//! Decapsulation never fails on its own (ML-KEM rejects a bad ciphertext implicitly,
//! with a pseudo-random secret), so a modified ciphertext, nonce, tag, sealed DEK, the
//! wrong key or the wrong associated data all surface as one error:
//! [`CryptoError::Integrity`].

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hkdf::Hkdf;
use ml_kem::{Ciphertext, Decapsulate, Encapsulate, MlKem768};
use rand_core::CryptoRng;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::rng::OsRng;
use crate::{CryptoError, Operation, PrivateKey, PublicKey};

/// Length of the ML-KEM-768 ciphertext at the start of a body.
pub const CIPHERTEXT_LEN: usize = 1088;
/// Length of the AES-256-GCM nonce that follows it.
pub const NONCE_LEN: usize = 12;
/// Length of the AES-256-GCM tag at the end of the body.
pub const TAG_LEN: usize = 16;
/// Everything in a body but the DEK: ciphertext, nonce and tag.
pub const OVERHEAD: usize = CIPHERTEXT_LEN + NONCE_LEN + TAG_LEN;
/// HKDF's `info`: binds the derived key to this use and this version of the layout.
pub const HKDF_INFO: &[u8] = b"keymux blob mode 3 v1";

/// Seals `dek` to an ML-KEM-768 encapsulation key. Works offline: a client that has
/// the key from GET_PUBLIC_KEY wraps without calling the proxy.
///
/// Any key but an ML-KEM-768 one is [`CryptoError::Unsupported`].
pub fn seal(
    encapsulation_key: &PublicKey,
    associated_data: &[u8],
    dek: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let ek = encapsulation_key.as_ml_kem_768().ok_or(CryptoError::Unsupported {
        key_type: encapsulation_key.key_type(),
        operation: Operation::Seal,
    })?;
    Ok(seal_with(ek, associated_data, dek, &mut OsRng))
}

/// Opens a body made by [`seal`] with the matching decapsulation key and the same
/// associated data; the DEK comes back in a buffer wiped on drop.
///
/// A body shorter than [`OVERHEAD`] is [`CryptoError::BodyTooShort`]; one that does
/// not verify is [`CryptoError::Integrity`]; a key that is not ML-KEM-768 is
/// [`CryptoError::Unsupported`].
pub fn open(
    decapsulation_key: &PrivateKey,
    associated_data: &[u8],
    body: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let dk = decapsulation_key.as_ml_kem_768().ok_or(CryptoError::Unsupported {
        key_type: decapsulation_key.key_type(),
        operation: Operation::Open,
    })?;
    if body.len() < OVERHEAD {
        return Err(CryptoError::BodyTooShort { minimum: OVERHEAD, actual: body.len() });
    }
    let (kem_ct, rest) = body.split_at(CIPHERTEXT_LEN);
    let (nonce, sealed) = rest.split_at(NONCE_LEN);
    let kem_ct = Ciphertext::<MlKem768>::try_from(kem_ct).expect("split at the ciphertext length");
    let shared_secret = Zeroizing::new(dk.decapsulate(&kem_ct));
    let nonce = Nonce::try_from(nonce).expect("split at the nonce length");
    cipher(&shared_secret)
        .decrypt(&nonce, Payload { msg: sealed, aad: associated_data })
        .map(Zeroizing::new)
        .map_err(|_| CryptoError::Integrity)
}

/// [`seal`] with the randomness (the encapsulation's 32 bytes, then the nonce) drawn
/// from `rng`, so that tests can replay known-answer vectors.
pub(crate) fn seal_with<R: CryptoRng + ?Sized>(
    ek: &ml_kem::EncapsulationKey<MlKem768>,
    associated_data: &[u8],
    dek: &[u8],
    rng: &mut R,
) -> Vec<u8> {
    let (kem_ct, shared_secret) = ek.encapsulate_with_rng(rng);
    let shared_secret = Zeroizing::new(shared_secret);
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill_bytes(&mut nonce);
    let sealed = cipher(&shared_secret)
        .encrypt(&Nonce::from(nonce), Payload { msg: dek, aad: associated_data })
        // AES-GCM refuses only plaintexts over 64 GiB, which no caller has in memory.
        .expect("AES-256-GCM seals the DEK");
    let mut body = Vec::with_capacity(OVERHEAD + dek.len());
    body.extend_from_slice(&kem_ct);
    body.extend_from_slice(&nonce);
    body.extend_from_slice(&sealed);
    body
}

/// The AEAD keyed by HKDF-SHA-256 of the shared secret. `Aes256Gcm` wipes its key
/// schedule on drop (aes-gcm's `zeroize` feature); the derived key is wiped here.
fn cipher(shared_secret: &[u8]) -> Aes256Gcm {
    let mut key = Zeroizing::new([0u8; 32]);
    Hkdf::<Sha256>::new(None, shared_secret)
        .expand(HKDF_INFO, key.as_mut())
        .expect("32 bytes is a valid HKDF-SHA-256 output length");
    Aes256Gcm::new_from_slice(key.as_ref()).expect("a 32-byte key")
}

#[cfg(test)]
mod tests {
    use ml_kem::TryKeyInit;

    use super::*;
    use crate::test_data::{Replay, hex, load};

    fn encapsulation_key(bytes: &[u8]) -> ml_kem::EncapsulationKey<MlKem768> {
        ml_kem::EncapsulationKey::<MlKem768>::new_from_slice(bytes).expect("a valid ML-KEM-768 key")
    }

    /// NIST ACVP ML-KEM-768 encapsulation vectors: with the vector's `m` as the
    /// encapsulation randomness, the body starts with the vector's ciphertext.
    #[test]
    fn acvp_encapsulation_gives_the_known_ciphertext() {
        let data = load("acvp-ml-kem-768-encap.json");
        let tests = data["tests"].as_array().unwrap();
        assert!(!tests.is_empty());
        for t in tests {
            let ek = encapsulation_key(&hex(t, "ek"));
            let mut rng = Replay::new([hex(t, "m"), vec![0; NONCE_LEN]].concat());
            let body = seal_with(&ek, b"", b"dek", &mut rng);
            assert!(rng.is_spent(), "tcId {}: the seal drew exactly m and a nonce", t["tcId"]);
            assert_eq!(&body[..CIPHERTEXT_LEN], hex(t, "c").as_slice(), "tcId {}", t["tcId"]);
        }
    }

    /// The whole mode-3 body for one ACVP vector, as computed independently with
    /// Python's `cryptography` from the vector's shared secret: pins the HKDF label,
    /// the AEAD and the layout.
    #[test]
    fn seal_matches_the_independently_computed_golden_body() {
        let g = load("mode3-golden.json");
        let mut rng = Replay::new([hex(&g, "m"), hex(&g, "nonce")].concat());
        let body = seal_with(
            &encapsulation_key(&hex(&g, "ek")),
            &hex(&g, "associated_data"),
            &hex(&g, "dek"),
            &mut rng,
        );
        assert!(rng.is_spent());
        assert_eq!(body, hex(&g, "body"));
        assert_eq!(body.len(), OVERHEAD + hex(&g, "dek").len());
    }

    #[test]
    fn layout_constants_match_ml_kem_768() {
        assert_eq!(CIPHERTEXT_LEN, 1088);
        assert_eq!(OVERHEAD, 1116);
        assert_eq!(HKDF_INFO.len(), 21);
    }
}
