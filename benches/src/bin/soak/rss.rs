//! RSS of one `keymux serve` (soft keystore) while idle, under 10x overload, under a
//! flood of half-open TLS connections and under garbage connections.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::BytesMut;
use keymux_client::testing::free_port;
use keymux_protocol::{Limits, Request, RequestFrame, SecretBytes};
use keymux_test_support::certs::Pki;
use keymux_test_support::replica::Replica;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// The resident set of `pid`, in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Samples `pid`'s RSS every 100 ms while `phase` runs: (min, max) in MiB.
async fn sampled(pid: u32, phase: impl std::future::Future<Output = ()>) -> (f64, f64) {
    let done = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&done);
    let sampler = tokio::spawn(async move {
        let (mut low, mut high) = (u64::MAX, 0);
        while !flag.load(Ordering::Relaxed) {
            if let Some(kib) = rss_kib(pid) {
                (low, high) = (low.min(kib), high.max(kib));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        (low as f64 / 1024.0, high as f64 / 1024.0)
    });
    phase.await;
    done.store(true, Ordering::Relaxed);
    sampler.await.unwrap_or_default()
}

/// 64 connections, each keeping 1,024 wraps in flight and reading answers as they
/// come, against a queue of 4,096: about 16 times what the proxy queues.
async fn overload(plain: u16, phase: Duration) {
    let until = Instant::now() + phase;
    let mut tasks = Vec::new();
    for _ in 0..64 {
        tasks.push(tokio::spawn(async move {
            let Ok(stream) = TcpStream::connect(("127.0.0.1", plain)).await else { return };
            let (mut read, mut write) = stream.into_split();
            let reader = tokio::spawn(async move {
                let mut sink = vec![0u8; 64 * 1024];
                while read.read(&mut sink).await.is_ok_and(|n| n > 0) {}
            });
            let mut frames = BytesMut::new();
            for id in 0..1024 {
                let request = Request::Wrap {
                    key: "default".into(),
                    aad: Vec::new(),
                    plaintext: SecretBytes::zeroed(32),
                };
                let _ = RequestFrame::new(id, request).encode(&mut frames, &Limits::default());
            }
            while Instant::now() < until {
                if write.write_all(&frames).await.is_err() {
                    break;
                }
            }
            drop(write);
            reader.abort();
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
}

/// 5,000 TCP connections to the TLS port from 50 addresses that never send a byte.
async fn half_open(tls: u16, phase: Duration) {
    let mut held = Vec::new();
    for i in 0..5000u32 {
        let socket = TcpSocket::new_v4().unwrap();
        let from = std::net::Ipv4Addr::new(127, 0, 1, (i % 50) as u8 + 1);
        if socket.bind((from, 0).into()).is_ok()
            && let Ok(Ok(stream)) =
                tokio::time::timeout(Duration::from_millis(500), socket.connect(([127, 0, 0, 1], tls).into()))
                    .await
        {
            held.push(stream);
        }
    }
    tokio::time::sleep(phase).await;
}

/// Connections of random bytes, as fast as they go.
async fn garbage(plain: u16, tls: u16, phase: Duration) {
    let until = Instant::now() + phase;
    while Instant::now() < until {
        for port in [plain, tls] {
            let mut noise = vec![0u8; 2048];
            getrandom::fill(&mut noise).expect("the OS has randomness");
            if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)).await {
                let _ = stream.write_all(&noise).await;
            }
        }
    }
}

/// One phase's load.
type Phase = std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>;

/// Starts a soft-keystore proxy with TLS, then runs each phase and prints its RSS.
pub(crate) async fn run(keymux: &Path, phase: Duration) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let pki = Pki::new("rss ca");
    let (cert, key) = pki.write("server", &pki.server("rss"));
    let tls = free_port();
    let tables = format!(
        "[tls]\nlisten = \"127.0.0.1:{tls}\"\ncert = \"{}\"\nkey = \"{}\"\n\n[backend]\ntype = \"soft\"\n\
         data_dir = \"{}\"\npassphrase = {{ env = \"KEYMUX_SOFT_PASSPHRASE\" }}\ncreate_if_missing = true\n",
        cert.display(),
        key.display(),
        dir.path().join("data").display()
    );
    let env = [("KEYMUX_SOFT_PASSPHRASE", "rss")];
    let proxy = Replica::start(keymux, dir.path(), "rss", "plain_tcp = true", &tables, &env, None)?;
    let (pid, plain) = (proxy.pid().context("the proxy runs")?, proxy.port);
    let phases: [(&str, Phase); 4] = [
        ("idle", Box::pin(tokio::time::sleep(phase))),
        ("10x overload (64 x 1,024 in flight vs a queue of 4,096)", Box::pin(overload(plain, phase))),
        ("5,000 half-open TLS connections from 50 addresses", Box::pin(half_open(tls, phase))),
        ("garbage connections", Box::pin(garbage(plain, tls, phase))),
    ];
    for (name, future) in phases {
        let (low, high) = sampled(pid, future).await;
        println!("RSS {name}: {low:.1} to {high:.1} MiB");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!("RSS after the phases: {:.1} MiB", rss_kib(pid).unwrap_or(0) as f64 / 1024.0);
    Ok(())
}
