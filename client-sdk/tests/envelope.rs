//! Envelope encryption end to end against the scripted test server's toy keystore.

mod common;

use keymux_client::testing::{ScriptedServer, toy_keystore};
use keymux_client::{Client, Envelope, EnvelopeError, Error};
use keymux_protocol::Request;

use common::config;

async fn client() -> (ScriptedServer, Client) {
    let server = ScriptedServer::builder().start_tcp(toy_keystore).await.unwrap();
    let client = Client::connect(config(vec![server.endpoint()])).await.unwrap();
    (server, client)
}

#[tokio::test]
async fn seal_then_open_round_trips() {
    let (server, client) = client().await;
    let data = b"a record worth protecting".repeat(100);
    let sealed = client.seal("records", b"table=users", &data).await.unwrap();
    assert!(sealed.starts_with(b"KMXE\x01"));
    assert!(!sealed.windows(data.len()).any(|window| window == data), "the data is encrypted");
    assert_eq!(client.open(b"table=users", &sealed).await.unwrap(), data);

    // One GENERATE_DATA_KEY for a 32-byte key under the named key, one UNWRAP.
    let requests = server.requests();
    assert!(matches!(
        &requests[0].request,
        Request::GenerateDataKey { key, aad, length: 32 } if key == "records" && aad == b"table=users"
    ));
    assert!(matches!(&requests[1].request, Request::Unwrap { .. }));
}

#[tokio::test]
async fn a_wrong_aad_does_not_open() {
    let (_server, client) = client().await;
    let sealed = client.seal("records", b"table=users", b"secret").await.unwrap();
    let error = client.open(b"table=orders", &sealed).await.unwrap_err();
    assert!(matches!(error, Error::Integrity { .. }), "{error:?}");
}

#[tokio::test]
async fn altered_ciphertext_does_not_open() {
    let (_server, client) = client().await;
    let mut sealed = client.seal("records", b"", b"secret").await.unwrap();
    let last = sealed.len() - 1;
    sealed[last] ^= 0x80;
    let error = client.open(b"", &sealed).await.unwrap_err();
    assert!(matches!(error, Error::Envelope(EnvelopeError::Authentication)), "{error:?}");

    let error = client.open(b"", b"not an envelope").await.unwrap_err();
    assert!(matches!(error, Error::Envelope(EnvelopeError::BadMagic)), "{error:?}");
}

#[tokio::test]
async fn rewrap_envelope_keeps_the_ciphertext_and_still_opens() {
    let (_server, client) = client().await;
    let sealed = client.seal("records", b"ctx", b"payload").await.unwrap();
    let rewrapped = client.rewrap_envelope(b"ctx", &sealed).await.unwrap();
    let (before, after) = (Envelope::parse(&sealed).unwrap(), Envelope::parse(&rewrapped).unwrap());
    assert_ne!(before.blob, after.blob);
    assert_eq!((before.nonce, before.sealed), (after.nonce, after.sealed));
    assert_eq!(client.open(b"ctx", &rewrapped).await.unwrap(), b"payload");
}
