//! Admission control: with a low configured rate, the KMS server never sees more than
//! that rate, and clients wait within their deadline or get BUSY.

use std::sync::Arc;
use std::time::{Duration, Instant};

use keymux_client::{CallOptions, Error};
use keymux_test_support::forwarder::Forwarder;
use keymux_test_support::metrics::{metric, metric_sum};
use keymux_test_support::moto::{Moto, kms_config, start_proxy};
use keymux_test_support::proxy::client_for;
use keymux_test_support::unique_key;

const RATE: f64 = 20.0;
const BURST: u32 = 5;

#[tokio::test]
async fn the_server_never_sees_more_than_the_configured_rate() {
    let forwarder = Forwarder::start(Moto::shared().addr);
    let mut kms = kms_config(&[("us-east-1", forwarder.endpoint())]);
    kms.rate = RATE;
    kms.burst = BURST;
    let proxy = start_proxy(kms, |config| config.cache.enabled = false).await;
    let key = unique_key("admission");
    proxy.create_key(&key);
    let client = Arc::new(client_for(&proxy).await);
    let setup = forwarder.requests().len();

    // 150 wraps at once, each with a 1 s deadline: about burst + rate fit.
    let deadline = Duration::from_secs(1);
    let started = Instant::now();
    let calls = (0..150).map(|_| {
        let (client, key) = (Arc::clone(&client), key.clone());
        tokio::spawn(async move {
            let mut options = CallOptions::new();
            options.timeout = Some(deadline);
            let began = Instant::now();
            (client.wrap_with(&key, b"", &[2; 32], &options).await, began.elapsed())
        })
    });
    let (mut ok, mut busy, mut late) = (0, 0, 0);
    for call in futures_util::future::join_all(calls).await {
        let (outcome, took) = call.unwrap();
        match outcome {
            Ok(_) => {
                ok += 1;
                assert!(took < deadline + Duration::from_millis(500), "waited within its deadline: {took:?}");
            }
            Err(Error::Busy { .. } | Error::Timeout { .. }) => busy += 1,
            Err(Error::DeadlineExceeded) => late += 1,
            Err(error) => panic!("unexpected {error}"),
        }
    }
    let elapsed = started.elapsed();

    let seen: Vec<Instant> = forwarder.requests()[setup..].to_vec();
    assert!(seen.len() >= ok, "one Encrypt per successful wrap: {} for {ok}", seen.len());
    // In any one-second window: at most the burst plus a second's worth of the rate
    // (and a little slack for requests the runtime delayed into the window).
    let most = seen
        .iter()
        .map(|start| seen.iter().filter(|t| **t >= *start && **t < *start + Duration::from_secs(1)).count())
        .max()
        .unwrap_or(0);
    let bound = f64::from(BURST) + RATE + 3.0;
    assert!(most as f64 <= bound, "{most} requests in one second (bound {bound})");
    assert!(ok >= BURST as usize && busy > 0, "{ok} ok, {busy} busy");
    // Admission leaves room for the call before the deadline; only a KMS call far slower
    // than usual (a loaded machine) answers a client after its deadline.
    assert!(late <= 3, "{late} answers came after the client's deadline");
    eprintln!(
        "admission: {ok} ok, {busy} busy, {late} late in {elapsed:?}; at most {most} KMS requests in any second"
    );
}

#[tokio::test]
async fn throttling_shrinks_the_rate_and_retries_within_the_deadline() {
    let forwarder = Forwarder::start(Moto::shared().addr);
    let mut kms = kms_config(&[("us-east-1", forwarder.endpoint())]);
    kms.rate = 100.0;
    kms.backoff = Duration::from_millis(10);
    kms.max_retries = 4;
    let proxy = start_proxy(kms, |config| config.cache.enabled = false).await;
    let key = unique_key("throttled");
    proxy.create_key(&key);
    let client = client_for(&proxy).await;

    // Three throttled attempts, then KMS answers: the wrap succeeds after retries.
    forwarder.throttle_next(3);
    let blob = client.wrap(&key, b"t", &[3; 32]).await.unwrap();
    assert_eq!(client.unwrap(b"t", &blob).await.unwrap().expose(), &[3; 32]);
    let page = proxy.scrape().await;
    assert_eq!(metric(&page, "keymux_kms_throttles_total{backend=\"us-east-1\"}"), 3.0);
    assert!(metric(&page, "keymux_kms_retries_total{backend=\"us-east-1\"}") >= 3.0);
    let rate = metric(&page, "keymux_kms_admission_rate{backend=\"us-east-1\"}");
    assert!(rate < 100.0, "throttling shrank the rate: {rate}");

    // Throttled past its retries: BUSY, well within the deadline.
    forwarder.throttle_next(1000);
    let started = Instant::now();
    let error = client.wrap(&key, b"t", &[3; 32]).await.unwrap_err();
    assert!(matches!(error, Error::Busy { .. }), "{error}");
    assert!(started.elapsed() < Duration::from_secs(4), "within the 5 s deadline: {:?}", started.elapsed());
    let throttled = metric_sum(
        &proxy.scrape().await,
        "keymux_kms_calls_total{backend=\"us-east-1\",call=\"encrypt\",outcome=\"throttled\"",
    );
    assert_eq!(throttled, 3.0 + 5.0, "one attempt and max_retries retries");
}
