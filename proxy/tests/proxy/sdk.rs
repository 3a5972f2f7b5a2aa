//! The Rust client SDK against the real proxy.

use std::sync::Arc;
use std::time::Duration;

use keymux_client::{CallOptions, Client, ClientConfig, Endpoint, Error};
use keymux_test_support::proxy::TestProxy;

async fn client_for(proxy: &TestProxy, connections: usize) -> Client {
    let mut config = ClientConfig::new(vec![Endpoint::from(proxy.addr())]);
    config.connections = connections;
    Client::connect(config).await.unwrap()
}

#[tokio::test]
async fn every_operation_through_the_sdk() {
    let proxy = TestProxy::start(|_| {}).await;
    let client = client_for(&proxy, 2).await;
    client.ping().await.unwrap();
    let blob = client.wrap("default", b"ctx", &[1; 32]).await.unwrap();
    assert_eq!(client.unwrap(b"ctx", &blob).await.unwrap().expose(), &[1; 32]);
    let data_key = client.generate_data_key("default", b"ctx", 32).await.unwrap();
    assert_eq!(client.unwrap(b"ctx", &data_key.blob).await.unwrap().expose(), data_key.plaintext.expose());
    let rewrapped = client.rewrap(b"ctx", &blob).await.unwrap();
    assert_eq!(client.unwrap(b"ctx", &rewrapped).await.unwrap().expose(), &[1; 32]);

    assert!(matches!(client.unwrap(b"other", &blob).await, Err(Error::Integrity { .. })));
    assert!(matches!(client.wrap("nope", b"", &[1; 32]).await, Err(Error::UnknownKey { .. })));
    let bypass = CallOptions::new().with_bypass_cache(true);
    assert_eq!(client.unwrap_with(b"ctx", &blob, &bypass).await.unwrap().expose(), &[1; 32]);
}

#[tokio::test]
async fn envelopes_seal_and_open_through_the_proxy() {
    let proxy = TestProxy::start(|_| {}).await;
    let client = client_for(&proxy, 1).await;
    let envelope = client.seal("default", b"record=9", b"a secret document").await.unwrap();
    assert!(!envelope.windows(6).any(|w| w == b"secret"), "the data is encrypted");
    assert_eq!(client.open(b"record=9", &envelope).await.unwrap(), b"a secret document");
    assert!(matches!(client.open(b"record=8", &envelope).await, Err(Error::Integrity { .. })));
}

#[tokio::test]
async fn ten_thousand_concurrent_sdk_calls_on_one_connection() {
    let proxy = TestProxy::start(|_| {}).await;
    let client = Arc::new(client_for(&proxy, 1).await);
    let calls = (0..10_000u32).map(|i| {
        let client = Arc::clone(&client);
        tokio::spawn(async move {
            let dek = i.to_be_bytes().repeat(8);
            let blob = client.wrap("default", &i.to_le_bytes(), &dek).await.unwrap();
            assert_eq!(client.unwrap(&i.to_le_bytes(), &blob).await.unwrap().expose(), dek);
        })
    });
    for call in futures_util::future::join_all(calls).await {
        call.unwrap();
    }
    let metrics = proxy.server.metrics();
    assert_eq!(metrics.requests(keymux_protocol::Opcode::Wrap, keymux_protocol::Status::Ok), 10_000);
}

#[tokio::test]
async fn the_sdk_retries_busy_until_the_queue_drains() {
    let proxy = TestProxy::start_with_queue_of(1).await;
    let mut config = ClientConfig::new(vec![Endpoint::from(proxy.addr())]);
    config.max_retries = 20;
    config.default_timeout = Duration::from_secs(10);
    let client = Arc::new(Client::connect(config).await.unwrap());
    proxy.gate.close();
    let calls: Vec<_> = (0..5)
        .map(|_| {
            let client = Arc::clone(&client);
            tokio::spawn(async move { client.wrap("default", b"", &[1; 32]).await })
        })
        .collect();
    proxy.gate.wait_for_blocked(1).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    proxy.gate.open();
    for call in calls {
        call.await.unwrap().expect("BUSY was retried until it went through");
    }
    let busy = proxy.server.metrics().requests(keymux_protocol::Opcode::Wrap, keymux_protocol::Status::Busy);
    assert!(busy > 0, "the queue of one did answer BUSY");
}
