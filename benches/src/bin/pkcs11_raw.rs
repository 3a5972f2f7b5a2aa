//! The anchor for HSM-backed operations: AES-256-GCM encryptions of a 32-byte key
//! (`--op wrap`), or ECDSA P-256 signatures of a SHA-256 digest (`--op sign`, on an
//! `ec-p256` key), in a tight in-process loop, straight through cryptoki, on the same
//! token, key and mechanism keymux uses. Prints ops/s and latency percentiles.
//!
//! Only the loop is measured: each thread opens its session, logs in and finds the key
//! first, and its clock starts once every thread has done so.
//!
//! ```sh
//! cargo run --release -p keymux-benches --bin pkcs11-raw -- \
//!     --module /usr/lib/softhsm/libsofthsm2.so --token keymux --key default --sessions 1
//! ```
//! The PIN comes from `KEYMUX_PKCS11_PIN`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::Parser;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use hdrhistogram::Histogram;
use keymux_proxy::backend::pkcs11::labels;
use keymux_proxy::keys::KeyType;

/// What the loop does.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Op {
    /// CKM_AES_GCM encryptions of a 32-byte key (an `aes-256` key).
    Wrap,
    /// CKM_ECDSA signatures of a 32-byte digest (an `ec-p256` key).
    Sign,
}

/// Raw PKCS#11 loop.
#[derive(Parser)]
struct Args {
    /// The operation.
    #[arg(long, value_enum, default_value = "wrap")]
    op: Op,
    /// The PKCS#11 module.
    #[arg(long, default_value = keymux_test_support::softhsm::MODULE)]
    module: String,
    /// Token label.
    #[arg(long, default_value = "keymux")]
    token: String,
    /// keymux key name; its highest version is used.
    #[arg(long, default_value = "default")]
    key: String,
    /// Sessions, one thread each.
    #[arg(long, default_value_t = 1)]
    sessions: usize,
    /// How long to measure.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Print one JSON object instead of a line of text.
    #[arg(long)]
    json: bool,
}

/// What one session's thread measured, from the moment every session was logged in and
/// had its key until the stop.
struct Measured {
    histogram: Histogram<u64>,
    elapsed: Duration,
}

/// Opens a session on `slot`, logs in and finds the highest version of `key`: the set-up
/// a thread does before its clock starts.
fn open(
    context: &Pkcs11,
    slot: Slot,
    pin: &str,
    key: &str,
    op: Op,
) -> anyhow::Result<(Session, ObjectHandle)> {
    let session = context.open_rw_session(slot)?;
    match session.login(UserType::User, Some(&AuthPin::from(pin))) {
        Ok(()) | Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::UserAlreadyLoggedIn, _)) => {}
        Err(error) => return Err(error.into()),
    }
    let handle = (1..1000)
        .rev()
        .find_map(|version| {
            let (class, label) = match op {
                Op::Wrap => (ObjectClass::SECRET_KEY, labels::version_label(key, version)),
                Op::Sign => (ObjectClass::PRIVATE_KEY, labels::pair_label(key, version, KeyType::EcP256)),
            };
            let template = [Attribute::Class(class), Attribute::Label(label.into_bytes())];
            session.find_objects(&template).ok()?.first().copied()
        })
        .with_context(|| format!("no key {key:?} on the token"))?;
    Ok((session, handle))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(args.sessions > 0, "--sessions must be at least 1");
    let pin = std::env::var("KEYMUX_PKCS11_PIN").context("set KEYMUX_PKCS11_PIN")?;
    let context = Pkcs11::new(&args.module)?;
    context.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))?;
    let slot = context
        .get_slots_with_token()?
        .into_iter()
        .find(|s| context.get_token_info(*s).is_ok_and(|i| i.label().trim_end() == args.token))
        .context("no such token")?;
    let stop = Arc::new(AtomicBool::new(false));
    // Every thread and this one meet here once the sessions are open, logged in and have
    // their key (or failed to): the clocks start after the set-up, not before.
    let ready = Arc::new(Barrier::new(args.sessions + 1));
    let threads: Vec<_> = (0..args.sessions)
        .map(|index| {
            let (context, stop, ready, pin, key, op) = (
                context.clone(),
                Arc::clone(&stop),
                Arc::clone(&ready),
                pin.clone(),
                args.key.clone(),
                args.op,
            );
            std::thread::spawn(move || -> anyhow::Result<Measured> {
                let opened = open(&context, slot, &pin, &key, op);
                ready.wait();
                let (session, handle) = opened?;
                let mut histogram = Histogram::<u64>::new(3)?;
                let (dek, aad) = ([7u8; 32], [1u8; 24]);
                let mut counter: u32 = 0;
                let clock = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    let mut iv = [0u8; 12];
                    iv[0] = index as u8;
                    iv[8..].copy_from_slice(&counter.to_be_bytes());
                    counter = counter.wrapping_add(1);
                    let started = Instant::now();
                    match op {
                        Op::Wrap => {
                            let params = GcmParams::new(&mut iv, &aad, 128.into())?;
                            session.encrypt(&Mechanism::AesGcm(params), handle, &dek)?;
                        }
                        // A 32-byte digest, as keymux hands the token after hashing.
                        Op::Sign => drop(session.sign(&Mechanism::Ecdsa, handle, &dek)?),
                    }
                    histogram.record(started.elapsed().as_micros() as u64)?;
                }
                Ok(Measured { histogram, elapsed: clock.elapsed() })
            })
        })
        .collect();
    ready.wait();
    std::thread::sleep(args.duration);
    stop.store(true, Ordering::Relaxed);
    let mut total = Histogram::<u64>::new(3)?;
    // Each thread's operations over its own measured time: they start and stop within
    // microseconds of each other, but no thread is charged another's set-up.
    let mut rate = 0.0;
    let mut measured = Duration::ZERO;
    for thread in threads {
        match thread.join() {
            Ok(result) => {
                let Measured { histogram, elapsed } = result?;
                rate += histogram.len() as f64 / elapsed.as_secs_f64();
                measured = measured.max(elapsed);
                total.add(histogram)?;
            }
            Err(_) => bail!("a session thread panicked"),
        }
    }
    ensure!(!total.is_empty(), "no operation completed in {:?}", args.duration);
    if args.json {
        let json = serde_json::json!({
            "throughput_ops_per_s": rate,
            "ops": total.len(),
            "sessions": args.sessions,
            "measured_s": measured.as_secs_f64(),
            "latency_us": {
                "p50": total.value_at_quantile(0.50),
                "p99": total.value_at_quantile(0.99),
                "p999": total.value_at_quantile(0.999),
            },
        });
        println!("{json}");
        return Ok(());
    }
    let what = match args.op {
        Op::Wrap => "AES-GCM wrap",
        Op::Sign => "ECDSA P-256 sign",
    };
    println!(
        "raw pkcs11 {what}, {} session(s): {:.0} ops/s  p50 {}µs  p99 {}µs  p99.9 {}µs",
        args.sessions,
        rate,
        total.value_at_quantile(0.50),
        total.value_at_quantile(0.99),
        total.value_at_quantile(0.999)
    );
    Ok(())
}
