//! How SIGN is made on the token, per key type: what the proxy computes first (the
//! digest, a PKCS#1 DigestInfo), the mechanism the token signs with, and how its output
//! becomes keymux's signature encoding.
//!
//! | key type | input given to the token | mechanism | signature |
//! |---|---|---|---|
//! | `ec-p256` | SHA-256 of the message (or the client's digest) | `CKM_ECDSA` | raw `r ‖ s` re-encoded as DER `Ecdsa-Sig-Value` |
//! | `ec-p384` | SHA-384 of the message (or the client's digest) | `CKM_ECDSA` | as above |
//! | `ed25519` | the message | `CKM_EDDSA`, no parameters (pure Ed25519) | 64 bytes |
//! | `rsa-3072-pss` | SHA-256 of the message (or the client's digest) | `CKM_RSA_PKCS_PSS`, `CKM_SHA256`, `CKG_MGF1_SHA256`, salt 32 | 384 bytes |
//! | `rsa-3072-pkcs1` | the message | `CKM_SHA256_RSA_PKCS` | 384 bytes |
//! | `rsa-3072-pkcs1`, digest flag, or no `CKM_SHA256_RSA_PKCS` | DigestInfo(SHA-256) | `CKM_RSA_PKCS` | 384 bytes |
//!
//! Hashing on the proxy keeps a large message off the HSM's link and lets one signing
//! mechanism serve both SIGN forms. The digest's length has been checked by the router.

use std::borrow::Cow;

use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use sha2::Digest;
use spki::der::Encode;
use spki::der::asn1::UintRef;

use super::pairs::Mechanisms;
use crate::error::OpError;
use crate::keys::KeyType;

/// The DER prefix of a SHA-256 DigestInfo (RFC 8017 §9.2, note 1): the digest follows.
const SHA256_DIGEST_INFO: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00,
    0x04, 0x20,
];
/// RSA-PSS salt bytes (the hash's length).
const PSS_SALT_LEN: u64 = 32;

/// One signature to make: the mechanism, what it signs, and how its output is encoded.
pub(crate) struct SignPlan<'a> {
    /// The mechanism `C_SignInit` gets.
    pub(crate) mechanism: Mechanism<'static>,
    /// What `C_Sign` gets.
    pub(crate) data: Cow<'a, [u8]>,
    /// Whether the token's raw `r ‖ s` must be re-encoded as DER.
    ecdsa: bool,
}

/// How a `key_type` key signs `input` (a digest if `digest`) on a token offering
/// `mechanisms`. A mechanism the token lacks is BAD_REQUEST, naming it.
pub(crate) fn plan<'a>(
    key_type: KeyType,
    input: &'a [u8],
    digest: bool,
    mechanisms: &Mechanisms,
) -> Result<SignPlan<'a>, OpError> {
    let need = |mechanism: MechanismType| {
        if mechanisms.has(mechanism) {
            Ok(())
        } else {
            Err(OpError::BadRequest(format!(
                "the token offers no {mechanism} (C_GetMechanismInfo): it cannot sign with {key_type} keys"
            )))
        }
    };
    let hashed =
        |hash: fn(&[u8]) -> Vec<u8>| if digest { Cow::Borrowed(input) } else { Cow::Owned(hash(input)) };
    let plan = |mechanism, data, ecdsa| SignPlan { mechanism, data, ecdsa };
    Ok(match key_type {
        KeyType::EcP256 | KeyType::EcP384 => {
            need(MechanismType::ECDSA)?;
            let hash = if key_type == KeyType::EcP256 { sha256 } else { sha384 };
            plan(Mechanism::Ecdsa, hashed(hash), true)
        }
        KeyType::Ed25519 if digest => return Err(OpError::Unsupported),
        KeyType::Ed25519 => {
            need(MechanismType::EDDSA)?;
            plan(Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)), Cow::Borrowed(input), false)
        }
        KeyType::Rsa3072Pss => {
            need(MechanismType::RSA_PKCS_PSS)?;
            let params = PkcsPssParams {
                hash_alg: MechanismType::SHA256,
                mgf: PkcsMgfType::MGF1_SHA256,
                s_len: PSS_SALT_LEN.into(),
            };
            plan(Mechanism::RsaPkcsPss(params), hashed(sha256), false)
        }
        KeyType::Rsa3072Pkcs1 if !digest && mechanisms.has(MechanismType::SHA256_RSA_PKCS) => {
            plan(Mechanism::Sha256RsaPkcs, Cow::Borrowed(input), false)
        }
        KeyType::Rsa3072Pkcs1 => {
            need(MechanismType::RSA_PKCS)?;
            let mut digest_info = SHA256_DIGEST_INFO.to_vec();
            digest_info.extend_from_slice(&hashed(sha256));
            plan(Mechanism::RsaPkcs, Cow::Owned(digest_info), false)
        }
        other => {
            return Err(OpError::BadRequest(format!("{other} keys do not sign on a PKCS#11 token")));
        }
    })
}

impl SignPlan<'_> {
    /// The signature in keymux's encoding, from what `C_Sign` returned.
    pub(crate) fn finish(&self, raw: Vec<u8>) -> Result<Vec<u8>, OpError> {
        if self.ecdsa { ecdsa_der(&raw) } else { Ok(raw) }
    }
}

/// A PKCS#11 ECDSA signature, `r ‖ s` of equal lengths (PKCS#11 2.40 §2.3.1), as the
/// DER `Ecdsa-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER }` of X9.62 / RFC 3279.
pub(crate) fn ecdsa_der(raw: &[u8]) -> Result<Vec<u8>, OpError> {
    let bad = || OpError::Internal(format!("the token's ECDSA signature is {} bytes, not r || s", raw.len()));
    if raw.is_empty() || !raw.len().is_multiple_of(2) {
        return Err(bad());
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    let (r, s) = (UintRef::new(r).map_err(|_| bad())?, UintRef::new(s).map_err(|_| bad())?);
    // SEQUENCE OF INTEGER and SEQUENCE { INTEGER, INTEGER } encode alike.
    vec![r, s].to_der().map_err(|_| bad())
}

fn sha256(message: &[u8]) -> Vec<u8> {
    sha2::Sha256::digest(message).to_vec()
}

fn sha384(message: &[u8]) -> Vec<u8> {
    sha2::Sha384::digest(message).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Mechanisms {
        Mechanisms::of(&[
            MechanismType::ECDSA,
            MechanismType::EDDSA,
            MechanismType::RSA_PKCS_PSS,
            MechanismType::SHA256_RSA_PKCS,
            MechanismType::RSA_PKCS,
        ])
    }

    #[test]
    fn ecdsa_signatures_become_der() {
        // High bits set (a leading zero is added) and leading zeros (stripped).
        let mut raw = vec![0x80; 32];
        raw.extend([0x00, 0x00, 0x01]);
        raw.extend([0x7f; 29]);
        let der = ecdsa_der(&raw).unwrap();
        assert_eq!(&der[..5], &[0x30, 2 + 33 + 2 + 30, 0x02, 33, 0x00]);
        assert_eq!(&der[5..37], &[0x80; 32]);
        assert_eq!(&der[37..40], &[0x02, 30, 0x01]);
        assert!(ecdsa_der(&[1, 2, 3]).is_err());
        assert!(ecdsa_der(&[]).is_err());
    }

    #[test]
    fn messages_are_hashed_digests_passed_on() {
        let message = b"message";
        let p256 = plan(KeyType::EcP256, message, false, &all()).unwrap();
        assert_eq!(p256.data.as_ref(), sha256(message));
        let p384 = plan(KeyType::EcP384, message, false, &all()).unwrap();
        assert_eq!(p384.data.len(), 48);
        let digest = sha256(message);
        assert_eq!(plan(KeyType::Rsa3072Pss, &digest, true, &all()).unwrap().data.as_ref(), digest);
        let ed = plan(KeyType::Ed25519, message, false, &all()).unwrap();
        assert_eq!(ed.data.as_ref(), message, "Ed25519 signs the message itself");
        assert_eq!(plan(KeyType::Ed25519, &digest, true, &all()).err(), Some(OpError::Unsupported));
    }

    #[test]
    fn pkcs1_uses_the_combined_mechanism_for_messages_and_a_digest_info_otherwise() {
        let message = b"message";
        let combined = plan(KeyType::Rsa3072Pkcs1, message, false, &all()).unwrap();
        assert!(matches!(combined.mechanism, Mechanism::Sha256RsaPkcs));
        assert_eq!(combined.data.as_ref(), message);
        let digest = sha256(message);
        let raw = plan(KeyType::Rsa3072Pkcs1, &digest, true, &all()).unwrap();
        assert!(matches!(raw.mechanism, Mechanism::RsaPkcs));
        assert_eq!(raw.data.len(), 19 + 32);
        assert_eq!(&raw.data[19..], digest);
        // A token with CKM_RSA_PKCS only (opencryptoki's soft token) hashes on the proxy.
        let only_raw = Mechanisms::of(&[MechanismType::RSA_PKCS]);
        let fallback = plan(KeyType::Rsa3072Pkcs1, message, false, &only_raw).unwrap();
        assert_eq!(fallback.data.as_ref(), raw.data.as_ref());
    }

    #[test]
    fn a_missing_mechanism_is_named() {
        let none = Mechanisms::default();
        for (key_type, mechanism) in [
            (KeyType::EcP256, "CKM_ECDSA"),
            (KeyType::Ed25519, "CKM_EDDSA"),
            (KeyType::Rsa3072Pss, "CKM_RSA_PKCS_PSS"),
            (KeyType::Rsa3072Pkcs1, "CKM_RSA_PKCS"),
        ] {
            match plan(key_type, b"m", false, &none) {
                Err(OpError::BadRequest(message)) => assert!(message.contains(mechanism), "{message}"),
                other => panic!("{key_type}: {:?}", other.map(|p| p.mechanism)),
            }
        }
        let combined_only = Mechanisms::of(&[MechanismType::SHA256_RSA_PKCS]);
        assert!(
            plan(KeyType::Rsa3072Pkcs1, &[0; 32], true, &combined_only).is_err(),
            "digests need CKM_RSA_PKCS"
        );
    }
}
