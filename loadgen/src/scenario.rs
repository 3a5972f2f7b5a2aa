//! What to run, and the drivers that run it.
//!
//! Closed loop (the default): `connections` clients, each with one connection that
//! keeps `pipeline` requests in flight, sending the next as soon as one is answered, so
//! exactly `connections × pipeline` requests are in flight.
//!
//! Open loop (`rate`): requests are issued at a fixed rate whatever the answers do, and
//! each latency runs from the request's intended send time (coordinated omission
//! corrected).
//!
//! Either way, the operations *issued* during `duration` after `warmup` are measured
//! (in the open loop: those whose intended send time falls in it), however late they
//! finish: a slow answer at the end of the window counts, so the tail is not shaved.
//! The run waits for every one of them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, ensure};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use keymux_client::{Client, ClientConfig, Endpoint, TlsConfig};
use keymux_proxy::keys::KeyType;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use serde::{Serialize, Serializer};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::raw::RawLoop;
use crate::report::{OpenLoopStats, Report};
use crate::stats::Recorder;
pub use crate::workload::{Mix, Op};
use crate::workload::{OpError, Workload};

/// How the closed loop talks to the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Driver {
    /// Through the client SDK, as an application would: its cost is part of the
    /// latency measured.
    Sdk,
    /// Frames written straight to the socket, `pipeline` slots per connection (tcp and
    /// unix only): measures the proxy with as little generator cost as possible.
    Raw,
}

/// A load test to run.
#[derive(Debug, Clone, Serialize)]
pub struct Scenario {
    /// The proxy to load.
    #[serde(serialize_with = "display")]
    pub target: Endpoint,
    /// Clients, each with its own connection.
    pub connections: usize,
    /// Requests in flight per connection.
    pub pipeline: usize,
    /// How the closed loop talks to the proxy.
    pub driver: Driver,
    /// How long to measure, after the warm-up.
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
    /// How long to run before measuring.
    #[serde(with = "humantime_serde")]
    pub warmup: Duration,
    /// Open loop: requests per second, evenly spaced whatever the answers do;
    /// `None` runs the closed loop.
    pub rate: Option<f64>,
    /// Open loop: most requests in flight before the generator waits (latency is still
    /// measured from each request's intended time).
    pub max_in_flight: usize,
    /// The operation.
    pub op: Op,
    /// The weights when `op` is `mix`.
    #[serde(serialize_with = "display")]
    pub mix: Mix,
    /// The wrapping operations' key name, or the prefix of `keys` names (`{key}-{i}`)
    /// when `keys` > 1.
    pub key: String,
    /// The type an embedded proxy gives the `key` keys: `aes-256` or `ml-kem-768`.
    pub key_type: KeyType,
    /// Sign and verify's key name, or the prefix of `keys` names as for `key`.
    pub sign_key: String,
    /// The type an embedded proxy gives the `sign_key` keys: any signing type.
    pub sign_key_type: KeyType,
    /// How many keys of each kind to spread requests over.
    pub keys: usize,
    /// Zipf exponent of the key distribution (0 = uniform).
    pub zipf: f64,
    /// Data key size in bytes, for WRAP and GENERATE_DATA_KEY.
    pub dek_size: u16,
    /// For UNWRAP and REWRAP: how many distinct blobs to make first and cycle through.
    pub blobs: usize,
    /// For UNWRAP and REWRAP: ask the proxy to bypass its unwrap cache.
    pub no_cache: bool,
    /// For SIGN and VERIFY: bytes in the message signed (the proxy hashes it, where the
    /// algorithm does).
    pub message_size: u16,
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
            driver: Driver::Sdk,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(1),
            rate: None,
            max_in_flight: 10_000,
            op: Op::Wrap,
            mix: Mix::default(),
            key: "default".to_owned(),
            key_type: KeyType::Aes256,
            sign_key: "signing".to_owned(),
            sign_key_type: KeyType::Ed25519,
            keys: 1,
            zipf: 0.0,
            dek_size: 32,
            blobs: 1000,
            no_cache: false,
            message_size: 32,
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
        ensure!(!self.sign_key.is_empty() && self.sign_key.len() <= 255, "sign-key must be 1 to 255 bytes");
        ensure!(
            self.key_type.is_wrapping(),
            "key-type {} does not wrap: --key-type is the type of the --key keys (wrap, unwrap, \
             generate-data-key, rewrap), aes-256 or ml-kem-768; sign and verify's keys take --sign-key-type",
            self.key_type
        );
        ensure!(
            self.sign_key_type.is_signing(),
            "sign-key-type {} does not sign: --sign-key-type is the type of the --sign-key keys (sign, verify)",
            self.sign_key_type
        );
        let ops = self.ops();
        ensure!(!ops.is_empty(), "the operation mix has no weight");
        if ops.iter().any(|(op, _)| op.signs()) && ops.iter().any(|(op, _)| !op.signs()) {
            ensure!(
                self.key != self.sign_key,
                "key and sign-key are both {:?}: a mix of wrapping and signing operations needs two key \
                 names, as no key type does both",
                self.key
            );
        }
        if matches!(self.op, Op::Unwrap | Op::Rewrap | Op::Mix) {
            ensure!(self.blobs > 0, "blobs must be at least 1 for {:?}", self.op);
        }
        if self.driver == Driver::Raw {
            ensure!(self.rate.is_none(), "--driver raw runs the closed loop only; drop --rate");
            ensure!(
                matches!(self.target, Endpoint::Tcp { .. } | Endpoint::Unix(_)),
                "--driver raw speaks tcp:// and unix:// only"
            );
        }
        if let Some(rate) = self.rate {
            ensure!(rate > 0.0 && rate.is_finite(), "rate must be a positive number of requests per second");
            ensure!(self.max_in_flight > 0, "max-in-flight must be at least 1");
        }
        ensure!(self.keys > 0, "keys must be at least 1");
        ensure!(self.zipf >= 0.0, "zipf must be 0 or more");
        Ok(())
    }

    /// The operations run and their weights: `op`, or the positive weights of `mix`.
    pub fn ops(&self) -> Vec<(Op, u32)> {
        match self.op {
            Op::Mix => self.mix.0.iter().copied().filter(|(_, weight)| *weight > 0).collect(),
            op => vec![(op, 1)],
        }
    }

    /// The key names the wrapping operations spread over.
    pub fn key_names(&self) -> Vec<String> {
        names(&self.key, self.keys)
    }

    /// The key names sign and verify spread over.
    pub fn sign_key_names(&self) -> Vec<String> {
        names(&self.sign_key, self.keys)
    }

    /// The keys an embedded proxy needs for this scenario, with their types: the
    /// wrapping keys if any wrapping operation runs, the signing keys if sign or verify
    /// does.
    pub fn embedded_keys(&self) -> Vec<(String, KeyType)> {
        let ops = self.ops();
        let mut keys = Vec::new();
        if ops.iter().any(|(op, _)| !op.signs()) {
            keys.extend(self.key_names().into_iter().map(|name| (name, self.key_type)));
        }
        if ops.iter().any(|(op, _)| op.signs()) {
            keys.extend(self.sign_key_names().into_iter().map(|name| (name, self.sign_key_type)));
        }
        keys
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

/// `prefix`, or `{prefix}-0` .. `{prefix}-{count-1}` when there are several.
fn names(prefix: &str, count: usize) -> Vec<String> {
    match count {
        1 => vec![prefix.to_owned()],
        n => (0..n).map(|i| format!("{prefix}-{i}")).collect(),
    }
}

fn display<T: std::fmt::Display, S: Serializer>(value: &T, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

/// Runs `scenario` to completion and reports what it measured. `completed` counts
/// answered requests as they come, for a progress display.
pub async fn run(scenario: Scenario, completed: Arc<AtomicU64>) -> anyhow::Result<Report> {
    scenario.validate()?;
    // The raw driver opens its own connections: one SDK client is enough to make blobs.
    let sdk_connections = if scenario.driver == Driver::Raw { 1 } else { scenario.connections };
    let clients = connect_all(&scenario, sdk_connections).await?;
    let mut workload = Workload::new(&scenario)?;
    if workload.needs_blobs() {
        let blobs = crate::setup::make_blobs(&scenario, &clients, &workload).await?;
        workload.set_blobs(blobs);
    }
    if workload.needs_signatures() {
        let signatures = crate::setup::make_signatures(&clients, &workload).await?;
        workload.set_signatures(signatures)?;
    }
    let workload = Arc::new(workload);

    let started = Instant::now();
    let window =
        Window { from: started + scenario.warmup, until: started + scenario.warmup + scenario.duration };
    let report = match (scenario.rate, scenario.driver) {
        (None, Driver::Raw) => {
            let total = raw_closed_loop(&scenario, &workload, window, &completed).await?;
            Report::new(scenario, &total)
        }
        (None, Driver::Sdk) => {
            let total = closed_loop(&scenario, &clients, &workload, window, &completed).await?;
            Report::new(scenario, &total)
        }
        (Some(rate), _) => {
            let (total, paced) =
                open_loop(rate, scenario.max_in_flight, &clients, &workload, window, &completed).await?;
            paced.check_reported(&total)?;
            Report::new(scenario, &total).with_open_loop(paced.stats(rate, window))
        }
    };
    Ok(report)
}

/// The measured part of a run: requests issued between `from` and `until`.
#[derive(Clone, Copy)]
pub(crate) struct Window {
    from: Instant,
    pub(crate) until: Instant,
}

impl Window {
    /// Whether `at` falls in the window (`from` included, `until` not).
    pub(crate) fn contains(&self, at: Instant) -> bool {
        at >= self.from && at < self.until
    }

    fn length(&self) -> Duration {
        self.until - self.from
    }
}

pub(crate) fn new_rng() -> SmallRng {
    SmallRng::seed_from_u64(rand::random())
}

async fn closed_loop(
    scenario: &Scenario,
    clients: &[Client],
    workload: &Arc<Workload>,
    window: Window,
    completed: &Arc<AtomicU64>,
) -> anyhow::Result<Recorder> {
    let mut loops = JoinSet::new();
    for client in clients {
        let (client, workload, completed) = (client.clone(), Arc::clone(workload), Arc::clone(completed));
        let pipeline = scenario.pipeline;
        loops.spawn(async move { Ok(connection_loop(client, workload, pipeline, window, completed).await) });
    }
    merge_all(loops).await
}

/// The closed loop over raw connections ([`crate::raw`]), one task each.
async fn raw_closed_loop(
    scenario: &Scenario,
    workload: &Arc<Workload>,
    window: Window,
    completed: &Arc<AtomicU64>,
) -> anyhow::Result<Recorder> {
    let mut loops = JoinSet::new();
    for _ in 0..scenario.connections {
        let stream = crate::raw::connect(&scenario.target).await?;
        let (workload, completed, pipeline) =
            (Arc::clone(workload), Arc::clone(completed), scenario.pipeline);
        loops.spawn(async move {
            let raw = RawLoop { pipeline, workload: &workload, window };
            raw.run(stream, &mut new_rng(), &completed).await
        });
    }
    merge_all(loops).await
}

/// Waits for every connection loop and adds up what they measured.
async fn merge_all(mut loops: JoinSet<anyhow::Result<Recorder>>) -> anyhow::Result<Recorder> {
    let mut total = Recorder::new();
    while let Some(joined) = loops.join_next().await {
        total.merge(&joined.context("a connection loop panicked")??);
    }
    Ok(total)
}

/// One connection's closed loop: keeps `pipeline` requests in flight, sending the next
/// as soon as one is answered, until the window ends. One task and one histogram per
/// connection keep the generator's own cost low (a task per request in flight would
/// cost a wake-up and a cold histogram per answer).
async fn connection_loop(
    client: Client,
    workload: Arc<Workload>,
    pipeline: usize,
    window: Window,
    completed: Arc<AtomicU64>,
) -> Recorder {
    let mut recorder = Recorder::new();
    let mut rng = new_rng();
    let issue = |rng: &mut SmallRng| {
        let call = workload.pick(rng);
        let sent = Instant::now();
        let (client, workload) = (&client, &workload);
        async move { (sent, workload.run(client, call).await) }
    };
    let mut in_flight = FuturesUnordered::new();
    for _ in 0..pipeline {
        in_flight.push(issue(&mut rng));
    }
    while let Some((sent, result)) = in_flight.next().await {
        let done = Instant::now();
        completed.fetch_add(1, Ordering::Relaxed);
        if window.contains(sent) {
            match result {
                Ok(()) => recorder.record_ok(done - sent),
                Err(error) => recorder.record_failure(error.label(), error.answered()),
            }
        }
        if done < window.until {
            in_flight.push(issue(&mut rng));
        }
    }
    recorder
}

/// The pacer sleeps only when the next request is further off than this; closer ones
/// go out at once (still timed from their intended instant).
const PACER_SLACK: Duration = Duration::from_micros(50);

/// What the open loop's pacer did in the measured window.
#[derive(Debug, Clone, Copy, Default)]
struct Paced {
    /// Requests whose intended send time fell in the window (all of them were sent).
    issued: u64,
    /// Of all requests, those actually sent while the window was open.
    sent_in_window: u64,
    /// The most a request of the window went out after its intended time.
    max_lag: Duration,
}

impl Paced {
    /// Every request the pacer issued in the window must report back, answered or not: a
    /// missing one means its task died, and the figures would be short.
    fn check_reported(&self, recorded: &Recorder) -> anyhow::Result<()> {
        ensure!(
            recorded.completed() == self.issued,
            "the open loop issued {} requests in the window but {} reported back",
            self.issued,
            recorded.completed()
        );
        Ok(())
    }

    fn stats(&self, rate: f64, window: Window) -> OpenLoopStats {
        OpenLoopStats {
            intended_rate: rate,
            achieved_rate: self.sent_in_window as f64 / window.length().as_secs_f64(),
            max_send_lag_us: u64::try_from(self.max_lag.as_micros()).unwrap_or(u64::MAX),
        }
    }
}

/// The open loop: `rate` requests a second, evenly spaced and spread over the clients
/// round-robin, whether or not earlier ones were answered. Each latency runs
/// from the request's *intended* time (evenly spaced), so a stall in the proxy or in
/// the generator shows up in full instead of being hidden by coordinated omission.
///
/// A request counts when its intended time falls in the window, whenever it finishes;
/// the function returns once every request has finished. A pacer or collector that
/// fails is an error, never a short report.
async fn open_loop(
    rate: f64,
    max_in_flight: usize,
    clients: &[Client],
    workload: &Arc<Workload>,
    window: Window,
    completed: &Arc<AtomicU64>,
) -> anyhow::Result<(Recorder, Paced)> {
    let permits = Arc::new(Semaphore::new(max_in_flight));
    let (samples, mut received) = mpsc::unbounded_channel::<(Result<(), OpError>, Instant, Instant)>();
    // Ends when every sender is gone: the pacer's and every request task's.
    let collector = tokio::spawn(async move {
        let mut recorder = Recorder::new();
        while let Some((result, intended, done)) = received.recv().await {
            if !window.contains(intended) {
                continue;
            }
            match result {
                Ok(()) => recorder.record_ok(done.saturating_duration_since(intended)),
                Err(error) => recorder.record_failure(error.label(), error.answered()),
            }
        }
        recorder
    });
    // The pacer is an OS thread: tokio's timers tick in whole milliseconds, which would
    // send requests in bursts and charge the generator's own lateness to the proxy.
    let runtime = tokio::runtime::Handle::current();
    let (clients, workload, completed) = (clients.to_vec(), Arc::clone(workload), Arc::clone(completed));
    let pacer = std::thread::Builder::new().name("keymux-loadgen pacer".into()).spawn(
        move || -> anyhow::Result<Paced> {
            let interval = Duration::from_secs_f64(1.0 / rate);
            let start = Instant::now();
            let mut paced = Paced::default();
            for n in 0u32.. {
                let intended = start + interval * n;
                if intended >= window.until {
                    break;
                }
                let ahead = intended.saturating_duration_since(Instant::now());
                if ahead > PACER_SLACK {
                    std::thread::sleep(ahead);
                }
                let permit = match Arc::clone(&permits).try_acquire_owned() {
                    Ok(permit) => permit,
                    Err(_) => runtime
                        .block_on(Arc::clone(&permits).acquire_owned())
                        .context("the open loop's in-flight limit was closed")?,
                };
                let sent = Instant::now();
                paced.sent_in_window += u64::from(window.contains(sent));
                if window.contains(intended) {
                    paced.issued += 1;
                    paced.max_lag = paced.max_lag.max(sent.saturating_duration_since(intended));
                }
                let client = clients[n as usize % clients.len()].clone();
                let (workload, samples, completed) =
                    (Arc::clone(&workload), samples.clone(), Arc::clone(&completed));
                runtime.spawn(async move {
                    let call = workload.pick(&mut new_rng());
                    let result = workload.run(&client, call).await;
                    completed.fetch_add(1, Ordering::Relaxed);
                    let _ = samples.send((result, intended, Instant::now()));
                    drop(permit);
                });
            }
            Ok(paced)
        },
    )?;
    let paced = joined_pacer(tokio::task::spawn_blocking(move || pacer.join()).await?)?;
    let recorder = joined_collector(collector.await)?;
    Ok((recorder, paced))
}

/// What the pacer thread ended with: a panic is an error, never an empty report.
fn joined_pacer(joined: std::thread::Result<anyhow::Result<Paced>>) -> anyhow::Result<Paced> {
    joined
        .map_err(|_| anyhow::anyhow!("the open loop's pacer panicked"))?
        .context("the open loop's pacer failed")
}

/// What the collector task ended with: a panic is an error, never an empty report.
fn joined_collector(joined: Result<Recorder, tokio::task::JoinError>) -> anyhow::Result<Recorder> {
    joined.context("the open loop's collector failed")
}

async fn connect_all(scenario: &Scenario, count: usize) -> anyhow::Result<Vec<Client>> {
    let config = scenario.client_config();
    let mut connecting = JoinSet::new();
    for _ in 0..count {
        connecting.spawn(Client::connect(config.clone()));
    }
    let mut clients = Vec::with_capacity(count);
    while let Some(joined) = connecting.join_next().await {
        clients.push(joined?.with_context(|| format!("cannot connect to {}", scenario.target))?);
    }
    Ok(clients)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(op: Op) -> Scenario {
        let mut scenario = Scenario::new(Endpoint::tcp("127.0.0.1", 7450));
        scenario.op = op;
        scenario
    }

    #[test]
    fn validate_names_what_cannot_run() {
        let mut wrong = scenario(Op::Wrap);
        wrong.key_type = KeyType::Ed25519;
        let error = wrong.validate().unwrap_err().to_string();
        assert!(
            error.contains("key-type ed25519 does not wrap") && error.contains("--sign-key-type"),
            "{error}"
        );

        let mut wrong = scenario(Op::Sign);
        wrong.sign_key_type = KeyType::MlKem768;
        let error = wrong.validate().unwrap_err().to_string();
        assert!(error.contains("sign-key-type ml-kem-768 does not sign"), "{error}");

        let mut same = scenario(Op::Mix);
        same.mix = "wrap=1,verify=1".parse().unwrap();
        same.sign_key = same.key.clone();
        let error = same.validate().unwrap_err().to_string();
        assert!(error.contains("needs two key names"), "{error}");
        // One kind only: the other kind's name is unused, so it may be the same.
        same.op = Op::Verify;
        same.validate().unwrap();

        let mut empty = scenario(Op::Sign);
        empty.sign_key = String::new();
        assert!(empty.validate().unwrap_err().to_string().contains("sign-key must be 1 to 255 bytes"));
    }

    #[test]
    fn ops_and_embedded_keys_follow_the_mix() {
        let mut mix = scenario(Op::Mix);
        mix.mix = "wrap=0,sign=2,verify=1".parse().unwrap();
        assert_eq!(mix.ops(), [(Op::Sign, 2), (Op::Verify, 1)], "zero weights do not run");
        assert_eq!(mix.embedded_keys(), [("signing".to_owned(), KeyType::Ed25519)]);
        assert_eq!(scenario(Op::Unwrap).embedded_keys(), [("default".to_owned(), KeyType::Aes256)]);
        assert_eq!(scenario(Op::Verify).ops(), [(Op::Verify, 1)]);
    }

    #[test]
    fn a_failed_pacer_is_an_error() {
        let panicked = std::thread::spawn(|| -> anyhow::Result<Paced> { panic!("pacer bug") }).join();
        let error = joined_pacer(panicked).unwrap_err();
        assert!(error.to_string().contains("pacer panicked"), "{error:#}");
        let error = joined_pacer(Ok(Err(anyhow::anyhow!("limit closed")))).unwrap_err();
        assert!(format!("{error:#}").contains("pacer failed: limit closed"), "{error:#}");
        assert_eq!(joined_pacer(Ok(Ok(Paced { issued: 3, ..Paced::default() }))).unwrap().issued, 3);
    }

    #[tokio::test]
    async fn a_failed_collector_is_an_error() {
        let panicked = tokio::spawn(async { panic!("collector bug") }).await;
        let error = joined_collector(panicked).unwrap_err();
        assert!(error.to_string().contains("collector failed"), "{error:#}");
    }

    #[test]
    fn a_request_that_never_reports_back_is_an_error() {
        let mut recorded = Recorder::new();
        recorded.record_ok(Duration::from_micros(10));
        recorded.record_error(&keymux_client::Error::DeadlineExceeded);
        let paced = Paced { issued: 2, ..Paced::default() };
        paced.check_reported(&recorded).unwrap();
        let error = Paced { issued: 3, ..paced }.check_reported(&recorded).unwrap_err();
        assert!(error.to_string().contains("issued 3 requests in the window but 2 reported back"), "{error}");
    }
}
