//! Live config reload (server/live.rs): no request fails across reloads under load, a
//! changed ACL applies to the next request of an open connection, and a reload that
//! touches a restart-only setting changes nothing and names it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use keymux_client::Error;
use keymux_proxy::access::ops::OpSet;
use keymux_proxy::config::{AclRule, Config};
use keymux_proxy::server::ReloadError;
use keymux_test_support::proxy::{TestProxy, client_for};

fn anyone(ops: &[&str], keys: &[&str]) -> AclRule {
    AclRule {
        any: true,
        ops: OpSet::parse(ops.iter().copied()).unwrap(),
        keys: keys.iter().map(|s| (*s).to_owned()).collect(),
        ..AclRule::default()
    }
}

/// The config in service, changed by `tweak`.
fn edited(proxy: &TestProxy, tweak: impl FnOnce(&mut Config)) -> Config {
    let mut config = (*proxy.server.live().current()).clone();
    tweak(&mut config);
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_request_fails_across_ten_reloads_under_load() {
    let audit_dir = tempfile::tempdir().unwrap();
    let audit_path = audit_dir.path().join("audit.jsonl");
    let proxy = TestProxy::start(|config| {
        config.cache.enabled = true;
        config.audit.path = Some(audit_path.clone());
        config.acl = vec![anyone(&["wrap", "unwrap", "generate_data_key"], &["*"])];
        config.quotas.rate = 1_000_000.0;
        config.quotas.burst = 100_000;
    })
    .await;
    proxy.create_key("load");
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for worker in 0..8u8 {
        let client = Arc::new(client_for(&proxy).await);
        let (stop, done) = (Arc::clone(&stop), Arc::clone(&done));
        workers.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let result = async {
                    let blob = client.wrap("load", b"aad", &[worker; 32]).await?;
                    let plain = client.unwrap(b"aad", &blob).await?;
                    assert_eq!(plain.expose(), &[worker; 32]);
                    client.unwrap(b"aad", &blob).await?;
                    Ok::<_, Error>(())
                }
                .await;
                match result {
                    Ok(()) => done.fetch_add(1, Ordering::Relaxed),
                    Err(error) => {
                        failures.push(error.to_string());
                        0
                    }
                };
            }
            failures
        }));
    }
    for round in 0..10u32 {
        tokio::time::sleep(Duration::from_millis(60)).await;
        let config = edited(&proxy, |config| {
            config.batch.max_batch = [1, 64, 8, 4096][round as usize % 4];
            config.batch.max_delay = Duration::from_micros(u64::from(round % 3) * 100);
            config.cache.ttl = Duration::from_secs(60 + u64::from(round));
            config.quotas.burst = 100_000 + round;
            config.acl.push(anyone(&["rewrap"], &[&format!("other-{round}")]));
            config.server.max_connections_per_source = 1000 + round as usize;
        });
        let outcome = tokio::task::spawn_blocking({
            let live = Arc::clone(proxy.server.live());
            move || live.apply(config, "test")
        })
        .await
        .unwrap()
        .unwrap();
        assert!(outcome.changes.iter().any(|c| c.starts_with("acl: ")), "{outcome:?}");
    }
    tokio::time::sleep(Duration::from_millis(60)).await;
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        let failures = worker.await.unwrap();
        assert!(failures.is_empty(), "requests failed across reloads: {failures:?}");
    }
    let done = done.load(Ordering::Relaxed);
    eprintln!("{done} wrap+unwrap+unwrap rounds across ten reloads, none failed");
    assert!(done > 10, "the load ran");
    assert_eq!(proxy.server.live().current().batch.max_batch, 64, "the last reload's");

    proxy.server.audit().sync();
    let log = std::fs::read_to_string(&audit_path).unwrap();
    let reloads: Vec<&str> = log.lines().filter(|line| line.contains("\"config_reload\"")).collect();
    assert_eq!(reloads.len(), 10, "every reload is audited");
    assert!(reloads[1].contains("batch.max_batch: 1 -> 64"), "{}", reloads[1]);
    assert!(keymux_proxy::audit::verify(&audit_path).unwrap().is_ok());
}

#[tokio::test]
async fn a_changed_acl_applies_to_the_next_request_on_an_open_connection() {
    let proxy = TestProxy::start(|config| config.acl = vec![anyone(&["wrap", "unwrap"], &["k"])]).await;
    proxy.create_key("k");
    let client = client_for(&proxy).await;
    let blob = client.wrap("k", b"", &[7; 32]).await.unwrap();

    let config = edited(&proxy, |config| config.acl = vec![anyone(&["unwrap"], &["k"])]);
    proxy.server.live().apply(config, "test").unwrap();
    assert!(matches!(client.wrap("k", b"", &[7; 32]).await, Err(Error::Forbidden { .. })));
    client.unwrap(b"", &blob).await.unwrap();

    let config = edited(&proxy, |config| config.acl = vec![anyone(&["wrap", "unwrap"], &["k"])]);
    proxy.server.live().apply(config, "test").unwrap();
    client.wrap("k", b"", &[7; 32]).await.unwrap();
}

#[tokio::test]
async fn restart_only_settings_are_named_and_nothing_changes() {
    let proxy = TestProxy::start(|_| {}).await;
    let config = edited(&proxy, |config| {
        config.server.listen = "127.0.0.1:1".parse().unwrap();
        config.batch.queue_capacity = 7;
        config.batch.max_batch = 3;
    });
    let error = proxy.server.live().apply(config, "test").unwrap_err();
    let ReloadError::RestartRequired { keys } = &error else { panic!("{error}") };
    assert_eq!(keys, &["server.listen", "batch.queue_capacity"]);
    assert!(error.to_string().contains("server.listen"), "{error}");
    assert_eq!(proxy.server.live().current().batch.max_batch, 64, "nothing applied");

    let invalid = edited(&proxy, |config| config.batch.max_batch = 0);
    let error = proxy.server.live().apply(invalid, "test").unwrap_err();
    assert!(error.to_string().contains("batch.max_batch"), "{error}");
    assert_eq!(proxy.server.live().current().batch.max_batch, 64);
}
