//! The PKCS#11 backend's metrics, registered into the proxy's one registry by
//! [`crate::backend::Backend::register_metrics`].

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;

/// Counters of one PKCS#11 backend.
#[derive(Clone, Debug, Default)]
pub(crate) struct Pkcs11Metrics {
    /// Executor sessions opened: first opens and reopens after a failure.
    pub(crate) session_opens: Counter,
    /// Sessions found lost (closed, invalidated, logged out) and replaced.
    pub(crate) sessions_lost: Counter,
}

impl Pkcs11Metrics {
    /// Adds every metric to `registry`, under `keymux_pkcs11_`.
    pub(crate) fn register(&self, registry: &mut Registry) {
        let pkcs11 = registry.sub_registry_with_prefix("pkcs11");
        pkcs11.register(
            "session_opens",
            "Executor sessions opened on the token (first opens and reopens after a failure)",
            self.session_opens.clone(),
        );
        pkcs11.register(
            "sessions_lost",
            "Executor sessions found closed or invalidated, and replaced",
            self.sessions_lost.clone(),
        );
    }
}
