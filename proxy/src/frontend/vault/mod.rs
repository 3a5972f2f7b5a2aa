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
//! | [`auth`] | tokens (by hash) and client certificates to identities; `lookup-self` |
//! | `batch` | one item or a `batch_input`, through `call_many`; Vault's batch statuses |
//! | `ciphertext` | `vault:v<N>:<base64>` and base64 fields |
//! | `transit` | `encrypt`, `decrypt`, `rewrap`, `datakey` |
//! | `signing` | `sign`, `verify` |
//! | `keys` | key list, create, read, rotate, config, delete; Vault's key type names |
//! | `random` | `random` |
//! | `reply` | Vault's response envelope and JSON bodies |
//! | `health` | `sys/health` |

pub mod auth;
mod batch;
mod ciphertext;
pub mod config;
pub mod error;
mod health;
mod keys;
mod random;
mod reply;
mod signing;
mod transit;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{MethodRouter, get, post};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use auth::{TokenError, Tokens};
pub use config::{TokenConfig, VaultConfig};
pub use error::VaultError;

use super::FrontDoor;
use super::http::{HttpListener, HttpListenerError};
use crate::audit::AuditLog;
use crate::keys::{KeyRefresher, KeyRegistry, KeyStore, PublicKeys};
use crate::server::CertReloader;
use crate::telemetry::Metrics;

/// Why the Transit API could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VaultStartError {
    /// The tokens could not be read.
    #[error(transparent)]
    Tokens(#[from] TokenError),
    /// The listener could not start.
    #[error(transparent)]
    Listener(#[from] HttpListenerError),
}

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

/// The handlers' shared state: one `Arc`, so each extractor's clone of it is one
/// atomic increment.
#[derive(Clone)]
pub(crate) struct VaultState(Arc<Shared>);

/// What [`VaultState`] shares.
pub(crate) struct Shared {
    wiring: Wiring,
    tokens: Tokens,
    peers: auth::Peers,
    shutdown: CancellationToken,
    request_timeout: Duration,
    max_batch_items: usize,
    create_keys_on_encrypt: bool,
}

impl std::ops::Deref for VaultState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// Vault writes with POST or PUT alike.
fn write<H, T>(handler: H) -> MethodRouter<VaultState>
where
    H: axum::handler::Handler<T, VaultState>,
    T: 'static,
{
    post(handler.clone()).put(handler)
}

/// The Transit API's routes under `/v1/`, serving `tokens`.
pub fn router(config: &VaultConfig, wiring: Wiring, tokens: Tokens, shutdown: CancellationToken) -> Router {
    let mount = format!("/v1/{}", config.mount);
    let at = |path: &str| format!("{mount}{path}");
    let random = get(random::random).post(random::random).put(random::random);
    Router::new()
        .route("/v1/sys/health", get(health::health).head(health::health))
        .route("/v1/auth/token/lookup-self", get(auth::lookup_self).post(auth::lookup_self))
        .route(&at("/keys"), get(keys::list).fallback(keys::list))
        .route(&at("/keys/{name}"), get(keys::read).post(keys::create).put(keys::create).delete(keys::delete))
        .route(&at("/keys/{name}/rotate"), write(keys::rotate))
        .route(&at("/keys/{name}/config"), write(keys::configure))
        .route(&at("/encrypt/{name}"), write(transit::encrypt))
        .route(&at("/decrypt/{name}"), write(transit::decrypt))
        .route(&at("/rewrap/{name}"), write(transit::rewrap))
        .route(&at("/datakey/{kind}/{name}"), write(transit::datakey))
        .route(&at("/sign/{name}"), write(signing::sign))
        .route(&at("/sign/{name}/{hash}"), write(signing::sign))
        .route(&at("/verify/{name}"), write(signing::verify))
        .route(&at("/verify/{name}/{hash}"), write(signing::verify))
        .route(&at("/random"), random.clone())
        .route(&at("/random/{a}"), random.clone())
        .route(&at("/random/{a}/{b}"), random)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(VaultState(Arc::new(Shared {
            wiring,
            tokens,
            peers: auth::Peers::default(),
            shutdown,
            request_timeout: config.http.request_timeout,
            max_batch_items: config.max_batch_items,
            create_keys_on_encrypt: config.create_keys_on_encrypt,
        })))
}

async fn not_found() -> VaultError {
    VaultError::NotFound("no handler for route".to_owned())
}

async fn method_not_allowed() -> VaultError {
    VaultError::MethodNotAllowed
}

/// Reads the tokens, binds `[vault]`'s listener and serves the API on it until
/// `shutdown`; returns the bound address.
pub async fn start(
    config: &VaultConfig,
    wiring: Wiring,
    reloader: Option<&Arc<CertReloader>>,
    tasks: &TaskTracker,
    shutdown: CancellationToken,
    grace: Duration,
) -> Result<SocketAddr, VaultStartError> {
    let tokens = Tokens::load(&config.tokens)?;
    let listener = HttpListener::bind("vault", config.listen, &config.http, reloader).await?;
    let addr =
        listener.local_addr().map_err(|source| HttpListenerError::Bind { address: config.listen, source })?;
    let app = router(config, wiring, tokens, shutdown.clone());
    listener.spawn(app, error::reject, tasks, shutdown, grace);
    tracing::info!(%addr, mount = %config.mount, "Vault Transit API listening");
    Ok(addr)
}
