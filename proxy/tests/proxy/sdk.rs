//! The Rust client SDK against the real proxy.

use std::sync::Arc;
use std::time::Duration;

use keymux_client::{CallOptions, Client, ClientConfig, Endpoint, Error};
use keymux_protocol::{Opcode, Status};
use keymux_test_support::proxy::TestProxy;
use keymux_test_support::wait::wait_until;

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

/// 10,000 callers on one SDK connection: the SDK keeps as many in flight as the proxy
/// allows (1,024 by default), which the gate shows queued at once, and every call comes
/// back with its own answer.
#[tokio::test]
async fn ten_thousand_concurrent_sdk_calls_fill_one_connection_to_its_limit() {
    let proxy = TestProxy::start(|config| config.batch.executor_threads = 1).await;
    let client = Arc::new(client_for(&proxy, 1).await);
    let limit = client.server_info().max_in_flight as usize;
    assert_eq!(limit, 1024);
    proxy.gate.close();
    let calls: Vec<_> = (0..10_000u32)
        .map(|i| {
            let client = Arc::clone(&client);
            tokio::spawn(async move {
                let dek = i.to_be_bytes().repeat(8);
                let blob = client.wrap("default", &i.to_le_bytes(), &dek).await.unwrap();
                assert_eq!(client.unwrap(&i.to_le_bytes(), &blob).await.unwrap().expose(), dek);
            })
        })
        .collect();
    // Every wrap queues at the backend while the gate is closed: the limit is reached
    // when 1,024 of them are held at once, on the one connection.
    wait_until("1,024 wraps held at the gate", Duration::from_secs(10), || proxy.held_back() == limit).await;
    assert_eq!(proxy.sample("keymux_connections"), 1.0);
    proxy.gate.open();
    for call in futures_util::future::join_all(calls).await {
        call.unwrap();
    }
    let metrics = proxy.server.metrics();
    assert_eq!(metrics.requests(Opcode::Wrap, Status::Ok), 10_000);
    assert_eq!(metrics.requests(Opcode::Unwrap, Status::Ok), 10_000);
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
    // One wrap held at the gate, one in the queue of one: the other three were BUSY.
    let metrics = proxy.server.metrics();
    wait_until("three wraps answered BUSY", Duration::from_secs(5), || {
        metrics.requests(Opcode::Wrap, Status::Busy) >= 3
    })
    .await;
    proxy.gate.open();
    for call in calls {
        call.await.unwrap().expect("BUSY was retried until it went through");
    }
    assert_eq!(metrics.requests(Opcode::Wrap, Status::Ok), 5, "each call went through once");
}
