//! Typed errors. Tests match on these values, never on message text, and no variant
//! carries key material.

use crate::KeyType;

/// An operation, named in [`CryptoError::Unsupported`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Operation {
    /// Generating a key pair.
    Generate,
    /// Signing a message.
    Sign,
    /// Signing a digest the caller computed (the wire's digest flag).
    SignDigest,
    /// Verifying a signature over a message.
    Verify,
    /// Verifying a signature over a digest.
    VerifyDigest,
    /// Sealing a DEK to an ML-KEM encapsulation key.
    Seal,
    /// Opening a sealed DEK with an ML-KEM decapsulation key.
    Open,
}

impl Operation {
    /// A short lower-case name for messages and logs.
    pub fn name(self) -> &'static str {
        match self {
            Operation::Generate => "generate",
            Operation::Sign => "sign",
            Operation::SignDigest => "sign a digest",
            Operation::Verify => "verify",
            Operation::VerifyDigest => "verify a digest",
            Operation::Seal => "seal",
            Operation::Open => "open",
        }
    }
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What can go wrong in this crate.
///
/// A signature that simply does not verify is not an error: `verify` answers
/// `Ok(false)`. Errors are for requests that cannot be carried out at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// A key type name that this crate does not know.
    #[error("unknown key type")]
    UnknownKeyType,
    /// The key type cannot do this: signing with an ML-KEM key, a digest for Ed25519 or
    /// ML-DSA (which sign the message itself), sealing to a signature key, or any
    /// asymmetric operation on `aes-256`, whose keys live with the backends.
    #[error("{key_type} keys cannot {operation}")]
    Unsupported {
        /// The key's type.
        key_type: KeyType,
        /// What was asked.
        operation: Operation,
    },
    /// A digest of the wrong length for the algorithm's hash.
    #[error("digest is {actual} bytes, {expected} expected")]
    DigestLength {
        /// The hash's output length: 32 for SHA-256, 48 for SHA-384.
        expected: usize,
        /// The length given.
        actual: usize,
    },
    /// The bytes are not a DER SubjectPublicKeyInfo of a key of this type: malformed,
    /// another algorithm's OID, or the wrong size (RSA moduli must be 3072 bits).
    #[error("not a valid {key_type} public key")]
    InvalidPublicKey {
        /// The type the caller expected.
        key_type: KeyType,
    },
    /// The bytes are not a PKCS#8 private key of this type: malformed, another
    /// algorithm, or the wrong size.
    #[error("not a valid {key_type} private key")]
    InvalidPrivateKey {
        /// The type the caller expected.
        key_type: KeyType,
    },
    /// Key generation failed. It does not, in practice (RSA prime search gave up).
    #[error("key generation failed")]
    GenerationFailed,
    /// The signing algorithm failed. It does not, in practice; the variant exists
    /// because the underlying crates report it (ML-DSA's rejection loop, RSA blinding).
    #[error("signing failed")]
    SigningFailed,
    /// A sealed KEM body is shorter than its fixed overhead.
    #[error("sealed body is {actual} bytes, at least {minimum} expected")]
    BodyTooShort {
        /// The smallest valid body: ciphertext, nonce and tag.
        minimum: usize,
        /// The length given.
        actual: usize,
    },
    /// A sealed body does not verify: the wrong key, the wrong associated data, or a
    /// body that was modified.
    #[error("sealed body does not verify (wrong key, wrong associated data, or modified)")]
    Integrity,
}
