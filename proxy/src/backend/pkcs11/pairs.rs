//! Signing keys as key pairs on the token: the mechanisms each type needs (and which of
//! them the token offers, asked once at open with `C_GetMechanismInfo`), the templates a
//! pair is generated with, and the DER SubjectPublicKeyInfo rebuilt from the public key
//! object's attributes.
//!
//! | key type | generated with | signed with |
//! |---|---|---|
//! | `ec-p256`, `ec-p384` | `CKM_EC_KEY_PAIR_GEN` (named curve in `CKA_EC_PARAMS`) | `CKM_ECDSA` |
//! | `ed25519` | `CKM_EC_EDWARDS_KEY_PAIR_GEN` (`CKA_EC_PARAMS` = id-Ed25519) | `CKM_EDDSA` |
//! | `rsa-3072-pss` | `CKM_RSA_PKCS_KEY_PAIR_GEN`, 3072 bits, e = 65537 | `CKM_RSA_PKCS_PSS` |
//! | `rsa-3072-pkcs1` | `CKM_RSA_PKCS_KEY_PAIR_GEN`, 3072 bits, e = 65537 | `CKM_SHA256_RSA_PKCS` or `CKM_RSA_PKCS` |
//!
//! The private key is `CKA_TOKEN`, `CKA_PRIVATE`, `CKA_SENSITIVE`, not
//! `CKA_EXTRACTABLE`, and may only sign (`CKA_SIGN`; no decrypt, unwrap or derive); the
//! public key may only verify. How each signature is made is in `signing.rs`.

use cryptoki::context::Pkcs11;
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType as CkKeyType, ObjectClass};
use cryptoki::slot::Slot;
use spki::der::asn1::{AnyRef, BitStringRef, OctetString, UintRef};
use spki::der::{Decode, Encode};
use spki::{AlgorithmIdentifierRef, ObjectIdentifier, SubjectPublicKeyInfoRef};

use crate::keys::KeyType;

/// id-ecPublicKey (RFC 5480).
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
/// prime256v1 / secp256r1.
const P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
/// secp384r1.
const P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
/// id-Ed25519 (RFC 8410), also Ed25519's `CKA_EC_PARAMS` in PKCS#11 3.0.
const ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
/// rsaEncryption (RFC 8017), the SPKI identifier of either RSA padding.
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
/// The RSA modulus size of both RSA types.
const RSA_BITS: u64 = 3072;
/// F4, the RSA public exponent.
const RSA_EXPONENT: [u8; 3] = [0x01, 0x00, 0x01];

/// The signing mechanisms the token offers, asked once when the backend opens.
#[derive(Debug, Clone, Default)]
pub(crate) struct Mechanisms {
    usable: Vec<MechanismType>,
}

/// Every mechanism a key pair type may use: key-pair generation, then signing.
const KEY_PAIR_GEN: [MechanismType; 3] = [
    MechanismType::ECC_KEY_PAIR_GEN,
    MechanismType::ECC_EDWARDS_KEY_PAIR_GEN,
    MechanismType::RSA_PKCS_KEY_PAIR_GEN,
];
const SIGN: [MechanismType; 5] = [
    MechanismType::ECDSA,
    MechanismType::EDDSA,
    MechanismType::RSA_PKCS_PSS,
    MechanismType::SHA256_RSA_PKCS,
    MechanismType::RSA_PKCS,
];
/// The RSA mechanisms, whose key sizes must allow 3072 bits.
const RSA: [MechanismType; 4] = [
    MechanismType::RSA_PKCS_KEY_PAIR_GEN,
    MechanismType::RSA_PKCS_PSS,
    MechanismType::SHA256_RSA_PKCS,
    MechanismType::RSA_PKCS,
];

impl Mechanisms {
    /// Asks the token about every mechanism a key pair type may use. A mechanism is
    /// usable if it is listed with the right flag (`CKF_GENERATE_KEY_PAIR`, `CKF_SIGN`)
    /// and, for RSA, allows 3072-bit keys.
    pub(crate) fn probe(context: &Pkcs11, slot: Slot) -> Self {
        let mut usable = Vec::new();
        for (mechanisms, generates) in [(&KEY_PAIR_GEN[..], true), (&SIGN[..], false)] {
            for &mechanism in mechanisms {
                let Ok(info) = context.get_mechanism_info(slot, mechanism) else { continue };
                let flag = if generates { info.generate_key_pair() } else { info.sign() };
                let size = !RSA.contains(&mechanism) || info.max_key_size() as u64 >= RSA_BITS;
                if flag && size {
                    usable.push(mechanism);
                }
            }
        }
        Self { usable }
    }

    /// A set given by hand, for tests.
    #[cfg(test)]
    pub(crate) fn of(usable: &[MechanismType]) -> Self {
        Self { usable: usable.to_vec() }
    }

    /// Whether the token offers `mechanism`.
    pub(crate) fn has(&self, mechanism: MechanismType) -> bool {
        self.usable.contains(&mechanism)
    }

    /// Whether this token can hold (generate and sign with) keys of `key_type`;
    /// otherwise a sentence naming what it lacks.
    pub(crate) fn check_holds(&self, key_type: KeyType) -> Result<(), String> {
        let lacks = |mechanisms: &[MechanismType]| {
            let names: Vec<String> = mechanisms.iter().map(ToString::to_string).collect();
            Err(format!(
                "the token offers no {} (C_GetMechanismInfo): it cannot hold {key_type} keys",
                names.join(" or ")
            ))
        };
        let (generate, sign): (MechanismType, &[MechanismType]) = match key_type {
            KeyType::EcP256 | KeyType::EcP384 => (MechanismType::ECC_KEY_PAIR_GEN, &[MechanismType::ECDSA]),
            KeyType::Ed25519 => (MechanismType::ECC_EDWARDS_KEY_PAIR_GEN, &[MechanismType::EDDSA]),
            KeyType::Rsa3072Pss => (MechanismType::RSA_PKCS_KEY_PAIR_GEN, &[MechanismType::RSA_PKCS_PSS]),
            KeyType::Rsa3072Pkcs1 => (
                MechanismType::RSA_PKCS_KEY_PAIR_GEN,
                &[MechanismType::SHA256_RSA_PKCS, MechanismType::RSA_PKCS],
            ),
            other => return Err(format!("{other} keys are not held as key pairs on a PKCS#11 token")),
        };
        if !self.has(generate) {
            return lacks(&[generate]);
        }
        if !sign.iter().any(|m| self.has(*m)) {
            return lacks(sign);
        }
        Ok(())
    }
}

/// How to generate one key pair.
pub(crate) struct PairTemplate {
    /// The key-pair generation mechanism.
    pub(crate) mechanism: Mechanism<'static>,
    /// The public key object's template.
    pub(crate) public: Vec<Attribute>,
    /// The private key object's template.
    pub(crate) private: Vec<Attribute>,
}

/// The templates of a `key_type` pair whose objects are labelled `label` with `id` as
/// `CKA_ID`. `key_type` is one of [`super::labels::PAIR_TYPES`].
pub(crate) fn template(key_type: KeyType, label: &str, id: &[u8]) -> PairTemplate {
    let common = |verify_or_sign: Attribute| {
        vec![
            Attribute::Token(true),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(id.to_vec()),
            verify_or_sign,
        ]
    };
    let mut public = common(Attribute::Verify(true));
    let mut private = common(Attribute::Sign(true));
    public.push(Attribute::Class(ObjectClass::PUBLIC_KEY));
    private.extend([
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Derive(false),
    ]);
    let curve = |oid: ObjectIdentifier| Attribute::EcParams(oid.to_der().expect("an OID encodes"));
    let mechanism = match key_type {
        KeyType::EcP256 | KeyType::EcP384 => {
            public.extend([
                Attribute::KeyType(CkKeyType::EC),
                curve(if key_type == KeyType::EcP256 { P256 } else { P384 }),
            ]);
            private.push(Attribute::KeyType(CkKeyType::EC));
            Mechanism::EccKeyPairGen
        }
        KeyType::Ed25519 => {
            public.extend([Attribute::KeyType(CkKeyType::EC_EDWARDS), curve(ED25519)]);
            private.push(Attribute::KeyType(CkKeyType::EC_EDWARDS));
            Mechanism::EccEdwardsKeyPairGen
        }
        _ => {
            public.extend([
                Attribute::KeyType(CkKeyType::RSA),
                Attribute::ModulusBits(RSA_BITS.into()),
                Attribute::PublicExponent(RSA_EXPONENT.to_vec()),
                Attribute::Encrypt(false),
                Attribute::Wrap(false),
            ]);
            private.extend([
                Attribute::KeyType(CkKeyType::RSA),
                Attribute::Decrypt(false),
                Attribute::Unwrap(false),
            ]);
            Mechanism::RsaPkcsKeyPairGen
        }
    };
    PairTemplate { mechanism, public, private }
}

/// The public key object's attributes that [`spki_der`] needs.
pub(crate) fn public_attributes(key_type: KeyType) -> &'static [AttributeType] {
    match key_type {
        KeyType::Rsa3072Pss | KeyType::Rsa3072Pkcs1 => {
            &[AttributeType::Modulus, AttributeType::PublicExponent]
        }
        _ => &[AttributeType::EcParams, AttributeType::EcPoint],
    }
}

/// The DER SubjectPublicKeyInfo of a `key_type` public key object with `attributes`
/// (those of [`public_attributes`]), or why it cannot be built.
///
/// EC: `id-ecPublicKey` with the named curve, the point from `CKA_EC_POINT`, which most
/// tokens return as a DER OCTET STRING (PKCS#11 2.40 §2.3.3) and some raw. Ed25519:
/// `id-Ed25519`, the 32-byte key from `CKA_EC_POINT`, likewise. RSA: `rsaEncryption`
/// over the PKCS#1 `RSAPublicKey` of `CKA_MODULUS` and `CKA_PUBLIC_EXPONENT`.
pub(crate) fn spki_der(key_type: KeyType, attributes: &[Attribute]) -> Result<Vec<u8>, String> {
    let bytes_of = |wanted: AttributeType| {
        attributes
            .iter()
            .find_map(|attribute| match (wanted, attribute) {
                (AttributeType::EcParams, Attribute::EcParams(b))
                | (AttributeType::EcPoint, Attribute::EcPoint(b))
                | (AttributeType::Modulus, Attribute::Modulus(b))
                | (AttributeType::PublicExponent, Attribute::PublicExponent(b)) => Some(b.as_slice()),
                _ => None,
            })
            .ok_or_else(|| format!("the public key object has no {wanted}"))
    };
    let der_error = |error: spki::der::Error| format!("cannot encode the public key: {error}");
    let encode = |oid, parameters: Option<AnyRef<'_>>, key: &[u8]| {
        SubjectPublicKeyInfoRef {
            algorithm: AlgorithmIdentifierRef { oid, parameters },
            subject_public_key: BitStringRef::from_bytes(key).map_err(der_error)?,
        }
        .to_der()
        .map_err(der_error)
    };
    match key_type {
        KeyType::EcP256 | KeyType::EcP384 => {
            let (curve, point_len) = if key_type == KeyType::EcP256 { (P256, 65) } else { (P384, 97) };
            let params = ObjectIdentifier::from_der(bytes_of(AttributeType::EcParams)?);
            if params != Ok(curve) {
                return Err(format!("CKA_EC_PARAMS is not the named curve of {key_type}"));
            }
            let point = unwrap_point(bytes_of(AttributeType::EcPoint)?, point_len)?;
            let curve = curve.to_der().map_err(der_error)?;
            encode(EC_PUBLIC_KEY, Some(AnyRef::try_from(curve.as_slice()).map_err(der_error)?), &point)
        }
        KeyType::Ed25519 => encode(ED25519, None, &unwrap_point(bytes_of(AttributeType::EcPoint)?, 32)?),
        KeyType::Rsa3072Pss | KeyType::Rsa3072Pkcs1 => {
            let uint = |bytes| UintRef::new(bytes).map_err(der_error);
            let rsa_public_key = vec![
                uint(bytes_of(AttributeType::Modulus)?)?,
                uint(bytes_of(AttributeType::PublicExponent)?)?,
            ]
            .to_der()
            .map_err(der_error)?;
            encode(RSA_ENCRYPTION, Some(AnyRef::NULL), &rsa_public_key)
        }
        other => Err(format!("{other} keys are not held as key pairs on a PKCS#11 token")),
    }
}

/// `CKA_EC_POINT` as the raw point of `len` bytes: unwrapped from a DER OCTET STRING, or
/// as it is where the token gives it raw. The two forms differ in length (the DER one
/// has a tag and a length byte more), which tells them apart.
fn unwrap_point(ec_point: &[u8], len: usize) -> Result<Vec<u8>, String> {
    if ec_point.len() == len {
        return Ok(ec_point.to_vec());
    }
    match OctetString::from_der(ec_point) {
        Ok(octets) if octets.as_bytes().len() == len => Ok(octets.as_bytes().to_vec()),
        _ => Err(format!("CKA_EC_POINT is neither a {len}-byte point nor a DER OCTET STRING of one")),
    }
}

#[cfg(test)]
mod tests {
    use keymux_crypto::{PrivateKey, PublicKey};

    use super::*;

    /// What a token holds for the public key of a freshly generated `key_type` key:
    /// (the key's own SPKI, the attributes a token would report).
    fn as_token_would_hold(key_type: KeyType, raw_point: bool) -> (Vec<u8>, Vec<Attribute>) {
        let spki = PrivateKey::generate(key_type).unwrap().public_key().spki_der().to_vec();
        let parsed = SubjectPublicKeyInfoRef::from_der(&spki).unwrap();
        let key = parsed.subject_public_key.raw_bytes();
        let point = if raw_point { key.to_vec() } else { OctetString::new(key).unwrap().to_der().unwrap() };
        let attributes = match key_type {
            KeyType::EcP256 | KeyType::EcP384 => {
                let curve = parsed.algorithm.parameters.unwrap().to_der().unwrap();
                vec![Attribute::EcParams(curve), Attribute::EcPoint(point)]
            }
            KeyType::Ed25519 => {
                vec![Attribute::EcParams(ED25519.to_der().unwrap()), Attribute::EcPoint(point)]
            }
            _ => {
                let parts = Vec::<UintRef<'_>>::from_der(key).unwrap();
                vec![
                    Attribute::Modulus(parts[0].as_bytes().to_vec()),
                    Attribute::PublicExponent(parts[1].as_bytes().to_vec()),
                ]
            }
        };
        (spki, attributes)
    }

    #[test]
    fn spki_from_attributes_is_the_keys_own() {
        for key_type in super::super::labels::PAIR_TYPES {
            for raw_point in [false, true] {
                let (spki, attributes) = as_token_would_hold(key_type, raw_point);
                let built = spki_der(key_type, &attributes).unwrap();
                assert_eq!(built, spki, "{key_type}");
                PublicKey::from_spki_der(key_type, &built).unwrap();
            }
        }
    }

    #[test]
    fn bad_attributes_are_named() {
        let (_, attributes) = as_token_would_hold(KeyType::EcP256, false);
        let error = spki_der(KeyType::EcP384, &attributes).unwrap_err();
        assert!(error.contains("CKA_EC_PARAMS"), "{error}");
        let error = spki_der(KeyType::EcP256, &attributes[..1]).unwrap_err();
        assert!(error.contains("CKA_EC_POINT"), "{error}");
        let short = [attributes[0].clone(), Attribute::EcPoint(vec![4; 64])];
        assert!(spki_der(KeyType::EcP256, &short).unwrap_err().contains("CKA_EC_POINT"));
    }

    #[test]
    fn a_token_without_a_mechanism_is_named() {
        let none = Mechanisms::default();
        let error = none.check_holds(KeyType::EcP256).unwrap_err();
        assert!(error.contains("CKM_EC_KEY_PAIR_GEN") && error.contains("ec-p256"), "{error}");
        let gen_only = Mechanisms::of(&[MechanismType::ECC_EDWARDS_KEY_PAIR_GEN]);
        assert!(gen_only.check_holds(KeyType::Ed25519).unwrap_err().contains("CKM_EDDSA"));
        // opencryptoki's soft token: RSA, and PKCS#1 v1.5 only as CKM_RSA_PKCS.
        let rsa = Mechanisms::of(&[
            MechanismType::RSA_PKCS_KEY_PAIR_GEN,
            MechanismType::RSA_PKCS_PSS,
            MechanismType::RSA_PKCS,
        ]);
        assert_eq!(rsa.check_holds(KeyType::Rsa3072Pss), Ok(()));
        assert_eq!(rsa.check_holds(KeyType::Rsa3072Pkcs1), Ok(()));
        assert!(rsa.check_holds(KeyType::EcP384).is_err());
        assert!(rsa.check_holds(KeyType::MlDsa65).is_err());
    }
}
