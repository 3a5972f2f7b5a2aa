//! Known-answer tests against published vectors (sources in `tests/data/README.md`):
//! NIST ACVP and Wycheproof for ML-KEM-768 and ML-DSA-65, the IETF LAMPS example keys,
//! RFC 8032 for Ed25519 and RFC 6979 for deterministic ECDSA.
//!
//! Keys go in through the same PKCS#8 and SPKI entry points the proxy and the SDK use,
//! with the DER written by hand from the specifications (see `common`), so these check
//! the encodings as well as the algorithms.

mod common;

use common::{data, hex, parse_spki, prefixed, spki};
use keymux_crypto::{CryptoError, KeyType, PrivateKey, PublicKey, kem};
use sha2::{Digest, Sha256, Sha384};

fn tests(file: &serde_json::Value) -> &Vec<serde_json::Value> {
    file["tests"].as_array().expect("a tests array")
}

fn ml_kem_key(seed: &[u8]) -> PrivateKey {
    PrivateKey::from_pkcs8_der(KeyType::MlKem768, &prefixed(common::ML_KEM_768_PKCS8_SEED_PREFIX, seed))
        .unwrap()
}

fn ml_dsa_key(seed: &[u8]) -> PrivateKey {
    PrivateKey::from_pkcs8_der(KeyType::MlDsa65, &prefixed(common::ML_DSA_65_PKCS8_SEED_PREFIX, seed))
        .unwrap()
}

/// ACVP ML-KEM keyGen: the seed d ‖ z gives the known encapsulation key.
#[test]
fn acvp_ml_kem_768_key_generation() {
    let file = data("acvp-ml-kem-768-keygen.json");
    for t in tests(&file) {
        let key = ml_kem_key(&[hex(t, "d"), hex(t, "z")].concat());
        let public = key.public_key();
        assert_eq!(parse_spki(public.spki_der()).key, hex(t, "ek"), "tcId {}", t["tcId"]);
        assert_eq!(public.spki_der(), spki(common::ID_ALG_ML_KEM_768, &hex(t, "ek")).as_slice());
    }
}

/// ACVP ML-DSA keyGen: the seed ξ gives the known public key.
#[test]
fn acvp_ml_dsa_65_key_generation() {
    let file = data("acvp-ml-dsa-65-keygen.json");
    for t in tests(&file) {
        let public = ml_dsa_key(&hex(t, "seed")).public_key();
        assert_eq!(parse_spki(public.spki_der()).key, hex(t, "pk"), "tcId {}", t["tcId"]);
        assert_eq!(public.spki_der(), spki(common::ID_ML_DSA_65, &hex(t, "pk")).as_slice());
    }
}

/// Wycheproof ML-KEM-768 decapsulation, including implicit rejection (random and
/// bit-flipped ciphertexts give the rejection secret, which the vectors know): each
/// case carries a mode-3 body made from its ciphertext and secret with Python's
/// `cryptography`, and `kem::open` must recover the DEK.
#[test]
fn wycheproof_ml_kem_768_decapsulation_through_open() {
    let file = data("wycheproof-mlkem-768-decaps.json");
    for t in tests(&file) {
        let key = ml_kem_key(&hex(t, "seed"));
        assert_eq!(parse_spki(key.public_key().spki_der()).key, hex(t, "ek"), "tcId {}", t["tcId"]);
        let body = hex(t, "body");
        assert_eq!(body[..kem::CIPHERTEXT_LEN], hex(t, "c"));
        let dek = kem::open(&key, &hex(t, "associated_data"), &body).unwrap();
        assert_eq!(*dek, hex(t, "dek"), "tcId {} ({})", t["tcId"], t["comment"]);
    }
}

/// Wycheproof ML-KEM-768 encapsulation keys: the valid ones load, and those failing
/// FIPS 203's checks (coefficients not reduced mod q, wrong length) are refused.
#[test]
fn wycheproof_ml_kem_768_encapsulation_keys() {
    let file = data("wycheproof-mlkem-768-encaps.json");
    let mut refused = 0;
    for t in tests(&file) {
        let result =
            PublicKey::from_spki_der(KeyType::MlKem768, &spki(common::ID_ALG_ML_KEM_768, &hex(t, "ek")));
        if t["result"] == "valid" {
            let public = result.unwrap();
            let body = kem::seal(&public, b"", b"dek").unwrap();
            assert_eq!(body.len(), kem::OVERHEAD + 3);
        } else {
            assert_eq!(
                result,
                Err(CryptoError::InvalidPublicKey { key_type: KeyType::MlKem768 }),
                "tcId {}",
                t["tcId"]
            );
            refused += 1;
        }
    }
    assert!(refused >= 3);
}

/// Wycheproof ML-DSA-65 verification, over the published SubjectPublicKeyInfo: valid
/// signatures verify, modified or mis-sized ones are `Ok(false)`, and a public key of
/// the wrong size is refused. Only the empty-context cases apply: keymux signs pure
/// ML-DSA with the empty context.
#[test]
fn wycheproof_ml_dsa_65_verification() {
    let file = data("wycheproof-mldsa-65-verify.json");
    let (mut valid, mut invalid) = (0, 0);
    for group in file["testGroups"].as_array().unwrap() {
        let public = PublicKey::from_spki_der(KeyType::MlDsa65, &hex(group, "publicKeyDer"));
        for t in tests(group) {
            let expected = t["result"] == "valid";
            let Ok(public) = &public else {
                assert!(!expected, "tcId {}: the key should load", t["tcId"]);
                assert_eq!(public, Err(CryptoError::InvalidPublicKey { key_type: KeyType::MlDsa65 }));
                invalid += 1;
                continue;
            };
            if t.get("ctx").is_some_and(|c| c != "") {
                continue;
            }
            assert_eq!(
                public.verify(&hex(t, "msg"), &hex(t, "sig")),
                Ok(expected),
                "tcId {} ({})",
                t["tcId"],
                t["comment"]
            );
            if expected { valid += 1 } else { invalid += 1 }
        }
    }
    assert!(valid >= 3 && invalid >= 6, "{valid} valid, {invalid} invalid");
}

/// Wycheproof ML-DSA-65 signing vectors: the published PKCS#8 (seed-only form) loads,
/// re-encodes to the same bytes, gives the published public key, and the published
/// deterministic signature verifies. (That our signing reproduces it with an all-zero
/// `rnd` is a unit test in `private_key.rs`.)
#[test]
fn wycheproof_ml_dsa_65_private_keys_and_signatures() {
    let file = data("wycheproof-mldsa-65-sign-seed.json");
    for group in file["testGroups"].as_array().unwrap() {
        let pkcs8 = hex(group, "privateKeyPkcs8");
        let key = PrivateKey::from_pkcs8_der(KeyType::MlDsa65, &pkcs8).unwrap();
        assert_eq!(*key.to_pkcs8_der(), pkcs8);
        assert_eq!(pkcs8, prefixed(common::ML_DSA_65_PKCS8_SEED_PREFIX, &hex(group, "privateSeed")));
        let public = key.public_key();
        assert_eq!(parse_spki(public.spki_der()).key, hex(group, "publicKey"));
        for t in tests(group).iter().filter(|t| t.get("ctx").is_none_or(|c| c == "")) {
            assert_eq!(public.verify(&hex(t, "msg"), &hex(t, "sig")), Ok(true), "tcId {}", t["tcId"]);
        }
    }
}

/// The IETF LAMPS example keys: our PKCS#8 and SPKI encodings are byte for byte those
/// of the drafts, and our hand-written seed prefixes are right.
#[test]
fn lamps_example_keys_round_trip_exactly() {
    let file = data("lamps-examples.json");
    for (t, name, seed_len) in [(KeyType::MlKem768, "ml-kem-768", 64), (KeyType::MlDsa65, "ml-dsa-65", 32)] {
        let example = &file[name];
        let pkcs8 = hex(example, "private_pkcs8_seed");
        let key = PrivateKey::from_pkcs8_der(t, &pkcs8).unwrap();
        assert_eq!(*key.to_pkcs8_der(), pkcs8, "{t}");
        assert_eq!(key.public_key().spki_der(), hex(example, "public_spki").as_slice(), "{t}");
        let public = PublicKey::from_spki_der(t, &hex(example, "public_spki")).unwrap();
        assert_eq!(public, key.public_key());
        let seed: Vec<u8> = (0..seed_len).collect();
        let prefix = if t == KeyType::MlKem768 {
            common::ML_KEM_768_PKCS8_SEED_PREFIX
        } else {
            common::ML_DSA_65_PKCS8_SEED_PREFIX
        };
        assert_eq!(pkcs8, prefixed(prefix, &seed), "{t}: the example seed is 00 01 02 ...");
    }
}

/// RFC 8032 section 7.1, TEST 1: the empty message.
#[test]
fn rfc8032_ed25519_test_1() {
    let secret = hex::decode("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60").unwrap();
    let public = hex::decode("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a").unwrap();
    let signature = hex::decode(
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    )
    .unwrap();
    let key = PrivateKey::from_pkcs8_der(KeyType::Ed25519, &prefixed(common::ED25519_PKCS8_PREFIX, &secret))
        .unwrap();
    assert_eq!(key.public_key().spki_der(), spki(common::ID_ED25519, &public).as_slice());
    assert_eq!(key.sign(b"").unwrap(), signature);
    // Stored as RFC 8410's v1 form (the seed alone); the v2 form with the public key
    // (RFC 5958) reads too.
    assert_eq!(*key.to_pkcs8_der(), prefixed(common::ED25519_PKCS8_PREFIX, &secret));
    let v2 = [prefixed("3051020101300506032b657004220420", &secret), prefixed("812100", &public)].concat();
    assert_eq!(PrivateKey::from_pkcs8_der(KeyType::Ed25519, &v2).unwrap().public_key(), key.public_key());
    let verifier = PublicKey::from_spki_der(KeyType::Ed25519, &spki(common::ID_ED25519, &public)).unwrap();
    assert_eq!(verifier.verify(b"", &signature), Ok(true));
    assert_eq!(verifier.verify(b"\0", &signature), Ok(false));
}

/// RFC 6979 A.2.5 (P-256, SHA-256) and A.2.6 (P-384, SHA-384), messages "sample" and
/// (P-256) "test": the deterministic nonce gives these exact (r, s), from the message
/// and from its digest alike.
#[test]
fn rfc6979_deterministic_ecdsa() {
    let p256_x = hex::decode("c9afa9d845ba75166b5c215767b1d6934e50c3db36e89b127b8a622b120f6721").unwrap();
    let p256 =
        PrivateKey::from_pkcs8_der(KeyType::EcP256, &prefixed(common::P256_PKCS8_PREFIX, &p256_x)).unwrap();
    let cases: [(&[u8], &str); 2] = [
        (
            b"sample",
            "efd48b2aacb6a8fd1140dd9cd45e81d69d2c877b56aaf991c34d0ea84eaf3716f7cb1c942d657c41d436c7a1b6e29f65f3e900dbb9aff4064dc4ab2f843acda8",
        ),
        (
            b"test",
            "f1abb023518351cd71d881567b1ea663ed3efcf6c5132b354f28d3b0b7d38367019f4113742a2b14bd25926b49c649155f267e60d3814b4c0cc84250e46f0083",
        ),
    ];
    for (message, rs) in cases {
        let der = p256.sign(message).unwrap();
        assert_eq!(
            p256::ecdsa::Signature::from_der(&der).unwrap().to_bytes().as_slice(),
            hex::decode(rs).unwrap()
        );
        assert_eq!(p256.sign_digest(&Sha256::digest(message)).unwrap(), der);
    }
    // The RFC's public key U = xG.
    let u = "0460fed4ba255a9d31c961eb74c6356d68c049b8923b61fa6ce669622e60f29fb67903fe1008b8bc99a41ae9e95628bc64f2f1b20c2d7e9f5177a3c294d4462299";
    assert_eq!(parse_spki(p256.public_key().spki_der()).key, hex::decode(u).unwrap());

    let p384_x = hex::decode(
        "6b9d3dad2e1b8c1c05b19875b6659f4de23c3b667bf297ba9aa47740787137d896d5724e4c70a825f872c9ea60d2edf5",
    )
    .unwrap();
    let p384 =
        PrivateKey::from_pkcs8_der(KeyType::EcP384, &prefixed(common::P384_PKCS8_PREFIX, &p384_x)).unwrap();
    let rs = "94edbb92a5ecb8aad4736e56c691916b3f88140666ce9fa73d64c4ea95ad133c81a648152e44acf96e36dd1e80fabe4699ef4aeb15f178cea1fe40db2603138f130e740a19624526203b6351d0a3a94fa329c145786e679e7b82c71a38628ac8";
    let der = p384.sign(b"sample").unwrap();
    assert_eq!(
        p384::ecdsa::Signature::from_der(&der).unwrap().to_bytes().as_slice(),
        hex::decode(rs).unwrap()
    );
    assert_eq!(p384.sign_digest(&Sha384::digest(b"sample")).unwrap(), der);
}
