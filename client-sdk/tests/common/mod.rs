//! Helpers shared by the client's integration tests, which run against the scripted
//! test server from `keymux_client::testing` (a test double, not the proxy).

use std::time::{Duration, Instant};

use keymux_client::{ClientConfig, Endpoint};

/// A config for `endpoints` with quick backoff, so retry tests stay fast.
pub(crate) fn config(endpoints: Vec<Endpoint>) -> ClientConfig {
    let mut config = ClientConfig::new(endpoints);
    config.backoff_base = Duration::from_millis(1);
    config.backoff_cap = Duration::from_millis(20);
    config.connect_timeout = Duration::from_secs(2);
    config
}

/// Waits until `condition` holds, checking every 5 ms, and panics naming `what` after
/// `timeout`. (The proxy's tests have the same in `keymux-test-support`, which the SDK's
/// tests do not depend on: they need no proxy.)
pub(crate) async fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < timeout, "waited {timeout:?} for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
