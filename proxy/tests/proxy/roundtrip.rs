//! The four operations, end to end.

use std::time::Duration;

use keymux_protocol::{BlobHeader, Reply, Request, RequestFrame, Status};
use keymux_proxy::keys::{KeyAdminError, KeyLifecycle};
use keymux_test_support::proxy::TestProxy;
use keymux_test_support::wait::wait_until;

#[tokio::test]
async fn wrap_then_unwrap_returns_the_key() {
    let proxy = TestProxy::start(|_| {}).await;
    let mut client = proxy.connect().await;
    let blob = client.wrap("default", b"tenant=7", &[0x42; 32]).await.unwrap();
    let (header, _) = BlobHeader::parse(&blob).unwrap();
    assert_eq!((header.key.as_str(), header.version), ("default", 1));
    assert_eq!(client.unwrap(b"tenant=7", &blob).await.unwrap(), vec![0x42; 32]);
}

#[tokio::test]
async fn generate_data_key_returns_a_key_and_its_blob() {
    let proxy = TestProxy::start(|_| {}).await;
    let mut client = proxy.connect().await;
    let request = Request::GenerateDataKey { key: "default".into(), aad: b"ctx".to_vec(), length: 32 };
    let Ok(Reply::GenerateDataKey { plaintext, blob }) =
        client.call(RequestFrame::new(5, request)).await.result
    else {
        panic!("generate_data_key failed");
    };
    assert_eq!(plaintext.len(), 32);
    assert_ne!(plaintext.expose(), &[0u8; 32]);
    assert_eq!(client.unwrap(b"ctx", &blob).await.unwrap(), plaintext.expose());
}

#[tokio::test]
async fn rewrap_moves_a_blob_to_the_current_version() {
    let proxy = TestProxy::start(|_| {}).await;
    let mut client = proxy.connect().await;
    let old = client.wrap("default", b"ctx", &[7; 16]).await.unwrap();
    assert_eq!(proxy.backend.rotate_key("default").unwrap(), 2);
    proxy.server.refresh_keys().unwrap();

    let request = Request::Rewrap { aad: b"ctx".to_vec(), blob: old.clone() };
    let Ok(Reply::Rewrap { blob: new }) = client.call(RequestFrame::new(6, request)).await.result else {
        panic!("rewrap failed");
    };
    assert_eq!(BlobHeader::parse(&new).unwrap().0.version, 2);
    assert_eq!(client.unwrap(b"ctx", &new).await.unwrap(), vec![7; 16]);
    assert_eq!(client.unwrap(b"ctx", &old).await.unwrap(), vec![7; 16], "old blobs still unwrap");
    let fresh = client.wrap("default", b"ctx", &[1; 16]).await.unwrap();
    assert_eq!(BlobHeader::parse(&fresh).unwrap().0.version, 2, "new wraps use the new version");
}

#[tokio::test]
async fn disabled_version_is_refused_even_when_cached() {
    let proxy = TestProxy::start(|_| {}).await;
    let mut client = proxy.connect().await;
    let blob = client.wrap("default", b"", &[3; 32]).await.unwrap();
    assert_eq!(client.unwrap(b"", &blob).await.unwrap(), vec![3; 32]);
    assert_eq!(client.unwrap(b"", &blob).await.unwrap(), vec![3; 32]);
    assert_eq!(proxy.server.metrics().cache_hits(), 1, "the second unwrap was served from the cache");
    proxy.backend.rotate_key("default").unwrap();
    proxy.backend.set_version_state("default", 1, keymux_proxy::keys::VersionState::Disabled).unwrap();
    proxy.server.refresh_keys().unwrap();
    assert_eq!(client.unwrap(b"", &blob).await, Err(Status::KeyDisabled));
    assert_eq!(proxy.backend_ops("unwrap"), 1, "refused without a backend call");
}

#[tokio::test]
async fn hello_reports_the_server_limits() {
    let proxy = TestProxy::start(|config| config.server.max_in_flight_per_connection = 77).await;
    let mut client = proxy.connect().await;
    let response = client.call(RequestFrame::new(1, Request::Hello { client_name: "test".into() })).await;
    let Ok(Reply::Hello { max_frame, max_in_flight, server_version }) = response.result else {
        panic!("hello failed: {response:?}");
    };
    assert_eq!((max_frame, max_in_flight), (64 * 1024, 77));
    assert!(!server_version.is_empty());
}

#[tokio::test]
async fn destroying_a_version_drops_its_cached_keys_and_never_reuses_its_number() {
    let proxy = TestProxy::start(|_| {}).await;
    let mut client = proxy.connect().await;
    let v1 = client.wrap("default", b"", &[1; 32]).await.unwrap();
    client.unwrap(b"", &v1).await.unwrap();
    client.unwrap(b"", &v1).await.unwrap();
    assert_eq!(proxy.server.metrics().cache_hits(), 1, "the second unwrap was served from the cache");
    assert_eq!(proxy.server.cache().unwrap().entry_count(), 1);

    let refused = proxy.backend.destroy_version("default", 1, Duration::ZERO).unwrap_err();
    assert!(matches!(refused, KeyAdminError::CurrentVersion { version: 1, .. }), "{refused}");
    proxy.backend.rotate_key("default").unwrap();
    proxy.backend.set_version_state("default", 2, keymux_proxy::keys::VersionState::Disabled).unwrap();
    let refused = proxy.backend.destroy_version("default", 2, Duration::ZERO).unwrap_err();
    assert!(
        matches!(refused, KeyAdminError::LatestVersion { version: 2, .. }),
        "a disabled latest version is kept: {refused}"
    );
    proxy.backend.set_version_state("default", 2, keymux_proxy::keys::VersionState::Enabled).unwrap();
    proxy.backend.set_version_state("default", 1, keymux_proxy::keys::VersionState::Disabled).unwrap();
    proxy.backend.destroy_version("default", 1, Duration::ZERO).unwrap();
    proxy.server.refresh_keys().unwrap();

    // moka applies invalidation predicates during housekeeping (never returning a
    // matching entry meanwhile): wait for the entry to be gone for good.
    let cache = proxy.server.cache().unwrap();
    wait_until("the destroyed version to leave the cache", Duration::from_secs(5), || {
        cache.entry_count() == 0
    })
    .await;
    assert_eq!(client.unwrap(b"", &v1).await, Err(Status::Integrity));
    assert_eq!(proxy.server.metrics().cache_hits(), 1, "and was not served from it");
    assert_eq!(proxy.backend.rotate_key("default").unwrap(), 3, "numbers are never reused");
}
