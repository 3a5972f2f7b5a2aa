//! The HTTP front ends' listener on its own, with a router of the test's: HTTP/1.1 and
//! HTTP/2, in the clear and over TLS (1.3, and 1.2 when allowed), mutual TLS giving the
//! handler the client's identity, certificate reload, and the limits: body, head, time,
//! garbage, and shutdown.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::Extension;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use bytesize::ByteSize;
use keymux_proxy::config::ClientAuth;
use keymux_proxy::frontend::http::{HttpConfig, HttpListener, HttpPeer};
use keymux_proxy::server::CertReloader;
use keymux_test_support::certs::{Pki, der_of};
use keymux_test_support::http::{HttpClient, Version};
use keymux_test_support::proxy::TestProxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The test's routes: `/echo` answers the body's length, `/whoami` the caller's
/// principal, `/slow` takes two seconds.
fn app() -> Router {
    Router::new()
        .route("/echo", post(|body: Bytes| async move { body.len().to_string() }))
        .route(
            "/whoami",
            get(|Extension(peer): Extension<HttpPeer>| async move { peer.identity.principal() }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(2)).await;
                "late"
            }),
        )
}

fn reject(status: StatusCode, message: &'static str) -> axum::response::Response {
    (status, format!("rejected: {message}")).into_response()
}

/// A listener serving [`app`] until the returned token is cancelled.
struct Served {
    addr: SocketAddr,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

async fn serve(config: HttpConfig, reloader: Option<&std::sync::Arc<CertReloader>>) -> Served {
    let listener =
        HttpListener::bind("test", "127.0.0.1:0".parse().unwrap(), &config, reloader).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (shutdown, tasks) = (CancellationToken::new(), TaskTracker::new());
    listener.spawn(app(), reject, &tasks, shutdown.clone(), Duration::from_secs(5));
    Served { addr, shutdown, tasks }
}

fn small() -> HttpConfig {
    HttpConfig {
        max_body: ByteSize::kib(64),
        max_headers: 16,
        header_read_timeout: Duration::from_millis(300),
        request_timeout: Duration::from_millis(500),
        ..HttpConfig::default()
    }
}

/// Reads until the server closes the connection (or 5 s pass: then `false`).
async fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut sink = vec![0u8; 4096];
    let read_all = async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read_all).await.is_ok()
}

#[tokio::test]
async fn serves_a_router_over_http1_and_http2_in_the_clear() {
    let served = serve(small(), None).await;
    for version in [Version::Http1, Version::Http2] {
        let mut client = HttpClient::connect(served.addr, version).await.unwrap();
        let answer = client.send("POST", "/echo", &[], vec![7u8; 1000]).await.unwrap();
        assert_eq!((answer.status, answer.text.as_str()), (200, "1000"), "{version:?}");
        let answer = client.send("GET", "/whoami", &[], Vec::new()).await.unwrap();
        assert_eq!(answer.text, "anonymous", "{version:?}: no certificate in the clear");
    }
}

#[tokio::test]
async fn bodies_over_the_limit_get_413_declared_or_streamed() {
    let served = serve(small(), None).await;
    // A declared gigabyte, none of it sent: answered at once from the head.
    let mut stream = TcpStream::connect(served.addr).await.unwrap();
    let head = "POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 1073741824\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer)).await.unwrap().unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("rejected: request body too large"), "the front end words it: {answer}");

    // Chunked, no length given, growing past the limit: 413 as well.
    let mut client = HttpClient::connect(served.addr, Version::Http2).await.unwrap();
    let answer = client.send("POST", "/echo", &[], vec![0u8; 64 * 1024 + 1]).await.unwrap();
    assert_eq!(answer.status, 413);
    let answer = client.send("POST", "/echo", &[], vec![0u8; 64 * 1024]).await.unwrap();
    assert_eq!((answer.status, answer.text.as_str()), (200, "65536"), "the limit itself is fine");
}

#[tokio::test]
async fn heads_with_too_many_or_too_large_fields_are_refused() {
    let served = serve(small(), None).await;
    let mut client = HttpClient::connect(served.addr, Version::Http1).await.unwrap();
    let names: Vec<String> = (0..40).map(|i| format!("x-extra-{i}")).collect();
    let many: Vec<(&str, &str)> = names.iter().map(|name| (name.as_str(), "1")).collect();
    let refused = client.send("GET", "/whoami", &many, Vec::new()).await;
    assert!(refused.map_or(true, |answer| answer.status == 431), "40 header fields over a limit of 16");
    let big = "v".repeat(20 * 1024);
    let mut client = HttpClient::connect(served.addr, Version::Http2).await.unwrap();
    let refused = client.send("GET", "/whoami", &[("x-big", &big)], Vec::new()).await;
    assert!(refused.map_or(true, |answer| answer.status == 431), "a 20 KiB field over 16 KiB");
    let mut client = HttpClient::connect(served.addr, Version::Http1).await.unwrap();
    assert_eq!(client.send("GET", "/whoami", &[], Vec::new()).await.unwrap().status, 200, "still serving");
}

#[tokio::test]
async fn silent_and_slow_clients_are_dropped_and_slow_handlers_time_out() {
    let served = serve(small(), None).await;
    let mut silent = TcpStream::connect(served.addr).await.unwrap();
    assert!(closed_by_server(&mut silent).await, "a client that sends nothing is dropped");
    let mut slow = TcpStream::connect(served.addr).await.unwrap();
    slow.write_all(b"GET /whoami HTTP/1.1\r\nhost: x\r\n").await.unwrap();
    assert!(closed_by_server(&mut slow).await, "a head that never ends is dropped");
    let mut h2_silent = TcpStream::connect(served.addr).await.unwrap();
    h2_silent.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
    assert!(closed_by_server(&mut h2_silent).await, "an HTTP/2 preface and then nothing is dropped");

    let mut client = HttpClient::connect(served.addr, Version::Http1).await.unwrap();
    let answer = client.send("GET", "/slow", &[], Vec::new()).await.unwrap();
    assert_eq!((answer.status, answer.text.as_str()), (503, "rejected: request timed out"));
}

#[tokio::test]
async fn garbage_leaves_the_listener_serving() {
    let served = serve(small(), None).await;
    let garbage: [&[u8]; 5] = [
        b"\x00\x01\x02\x03\xff\xfe garbage\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: nope\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x04\x01\x00\x00\x00\x00\x00\xff\xff\xff\xff",
    ];
    for bytes in garbage {
        let mut stream = TcpStream::connect(served.addr).await.unwrap();
        stream.write_all(bytes).await.unwrap();
        assert!(
            closed_by_server(&mut stream).await,
            "{:?}: answered and closed",
            String::from_utf8_lossy(bytes)
        );
    }
    // Truncated: half a body, then the client goes away.
    let mut stream = TcpStream::connect(served.addr).await.unwrap();
    stream.write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\nhalf").await.unwrap();
    drop(stream);
    let mut client = HttpClient::connect(served.addr, Version::Http1).await.unwrap();
    assert_eq!(client.send("POST", "/echo", &[], vec![1u8; 5]).await.unwrap().text, "5");
}

#[tokio::test]
async fn shutdown_stops_accepting_and_drains() {
    let served = serve(small(), None).await;
    let mut client = HttpClient::connect(served.addr, Version::Http1).await.unwrap();
    assert_eq!(client.send("GET", "/whoami", &[], Vec::new()).await.unwrap().status, 200);
    served.shutdown.cancel();
    served.tasks.close();
    tokio::time::timeout(Duration::from_secs(5), served.tasks.wait()).await.expect("every task ends");
    assert!(TcpStream::connect(served.addr).await.is_err(), "no longer listening");
}

#[tokio::test]
async fn tls_serves_both_versions_names_the_client_and_reloads() {
    let pki = Pki::new("ca");
    let first = pki.server("first");
    let (cert, key) = pki.write("live", &first);
    let proxy = TestProxy::start(|config| {
        let mut tls = pki.server_config(ClientAuth::Optional);
        (tls.cert, tls.key, tls.listen) = (cert.clone(), key.clone(), None);
        config.tls = Some(tls);
        // [tls] without a listener of its own: an HTTPS front end uses it.
        config.vault = Some(keymux_proxy::frontend::vault::VaultConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            http: HttpConfig { tls: true, client_auth: Some(ClientAuth::Optional), ..HttpConfig::default() },
            ..Default::default()
        });
    })
    .await;
    let reloader = proxy.server.reloader().expect("[tls] gives a reloader");
    let strict = HttpConfig { tls: true, client_auth: Some(ClientAuth::Optional), ..small() };
    let served = serve(strict, Some(&reloader)).await;
    let me = pki.client_cn("svc-a");
    let tls13 = &rustls::version::TLS13;
    for version in [Version::Http1, Version::Http2] {
        let mut client = HttpClient::connect_tls(served.addr, version, &pki, Some(&me), tls13).await.unwrap();
        let answer = client.send("GET", "/whoami", &[], Vec::new()).await.unwrap();
        assert_eq!(
            (answer.status, answer.text.as_str()),
            (200, "svc-a"),
            "{version:?}: the certificate's identity"
        );
        let mut anonymous = HttpClient::connect_tls(served.addr, version, &pki, None, tls13).await.unwrap();
        let answer = anonymous.send("GET", "/whoami", &[], Vec::new()).await.unwrap();
        assert_eq!(answer.text, "anonymous", "{version:?}: optional client certificates");
    }
    let tls12 = &rustls::version::TLS12;
    assert!(
        HttpClient::connect_tls(served.addr, Version::Http1, &pki, None, tls12).await.is_err(),
        "TLS 1.2 off"
    );
    let lenient =
        HttpConfig { tls: true, allow_tls12: true, client_auth: Some(ClientAuth::Optional), ..small() };
    let served12 = serve(lenient, Some(&reloader)).await;
    let mut client =
        HttpClient::connect_tls(served12.addr, Version::Http1, &pki, Some(&me), tls12).await.unwrap();
    assert_eq!(
        client.send("GET", "/whoami", &[], Vec::new()).await.unwrap().text,
        "svc-a",
        "TLS 1.2 when allowed"
    );

    // A reload reaches every HTTPS listener: this one and the [vault] one.
    assert_eq!(client.served_certificate(), Some(&der_of(&first.cert_pem)));
    let second = pki.server("second");
    pki.write("live", &second);
    proxy.server.reload_certificates().unwrap();
    for addr in [served.addr, served12.addr, proxy.server.vault_addr().unwrap()] {
        let fresh = HttpClient::connect_tls(addr, Version::Http2, &pki, None, tls13).await.unwrap();
        assert_eq!(fresh.served_certificate(), Some(&der_of(&second.cert_pem)), "{addr}");
    }
    let answer = client.send("GET", "/whoami", &[], Vec::new()).await.unwrap();
    assert_eq!(answer.status, 200, "an open connection keeps working");
}
