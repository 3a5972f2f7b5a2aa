//! QUIC: round trips and pipelining through the SDK, client certificates as with TLS,
//! and failover from a dead endpoint.

use std::sync::Arc;

use keymux_client::testing::free_port;
use keymux_client::{Client, ClientConfig, Endpoint};
use keymux_test_support::certs::{Pki, sdk_client};
use keymux_test_support::proxy::{TestProxy, every_op_then_pipelined};

#[tokio::test]
async fn round_trips_and_pipelining_over_quic() {
    let pki = Pki::new("ca");
    let proxy = TestProxy::start(|config| pki.enable(config)).await;
    let me = pki.client_cn("svc-a");
    let client = Arc::new(sdk_client(proxy.quic_endpoint(), pki.client_tls(Some(&me)), 2).await.unwrap());
    every_op_then_pipelined(client, 32, 5, 9).await;
}

#[tokio::test]
async fn quic_requires_a_good_client_certificate() {
    let pki = Pki::new("ca");
    let other = Pki::new("another ca");
    let proxy = TestProxy::start(|config| pki.enable(config)).await;
    assert!(sdk_client(proxy.quic_endpoint(), pki.client_tls(None), 1).await.is_err(), "no certificate");
    let foreign = other.client_cn("svc-a");
    assert!(
        sdk_client(proxy.quic_endpoint(), pki.client_tls(Some(&foreign)), 1).await.is_err(),
        "another CA"
    );
    let good = pki.client_cn("svc-a");
    sdk_client(proxy.quic_endpoint(), pki.client_tls(Some(&good)), 1).await.unwrap().ping().await.unwrap();
}

#[tokio::test]
async fn a_dead_endpoint_fails_over_to_the_next() {
    let pki = Pki::new("ca");
    let proxy = TestProxy::start(|config| pki.enable(config)).await;
    let me = pki.client_cn("svc-a");
    let dead_port = free_port();
    let mut config = ClientConfig::new(vec![
        Endpoint::tls("localhost", dead_port),
        proxy.quic_endpoint(),
        proxy.tls_endpoint(),
    ]);
    config.tls = Some(pki.client_tls(Some(&me)));
    config.connections = 3;
    let client = Client::connect(config).await.unwrap();
    for _ in 0..6 {
        client.ping().await.unwrap();
    }
}

#[tokio::test]
async fn a_certificate_reload_reaches_new_quic_connections_and_spares_open_ones() {
    let pki = Pki::new("ca");
    let (cert, key) = pki.write("live", &pki.server("first"));
    let proxy = TestProxy::start(|config| {
        pki.enable(config);
        let tls = config.tls.as_mut().unwrap();
        tls.cert = cert.clone();
        tls.key = key.clone();
    })
    .await;
    let me = pki.client_cn("svc-a");
    let old = sdk_client(proxy.quic_endpoint(), pki.client_tls(Some(&me)), 1).await.unwrap();
    old.ping().await.unwrap();

    // The new server certificate comes from another CA, so which one a connection gets
    // shows in which clients can connect. Client certificates still chain to `pki`.
    let other = Pki::new("another ca");
    pki.write("live", &other.server("second"));
    proxy.server.reload_certificates().unwrap();
    assert!(
        sdk_client(proxy.quic_endpoint(), pki.client_tls(Some(&me)), 1).await.is_err(),
        "new connections get the new certificate"
    );
    let trusting_other = other.client_tls(Some(&me));
    sdk_client(proxy.quic_endpoint(), trusting_other, 1).await.unwrap().ping().await.unwrap();
    let blob = old.wrap("default", b"", &[1; 32]).await.unwrap();
    assert_eq!(old.unwrap(b"", &blob).await.unwrap().expose(), &[1; 32], "the open connection keeps working");
}
