//! A connection cannot live forever: a client that stops reading its responses is
//! dropped after `server.write_timeout`, and every connection ends gracefully after
//! `server.max_connection_lifetime`.

use std::time::{Duration, Instant};

use keymux_protocol::{ClientCodec, Limits, Request, RequestFrame};
use keymux_test_support::metrics::metric;
use keymux_test_support::proxy::TestProxy;

/// Waits until the proxy reports `open` client connections; false after `within`.
async fn connections_become(proxy: &TestProxy, open: f64, within: Duration) -> bool {
    let until = Instant::now() + within;
    while Instant::now() < until {
        if metric(&proxy.server.metrics().encode(), "keymux_connections") == open {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_after_the_write_timeout() {
    let proxy = TestProxy::start(|config| config.server.write_timeout = Duration::from_millis(300)).await;
    // A tiny receive buffer, and nothing read: the proxy's writes soon block.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(proxy.addr()).await.unwrap();
    let (_read, write) = stream.into_split();
    let mut frames = tokio_util::codec::FramedWrite::new(write, ClientCodec::new(Limits::default()));
    use futures_util::SinkExt;
    for id in 0..1000 {
        let request = Request::GenerateDataKey { key: "default".into(), aad: Vec::new(), length: 4096 };
        if frames.send(&RequestFrame::new(id, request)).await.is_err() {
            break;
        }
    }
    assert!(connections_become(&proxy, 1.0, Duration::from_secs(5)).await, "the connection was set up");
    // 300 ms of blocked writes, with room for the writer's last batch and the test's
    // polling: well under the 10 s the connection would otherwise stay open for.
    assert!(
        connections_become(&proxy, 0.0, Duration::from_secs(10)).await,
        "a client that never reads is dropped, not held forever"
    );
}

#[tokio::test]
async fn connections_end_gracefully_at_the_end_of_their_lifetime() {
    let lifetime = Duration::from_millis(400);
    let proxy = TestProxy::start(|config| config.server.max_connection_lifetime = lifetime).await;
    let started = Instant::now();
    let mut client = proxy.connect().await;
    client.ping().await;
    assert!(client.recv().await.is_none(), "the proxy closes the connection");
    let lived = started.elapsed();
    assert!(lived >= lifetime, "not before its lifetime: {lived:?}");
    assert!(connections_become(&proxy, 0.0, Duration::from_secs(5)).await);
}
