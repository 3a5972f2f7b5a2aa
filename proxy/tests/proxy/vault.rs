//! The Vault Transit-compatible API end to end, through hyper's client (the hvac and
//! OpenBao side-by-side tests are in tests/python/test_vault.py).

use keymux_test_support::http::{HttpClient, Version};
use keymux_test_support::proxy::{TestProxy, enable_vault};
use serde_json::Value;

#[tokio::test]
async fn sys_health_answers_over_http1_and_http2() {
    let proxy = TestProxy::start(|config| {
        enable_vault(config);
    })
    .await;
    let addr = proxy.server.vault_addr().unwrap();
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
