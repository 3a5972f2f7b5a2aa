//! The Vault Transit-compatible API end to end, through hyper's client: auth, every
//! endpoint, batches (in order, per-item errors, batched on the key queue for real),
//! and the 403/404/429 paths. hvac and the side-by-side run against OpenBao are in
//! tests/python/test_vault.py.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use keymux_proxy::access::ops::OpSet;
use keymux_proxy::config::{AclRule, Config};
use keymux_test_support::http::{Answer, HttpClient, Version};
use keymux_test_support::metrics::metric;
use keymux_test_support::proxy::{TestProxy, VaultToken, enable_vault};
use serde_json::{Value, json};

fn rule(token: &str, ops: &[&str], keys: &[&str]) -> AclRule {
    AclRule {
        token: Some(token.into()),
        ops: OpSet::parse(ops.iter().copied()).unwrap(),
        keys: keys.iter().map(|k| (*k).to_owned()).collect(),
        ..AclRule::default()
    }
}

/// A proxy with the Transit API, the `root` token (every operation, key management
/// included) and the `app` token (encrypt and decrypt on `app-*` only).
struct Vault {
    proxy: TestProxy,
    root: VaultToken,
    app: VaultToken,
}

impl Vault {
    async fn start(tweak: impl FnOnce(&mut Config)) -> Self {
        let root = VaultToken::new("root", "root-token");
        let app = VaultToken::new("app", "app-token");
        let proxy = TestProxy::start(|config| {
            enable_vault(config).tokens = vec![root.entry(), app.entry()];
            config.acl = vec![
                rule("root", &["*", "manage_keys"], &["*"]),
                rule("app", &["wrap", "unwrap"], &["app-*"]),
            ];
            tweak(config);
        })
        .await;
        Self { proxy, root, app }
    }

    async fn client(&self) -> HttpClient {
        HttpClient::connect(self.proxy.server.vault_addr().unwrap(), Version::Http1).await.unwrap()
    }

    /// `method /v1/transit/<path>` as root.
    async fn root(&self, method: &str, path: &str, body: Value) -> Answer {
        let path = format!("/v1/transit/{path}");
        self.client().await.call(method, &path, Some(&self.root.token), body).await
    }
}

fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

#[tokio::test]
async fn sys_health_answers_over_http1_and_http2() {
    let vault = Vault::start(|_| {}).await;
    let addr = vault.proxy.server.vault_addr().unwrap();
    for version in [Version::Http1, Version::Http2] {
        let mut client = HttpClient::connect(addr, version).await.unwrap();
        let health = client.call("GET", "/v1/sys/health", None, Value::Null).await;
        assert_eq!(health.status, 200, "{version:?}: {}", health.text);
        assert_eq!(health.json["initialized"], true);
        assert_eq!(health.json["sealed"], false);
        assert!(health.json["server_time_utc"].as_u64().unwrap() > 0);
        let unknown = client.call("GET", "/v1/nowhere", None, Value::Null).await;
        assert_eq!(unknown.status, 404);
        assert!(unknown.json["errors"].is_array(), "Vault's error body: {}", unknown.text);
    }
}

#[tokio::test]
async fn tokens_are_checked_and_looked_up() {
    let vault = Vault::start(|_| {}).await;
    let mut client = vault.client().await;
    let body = json!({ "plaintext": b64(b"x") });
    for token in [None, Some("wrong")] {
        let refused = client.call("POST", "/v1/transit/encrypt/default", token, body.clone()).await;
        assert_eq!(refused.status, 403, "{token:?}");
        assert_eq!(refused.json, json!({ "errors": ["permission denied"] }));
    }
    let bearer = format!("Bearer {}", vault.app.token);
    let me = client
        .send("GET", "/v1/auth/token/lookup-self", &[("authorization", &bearer)], Vec::new())
        .await
        .unwrap();
    assert_eq!(me.status, 200, "{}", me.text);
    assert_eq!(me.json["data"]["display_name"], "app");
    assert_eq!(me.json["data"]["meta"]["principal"], "token:app");
    assert!(!me.text.contains("app-token"), "the token is never echoed");
}

#[tokio::test]
async fn keys_are_created_read_listed_rotated_and_configured() {
    let vault = Vault::start(|_| {}).await;
    let created = vault.root("POST", "keys/orders", json!({})).await;
    assert_eq!(created.status, 200, "{}", created.text);
    let key = &created.json["data"];
    assert_eq!(key["type"], "aes256-gcm96");
    assert_eq!(key["latest_version"], 1);
    assert_eq!(key["supports_encryption"], true);
    assert_eq!(key["supports_signing"], false);
    assert!(key["keys"]["1"].as_u64().unwrap() > 0, "creation time: {key}");

    let signer = vault.root("POST", "keys/signer", json!({ "type": "ecdsa-p256" })).await;
    let version = &signer.json["data"]["keys"]["1"];
    assert_eq!(version["name"], "P-256");
    assert!(version["public_key"].as_str().unwrap().starts_with("-----BEGIN PUBLIC KEY-----"), "{version}");

    let listed = vault.root("LIST", "keys", Value::Null).await;
    let names = listed.json["data"]["keys"].as_array().unwrap().clone();
    assert!(names.contains(&json!("orders")) && names.contains(&json!("signer")), "{names:?}");
    assert_eq!(vault.root("GET", "keys?list=true", Value::Null).await.json["data"]["keys"], json!(names));

    let rotated = vault.root("POST", "keys/orders/rotate", Value::Null).await;
    assert_eq!(rotated.json["data"]["latest_version"], 2, "{}", rotated.text);
    let old = vault.root("POST", "encrypt/orders", json!({ "plaintext": b64(b"old") })).await;
    assert_eq!(old.json["data"]["key_version"], 2);
    let configured = vault.root("POST", "keys/orders/config", json!({ "min_decryption_version": 2 })).await;
    assert_eq!(configured.json["data"]["min_decryption_version"], 2, "{}", configured.text);

    let refused = vault.root("POST", "keys/orders/config", json!({ "deletion_allowed": true })).await;
    assert_eq!(refused.status, 400);
    assert_eq!(vault.root("DELETE", "keys/orders", Value::Null).await.status, 400);
    assert_eq!(vault.root("GET", "keys/absent", Value::Null).await.status, 404);
    assert_eq!(vault.root("POST", "keys/bad", json!({ "type": "chacha20-poly1305" })).await.status, 400);
}

#[tokio::test]
async fn encrypt_decrypt_rewrap_and_datakey_round_trip_with_associated_data() {
    let vault = Vault::start(|_| {}).await;
    vault.root("POST", "keys/k", json!({})).await;
    let aad = b64(b"tenant-7");
    let sealed =
        vault.root("POST", "encrypt/k", json!({ "plaintext": b64(b"secret"), "associated_data": aad })).await;
    assert_eq!(sealed.status, 200, "{}", sealed.text);
    let ciphertext = sealed.json["data"]["ciphertext"].as_str().unwrap().to_owned();
    assert!(ciphertext.starts_with("vault:v1:"), "{ciphertext}");

    let opened =
        vault.root("POST", "decrypt/k", json!({ "ciphertext": ciphertext, "associated_data": aad })).await;
    assert_eq!(opened.json["data"]["plaintext"], b64(b"secret"));
    let wrong = vault
        .root("POST", "decrypt/k", json!({ "ciphertext": ciphertext, "associated_data": b64(b"x") }))
        .await;
    assert_eq!(wrong.status, 400, "another context does not authenticate");

    vault.root("POST", "keys/k/rotate", Value::Null).await;
    let rewrapped =
        vault.root("POST", "rewrap/k", json!({ "ciphertext": ciphertext, "associated_data": aad })).await;
    let new = rewrapped.json["data"]["ciphertext"].as_str().unwrap().to_owned();
    assert!(new.starts_with("vault:v2:"), "{}", rewrapped.text);
    let opened = vault.root("POST", "decrypt/k", json!({ "ciphertext": new, "associated_data": aad })).await;
    assert_eq!(opened.json["data"]["plaintext"], b64(b"secret"), "rewrap kept the associated data");

    let plain = vault.root("POST", "datakey/plaintext/k", json!({ "bits": 128 })).await;
    let data_key = B64.decode(plain.json["data"]["plaintext"].as_str().unwrap()).unwrap();
    assert_eq!(data_key.len(), 16);
    let opened =
        vault.root("POST", "decrypt/k", json!({ "ciphertext": plain.json["data"]["ciphertext"] })).await;
    assert_eq!(B64.decode(opened.json["data"]["plaintext"].as_str().unwrap()).unwrap(), data_key);
    let wrapped = vault.root("POST", "datakey/wrapped/k", json!({})).await;
    assert!(wrapped.json["data"].get("plaintext").is_none(), "{}", wrapped.text);
    let batch = vault
        .root("POST", "datakey/wrapped/k", json!({ "batch_input": [{}, { "bits": 512 }, { "bits": 7 }] }))
        .await;
    let results = batch.json["data"]["batch_results"].as_array().unwrap();
    assert!(results[0]["ciphertext"].is_string() && results[1]["ciphertext"].is_string());
    assert!(results[2]["error"].is_string(), "datakey batches, item errors included: {}", batch.text);

    let elsewhere =
        vault.root("POST", "decrypt/default", json!({ "ciphertext": new, "associated_data": aad })).await;
    assert_eq!(elsewhere.status, 400, "a ciphertext of another key");
    for garbage in ["vault:v1:!!!", "nonsense", "vault:v1:S01Y"] {
        assert_eq!(
            vault.root("POST", "decrypt/k", json!({ "ciphertext": garbage })).await.status,
            400,
            "{garbage}"
        );
    }
    assert_eq!(vault.root("POST", "encrypt/absent", json!({ "plaintext": b64(b"x") })).await.status, 404);
    assert_eq!(vault.root("POST", "encrypt/k", json!({ "plaintext": "%%" })).await.status, 400);
    assert_eq!(
        vault.root("POST", "encrypt/k", json!({ "plaintext": b64(b"x"), "context": "eA==" })).await.status,
        400
    );
    let random = vault.root("POST", "random/24", json!({ "format": "hex" })).await;
    assert_eq!(random.json["data"]["random_bytes"].as_str().unwrap().len(), 48, "{}", random.text);
}

#[tokio::test]
async fn batches_answer_in_order_with_their_own_errors_and_batch_on_the_queue() {
    let vault = Vault::start(|config| config.batch.executor_threads = 1).await;
    vault.root("POST", "keys/k", json!({})).await;
    let items: Vec<Value> = (0..200u32)
        .map(|i| {
            if i == 17 {
                json!({ "plaintext": "not base64!", "reference": "bad" })
            } else {
                json!({ "plaintext": b64(&i.to_be_bytes()), "reference": format!("r{i}") })
            }
        })
        .collect();
    let before = metric(&vault.proxy.scrape().await, "keymux_batch_size_count");
    vault.proxy.gate.close();
    let gate = vault.proxy.gate.clone();
    let opener = tokio::spawn(async move {
        gate.wait_for_blocked(1).await;
        gate.open();
    });
    let body = json!({ "batch_input": items, "partial_failure_response_code": 200 });
    let sealed = vault.root("POST", "encrypt/k", body).await;
    opener.await.unwrap();
    assert_eq!(sealed.status, 200, "one failed item does not fail the others");
    let results = sealed.json["data"]["batch_results"].as_array().unwrap().clone();
    assert_eq!(results.len(), 200);
    assert_eq!(results[17]["reference"], "bad");
    assert!(results[17]["error"].as_str().unwrap().contains("base64"), "{}", results[17]);
    let page = vault.proxy.scrape().await;
    let batches = metric(&page, "keymux_batch_size_count") - before;
    assert!(batches < 50.0, "199 items went to the backend in {batches} batches");

    let decrypts: Vec<Value> = results
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 17)
        .map(|(_, r)| json!({ "ciphertext": r["ciphertext"], "reference": r["reference"] }))
        .chain([json!({ "ciphertext": "vault:v1:AAAA", "reference": "garbage" })])
        .collect();
    let opened = vault.root("POST", "decrypt/k", json!({ "batch_input": decrypts })).await;
    assert_eq!(opened.status, 400, "a failed item makes the batch 400, as in Vault");
    let opened = opened.json["data"]["batch_results"].as_array().unwrap().clone();
    for (n, result) in opened[..199].iter().enumerate() {
        let i = if n < 17 { n } else { n + 1 } as u32;
        assert_eq!(result["reference"], format!("r{i}"), "in order");
        assert_eq!(result["plaintext"], b64(&i.to_be_bytes()), "item {i}");
    }
    assert!(opened[199]["error"].is_string() && opened[199]["plaintext"] == "", "{}", opened[199]);

    let all_bad = vault.root("POST", "encrypt/k", json!({ "batch_input": [{ "plaintext": "%" }] })).await;
    assert_eq!(all_bad.status, 400, "every item failed: 400 ({})", all_bad.text);
    let too_many: Vec<Value> = (0..10_001).map(|_| json!({ "plaintext": "" })).collect();
    assert_eq!(vault.root("POST", "encrypt/k", json!({ "batch_input": too_many })).await.status, 400);
}

#[tokio::test]
async fn signing_keys_sign_and_verify_singly_and_in_batches() {
    let vault = Vault::start(|_| {}).await;
    for (vault_type, hash) in [("ecdsa-p256", "sha2-256"), ("ecdsa-p384", "sha2-384"), ("ed25519", "")] {
        let name = format!("sig-{vault_type}");
        let created = vault.root("POST", &format!("keys/{name}"), json!({ "type": vault_type })).await;
        assert_eq!(created.status, 200, "{}", created.text);
        let input = b64(b"message");
        let signed = vault.root("POST", &format!("sign/{name}"), json!({ "input": input })).await;
        let signature = signed.json["data"]["signature"].as_str().unwrap().to_owned();
        assert!(signature.starts_with("vault:v1:"), "{}", signed.text);
        let checked = vault
            .root("POST", &format!("verify/{name}"), json!({ "input": input, "signature": signature }))
            .await;
        assert_eq!(checked.json["data"]["valid"], true, "{vault_type}: {}", checked.text);
        let other = vault
            .root(
                "POST",
                &format!("verify/{name}"),
                json!({ "input": b64(b"other"), "signature": signature }),
            )
            .await;
        assert_eq!(other.json["data"]["valid"], false);
        let batch = vault
            .root(
                "POST",
                &format!("sign/{name}"),
                json!({ "batch_input": [{ "input": input }, { "input": "%" }] }),
            )
            .await;
        let results = batch.json["data"]["batch_results"].as_array().unwrap();
        assert!(results[0]["signature"].is_string() && results[1]["error"].is_string(), "{}", batch.text);
        if !hash.is_empty() {
            let path = format!("sign/{name}/{hash}");
            assert_eq!(vault.root("POST", &path, json!({ "input": input })).await.status, 200);
            let wrong = vault.root("POST", &format!("sign/{name}/sha2-512"), json!({ "input": input })).await;
            assert_eq!(wrong.status, 400, "another hash is refused, not ignored");
        }
    }
    assert_eq!(
        vault.root("POST", "sign/default", json!({ "input": "eA==" })).await.status,
        400,
        "a wrapping key"
    );
}

#[tokio::test]
async fn the_acl_applies_per_key_and_op_and_to_key_management() {
    let vault = Vault::start(|_| {}).await;
    vault.proxy.create_key("app-1");
    let mut client = vault.client().await;
    let app = Some(vault.app.token.as_str());
    let body = json!({ "plaintext": b64(b"x") });
    let sealed = client.call("POST", "/v1/transit/encrypt/app-1", app, body.clone()).await;
    assert_eq!(sealed.status, 200, "{}", sealed.text);
    assert_eq!(client.call("POST", "/v1/transit/encrypt/default", app, body.clone()).await.status, 403);
    let rewrap = json!({ "ciphertext": sealed.json["data"]["ciphertext"] });
    assert_eq!(
        client.call("POST", "/v1/transit/rewrap/app-1", app, rewrap).await.status,
        403,
        "no rewrap op"
    );
    assert_eq!(
        client.call("POST", "/v1/transit/keys/app-2", app, json!({})).await.status,
        403,
        "no manage_keys"
    );
    assert_eq!(client.call("POST", "/v1/transit/keys/app-1/rotate", app, Value::Null).await.status, 403);
    let listed = client.call("LIST", "/v1/transit/keys", app, Value::Null).await;
    assert_eq!(listed.json["data"]["keys"], json!(["app-1"]), "only the keys it may use");
}

#[tokio::test]
async fn a_full_queue_answers_429_with_retry_after() {
    let root = VaultToken::new("root", "root-token");
    let proxy = TestProxy::start(|config| {
        config.batch.executor_threads = 1;
        config.batch.queue_capacity = 4;
        config.batch.max_batch = 1;
        enable_vault(config).tokens = vec![root.entry()];
        config.acl = vec![rule("root", &["*"], &["*"])];
    })
    .await;
    proxy.gate.close();
    let items: Vec<Value> = (0..32).map(|_| json!({ "plaintext": b64(b"x") })).collect();
    let mut client = HttpClient::connect(proxy.server.vault_addr().unwrap(), Version::Http2).await.unwrap();
    let gate = proxy.gate.clone();
    let opener = tokio::spawn(async move {
        gate.wait_for_blocked(1).await;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        gate.open();
    });
    let batch = client
        .call("POST", "/v1/transit/encrypt/default", Some(&root.token), json!({ "batch_input": items }))
        .await;
    opener.await.unwrap();
    let results = batch.json["data"]["batch_results"].as_array().unwrap();
    let busy =
        results.iter().filter(|r| r["error"].as_str().is_some_and(|e| e.contains("overloaded"))).count();
    assert!(busy > 0, "a queue of 4 refuses some of 32: {}", batch.text);
}

#[tokio::test]
async fn a_request_over_the_identitys_rate_answers_429_with_retry_after() {
    let root = VaultToken::new("root", "root-token");
    let proxy = TestProxy::start(|config| {
        enable_vault(config).tokens = vec![root.entry()];
        config.acl = vec![rule("root", &["*"], &["*"])];
        config.quotas.rate = 0.5;
        config.quotas.burst = 1;
    })
    .await;
    let mut client = HttpClient::connect(proxy.server.vault_addr().unwrap(), Version::Http1).await.unwrap();
    let body = json!({ "plaintext": b64(b"x") });
    let first = client.call("POST", "/v1/transit/encrypt/default", Some(&root.token), body.clone()).await;
    assert_eq!(first.status, 200, "{}", first.text);
    let mut second = first;
    for _ in 0..5 {
        second = client.call("POST", "/v1/transit/encrypt/default", Some(&root.token), body.clone()).await;
        if second.status != 200 {
            break;
        }
    }
    assert_eq!(second.status, 429, "the burst spent, then: {}", second.text);
    let retry_after: u64 = second.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
}

#[tokio::test]
async fn encrypt_creates_a_missing_key_only_when_configured_and_allowed() {
    let vault = Vault::start(|config| config.vault.as_mut().unwrap().create_keys_on_encrypt = true).await;
    let sealed = vault.root("POST", "encrypt/fresh", json!({ "plaintext": b64(b"x") })).await;
    assert_eq!(sealed.status, 200, "{}", sealed.text);
    assert_eq!(vault.root("GET", "keys/fresh", Value::Null).await.json["data"]["type"], "aes256-gcm96");
    let signing =
        vault.root("POST", "encrypt/fresh-2", json!({ "plaintext": b64(b"x"), "type": "ed25519" })).await;
    assert_eq!(signing.status, 400, "encrypt creates wrapping keys only");
    let mut client = vault.client().await;
    let app = Some(vault.app.token.as_str());
    let refused =
        client.call("POST", "/v1/transit/encrypt/app-new", app, json!({ "plaintext": b64(b"x") })).await;
    assert_eq!(refused.status, 404, "no manage_keys: no key made ({})", refused.text);

    let off = Vault::start(|_| {}).await;
    assert_eq!(
        off.root("POST", "encrypt/fresh", json!({ "plaintext": b64(b"x") })).await.status,
        404,
        "off by default"
    );
}

#[tokio::test]
async fn a_client_certificate_authenticates_without_a_token_under_mtls() {
    use keymux_proxy::config::ClientAuth;
    use keymux_test_support::certs::Pki;

    let pki = Pki::new("ca");
    let proxy = TestProxy::start(|config| {
        let mut tls = pki.server_config(ClientAuth::Optional);
        tls.listen = None;
        config.tls = Some(tls);
        let vault = enable_vault(config);
        vault.http.tls = true;
        vault.http.client_auth = Some(ClientAuth::Optional);
        config.acl = vec![AclRule {
            cn: Some("billing".into()),
            ops: OpSet::parse(["wrap", "unwrap"]).unwrap(),
            keys: vec!["default".into()],
            ..AclRule::default()
        }];
    })
    .await;
    let addr = proxy.server.vault_addr().unwrap();
    let me = pki.client_cn("billing");
    let tls13 = &rustls::version::TLS13;
    let body = json!({ "plaintext": b64(b"x") });
    for version in [Version::Http1, Version::Http2] {
        let mut client = HttpClient::connect_tls(addr, version, &pki, Some(&me), tls13).await.unwrap();
        let sealed = client.call("POST", "/v1/transit/encrypt/default", None, body.clone()).await;
        assert_eq!(sealed.status, 200, "{version:?}: {}", sealed.text);
        let me_too = client.call("GET", "/v1/auth/token/lookup-self", None, Value::Null).await;
        assert_eq!(me_too.json["data"]["meta"]["principal"], "billing");
        let mut anonymous = HttpClient::connect_tls(addr, version, &pki, None, tls13).await.unwrap();
        assert_eq!(
            anonymous.call("POST", "/v1/transit/encrypt/default", None, body.clone()).await.status,
            403
        );
    }
}
