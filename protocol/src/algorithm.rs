//! Public-key algorithms: the `algorithm` byte of a GET_PUBLIC_KEY response, and the
//! asymmetric key types of `keymux key create --type` (the signing ones, and
//! ML-KEM-768, whose public key is an encapsulation key).
//!
//! The protocol crate cannot know which algorithm a named key has, so it does not check
//! SIGN and VERIFY inputs against one; the proxy does, with the helpers here (see
//! `DESIGN.md`, *Wire protocol v1: signing and public keys*):
//!
//! - with [`crate::Flags::DIGEST`], the input's length must be
//!   [`Algorithm::digest_len`], else BAD_REQUEST;
//! - the flag on an algorithm without a digest length (Ed25519, ML-DSA: they sign the
//!   message itself) is UNSUPPORTED.

use std::fmt;
use std::str::FromStr;

use crate::error::UnknownAlgorithm;

/// A public-key algorithm, by its wire id.
///
/// New algorithms get new ids; an id is never reused. Ids 1 to 6 are DESIGN.md's
/// signature algorithms. DESIGN.md lets GET_PUBLIC_KEY return an `ml-kem-768` key's
/// encapsulation key but names no `algorithm` byte for it; keymux gives it 7 (see
/// docs/ARCHITECTURE.md). A response with any other id is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
#[non_exhaustive]
pub enum Algorithm {
    /// `ec-p256`: ECDSA over P-256 with SHA-256; DER signatures (X9.62 Ecdsa-Sig-Value).
    EcdsaP256Sha256 = 1,
    /// `ec-p384`: ECDSA over P-384 with SHA-384; DER signatures.
    EcdsaP384Sha384 = 2,
    /// `ed25519`: Ed25519 (RFC 8032, pure); 64-byte signatures.
    Ed25519 = 3,
    /// `rsa-3072-pss`: RSASSA-PSS with SHA-256, MGF1-SHA-256 and a 32-byte salt;
    /// 384-byte signatures.
    Rsa3072PssSha256 = 4,
    /// `rsa-3072-pkcs1`: RSASSA-PKCS1-v1_5 with SHA-256; 384-byte signatures.
    Rsa3072Pkcs1Sha256 = 5,
    /// `ml-dsa-65`: ML-DSA-65 (FIPS 204, pure, empty context); 3309-byte signatures.
    MlDsa65 = 6,
    /// `ml-kem-768`: an ML-KEM-768 (FIPS 203) encapsulation key. It wraps (blob mode 3)
    /// and never signs.
    MlKem768 = 7,
}

impl Algorithm {
    /// Every algorithm, in id order.
    pub const ALL: [Algorithm; 7] = [
        Algorithm::EcdsaP256Sha256,
        Algorithm::EcdsaP384Sha384,
        Algorithm::Ed25519,
        Algorithm::Rsa3072PssSha256,
        Algorithm::Rsa3072Pkcs1Sha256,
        Algorithm::MlDsa65,
        Algorithm::MlKem768,
    ];

    /// The longest [`Algorithm::digest_len`] of any algorithm (SHA-384's 48 bytes).
    pub const MAX_DIGEST_LEN: usize = 48;

    /// The longest [`Algorithm::max_signature_len`] of any algorithm (ML-DSA-65's
    /// 3309 bytes).
    pub const MAX_SIGNATURE_LEN: usize = 3309;

    /// The algorithm with wire id `id`, if defined.
    pub fn from_u8(id: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|algorithm| algorithm.id() == id)
    }

    /// The wire id.
    pub fn id(self) -> u8 {
        self as u8
    }

    /// The key type name, as `keymux key create --type` takes it and as logs show it.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::EcdsaP256Sha256 => "ec-p256",
            Algorithm::EcdsaP384Sha384 => "ec-p384",
            Algorithm::Ed25519 => "ed25519",
            Algorithm::Rsa3072PssSha256 => "rsa-3072-pss",
            Algorithm::Rsa3072Pkcs1Sha256 => "rsa-3072-pkcs1",
            Algorithm::MlDsa65 => "ml-dsa-65",
            Algorithm::MlKem768 => "ml-kem-768",
        }
    }

    /// Whether keys of this algorithm sign (all but ML-KEM-768).
    pub fn signs(self) -> bool {
        self != Algorithm::MlKem768
    }

    /// The length a SIGN or VERIFY `input` must have under [`crate::Flags::DIGEST`]:
    /// the output of the algorithm's hash. `None` for the algorithms that sign the
    /// message itself (Ed25519, ML-DSA), on which the digest flag is UNSUPPORTED.
    pub fn digest_len(self) -> Option<usize> {
        match self {
            Algorithm::EcdsaP256Sha256 | Algorithm::Rsa3072PssSha256 | Algorithm::Rsa3072Pkcs1Sha256 => {
                Some(32)
            }
            Algorithm::EcdsaP384Sha384 => Some(48),
            Algorithm::Ed25519 | Algorithm::MlDsa65 | Algorithm::MlKem768 => None,
        }
    }

    /// The exact signature length, where the encoding has one. `None` for ECDSA, whose
    /// DER signatures vary in length up to [`Algorithm::max_signature_len`], and for
    /// ML-KEM-768, which does not sign.
    pub fn signature_len(self) -> Option<usize> {
        match self {
            Algorithm::EcdsaP256Sha256 | Algorithm::EcdsaP384Sha384 | Algorithm::MlKem768 => None,
            fixed => Some(fixed.max_signature_len()),
        }
    }

    /// The longest signature the algorithm produces (0 for ML-KEM-768). For ECDSA that is a DER SEQUENCE
    /// of two INTEGERs, each up to the group order's size plus a sign byte: 72 bytes
    /// for P-256, 104 for P-384.
    pub fn max_signature_len(self) -> usize {
        match self {
            Algorithm::EcdsaP256Sha256 => 72,
            Algorithm::EcdsaP384Sha384 => 104,
            Algorithm::Ed25519 => 64,
            Algorithm::Rsa3072PssSha256 | Algorithm::Rsa3072Pkcs1Sha256 => 384,
            Algorithm::MlDsa65 => 3309,
            Algorithm::MlKem768 => 0,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Algorithm {
    type Err = UnknownAlgorithm;

    /// Parses a key type name ([`Algorithm::name`]); exact and case-sensitive, as the
    /// names are written in configs and on the command line.
    fn from_str(name: &str) -> Result<Self, UnknownAlgorithm> {
        Self::ALL.into_iter().find(|algorithm| algorithm.name() == name).ok_or(UnknownAlgorithm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_design_table() {
        let ids: Vec<u8> = Algorithm::ALL.iter().map(|a| a.id()).collect();
        assert_eq!(ids, [1, 2, 3, 4, 5, 6, 7]);
        for algorithm in Algorithm::ALL {
            assert_eq!(Algorithm::from_u8(algorithm.id()), Some(algorithm));
        }
        assert_eq!(Algorithm::from_u8(0), None);
        assert_eq!(Algorithm::from_u8(8), None);
        assert_eq!(Algorithm::from_u8(0xff), None);
    }

    #[test]
    fn names_parse_back() {
        for algorithm in Algorithm::ALL {
            assert_eq!(algorithm.name().parse::<Algorithm>(), Ok(algorithm));
            assert_eq!(algorithm.to_string(), algorithm.name());
        }
        assert_eq!("ml-dsa-65".parse::<Algorithm>(), Ok(Algorithm::MlDsa65));
        // A symmetric key has no public key.
        assert_eq!("aes-256".parse::<Algorithm>(), Err(UnknownAlgorithm));
        assert_eq!("ml-kem-768".parse::<Algorithm>(), Ok(Algorithm::MlKem768));
        assert!(!Algorithm::MlKem768.signs() && Algorithm::MlDsa65.signs());
        assert_eq!("EC-P256".parse::<Algorithm>(), Err(UnknownAlgorithm));
        assert_eq!("".parse::<Algorithm>(), Err(UnknownAlgorithm));
        assert!(
            UnknownAlgorithm
                .to_string()
                .ends_with("ec-p256, ec-p384, ed25519, rsa-3072-pss, rsa-3072-pkcs1, ml-dsa-65, ml-kem-768")
        );
    }

    #[test]
    fn digest_lengths_match_the_hashes() {
        assert_eq!(Algorithm::EcdsaP256Sha256.digest_len(), Some(32));
        assert_eq!(Algorithm::EcdsaP384Sha384.digest_len(), Some(48));
        assert_eq!(Algorithm::Rsa3072PssSha256.digest_len(), Some(32));
        assert_eq!(Algorithm::Rsa3072Pkcs1Sha256.digest_len(), Some(32));
        assert_eq!(Algorithm::Ed25519.digest_len(), None);
        assert_eq!(Algorithm::MlDsa65.digest_len(), None);
    }

    #[test]
    fn maxima_are_the_largest_of_any_algorithm() {
        let digest = Algorithm::ALL.iter().filter_map(|a| a.digest_len()).max();
        assert_eq!(digest, Some(Algorithm::MAX_DIGEST_LEN));
        let signature = Algorithm::ALL.iter().map(|a| a.max_signature_len()).max();
        assert_eq!(signature, Some(Algorithm::MAX_SIGNATURE_LEN));
        for algorithm in Algorithm::ALL {
            if let Some(len) = algorithm.signature_len() {
                assert_eq!(algorithm.max_signature_len(), len, "{algorithm}");
            }
        }
    }
}
