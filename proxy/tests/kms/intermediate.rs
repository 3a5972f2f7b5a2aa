//! Intermediate mode: thousands of wraps cost a KMS call per epoch, and so do the
//! unwraps after a restart.

use std::sync::Arc;

use keymux_test_support::metrics::{metric, metric_sum};
use keymux_test_support::moto::{Moto, kms_calls, kms_config, start_proxy};
use keymux_test_support::proxy::{TestProxy, client_for};
use keymux_test_support::unique_key;

const WRAPS: usize = 10_000;
const TASKS: usize = 32;

/// Every KMS call the proxy's backend made, answered or not, from its metrics.
async fn all_kms_calls(proxy: &TestProxy) -> f64 {
    metric_sum(&proxy.scrape().await, "keymux_kms_calls_total{")
}

#[tokio::test]
async fn ten_thousand_wraps_cost_a_call_per_epoch_and_so_do_unwraps_after_a_restart() {
    let mut kms = kms_config(&[("us-east-1", Moto::shared().endpoint())]);
    kms.intermediate.keys = vec!["bulk-*".into()];
    kms.intermediate.max_uses = 4_000;
    let proxy = start_proxy(kms.clone(), |_| {}).await;
    let key = unique_key("bulk");
    proxy.create_key(&key);
    let client = Arc::new(client_for(&proxy).await);
    let before = all_kms_calls(&proxy).await;

    let tasks = (0..TASKS).map(|task| {
        let (client, key) = (Arc::clone(&client), key.clone());
        tokio::spawn(async move {
            let mut blobs = Vec::new();
            for i in (task..WRAPS).step_by(TASKS) {
                let dek = (i as u32).to_be_bytes().repeat(8);
                let aad = format!("row-{i}");
                blobs.push((client.wrap(&key, aad.as_bytes(), &dek).await.unwrap(), aad, dek));
            }
            blobs
        })
    });
    let blobs: Vec<_> =
        futures_util::future::join_all(tasks).await.into_iter().flat_map(Result::unwrap).collect();
    assert_eq!(blobs.len(), WRAPS);
    let calls = all_kms_calls(&proxy).await - before;
    let epochs = kms_calls(&proxy, "us-east-1", "generate_data_key").await;
    assert_eq!(epochs, 3, "10,000 wraps at 4,000 uses per epoch");
    assert_eq!(calls, 3.0, "the GenerateDataKey of each epoch, nothing else");
    assert_eq!(metric(&proxy.scrape().await, "keymux_kms_intermediate_epochs_total"), 3.0);
    proxy.server.shutdown().await;

    // A new proxy: nothing cached. Unwrapping every blob costs one Decrypt per epoch.
    let restarted = start_proxy(kms, |_| {}).await;
    restarted.server.refresh_keys().unwrap();
    let client = Arc::new(client_for(&restarted).await);
    let blobs = Arc::new(blobs);
    let tasks = (0..TASKS).map(|task| {
        let (client, blobs) = (Arc::clone(&client), Arc::clone(&blobs));
        tokio::spawn(async move {
            for (blob, aad, dek) in blobs.iter().skip(task).step_by(TASKS) {
                assert_eq!(client.unwrap(aad.as_bytes(), blob).await.unwrap().expose(), &dek[..]);
            }
        })
    });
    futures_util::future::join_all(tasks).await.into_iter().for_each(Result::unwrap);
    assert_eq!(kms_calls(&restarted, "us-east-1", "decrypt").await, epochs, "one Decrypt per epoch");
    let page = restarted.scrape().await;
    assert_eq!(metric(&page, "keymux_kms_intermediate_cache_misses_total"), epochs as f64);
    assert_eq!(metric(&page, "keymux_kms_intermediate_cache_hits_total"), (WRAPS as u64 - epochs) as f64);
    let wrong = client.unwrap(b"not the aad", &blobs[0].0).await.unwrap_err();
    assert!(matches!(wrong, keymux_client::Error::Integrity { .. }), "{wrong}");
}
