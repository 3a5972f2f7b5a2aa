//! Clients that never finish a handshake cannot lock out those who do: half-open TLS
//! connections from one address stop at `server.max_connections_per_source`, a flood
//! from many addresses has its oldest handshakes evicted from `server.max_handshakes`,
//! and QUIC Initials that never continue are answered with a Retry once the budget is
//! under pressure. In each case another client is served within seconds, while the
//! flood would hold its handshakes for the whole (30 s) handshake timeout.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use keymux_client::Endpoint;
use keymux_proxy::config::Config;
use keymux_test_support::certs::{Pki, sdk_client};
use keymux_test_support::proxy::TestProxy;
use rustls_pki_types::pem::PemObject;
use tokio::net::{TcpSocket, TcpStream, UdpSocket};

/// A proxy with TLS and QUIC, small budgets, and handshakes that may take far longer
/// than the test waits; `tweak` adjusts the rest.
async fn flood_target(pki: &Pki, tweak: impl FnOnce(&mut Config)) -> TestProxy {
    TestProxy::start(|config| {
        pki.enable(config);
        config.server.handshake_timeout = Duration::from_secs(30);
        config.server.max_connections = 64;
        config.server.max_handshakes = 32;
        config.server.max_connections_per_source = 16;
        tweak(config);
    })
    .await
}

/// A loopback address other than 127.0.0.1: a source of its own.
fn loopback(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

/// `count` TCP connections from `from` to `to` that never send a byte.
async fn half_open(from: IpAddr, to: SocketAddr, count: usize) -> Vec<TcpStream> {
    let mut streams = Vec::with_capacity(count);
    for _ in 0..count {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(from, 0)).unwrap();
        streams.push(socket.connect(to).await.unwrap());
    }
    streams
}

/// A client at 127.0.0.1 connects over `endpoint` and is answered within 5 s.
async fn served_meanwhile(pki: &Pki, endpoint: Endpoint) {
    let me = pki.client_cn("svc-a");
    let served = tokio::time::timeout(Duration::from_secs(5), async {
        sdk_client(endpoint, pki.client_tls(Some(&me)), 1).await.unwrap().ping().await.unwrap();
    })
    .await;
    assert!(served.is_ok(), "another client was locked out by the flood");
}

#[tokio::test]
async fn half_open_tls_connections_from_one_address_stop_at_its_limit() {
    let pki = Pki::new("ca");
    let proxy = flood_target(&pki, |_| {}).await;
    let _flood = half_open(loopback(2), proxy.server.tls_addr().unwrap(), 300).await;
    served_meanwhile(&pki, proxy.tls_endpoint()).await;
    let refused = proxy.sample("keymux_refused_connections_total{reason=\"per_source\"}");
    assert!(refused >= 300.0 - 16.0, "connections past the source's 16 were closed at once: {refused}");
}

#[tokio::test]
async fn a_flood_from_many_addresses_loses_its_oldest_handshakes_first() {
    let pki = Pki::new("ca");
    let proxy = flood_target(&pki, |_| {}).await;
    let mut flood = Vec::new();
    for source in 2..12 {
        flood.push(half_open(loopback(source), proxy.server.tls_addr().unwrap(), 16).await);
    }
    served_meanwhile(&pki, proxy.tls_endpoint()).await;
    assert!(proxy.sample("keymux_evicted_handshakes_total") >= 160.0 - 32.0, "the oldest made room");
}

/// A UDP relay that carries datagrams towards the proxy only, from one socket at
/// 127.0.0.2: the proxy's answers are lost, so no handshake through it ever finishes,
/// as with spoofed Initials.
async fn one_way_relay(upstream: SocketAddr) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let front = UdpSocket::bind(SocketAddr::new(loopback(2), 0)).await.unwrap();
    let back = UdpSocket::bind(SocketAddr::new(loopback(2), 0)).await.unwrap();
    back.connect(upstream).await.unwrap();
    let addr = front.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut datagram = vec![0u8; 65_536];
        while let Ok((len, _)) = front.recv_from(&mut datagram).await {
            let _ = back.send(&datagram[..len]).await;
        }
    });
    (addr, task)
}

/// A QUIC client endpoint (ALPN keymux/1, trusting `pki`) that only starts handshakes.
fn quic_client(pki: &Pki) -> quinn::Endpoint {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls_pki_types::CertificateDer::from_pem_slice(pki.ca_pem().as_bytes()).unwrap()).unwrap();
    let mut tls = rustls::ClientConfig::builder_with_provider(keymux_proxy::transport::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![keymux_proxy::transport::tls::ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    endpoint
}

#[tokio::test]
async fn quic_initials_that_never_continue_are_met_with_a_retry() {
    let pki = Pki::new("ca");
    let proxy = flood_target(&pki, |config| config.server.max_connections_per_source = 0).await;
    let (relay, relay_task) = one_way_relay(proxy.server.quic_addr().unwrap()).await;
    let flooder = quic_client(&pki);
    let pending: Vec<_> = (0..200).map(|_| flooder.connect(relay, "localhost").unwrap()).collect();
    // The proxy has seen the flood once its budget is under pressure and Retries go out.
    let until = std::time::Instant::now() + Duration::from_secs(5);
    while proxy.sample("keymux_quic_retries_total") == 0.0 && std::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(proxy.sample("keymux_quic_retries_total") > 0.0, "no Retry was sent under the flood");
    served_meanwhile(&pki, proxy.quic_endpoint()).await;
    drop(pending);
    relay_task.abort();
}
