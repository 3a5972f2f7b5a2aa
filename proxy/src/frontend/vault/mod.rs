//! The Vault Transit-compatible HTTP API: existing Vault and OpenBao clients (hvac, the
//! Vault SDKs, Tink's hcvault, the Kubernetes vault-kms plugin) use keymux by changing
//! an address. See `docs/VAULT.md`.
//!
//! A thin translation, as every front end is: a request is authenticated to an
//! [`Identity`](crate::access::identity::Identity), turned into router requests through
//! the [`FrontDoor`], and the answers turned back into Vault's JSON. `batch_input`
//! items go to the router together ([`FrontDoor::call_many`]), so they batch on the key
//! queues. There is no crypto here.
//!
//! | module | what it holds |
//! |---|---|
//! | [`config`] | `[vault]`, `[[vault.tokens]]` |
//! | [`error`] | [`VaultError`] and its mapping to Vault's statuses |
//! | `health` | `sys/health` |

pub mod config;
pub mod error;
mod health;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::{TokenConfig, VaultConfig};
pub use error::VaultError;

use super::FrontDoor;
use super::http::{HttpListener, HttpListenerError};
use crate::audit::AuditLog;
use crate::keys::{KeyRefresher, KeyRegistry, KeyStore, PublicKeys};
use crate::server::CertReloader;
use crate::telemetry::Metrics;

/// What the Transit API reaches into the running proxy for.
#[derive(Clone)]
pub struct Wiring {
    /// The router.
    pub front_door: FrontDoor,
    /// Key administration (create, rotate, configure).
    pub store: Arc<dyn KeyStore>,
    /// Makes the router see keys changed through the API at once.
    pub refresher: Arc<KeyRefresher>,
    /// The keys as the router sees them (key reads and lists).
    pub registry: Arc<KeyRegistry>,
    /// Signing keys' public keys (key reads).
    pub public_keys: Arc<PublicKeys>,
    /// Admin actions through the API are recorded here.
    pub audit: AuditLog,
    /// The proxy's metrics (health reads the audit log's state).
    pub metrics: Arc<Metrics>,
}

/// The handlers' shared state.
#[derive(Clone)]
pub(crate) struct VaultState {
    wiring: Wiring,
    shutdown: CancellationToken,
}

/// The Transit API's routes under `/v1/`.
pub fn router(config: &VaultConfig, wiring: Wiring, shutdown: CancellationToken) -> Router {
    let _mount = &config.mount;
    Router::new()
        .route("/v1/sys/health", get(health::health).head(health::health))
        .fallback(not_found)
        .with_state(VaultState { wiring, shutdown })
}

async fn not_found() -> VaultError {
    VaultError::NotFound("no handler for route".to_owned())
}

/// Binds `[vault]`'s listener and serves the API on it until `shutdown`; returns the
/// bound address.
pub async fn start(
    config: &VaultConfig,
    wiring: Wiring,
    reloader: Option<&Arc<CertReloader>>,
    tasks: &TaskTracker,
    shutdown: CancellationToken,
    grace: Duration,
) -> Result<SocketAddr, HttpListenerError> {
    let listener = HttpListener::bind("vault", config.listen, &config.http, reloader).await?;
    let addr =
        listener.local_addr().map_err(|source| HttpListenerError::Bind { address: config.listen, source })?;
    let app = router(config, wiring, shutdown.clone());
    listener.spawn(app, error::reject, tasks, shutdown, grace);
    tracing::info!(%addr, mount = %config.mount, "Vault Transit API listening");
    Ok(addr)
}
