//! SIGN, VERIFY and GET_PUBLIC_KEY against the scripted test server: requests on the
//! wire, typed results and errors, retries, local verification and offline wrapping.
//! (Against the real proxy: the load generator's tests/sdk_signing.rs.)

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use keymux_client::testing::{Action, ScriptedServer, toy_keystore};
use keymux_client::{Algorithm, Client, Error, ProtocolError, PublicKeyError, Status};
use keymux_crypto::{KeyType, PrivateKey, kem};
use keymux_protocol::{BlobHeader, Failure, Reply, Request, RequestFrame, SecretBytes};

use common::config;

async fn client_of(server: &ScriptedServer) -> Client {
    Client::connect(config(vec![server.endpoint()])).await.unwrap()
}

#[tokio::test]
async fn sign_and_verify_send_the_input_and_the_digest_flag() {
    let server = ScriptedServer::builder().start_tcp(toy_keystore).await.unwrap();
    let client = client_of(&server).await;

    let signature = client.sign("signer", b"message").await.unwrap();
    assert_eq!((signature.key.as_str(), signature.version), ("signer", 1));
    assert!(client.verify("signer", 1, b"message", &signature.bytes).await.unwrap());
    assert!(!client.verify("signer", 1, b"another", &signature.bytes).await.unwrap(), "invalid is Ok(false)");
    let digest = [3; 32];
    let over_digest = client.sign_digest("signer", &digest).await.unwrap();
    assert_ne!(over_digest.bytes, signature.bytes);
    assert!(client.verify_digest("signer", 1, &digest, &over_digest.bytes).await.unwrap());

    let requests = server.requests();
    let flags: Vec<Option<bool>> = requests
        .iter()
        .map(|r| match &r.request {
            Request::Sign { digest, .. } | Request::Verify { digest, .. } => Some(*digest),
            _ => None,
        })
        .collect();
    assert_eq!(flags, [Some(false), Some(false), Some(false), Some(true), Some(true)]);
    assert!(matches!(
        &requests[1].request,
        Request::Verify { key, version: 1, input, signature: sent, .. }
            if key == "signer" && input == b"message" && *sent == signature.bytes
    ));
    assert!(requests.iter().all(|r| r.timeout_ms.is_some()), "every call carries its deadline");
}

#[tokio::test]
async fn signing_refusals_are_typed_errors() {
    // What the proxy answers: a key that does not sign, a digest for Ed25519, a disabled
    // version, an unknown key.
    let server = ScriptedServer::builder()
        .start_tcp(|request: &RequestFrame| match &request.request {
            Request::Sign { key, .. } if key == "aes" => {
                Action::fail(Status::BadRequest, "aes-256 does not sign", 0)
            }
            Request::Sign { digest: true, .. } => {
                Action::fail(Status::Unsupported, "ed25519 takes no digest", 0)
            }
            Request::Verify { version: 1, .. } => {
                Action::fail(Status::KeyDisabled, "version 1 is disabled", 0)
            }
            Request::GetPublicKey { .. } => Action::fail(Status::UnknownKey, "no such key", 0),
            _ => toy_keystore(request),
        })
        .await
        .unwrap();
    let client = client_of(&server).await;
    let error = client.sign("aes", b"m").await.unwrap_err();
    assert!(matches!(error, Error::BadRequest { .. }), "{error:?}");
    let error = client.sign_digest("ed", &[0; 32]).await.unwrap_err();
    assert!(matches!(error, Error::Unsupported { .. }), "{error:?}");
    let error = client.verify("ed", 1, b"m", &[0; 64]).await.unwrap_err();
    assert!(matches!(error, Error::KeyDisabled { .. }), "{error:?}");
    let error = client.verify_digest("ed", 1, &[0; 32], &[0; 64]).await.unwrap_err();
    assert!(matches!(error, Error::KeyDisabled { .. }), "{error:?}");
    let error = client.public_key("nope", 0).await.unwrap_err();
    assert!(matches!(error, Error::UnknownKey { .. }), "{error:?}");
    let error = client.sign("missing", b"m").await.unwrap_err();
    assert!(matches!(error, Error::UnknownKey { .. }), "{error:?}");
    let error = client.sign("", b"m").await.unwrap_err();
    assert!(matches!(error, Error::InvalidRequest(_)), "an empty key name is not sent: {error:?}");
}

#[tokio::test]
async fn sign_is_retried_on_a_retryable_status() {
    let attempts = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&attempts);
    let server = ScriptedServer::builder()
        .start_tcp(move |request: &RequestFrame| match seen.fetch_add(1, Ordering::SeqCst) {
            0 => Action::fail(Status::BackendUnavailable, "hsm down", 0),
            1 => Action::fail(Status::Busy, "queue full", 1),
            _ => toy_keystore(request),
        })
        .await
        .unwrap();
    let client = client_of(&server).await;
    let signature = client.sign("signer", b"m").await.unwrap();
    assert_eq!(signature.version, 1);
    assert_eq!(server.received(), 3);
}

/// A script serving one real key pair's public key as version 2, and signing with it.
fn key_pair_server(private: Arc<PrivateKey>, algorithm: Algorithm) -> impl Fn(&RequestFrame) -> Action {
    move |request: &RequestFrame| match &request.request {
        Request::GetPublicKey { version: 0 | 2, .. } => Action::Reply(Reply::PublicKey {
            version: 2,
            algorithm,
            public_key: private.public_key().spki_der().to_vec(),
        }),
        Request::GetPublicKey { .. } => Action::fail(Status::UnknownKey, "no such version", 0),
        Request::Sign { input, .. } => {
            Action::Reply(Reply::Sign { version: 2, signature: private.sign(input).unwrap() })
        }
        _ => Action::fail(Status::Unsupported, "not scripted", 0),
    }
}

#[tokio::test]
async fn a_fetched_public_key_verifies_locally() {
    let private = Arc::new(PrivateKey::generate(KeyType::Ed25519).unwrap());
    let spki = private.public_key().spki_der().to_vec();
    let server = ScriptedServer::builder()
        .start_tcp(key_pair_server(Arc::clone(&private), Algorithm::Ed25519))
        .await
        .unwrap();
    let client = client_of(&server).await;

    let signature = client.sign("signer", b"release 1.0").await.unwrap();
    let public_key = client.public_key("signer", 0).await.unwrap();
    assert_eq!((public_key.key(), public_key.version()), ("signer", 2), "version 0 names the current one");
    assert_eq!((public_key.algorithm(), public_key.spki_der()), (Algorithm::Ed25519, &spki[..]));
    assert_eq!(public_key.verify_locally(b"release 1.0", &signature.bytes), Ok(true));
    assert_eq!(public_key.verify_locally(b"release 1.1", &signature.bytes), Ok(false));
    let mut tampered = signature.bytes.clone();
    tampered[10] ^= 1;
    assert_eq!(public_key.verify_locally(b"release 1.0", &tampered), Ok(false));
    assert_eq!(
        public_key.verify_digest_locally(&[0; 32], &signature.bytes),
        Err(PublicKeyError::DigestUnsupported { algorithm: Algorithm::Ed25519 })
    );
    assert_eq!(client.public_key("signer", 2).await.unwrap(), public_key);
    assert!(matches!(client.public_key("signer", 1).await, Err(Error::UnknownKey { .. })));

    let requests = server.requests();
    assert!(matches!(&requests[1].request, Request::GetPublicKey { key, version: 0 } if key == "signer"));
}

#[tokio::test]
async fn a_public_key_that_does_not_parse_or_answers_another_version_is_a_protocol_violation() {
    let server = ScriptedServer::builder()
        .start_tcp(|request: &RequestFrame| match &request.request {
            Request::GetPublicKey { key, version } => Action::Reply(Reply::PublicKey {
                version: if key == "zero" { 0 } else { version + 1 },
                algorithm: Algorithm::EcdsaP256Sha256,
                public_key: b"not DER".to_vec(),
            }),
            _ => Action::Ignore,
        })
        .await
        .unwrap();
    let client = client_of(&server).await;
    let error = client.public_key("k", 0).await.unwrap_err();
    let invalid = ProtocolError::InvalidPublicKey { algorithm: Algorithm::EcdsaP256Sha256 };
    assert!(matches!(error, Error::Protocol(e) if e == invalid), "{error:?}");
    let error = client.public_key("k", 3).await.unwrap_err();
    let other = ProtocolError::UnexpectedVersion { requested: 3, got: 4 };
    assert!(matches!(error, Error::Protocol(e) if e == other), "{error:?}");
    let error = client.public_key("zero", 0).await.unwrap_err();
    let zero = ProtocolError::UnexpectedVersion { requested: 0, got: 0 };
    assert!(matches!(error, Error::Protocol(e) if e == zero), "{error:?}");
}

/// A stand-in for the proxy's ML-KEM-768 key `pq` version 5: serves its encapsulation
/// key and opens mode-3 blobs with the private key, as the proxy's backend does.
fn ml_kem_server(private: Arc<PrivateKey>) -> impl Fn(&RequestFrame) -> Action {
    move |request: &RequestFrame| match &request.request {
        Request::GetPublicKey { key, .. } if key == "pq" => Action::Reply(Reply::PublicKey {
            version: 5,
            algorithm: Algorithm::MlKem768,
            public_key: private.public_key().spki_der().to_vec(),
        }),
        Request::Unwrap { aad, blob } => {
            let (_, body) = BlobHeader::parse(blob).unwrap();
            let header = &blob[..blob.len() - body.len()];
            match kem::open(&private, &BlobHeader::associated_data(header, aad), body) {
                Ok(dek) => Action::Reply(Reply::Unwrap { plaintext: SecretBytes::copy_from(&dek) }),
                Err(_) => Action::Fail(Failure::new(Status::Integrity, "does not verify")),
            }
        }
        _ => Action::fail(Status::Unsupported, "not scripted", 0),
    }
}

#[tokio::test]
async fn wrap_locally_never_sends_the_data_key_and_the_blob_unwraps() {
    let private = Arc::new(PrivateKey::generate(KeyType::MlKem768).unwrap());
    let server = ScriptedServer::builder().start_tcp(ml_kem_server(private)).await.unwrap();
    let client = client_of(&server).await;

    let blob = client.wrap_locally("pq", b"tenant=9", &[4; 32]).await.unwrap();
    let (header, _) = BlobHeader::parse(&blob).unwrap();
    assert_eq!((header.key.as_str(), header.version), ("pq", 5));
    assert_eq!(client.unwrap(b"tenant=9", &blob).await.unwrap().expose(), &[4; 32]);
    let error = client.unwrap(b"tenant=8", &blob).await.unwrap_err();
    assert!(matches!(error, Error::Integrity { .. }), "{error:?}");

    // Fetched once, the key wraps any number of data keys with no call at all.
    let public_key = client.public_key("pq", 0).await.unwrap();
    let received = server.received();
    let blobs: Vec<Vec<u8>> =
        (0..10u8).map(|i| keymux_client::wrap_offline(&public_key, b"", &[i; 16]).unwrap()).collect();
    assert_eq!(server.received(), received);
    for (i, blob) in (0..10u8).zip(&blobs) {
        assert_eq!(client.unwrap(b"", blob).await.unwrap().expose(), &[i; 16]);
    }
    let requests = server.requests();
    assert!(requests.iter().all(|r| !matches!(r.request, Request::Wrap { .. })), "no WRAP was sent");
}

#[tokio::test]
async fn only_ml_kem_keys_wrap_offline() {
    let private = Arc::new(PrivateKey::generate(KeyType::EcP256).unwrap());
    let server = ScriptedServer::builder()
        .start_tcp(key_pair_server(private, Algorithm::EcdsaP256Sha256))
        .await
        .unwrap();
    let client = client_of(&server).await;
    let error = client.wrap_locally("signer", b"", &[0; 32]).await.unwrap_err();
    let cannot = PublicKeyError::CannotWrap { algorithm: Algorithm::EcdsaP256Sha256 };
    assert!(matches!(error, Error::PublicKey(e) if e == cannot), "{error:?}");
    assert_eq!(error.status(), None);
    assert!(!error.is_retryable());
}
