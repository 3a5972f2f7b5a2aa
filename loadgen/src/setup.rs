//! What a run makes before it measures: the blobs that UNWRAP and REWRAP cycle
//! through, and the signatures that VERIFY checks.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, bail};
use futures_util::StreamExt;
use keymux_client::{Client, Signature};
use tokio::task::JoinSet;

use crate::scenario::{Scenario, new_rng};
use crate::workload::Workload;

/// Makes `scenario.blobs` blobs with GENERATE_DATA_KEY, spread over the clients, their
/// keys drawn from the workload's key distribution.
pub(crate) async fn make_blobs(
    scenario: &Scenario,
    clients: &[Client],
    workload: &Workload,
) -> anyhow::Result<Vec<Vec<u8>>> {
    const CONCURRENCY: usize = 64;
    let next = Arc::new(AtomicUsize::new(0));
    let mut makers = JoinSet::new();
    for worker in 0..CONCURRENCY.min(scenario.blobs) {
        let client = clients[worker % clients.len()].clone();
        let mut rng = new_rng();
        let keys: Vec<String> = (0..scenario.blobs).map(|_| workload.pick_key(&mut rng).to_owned()).collect();
        let (next, total, dek_size) = (Arc::clone(&next), scenario.blobs, scenario.dek_size);
        makers.spawn(async move {
            let mut blobs = Vec::new();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= total {
                    break;
                }
                let data_key = client.generate_data_key(&keys[index], Scenario::AAD, dek_size).await?;
                blobs.push(data_key.blob);
            }
            Ok::<_, keymux_client::Error>(blobs)
        });
    }
    let mut blobs = Vec::with_capacity(scenario.blobs);
    while let Some(joined) = makers.join_next().await {
        blobs.extend(joined?.context("cannot make blobs with GENERATE_DATA_KEY")?);
    }
    if blobs.len() != scenario.blobs {
        bail!("made {} blobs, wanted {}", blobs.len(), scenario.blobs);
    }
    Ok(blobs)
}

/// Signs the workload's message once with each signing key, for VERIFY to check over
/// and over; in key order, spread over the clients.
pub(crate) async fn make_signatures(
    clients: &[Client],
    workload: &Workload,
) -> anyhow::Result<Vec<Signature>> {
    const CONCURRENCY: usize = 64;
    let signing = workload.sign_keys.iter().enumerate().map(|(index, key)| {
        let client = &clients[index % clients.len()];
        async move {
            client.sign(key, workload.message()).await.with_context(|| {
                format!("cannot sign with {key:?} to make the signature VERIFY checks (is it a signing key?)")
            })
        }
    });
    futures_util::stream::iter(signing).buffered(CONCURRENCY).collect::<Vec<_>>().await.into_iter().collect()
}
