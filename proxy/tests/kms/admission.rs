//! Admission control: with a low configured rate, the KMS server never sees more than
//! that rate, and clients wait within their deadline or get BUSY.

use std::sync::Arc;
use std::time::{Duration, Instant};

use keymux_client::{CallOptions, Error};

use crate::forwarder::Forwarder;
use crate::hsm_token::{client_for, unique_key};
use crate::moto::{Moto, create_key, kms_config, start_proxy};

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
    create_key(&proxy, &key);
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
    let (mut ok, mut busy) = (0, 0);
    for call in futures_util::future::join_all(calls).await {
        let (outcome, took) = call.unwrap();
        match outcome {
            Ok(_) => {
                ok += 1;
                assert!(took < deadline + Duration::from_millis(500), "waited within its deadline: {took:?}");
            }
            Err(Error::Busy { .. } | Error::Timeout { .. }) => busy += 1,
            Err(error) => panic!("unexpected {error}"),
        }
    }
    let elapsed = started.elapsed();

    let seen: Vec<Instant> = forwarder.requests()[setup..].to_vec();
    assert_eq!(seen.len(), ok, "one Encrypt per successful wrap");
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
    eprintln!("admission: {ok} ok, {busy} busy in {elapsed:?}; at most {most} KMS requests in any second");
}
