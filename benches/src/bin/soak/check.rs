//! The checking clients: every answer is verified, every failure counted.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use keymux_client::Client;

use crate::setup::{Cluster, KEY};

/// What the clients saw.
struct Tally {
    /// Calls answered correctly.
    ok: AtomicU64,
    /// Answers that were wrong: a DEK back that is not the one sent, or a blob that
    /// unwrapped under the wrong AAD.
    wrong: AtomicU64,
    /// Calls that failed, by error.
    failed: Mutex<BTreeMap<String, u64>>,
    /// Call latencies, in microseconds.
    latency: Mutex<Histogram<u64>>,
}

/// The running clients.
pub(crate) struct Checker {
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    monitor: tokio::task::JoinHandle<Duration>,
    started: Instant,
}

/// The checkers' findings.
pub(crate) struct Report {
    pub(crate) ok: u64,
    pub(crate) wrong: u64,
    pub(crate) lost: u64,
    pub(crate) failed: BTreeMap<String, u64>,
    pub(crate) p50: Duration,
    pub(crate) p99: Duration,
    pub(crate) longest_call: Duration,
    pub(crate) longest_stall: Duration,
    pub(crate) ran: Duration,
}

impl Report {
    /// The figures, in one paragraph.
    pub(crate) fn summary(&self, planned: Duration) -> String {
        format!(
            "soak of {} (planned {}): {} operations checked, {} wrong answers, {} lost operations {:?}; \
             call latency p50 {:?}, p99 {:?}, longest {:?}; longest stall (no call completing) {:?}",
            humantime::format_duration(Duration::from_secs(self.ran.as_secs())),
            humantime::format_duration(planned),
            self.ok,
            self.wrong,
            self.lost,
            self.failed,
            self.p50,
            self.p99,
            self.longest_call,
            self.longest_stall,
        )
    }
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).expect("the OS has randomness");
    bytes
}

impl Tally {
    fn record(&self, started: Instant, outcome: Result<bool, keymux_client::Error>) {
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let _ = self.latency.lock().unwrap().record(micros.max(1));
        match outcome {
            Ok(true) => self.ok.fetch_add(1, Ordering::Relaxed),
            Ok(false) => self.wrong.fetch_add(1, Ordering::Relaxed),
            Err(error) => {
                *self.failed.lock().unwrap().entry(error.to_string()).or_default() += 1;
                0
            }
        };
    }
}

/// One client's loop: wrap then unwrap a random DEK under a random AAD; every eighth
/// round a GENERATE_DATA_KEY then its unwrap; every sixteenth, an unwrap under the wrong
/// AAD, which must fail.
async fn check_loop(client: Arc<Client>, tally: Arc<Tally>, stop: Arc<AtomicBool>) {
    let mut round = 0u64;
    while !stop.load(Ordering::Relaxed) {
        round += 1;
        let (dek, aad) = (random_bytes::<32>(), random_bytes::<12>());
        let started = Instant::now();
        let outcome = async {
            let blob = client.wrap(KEY, &aad, &dek).await?;
            Ok(client.unwrap(&aad, &blob).await?.expose() == dek)
        }
        .await;
        tally.record(started, outcome);
        if round.is_multiple_of(8) {
            let started = Instant::now();
            let outcome = async {
                let key = client.generate_data_key(KEY, &aad, 32).await?;
                Ok(client.unwrap(&aad, &key.blob).await?.expose() == key.plaintext.expose())
            }
            .await;
            tally.record(started, outcome);
        }
        if round.is_multiple_of(16) {
            let started = Instant::now();
            let outcome = async {
                let blob = client.wrap(KEY, &aad, &dek).await?;
                match client.unwrap(b"another context", &blob).await {
                    Err(keymux_client::Error::Integrity { .. }) => Ok(true),
                    Err(other) => Err(other),
                    Ok(_) => Ok(false),
                }
            }
            .await;
            tally.record(started, outcome);
        }
    }
}

impl Checker {
    /// Starts `clients` checking loops, over four SDK clients.
    pub(crate) async fn start(cluster: &Cluster, clients: usize) -> anyhow::Result<Self> {
        let tally = Arc::new(Tally {
            ok: AtomicU64::new(0),
            wrong: AtomicU64::new(0),
            failed: Mutex::default(),
            latency: Mutex::new(Histogram::new_with_bounds(1, 600_000_000, 3)?),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let mut sdks = Vec::new();
        for _ in 0..4 {
            sdks.push(Arc::new(cluster.client().await?));
        }
        let tasks = (0..clients)
            .map(|i| {
                tokio::spawn(check_loop(
                    Arc::clone(&sdks[i % sdks.len()]),
                    Arc::clone(&tally),
                    Arc::clone(&stop),
                ))
            })
            .collect();
        let monitor = tokio::spawn(longest_stall(Arc::clone(&tally), Arc::clone(&stop)));
        Ok(Self { tally, stop, tasks, monitor, started: Instant::now() })
    }

    /// Stops the clients (each finishes its round) and reports.
    pub(crate) async fn stop(self) -> Report {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            let _ = task.await;
        }
        let longest_stall = self.monitor.await.unwrap_or_default();
        let latency = self.tally.latency.lock().unwrap();
        let failed = self.tally.failed.lock().unwrap().clone();
        Report {
            ok: self.tally.ok.load(Ordering::Relaxed),
            wrong: self.tally.wrong.load(Ordering::Relaxed),
            // Every call had a 5 s deadline and two proxies, never both down at once:
            // each failure is an operation lost although a retry had room.
            lost: failed.values().sum(),
            failed,
            p50: Duration::from_micros(latency.value_at_quantile(0.5)),
            p99: Duration::from_micros(latency.value_at_quantile(0.99)),
            longest_call: Duration::from_micros(latency.max()),
            longest_stall,
            ran: self.started.elapsed(),
        }
    }
}

/// The longest time in which no call completed, sampled every 10 ms.
async fn longest_stall(tally: Arc<Tally>, stop: Arc<AtomicBool>) -> Duration {
    let count = || tally.ok.load(Ordering::Relaxed) + tally.wrong.load(Ordering::Relaxed);
    let (mut last, mut since, mut longest) = (count(), Instant::now(), Duration::ZERO);
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let now = count();
        if now != last {
            longest = longest.max(since.elapsed());
            (last, since) = (now, Instant::now());
        }
    }
    longest
}
