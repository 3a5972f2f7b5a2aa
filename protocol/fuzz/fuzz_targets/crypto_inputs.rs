//! The crypto parsers that take outside bytes, behind keymux-crypto: a public key (SPKI)
//! and a private key (PKCS#8) parse or are refused; a signature as VERIFY receives it
//! never verifies unless it was made by the key; an ML-KEM-768 body as UNWRAP receives
//! it never opens unless it was sealed to the key. The first byte picks the key type.
#![no_main]

use std::sync::OnceLock;

use keymux_crypto::{KeyType, PrivateKey, PublicKey, kem};
use libfuzzer_sys::fuzz_target;

/// Every asymmetric type: all but AES-256, which comes first.
const TYPES: &[KeyType] = KeyType::ALL.split_at(1).1;

/// One key per type, made on first use.
fn key(at: usize) -> &'static PrivateKey {
    static KEYS: [OnceLock<PrivateKey>; TYPES.len()] = [const { OnceLock::new() }; TYPES.len()];
    KEYS[at].get_or_init(|| PrivateKey::generate(TYPES[at]).expect("every asymmetric type generates"))
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, input)) = data.split_first() else { return };
    let at = usize::from(selector) % TYPES.len();
    let key_type = TYPES[at];
    if let Ok(public) = PublicKey::from_spki_der(key_type, input) {
        assert_eq!(public.key_type(), key_type);
    }
    let _ = PrivateKey::from_pkcs8_der(key_type, input);
    let private = key(at);
    if key_type == KeyType::MlKem768 {
        assert!(kem::open(private, b"", input).is_err(), "an unsealed body never opens");
    } else {
        let public = private.public_key();
        assert!(!public.verify(b"fuzz", input).unwrap_or(false), "a forged signature never verifies");
        let _ = public.verify_digest(input, input);
    }
});
