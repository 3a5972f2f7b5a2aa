//! Three `keymux` processes on one SoftHSM token behind HAProxy (TCP mode, health checks
//! on `/readyz`), under load from SDK clients that know only HAProxy's address: one
//! replica is SIGKILLed mid-load, another drained with SIGTERM, both restarted, and
//! fresh clients reach them again. No call may fail: the killed replica's in-flight
//! calls fail over as the SDK retries them (counted here), and the drained one answers
//! what it read and closes.
//!
//! Prints per phase: calls answered, failed, retried, the longest call and the longest
//! time in which no call completed at all (the stall a client sees).

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use keymux_client::{Client, ClientConfig, Endpoint};
use keymux_proxy::keys::{KeyLifecycle, KeyType};
use keymux_test_support::haproxy::{Haproxy, Upstream};
use keymux_test_support::metrics::metric_sum;
use keymux_test_support::replica::Replica;
use keymux_test_support::{pkcs11, unique_key};
use tokio::task::block_in_place;

/// Retries the SDK made, counted from its `retrying` debug events, by why: the
/// connection closed with the call in flight, the proxy answered BACKEND_UNAVAILABLE,
/// anything else. (Read from the event's text: for this report only, never asserted.)
static RETRIES: [AtomicU64; 3] = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];
const CLOSED: usize = 0;
const BACKEND: usize = 1;
const OTHER: usize = 2;

/// Counts the SDK's retries: this test binary's only tracing subscriber.
struct CountRetries;

fn retries() -> [u64; 3] {
    RETRIES.each_ref().map(|count| count.load(Ordering::Relaxed))
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for CountRetries {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Message(bool, String);
        impl tracing::field::Visit for Message {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                match field.name() {
                    "message" => self.0 = format!("{value:?}") == "retrying",
                    "error" => self.1 = format!("{value:?}"),
                    _ => {}
                }
            }
        }
        if event.metadata().target().starts_with("keymux_client") {
            let mut message = Message(false, String::new());
            event.record(&mut message);
            if message.0 {
                let why = if message.1.starts_with("connection closed") {
                    CLOSED
                } else if message.1.starts_with("backend unavailable") {
                    BACKEND
                } else {
                    OTHER
                };
                RETRIES[why].fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// What the clients saw in one phase.
#[derive(Debug, Default)]
struct Phase {
    answered: u64,
    failed: u64,
    retried: [u64; 3],
    longest_call: Duration,
    longest_gap: Duration,
    errors: Vec<String>,
}

/// The clients' record, phase by phase.
struct Tally {
    phase: Mutex<Phase>,
    last_completion: Mutex<Instant>,
    retries_at_start: Mutex<[u64; 3]>,
}

impl Tally {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            phase: Mutex::default(),
            last_completion: Mutex::new(Instant::now()),
            retries_at_start: Mutex::new(retries()),
        })
    }

    fn record<T>(&self, took: Duration, outcome: &Result<T, keymux_client::Error>) {
        let now = Instant::now();
        let gap = {
            let mut last = self.last_completion.lock().unwrap_or_else(PoisonError::into_inner);
            let gap = now - *last;
            *last = now;
            gap
        };
        let mut phase = self.phase.lock().unwrap_or_else(PoisonError::into_inner);
        match outcome {
            Ok(_) => phase.answered += 1,
            Err(error) => {
                phase.failed += 1;
                phase.errors.push(error.to_string());
            }
        }
        phase.longest_call = phase.longest_call.max(took);
        phase.longest_gap = phase.longest_gap.max(gap);
    }

    /// Ends the current phase: what it saw.
    fn take(&self) -> Phase {
        let mut phase = std::mem::take(&mut *self.phase.lock().unwrap_or_else(PoisonError::into_inner));
        let now = retries();
        let before = std::mem::replace(
            &mut *self.retries_at_start.lock().unwrap_or_else(PoisonError::into_inner),
            now,
        );
        phase.retried = std::array::from_fn(|i| now[i] - before[i]);
        phase
    }
}

/// `tasks` loops of a wrap then an unwrap of its blob through `client`, until `stop`.
fn load(client: &Arc<Client>, key: &str, tasks: usize, tally: &Arc<Tally>, stop: &Arc<AtomicBool>) {
    for task in 0..tasks {
        let (client, key, tally, stop) =
            (Arc::clone(client), key.to_owned(), Arc::clone(tally), Arc::clone(stop));
        tokio::spawn(async move {
            let aad = task.to_be_bytes();
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let wrapped = client.wrap(&key, &aad, &[7; 32]).await;
                tally.record(started.elapsed(), &wrapped);
                let Ok(blob) = wrapped else { continue };
                let started = Instant::now();
                let unwrapped = client.unwrap(&aad, &blob).await;
                tally.record(started.elapsed(), &unwrapped);
                if let Ok(dek) = unwrapped {
                    assert_eq!(dek.expose(), &[7; 32]);
                }
            }
        });
    }
}

async fn client_of(haproxy: &Haproxy) -> Arc<Client> {
    let mut config = ClientConfig::new(vec![Endpoint::from(haproxy.addr())]);
    config.connections = 6;
    Arc::new(Client::connect(config).await.unwrap())
}

fn requests_served(replica: &Replica) -> f64 {
    metric_sum(&replica.scrape().unwrap(), "keymux_requests_total{")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_behind_haproxy_lose_no_call_to_a_kill_a_drain_or_a_restart() {
    use tracing_subscriber::layer::SubscriberExt;
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(CountRetries)).unwrap();

    let token = pkcs11::token();
    let key = unique_key("replicas");
    // Made before the replicas start, as `keymux key create` would; they list it at start.
    keymux_proxy::backend::open(&token.backend_config()).unwrap().create_key(&key, KeyType::Aes256).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = "drain_delay = \"1s\"\nshutdown_grace = \"5s\"";
    let backend = token.backend_toml(2);
    let mut replicas: Vec<Replica> = (0..3)
        .map(|i| {
            Replica::start(
                Path::new(env!("CARGO_BIN_EXE_keymux")),
                dir.path(),
                &format!("p{i}"),
                server,
                &backend,
                &[],
                None,
            )
            .unwrap()
        })
        .collect();
    let upstreams: Vec<Upstream> = replicas.iter().map(Upstream::from).collect();
    let haproxy = Haproxy::start(dir.path(), &upstreams, None).unwrap();
    block_in_place(|| haproxy.wait_until_up(3, Duration::from_secs(10))).unwrap();

    let tally = Tally::new();
    let stop = Arc::new(AtomicBool::new(false));
    let first = client_of(&haproxy).await;
    load(&first, &key, 16, &tally, &stop);
    let mut phases = Vec::new();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    phases.push(("steady, 3 replicas", tally.take()));

    replicas[0].kill();
    let marked_down = block_in_place(|| haproxy.wait_until_leaving("p0", Duration::from_secs(10))).unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    phases.push(("p0 SIGKILLed", tally.take()));

    replicas[1].terminate().unwrap();
    let drained = block_in_place(|| replicas[1].wait(Duration::from_secs(15))).unwrap();
    assert!(drained.success(), "a drained replica exits 0: {drained:?}");
    phases.push(("p1 drained (SIGTERM)", tally.take()));

    block_in_place(|| {
        replicas[0].restart().unwrap();
        replicas[1].restart().unwrap();
        haproxy.wait_until_up(3, Duration::from_secs(10)).unwrap();
    });
    phases.push(("p0, p1 restarted", tally.take()));
    let before = [requests_served(&replicas[0]), requests_served(&replicas[1])];
    // New clients: HAProxy's least-connections balancing sends them to the restarted
    // replicas, which hold no connections yet.
    let second = client_of(&haproxy).await;
    load(&second, &key, 8, &tally, &stop);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(200)).await;
    phases.push(("new clients after restart", tally.take()));
    let after = [requests_served(&replicas[0]), requests_served(&replicas[1])];

    println!("HAProxy marked the SIGKILLed replica down after {marked_down:?}");
    println!(
        "| phase | answered | failed | retried: connection closed | retried: BACKEND_UNAVAILABLE | \
         retried: other | longest call | longest stall |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (name, phase) in &phases {
        println!(
            "| {name} | {} | {} | {} | {} | {} | {:.1} ms | {:.1} ms |",
            phase.answered,
            phase.failed,
            phase.retried[CLOSED],
            phase.retried[BACKEND],
            phase.retried[OTHER],
            phase.longest_call.as_secs_f64() * 1e3,
            phase.longest_gap.as_secs_f64() * 1e3
        );
    }
    println!("HAProxy: {:?}", haproxy.servers().unwrap());
    for (name, phase) in &phases {
        assert_eq!(phase.failed, 0, "{name}: calls lost: {:?}", phase.errors);
        assert!(phase.answered > 0, "{name}: traffic went on");
    }
    for (i, (before, after)) in before.iter().zip(after).enumerate() {
        assert!(after > *before, "p{i} serves again after its restart ({before} then {after} requests)");
    }
}
