//! Three `keymux` processes on one SoftHSM token behind HAProxy (TCP mode, health checks
//! on `/readyz`), under load from clients that know only HAProxy's addresses: SDK
//! clients on the binary protocol, and HTTP/1.1 clients of the Vault Transit API (its
//! own HAProxy frontend, the same replicas). One replica is SIGKILLed mid-load, another
//! drained with SIGTERM, both restarted, and fresh clients reach them again. No call may
//! fail: the killed replica's in-flight calls fail over as the SDK retries them (the
//! Vault clients retry twice on a connection error or a 5xx, as Vault's own Go client
//! does), and the drained one answers what it read and closes.
//!
//! Prints per phase and client: calls answered, failed, retried (by why), the longest
//! call and the longest time in which no call completed at all (the stall a client sees).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use keymux_client::testing::free_port;
use keymux_client::{Client, ClientConfig, Endpoint};
use keymux_proxy::keys::{KeyLifecycle, KeyType};
use keymux_test_support::haproxy::{Haproxy, Upstream};
use keymux_test_support::http::{HttpClient, Version};
use keymux_test_support::metrics::metric_sum;
use keymux_test_support::replica::Replica;
use keymux_test_support::{pkcs11, unique_key};
use serde_json::{Value, json};
use tokio::task::block_in_place;

/// The Vault clients' token (`[[vault.tokens]]` of every replica).
const VAULT_TOKEN: &str = "replicas-test-token";

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

/// The clients' record, phase by phase: the SDK's retries from its events, or those
/// the clients count themselves ([`Tally::retried`]).
struct Tally {
    phase: Mutex<Phase>,
    last_completion: Mutex<Instant>,
    sdk: bool,
    retries_at_start: Mutex<[u64; 3]>,
}

impl Tally {
    fn new(sdk: bool) -> Arc<Self> {
        Arc::new(Self {
            phase: Mutex::default(),
            last_completion: Mutex::new(Instant::now()),
            sdk,
            retries_at_start: Mutex::new(retries()),
        })
    }

    /// A retry made by the client itself, for `why`.
    fn retried(&self, why: usize) {
        self.phase.lock().unwrap_or_else(PoisonError::into_inner).retried[why] += 1;
    }

    fn record<T, E: std::fmt::Display>(&self, took: Duration, outcome: &Result<T, E>) {
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
        if !self.sdk {
            return phase;
        }
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

/// One Transit call on `connection` (connecting it when there is none), tried again
/// on a new connection after a connection error or a 5xx answer, twice at most, as
/// Vault's own Go client does (it waits 1 to 1.5 s between tries; 50 and 100 ms here).
async fn vault_call(
    connection: &mut Option<HttpClient>,
    addr: SocketAddr,
    path: &str,
    body: &Value,
    tally: &Tally,
) -> Result<Value, String> {
    let body = serde_json::to_vec(body).unwrap();
    let headers = [("content-type", "application/json"), ("x-vault-token", VAULT_TOKEN)];
    let mut failure = String::new();
    for attempt in 0..3u64 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
        }
        if connection.is_none() {
            match HttpClient::connect(addr, Version::Http1).await {
                Ok(client) => *connection = Some(client),
                Err(error) => {
                    failure = format!("connect: {error}");
                    if attempt < 2 {
                        tally.retried(OTHER);
                    }
                    continue;
                }
            }
        }
        let client = connection.as_mut().expect("connected above");
        match client.send("POST", path, &headers, body.clone()).await {
            Ok(answer) => {
                if answer.headers.get("connection").is_some_and(|value| value == "close") {
                    *connection = None;
                }
                match answer.status {
                    200 => return Ok(answer.json),
                    500.. => {
                        failure = format!("{}: {}", answer.status, answer.text);
                        *connection = None;
                        if attempt < 2 {
                            tally.retried(BACKEND);
                        }
                    }
                    _ => return Err(format!("{}: {}", answer.status, answer.text)),
                }
            }
            Err(error) => {
                failure = format!("connection: {error}");
                *connection = None;
                if attempt < 2 {
                    tally.retried(CLOSED);
                }
            }
        }
    }
    Err(failure)
}

/// `tasks` loops of a Transit encrypt then a decrypt of its ciphertext, each over its own
/// HTTP/1.1 keep-alive connection to `addr`, until `stop`.
fn vault_load(addr: SocketAddr, key: &str, tasks: usize, tally: &Arc<Tally>, stop: &Arc<AtomicBool>) {
    for task in 0..tasks {
        let (key, tally, stop) = (key.to_owned(), Arc::clone(tally), Arc::clone(stop));
        tokio::spawn(async move {
            let mut connection = None;
            let plaintext = B64.encode(format!("secret {task}"));
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let path = format!("/v1/transit/encrypt/{key}");
                let sealed =
                    vault_call(&mut connection, addr, &path, &json!({ "plaintext": plaintext }), &tally)
                        .await;
                tally.record(started.elapsed(), &sealed);
                let Ok(sealed) = sealed else { continue };
                let started = Instant::now();
                let path = format!("/v1/transit/decrypt/{key}");
                let body = json!({ "ciphertext": sealed["data"]["ciphertext"] });
                let opened = vault_call(&mut connection, addr, &path, &body, &tally).await;
                tally.record(started.elapsed(), &opened);
                if let Ok(opened) = opened {
                    assert_eq!(opened["data"]["plaintext"], plaintext);
                }
            }
        });
    }
}

fn print_phases(title: &str, phases: &[(&str, Phase)]) {
    println!("\n{title}\n");
    println!(
        "| phase | answered | failed | retried: connection closed | retried: BACKEND_UNAVAILABLE or 5xx | \
         retried: other | longest call | longest stall |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (name, phase) in phases {
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
    let vault_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut replicas: Vec<Replica> = vault_ports
        .iter()
        .enumerate()
        .map(|(i, vault_port)| {
            let config = format!(
                "[vault]\nlisten = \"127.0.0.1:{vault_port}\"\n[[vault.tokens]]\nname = \"load\"\n\
                 token = {{ env = \"KEYMUX_VAULT_TOKEN\" }}\n\n\
                 [[acl]]\nany = true\nops = [\"*\"]\nkeys = [\"*\"]\n\n{backend}"
            );
            let env = [("KEYMUX_VAULT_TOKEN", VAULT_TOKEN)];
            let binary = Path::new(env!("CARGO_BIN_EXE_keymux"));
            Replica::start(binary, dir.path(), &format!("p{i}"), server, &config, &env, None).unwrap()
        })
        .collect();
    let upstreams: Vec<Upstream> = replicas.iter().map(Upstream::from).collect();
    let vault_upstreams: Vec<Upstream> = replicas
        .iter()
        .zip(&vault_ports)
        .map(|(r, &port)| Upstream {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            admin_port: r.admin_port,
        })
        .collect();
    let haproxy = Haproxy::start_services(dir.path(), &[&upstreams, &vault_upstreams], None).unwrap();
    block_in_place(|| haproxy.wait_until_up(6, Duration::from_secs(10))).unwrap();

    let (tally, vault_tally) = (Tally::new(true), Tally::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let first = client_of(&haproxy).await;
    load(&first, &key, 16, &tally, &stop);
    vault_load(haproxy.addr_of(1), &key, 6, &vault_tally, &stop);
    let (mut phases, mut vault_phases) = (Vec::new(), Vec::new());
    let mut end_phase = |name| {
        phases.push((name, tally.take()));
        vault_phases.push((name, vault_tally.take()));
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    end_phase("steady, 3 replicas");

    replicas[0].kill();
    let marked_down = block_in_place(|| haproxy.wait_until_leaving("p0", Duration::from_secs(10))).unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    end_phase("p0 SIGKILLed");

    replicas[1].terminate().unwrap();
    let drained = block_in_place(|| replicas[1].wait(Duration::from_secs(15))).unwrap();
    assert!(drained.success(), "a drained replica exits 0: {drained:?}");
    end_phase("p1 drained (SIGTERM)");

    block_in_place(|| {
        replicas[0].restart().unwrap();
        replicas[1].restart().unwrap();
        haproxy.wait_until_up(6, Duration::from_secs(10)).unwrap();
    });
    end_phase("p0, p1 restarted");
    let before = [requests_served(&replicas[0]), requests_served(&replicas[1])];
    // New clients: HAProxy's least-connections balancing sends them to the restarted
    // replicas, which hold no connections yet.
    let second = client_of(&haproxy).await;
    load(&second, &key, 8, &tally, &stop);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(200)).await;
    end_phase("new clients after restart");
    let after = [requests_served(&replicas[0]), requests_served(&replicas[1])];

    println!("HAProxy marked the SIGKILLed replica down after {marked_down:?}");
    print_phases("SDK clients, binary protocol (16 callers, 6 connections)", &phases);
    print_phases("Vault Transit clients, HTTP/1.1 (6 callers, a connection each)", &vault_phases);
    println!("\nHAProxy: {:?}", haproxy.servers().unwrap());
    for (name, phase) in phases.iter().chain(&vault_phases) {
        assert_eq!(phase.failed, 0, "{name}: calls lost: {:?}", phase.errors);
        assert!(phase.answered > 0, "{name}: traffic went on");
    }
    for (i, (before, after)) in before.iter().zip(after).enumerate() {
        assert!(after > *before, "p{i} serves again after its restart ({before} then {after} requests)");
    }
}
