//! The KMS server is killed: requests fail fast, the circuit opens, and service
//! returns by itself once the server is back.

use std::time::{Duration, Instant};

use keymux_client::Error;
use keymux_test_support::metrics::metric;
use keymux_test_support::moto::{Moto, kms_config, start_proxy};
use keymux_test_support::proxy::client_for;
use keymux_test_support::unique_key;

#[tokio::test]
async fn a_killed_server_fails_fast_opens_the_circuit_and_service_returns() {
    let mut moto = Moto::start();
    let proxy = start_proxy(kms_config(&[("us-east-1", moto.endpoint())]), |_| {}).await;
    let key = unique_key("killed");
    proxy.create_key(&key);
    let client = client_for(&proxy).await;
    client.wrap(&key, b"", &[1; 32]).await.unwrap();
    let open = "keymux_kms_circuit_open{backend=\"us-east-1\"}";
    assert_eq!(metric(&proxy.scrape().await, open), 0.0);

    moto.kill();
    let mut slowest = Duration::ZERO;
    for _ in 0..10 {
        let started = Instant::now();
        let error = client.wrap(&key, b"", &[1; 32]).await.unwrap_err();
        assert!(matches!(error, Error::BackendUnavailable { .. }), "{error}");
        slowest = slowest.max(started.elapsed());
    }
    // The client's deadline is 5 s; a failing request retries with backoff until the
    // circuit opens (a few tens of ms here), then fails at once.
    assert!(slowest < Duration::from_secs(1), "fails fast, well under the deadline: {slowest:?}");
    assert_eq!(metric(&proxy.scrape().await, open), 1.0, "the circuit opened");

    // moto keeps keys in memory: the restarted server needs the key made again.
    moto.restart();
    proxy.create_key(&key);
    let back = Instant::now();
    loop {
        match client.wrap(&key, b"", &[1; 32]).await {
            Ok(_) => break,
            Err(error) if error.is_retryable() && back.elapsed() < Duration::from_secs(10) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(error) => panic!("service did not return: {error}"),
        }
    }
    assert_eq!(metric(&proxy.scrape().await, open), 0.0, "a probe closed the circuit");
    eprintln!("killed server: slowest failure {slowest:?}, service back after {:?}", back.elapsed());
}
