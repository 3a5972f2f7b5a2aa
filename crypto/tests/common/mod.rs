//! Shared helpers for the integration tests: test data, one key per type per test
//! binary, and DER building blocks.
#![allow(dead_code, unreachable_pub)]

use std::sync::OnceLock;

use keymux_crypto::{KeyType, PrivateKey};
use spki::der::asn1::BitStringRef;
use spki::der::{Decode, Encode};
use spki::{AlgorithmIdentifierRef, ObjectIdentifier, SubjectPublicKeyInfoRef};

/// The signing key types.
pub const SIGNING: [KeyType; 6] = [
    KeyType::EcP256,
    KeyType::EcP384,
    KeyType::Ed25519,
    KeyType::Rsa3072Pss,
    KeyType::Rsa3072Pkcs1,
    KeyType::MlDsa65,
];

/// The asymmetric key types: the signing ones and ML-KEM-768.
pub const ASYMMETRIC: [KeyType; 7] = [
    KeyType::EcP256,
    KeyType::EcP384,
    KeyType::Ed25519,
    KeyType::Rsa3072Pss,
    KeyType::Rsa3072Pkcs1,
    KeyType::MlDsa65,
    KeyType::MlKem768,
];

/// One generated key per type, made once per test binary: RSA-3072 generation takes a
/// while. The two RSA types share one modulus (PKCS#8 is the same for both), which is
/// fine for tests and halves the cost.
pub fn key(key_type: KeyType) -> &'static PrivateKey {
    static KEYS: [OnceLock<PrivateKey>; 8] = [const { OnceLock::new() }; 8];
    let at = KeyType::ALL.iter().position(|t| *t == key_type).unwrap();
    KEYS[at].get_or_init(|| {
        if key_type == KeyType::Rsa3072Pkcs1 {
            let pss = key(KeyType::Rsa3072Pss);
            PrivateKey::from_pkcs8_der(key_type, &pss.to_pkcs8_der()).unwrap()
        } else {
            PrivateKey::generate(key_type).unwrap()
        }
    })
}

/// Loads `tests/data/<name>` (see the README there for sources).
pub fn data(name: &str) -> serde_json::Value {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The bytes of a hex string field.
pub fn hex(value: &serde_json::Value, field: &str) -> Vec<u8> {
    let text = value[field].as_str().unwrap_or_else(|| panic!("no string field {field} in {value}"));
    hex::decode(text).unwrap_or_else(|e| panic!("{field}: {e}"))
}

/// The algorithm OIDs of the SubjectPublicKeyInfo each type must carry.
pub const ID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
pub const PRIME256V1: &str = "1.2.840.10045.3.1.7";
pub const SECP384R1: &str = "1.3.132.0.34";
pub const ID_ED25519: &str = "1.3.101.112";
pub const RSA_ENCRYPTION: &str = "1.2.840.113549.1.1.1";
pub const ID_ML_DSA_65: &str = "2.16.840.1.101.3.4.3.18";
pub const ID_ALG_ML_KEM_768: &str = "2.16.840.1.101.3.4.4.2";

/// A SubjectPublicKeyInfo, taken apart.
pub struct Spki {
    pub algorithm: String,
    pub parameters: Option<Vec<u8>>,
    pub key: Vec<u8>,
}

pub fn parse_spki(der: &[u8]) -> Spki {
    let spki = SubjectPublicKeyInfoRef::from_der(der).expect("a DER SubjectPublicKeyInfo");
    Spki {
        algorithm: spki.algorithm.oid.to_string(),
        parameters: spki.algorithm.parameters.map(|p| p.to_der().unwrap()),
        key: spki.subject_public_key.as_bytes().expect("a whole number of bytes").to_vec(),
    }
}

/// A SubjectPublicKeyInfo with no parameters: how the LAMPS drafts encode ML-DSA and
/// ML-KEM keys (and RFC 8410 Ed25519 ones).
pub fn spki(oid: &str, key: &[u8]) -> Vec<u8> {
    SubjectPublicKeyInfoRef {
        algorithm: AlgorithmIdentifierRef { oid: ObjectIdentifier::new_unwrap(oid), parameters: None },
        subject_public_key: BitStringRef::from_bytes(key).unwrap(),
    }
    .to_der()
    .unwrap()
}

/// PKCS#8 DER prefixes to which the raw private key is appended, written out by hand
/// from the specifications so that the known-answer tests do not lean on the crates'
/// own encoders. The LAMPS example keys check the two lattice ones.
/// RFC 8410: Ed25519, `CurvePrivateKey` of the 32-byte seed.
pub const ED25519_PKCS8_PREFIX: &str = "302e020100300506032b657004220420";
/// RFC 5915 `ECPrivateKey` with the curve in the AlgorithmIdentifier only, no public key.
pub const P256_PKCS8_PREFIX: &str = "3041020100301306072a8648ce3d020106082a8648ce3d030107042730250201010420";
pub const P384_PKCS8_PREFIX: &str = "304e020100301006072a8648ce3d020106052b81040022043730350201010430";
/// LAMPS seed-only form: `[0] IMPLICIT OCTET STRING` of the 32-byte ML-DSA seed ξ.
pub const ML_DSA_65_PKCS8_SEED_PREFIX: &str = "3034020100300b060960864801650304031204228020";
/// LAMPS seed-only form: `[0] IMPLICIT OCTET STRING` of the 64-byte ML-KEM seed d ‖ z.
pub const ML_KEM_768_PKCS8_SEED_PREFIX: &str = "3054020100300b060960864801650304040204428040";

/// `prefix` (hex) followed by `raw`.
pub fn prefixed(prefix: &str, raw: &[u8]) -> Vec<u8> {
    [hex::decode(prefix).unwrap(), raw.to_vec()].concat()
}

/// `message` with one bit flipped at `at`.
pub fn flip(message: &[u8], at: usize) -> Vec<u8> {
    let mut out = message.to_vec();
    out[at] ^= 0x01;
    out
}
