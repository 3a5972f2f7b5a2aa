//! What strikes the cluster during the soak, one action every two to six seconds.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use keymux_protocol::{Limits, Request, RequestFrame, SecretBytes};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use keymux_test_support::pkcs11::{close_all_sessions, token};

use crate::setup::{Cluster, KEY};

/// How often each action ran.
#[derive(Debug, Default)]
pub(crate) struct ChaosLog {
    actions: BTreeMap<&'static str, u32>,
}

impl ChaosLog {
    /// One line: each action and its count.
    pub(crate) fn summary(&self) -> String {
        self.actions.iter().map(|(name, count)| format!("{name} x{count}")).collect::<Vec<_>>().join(", ")
    }
}

/// A small random number generator (xorshift), seeded from the OS.
struct Dice(u64);

impl Dice {
    fn new() -> Self {
        let mut seed = [0u8; 8];
        getrandom::fill(&mut seed).expect("the OS has randomness");
        Self(u64::from_le_bytes(seed) | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }

    fn millis(&mut self, from: u64, to: u64) -> Duration {
        Duration::from_millis(from + self.below(to - from))
    }
}

/// Strikes the cluster until `duration` has passed.
pub(crate) async fn run(cluster: &mut Cluster, duration: Duration) -> ChaosLog {
    let mut log = ChaosLog::default();
    let mut dice = Dice::new();
    let until = Instant::now() + duration;
    // Clients that never read are held for a while, then let go.
    let mut stuck: Vec<(Instant, Vec<TcpStream>)> = Vec::new();
    while Instant::now() < until {
        tokio::time::sleep(dice.millis(2000, 6000)).await;
        stuck.retain(|(since, _)| since.elapsed() < Duration::from_secs(15));
        let action = match dice.below(6) {
            0 => {
                cluster.b.kill();
                tokio::time::sleep(dice.millis(200, 2000)).await;
                if let Err(error) = tokio::task::block_in_place(|| cluster.b.restart()) {
                    eprintln!("proxy B did not restart: {error}");
                }
                "SIGKILL proxy B, restart"
            }
            1 => {
                // Requests keep arriving and queueing; the next batches find their
                // sessions gone (see `Cluster::a_gate`).
                cluster.a_gate.close();
                cluster.a_gate.wait_until_quiet().await;
                close_all_sessions(&token().module, cluster.slot);
                cluster.a_gate.open();
                "C_CloseAllSessions under proxy A"
            }
            2 => {
                reload_certificates(cluster);
                "new certificates, reloaded"
            }
            3 if cluster.audit_on_tmpfs => {
                fill_disk(cluster, dice.millis(1000, 3000)).await;
                "audit disk full"
            }
            4 => {
                stuck.push((Instant::now(), never_reading(cluster).await));
                "clients that never read"
            }
            _ => {
                garbage(cluster, &mut dice).await;
                "garbage connections"
            }
        };
        *log.actions.entry(action).or_default() += 1;
    }
    log
}

/// New server certificates for both proxies: A reloads through its API, B on SIGHUP.
fn reload_certificates(cluster: &Cluster) {
    cluster.pki.write("a", &cluster.pki.server("proxy-a"));
    cluster.pki.write("b", &cluster.pki.server("proxy-b"));
    if let Some(a) = &cluster.a
        && let Err(error) = a.reload_certificates()
    {
        eprintln!("proxy A refused its new certificate: {error}");
    }
    if let Err(error) = cluster.b.reload() {
        eprintln!("proxy B did not take SIGHUP: {error}");
    }
}

/// Fills A's audit tmpfs, holds it full for `hold`, then frees it.
async fn fill_disk(cluster: &Cluster, hold: Duration) {
    let filler = cluster.audit_dir.join("filler");
    if let Ok(mut file) = std::fs::File::create(&filler) {
        let block = vec![0u8; 64 * 1024];
        while file.write_all(&block).is_ok() {}
        let _ = file.sync_all();
    }
    tokio::time::sleep(hold).await;
    let _ = std::fs::remove_file(&filler);
}

/// Ten plain connections to each proxy that send 256 KiB of pipelined wraps and never
/// read an answer.
async fn never_reading(cluster: &Cluster) -> Vec<TcpStream> {
    let mut frames = BytesMut::new();
    let mut id = 0;
    while frames.len() < 256 * 1024 {
        id += 1;
        let request = Request::Wrap { key: KEY.into(), aad: Vec::new(), plaintext: SecretBytes::zeroed(32) };
        let _ = RequestFrame::new(id, request).encode(&mut frames, &Limits::default());
    }
    let mut streams = Vec::new();
    for addr in [cluster.a_plain, cluster.b.addr()] {
        for _ in 0..10 {
            if let Ok(mut stream) = TcpStream::connect(addr).await {
                // The proxy stops reading once its in-flight limit is reached; what it
                // cannot take stays in the socket buffers.
                let _ = tokio::time::timeout(Duration::from_millis(200), stream.write_all(&frames)).await;
                streams.push(stream);
            }
        }
    }
    streams
}

/// Fifty connections of random bytes, to the plain and the TLS listeners of both.
async fn garbage(cluster: &Cluster, dice: &mut Dice) {
    let targets = [cluster.a_plain, cluster.a_tls, cluster.b.addr(), cluster.b_tls];
    for i in 0..50 {
        let mut noise = vec![0u8; 1 + dice.below(4096) as usize];
        getrandom::fill(&mut noise).expect("the OS has randomness");
        if let Ok(mut stream) = TcpStream::connect(targets[i % targets.len()]).await {
            let _ = stream.write_all(&noise).await;
        }
    }
}
