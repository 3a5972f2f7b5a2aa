//! Private keys: generation, PKCS#8 storage, signing, and ML-KEM decapsulation keys.

use std::fmt;

use ml_dsa::{ExpandedSigningKey, MlDsa65};
use ml_kem::MlKem768;
use p256::elliptic_curve::Generate;
use pkcs8::{DecodePrivateKey, EncodePrivateKey};
use rand_core::TryCryptoRng;
use rsa::traits::PublicKeyParts;
use sha2::Sha256;
use signature::hazmat::{PrehashSigner, RandomizedPrehashSigner};
use signature::{RandomizedSigner, SignatureEncoding, Signer};
use zeroize::Zeroizing;

use crate::public_key::PublicKey;
use crate::rng::{self, OsRng};
use crate::{CryptoError, KeyType, Operation};

/// The RSA modulus size of both RSA key types, in bits.
pub(crate) const RSA_BITS: usize = 3072;
/// The RSASSA-PSS salt length, in bytes (the SHA-256 output length).
pub(crate) const PSS_SALT_LEN: usize = 32;

/// An asymmetric private key of any [`KeyType`] but `aes-256`: a signing key, or an
/// ML-KEM-768 decapsulation key.
///
/// Key material is wiped when the key is dropped (every underlying RustCrypto type
/// zeroizes itself; the ML-DSA seed is held in [`Zeroizing`]). `Debug` prints the key
/// type only. There is deliberately no `Clone`: share a key with `Arc`.
///
/// Storage form is PKCS#8 DER ([`to_pkcs8_der`](Self::to_pkcs8_der)); see the crate
/// docs for the exact form of each type.
pub struct PrivateKey {
    inner: Inner,
}

enum Inner {
    EcP256(p256::ecdsa::SigningKey),
    EcP384(p384::ecdsa::SigningKey),
    Ed25519(ed25519_dalek::SigningKey),
    Rsa3072Pss(rsa::pss::SigningKey<Sha256>),
    Rsa3072Pkcs1(rsa::pkcs1v15::SigningKey<Sha256>),
    MlDsa65(Box<MlDsaKey>),
    MlKem768(Box<ml_kem::DecapsulationKey<MlKem768>>),
}

/// ML-DSA keeps the 32-byte seed (the storage form) beside the expanded key that signs.
struct MlDsaKey {
    seed: Zeroizing<[u8; 32]>,
    expanded: ExpandedSigningKey<MlDsa65>,
}

impl MlDsaKey {
    fn from_seed(seed: Zeroizing<[u8; 32]>) -> Self {
        let expanded = ExpandedSigningKey::from_seed(&(*seed).into());
        MlDsaKey { seed, expanded }
    }

    /// ML-DSA.Sign (FIPS 204 Algorithm 2): pure, empty context, hedged with 32 bytes
    /// from `rng`. Tests pass an all-zero generator to get the deterministic variant.
    fn sign_with<R: TryCryptoRng + ?Sized>(
        &self,
        message: &[u8],
        rng: &mut R,
    ) -> Result<Vec<u8>, CryptoError> {
        let signature =
            self.expanded.sign_randomized(message, &[], rng).map_err(|_| CryptoError::SigningFailed)?;
        Ok(signature.encode().to_vec())
    }
}

impl PrivateKey {
    /// Generates a fresh key pair from the OS CSPRNG.
    ///
    /// RSA-3072 takes a while (around a second, more in an unoptimised build); the
    /// others are fast. `aes-256` is [`CryptoError::Unsupported`]: its keys live with
    /// the backends.
    pub fn generate(key_type: KeyType) -> Result<Self, CryptoError> {
        let inner = match key_type {
            KeyType::EcP256 => Inner::EcP256(p256::ecdsa::SigningKey::generate_from_rng(&mut OsRng)),
            KeyType::EcP384 => Inner::EcP384(p384::ecdsa::SigningKey::generate_from_rng(&mut OsRng)),
            KeyType::Ed25519 => Inner::Ed25519(ed25519_dalek::SigningKey::generate(&mut OsRng)),
            KeyType::Rsa3072Pss | KeyType::Rsa3072Pkcs1 => {
                let key =
                    rsa::PrivateKey::new(&mut OsRng, RSA_BITS).map_err(|_| CryptoError::GenerationFailed)?;
                rsa_inner(key_type, key)
            }
            KeyType::MlDsa65 => {
                let mut seed = Zeroizing::new([0u8; 32]);
                rng::fill(seed.as_mut());
                Inner::MlDsa65(Box::new(MlDsaKey::from_seed(seed)))
            }
            KeyType::MlKem768 => {
                let mut seed = Zeroizing::new([0u8; 64]);
                rng::fill(seed.as_mut());
                Inner::MlKem768(Box::new(ml_kem::DecapsulationKey::from_seed((*seed).into())))
            }
            KeyType::Aes256 => {
                return Err(CryptoError::Unsupported { key_type, operation: Operation::Generate });
            }
        };
        Ok(PrivateKey { inner })
    }

    /// Reads a key stored with [`to_pkcs8_der`](Self::to_pkcs8_der) (or any PKCS#8 DER
    /// private key of this type in the form the crate docs list).
    ///
    /// The type must be given because both RSA types share one encoding; a key of any
    /// other algorithm, an RSA modulus that is not 3072 bits, or malformed DER is
    /// [`CryptoError::InvalidPrivateKey`].
    pub fn from_pkcs8_der(key_type: KeyType, der: &[u8]) -> Result<Self, CryptoError> {
        let invalid = CryptoError::InvalidPrivateKey { key_type };
        let inner = match key_type {
            KeyType::EcP256 => {
                Inner::EcP256(p256::ecdsa::SigningKey::from_pkcs8_der(der).map_err(|_| invalid)?)
            }
            KeyType::EcP384 => {
                Inner::EcP384(p384::ecdsa::SigningKey::from_pkcs8_der(der).map_err(|_| invalid)?)
            }
            KeyType::Ed25519 => {
                Inner::Ed25519(ed25519_dalek::SigningKey::from_pkcs8_der(der).map_err(|_| invalid)?)
            }
            KeyType::Rsa3072Pss | KeyType::Rsa3072Pkcs1 => {
                let key = rsa::PrivateKey::from_pkcs8_der(der).map_err(|_| invalid)?;
                if key.size() * 8 != RSA_BITS {
                    return Err(invalid);
                }
                rsa_inner(key_type, key)
            }
            KeyType::MlDsa65 => {
                let key = ml_dsa::SigningKey::<MlDsa65>::from_pkcs8_der(der).map_err(|_| invalid)?;
                Inner::MlDsa65(Box::new(MlDsaKey::from_seed(Zeroizing::new(key.to_seed().into()))))
            }
            KeyType::MlKem768 => {
                Inner::MlKem768(Box::new(ml_kem::DecapsulationKey::from_pkcs8_der(der).map_err(|_| invalid)?))
            }
            KeyType::Aes256 => return Err(invalid),
        };
        Ok(PrivateKey { inner })
    }

    /// The PKCS#8 DER storage form, in a buffer wiped on drop.
    pub fn to_pkcs8_der(&self) -> Zeroizing<Vec<u8>> {
        let document = match &self.inner {
            Inner::EcP256(k) => k.to_pkcs8_der(),
            Inner::EcP384(k) => k.to_pkcs8_der(),
            Inner::Ed25519(k) => ed25519_v1_pkcs8(k),
            Inner::Rsa3072Pss(k) => k.to_pkcs8_der(),
            Inner::Rsa3072Pkcs1(k) => k.to_pkcs8_der(),
            Inner::MlDsa65(k) => ml_dsa::SigningKey::<MlDsa65>::from_seed(&(*k.seed).into()).to_pkcs8_der(),
            Inner::MlKem768(k) => k.to_pkcs8_der(),
        };
        // Every key here was generated or decoded, so it has a valid encoding (ML-KEM
        // keys are always built from their seed, the one form it encodes).
        let document = document.expect("a well-formed key encodes as PKCS#8");
        Zeroizing::new(document.as_bytes().to_vec())
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

    /// The matching public key: the verifying key, or for ML-KEM-768 the encapsulation
    /// key that [`kem::seal`](crate::kem::seal) wraps to.
    pub fn public_key(&self) -> PublicKey {
        match &self.inner {
            Inner::EcP256(k) => PublicKey::from_ec_p256(*k.verifying_key()),
            Inner::EcP384(k) => PublicKey::from_ec_p384(*k.verifying_key()),
            Inner::Ed25519(k) => PublicKey::from_ed25519(k.verifying_key()),
            Inner::Rsa3072Pss(k) => PublicKey::from_rsa(KeyType::Rsa3072Pss, k.as_ref().to_public_key()),
            Inner::Rsa3072Pkcs1(k) => PublicKey::from_rsa(KeyType::Rsa3072Pkcs1, k.as_ref().to_public_key()),
            Inner::MlDsa65(k) => PublicKey::from_ml_dsa_65(k.expanded.verifying_key()),
            Inner::MlKem768(k) => PublicKey::from_ml_kem_768(k.encapsulation_key().clone()),
        }
    }

    /// Signs `message` with the key type's algorithm, hashing it first where the
    /// algorithm does (SHA-256, or SHA-384 for ec-p384). The signature is in the wire's
    /// form: DER for ECDSA, raw bytes for the rest.
    ///
    /// ECDSA is deterministic (RFC 6979), Ed25519 is deterministic by design, RSA-PSS
    /// draws a fresh salt, and ML-DSA is hedged (FIPS 204's default, 32 fresh random
    /// bytes mixed into the nonce). An ML-KEM key is [`CryptoError::Unsupported`].
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let failed = |_| CryptoError::SigningFailed;
        match &self.inner {
            Inner::EcP256(k) => {
                let signature: p256::ecdsa::DerSignature = k.try_sign(message).map_err(failed)?;
                Ok(signature.to_vec())
            }
            Inner::EcP384(k) => {
                let signature: p384::ecdsa::DerSignature = k.try_sign(message).map_err(failed)?;
                Ok(signature.to_vec())
            }
            Inner::Ed25519(k) => Ok(k.sign(message).to_vec()),
            Inner::Rsa3072Pss(k) => Ok(k.try_sign_with_rng(&mut OsRng, message).map_err(failed)?.to_vec()),
            Inner::Rsa3072Pkcs1(k) => Ok(k.try_sign_with_rng(&mut OsRng, message).map_err(failed)?.to_vec()),
            Inner::MlDsa65(k) => k.sign_with(message, &mut OsRng),
            Inner::MlKem768(_) => Err(self.unsupported(Operation::Sign)),
        }
    }

    /// Signs a digest the caller computed (the wire's digest flag): exactly
    /// [`KeyType::digest_len`] bytes of SHA-256 (SHA-384 for ec-p384) of the message.
    /// The signature is the same as [`sign`](Self::sign) over that message would give
    /// (for ECDSA the same bytes; RSA-PSS differs only by its random salt).
    ///
    /// Ed25519 and ML-DSA sign the message itself, so a digest is
    /// [`CryptoError::Unsupported`]; a digest of the wrong length is
    /// [`CryptoError::DigestLength`].
    pub fn sign_digest(&self, digest: &[u8]) -> Result<Vec<u8>, CryptoError> {
        check_digest(self.key_type(), digest, Operation::SignDigest)?;
        let failed = |_| CryptoError::SigningFailed;
        match &self.inner {
            Inner::EcP256(k) => {
                let signature: p256::ecdsa::DerSignature = k.sign_prehash(digest).map_err(failed)?;
                Ok(signature.to_vec())
            }
            Inner::EcP384(k) => {
                let signature: p384::ecdsa::DerSignature = k.sign_prehash(digest).map_err(failed)?;
                Ok(signature.to_vec())
            }
            Inner::Rsa3072Pss(k) => Ok(k.sign_prehash_with_rng(&mut OsRng, digest).map_err(failed)?.to_vec()),
            // The pkcs1v15 key's prehash signer has no RNG parameter, so no blinding
            // without rsa's own `getrandom` feature: sign through the padding scheme.
            Inner::Rsa3072Pkcs1(k) => k
                .as_ref()
                .sign_with_rng(&mut OsRng, rsa::Pkcs1v15Sign::new::<Sha256>(), digest)
                .map_err(|_| CryptoError::SigningFailed),
            Inner::Ed25519(_) | Inner::MlDsa65(_) | Inner::MlKem768(_) => {
                Err(self.unsupported(Operation::SignDigest))
            }
        }
    }

    /// The ML-KEM-768 decapsulation key, for [`kem::open`](crate::kem::open).
    pub(crate) fn as_ml_kem_768(&self) -> Option<&ml_kem::DecapsulationKey<MlKem768>> {
        match &self.inner {
            Inner::MlKem768(k) => Some(k),
            _ => None,
        }
    }

    fn unsupported(&self, operation: Operation) -> CryptoError {
        CryptoError::Unsupported { key_type: self.key_type(), operation }
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey").field("key_type", &self.key_type()).finish_non_exhaustive()
    }
}

/// RFC 8410's PKCS#8 v1, the seed alone. ed25519-dalek writes v2 (RFC 5958, with the
/// public key), which OpenSSL 3.0 and Python's `cryptography` refuse to read; v1 is
/// what they write and what every tool reads. Both forms are read back.
fn ed25519_v1_pkcs8(key: &ed25519_dalek::SigningKey) -> pkcs8::Result<pkcs8::SecretDocument> {
    use zeroize::Zeroize;
    let mut bytes =
        ed25519_dalek::ed25519::pkcs8::KeypairBytes { secret_key: key.to_bytes(), public_key: None };
    let document = bytes.to_pkcs8_der();
    bytes.secret_key.zeroize();
    document
}

fn rsa_inner(key_type: KeyType, key: rsa::PrivateKey) -> Inner {
    if key_type == KeyType::Rsa3072Pss {
        Inner::Rsa3072Pss(rsa::pss::SigningKey::new_with_salt_len(key, PSS_SALT_LEN))
    } else {
        Inner::Rsa3072Pkcs1(rsa::pkcs1v15::SigningKey::new(key))
    }
}

/// Checks a caller's digest against the key type's hash.
pub(crate) fn check_digest(
    key_type: KeyType,
    digest: &[u8],
    operation: Operation,
) -> Result<(), CryptoError> {
    match key_type.digest_len() {
        None => Err(CryptoError::Unsupported { key_type, operation }),
        Some(expected) if expected != digest.len() => {
            Err(CryptoError::DigestLength { expected, actual: digest.len() })
        }
        Some(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_data::{Replay, hex, load};

    /// Wycheproof ML-DSA-65 signing vectors with an empty context: our signing path with
    /// an all-zero `rnd` (FIPS 204's deterministic variant) gives the known signature.
    /// Production signing is the same call with 32 random bytes.
    #[test]
    fn ml_dsa_65_deterministic_signatures_match_wycheproof() {
        let data = load("wycheproof-mldsa-65-sign-seed.json");
        let mut checked = 0;
        for group in data["testGroups"].as_array().unwrap() {
            let seed: [u8; 32] = hex(group, "privateSeed").try_into().unwrap();
            let key = MlDsaKey::from_seed(Zeroizing::new(seed));
            assert_eq!(key.expanded.verifying_key().encode().as_slice(), hex(group, "publicKey").as_slice());
            for t in group["tests"].as_array().unwrap() {
                if t.get("ctx").is_some_and(|c| c != "") {
                    continue; // keymux signs with the empty context only
                }
                let signature = key.sign_with(&hex(t, "msg"), &mut Replay::new(Vec::new())).unwrap();
                assert_eq!(signature, hex(t, "sig"), "tcId {}", t["tcId"]);
                checked += 1;
            }
        }
        assert!(checked >= 3, "{checked} vectors checked");
    }

    #[test]
    fn ml_dsa_65_signing_is_hedged() {
        let key = MlDsaKey::from_seed(Zeroizing::new([7; 32]));
        let zero = key.sign_with(b"m", &mut Replay::new(Vec::new())).unwrap();
        assert_ne!(key.sign_with(b"m", &mut OsRng).unwrap(), zero);
        assert_ne!(key.sign_with(b"m", &mut OsRng).unwrap(), key.sign_with(b"m", &mut OsRng).unwrap());
    }
}
