//! Direct mode: every operation is one KMS call, bound to the blob header and AAD.

use keymux_client::Error;
use keymux_proxy::keys::KeyLifecycle;
use keymux_test_support::moto::{Moto, kms_calls, kms_config, start_proxy};
use keymux_test_support::proxy::client_for;
use keymux_test_support::unique_key;

#[tokio::test]
async fn round_trip_generate_rewrap_and_integrity() {
    let moto = Moto::shared();
    let proxy = start_proxy(kms_config(&[("us-east-1", moto.endpoint())]), |_| {}).await;
    let key = unique_key("direct");
    proxy.create_key(&key);
    let client = client_for(&proxy).await;

    let blob = client.wrap(&key, b"ctx", &[7; 32]).await.unwrap();
    assert_eq!(client.unwrap(b"ctx", &blob).await.unwrap().expose(), &[7; 32]);
    let error = client.unwrap(b"other", &blob).await.unwrap_err();
    assert!(matches!(error, Error::Integrity { .. }), "a different aad is INTEGRITY: {error}");
    let mut tampered = blob.clone();
    *tampered.last_mut().unwrap() ^= 1;
    assert!(matches!(client.unwrap(b"ctx", &tampered).await.unwrap_err(), Error::Integrity { .. }));

    let data_key = client.generate_data_key(&key, b"gdk", 32).await.unwrap();
    assert_eq!(data_key.plaintext.expose().len(), 32);
    assert_eq!(client.unwrap(b"gdk", &data_key.blob).await.unwrap().expose(), data_key.plaintext.expose());
    assert!(matches!(client.generate_data_key(&key, b"", 2000).await.unwrap_err(), Error::BadRequest { .. }));

    // A rotation maps version 2 to a new KMS key; REWRAP moves a blob to it in one
    // ReEncrypt, and both blobs unwrap.
    assert_eq!(proxy.backend.rotate_key(&key).unwrap(), 2);
    proxy.server.refresh_keys().unwrap();
    let rewrapped = client.rewrap(b"ctx", &blob).await.unwrap();
    assert_ne!(rewrapped, blob);
    assert_eq!(keymux_protocol::BlobHeader::parse(&rewrapped).unwrap().0.version, 2);
    assert_eq!(client.unwrap(b"ctx", &rewrapped).await.unwrap().expose(), &[7; 32]);
    assert!(matches!(client.unwrap(b"other", &rewrapped).await.unwrap_err(), Error::Integrity { .. }));
    assert_eq!(kms_calls(&proxy, "us-east-1", "re_encrypt").await, 1);

    // Disabling version 1 disables its KMS key; its blobs stop unwrapping.
    proxy.backend.set_version_state(&key, 1, keymux_proxy::keys::VersionState::Disabled).unwrap();
    proxy.server.refresh_keys().unwrap();
    assert!(matches!(client.unwrap(b"ctx", &blob).await.unwrap_err(), Error::KeyDisabled { .. }));
    let listed = proxy.backend.list_keys().unwrap();
    let info = listed.iter().find(|k| k.name == key).unwrap();
    assert_eq!(info.versions.len(), 2);
    assert_eq!(info.current_version(), Ok(2));
}
