//! The anchor for HSM-backed wraps: AES-256-GCM encryptions of a 32-byte key in a
//! tight in-process loop, straight through cryptoki, on the same token, key and
//! mechanism keymux uses. Prints ops/s and latency percentiles.
//!
//! ```sh
//! cargo run --release -p keymux-benches --bin pkcs11-raw -- \
//!     --module /usr/lib/softhsm/libsofthsm2.so --token keymux --key default --sessions 1
//! ```
//! The PIN comes from `KEYMUX_PKCS11_PIN`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use hdrhistogram::Histogram;

/// Raw PKCS#11 AES-GCM loop.
#[derive(Parser)]
struct Args {
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

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let pin = std::env::var("KEYMUX_PKCS11_PIN").context("set KEYMUX_PKCS11_PIN")?;
    let context = Pkcs11::new(&args.module)?;
    context.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))?;
    let slot = context
        .get_slots_with_token()?
        .into_iter()
        .find(|s| context.get_token_info(*s).is_ok_and(|i| i.label().trim_end() == args.token))
        .context("no such token")?;
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..args.sessions)
        .map(|index| {
            let (context, stop, pin, key) =
                (context.clone(), Arc::clone(&stop), pin.clone(), args.key.clone());
            std::thread::spawn(move || -> anyhow::Result<Histogram<u64>> {
                let session = context.open_rw_session(slot)?;
                match session.login(UserType::User, Some(&AuthPin::from(pin.as_str()))) {
                    Ok(())
                    | Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::UserAlreadyLoggedIn, _)) =>
                        {}
                    Err(error) => return Err(error.into()),
                }
                let handle = (1..1000)
                    .rev()
                    .find_map(|version| {
                        let label =
                            keymux_proxy::backend::pkcs11::labels::version_label(&key, version).into_bytes();
                        let template = [Attribute::Class(ObjectClass::SECRET_KEY), Attribute::Label(label)];
                        session.find_objects(&template).ok()?.first().copied()
                    })
                    .context("key not found")?;
                let mut histogram = Histogram::<u64>::new(3)?;
                let (dek, aad) = ([7u8; 32], [1u8; 24]);
                let mut counter: u32 = 0;
                while !stop.load(Ordering::Relaxed) {
                    let mut iv = [0u8; 12];
                    iv[0] = index as u8;
                    iv[8..].copy_from_slice(&counter.to_be_bytes());
                    counter = counter.wrapping_add(1);
                    let started = Instant::now();
                    let params = GcmParams::new(&mut iv, &aad, 128.into())?;
                    session.encrypt(&Mechanism::AesGcm(params), handle, &dek)?;
                    histogram.record(started.elapsed().as_micros() as u64)?;
                }
                Ok(histogram)
            })
        })
        .collect();
    std::thread::sleep(args.duration);
    stop.store(true, Ordering::Relaxed);
    let mut total = Histogram::<u64>::new(3)?;
    for thread in threads {
        match thread.join() {
            Ok(histogram) => total.add(histogram?)?,
            Err(_) => bail!("a session thread panicked"),
        }
    }
    let rate = total.len() as f64 / args.duration.as_secs_f64();
    if args.json {
        println!(
            "{{\"throughput_ops_per_s\": {rate:.1}, \"latency_us\": {{\"p50\": {}, \"p99\": {}, \"p999\": {}}}}}",
            total.value_at_quantile(0.50),
            total.value_at_quantile(0.99),
            total.value_at_quantile(0.999)
        );
        return Ok(());
    }
    println!(
        "raw pkcs11 AES-GCM wrap, {} session(s): {:.0} ops/s  p50 {}µs  p99 {}µs  p99.9 {}µs",
        args.sessions,
        rate,
        total.value_at_quantile(0.50),
        total.value_at_quantile(0.99),
        total.value_at_quantile(0.999)
    );
    Ok(())
}
