//! Helpers shared by the client's integration tests, which run against the scripted
//! test server from `keymux_client::testing` (a test double, not the proxy).

#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use keymux_client::{ClientConfig, Endpoint};

/// A config for `endpoints` with quick backoff, so retry tests stay fast.
pub fn config(endpoints: Vec<Endpoint>) -> ClientConfig {
    let mut config = ClientConfig::new(endpoints);
    config.backoff_base = Duration::from_millis(1);
    config.backoff_cap = Duration::from_millis(20);
    config.connect_timeout = Duration::from_secs(2);
    config
}

/// A loopback TCP endpoint that refuses connections: a port that was just bound and
/// released.
pub fn refused_endpoint() -> Endpoint {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = Endpoint::from(listener.local_addr().unwrap());
    drop(listener);
    endpoint
}
