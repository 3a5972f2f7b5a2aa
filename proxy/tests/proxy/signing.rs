//! SIGN, VERIFY and GET_PUBLIC_KEY on the soft keystore, every key type, end to end; the
//! classical signatures are also checked by the `openssl` command line from the DER
//! public key keymux serves. ML-KEM-768 wraps (blob mode 3).

use keymux_protocol::{Algorithm, BlobHeader, BlobMode, Status};
use keymux_proxy::keys::{KeyLifecycle, KeyType, VersionState};
use keymux_test_support::openssl;
use keymux_test_support::proxy::TestProxy;

/// Every signing key type, with its wire algorithm.
const SIGNING: [(KeyType, Algorithm); 6] = [
    (KeyType::EcP256, Algorithm::EcdsaP256Sha256),
    (KeyType::EcP384, Algorithm::EcdsaP384Sha384),
    (KeyType::Ed25519, Algorithm::Ed25519),
    (KeyType::Rsa3072Pss, Algorithm::Rsa3072PssSha256),
    (KeyType::Rsa3072Pkcs1, Algorithm::Rsa3072Pkcs1Sha256),
    (KeyType::MlDsa65, Algorithm::MlDsa65),
];

#[tokio::test]
async fn every_signing_type_signs_verifies_and_openssl_agrees() {
    let proxy = TestProxy::start(|_| {}).await;
    let mut client = proxy.connect().await;
    let message = b"the message to sign";
    for (key_type, algorithm) in SIGNING {
        let name = format!("sig-{key_type}");
        proxy.create_key_of_type(&name, key_type);
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
        assert_eq!((served, served_algorithm), (1, algorithm));
        if algorithm != Algorithm::MlDsa65 {
            assert!(openssl::verifies(algorithm, &spki, message, &signature), "openssl verifies {key_type}");
            assert!(!openssl::verifies(algorithm, &spki, message, &tampered), "openssl refuses {key_type}");
        }
    }
}

#[tokio::test]
async fn digests_are_signed_where_the_algorithm_hashes() {
    let proxy = TestProxy::start(|_| {}).await;
    let mut client = proxy.connect().await;
    let message = b"hashed by the caller";
    for (key_type, algorithm, digest) in [
        (KeyType::EcP256, Algorithm::EcdsaP256Sha256, sha256(message)),
        (KeyType::EcP384, Algorithm::EcdsaP384Sha384, sha384(message)),
        (KeyType::Rsa3072Pss, Algorithm::Rsa3072PssSha256, sha256(message)),
        (KeyType::Rsa3072Pkcs1, Algorithm::Rsa3072Pkcs1Sha256, sha256(message)),
    ] {
        let name = format!("digest-{key_type}");
        proxy.create_key_of_type(&name, key_type);
        let (version, signature) = client.sign(&name, &digest, true).await.unwrap();
        // The signature over the digest is one over the message.
        assert_eq!(client.verify(&name, version, message, &signature, false).await, Ok(true), "{key_type}");
        assert_eq!(client.verify(&name, version, &digest, &signature, true).await, Ok(true), "{key_type}");
        let (_, _, spki) = client.public_key(&name, version).await.unwrap();
        assert!(openssl::verifies(algorithm, &spki, message, &signature), "{key_type}");
        let short = &digest[..digest.len() - 1];
        assert_eq!(client.sign(&name, short, true).await, Err(Status::BadRequest), "{key_type}");
    }
    for key_type in [KeyType::Ed25519, KeyType::MlDsa65] {
        let name = format!("pure-{key_type}");
        proxy.create_key_of_type(&name, key_type);
        assert_eq!(client.sign(&name, &sha256(message), true).await, Err(Status::Unsupported), "{key_type}");
    }
}

#[tokio::test]
async fn wrong_types_unknown_keys_and_versions_are_refused_clearly() {
    let proxy = TestProxy::start(|_| {}).await;
    let mut client = proxy.connect().await;
    proxy.create_key_of_type("signer", KeyType::Ed25519);
    assert_eq!(client.sign("default", b"m", false).await, Err(Status::BadRequest), "aes-256 does not sign");
    assert_eq!(client.public_key("default", 0).await, Err(Status::BadRequest), "nor has a public key");
    assert_eq!(client.wrap("signer", b"", &[1; 32]).await, Err(Status::BadRequest), "ed25519 does not wrap");
    assert_eq!(client.sign("nope", b"m", false).await, Err(Status::UnknownKey));
    let (_, signature) = client.sign("signer", b"m", false).await.unwrap();
    assert_eq!(client.verify("signer", 9, b"m", &signature, false).await, Err(Status::UnknownKey));

    proxy.backend.rotate_key("signer").unwrap();
    proxy.backend.set_version_state("signer", 1, VersionState::Disabled).unwrap();
    proxy.server.refresh_keys().unwrap();
    assert_eq!(client.verify("signer", 1, b"m", &signature, false).await, Err(Status::KeyDisabled));
    let (version, _) = client.sign("signer", b"m", false).await.unwrap();
    assert_eq!(version, 2, "rotation keeps the type, and signs with the new version");
    assert_eq!(proxy.backend.find_key("signer").unwrap().key_type, KeyType::Ed25519);
}

#[tokio::test]
async fn ml_kem_wraps_in_kem_mode_and_unwraps() {
    let proxy = TestProxy::start(|_| {}).await;
    let mut client = proxy.connect().await;
    proxy.create_key_of_type("pq", KeyType::MlKem768);
    let blob = client.wrap("pq", b"tenant=1", &[5; 32]).await.unwrap();
    let (header, body) = BlobHeader::parse(&blob).unwrap();
    assert_eq!((header.mode, header.version), (BlobMode::Kem, 1));
    assert_eq!(body.len(), keymux_crypto::kem::OVERHEAD + 32);
    assert_eq!(client.unwrap(b"tenant=1", &blob).await.unwrap(), vec![5; 32]);
    assert_eq!(client.unwrap(b"tenant=2", &blob).await, Err(Status::Integrity));
    let (_, algorithm, spki) = client.public_key("pq", 0).await.unwrap();
    assert_eq!(algorithm, Algorithm::MlKem768);
    // A blob made offline from the served public key unwraps through the proxy.
    let public = keymux_crypto::PublicKey::from_spki_der(KeyType::MlKem768, &spki).unwrap();
    let header = BlobHeader { key: "pq".into(), version: 1, mode: BlobMode::Kem }.to_bytes().unwrap();
    let mut offline = header.clone();
    offline.extend(
        keymux_crypto::kem::seal(&public, &BlobHeader::associated_data(&header, b"ctx"), &[9; 16]).unwrap(),
    );
    assert_eq!(client.unwrap(b"ctx", &offline).await.unwrap(), vec![9; 16]);
    assert_eq!(client.sign("pq", b"m", false).await, Err(Status::BadRequest), "ml-kem does not sign");
}

fn sha256(message: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(message).to_vec()
}

fn sha384(message: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha384::digest(message).to_vec()
}
