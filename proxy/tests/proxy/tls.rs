//! TLS 1.3 over TCP: round trips and pipelining through the SDK, TLS 1.2 refused,
//! mutual TLS, certificate reload, and the slow-client timeouts.

use std::sync::Arc;
use std::time::Duration;

use keymux_proxy::config::ClientAuth;
use keymux_test_support::certs::{Issued, Pki, Subject, der_of, raw_tls, sdk_client};
use keymux_test_support::metrics::metric;
use keymux_test_support::proxy::{TestProxy, every_op_then_pipelined};
use keymux_test_support::raw::raw_frame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The certificate new connections get, polled (up to 2 s) until it is `expected`'s.
async fn served_after_reload(
    addr: std::net::SocketAddr,
    pki: &Pki,
    me: &Issued,
    expected: &Issued,
) -> rustls_pki_types::CertificateDer<'static> {
    let mut served = raw_tls(addr, pki, Some(me), &rustls::version::TLS13).await.unwrap();
    for _ in 0..100 {
        if served == der_of(&expected.cert_pem) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        served = raw_tls(addr, pki, Some(me), &rustls::version::TLS13).await.unwrap();
    }
    served
}

#[tokio::test]
async fn round_trips_and_pipelining_over_tls_with_a_client_certificate() {
    let pki = Pki::new("ca");
    let proxy = TestProxy::start(|config| pki.enable(config)).await;
    let me = pki.client_cn("svc-a");
    let client = Arc::new(sdk_client(proxy.tls_endpoint(), pki.client_tls(Some(&me)), 1).await.unwrap());
    every_op_then_pipelined(client, 16, 3, 7).await;
}

#[tokio::test]
async fn a_tls_1_2_client_is_refused() {
    let pki = Pki::new("ca");
    let proxy = TestProxy::start(|config| pki.enable(config)).await;
    let me = pki.client_cn("svc-a");
    let addr = proxy.server.tls_addr().unwrap();
    raw_tls(addr, &pki, Some(&me), &rustls::version::TLS13).await.expect("TLS 1.3 works");
    let refused = raw_tls(addr, &pki, Some(&me), &rustls::version::TLS12).await;
    assert!(refused.is_err(), "TLS 1.2 must be refused");
}

#[tokio::test]
async fn mutual_tls_refuses_missing_foreign_and_expired_certificates() {
    let pki = Pki::new("ca");
    let other = Pki::new("another ca");
    let audit = tempfile::tempdir().unwrap();
    let audit_path = audit.path().join("audit.jsonl");
    let proxy = TestProxy::start(|config| {
        pki.enable(config);
        config.audit.path = Some(audit_path.clone());
    })
    .await;
    let endpoint = proxy.tls_endpoint();

    let refused = [
        ("no certificate", pki.client_tls(None)),
        ("another CA", pki.client_tls(Some(&other.client_cn("svc-a")))),
        (
            "expired",
            pki.client_tls(Some(&pki.client(Subject { cn: "svc-a", expired: true, ..Subject::default() }))),
        ),
    ];
    for (case, tls) in refused {
        let result = sdk_client(endpoint.clone(), tls, 1).await;
        assert!(result.is_err(), "{case}: the client was let in");
    }
    let good = sdk_client(endpoint, pki.client_tls(Some(&pki.client_cn("svc-a"))), 1).await.unwrap();
    good.ping().await.unwrap();

    proxy.server.audit().sync();
    let log = std::fs::read_to_string(&audit_path).unwrap();
    // Three from one host within a second: the first written, the others counted in a
    // `repeated` summary.
    assert_eq!(keymux_test_support::audit::events(&log, "handshake_failed"), 3, "{log}");
    assert_eq!(metric(&proxy.scrape().await, "keymux_failed_handshakes_total"), 3.0);
    assert_eq!(
        keymux_proxy::audit::verify(&audit_path).unwrap().unwrap().records,
        log.lines().count() as u64
    );
}

#[tokio::test]
async fn optional_client_auth_serves_anonymous_clients() {
    let pki = Pki::new("ca");
    let proxy = TestProxy::start(|config| config.tls = Some(pki.server_config(ClientAuth::Optional))).await;
    let client = sdk_client(proxy.tls_endpoint(), pki.client_tls(None), 1).await.unwrap();
    client.ping().await.unwrap();
    let other = Pki::new("another ca");
    let foreign = sdk_client(proxy.tls_endpoint(), pki.client_tls(Some(&other.client_cn("x"))), 1).await;
    assert!(foreign.is_err(), "a certificate that is presented must still verify");
}

#[tokio::test]
async fn a_reloaded_certificate_serves_new_connections_while_old_ones_keep_working() {
    let pki = Pki::new("ca");
    let first = pki.server("first");
    let (cert, key) = pki.write("live", &first);
    let proxy = TestProxy::start(|config| {
        let mut tls = pki.server_config(ClientAuth::Required);
        tls.cert = cert.clone();
        tls.key = key.clone();
        tls.reload_interval = Duration::from_millis(50);
        config.tls = Some(tls);
    })
    .await;
    let addr = proxy.server.tls_addr().unwrap();
    let me = pki.client_cn("svc-a");
    let old = sdk_client(proxy.tls_endpoint(), pki.client_tls(Some(&me)), 1).await.unwrap();
    old.ping().await.unwrap();
    assert_eq!(
        raw_tls(addr, &pki, Some(&me), &rustls::version::TLS13).await.unwrap(),
        der_of(&first.cert_pem)
    );

    // The files change: picked up by the poll.
    let second = pki.server("second");
    pki.write("live", &second);
    let served = served_after_reload(addr, &pki, &me, &second).await;
    assert_eq!(served, der_of(&second.cert_pem), "new connections get the new certificate");
    // The same connection (no retries, one connection) still works.
    let blob = old.wrap("default", b"", &[1; 32]).await.unwrap();
    assert_eq!(old.unwrap(b"", &blob).await.unwrap().expose(), &[1; 32]);

    // An explicit reload (what SIGHUP does); a broken key keeps the current certificate.
    let third = pki.server("third");
    pki.write("live", &third);
    proxy.server.reload_certificates().unwrap();
    assert_eq!(
        raw_tls(addr, &pki, Some(&me), &rustls::version::TLS13).await.unwrap(),
        der_of(&third.cert_pem)
    );
    std::fs::write(&key, "not a key").unwrap();
    assert!(proxy.server.reload_certificates().is_err());
    assert_eq!(
        raw_tls(addr, &pki, Some(&me), &rustls::version::TLS13).await.unwrap(),
        der_of(&third.cert_pem)
    );
    old.ping().await.unwrap();
}

/// The connection clock ticks every quarter of the shortest timeout, at the earliest
/// every 5 ms: it notes a partial frame, or the last activity, on one tick and closes on
/// the first tick past the timeout, so a close comes at most two ticks after the
/// timeout. Scheduling on a loaded 2-core runner may add to that; 150 ms is allowed.
const CLOCK_SLACK: Duration = Duration::from_millis(150);

#[tokio::test]
async fn a_slowloris_client_is_dropped_at_the_frame_deadline_while_others_are_served() {
    const FRAME_TIMEOUT: Duration = Duration::from_millis(300);
    let proxy = TestProxy::start(|config| config.server.frame_timeout = FRAME_TIMEOUT).await;
    let slow = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    let (mut reader, mut writer) = slow.into_split();
    let frame = raw_frame(1, 0x10, 0, 1, &[]);
    // The length and a few bytes, then a byte every 100 ms: never a whole frame in time.
    let started = std::time::Instant::now();
    writer.write_all(&frame[..6]).await.unwrap();
    let trickle = tokio::spawn(async move {
        for &byte in &frame[6..] {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if writer.write_all(&[byte]).await.is_err() {
                return;
            }
        }
    });
    let mut other = proxy.connect().await;
    let closed = tokio::spawn(async move {
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(5), reader.read(&mut buf)).await;
        (read.expect("the slow client was still connected after 5 s"), started.elapsed())
    });
    while !closed.is_finished() {
        other.ping().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (read, after) = closed.await.unwrap();
    assert!(matches!(read, Ok(0) | Err(_)), "the slow client was dropped, not answered: {read:?}");
    // Two ticks of 75 ms (a quarter of 300 ms) past the deadline at most.
    let latest = FRAME_TIMEOUT + Duration::from_millis(150) + CLOCK_SLACK;
    assert!(
        after >= FRAME_TIMEOUT && after <= latest,
        "dropped after {after:?}, not within {FRAME_TIMEOUT:?}..{latest:?}"
    );
    assert_eq!(metric(&proxy.scrape().await, "keymux_timed_out_connections_total"), 1.0);
    trickle.abort();
    other.ping().await;
}

#[tokio::test]
async fn idle_connections_and_stalled_handshakes_are_closed() {
    const TIMEOUT: Duration = Duration::from_millis(200);
    let pki = Pki::new("ca");
    let proxy = TestProxy::start(|config| {
        pki.enable(config);
        config.server.idle_timeout = TIMEOUT;
        config.server.handshake_timeout = TIMEOUT;
    })
    .await;
    let mut idle = proxy.connect().await;
    // The idle time runs from when the proxy read the PING, which is after `sent`.
    let sent = std::time::Instant::now();
    idle.ping().await;
    let closed = tokio::time::timeout(Duration::from_secs(5), idle.recv()).await;
    assert!(closed.expect("still open after 5 s").is_none(), "an idle connection is closed");
    let after = sent.elapsed();
    // Two ticks of 50 ms (a quarter of 200 ms) past the idle timeout at most.
    let latest = TIMEOUT + Duration::from_millis(100) + CLOCK_SLACK;
    assert!(
        after >= TIMEOUT && after <= latest,
        "closed after {after:?} idle, not within {TIMEOUT:?}..{latest:?}"
    );

    let mut stalled = tokio::net::TcpStream::connect(proxy.server.tls_addr().unwrap()).await.unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0u8; 16];
    let read =
        tokio::time::timeout(Duration::from_secs(2), stalled.read(&mut buf)).await.expect("closed in time");
    assert!(matches!(read, Ok(0) | Err(_)), "a client that never says hello is dropped");
    let after = started.elapsed();
    assert!(after >= TIMEOUT && after <= TIMEOUT + CLOCK_SLACK, "dropped after {after:?} of handshake");
}

#[tokio::test]
async fn the_binary_reloads_certificates_on_sighup_and_audits_it() {
    use std::io::BufRead;
    let pki = Pki::new("ca");
    let first = pki.server("first");
    let (cert, key) = pki.write("binary", &first);
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let config = dir.path().join("keymux.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nenabled = false\n\
             [tls]\nlisten = \"127.0.0.1:0\"\ncert = {cert:?}\nkey = {key:?}\nclient_ca = {ca:?}\nreload_interval = \"0s\"\n\
             [audit]\npath = {audit:?}\n\
             [backend]\ntype = \"soft\"\ndata_dir = {data:?}\npassphrase = {{ env = \"KEYMUX_TEST_PASSPHRASE\" }}\n\
             create_if_missing = true\nkdf_memory_kib = 8192\nkdf_passes = 1\n",
            ca = pki.ca_path(),
            data = dir.path().join("data"),
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_keymux"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("KEYMUX_TEST_PASSPHRASE", "test passphrase")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut banner = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut tls_addr = None;
    for _ in 0..6 {
        let mut line = String::new();
        banner.read_line(&mut line).unwrap();
        if let Some(rest) = line.trim().strip_prefix("also on tls://") {
            tls_addr = Some(rest.split_whitespace().next().unwrap().parse().unwrap());
            break;
        }
    }
    let addr = tls_addr.expect("the banner names the TLS address");
    // A SIGHUP as soon as the banner is out is handled (it reloads the same files), not
    // fatal: the handler is in place before the banner says the proxy is up.
    let hup = std::process::Command::new("kill").args(["-HUP", &child.id().to_string()]).status().unwrap();
    assert!(hup.success());
    let me = pki.client_cn("svc-a");
    assert_eq!(
        raw_tls(addr, &pki, Some(&me), &rustls::version::TLS13).await.unwrap(),
        der_of(&first.cert_pem)
    );

    let second = pki.server("second");
    pki.write("binary", &second);
    let hup = std::process::Command::new("kill").args(["-HUP", &child.id().to_string()]).status().unwrap();
    assert!(hup.success());
    let served = served_after_reload(addr, &pki, &me, &second).await;
    assert_eq!(served, der_of(&second.cert_pem), "SIGHUP reloaded the certificate");

    let term = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(term.success());
    for _ in 0..500 {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = child.try_wait().unwrap().expect("keymux stopped after SIGTERM");
    assert!(status.success());
    let log = std::fs::read_to_string(&audit).unwrap();
    assert!(log.lines().any(|l| l.contains("\"action\":\"cert_reload\"") && l.contains("sighup")), "{log}");
    assert!(log.lines().last().unwrap().contains("\"action\":\"stop\""), "{log}");
    keymux_proxy::audit::verify(&audit).unwrap().unwrap();
}
