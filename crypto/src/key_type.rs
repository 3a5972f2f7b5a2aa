//! The key types: the names of `keymux key create --type` and the wire's algorithm ids.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::CryptoError;

/// A kind of key, by the name used in configuration, the admin CLI and the keystore.
///
/// `aes-256` is the symmetric default that every backend holds itself; this crate does
/// no symmetric key management, only names it. The rest are asymmetric and handled here:
/// see DESIGN.md, *Wire protocol v1: signing and public keys*.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub enum KeyType {
    /// AES-256-GCM key-encryption key (the default; blob modes 1 and 2).
    #[default]
    #[serde(rename = "aes-256")]
    Aes256,
    /// ECDSA on P-256 with SHA-256; DER signatures. Wire algorithm 1.
    #[serde(rename = "ec-p256")]
    EcP256,
    /// ECDSA on P-384 with SHA-384; DER signatures. Wire algorithm 2.
    #[serde(rename = "ec-p384")]
    EcP384,
    /// Ed25519 (RFC 8032, pure); 64-byte signatures. Wire algorithm 3.
    #[serde(rename = "ed25519")]
    Ed25519,
    /// RSA-3072, RSASSA-PSS with SHA-256, MGF1-SHA-256 and a 32-byte salt; 384-byte
    /// signatures. Wire algorithm 4.
    #[serde(rename = "rsa-3072-pss")]
    Rsa3072Pss,
    /// RSA-3072, RSASSA-PKCS1-v1_5 with SHA-256; 384-byte signatures. Wire algorithm 5.
    #[serde(rename = "rsa-3072-pkcs1")]
    Rsa3072Pkcs1,
    /// ML-DSA-65 (FIPS 204, pure, empty context); 3309-byte signatures. Wire algorithm 6.
    #[serde(rename = "ml-dsa-65")]
    MlDsa65,
    /// ML-KEM-768 (FIPS 203) wrapping key (blob mode 3).
    #[serde(rename = "ml-kem-768")]
    MlKem768,
}

impl KeyType {
    /// Every key type, in wire-id order with the wrapping types first.
    pub const ALL: [KeyType; 8] = [
        KeyType::Aes256,
        KeyType::EcP256,
        KeyType::EcP384,
        KeyType::Ed25519,
        KeyType::Rsa3072Pss,
        KeyType::Rsa3072Pkcs1,
        KeyType::MlDsa65,
        KeyType::MlKem768,
    ];

    /// The name, exactly as configuration and the CLI spell it (`ec-p256`, ...).
    pub fn name(self) -> &'static str {
        match self {
            KeyType::Aes256 => "aes-256",
            KeyType::EcP256 => "ec-p256",
            KeyType::EcP384 => "ec-p384",
            KeyType::Ed25519 => "ed25519",
            KeyType::Rsa3072Pss => "rsa-3072-pss",
            KeyType::Rsa3072Pkcs1 => "rsa-3072-pkcs1",
            KeyType::MlDsa65 => "ml-dsa-65",
            KeyType::MlKem768 => "ml-kem-768",
        }
    }

    /// Whether keys of this type sign (SIGN, VERIFY).
    pub fn is_signing(self) -> bool {
        self.signature_algorithm_id().is_some()
    }

    /// Whether keys of this type wrap DEKs (WRAP, UNWRAP, GENERATE_DATA_KEY, REWRAP).
    pub fn is_wrapping(self) -> bool {
        matches!(self, KeyType::Aes256 | KeyType::MlKem768)
    }

    /// Whether this crate holds the key pair (everything but `aes-256`).
    pub fn is_asymmetric(self) -> bool {
        self != KeyType::Aes256
    }

    /// The wire's `algorithm` id for GET_PUBLIC_KEY, or `None` for a wrapping type.
    pub fn signature_algorithm_id(self) -> Option<u8> {
        match self {
            KeyType::EcP256 => Some(1),
            KeyType::EcP384 => Some(2),
            KeyType::Ed25519 => Some(3),
            KeyType::Rsa3072Pss => Some(4),
            KeyType::Rsa3072Pkcs1 => Some(5),
            KeyType::MlDsa65 => Some(6),
            KeyType::Aes256 | KeyType::MlKem768 => None,
        }
    }

    /// The signing key type with this wire `algorithm` id.
    pub fn from_signature_algorithm_id(id: u8) -> Option<KeyType> {
        KeyType::ALL.into_iter().find(|t| t.signature_algorithm_id() == Some(id))
    }

    /// The length of the digest that SIGN and VERIFY take with the digest flag: 32 for
    /// the SHA-256 algorithms, 48 for ECDSA P-384. `None` where the algorithm signs the
    /// message itself (Ed25519, ML-DSA) and for the wrapping types.
    pub fn digest_len(self) -> Option<usize> {
        match self {
            KeyType::EcP256 | KeyType::Rsa3072Pss | KeyType::Rsa3072Pkcs1 => Some(32),
            KeyType::EcP384 => Some(48),
            KeyType::Ed25519 | KeyType::MlDsa65 | KeyType::Aes256 | KeyType::MlKem768 => None,
        }
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for KeyType {
    type Err = CryptoError;

    /// Parses the exact name (`ec-p256`); no aliases, no case folding, so a name has
    /// one spelling everywhere.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        KeyType::ALL.into_iter().find(|t| t.name() == s).ok_or(CryptoError::UnknownKeyType)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_display_from_str_and_serde() {
        for t in KeyType::ALL {
            assert_eq!(t.to_string().parse::<KeyType>(), Ok(t));
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(json, format!("\"{}\"", t.name()));
            assert_eq!(serde_json::from_str::<KeyType>(&json).unwrap(), t);
        }
        assert_eq!("EC-P256".parse::<KeyType>(), Err(CryptoError::UnknownKeyType));
        assert_eq!("rsa".parse::<KeyType>(), Err(CryptoError::UnknownKeyType));
        assert!(serde_json::from_str::<KeyType>("\"aes256\"").is_err());
        assert_eq!(KeyType::default(), KeyType::Aes256);
    }

    #[test]
    fn wire_ids_and_digest_lengths_match_the_design() {
        let expected = [
            (KeyType::EcP256, 1, Some(32)),
            (KeyType::EcP384, 2, Some(48)),
            (KeyType::Ed25519, 3, None),
            (KeyType::Rsa3072Pss, 4, Some(32)),
            (KeyType::Rsa3072Pkcs1, 5, Some(32)),
            (KeyType::MlDsa65, 6, None),
        ];
        for (t, id, digest) in expected {
            assert_eq!(t.signature_algorithm_id(), Some(id));
            assert_eq!(KeyType::from_signature_algorithm_id(id), Some(t));
            assert_eq!(t.digest_len(), digest);
            assert!(t.is_signing() && !t.is_wrapping() && t.is_asymmetric());
        }
        for t in [KeyType::Aes256, KeyType::MlKem768] {
            assert!(t.is_wrapping() && !t.is_signing());
            assert_eq!(t.signature_algorithm_id(), None);
            assert_eq!(t.digest_len(), None);
        }
        assert_eq!(KeyType::from_signature_algorithm_id(0), None);
        assert_eq!(KeyType::from_signature_algorithm_id(7), None);
    }
}
