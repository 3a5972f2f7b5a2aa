//! Property tests of the parsers that take bytes from outside: public keys (SPKI, as a
//! backend or GET_PUBLIC_KEY gives them), private keys (PKCS#8, as the soft keystore
//! stores them), signatures (as VERIFY receives them) and ML-KEM-768 blob bodies (as
//! UNWRAP receives them). No input panics: each parses, verifies or opens, or is
//! refused with an error.

mod common;

use common::{ASYMMETRIC, SIGNING, key};
use keymux_crypto::{KeyType, PublicKey, kem};
use proptest::prelude::*;

/// `der` with its byte at `at` (modulo the length) replaced by `byte`, cut at `cut`.
fn mutate(der: &[u8], at: usize, byte: u8, cut: usize) -> Vec<u8> {
    let mut bytes = der.to_vec();
    if !bytes.is_empty() {
        let at = at % bytes.len();
        bytes[at] = byte;
    }
    bytes.truncate(cut % (bytes.len() + 1));
    bytes
}

fn asymmetric() -> impl Strategy<Value = KeyType> {
    prop::sample::select(ASYMMETRIC.to_vec())
}

fn signing() -> impl Strategy<Value = KeyType> {
    prop::sample::select(SIGNING.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn public_keys_parse_or_are_refused(
        key_type in asymmetric(),
        at in any::<usize>(),
        byte in any::<u8>(),
        cut in any::<usize>(),
        noise in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        let spki = key(key_type).public_key().spki_der().to_vec();
        if let Ok(parsed) = PublicKey::from_spki_der(key_type, &mutate(&spki, at, byte, cut)) {
            prop_assert_eq!(parsed.key_type(), key_type);
        }
        prop_assert!(PublicKey::from_spki_der(key_type, &noise).is_err());
    }

    #[test]
    fn private_keys_parse_or_are_refused(
        key_type in asymmetric(),
        at in any::<usize>(),
        byte in any::<u8>(),
        cut in any::<usize>(),
    ) {
        let pkcs8 = key(key_type).to_pkcs8_der();
        let _ = keymux_crypto::PrivateKey::from_pkcs8_der(key_type, &mutate(&pkcs8, at, byte, cut));
    }

    #[test]
    fn any_signature_verifies_false_or_is_refused(
        key_type in signing(),
        message in prop::collection::vec(any::<u8>(), 0..64),
        signature in prop::collection::vec(any::<u8>(), 0..400),
        at in any::<usize>(),
        byte in any::<u8>(),
        cut in any::<usize>(),
    ) {
        let public = key(key_type).public_key();
        prop_assert!(!public.verify(&message, &signature).unwrap_or(false), "noise never verifies");
        let real = key(key_type).sign(&message).unwrap();
        let mutated = mutate(&real, at, byte, cut);
        if mutated != real {
            prop_assert!(!public.verify(&message, &mutated).unwrap_or(false), "a changed signature never verifies");
        }
        let _ = public.verify_digest(&message, &signature);
    }

    #[test]
    fn any_kem_body_opens_or_is_refused(
        body in prop::collection::vec(any::<u8>(), 0..(kem::OVERHEAD + 64)),
        aad in prop::collection::vec(any::<u8>(), 0..16),
    ) {
        prop_assert!(kem::open(key(KeyType::MlKem768), &aad, &body).is_err());
    }
}
