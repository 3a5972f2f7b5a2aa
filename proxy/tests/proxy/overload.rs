//! Overload answers BUSY and deadlines answer TIMEOUT, without growing memory or
//! calling the backend.

use std::time::Duration;

use tokio::time::Instant;

use keymux_protocol::{Opcode, Request, RequestFrame, Status};
use keymux_test_support::metrics::metric;
use keymux_test_support::proxy::TestProxy;
use keymux_test_support::raw::wrap_request;

#[tokio::test]
async fn a_full_queue_answers_busy_with_retry_after() {
    let proxy = TestProxy::start_with_queue_of(4).await;
    let mut client = proxy.connect().await;
    proxy.gate.close();
    client.send(&RequestFrame::new(0, wrap_request("default", b"", &[0; 32]))).await;
    proxy.gate.wait_for_blocked(1).await;
    for id in 1..=100 {
        client.send(&RequestFrame::new(id, wrap_request("default", b"", &[0; 32]))).await;
    }
    let mut busy = 0;
    for _ in 0..96 {
        let response = client.recv().await.unwrap();
        let failure = response.result.expect_err("only BUSY can come back while the backend is held");
        assert_eq!(failure.status, Status::Busy);
        assert!(failure.retry_after_ms > 0);
        busy += 1;
    }
    let page = proxy.scrape().await;
    assert!(metric(&page, "keymux_queue_depth") <= 4.0, "the queue never grows past its capacity");
    proxy.gate.open();
    let mut ok = 0;
    for _ in 0..5 {
        ok += usize::from(client.recv().await.unwrap().status() == Status::Ok);
    }
    assert_eq!((busy, ok), (96, 5));
}

#[tokio::test]
async fn an_expired_deadline_times_out_before_the_backend() {
    let proxy = TestProxy::start(|config| config.batch.executor_threads = 1).await;
    let mut client = proxy.connect().await;
    let before = proxy.backend_ops("wrap");

    let mut expired = RequestFrame::new(1, wrap_request("default", b"", &[0; 32]));
    expired.timeout_ms = Some(0);
    assert_eq!(client.call(expired).await.status(), Status::Timeout);

    proxy.gate.close();
    client.send(&RequestFrame::new(2, wrap_request("default", b"", &[0; 32]))).await;
    proxy.gate.wait_for_blocked(1).await;
    let mut short = RequestFrame::new(3, wrap_request("default", b"", &[0; 32]));
    short.timeout_ms = Some(20);
    client.send(&short).await;
    // The PING is answered once the proxy has read it, and so the request before it:
    // that request's 20 ms deadline runs from a moment before `read`.
    client.ping().await;
    let read = Instant::now();
    tokio::time::sleep_until(read + Duration::from_millis(21)).await;
    proxy.gate.open();
    let mut statuses = [client.recv().await.unwrap(), client.recv().await.unwrap()];
    statuses.sort_by_key(|r| r.request_id);
    assert_eq!(statuses[0].status(), Status::Ok);
    assert_eq!(statuses[1].status(), Status::Timeout, "expired while queued");
    let failure = statuses[1].result.as_ref().unwrap_err();
    assert_eq!(failure.retry_after_ms, 0, "a passed deadline has no retry hint");
    assert_eq!(proxy.backend_ops("wrap") - before, 1, "only the live request reached the backend");
    // Both deadlines were counted as TIMEOUT, and nothing as BUSY.
    let metrics = proxy.server.metrics();
    assert_eq!(metrics.requests(Opcode::Wrap, Status::Timeout), 2);
    assert_eq!(metrics.requests(Opcode::Wrap, Status::Busy), 0);
    assert_eq!(metrics.requests(Opcode::Wrap, Status::Ok), 1);
}

#[tokio::test]
async fn a_client_that_stops_reading_stops_being_read() {
    let proxy = TestProxy::start(|config| config.server.max_in_flight_per_connection = 8).await;
    let mut client = proxy.connect().await;
    // Pipeline far more than the in-flight limit without reading: once the socket
    // buffers are full the proxy stops reading this connection, and serves others
    // meanwhile. Large requests and responses fill the buffers quickly.
    let request = Request::GenerateDataKey { key: "default".into(), aad: vec![7; 8 * 1024], length: 4096 };
    let writer = tokio::spawn(async move {
        for id in 0..50_000u64 {
            let frame = RequestFrame::new(id, request.clone());
            if tokio::time::timeout(Duration::from_millis(500), client.send(&frame)).await.is_err() {
                return (id, client);
            }
        }
        panic!("the proxy kept reading a client that never reads its responses");
    });
    let (sent, mut client) = writer.await.unwrap();
    // What the proxy took in: its 8 requests in flight, and what the kernel buffers hold
    // on the way (requests of 8 KiB one way, their 4 KiB answers the other, so fewer
    // frames than the largest send and receive buffers hold in 4 KiB). Reading on
    // regardless would have gone far past that.
    let buffered = 2 * (sysctl_max("net/ipv4/tcp_rmem") + sysctl_max("net/ipv4/tcp_wmem")) / 4096;
    assert!(
        sent <= 8 + buffered,
        "the proxy read {sent} requests; its limit and the buffers hold {}",
        8 + buffered
    );
    let mut other = proxy.connect().await;
    other.ping().await;
    let mut received = 0;
    while received < sent {
        client.recv().await.unwrap();
        received += 1;
    }
}

/// The largest buffer size of a Linux TCP buffer setting (its third value), in bytes.
fn sysctl_max(name: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/sys/{name}")).unwrap();
    text.split_whitespace().nth(2).unwrap().parse().unwrap()
}
