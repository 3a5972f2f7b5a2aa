//! Helpers shared by the client's integration tests, which run against the scripted
//! test server from `keymux_client::testing` (a test double, not the proxy).

use std::time::Duration;

use keymux_client::{ClientConfig, Endpoint};

/// A config for `endpoints` with quick backoff, so retry tests stay fast.
pub(crate) fn config(endpoints: Vec<Endpoint>) -> ClientConfig {
    let mut config = ClientConfig::new(endpoints);
    config.backoff_base = Duration::from_millis(1);
    config.backoff_cap = Duration::from_millis(20);
    config.connect_timeout = Duration::from_secs(2);
    config
}
