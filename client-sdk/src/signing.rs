//! Signing and verification through the proxy: SIGN and VERIFY.
//!
//! [`Client::sign`] signs a message with a key's current version and says which version
//! signed; [`Client::verify`] asks the proxy whether a signature by a given version
//! verifies. The `_digest` forms pass a digest the caller computed instead of the
//! message (the wire's digest flag): its length must be the key's hash's (32 bytes for
//! the SHA-256 algorithms, 48 for ECDSA P-384), else [`Error::BadRequest`], and Ed25519
//! and ML-DSA keys, which sign the message itself, answer [`Error::Unsupported`].
//!
//! A signature that does not verify is `Ok(false)`, not an error; an unknown key or
//! version is [`Error::UnknownKey`], a disabled version [`Error::KeyDisabled`], and a
//! key that does not sign (an `aes-256` or `ml-kem-768` key) [`Error::BadRequest`].
//!
//! To verify without calling the proxy, fetch the key once with
//! [`Client::public_key`] and use [`PublicKeyInfo::verify_locally`](crate::PublicKeyInfo::verify_locally).

use keymux_protocol::{Opcode, Reply, Request};

use crate::client::{Client, unexpected};
use crate::config::CallOptions;
use crate::error::{Error, Result};

/// A signature from [`Client::sign`], with what a verifier needs besides the message.
///
/// SIGN's answer carries no algorithm: the key's algorithm is a property of the key,
/// which [`Client::public_key`] tells.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Signature {
    /// The key that signed.
    pub key: String,
    /// The key version that signed: pass it to [`Client::verify`], or fetch that
    /// version's public key to verify locally.
    pub version: u32,
    /// The signature, in the algorithm's encoding: DER for ECDSA, raw bytes for the
    /// others (64 for Ed25519, 384 for RSA-3072, 3309 for ML-DSA-65).
    pub bytes: Vec<u8>,
}

impl Signature {
    /// A signature kept elsewhere (a database, a file), to hand around as
    /// [`Client::sign`] would have.
    pub fn new(key: impl Into<String>, version: u32, bytes: Vec<u8>) -> Self {
        Self { key: key.into(), version, bytes }
    }
}

impl Client {
    /// Signs `message` with the current version of `key`. The proxy hashes the message
    /// where the algorithm does (ECDSA, RSA); Ed25519 and ML-DSA sign it as it is.
    pub async fn sign(&self, key: &str, message: &[u8]) -> Result<Signature> {
        self.sign_input(key, message, false, &CallOptions::default()).await
    }

    /// [`Client::sign`] with per-call options.
    pub async fn sign_with(&self, key: &str, message: &[u8], options: &CallOptions) -> Result<Signature> {
        self.sign_input(key, message, false, options).await
    }

    /// Signs a `digest` of the message that the caller computed with the key's hash
    /// (SHA-256, or SHA-384 for `ec-p384`); the signature is the same kind as
    /// [`Client::sign`]'s over the message. For ECDSA and RSA keys only.
    pub async fn sign_digest(&self, key: &str, digest: &[u8]) -> Result<Signature> {
        self.sign_input(key, digest, true, &CallOptions::default()).await
    }

    /// [`Client::sign_digest`] with per-call options.
    pub async fn sign_digest_with(
        &self,
        key: &str,
        digest: &[u8],
        options: &CallOptions,
    ) -> Result<Signature> {
        self.sign_input(key, digest, true, options).await
    }

    /// Whether `signature` is `key` version `version`'s signature over `message`.
    /// The proxy verifies on its own threads from the key's public key, never on the
    /// HSM.
    pub async fn verify(&self, key: &str, version: u32, message: &[u8], signature: &[u8]) -> Result<bool> {
        self.verify_input(key, version, message, signature, false, &CallOptions::default()).await
    }

    /// [`Client::verify`] with per-call options.
    pub async fn verify_with(
        &self,
        key: &str,
        version: u32,
        message: &[u8],
        signature: &[u8],
        options: &CallOptions,
    ) -> Result<bool> {
        self.verify_input(key, version, message, signature, false, options).await
    }

    /// [`Client::verify`] over a digest the caller computed, as for
    /// [`Client::sign_digest`].
    pub async fn verify_digest(
        &self,
        key: &str,
        version: u32,
        digest: &[u8],
        signature: &[u8],
    ) -> Result<bool> {
        self.verify_input(key, version, digest, signature, true, &CallOptions::default()).await
    }

    /// [`Client::verify_digest`] with per-call options.
    pub async fn verify_digest_with(
        &self,
        key: &str,
        version: u32,
        digest: &[u8],
        signature: &[u8],
        options: &CallOptions,
    ) -> Result<bool> {
        self.verify_input(key, version, digest, signature, true, options).await
    }

    async fn sign_input(
        &self,
        key: &str,
        input: &[u8],
        digest: bool,
        options: &CallOptions,
    ) -> Result<Signature> {
        let request = Request::Sign { key: key.to_owned(), input: input.to_vec(), digest };
        match self.call(request, options).await? {
            Reply::Sign { version, signature } => {
                Ok(Signature { key: key.to_owned(), version, bytes: signature })
            }
            other => Err(unexpected(Opcode::Sign, &other)),
        }
    }

    async fn verify_input(
        &self,
        key: &str,
        version: u32,
        input: &[u8],
        signature: &[u8],
        digest: bool,
        options: &CallOptions,
    ) -> Result<bool, Error> {
        let request = Request::Verify {
            key: key.to_owned(),
            version,
            input: input.to_vec(),
            signature: signature.to_vec(),
            digest,
        };
        match self.call(request, options).await? {
            Reply::Verify { valid } => Ok(valid),
            other => Err(unexpected(Opcode::Verify, &other)),
        }
    }
}
