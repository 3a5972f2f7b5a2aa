//! Unix sockets, the admin endpoints, and graceful shutdown.

use std::time::Duration;

use keymux_protocol::{Reply, RequestFrame, Status};
use keymux_proxy::keys::KeyLifecycle;
use keymux_test_support::proxy::{TestProxy, http_get};
use keymux_test_support::raw::{RawClient, wrap_request};
use keymux_test_support::wait::wait_until_async;

#[tokio::test]
async fn serves_on_a_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keymux.sock");
    let socket = path.clone();
    let proxy = TestProxy::start(move |config| config.server.unix_socket = Some(socket)).await;
    let stream = tokio::net::UnixStream::connect(&path).await.unwrap();
    let mut framed =
        tokio_util::codec::Framed::new(stream, keymux_protocol::ClientCodec::new(Default::default()));
    use futures_util::{SinkExt, StreamExt};
    framed.send(&RequestFrame::new(3, wrap_request("default", b"", &[1; 32]))).await.unwrap();
    let response = framed.next().await.unwrap().unwrap();
    assert!(matches!(response.result, Ok(Reply::Wrap { .. })));
    proxy.server.shutdown().await;
    assert!(!path.exists(), "the socket file is removed at shutdown");
}

#[tokio::test]
async fn admin_endpoints_answer() {
    let proxy = TestProxy::start(|_| {}).await;
    let admin = proxy.server.admin_addr().unwrap();
    assert_eq!(http_get(admin, "/healthz").await, (200, "ok\n".to_owned()));
    assert_eq!(http_get(admin, "/readyz").await, (200, "ready\n".to_owned()));
    let mut client = proxy.connect().await;
    client.wrap("default", b"", &[1; 32]).await.unwrap();
    let (status, page) = http_get(admin, "/metrics").await;
    assert_eq!(status, 200);
    assert!(page.contains("keymux_requests_total{op=\"wrap\",status=\"OK\"} 1"), "{page}");
    assert!(page.contains("keymux_request_duration_seconds_bucket"));
    assert!(page.contains("keymux_backend_ops_total{backend=\"soft\",op=\"wrap\"} 1"));
}

#[tokio::test]
async fn shutdown_drains_in_flight_requests() {
    let proxy = TestProxy::start(|config| config.batch.executor_threads = 1).await;
    let mut client = proxy.connect().await;
    proxy.gate.close();
    for id in 0..10 {
        client.send(&RequestFrame::new(id, wrap_request("default", b"", &[1; 32]))).await;
    }
    proxy.gate.wait_for_blocked(1).await;
    client.ping().await;
    let gate = proxy.gate.clone();
    let addr = client_addr(&client);
    let shutdown = tokio::spawn(proxy.server.shutdown());
    // The listener closes while the held requests are still in flight.
    wait_until_async("the listener to refuse new connections", Duration::from_secs(5), || async move {
        tokio::net::TcpStream::connect(addr).await.is_err()
    })
    .await;
    gate.open();
    for _ in 0..10 {
        assert_eq!(client.recv().await.expect("answered before closing").status(), Status::Ok);
    }
    assert!(client.recv().await.is_none(), "then the connection closes");
    shutdown.await.unwrap();
}

fn client_addr(client: &RawClient) -> std::net::SocketAddr {
    client.writer.get_ref().peer_addr().unwrap()
}

#[tokio::test]
async fn key_changes_made_elsewhere_are_audited_when_the_proxy_sees_them() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let path = log.clone();
    let proxy = TestProxy::start(move |config| config.audit.path = Some(path)).await;
    // As `keymux key rotate` / `disable` would, from another process.
    proxy.backend.rotate_key("default").unwrap();
    proxy.backend.set_version_state("default", 1, keymux_proxy::keys::VersionState::Disabled).unwrap();
    proxy.server.refresh_keys().unwrap();
    proxy.server.audit().sync();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("key_change") && text.contains("version 2 created"), "{text}");
    assert!(text.contains("version 1 disabled"), "{text}");
    assert!(keymux_proxy::audit::verify(&log).unwrap().is_ok(), "the chain verifies");
}

#[tokio::test]
async fn a_proxy_that_cannot_refresh_its_keys_stops_new_wraps_but_still_unwraps() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_owned();
    let proxy = TestProxy::start(move |config| {
        config.backend = keymux_proxy::backend::BackendConfig::Soft(
            keymux_proxy::backend::soft::SoftConfig::throwaway(&data),
        );
        config.keys.refresh_interval = std::time::Duration::from_millis(100);
        config.keys.max_staleness = Some(std::time::Duration::from_millis(300));
    })
    .await;
    let mut client = proxy.connect().await;
    let blob = client.wrap("default", b"", &[1; 32]).await.unwrap();
    // The keystore becomes unreadable: every refresh fails from now on.
    std::fs::write(dir.path().join("keystore.kmx"), b"damaged").unwrap();
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let refused = loop {
        match client.wrap("default", b"", &[1; 32]).await {
            Err(status) => break status,
            Ok(_) if std::time::Instant::now() < until => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Ok(_) => panic!("wraps went on for 10 s on a key list that could not be refreshed"),
        }
    };
    assert_eq!(refused, Status::BackendUnavailable, "retryable, so clients wait rather than fail");
    assert_eq!(client.unwrap(b"", &blob).await.unwrap(), vec![1; 32], "unwraps go on");
    let admin = proxy.server.admin_addr().unwrap();
    let (status, body) = http_get(admin, "/readyz").await;
    assert_eq!(status, 503, "a balancer sends new clients elsewhere: {body}");
    assert!(body.starts_with("backend not answering"), "{body}");
    assert_eq!(http_get(admin, "/healthz").await.0, 200, "alive all the same: not to be restarted");
}

#[tokio::test]
async fn a_drain_goes_not_ready_first_and_closes_the_listeners_after_the_drain_delay() {
    let proxy = TestProxy::start(|config| config.server.drain_delay = Duration::from_secs(3)).await;
    let admin = proxy.server.admin_addr().unwrap();
    let addr = proxy.addr();
    let mut old = proxy.connect().await;
    old.wrap("default", b"", &[1; 32]).await.unwrap();
    let drain = tokio::spawn(proxy.server.drain().run());
    wait_until_async("/readyz to answer 503", Duration::from_secs(5), || async move {
        http_get(admin, "/readyz").await == (503, "draining: shutting down\n".to_owned())
    })
    .await;
    // Not ready, yet still serving (for 3 s): clients a balancer sends before its next
    // check, and those already connected.
    let mut late = RawClient::connect(addr).await;
    late.wrap("default", b"", &[2; 32]).await.unwrap();
    old.wrap("default", b"", &[3; 32]).await.unwrap();
    drain.await.unwrap();
    wait_until_async("the listener to refuse new connections", Duration::from_secs(5), || async move {
        tokio::net::TcpStream::connect(addr).await.is_err()
    })
    .await;
    assert!(old.recv().await.is_none(), "idle connections close once the drain delay is over");
}

#[tokio::test]
async fn audit_write_failures_are_raised_on_the_metrics_and_healthz() {
    // /dev/full: every write fails with ENOSPC, as a full disk would.
    let proxy = TestProxy::start(|config| config.audit.path = Some("/dev/full".into())).await;
    let admin = proxy.server.admin_addr().unwrap();
    proxy.server.audit().sync();
    let (status, body) = http_get(admin, "/healthz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("audit"), "{body}");
    let page = proxy.scrape().await;
    assert!(keymux_test_support::metrics::metric(&page, "keymux_audit_write_failures_total") >= 1.0);
    assert_eq!(keymux_test_support::metrics::metric(&page, "keymux_audit_failing"), 1.0);
}
