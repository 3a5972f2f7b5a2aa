//! Public keys: DER SubjectPublicKeyInfo in and out, and signature verification.

use std::fmt;
use std::hash::{Hash, Hasher};

use ml_dsa::MlDsa65;
use ml_kem::MlKem768;
use rsa::traits::PublicKeyParts;
use sha2::Sha256;
use signature::Verifier;
use signature::hazmat::PrehashVerifier;
use spki::{DecodePublicKey, EncodePublicKey};

use crate::private_key::{PSS_SALT_LEN, RSA_BITS, check_digest};
use crate::{CryptoError, KeyType, Operation};

/// An asymmetric public key: a verifying key, or an ML-KEM-768 encapsulation key.
///
/// Its wire and storage form is the DER SubjectPublicKeyInfo
/// ([`spki_der`](Self::spki_der)), which any X.509 tool reads; see the crate docs for
/// the algorithm identifier of each type. Cheap to clone (the RSA and lattice keys are
/// on the heap, the rest are a few dozen bytes); equality compares type and DER.
#[derive(Clone)]
pub struct PublicKey {
    inner: Inner,
    spki: Box<[u8]>,
    /// The SPKI's subjectPublicKey bits (an uncompressed EC point), for verifying
    /// ECDSA messages with `ring`, several times faster than the pure-Rust verifiers.
    point: Box<[u8]>,
}

#[derive(Clone)]
enum Inner {
    EcP256(p256::ecdsa::VerifyingKey),
    EcP384(p384::ecdsa::VerifyingKey),
    Ed25519(ed25519_dalek::VerifyingKey),
    Rsa3072Pss(Box<rsa::pss::VerifyingKey<Sha256>>),
    Rsa3072Pkcs1(Box<rsa::pkcs1v15::VerifyingKey<Sha256>>),
    MlDsa65(Box<ml_dsa::VerifyingKey<MlDsa65>>),
    MlKem768(Box<ml_kem::EncapsulationKey<MlKem768>>),
}

impl PublicKey {
    /// Reads a DER SubjectPublicKeyInfo, such as GET_PUBLIC_KEY's `public_key`.
    ///
    /// The type must be given because both RSA types share the `rsaEncryption`
    /// identifier (the wire sends the `algorithm` id beside the key). DER that does not
    /// parse, another algorithm's identifier, an RSA modulus that is not 3072 bits, or
    /// an ML-KEM key that fails FIPS 203's modulus check is
    /// [`CryptoError::InvalidPublicKey`]. The key is kept re-encoded, so
    /// [`spki_der`](Self::spki_der) is canonical (an EC point given compressed comes
    /// back uncompressed).
    pub fn from_spki_der(key_type: KeyType, der: &[u8]) -> Result<Self, CryptoError> {
        let invalid = CryptoError::InvalidPublicKey { key_type };
        let key = match key_type {
            KeyType::EcP256 => {
                Self::from_ec_p256(p256::ecdsa::VerifyingKey::from_public_key_der(der).map_err(|_| invalid)?)
            }
            KeyType::EcP384 => {
                Self::from_ec_p384(p384::ecdsa::VerifyingKey::from_public_key_der(der).map_err(|_| invalid)?)
            }
            KeyType::Ed25519 => Self::from_ed25519(
                ed25519_dalek::VerifyingKey::from_public_key_der(der).map_err(|_| invalid)?,
            ),
            KeyType::Rsa3072Pss | KeyType::Rsa3072Pkcs1 => {
                let key = rsa::PublicKey::from_public_key_der(der).map_err(|_| invalid)?;
                if key.size() * 8 != RSA_BITS {
                    return Err(invalid);
                }
                Self::from_rsa(key_type, key)
            }
            KeyType::MlDsa65 => Self::from_ml_dsa_65(
                ml_dsa::VerifyingKey::<MlDsa65>::from_public_key_der(der).map_err(|_| invalid)?,
            ),
            KeyType::MlKem768 => Self::from_ml_kem_768(
                ml_kem::EncapsulationKey::<MlKem768>::from_public_key_der(der).map_err(|_| invalid)?,
            ),
            KeyType::Aes256 => return Err(invalid),
        };
        Ok(key)
    }

    /// The DER SubjectPublicKeyInfo: the wire's `public_key`.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki
    }

    /// The key's type.
    pub fn key_type(&self) -> KeyType {
        match &self.inner {
            Inner::EcP256(_) => KeyType::EcP256,
            Inner::EcP384(_) => KeyType::EcP384,
            Inner::Ed25519(_) => KeyType::Ed25519,
            Inner::Rsa3072Pss(_) => KeyType::Rsa3072Pss,
            Inner::Rsa3072Pkcs1(_) => KeyType::Rsa3072Pkcs1,
            Inner::MlDsa65(_) => KeyType::MlDsa65,
            Inner::MlKem768(_) => KeyType::MlKem768,
        }
    }

    /// Verifies `signature` over `message` (hashed first where the algorithm does).
    ///
    /// `Ok(false)` for any signature that does not verify, including one that is not
    /// even well-formed (wrong length, bad DER, an ECDSA `r` or `s` out of range): the
    /// wire answers all of these `valid = 0`, and a verifier must not tell a forger
    /// which check failed. Ed25519 uses the strict check (canonical `S`, no small-order
    /// keys or `R`), RSA-PSS requires the 32-byte salt, and ML-DSA is pure with an empty
    /// context. The only error is an ML-KEM key, [`CryptoError::Unsupported`].
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<bool, CryptoError> {
        Ok(match &self.inner {
            // The same checks as p256/p384's verifiers (strict DER, r and s in range,
            // high S accepted), at a fraction of the cost: VERIFY's hot path.
            Inner::EcP256(_) => {
                ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_ASN1, &self.point)
                    .verify(message, signature)
                    .is_ok()
            }
            Inner::EcP384(_) => {
                ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P384_SHA384_ASN1, &self.point)
                    .verify(message, signature)
                    .is_ok()
            }
            Inner::Ed25519(k) => ed25519_dalek::Signature::from_slice(signature)
                .is_ok_and(|s| k.verify_strict(message, &s).is_ok()),
            Inner::Rsa3072Pss(k) => {
                rsa::pss::Signature::try_from(signature).is_ok_and(|s| k.verify(message, &s).is_ok())
            }
            Inner::Rsa3072Pkcs1(k) => {
                rsa::pkcs1v15::Signature::try_from(signature).is_ok_and(|s| k.verify(message, &s).is_ok())
            }
            Inner::MlDsa65(k) => ml_dsa::Signature::<MlDsa65>::try_from(signature)
                .is_ok_and(|s| k.verify_with_context(message, &[], &s)),
            Inner::MlKem768(_) => return Err(self.unsupported(Operation::Verify)),
        })
    }

    /// Verifies `signature` over a digest the caller computed (the wire's digest
    /// flag), [`KeyType::digest_len`] bytes long. As [`verify`](Self::verify) for a bad
    /// signature; a digest of the wrong length is [`CryptoError::DigestLength`], and
    /// Ed25519, ML-DSA and ML-KEM keys are [`CryptoError::Unsupported`].
    pub fn verify_digest(&self, digest: &[u8], signature: &[u8]) -> Result<bool, CryptoError> {
        check_digest(self.key_type(), digest, Operation::VerifyDigest)?;
        Ok(match &self.inner {
            Inner::EcP256(k) => p256::ecdsa::DerSignature::from_bytes(signature)
                .is_ok_and(|s| k.verify_prehash(digest, &s).is_ok()),
            Inner::EcP384(k) => p384::ecdsa::DerSignature::from_bytes(signature)
                .is_ok_and(|s| k.verify_prehash(digest, &s).is_ok()),
            Inner::Rsa3072Pss(k) => {
                rsa::pss::Signature::try_from(signature).is_ok_and(|s| k.verify_prehash(digest, &s).is_ok())
            }
            Inner::Rsa3072Pkcs1(k) => rsa::pkcs1v15::Signature::try_from(signature)
                .is_ok_and(|s| k.verify_prehash(digest, &s).is_ok()),
            Inner::Ed25519(_) | Inner::MlDsa65(_) | Inner::MlKem768(_) => {
                return Err(self.unsupported(Operation::VerifyDigest));
            }
        })
    }

    /// The ML-KEM-768 encapsulation key, for [`kem::seal`](crate::kem::seal).
    pub(crate) fn as_ml_kem_768(&self) -> Option<&ml_kem::EncapsulationKey<MlKem768>> {
        match &self.inner {
            Inner::MlKem768(k) => Some(k),
            _ => None,
        }
    }

    pub(crate) fn from_ec_p256(key: p256::ecdsa::VerifyingKey) -> Self {
        let spki = key.to_public_key_der();
        Self::new(Inner::EcP256(key), spki)
    }

    pub(crate) fn from_ec_p384(key: p384::ecdsa::VerifyingKey) -> Self {
        let spki = key.to_public_key_der();
        Self::new(Inner::EcP384(key), spki)
    }

    pub(crate) fn from_ed25519(key: ed25519_dalek::VerifyingKey) -> Self {
        let spki = key.to_public_key_der();
        Self::new(Inner::Ed25519(key), spki)
    }

    /// An RSA key as one of the two RSA types. Both encode as `rsaEncryption`, the
    /// identifier every tool and cloud KMS uses for either padding.
    pub(crate) fn from_rsa(key_type: KeyType, key: rsa::PublicKey) -> Self {
        let spki = key.to_public_key_der();
        let inner = if key_type == KeyType::Rsa3072Pss {
            Inner::Rsa3072Pss(Box::new(rsa::pss::VerifyingKey::new_with_salt_len(key, PSS_SALT_LEN)))
        } else {
            Inner::Rsa3072Pkcs1(Box::new(rsa::pkcs1v15::VerifyingKey::new(key)))
        };
        Self::new(inner, spki)
    }

    pub(crate) fn from_ml_dsa_65(key: ml_dsa::VerifyingKey<MlDsa65>) -> Self {
        let spki = key.to_public_key_der();
        Self::new(Inner::MlDsa65(Box::new(key)), spki)
    }

    pub(crate) fn from_ml_kem_768(key: ml_kem::EncapsulationKey<MlKem768>) -> Self {
        let spki = key.to_public_key_der();
        Self::new(Inner::MlKem768(Box::new(key)), spki)
    }

    fn new(inner: Inner, spki: spki::Result<spki::Document>) -> Self {
        // Encoding a key that was generated or decoded cannot fail.
        let spki = spki.expect("a well-formed public key encodes as SubjectPublicKeyInfo");
        let point = match &inner {
            Inner::EcP256(_) | Inner::EcP384(_) => spki::SubjectPublicKeyInfoRef::try_from(spki.as_bytes())
                .ok()
                .and_then(|info| info.subject_public_key.as_bytes().map(Box::from))
                .unwrap_or_default(),
            _ => Box::default(),
        };
        PublicKey { inner, spki: spki.as_bytes().into(), point }
    }

    fn unsupported(&self, operation: Operation) -> CryptoError {
        CryptoError::Unsupported { key_type: self.key_type(), operation }
    }
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.key_type() == other.key_type() && self.spki == other.spki
    }
}

impl Eq for PublicKey {}

impl Hash for PublicKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key_type().hash(state);
        self.spki.hash(state);
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("key_type", &self.key_type())
            .field("spki_len", &self.spki.len())
            .finish_non_exhaustive()
    }
}
