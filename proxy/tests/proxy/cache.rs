//! The unwrap cache: hits, misses, bypass, and single-flight misses.

use keymux_protocol::{RequestFrame, Status};
use keymux_test_support::metrics::metric;
use keymux_test_support::proxy::TestProxy;
use keymux_test_support::raw::{unwrap_request, wrap_request};

#[tokio::test]
async fn a_repeated_unwrap_is_a_hit_and_another_aad_is_not() {
    let proxy = TestProxy::start(|_| {}).await;
    let mut client = proxy.connect().await;
    let blob = client.wrap("default", b"ctx", &[4; 32]).await.unwrap();
    let backend_before = proxy.backend_ops("unwrap");

    assert_eq!(client.unwrap(b"ctx", &blob).await.unwrap(), vec![4; 32]);
    assert_eq!(client.unwrap(b"ctx", &blob).await.unwrap(), vec![4; 32]);
    let page = proxy.scrape().await;
    assert_eq!(metric(&page, "keymux_cache_hits_total"), 1.0);
    assert_eq!(metric(&page, "keymux_cache_misses_total"), 1.0);
    assert_eq!(proxy.backend_ops("unwrap") - backend_before, 1);

    assert_eq!(client.unwrap(b"other", &blob).await, Err(Status::Integrity));
    let page = proxy.scrape().await;
    assert_eq!(metric(&page, "keymux_cache_hits_total"), 1.0, "a different aad is not a hit");
    assert_eq!(proxy.backend_ops("unwrap") - backend_before, 2);
}

#[tokio::test]
async fn the_bypass_flag_skips_the_cache() {
    let proxy = TestProxy::start(|_| {}).await;
    let mut client = proxy.connect().await;
    let blob = client.wrap("default", b"", &[8; 32]).await.unwrap();
    client.unwrap(b"", &blob).await.unwrap();
    let before = proxy.backend_ops("unwrap");
    for _ in 0..3 {
        assert_eq!(client.unwrap_with(b"", &blob, true).await.unwrap(), vec![8; 32]);
    }
    assert_eq!(proxy.backend_ops("unwrap") - before, 3, "every bypassing unwrap reaches the backend");
    assert_eq!(proxy.server.metrics().cache_hits(), 0);
}

#[tokio::test]
async fn concurrent_misses_make_one_backend_call() {
    let proxy = TestProxy::start(|config| config.batch.executor_threads = 1).await;
    let mut client = proxy.connect().await;
    let blob = client.wrap("default", b"tenant", &[6; 32]).await.unwrap();
    let before = proxy.backend_ops("unwrap");

    proxy.gate.close();
    client.send(&RequestFrame::new(1000, wrap_request("default", b"", &[0; 32]))).await;
    proxy.gate.wait_for_blocked(1).await;
    for id in 0..50 {
        client.send(&RequestFrame::new(id, unwrap_request(b"tenant", &blob))).await;
    }
    client.ping().await; // every unwrap has been read and routed
    proxy.gate.open();
    for _ in 0..51 {
        let response = client.recv().await.unwrap();
        assert_eq!(response.status(), Status::Ok, "{response:?}");
    }
    assert_eq!(proxy.backend_ops("unwrap") - before, 1, "fifty concurrent misses, one backend call");
    let hits = proxy.server.metrics().cache_hits();
    let mut client = proxy.connect().await;
    assert_eq!(client.unwrap(b"tenant", &blob).await.unwrap(), vec![6; 32]);
    assert_eq!(proxy.server.metrics().cache_hits() - hits, 1, "and the result was cached");
    assert_eq!(proxy.backend_ops("unwrap") - before, 1);
}

#[tokio::test]
async fn a_disabled_cache_calls_the_backend_every_time() {
    let proxy = TestProxy::start(|config| config.cache.enabled = false).await;
    let mut client = proxy.connect().await;
    let blob = client.wrap("default", b"", &[2; 32]).await.unwrap();
    for _ in 0..3 {
        client.unwrap(b"", &blob).await.unwrap();
    }
    assert_eq!(proxy.backend_ops("unwrap"), 3);
    assert!(proxy.server.cache().is_none());
}
