//! Signing keys on a real token (SoftHSM2, or opencryptoki by environment, as for the
//! wrap tests): key pairs generated on the token, SIGN made there on the pinned sessions,
//! VERIFY and GET_PUBLIC_KEY answered by the proxy, and the `openssl` command line as an
//! independent judge of every signature from the public key keymux serves.
//!
//! A type whose mechanisms the token lacks (opencryptoki 3.8's soft token has no EC at
//! all) is skipped with a note on stderr, printed past the test harness's capture so it
//! shows in every run, after checking that creating such a key is refused with an error
//! naming the missing mechanism.

use std::io::Write;
use std::time::Duration;

use cryptoki::object::{Attribute, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use keymux_protocol::{Algorithm, Status};
use keymux_proxy::backend::pkcs11::{Pkcs11Backend, labels};
use keymux_proxy::keys::{KeyAdminError, KeyLifecycle, KeyType, VersionState};
use keymux_test_support::openssl;
use keymux_test_support::pkcs11::{one_at_a_time, token};
use keymux_test_support::proxy::TestProxy;
use keymux_test_support::unique_key;

/// Every signing type a token can hold, with its wire algorithm.
const SIGNING: [(KeyType, Algorithm); 5] = [
    (KeyType::EcP256, Algorithm::EcdsaP256Sha256),
    (KeyType::EcP384, Algorithm::EcdsaP384Sha384),
    (KeyType::Ed25519, Algorithm::Ed25519),
    (KeyType::Rsa3072Pss, Algorithm::Rsa3072PssSha256),
    (KeyType::Rsa3072Pkcs1, Algorithm::Rsa3072Pkcs1Sha256),
];

/// A handle on the test token outside any proxy, as `keymux key ...` would open it.
fn admin() -> Pkcs11Backend {
    Pkcs11Backend::open(&token().config(1)).unwrap()
}

/// Writes past the test harness's capture: a skipped type must show in every run.
fn note(line: &str) {
    let _ = writeln!(std::io::stderr(), "NOTE ({}): {line}", token().module.display());
}

/// Those of `wanted` the token holds. For each it lacks: creating one must fail with
/// an error naming the mechanism, and a note says which type this run skipped and why.
fn held(wanted: &[(KeyType, Algorithm)]) -> Vec<(KeyType, Algorithm)> {
    let admin = admin();
    let held: Vec<_> = wanted
        .iter()
        .copied()
        .filter(|(key_type, _)| match admin.can_hold(*key_type) {
            Ok(()) => true,
            Err(why) => {
                let refused = admin.create_key(&unique_key("lacking"), *key_type).unwrap_err().to_string();
                assert!(refused.contains("CKM_") && refused.contains(key_type.name()), "{refused}");
                note(&format!("skipping {key_type} here: {why}"));
                false
            }
        })
        .collect();
    assert!(!held.is_empty(), "the token holds none of {wanted:?}");
    held
}

/// The first type of `preferred` the token holds: the cheapest to generate first.
fn one_held_type() -> KeyType {
    let preferred =
        [(KeyType::EcP256, Algorithm::EcdsaP256Sha256), (KeyType::Rsa3072Pss, Algorithm::Rsa3072PssSha256)];
    held(&preferred)[0].0
}

#[tokio::test]
async fn every_type_the_token_holds_signs_verifies_and_openssl_agrees() {
    let _turn = one_at_a_time().await;
    let types = held(&SIGNING);
    let proxy = TestProxy::start_hsm(|_| {}).await;
    let mut client = proxy.connect().await;
    let message = b"signed on the token";
    for (key_type, algorithm) in types {
        let name = unique_key(&format!("sig-{key_type}"));
        proxy.create_key_of_type(&name, key_type);
        assert_eq!(proxy.backend.find_key(&name).unwrap().key_type, key_type, "listed with its type");

        let (version, signature) = client.sign(&name, message, false).await.unwrap();
        assert_eq!(version, 1, "{key_type}");
        if let Some(len) = algorithm.signature_len() {
            assert_eq!(signature.len(), len, "{key_type}");
        }
        assert_eq!(client.verify(&name, 1, message, &signature, false).await, Ok(true), "{key_type}");
        assert_eq!(client.verify(&name, 1, b"another message", &signature, false).await, Ok(false));
        let mut tampered = signature.clone();
        tampered[signature.len() / 2] ^= 1;
        assert_eq!(client.verify(&name, 1, message, &tampered, false).await, Ok(false), "{key_type}");

        let (served, served_algorithm, spki) = client.public_key(&name, 0).await.unwrap();
        assert_eq!((served, served_algorithm), (1, algorithm), "{key_type}");
        keymux_crypto::PublicKey::from_spki_der(key_type, &spki).unwrap();
        assert!(openssl::verifies(algorithm, &spki, message, &signature), "openssl verifies {key_type}");
        assert!(!openssl::verifies(algorithm, &spki, message, &tampered), "openssl refuses {key_type}");
        assert!(!openssl::verifies(algorithm, &spki, b"another message", &signature), "{key_type}");
    }
    assert!(proxy.backend_ops("sign") > 0, "the signatures were made on the pkcs11 backend");
}

#[tokio::test]
async fn digests_are_signed_on_the_token() {
    let _turn = one_at_a_time().await;
    let message = b"hashed by the caller";
    let hashing = [SIGNING[0], SIGNING[1], SIGNING[3], SIGNING[4]];
    let types = held(&hashing);
    let proxy = TestProxy::start_hsm(|_| {}).await;
    let mut client = proxy.connect().await;
    for (key_type, algorithm) in types {
        let digest = if key_type == KeyType::EcP384 { sha384(message) } else { sha256(message) };
        let name = unique_key(&format!("digest-{key_type}"));
        proxy.create_key_of_type(&name, key_type);
        let (version, signature) = client.sign(&name, &digest, true).await.unwrap();
        // A signature over the digest is one over the message.
        assert_eq!(client.verify(&name, version, message, &signature, false).await, Ok(true), "{key_type}");
        assert_eq!(client.verify(&name, version, &digest, &signature, true).await, Ok(true), "{key_type}");
        let (_, _, spki) = client.public_key(&name, version).await.unwrap();
        assert!(openssl::verifies(algorithm, &spki, message, &signature), "openssl verifies {key_type}");
        let short = &digest[..digest.len() - 1];
        assert_eq!(client.sign(&name, short, true).await, Err(Status::BadRequest), "{key_type}");
    }
    if admin().can_hold(KeyType::Ed25519).is_ok() {
        let name = unique_key("pure-ed25519");
        proxy.create_key_of_type(&name, KeyType::Ed25519);
        assert_eq!(client.sign(&name, &sha256(message), true).await, Err(Status::Unsupported));
    }
}

#[tokio::test]
async fn rotation_keeps_the_type_and_disabled_versions_are_refused_by_the_token() {
    let _turn = one_at_a_time().await;
    let key_type = one_held_type();
    let proxy = TestProxy::start_hsm(|_| {}).await;
    let mut client = proxy.connect().await;
    let name = unique_key("rotate-sig");
    proxy.create_key_of_type(&name, key_type);
    let (_, first) = client.sign(&name, b"m", false).await.unwrap();

    assert_eq!(proxy.backend.rotate_key(&name).unwrap(), 2);
    assert_eq!(proxy.backend.find_key(&name).unwrap().key_type, key_type, "rotation keeps the type");
    proxy.server.refresh_keys().unwrap();
    let (version, second) = client.sign(&name, b"m", false).await.unwrap();
    assert_eq!(version, 2);
    assert_eq!(client.verify(&name, 1, b"m", &first, false).await, Ok(true), "old versions still verify");
    assert_eq!(client.verify(&name, 2, b"m", &second, false).await, Ok(true));
    assert_eq!(client.verify(&name, 1, b"m", &second, false).await, Ok(false), "a new key pair");
    let (_, _, spki1) = client.public_key(&name, 1).await.unwrap();
    let (_, _, spki2) = client.public_key(&name, 2).await.unwrap();
    assert_ne!(spki1, spki2);

    // Disabled behind the proxy's back, before it refreshes: the token itself refuses
    // (CKA_SIGN is false), and the proxy says KEY_DISABLED.
    proxy.backend.set_version_state(&name, 2, VersionState::Disabled).unwrap();
    assert_eq!(client.sign(&name, b"m", false).await, Err(Status::KeyDisabled));
    proxy.server.refresh_keys().unwrap();
    let (version, _) = client.sign(&name, b"m", false).await.unwrap();
    assert_eq!(version, 1, "the highest enabled version signs");
    assert_eq!(client.verify(&name, 2, b"m", &second, false).await, Err(Status::KeyDisabled));
    proxy.backend.set_version_state(&name, 1, VersionState::Disabled).unwrap();
    proxy.server.refresh_keys().unwrap();
    assert_eq!(client.sign(&name, b"m", false).await, Err(Status::KeyDisabled), "no enabled version");
    let listed = proxy.backend.find_key(&name).unwrap();
    assert!(listed.versions.iter().all(|v| v.state == VersionState::Disabled), "{listed:?}");

    proxy.backend.set_version_state(&name, 1, VersionState::Enabled).unwrap();
    proxy.backend.set_version_state(&name, 2, VersionState::Enabled).unwrap();
    assert_eq!(proxy.backend.rotate_key(&name).unwrap(), 3);
    let refused = proxy.backend.destroy_version(&name, 1, Duration::from_secs(3600)).unwrap_err();
    assert!(matches!(refused, KeyAdminError::NotDisabled { version: 1, .. }), "{refused}");
    proxy.backend.set_version_state(&name, 1, VersionState::Disabled).unwrap();
    let refused = proxy.backend.destroy_version(&name, 1, Duration::from_secs(3600)).unwrap_err();
    assert!(
        matches!(refused, KeyAdminError::DisabledTooRecently { disabled_for: Some(_), .. }),
        "the token records when the version was disabled: {refused}"
    );
    assert_eq!(objects_labelled(&labels::disabled_label(&name, 1)), 1, "one disabled-at record");
    proxy.backend.destroy_version(&name, 1, Duration::ZERO).unwrap();
    assert_eq!(objects_labelled(&labels::disabled_label(&name, 1)), 0, "its record went with it");
    let versions: Vec<u32> =
        proxy.backend.find_key(&name).unwrap().versions.iter().map(|v| v.version).collect();
    assert_eq!(versions, [2, 3]);
    assert_eq!(objects_labelled(&labels::pair_label(&name, 1, key_type)), 0, "both objects destroyed");
    assert_eq!(objects_labelled(&labels::pair_label(&name, 2, key_type)), 2, "a private and a public key");
    proxy.server.refresh_keys().unwrap();
    assert_eq!(client.verify(&name, 1, b"m", &first, false).await, Err(Status::UnknownKey));
    assert_eq!(client.sign(&name, b"m", false).await.unwrap().0, 3);
}

#[tokio::test]
async fn a_second_proxy_on_the_token_sees_the_key_with_its_type() {
    let _turn = one_at_a_time().await;
    let key_type = one_held_type();
    let first = TestProxy::start_hsm(|_| {}).await;
    let second = TestProxy::start_hsm(|_| {}).await;
    let name = unique_key("shared-sig");
    first.create_key_of_type(&name, key_type);
    second.server.refresh_keys().unwrap();
    let seen = second.backend.find_key(&name).unwrap();
    assert_eq!((seen.key_type, seen.versions.len()), (key_type, 1), "the type is on the token");

    let (mut one, mut two) = (first.connect().await, second.connect().await);
    let (version, signature) = two.sign(&name, b"shared", false).await.unwrap();
    assert_eq!(one.verify(&name, version, b"shared", &signature, false).await, Ok(true));
    assert_eq!(one.public_key(&name, 1).await.unwrap(), two.public_key(&name, 1).await.unwrap());

    // Rotated by a third handle on the token, as `keymux key rotate` would.
    assert_eq!(admin().rotate_key(&name).unwrap(), 2);
    second.server.refresh_keys().unwrap();
    first.server.refresh_keys().unwrap();
    let (version, signature) = two.sign(&name, b"rotated", false).await.unwrap();
    assert_eq!(version, 2);
    assert_eq!(one.verify(&name, 2, b"rotated", &signature, false).await, Ok(true));
    assert_eq!(first.backend.find_key(&name).unwrap().key_type, key_type);
}

#[tokio::test]
async fn post_quantum_types_and_wrong_uses_are_refused_clearly() {
    let _turn = one_at_a_time().await;
    let admin = admin();
    for key_type in [KeyType::MlDsa65, KeyType::MlKem768] {
        assert_eq!(
            admin.create_key(&unique_key("pq"), key_type),
            Err(KeyAdminError::UnsupportedKeyType { key_type, backend: "pkcs11" }),
            "no PKCS#11 mechanism for {key_type} on this token"
        );
    }
    let proxy = TestProxy::start_hsm(|_| {}).await;
    let mut client = proxy.connect().await;
    let (aes, signer) = (unique_key("aes"), unique_key("signer"));
    proxy.create_key(&aes);
    proxy.create_key_of_type(&signer, one_held_type());
    assert_eq!(client.sign(&aes, b"m", false).await, Err(Status::BadRequest), "aes-256 does not sign");
    assert_eq!(client.public_key(&aes, 0).await, Err(Status::BadRequest), "nor has a public key");
    assert_eq!(
        client.wrap(&signer, b"", &[1; 32]).await,
        Err(Status::BadRequest),
        "a signing key does not wrap"
    );
    let blob = client.wrap(&aes, b"", &[1; 32]).await.unwrap();
    assert_eq!(client.unwrap(b"", &blob).await.unwrap(), [1; 32], "AES keys beside key pairs still work");
}

/// How many objects (of any class) on the token carry `label`.
fn objects_labelled(label: &str) -> usize {
    let admin = admin();
    let session = admin.context().open_ro_session(admin.slot()).unwrap();
    match session.login(UserType::User, Some(&AuthPin::from(token().pin().as_str()))) {
        Ok(()) | Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::UserAlreadyLoggedIn, _)) => {}
        Err(error) => panic!("login: {error}"),
    }
    [ObjectClass::PRIVATE_KEY, ObjectClass::PUBLIC_KEY, ObjectClass::SECRET_KEY, ObjectClass::DATA]
        .into_iter()
        .map(|class| {
            let template = [Attribute::Class(class), Attribute::Label(label.as_bytes().to_vec())];
            session.find_objects(&template).unwrap().len()
        })
        .sum()
}

fn sha256(message: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(message).to_vec()
}

fn sha384(message: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha384::digest(message).to_vec()
}
