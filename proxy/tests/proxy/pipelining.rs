//! Many requests in flight on one connection, answered out of order.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use keymux_protocol::{Reply, Request, RequestFrame};
use keymux_test_support::proxy::TestProxy;
use keymux_test_support::raw::{RawClient, unwrap_request, wrap_request};
use keymux_test_support::wait::wait_until;

#[tokio::test]
async fn responses_overtake_slower_requests() {
    let proxy = TestProxy::start(|config| config.batch.executor_threads = 1).await;
    let mut client = proxy.connect().await;
    proxy.gate.close();
    client.send(&RequestFrame::new(1, wrap_request("default", b"", &[1; 32]))).await;
    proxy.gate.wait_for_blocked(1).await;
    client.send(&RequestFrame::new(2, Request::Ping)).await;
    let first = client.recv().await.unwrap();
    assert_eq!(first.request_id, 2, "the PING overtakes the WRAP held at the backend");
    proxy.gate.open();
    let second = client.recv().await.unwrap();
    assert_eq!(second.request_id, 1);
    assert!(matches!(second.result, Ok(Reply::Wrap { .. })));
}

/// 10,000 requests written back to back on one connection, without waiting for
/// answers: the proxy takes in as many as its in-flight limit allows (1,024 by default),
/// which the gate shows held at once, and answers every one, out of order.
#[tokio::test]
async fn ten_thousand_pipelined_calls_fill_one_connections_in_flight_limit() {
    const CALLS: u64 = 10_000;
    let proxy = TestProxy::start(|config| config.batch.executor_threads = 1).await;
    let mut setup = proxy.connect().await;
    let blobs: Vec<Vec<u8>> = futures_util::future::join_all((0..4u8).map(|i| {
        let addr = proxy.addr();
        async move { RawClient::connect(addr).await.wrap("default", b"aad", &[i; 32]).await.unwrap() }
    }))
    .await;
    setup.ping().await;

    let client = proxy.connect().await;
    let (mut writer, mut reader) = (client.writer, client.reader);
    proxy.gate.close();
    let sender = tokio::spawn({
        let blobs = blobs.clone();
        async move {
            for id in 0..CALLS {
                let request = match id % 4 {
                    0 => wrap_request("default", b"aad", &id.to_be_bytes()),
                    1 => unwrap_request(b"aad", &blobs[(id / 4 % 4) as usize]),
                    2 => Request::Ping,
                    _ => Request::GenerateDataKey { key: "default".into(), aad: vec![], length: 16 },
                };
                writer.feed(&RequestFrame::new(id, request)).await.unwrap();
            }
            writer.flush().await.unwrap();
            writer
        }
    });

    // With the gate closed, PINGs are answered and the rest wait: wraps and data keys in
    // the queue, the first unwrap of each of the 4 blobs too (the others wait on those).
    // The proxy stops reading at 1,024 unanswered, a third of them unwraps: so at least
    // 2/3 x 1,024 - 64 (one batch at the gate) + 4 = 622 are queued or held at once.
    // Read one by one, at most a handful would be.
    wait_until("600 requests of one connection held at once", Duration::from_secs(10), || {
        proxy.held_back() >= 600
    })
    .await;
    assert!(proxy.held_back() <= 1024, "more than the in-flight limit was read: {}", proxy.held_back());
    proxy.gate.open();

    let mut seen = HashMap::new();
    let mut out_of_order = 0;
    let mut last = None;
    while (seen.len() as u64) < CALLS {
        let response = reader.next().await.expect("connection open").expect("valid response");
        let id = response.request_id;
        if last.is_some_and(|last| id < last) {
            out_of_order += 1;
        }
        last = Some(id);
        let ok = match (id % 4, response.result) {
            (0, Ok(Reply::Wrap { .. })) | (2, Ok(Reply::Pong)) => true,
            (1, Ok(Reply::Unwrap { plaintext })) => plaintext.expose() == [(id / 4 % 4) as u8; 32],
            (3, Ok(Reply::GenerateDataKey { plaintext, .. })) => plaintext.len() == 16,
            _ => false,
        };
        assert!(ok, "request {id} got the wrong answer");
        assert!(seen.insert(id, ()).is_none(), "request {id} answered twice");
    }
    let _writer = sender.await.unwrap();
    assert!(out_of_order > 0, "pings and cache hits overtake queued work");
}
