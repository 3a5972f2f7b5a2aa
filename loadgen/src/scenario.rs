//! What to run, and the closed-loop driver that runs it.
//!
//! `connections` clients, each with one connection, each driving `pipeline` request
//! loops: every loop sends its next request as soon as the previous one is answered, so
//! exactly `connections × pipeline` requests are in flight. After `warmup`, operations
//! that complete during the next `duration` are measured.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use keymux_client::{CallOptions, Client, ClientConfig, Endpoint, TlsConfig};
use serde::{Serialize, Serializer};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::report::Report;
use crate::stats::Recorder;

/// The operation every request performs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Op {
    /// WRAP a key of `--dek-size` bytes.
    Wrap,
    /// UNWRAP blobs made beforehand, cycling through them.
    Unwrap,
    /// GENERATE_DATA_KEY of `--dek-size` bytes.
    GenerateDataKey,
    /// REWRAP blobs made beforehand, cycling through them.
    Rewrap,
}

/// A load test to run.
#[derive(Debug, Clone, Serialize)]
pub struct Scenario {
    /// The proxy to load.
    #[serde(serialize_with = "display")]
    pub target: Endpoint,
    /// Clients, each with its own connection.
    pub connections: usize,
    /// Concurrent request loops per connection.
    pub pipeline: usize,
    /// How long to measure, after the warm-up.
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
    /// How long to run before measuring.
    #[serde(with = "humantime_serde")]
    pub warmup: Duration,
    /// The operation.
    pub op: Op,
    /// Key name for WRAP, GENERATE_DATA_KEY and for making the blobs.
    pub key: String,
    /// Data key size in bytes, for WRAP and GENERATE_DATA_KEY.
    pub dek_size: u16,
    /// For UNWRAP and REWRAP: how many distinct blobs to make first and cycle through.
    pub blobs: usize,
    /// For UNWRAP and REWRAP: ask the proxy to bypass its unwrap cache.
    pub no_cache: bool,
    /// Each request's deadline.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Client retries on retryable failures (0 measures the proxy's raw answers).
    pub retries: u32,
    /// CA, client certificate and server name for tls:// and quic:// targets.
    #[serde(skip)]
    pub tls: Option<TlsConfig>,
}

impl Scenario {
    /// The additional authenticated data every request uses.
    pub const AAD: &'static [u8] = b"keymux-loadgen";

    /// A scenario against `target` with the command line's defaults.
    pub fn new(target: Endpoint) -> Self {
        Self {
            target,
            connections: 4,
            pipeline: 16,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(1),
            op: Op::Wrap,
            key: "default".to_owned(),
            dek_size: 32,
            blobs: 1000,
            no_cache: false,
            timeout: Duration::from_secs(5),
            retries: 0,
            tls: None,
        }
    }

    /// Checks that the scenario can run, naming the first setting that cannot.
    pub fn validate(&self) -> anyhow::Result<()> {
        ensure!(self.connections > 0, "connections must be at least 1");
        ensure!(self.pipeline > 0, "pipeline must be at least 1");
        ensure!(!self.duration.is_zero(), "duration must be greater than zero");
        ensure!(self.dek_size > 0, "dek-size must be at least 1 byte");
        ensure!(!self.timeout.is_zero(), "timeout must be greater than zero");
        ensure!(!self.key.is_empty() && self.key.len() <= 255, "key must be 1 to 255 bytes");
        if matches!(self.op, Op::Unwrap | Op::Rewrap) {
            ensure!(self.blobs > 0, "blobs must be at least 1 for {:?}", self.op);
        }
        Ok(())
    }

    fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new(vec![self.target.clone()]);
        config.connections = 1;
        config.client_name = "keymux-loadgen".to_owned();
        config.default_timeout = self.timeout;
        config.max_retries = self.retries;
        config.tls = self.tls.clone();
        config
    }
}

fn display<T: std::fmt::Display, S: Serializer>(value: &T, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

/// What every request loop shares.
struct Workload {
    op: Op,
    key: String,
    dek_size: u16,
    plaintext: Vec<u8>,
    blobs: Vec<Vec<u8>>,
    next_blob: AtomicUsize,
    options: CallOptions,
}

impl Workload {
    /// Performs one operation.
    async fn run_one(&self, client: &Client) -> keymux_client::Result<()> {
        let aad = Scenario::AAD;
        match self.op {
            Op::Wrap => client.wrap_with(&self.key, aad, &self.plaintext, &self.options).await.map(drop),
            Op::GenerateDataKey => {
                client.generate_data_key_with(&self.key, aad, self.dek_size, &self.options).await.map(drop)
            }
            Op::Unwrap => client.unwrap_with(aad, self.next_blob(), &self.options).await.map(drop),
            Op::Rewrap => client.rewrap_with(aad, self.next_blob(), &self.options).await.map(drop),
        }
    }

    fn next_blob(&self) -> &[u8] {
        let index = self.next_blob.fetch_add(1, Ordering::Relaxed) % self.blobs.len();
        &self.blobs[index]
    }
}

/// Runs `scenario` to completion and reports what it measured.
pub async fn run(scenario: Scenario) -> anyhow::Result<Report> {
    scenario.validate()?;
    let clients = connect_all(&scenario).await?;
    let blobs = match scenario.op {
        Op::Unwrap | Op::Rewrap => make_blobs(&scenario, &clients).await?,
        Op::Wrap | Op::GenerateDataKey => Vec::new(),
    };
    let workload = Arc::new(Workload {
        op: scenario.op,
        key: scenario.key.clone(),
        dek_size: scenario.dek_size,
        // A fixed pattern: the proxy's cost does not depend on the key's value.
        plaintext: (0..scenario.dek_size).map(|i| i as u8).collect(),
        blobs,
        next_blob: AtomicUsize::new(0),
        options: CallOptions::new().with_bypass_cache(scenario.no_cache),
    });

    let started = Instant::now();
    let measure_from = started + scenario.warmup;
    let measure_until = measure_from + scenario.duration;
    let mut loops = JoinSet::new();
    for client in &clients {
        for _ in 0..scenario.pipeline {
            let (client, workload) = (client.clone(), Arc::clone(&workload));
            loops.spawn(request_loop(client, workload, measure_from, measure_until));
        }
    }
    let mut total = Recorder::new();
    while let Some(joined) = loops.join_next().await {
        total.merge(&joined.context("a request loop panicked")?);
    }
    Ok(Report::new(scenario, &total))
}

/// One closed loop: send, wait for the answer, record, repeat until `until`.
async fn request_loop(client: Client, workload: Arc<Workload>, from: Instant, until: Instant) -> Recorder {
    let mut recorder = Recorder::new();
    loop {
        let sent = Instant::now();
        if sent >= until {
            break;
        }
        let result = workload.run_one(&client).await;
        let done = Instant::now();
        // Count what completes inside the measured window.
        if done < from || done > until {
            continue;
        }
        match result {
            Ok(()) => recorder.record_ok(done - sent),
            Err(error) => recorder.record_error(&error),
        }
    }
    recorder
}

async fn connect_all(scenario: &Scenario) -> anyhow::Result<Vec<Client>> {
    let config = scenario.client_config();
    let mut connecting = JoinSet::new();
    for _ in 0..scenario.connections {
        connecting.spawn(Client::connect(config.clone()));
    }
    let mut clients = Vec::with_capacity(scenario.connections);
    while let Some(joined) = connecting.join_next().await {
        clients.push(joined?.with_context(|| format!("cannot connect to {}", scenario.target))?);
    }
    Ok(clients)
}

/// Makes `scenario.blobs` blobs with GENERATE_DATA_KEY, spread over the clients.
async fn make_blobs(scenario: &Scenario, clients: &[Client]) -> anyhow::Result<Vec<Vec<u8>>> {
    const CONCURRENCY: usize = 64;
    let next = Arc::new(AtomicUsize::new(0));
    let mut makers = JoinSet::new();
    for worker in 0..CONCURRENCY.min(scenario.blobs) {
        let client = clients[worker % clients.len()].clone();
        let (next, total, key, dek_size) =
            (Arc::clone(&next), scenario.blobs, scenario.key.clone(), scenario.dek_size);
        makers.spawn(async move {
            let mut blobs = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < total {
                let data_key = client.generate_data_key(&key, Scenario::AAD, dek_size).await?;
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
