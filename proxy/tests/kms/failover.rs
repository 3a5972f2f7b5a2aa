//! Failover between two backends holding the same key material: the primary is
//! reached through a forwarder that the test cuts and restores.
//!
//! Both are endpoints of one moto region, rather than the two regions of a
//! multi-region key: moto 5.2 writes only the first 36 bytes of a key id into its
//! ciphertexts, so ciphertexts of multi-region keys (`mrk-` + 36) never decrypt there.
//! The failover logic does not care which: it sees two endpoints, in order.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use keymux_test_support::forwarder::Forwarder;
use keymux_test_support::metrics::metric;
use keymux_test_support::moto::{Moto, kms_calls, kms_config, start_proxy};
use keymux_test_support::proxy::{TestProxy, client_for};
use keymux_test_support::unique_key;

const PRIMARY: &str = "primary";
const REPLICA: &str = "replica";

/// Encrypts and decrypts the region answered.
async fn served_by(proxy: &TestProxy, region: &str) -> u64 {
    kms_calls(proxy, region, "encrypt").await + kms_calls(proxy, region, "decrypt").await
}

/// Polls until `region` has served more than `than`; returns how long that took.
async fn until_served(proxy: &TestProxy, region: &str, than: u64, limit: Duration) -> Duration {
    let started = Instant::now();
    while served_by(proxy, region).await <= than {
        assert!(started.elapsed() < limit, "{region} served nothing new within {limit:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    started.elapsed()
}

#[tokio::test]
async fn work_moves_to_the_replica_and_back_losing_nothing() {
    let moto = Moto::shared();
    let primary = Forwarder::start(moto.addr);
    let mut kms = kms_config(&[("us-east-1", primary.endpoint()), ("us-east-1", moto.endpoint())]);
    kms.regions[0].name = Some(PRIMARY.into());
    kms.regions[1].name = Some(REPLICA.into());
    kms.failure_threshold = 2;
    let proxy = start_proxy(kms, |config| config.cache.enabled = false).await;
    let key = unique_key("failover");
    proxy.create_key(&key);
    let client = Arc::new(client_for(&proxy).await);
    let blob = client.wrap(&key, b"f", &[5; 32]).await.unwrap();

    // Load: wraps and unwraps (5 s deadlines), every outcome checked.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let load: Vec<_> = (0..8)
        .map(|task| {
            let (client, key, blob) = (Arc::clone(&client), key.clone(), blob.clone());
            let (stop, done) = (Arc::clone(&stop), Arc::clone(&done));
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    if task % 2 == 0 {
                        let fresh = client.wrap(&key, b"w", &[6; 32]).await.expect("no wrap is lost");
                        assert_eq!(
                            client.unwrap(b"w", &fresh).await.expect("no unwrap is lost").expose(),
                            &[6; 32]
                        );
                    } else {
                        assert_eq!(
                            client.unwrap(b"f", &blob).await.expect("no unwrap is lost").expose(),
                            &[5; 32]
                        );
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(served_by(&proxy, REPLICA).await, 0, "the primary serves while healthy");

    primary.cut();
    let moved = until_served(&proxy, REPLICA, 0, Duration::from_secs(1)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let open = metric(&proxy.scrape().await, &format!("keymux_kms_circuit_open{{backend=\"{PRIMARY}\"}}"));
    assert_eq!(open, 1.0, "the primary's circuit opened");

    let on_primary = served_by(&proxy, PRIMARY).await;
    primary.restore();
    let back = until_served(&proxy, PRIMARY, on_primary, Duration::from_secs(5)).await;
    // Once the circuit closed, the replica gets nothing more.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let on_replica = served_by(&proxy, REPLICA).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(served_by(&proxy, REPLICA).await, on_replica, "traffic returned to the primary");

    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    eprintln!(
        "failover: moved to the replica {moved:?} after the cut, back {back:?} after the restore; {} operations, none lost",
        done.load(Ordering::Relaxed)
    );
}
