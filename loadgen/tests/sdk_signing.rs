//! The client SDK's signing, public keys and offline wrapping end to end against a real
//! proxy: the load generator's embedded one, on the soft keystore. (The SDK cannot
//! depend on the proxy, so these live here.) Signatures are also checked by the
//! `openssl` command line from the DER public key the SDK fetched, and offline blobs
//! are unwrapped by the proxy.

use keymux_client::{Algorithm, Client, Error, PublicKeyError, wrap_offline};
use keymux_loadgen::embedded::EmbeddedProxy;
use keymux_protocol::{BlobHeader, BlobMode};
use keymux_proxy::keys::KeyType;
use keymux_test_support::openssl;
use sha2::Digest;

async fn proxy_with(keys: &[(&str, KeyType)]) -> (EmbeddedProxy, Client) {
    let keys: Vec<(String, KeyType)> = keys.iter().map(|(name, t)| ((*name).to_owned(), *t)).collect();
    let proxy = EmbeddedProxy::start_with_keys(&keys).await.unwrap();
    let client = Client::connect_to(&proxy.endpoint().to_string()).await.unwrap();
    (proxy, client)
}

#[tokio::test]
async fn ed25519_signs_through_the_sdk_and_verifies_at_the_proxy_locally_and_with_openssl() {
    let (proxy, client) = proxy_with(&[("sig", KeyType::Ed25519)]).await;
    let message = b"keymux release 1.0";

    let signature = client.sign("sig", message).await.unwrap();
    assert_eq!((signature.key.as_str(), signature.version, signature.bytes.len()), ("sig", 1, 64));
    let mut tampered = signature.bytes.clone();
    tampered[0] ^= 1;

    // The proxy's verdicts.
    assert!(client.verify("sig", signature.version, message, &signature.bytes).await.unwrap());
    assert!(!client.verify("sig", 1, b"keymux release 1.1", &signature.bytes).await.unwrap());
    assert!(!client.verify("sig", 1, message, &tampered).await.unwrap());

    // The same verdicts locally, from the fetched public key.
    let public_key = client.public_key("sig", 0).await.unwrap();
    assert_eq!(
        (public_key.key(), public_key.version(), public_key.algorithm()),
        ("sig", 1, Algorithm::Ed25519)
    );
    assert_eq!(client.public_key("sig", 1).await.unwrap(), public_key);
    assert_eq!(public_key.verify_locally(message, &signature.bytes), Ok(true));
    assert_eq!(public_key.verify_locally(b"keymux release 1.1", &signature.bytes), Ok(false));
    assert_eq!(public_key.verify_locally(message, &tampered), Ok(false));

    // And openssl's, from the DER alone.
    assert!(openssl::verifies(Algorithm::Ed25519, public_key.spki_der(), message, &signature.bytes));
    assert!(!openssl::verifies(Algorithm::Ed25519, public_key.spki_der(), message, &tampered));

    // Ed25519 signs the message itself: no digests, here or there.
    let error = client.sign_digest("sig", &[0; 32]).await.unwrap_err();
    assert!(matches!(error, Error::Unsupported { .. }), "{error:?}");
    assert_eq!(
        public_key.verify_digest_locally(&[0; 32], &signature.bytes),
        Err(PublicKeyError::DigestUnsupported { algorithm: Algorithm::Ed25519 })
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn an_ecdsa_digest_signature_is_one_over_the_message() {
    let (proxy, client) = proxy_with(&[("p256", KeyType::EcP256)]).await;
    let message = b"hashed by the caller";
    let digest = sha2::Sha256::digest(message);

    let signature = client.sign_digest("p256", &digest).await.unwrap();
    assert!(client.verify("p256", signature.version, message, &signature.bytes).await.unwrap());
    assert!(client.verify_digest("p256", signature.version, &digest, &signature.bytes).await.unwrap());
    let public_key = client.public_key("p256", signature.version).await.unwrap();
    assert_eq!(public_key.algorithm(), Algorithm::EcdsaP256Sha256);
    assert_eq!(public_key.verify_locally(message, &signature.bytes), Ok(true));
    assert_eq!(public_key.verify_digest_locally(&digest, &signature.bytes), Ok(true));
    assert!(openssl::verifies(Algorithm::EcdsaP256Sha256, public_key.spki_der(), message, &signature.bytes));

    let error = client.sign_digest("p256", &digest[..31]).await.unwrap_err();
    assert!(matches!(error, Error::BadRequest { .. }), "a short digest: {error:?}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn wrong_types_unknown_keys_and_versions_are_typed_errors() {
    let (proxy, client) = proxy_with(&[("sig", KeyType::Ed25519), ("pq", KeyType::MlKem768)]).await;
    fn bad_request<T>(result: Result<T, Error>) -> bool {
        matches!(result, Err(Error::BadRequest { .. }))
    }
    assert!(bad_request(client.sign("default", b"m").await), "aes-256 does not sign");
    assert!(bad_request(client.sign("pq", b"m").await), "ml-kem-768 does not sign");
    assert!(bad_request(client.public_key("default", 0).await), "aes-256 has no public key");
    assert!(bad_request(client.wrap("sig", b"", &[1; 32]).await), "ed25519 does not wrap");
    assert!(matches!(client.sign("nope", b"m").await, Err(Error::UnknownKey { .. })));
    assert!(matches!(client.public_key("sig", 9).await, Err(Error::UnknownKey { .. })));
    let signature = client.sign("sig", b"m").await.unwrap();
    assert!(matches!(client.verify("sig", 9, b"m", &signature.bytes).await, Err(Error::UnknownKey { .. })));

    // Locally: a signing key does not wrap, an ML-KEM key does not verify.
    let sig = client.public_key("sig", 0).await.unwrap();
    assert_eq!(
        wrap_offline(&sig, b"", &[1; 32]),
        Err(PublicKeyError::CannotWrap { algorithm: Algorithm::Ed25519 })
    );
    let error = client.wrap_locally("sig", b"", &[1; 32]).await.unwrap_err();
    assert!(matches!(error, Error::PublicKey(PublicKeyError::CannotWrap { .. })), "{error:?}");
    let pq = client.public_key("pq", 0).await.unwrap();
    assert_eq!(
        pq.verify_locally(b"m", &signature.bytes),
        Err(PublicKeyError::CannotVerify { algorithm: Algorithm::MlKem768 })
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_blob_wrapped_offline_unwraps_through_the_proxy() {
    let (proxy, client) = proxy_with(&[("pq", KeyType::MlKem768)]).await;
    let public_key = client.public_key("pq", 0).await.unwrap();
    assert_eq!((public_key.algorithm(), public_key.version()), (Algorithm::MlKem768, 1));

    let blob = wrap_offline(&public_key, b"tenant=42", &[7; 32]).unwrap();
    assert_eq!(client.unwrap(b"tenant=42", &blob).await.unwrap().expose(), &[7; 32]);
    let error = client.unwrap(b"tenant=43", &blob).await.unwrap_err();
    assert!(matches!(error, Error::Integrity { .. }), "the aad is bound: {error:?}");

    // The blob the proxy's WRAP makes has the same header; both kinds unwrap alike.
    let wrapped = client.wrap("pq", b"tenant=42", &[7; 32]).await.unwrap();
    let (online, online_body) = BlobHeader::parse(&wrapped).unwrap();
    let (offline, offline_body) = BlobHeader::parse(&blob).unwrap();
    assert_eq!(online, offline);
    assert_eq!((offline.mode, online_body.len()), (BlobMode::Kem, offline_body.len()));

    // wrap_locally: one GET_PUBLIC_KEY, and the data key never leaves the process.
    let local = client.wrap_locally("pq", b"", &[1; 16]).await.unwrap();
    assert_eq!(client.unwrap(b"", &local).await.unwrap().expose(), &[1; 16]);
    // A stored public key, rebuilt from its DER, wraps as well.
    let stored =
        keymux_client::PublicKeyInfo::from_spki_der("pq", 1, Algorithm::MlKem768, public_key.spki_der())
            .unwrap();
    let blob = wrap_offline(&stored, b"", &[2; 24]).unwrap();
    assert_eq!(client.unwrap(b"", &blob).await.unwrap().expose(), &[2; 24]);
    // REWRAP takes an offline blob too.
    let rewrapped = client.rewrap(b"", &blob).await.unwrap();
    assert_eq!(client.unwrap(b"", &rewrapped).await.unwrap().expose(), &[2; 24]);
    proxy.shutdown().await;
}
