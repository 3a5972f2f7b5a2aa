//! keymux asymmetric crypto, sans IO.
//!
//! One small crate for the crypto that both the proxy and the client SDK need, so that
//! neither depends on the other: the proxy's embedded soft keystore signs with every
//! key type, the proxy verifies on its own threads from cached public keys, and a
//! client verifies locally and wraps offline to an ML-KEM-768 key (blob mode 3). No
//! runtime, no I/O, no clock; randomness comes from the OS CSPRNG (`getrandom`). Every
//! algorithm is a RustCrypto crate; this crate only chooses, frames and encodes.
//!
//! - [`KeyType`]: the key types by their configuration names, with the wire's
//!   algorithm ids and digest lengths.
//! - [`PrivateKey`]: generate, store as PKCS#8, sign (a message, or a caller's digest).
//! - [`PublicKey`]: DER SubjectPublicKeyInfo in and out, verify.
//! - [`kem`]: seal a DEK to an ML-KEM-768 key and open it again.
//! - [`CryptoError`]: one `Copy` error enum; a signature that does not verify is
//!   `Ok(false)`, not an error.
//!
//! ```
//! use keymux_crypto::{KeyType, PrivateKey, PublicKey};
//!
//! let key = PrivateKey::generate(KeyType::EcP256)?;
//! let signature = key.sign(b"message")?;
//!
//! // What GET_PUBLIC_KEY sends, and what a verifier rebuilds from it.
//! let spki = key.public_key().spki_der().to_vec();
//! let public = PublicKey::from_spki_der(KeyType::EcP256, &spki)?;
//! assert!(public.verify(b"message", &signature)?);
//! assert!(!public.verify(b"another message", &signature)?);
//! # Ok::<(), keymux_crypto::CryptoError>(())
//! ```
//!
//! # Algorithms and encodings
//!
//! | key type | algorithm | signature | public key (SPKI algorithm) | private key (PKCS#8) |
//! |---|---|---|---|---|
//! | `ec-p256` | ECDSA P-256, SHA-256, RFC 6979 nonces | DER `Ecdsa-Sig-Value` | `id-ecPublicKey`, `prime256v1`, uncompressed point | RFC 5915 `ECPrivateKey` |
//! | `ec-p384` | ECDSA P-384, SHA-384, RFC 6979 nonces | DER | `id-ecPublicKey`, `secp384r1` | RFC 5915 `ECPrivateKey` |
//! | `ed25519` | Ed25519, RFC 8032 pure; strict verification | 64 bytes | `id-Ed25519` (RFC 8410) | RFC 8410 32-byte seed |
//! | `rsa-3072-pss` | RSASSA-PSS, SHA-256, MGF1-SHA-256, salt 32 | 384 bytes | `rsaEncryption` | PKCS#1 `RSAPrivateKey` |
//! | `rsa-3072-pkcs1` | RSASSA-PKCS1-v1_5, SHA-256 | 384 bytes | `rsaEncryption` | PKCS#1 `RSAPrivateKey` |
//! | `ml-dsa-65` | ML-DSA-65, FIPS 204, pure, empty context, hedged | 3309 bytes | `id-ml-dsa-65` 2.16.840.1.101.3.4.3.18, raw 1952-byte key | seed-only: `[0] IMPLICIT OCTET STRING` of the 32-byte seed |
//! | `ml-kem-768` | ML-KEM-768, FIPS 203 | — | `id-alg-ml-kem-768` 2.16.840.1.101.3.4.4.2, raw 1184-byte key | seed-only: `[0] IMPLICIT OCTET STRING` of the 64-byte seed `d ‖ z` |
//!
//! The ML-DSA and ML-KEM encodings are those of the IETF LAMPS documents
//! (draft-ietf-lamps-dilithium-certificates, draft-ietf-lamps-kyber-certificates),
//! parameters absent; the tests check them against the LAMPS example keys.
//! The private keys use the drafts' seed-only `CHOICE` arm, the smallest and the one
//! the RustCrypto crates write; they read only that arm, so a key exported elsewhere in
//! the expanded or `both` form must be converted first (OpenSSL 3.5+:
//! `openssl pkey -provparam ml-dsa.output_formats=seed-only`). Both RSA types use
//! `rsaEncryption` for either padding, as every tool and cloud KMS does, which is why
//! [`PublicKey::from_spki_der`] and [`PrivateKey::from_pkcs8_der`] take the key type.
//!
//! `aes-256` is named here so that one enum lists every key type, but its keys live with
//! the backends: every asymmetric operation on it is [`CryptoError::Unsupported`].

#![forbid(unsafe_code)]

mod error;
pub mod kem;
mod key_type;
mod private_key;
mod public_key;
mod rng;
#[cfg(test)]
mod test_data;

pub use error::{CryptoError, Operation};
pub use key_type::KeyType;
pub use private_key::PrivateKey;
pub use public_key::PublicKey;
