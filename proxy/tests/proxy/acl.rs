//! Identity-based access control, per-identity limits and the audit log.

use std::sync::Arc;
use std::time::Duration;

use keymux_client::{Client, ClientConfig, Endpoint, Error};
use keymux_proxy::access::ops::OpSet;
use keymux_proxy::config::{AclRule, Config};
use keymux_proxy::keys::{KeyLifecycle, KeyType};
use keymux_test_support::certs::{Issued, Pki, Subject, sdk_client};
use keymux_test_support::proxy::TestProxy;
use keymux_test_support::wait::{wait_until, wait_until_async};

fn rule(matcher: impl FnOnce(&mut AclRule), ops: &[&str], keys: &[&str]) -> AclRule {
    let mut rule = AclRule {
        ops: OpSet::parse(ops.iter().copied()).unwrap(),
        keys: keys.iter().map(|s| (*s).to_owned()).collect(),
        ..AclRule::default()
    };
    matcher(&mut rule);
    rule
}

const OPS: [&str; 4] = ["wrap", "unwrap", "generate_data_key", "rewrap"];
const KEYS: [&str; 3] = ["pay", "hr", "default"];

fn acl(config: &mut Config) {
    config.acl = vec![
        rule(|r| r.cn = Some("svc-pay*".into()), &["wrap", "unwrap", "generate_data_key"], &["pay"]),
        rule(|r| r.ou = Some("auditors".into()), &["unwrap"], &["*"]),
        rule(|r| r.uri = Some("spiffe://test/admin".into()), &["*"], &["*"]),
        rule(|r| r.cn = Some("svc-hr".into()), &["rewrap"], &["h?"]),
    ];
}

async fn proxy_with_keys(pki: &Pki, tweak: impl FnOnce(&mut Config)) -> TestProxy {
    let proxy = TestProxy::start(|config| {
        pki.enable(config);
        tweak(config);
    })
    .await;
    proxy.backend.create_key("pay", KeyType::Aes256).unwrap();
    proxy.backend.create_key("hr", KeyType::Aes256).unwrap();
    proxy.server.refresh_keys().unwrap();
    proxy
}

async fn tls_client(proxy: &TestProxy, pki: &Pki, who: &Issued) -> Client {
    let endpoint = proxy.tls_endpoint();
    sdk_client(endpoint, pki.client_tls(Some(who)), 1).await.unwrap()
}

/// Runs `op` on `key` as `client`: `Ok(true)` allowed, `Ok(false)` FORBIDDEN.
async fn attempt(client: &Client, op: &str, key: &str, blob: &[u8]) -> bool {
    let result = match op {
        "wrap" => client.wrap(key, b"ctx", &[1; 32]).await.map(drop),
        "unwrap" => client.unwrap(b"ctx", blob).await.map(drop),
        "generate_data_key" => client.generate_data_key(key, b"ctx", 32).await.map(drop),
        "rewrap" => client.rewrap(b"ctx", blob).await.map(drop),
        _ => unreachable!(),
    };
    match result {
        Ok(()) => true,
        Err(Error::Forbidden { .. }) => false,
        Err(other) => panic!("{op} on {key}: {other}"),
    }
}

#[tokio::test]
async fn exactly_the_allowed_combinations_succeed_cached_unwraps_included() {
    let pki = Pki::new("ca");
    let audit_dir = tempfile::tempdir().unwrap();
    let audit_path = audit_dir.path().join("audit.jsonl");
    let proxy = proxy_with_keys(&pki, |config| {
        acl(config);
        config.audit.path = Some(audit_path.clone());
    })
    .await;

    let admin = pki.client(Subject { cn: "root", uri: Some("spiffe://test/admin"), ..Subject::default() });
    let identities = [
        ("svc-pay-1", pki.client_cn("svc-pay-1")),
        ("auditor", pki.client(Subject { cn: "reader", ou: Some("auditors"), ..Subject::default() })),
        ("admin", admin.clone()),
        ("svc-hr", pki.client_cn("svc-hr")),
        ("stranger", pki.client_cn("stranger")),
    ];
    let allowed = |who: &str, op: &str, key: &str| match who {
        "svc-pay-1" => key == "pay" && op != "rewrap",
        "auditor" => op == "unwrap",
        "admin" => true,
        "svc-hr" => key == "hr" && op == "rewrap",
        _ => false,
    };

    // Blobs made by the admin, and unwrapped once so every DEK is in the cache.
    let admin_client = tls_client(&proxy, &pki, &admin).await;
    let mut blobs = std::collections::HashMap::new();
    for key in KEYS {
        let blob = admin_client.wrap(key, b"ctx", &[1; 32]).await.unwrap();
        admin_client.unwrap(b"ctx", &blob).await.unwrap();
        blobs.insert(key, blob);
    }
    let hits_before = proxy.server.metrics().cache_hits();

    let mut denied = 0;
    for (who, cert) in &identities {
        let client = tls_client(&proxy, &pki, cert).await;
        for key in KEYS {
            for op in OPS {
                let expected = allowed(who, op, key);
                assert_eq!(attempt(&client, op, key, &blobs[key]).await, expected, "{who} {op} {key}");
                denied += usize::from(!expected);
            }
        }
    }
    let unwraps_allowed =
        identities.iter().map(|(who, _)| KEYS.iter().filter(|k| allowed(who, "unwrap", k)).count());
    assert_eq!(
        proxy.server.metrics().cache_hits() - hits_before,
        unwraps_allowed.sum::<usize>() as u64,
        "allowed unwraps were served from the cache; denied ones never reached it"
    );

    // Every denial is audited, the chain verifies, and no key material is in it.
    proxy.server.audit().sync();
    let log = std::fs::read_to_string(&audit_path).unwrap();
    // Each denial is a record of its own or counted in a flood's `repeated` summary.
    assert_eq!(keymux_test_support::audit::events(&log, "denied"), denied as u64);
    assert!(log.contains("\"principal\":\"stranger\""));
    assert!(!log.contains("ctx"), "no AAD in the audit log");
    let records = keymux_proxy::audit::verify(&audit_path).unwrap().unwrap().records;
    assert_eq!(records, log.lines().count() as u64);
    let cli = std::process::Command::new(env!("CARGO_BIN_EXE_keymux"))
        .args(["audit", "verify"])
        .arg(&audit_path)
        .output()
        .unwrap();
    assert!(cli.status.success(), "{cli:?}");

    // Change one field of one record: detected, and named. (Which line holds the first
    // denial of "stranger" depends on what else was audited, key changes included.)
    let target = log.lines().position(|l| l.contains("\"principal\":\"stranger\"")).unwrap();
    let tampered: Vec<String> = log
        .lines()
        .enumerate()
        .map(|(i, line)| if i == target { line.replacen("stranger", "strangeR", 1) } else { line.to_owned() })
        .collect();
    std::fs::write(&audit_path, tampered.join("\n") + "\n").unwrap();
    let broken = keymux_proxy::audit::verify(&audit_path).unwrap().unwrap_err();
    assert_eq!(broken.line, target + 1);
    let cli = std::process::Command::new(env!("CARGO_BIN_EXE_keymux"))
        .args(["audit", "verify"])
        .arg(&audit_path)
        .output()
        .unwrap();
    assert!(!cli.status.success());
    assert!(String::from_utf8_lossy(&cli.stderr).contains(&format!("line {}", target + 1)), "{cli:?}");
}

#[cfg(unix)]
#[tokio::test]
async fn unix_socket_clients_are_identified_by_uid() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let uid = std::fs::metadata(dir.path()).unwrap().uid();
    let socket = dir.path().join("keymux.sock");
    let proxy = TestProxy::start(|config| {
        config.server.unix_socket = Some(socket.clone());
        config.acl = vec![rule(|r| r.uid = Some(uid), &["wrap"], &["default"])];
    })
    .await;
    let client = Client::connect(ClientConfig::new(vec![Endpoint::unix(&socket)])).await.unwrap();
    client.wrap("default", b"", &[1; 32]).await.unwrap();
    assert!(matches!(client.generate_data_key("default", b"", 32).await, Err(Error::Forbidden { .. })));
    // Plain TCP clients are anonymous: no rule matches them.
    let tcp = Client::connect(ClientConfig::new(vec![Endpoint::from(proxy.addr())])).await.unwrap();
    assert!(matches!(tcp.wrap("default", b"", &[1; 32]).await, Err(Error::Forbidden { .. })));
}

#[tokio::test]
async fn the_rate_limit_answers_busy_for_one_identity_only() {
    let pki = Pki::new("ca");
    let proxy = proxy_with_keys(&pki, |config| {
        config.quotas.rate = 10.0;
        config.quotas.burst = 5;
    })
    .await;
    let greedy = Arc::new(tls_client(&proxy, &pki, &pki.client_cn("greedy")).await);
    let polite = tls_client(&proxy, &pki, &pki.client_cn("polite")).await;
    let calls = (0..40).map(|_| {
        let greedy = Arc::clone(&greedy);
        tokio::spawn(async move { greedy.ping().await })
    });
    let mut busy = 0;
    for call in futures_util::future::join_all(calls).await {
        match call.unwrap() {
            Ok(()) => {}
            Err(Error::Busy { retry_after, .. }) => {
                assert!(
                    retry_after > Duration::ZERO && retry_after <= Duration::from_secs(4),
                    "{retry_after:?}"
                );
                busy += 1;
            }
            Err(other) => panic!("{other}"),
        }
    }
    assert!(busy >= 30, "only the burst (and what the rate refills) went through: {busy} busy");
    for _ in 0..3 {
        polite.ping().await.expect("another identity is unaffected");
    }
}

#[tokio::test]
async fn in_flight_and_connection_limits_answer_busy_for_one_identity_only() {
    let pki = Pki::new("ca");
    let proxy = proxy_with_keys(&pki, |config| {
        config.quotas.max_in_flight = 4;
        config.quotas.max_connections = 2;
        config.batch.executor_threads = 1;
    })
    .await;
    let greedy_cert = pki.client_cn("greedy");
    let greedy = Arc::new(tls_client(&proxy, &pki, &greedy_cert).await);
    let polite = Arc::new(tls_client(&proxy, &pki, &pki.client_cn("polite")).await);

    proxy.gate.close();
    let held: Vec<_> = (0..4)
        .map(|_| {
            let greedy = Arc::clone(&greedy);
            tokio::spawn(async move { greedy.wrap("pay", b"", &[1; 32]).await })
        })
        .collect();
    proxy.gate.wait_for_blocked(1).await;
    wait_until("greedy's four wraps held", Duration::from_secs(5), || proxy.held_back() == 4).await;
    assert!(matches!(greedy.wrap("pay", b"", &[1; 32]).await, Err(Error::Busy { .. })), "a fifth is refused");
    let polite_call = {
        let polite = Arc::clone(&polite);
        tokio::spawn(async move { polite.wrap("pay", b"", &[1; 32]).await })
    };
    wait_until("polite's wrap queued beside them", Duration::from_secs(5), || proxy.held_back() == 5).await;
    proxy.gate.open();
    polite_call.await.unwrap().expect("another identity is not limited");
    for call in held {
        call.await.unwrap().unwrap();
    }
    greedy.wrap("pay", b"", &[1; 32]).await.expect("slots come back when responses are written");

    // Two connections of one identity are the most: a third is answered BUSY.
    let second = tls_client(&proxy, &pki, &greedy_cert).await;
    second.ping().await.unwrap();
    let endpoint = proxy.tls_endpoint();
    let third = sdk_client(endpoint.clone(), pki.client_tls(Some(&greedy_cert)), 1).await;
    assert!(matches!(third, Err(Error::Busy { .. })), "{:?}", third.map(drop));
    // Closing one gives its slot back: a new connection is let in once the proxy has
    // seen the close.
    drop(second);
    let tls = pki.client_tls(Some(&greedy_cert));
    wait_until_async("a closed connection's slot to come back", Duration::from_secs(5), || {
        let (endpoint, tls) = (endpoint.clone(), tls.clone());
        async move {
            match sdk_client(endpoint, tls, 1).await {
                Ok(client) => client.ping().await.is_ok(),
                Err(Error::Busy { .. }) => false,
                Err(other) => panic!("{other}"),
            }
        }
    })
    .await;
    polite.ping().await.unwrap();
}
