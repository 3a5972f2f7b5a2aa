//! QUIC: round trips and pipelining through the SDK, client certificates as with TLS,
//! and failover from a dead endpoint.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use keymux_client::testing::free_port;
use keymux_client::{Client, ClientConfig, Endpoint};
use keymux_test_support::certs::{Pki, sdk_client};
use keymux_test_support::proxy::{TestProxy, every_op_then_pipelined};
use tokio::net::UdpSocket;

/// A UDP relay in front of the proxy's QUIC port, counting the bytes it carries: a
/// client that knows only the relay's port reaches the proxy by QUIC or not at all, and
/// the count shows the calls went through it.
struct UdpRelay {
    port: u16,
    bytes: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl UdpRelay {
    async fn start(upstream: SocketAddr) -> Self {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let port = front.local_addr().unwrap().port();
        let bytes = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&bytes);
        let task = tokio::spawn(async move {
            // One socket towards the proxy per client address, so the proxy sees each
            // client as a peer of its own, and answers go back to whoever asked.
            let mut peers: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
            let mut datagram = vec![0u8; 65_536];
            loop {
                let Ok((len, from)) = front.recv_from(&mut datagram).await else { return };
                counted.fetch_add(len as u64, Ordering::Relaxed);
                let back = match peers.get(&from) {
                    Some(socket) => Arc::clone(socket),
                    None => {
                        let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
                        socket.connect(upstream).await.unwrap();
                        let (socket_back, front, counted) =
                            (Arc::clone(&socket), Arc::clone(&front), Arc::clone(&counted));
                        tokio::spawn(async move {
                            let mut datagram = vec![0u8; 65_536];
                            while let Ok(len) = socket_back.recv(&mut datagram).await {
                                counted.fetch_add(len as u64, Ordering::Relaxed);
                                let _ = front.send_to(&datagram[..len], from).await;
                            }
                        });
                        peers.insert(from, Arc::clone(&socket));
                        socket
                    }
                };
                let _ = back.send(&datagram[..len]).await;
            }
        });
        Self { port, bytes, task }
    }

    fn endpoint(&self) -> Endpoint {
        Endpoint::quic("localhost", self.port)
    }

    fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

impl Drop for UdpRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn round_trips_and_pipelining_over_quic() {
    let pki = Pki::new("ca");
    let proxy = TestProxy::start(|config| pki.enable(config)).await;
    let relay = UdpRelay::start(proxy.server.quic_addr().unwrap()).await;
    let me = pki.client_cn("svc-a");
    let client = Arc::new(sdk_client(relay.endpoint(), pki.client_tls(Some(&me)), 2).await.unwrap());
    let handshakes = relay.bytes();
    every_op_then_pipelined(client, 32, 5, 9).await;
    // 2,000 wraps and unwraps each carried a 32-byte key one way and a blob of more than
    // 32 bytes, or the key, the other: QUIC carried at least that much after the
    // handshakes.
    let carried = relay.bytes() - handshakes;
    assert!(carried >= 4 * 2000 * 32, "the calls did not go over QUIC: {carried} bytes after the handshakes");
    assert_eq!(proxy.sample("keymux_connections"), 2.0, "the two pooled connections, both QUIC");
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
    let relay = UdpRelay::start(proxy.server.quic_addr().unwrap()).await;
    let mut config = ClientConfig::new(vec![
        Endpoint::tls("localhost", dead_port),
        relay.endpoint(),
        proxy.tls_endpoint(),
    ]);
    config.tls = Some(pki.client_tls(Some(&me)));
    config.connections = 3;
    // The first connection is made here: it fails over from the dead endpoint to QUIC.
    let client = Client::connect(config).await.unwrap();
    assert_eq!(proxy.sample("keymux_connections"), 1.0);
    let before = relay.bytes();
    assert!(before > 0, "the first connection did not fail over to QUIC");
    // The other two are made on first use, each starting at the endpoint after the last
    // one that worked: TLS, then the dead one again, and over to QUIC.
    for _ in 0..6 {
        client.ping().await.unwrap();
    }
    assert_eq!(proxy.sample("keymux_connections"), 3.0, "all three pooled connections are up");
    assert!(relay.bytes() > before, "no ping went over QUIC");
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
