//! Signing and verification for every signing key type: round trips through the
//! storage and wire encodings, digests, and every way a request can be wrong.

mod common;

use common::{SIGNING, flip, key};
use keymux_crypto::{CryptoError, KeyType, Operation, PrivateKey, PublicKey};
use sha2::{Digest, Sha256, Sha384};

const MESSAGE: &[u8] = b"keymux signs this";

fn digest(key_type: KeyType, message: &[u8]) -> Vec<u8> {
    match key_type.digest_len() {
        Some(48) => Sha384::digest(message).to_vec(),
        Some(32) => Sha256::digest(message).to_vec(),
        other => panic!("{key_type} has digest length {other:?}"),
    }
}

#[test]
fn every_signing_type_signs_and_verifies() {
    for t in SIGNING {
        let key = key(t);
        assert_eq!(key.key_type(), t);
        let signature = key.sign(MESSAGE).unwrap();
        let public = key.public_key();
        assert_eq!(public.key_type(), t);
        assert_eq!(public.verify(MESSAGE, &signature), Ok(true), "{t}");
        assert_eq!(public.verify(b"another message", &signature), Ok(false), "{t}");
        assert_eq!(key.sign(b"").and_then(|s| public.verify(b"", &s)), Ok(true), "{t}: empty message");
    }
}

#[test]
fn public_keys_round_trip_through_der_spki() {
    for t in SIGNING.into_iter().chain([KeyType::MlKem768]) {
        let public = key(t).public_key();
        let der = public.spki_der().to_vec();
        let back = PublicKey::from_spki_der(t, &der).unwrap();
        assert_eq!(back, public, "{t}");
        assert_eq!(back.spki_der(), der.as_slice(), "{t}: canonical DER is kept");
        if t.is_signing() {
            let signature = key(t).sign(MESSAGE).unwrap();
            assert_eq!(back.verify(MESSAGE, &signature), Ok(true), "{t}");
        }
    }
}

#[test]
fn private_keys_round_trip_through_pkcs8() {
    for t in SIGNING.into_iter().chain([KeyType::MlKem768]) {
        let der = key(t).to_pkcs8_der();
        let back = PrivateKey::from_pkcs8_der(t, &der).unwrap();
        assert_eq!(back.key_type(), t);
        assert_eq!(back.public_key(), key(t).public_key(), "{t}");
        assert_eq!(*back.to_pkcs8_der(), *der, "{t}: the encoding is stable");
        if t.is_signing() {
            assert_eq!(key(t).public_key().verify(MESSAGE, &back.sign(MESSAGE).unwrap()), Ok(true), "{t}");
        }
    }
}

#[test]
fn spki_names_each_algorithm_as_the_standards_do() {
    use common::*;
    let expect = [
        (KeyType::EcP256, ID_EC_PUBLIC_KEY, Some(PRIME256V1), 65),
        (KeyType::EcP384, ID_EC_PUBLIC_KEY, Some(SECP384R1), 97),
        (KeyType::Ed25519, ID_ED25519, None, 32),
        (KeyType::MlDsa65, ID_ML_DSA_65, None, 1952),
        (KeyType::MlKem768, ID_ALG_ML_KEM_768, None, 1184),
    ];
    for (t, oid, curve, key_len) in expect {
        let spki = parse_spki(key(t).public_key().spki_der());
        assert_eq!(spki.algorithm, oid, "{t}");
        let curve = curve.map(|c| spki::der::Encode::to_der(&spki::ObjectIdentifier::new_unwrap(c)).unwrap());
        assert_eq!(spki.parameters, curve, "{t}");
        assert_eq!(spki.key.len(), key_len, "{t}");
    }
    for t in [KeyType::Rsa3072Pss, KeyType::Rsa3072Pkcs1] {
        let spki = parse_spki(key(t).public_key().spki_der());
        assert_eq!(spki.algorithm, RSA_ENCRYPTION, "{t}");
        assert_eq!(spki.parameters, Some(vec![0x05, 0x00]), "{t}: NULL parameters, as RFC 3279 says");
    }
}

#[test]
fn signatures_have_the_wire_lengths() {
    let fixed = [
        (KeyType::Ed25519, 64),
        (KeyType::Rsa3072Pss, 384),
        (KeyType::Rsa3072Pkcs1, 384),
        (KeyType::MlDsa65, 3309),
    ];
    for (t, len) in fixed {
        assert_eq!(key(t).sign(MESSAGE).unwrap().len(), len, "{t}");
    }
    let p256 = key(KeyType::EcP256).sign(MESSAGE).unwrap();
    assert!(p256::ecdsa::Signature::from_der(&p256).is_ok() && p256.len() <= 72);
    let p384 = key(KeyType::EcP384).sign(MESSAGE).unwrap();
    assert!(p384::ecdsa::Signature::from_der(&p384).is_ok() && p384.len() <= 104);
}

#[test]
fn determinism_is_as_documented() {
    for t in [KeyType::EcP256, KeyType::EcP384, KeyType::Ed25519, KeyType::Rsa3072Pkcs1] {
        assert_eq!(key(t).sign(MESSAGE).unwrap(), key(t).sign(MESSAGE).unwrap(), "{t} is deterministic");
    }
    for t in [KeyType::Rsa3072Pss, KeyType::MlDsa65] {
        assert_ne!(key(t).sign(MESSAGE).unwrap(), key(t).sign(MESSAGE).unwrap(), "{t} is randomised");
    }
}

#[test]
fn digests_sign_and_verify_like_messages() {
    for t in SIGNING.into_iter().filter(|t| t.digest_len().is_some()) {
        let key = key(t);
        let public = key.public_key();
        let d = digest(t, MESSAGE);
        let over_digest = key.sign_digest(&d).unwrap();
        let over_message = key.sign(MESSAGE).unwrap();
        assert_eq!(public.verify(MESSAGE, &over_digest), Ok(true), "{t}");
        assert_eq!(public.verify_digest(&d, &over_digest), Ok(true), "{t}");
        assert_eq!(public.verify_digest(&d, &over_message), Ok(true), "{t}");
        assert_eq!(public.verify_digest(&digest(t, b"other"), &over_message), Ok(false), "{t}");
        if t != KeyType::Rsa3072Pss {
            assert_eq!(over_digest, over_message, "{t}: deterministic, so the same bytes");
        }
    }
}

#[test]
fn a_digest_of_the_wrong_length_is_a_typed_error() {
    for t in SIGNING.into_iter().filter(|t| t.digest_len().is_some()) {
        let expected = t.digest_len().unwrap();
        let signature = key(t).sign(MESSAGE).unwrap();
        for actual in [0, expected - 1, expected + 1, 64] {
            let wrong = vec![0u8; actual];
            let error = CryptoError::DigestLength { expected, actual };
            assert_eq!(key(t).sign_digest(&wrong), Err(error), "{t}");
            assert_eq!(key(t).public_key().verify_digest(&wrong, &signature), Err(error), "{t}");
        }
    }
    // The 48-byte SHA-384 digest on a SHA-256 key, and the reverse.
    assert_eq!(
        key(KeyType::EcP256).sign_digest(&[0; 48]),
        Err(CryptoError::DigestLength { expected: 32, actual: 48 })
    );
    assert_eq!(
        key(KeyType::EcP384).sign_digest(&[0; 32]),
        Err(CryptoError::DigestLength { expected: 48, actual: 32 })
    );
}

#[test]
fn tampered_or_malformed_signatures_do_not_verify() {
    for t in SIGNING {
        let public = key(t).public_key();
        let signature = key(t).sign(MESSAGE).unwrap();
        let n = signature.len();
        let mut bad = vec![
            flip(&signature, 0),
            flip(&signature, n / 2),
            flip(&signature, n - 1),
            signature[..n - 1].to_vec(),
            [signature.as_slice(), &[0]].concat(),
            Vec::new(),
            vec![0; n],
        ];
        if t.digest_len().is_none() {
            bad.push(vec![0xff; n]);
        }
        for (i, s) in bad.iter().enumerate() {
            assert_eq!(public.verify(MESSAGE, s), Ok(false), "{t}: bad signature {i}");
            if t.digest_len().is_some() {
                assert_eq!(public.verify_digest(&digest(t, MESSAGE), s), Ok(false), "{t}: bad signature {i}");
            }
        }
    }
}

#[test]
fn a_signature_from_another_key_does_not_verify() {
    for t in [KeyType::EcP256, KeyType::EcP384, KeyType::Ed25519, KeyType::MlDsa65] {
        let other = PrivateKey::generate(t).unwrap();
        assert_eq!(key(t).public_key().verify(MESSAGE, &other.sign(MESSAGE).unwrap()), Ok(false), "{t}");
    }
    // The two RSA types share a modulus in these tests: a PKCS#1 signature is no PSS one.
    let pkcs1 = key(KeyType::Rsa3072Pkcs1).sign(MESSAGE).unwrap();
    assert_eq!(key(KeyType::Rsa3072Pss).public_key().verify(MESSAGE, &pkcs1), Ok(false));
    let pss = key(KeyType::Rsa3072Pss).sign(MESSAGE).unwrap();
    assert_eq!(key(KeyType::Rsa3072Pkcs1).public_key().verify(MESSAGE, &pss), Ok(false));
}

fn unsupported<T>(key_type: KeyType, operation: Operation) -> Result<T, CryptoError> {
    Err(CryptoError::Unsupported { key_type, operation })
}

#[test]
fn operations_a_key_type_cannot_do_are_unsupported() {
    for t in [KeyType::Ed25519, KeyType::MlDsa65] {
        let d = [0u8; 32];
        assert_eq!(key(t).sign_digest(&d), unsupported(t, Operation::SignDigest));
        assert_eq!(key(t).public_key().verify_digest(&d, &[0; 64]), unsupported(t, Operation::VerifyDigest));
    }
    let kem = key(KeyType::MlKem768);
    assert_eq!(kem.sign(MESSAGE), unsupported(KeyType::MlKem768, Operation::Sign));
    assert_eq!(kem.sign_digest(&[0; 32]), unsupported(KeyType::MlKem768, Operation::SignDigest));
    assert_eq!(kem.public_key().verify(MESSAGE, &[0; 8]), unsupported(KeyType::MlKem768, Operation::Verify));
    assert_eq!(
        kem.public_key().verify_digest(&[0; 32], &[0; 8]),
        unsupported(KeyType::MlKem768, Operation::VerifyDigest)
    );
    assert_eq!(
        PrivateKey::generate(KeyType::Aes256).unwrap_err(),
        CryptoError::Unsupported { key_type: KeyType::Aes256, operation: Operation::Generate }
    );
    assert_eq!(
        PrivateKey::from_pkcs8_der(KeyType::Aes256, &[0; 32]).unwrap_err(),
        CryptoError::InvalidPrivateKey { key_type: KeyType::Aes256 }
    );
    assert_eq!(
        PublicKey::from_spki_der(KeyType::Aes256, &[0; 32]).unwrap_err(),
        CryptoError::InvalidPublicKey { key_type: KeyType::Aes256 }
    );
}

#[test]
fn keys_of_another_type_or_malformed_der_are_rejected() {
    let cases = [
        (KeyType::EcP384, KeyType::EcP256),
        (KeyType::EcP256, KeyType::EcP384),
        (KeyType::Ed25519, KeyType::EcP256),
        (KeyType::Rsa3072Pss, KeyType::EcP256),
        (KeyType::MlDsa65, KeyType::MlKem768),
        (KeyType::MlKem768, KeyType::MlDsa65),
        (KeyType::EcP256, KeyType::Rsa3072Pkcs1),
    ];
    for (wanted, given) in cases {
        let spki = key(given).public_key().spki_der().to_vec();
        assert_eq!(
            PublicKey::from_spki_der(wanted, &spki),
            Err(CryptoError::InvalidPublicKey { key_type: wanted }),
            "{given} SPKI read as {wanted}"
        );
        let pkcs8 = key(given).to_pkcs8_der();
        assert_eq!(
            PrivateKey::from_pkcs8_der(wanted, &pkcs8).unwrap_err(),
            CryptoError::InvalidPrivateKey { key_type: wanted },
            "{given} PKCS#8 read as {wanted}"
        );
    }
    for t in common::ASYMMETRIC {
        let spki = key(t).public_key().spki_der().to_vec();
        let pkcs8 = key(t).to_pkcs8_der().to_vec();
        let invalid_public = Err(CryptoError::InvalidPublicKey { key_type: t });
        assert_eq!(
            PublicKey::from_spki_der(t, &[spki.as_slice(), &[0]].concat()),
            invalid_public,
            "{t}: trailing byte"
        );
        assert_eq!(PublicKey::from_spki_der(t, &spki[..spki.len() - 1]), invalid_public, "{t}: truncated");
        assert_eq!(PublicKey::from_spki_der(t, b""), invalid_public, "{t}: empty");
        let invalid_private = CryptoError::InvalidPrivateKey { key_type: t };
        assert_eq!(
            PrivateKey::from_pkcs8_der(t, &pkcs8[..pkcs8.len() - 1]).unwrap_err(),
            invalid_private,
            "{t}"
        );
        assert_eq!(PrivateKey::from_pkcs8_der(t, b"").unwrap_err(), invalid_private, "{t}");
    }
}

#[test]
fn rsa_keys_must_be_3072_bits() {
    let rsa2048 = common::data("rsa-2048.json");
    for t in [KeyType::Rsa3072Pss, KeyType::Rsa3072Pkcs1] {
        assert_eq!(
            PublicKey::from_spki_der(t, &common::hex(&rsa2048, "public_spki")),
            Err(CryptoError::InvalidPublicKey { key_type: t })
        );
        assert_eq!(
            PrivateKey::from_pkcs8_der(t, &common::hex(&rsa2048, "private_pkcs8")).unwrap_err(),
            CryptoError::InvalidPrivateKey { key_type: t }
        );
    }
}

#[test]
fn debug_output_names_the_type_and_never_the_material() {
    let seed = [0x5a; 32];
    let ed =
        PrivateKey::from_pkcs8_der(KeyType::Ed25519, &common::prefixed(common::ED25519_PKCS8_PREFIX, &seed))
            .unwrap();
    assert_eq!(format!("{ed:?}"), "PrivateKey { key_type: Ed25519, .. }");
    assert_eq!(format!("{ed:#?}").matches("5a").count(), 0);
    for t in common::ASYMMETRIC {
        let text = format!("{:?} {:?}", key(t), key(t).public_key());
        assert!(text.len() < 120, "{t}: {text}");
    }
}

#[test]
fn errors_say_what_went_wrong_without_material() {
    let e = CryptoError::DigestLength { expected: 32, actual: 31 };
    assert_eq!(e.to_string(), "digest is 31 bytes, 32 expected");
    let e = CryptoError::Unsupported { key_type: KeyType::Ed25519, operation: Operation::SignDigest };
    assert_eq!(e.to_string(), "ed25519 keys cannot sign a digest");
}

/// ECDSA signatures are not malleability-checked: `(r, n - s)` verifies as `(r, s)`
/// does, as OpenSSL and the wire's other signers expect. (Callers that need a unique
/// signature per message must not rely on ECDSA for it.)
#[test]
fn ecdsa_accepts_both_s_values() {
    let public = key(KeyType::EcP256).public_key();
    let der = key(KeyType::EcP256).sign(MESSAGE).unwrap();
    let signature = p256::ecdsa::Signature::from_der(&der).unwrap();
    let (r, s) = signature.split_scalars();
    let flipped = p256::ecdsa::Signature::from_scalars(r.to_bytes(), (-*s.as_ref()).to_bytes()).unwrap();
    assert_ne!(flipped, signature);
    assert_eq!(public.verify(MESSAGE, &flipped.to_der().to_bytes()), Ok(true));
}

/// A compressed EC point is read, and kept re-encoded in the canonical uncompressed form.
#[test]
fn a_compressed_ec_point_is_read_and_re_encoded_uncompressed() {
    use spki::der::{Encode, asn1::BitStringRef};
    let public = key(KeyType::EcP256).public_key();
    let point =
        p256::ecdsa::VerifyingKey::from_sec1_bytes(&common::parse_spki(public.spki_der()).key).unwrap();
    let compressed = point.to_sec1_point(true);
    let curve = spki::ObjectIdentifier::new_unwrap(common::PRIME256V1);
    let der = spki::SubjectPublicKeyInfoRef {
        algorithm: spki::AlgorithmIdentifierRef {
            oid: spki::ObjectIdentifier::new_unwrap(common::ID_EC_PUBLIC_KEY),
            parameters: Some((&curve).into()),
        },
        subject_public_key: BitStringRef::from_bytes(compressed.as_bytes()).unwrap(),
    }
    .to_der()
    .unwrap();
    let read = PublicKey::from_spki_der(KeyType::EcP256, &der).unwrap();
    assert_eq!(read, public);
    assert_eq!(read.spki_der(), public.spki_der());
}

#[test]
fn keys_can_be_shared_across_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<PrivateKey>();
    shareable::<PublicKey>();
}
