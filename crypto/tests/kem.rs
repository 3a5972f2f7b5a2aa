//! The ML-KEM-768 envelope (blob mode 3 body): round trips, and every way a body can
//! fail to open.

mod common;

use common::{flip, key};
use keymux_crypto::kem::{self, CIPHERTEXT_LEN, NONCE_LEN, OVERHEAD, TAG_LEN};
use keymux_crypto::{CryptoError, KeyType, Operation, PrivateKey, PublicKey};

const AAD: &[u8] = b"KMX\x01\x07example\x00\x00\x00\x01\x03tenant=42";

fn kem_key() -> &'static PrivateKey {
    key(KeyType::MlKem768)
}

#[test]
fn deks_of_any_length_round_trip() {
    let public = kem_key().public_key();
    for len in [0, 1, 16, 32, 64, 1000] {
        let dek: Vec<u8> = (0..len).map(|i| i as u8).collect();
        let body = kem::seal(&public, AAD, &dek).unwrap();
        assert_eq!(body.len(), OVERHEAD + len);
        assert_eq!(*kem::open(kem_key(), AAD, &body).unwrap(), dek, "{len}-byte DEK");
    }
}

#[test]
fn a_client_seals_offline_from_the_wire_key_and_the_proxy_opens_from_storage() {
    // The client has only GET_PUBLIC_KEY's DER; the proxy reloads its key from PKCS#8.
    let wire = kem_key().public_key().spki_der().to_vec();
    let client_side = PublicKey::from_spki_der(KeyType::MlKem768, &wire).unwrap();
    let body = kem::seal(&client_side, AAD, b"0123456789abcdef0123456789abcdef").unwrap();
    let proxy_side = PrivateKey::from_pkcs8_der(KeyType::MlKem768, &kem_key().to_pkcs8_der()).unwrap();
    assert_eq!(*kem::open(&proxy_side, AAD, &body).unwrap(), b"0123456789abcdef0123456789abcdef");
}

#[test]
fn every_seal_is_fresh() {
    let public = kem_key().public_key();
    let a = kem::seal(&public, AAD, b"dek").unwrap();
    let b = kem::seal(&public, AAD, b"dek").unwrap();
    assert_ne!(a[..CIPHERTEXT_LEN], b[..CIPHERTEXT_LEN], "fresh encapsulation");
    assert_ne!(a[CIPHERTEXT_LEN..CIPHERTEXT_LEN + NONCE_LEN], b[CIPHERTEXT_LEN..CIPHERTEXT_LEN + NONCE_LEN]);
}

#[test]
fn a_modified_body_does_not_open() {
    let body = kem::seal(&kem_key().public_key(), AAD, &[0x42; 32]).unwrap();
    let places = [
        ("first ciphertext byte", 0),
        ("last ciphertext byte", CIPHERTEXT_LEN - 1),
        ("nonce", CIPHERTEXT_LEN),
        ("sealed DEK", CIPHERTEXT_LEN + NONCE_LEN),
        ("tag", body.len() - TAG_LEN),
        ("last tag byte", body.len() - 1),
    ];
    for (what, at) in places {
        assert_eq!(
            kem::open(kem_key(), AAD, &flip(&body, at)).unwrap_err(),
            CryptoError::Integrity,
            "{what}"
        );
    }
    let longer = [body.as_slice(), &[0]].concat();
    assert_eq!(kem::open(kem_key(), AAD, &longer).unwrap_err(), CryptoError::Integrity, "a byte appended");
    let shorter = &body[..body.len() - 1];
    assert_eq!(kem::open(kem_key(), AAD, shorter).unwrap_err(), CryptoError::Integrity, "a byte removed");
}

#[test]
fn the_wrong_associated_data_or_key_does_not_open() {
    let body = kem::seal(&kem_key().public_key(), AAD, &[0x42; 32]).unwrap();
    assert_eq!(kem::open(kem_key(), b"", &body).unwrap_err(), CryptoError::Integrity);
    assert_eq!(kem::open(kem_key(), &flip(AAD, 5), &body).unwrap_err(), CryptoError::Integrity);
    assert_eq!(kem::open(kem_key(), &AAD[..AAD.len() - 1], &body).unwrap_err(), CryptoError::Integrity);
    let other = PrivateKey::generate(KeyType::MlKem768).unwrap();
    assert_eq!(kem::open(&other, AAD, &body).unwrap_err(), CryptoError::Integrity);
    let empty = kem::seal(&kem_key().public_key(), b"", b"dek").unwrap();
    assert_eq!(kem::open(kem_key(), AAD, &empty).unwrap_err(), CryptoError::Integrity);
    assert_eq!(*kem::open(kem_key(), b"", &empty).unwrap(), b"dek");
}

#[test]
fn a_body_shorter_than_the_overhead_is_a_typed_error() {
    let body = kem::seal(&kem_key().public_key(), AAD, b"").unwrap();
    assert_eq!(body.len(), OVERHEAD);
    assert_eq!(*kem::open(kem_key(), AAD, &body).unwrap(), b"");
    for len in [0, 1, CIPHERTEXT_LEN, OVERHEAD - 1] {
        assert_eq!(
            kem::open(kem_key(), AAD, &body[..len]).unwrap_err(),
            CryptoError::BodyTooShort { minimum: OVERHEAD, actual: len }
        );
    }
}

#[test]
fn only_ml_kem_keys_seal_and_open() {
    let body = kem::seal(&kem_key().public_key(), AAD, b"dek").unwrap();
    for t in common::SIGNING {
        assert_eq!(
            kem::seal(&key(t).public_key(), AAD, b"dek").unwrap_err(),
            CryptoError::Unsupported { key_type: t, operation: Operation::Seal }
        );
        assert_eq!(
            kem::open(key(t), AAD, &body).unwrap_err(),
            CryptoError::Unsupported { key_type: t, operation: Operation::Open }
        );
    }
}
