//! Micro-benches of the proxy's hot paths: the unwrap cache's lookup and the soft
//! keystore's AES-256-GCM wrap and unwrap, per operation and per batch of 64.

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use keymux_protocol::{Reply, SecretBytes};
use keymux_proxy::backend::soft::SoftBackend;
use keymux_proxy::backend::soft::SoftConfig;
use keymux_proxy::backend::{Backend, BatchOp, Op, ParsedBlob, run_collect};
use keymux_proxy::cache::UnwrapCache;
use keymux_proxy::config::CacheConfig;
use keymux_proxy::keys::KeyStore;
use keymux_proxy::telemetry::Metrics;

fn cache(c: &mut Criterion) {
    let cache = UnwrapCache::new(&CacheConfig::default(), Metrics::new());
    let blob = vec![7u8; 93];
    let mut group = c.benchmark_group("cache");
    group.throughput(Throughput::Elements(1));
    group.bench_function("key_for (a 93-byte blob and 16-byte aad)", |b| {
        b.iter(|| cache.key_for(&blob, b"tenant=000000042"))
    });
    let key = cache.key_for(&blob, b"aad");
    group.bench_function("get (miss)", |b| b.iter(|| cache.get(&key)));
    group.finish();
}

fn soft(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let backend = SoftBackend::open(&SoftConfig::throwaway(dir.path())).unwrap();
    let key = backend.list_keys().unwrap().remove(0);
    let mut worker = backend.open_worker().unwrap();
    let wrap =
        || BatchOp::new(Op::Wrap { aad: b"tenant=42".to_vec(), plaintext: SecretBytes::copy_from(&[9; 32]) });
    let Some(Ok(Reply::Wrap { blob })) = run_collect(&mut *worker, &key, &[wrap()]).pop() else {
        panic!("wrap failed")
    };
    let unwrap = || {
        BatchOp::new(Op::Unwrap {
            aad: b"tenant=42".to_vec(),
            blob: ParsedBlob::parse(blob.clone()).unwrap(),
        })
    };

    let mut group = c.benchmark_group("soft AES-256-GCM");
    for batch in [1usize, 64] {
        group.throughput(Throughput::Elements(batch as u64));
        let ops: [(&str, &dyn Fn() -> BatchOp); 2] = [("wrap", &wrap), ("unwrap", &unwrap)];
        for (name, make) in ops {
            group.bench_function(format!("{name}, batch of {batch}"), |b| {
                b.iter_batched(
                    || (0..batch).map(|_| make()).collect::<Vec<_>>(),
                    |ops| run_collect(&mut *worker, &key, &ops),
                    BatchSize::SmallInput,
                )
            });
        }
    }
    group.finish();
}

criterion_group!(benches, cache, soft);
criterion_main!(benches);
