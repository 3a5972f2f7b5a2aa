//! Starting, running and stopping the proxy.
//!
//! Shutdown is broadcast then drain: a cancellation token stops every listener and
//! every connection's reader; connections then wait (up to `shutdown_grace`) for their
//! in-flight requests to be answered; the executors stop last.

mod admin_http;
mod admission;
pub(crate) mod connection;
mod console;
mod health;
mod listener;
mod live;
mod operator_http;
pub mod peer;
pub mod readiness;
mod reload;
pub mod responder;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use connection::{ConnectionContext, serve};
pub use live::{LiveConfig, Overlay, ReloadError, ReloadOutcome};
pub use readiness::{Drain, NotReady, Readiness};
pub use reload::CertReloader;
pub(crate) use reload::HttpTlsTarget;

use crate::access::acl::Acl;
use crate::access::quota::QuotaRegistry;
use crate::audit::{AuditLog, Event};
use crate::backend::{Backend, BackendFault, OpenError};
use crate::batch::{Executors, KeyQueues};
use crate::cache::UnwrapCache;
use crate::config::{ClientAuth, Config};
use crate::frontend::FrontDoor;
use crate::keys::{KeyRefresher, KeyRegistry, KeyStore, PublicKeys};
use crate::router::{Router, ServerInfo};
use crate::telemetry::Metrics;
use crate::transport::quic::QuicAcceptor;
use crate::transport::tcp::TcpAcceptor;
use crate::transport::tls::{self, TlsAcceptor, TlsError};

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A listener could not bind.
    #[error("cannot listen on {what} {address}: {source}")]
    Bind {
        /// Which listener (`tcp`, `unix`, `admin`).
        what: &'static str,
        /// Where.
        address: String,
        /// Why.
        source: std::io::Error,
    },
    /// The backend could not be opened.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// The backend could not list its keys.
    #[error("backend: {0}")]
    Backend(#[from] BackendFault),
    /// Executor threads could not be started.
    #[error("cannot start executor threads: {0}")]
    Threads(std::io::Error),
    /// The TLS certificates could not be loaded.
    #[error("tls: {0}")]
    Tls(#[from] TlsError),
    /// An HTTP front end's listener could not start.
    #[error("{front_end}: {source}")]
    Http {
        /// Which front end.
        front_end: &'static str,
        /// Why.
        source: crate::frontend::http::HttpListenerError,
    },
    /// The Vault Transit API could not start.
    #[error("vault: {0}")]
    Vault(#[from] crate::frontend::vault::VaultStartError),
    /// The XKS API could not start.
    #[error("xks: {0}")]
    Xks(#[from] crate::frontend::xks::XksStartError),
    /// The audit log could not be opened.
    #[error("cannot open the audit log {path}: {source}")]
    Audit {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// A started proxy.
pub struct RunningServer {
    front_door: FrontDoor,
    refresher: Arc<KeyRefresher>,
    tcp_addr: Option<SocketAddr>,
    tls_addr: Option<SocketAddr>,
    quic_addr: Option<SocketAddr>,
    vault_addr: Option<SocketAddr>,
    xks_addr: Option<SocketAddr>,
    reloader: Option<Arc<CertReloader>>,
    live: Arc<LiveConfig>,
    audit: AuditLog,
    unix_socket: Option<PathBuf>,
    admin_addr: Option<SocketAddr>,
    metrics: Arc<Metrics>,
    backend: Arc<dyn Backend>,
    cache: Option<Arc<UnwrapCache>>,
    shutdown: CancellationToken,
    admin_shutdown: CancellationToken,
    readiness: Arc<Readiness>,
    drain_delay: std::time::Duration,
    tasks: TaskTracker,
    executors: Executors,
}

/// Starts the proxy described by `config`, opening its backend.
pub async fn start(config: &Config) -> Result<RunningServer, StartError> {
    let backend = crate::backend::open(&config.backend)?;
    start_with_backend(config, backend).await
}

/// Starts the proxy on an already opened backend.
pub async fn start_with_backend(
    config: &Config,
    backend: Arc<dyn Backend>,
) -> Result<RunningServer, StartError> {
    let metrics = Metrics::with_extra(|registry| backend.register_metrics(registry));
    let keys = backend.list_keys()?;
    let public_keys = Arc::new(PublicKeys::default());
    public_keys.refresh(&*backend, &keys);
    let registry = Arc::new(KeyRegistry::new(keys));
    let limits = config.limits.to_limits();
    let queues = Arc::new(KeyQueues::new(
        config.batch.queue_capacity,
        config.batch.busy_retry_after,
        Arc::clone(&metrics),
    ));
    let cache = config.cache.enabled.then(|| Arc::new(UnwrapCache::new(&config.cache, Arc::clone(&metrics))));
    let info = ServerInfo {
        max_frame: limits.max_frame,
        max_in_flight: config.server.max_in_flight_per_connection,
        max_staleness: config.keys.max_staleness(),
    };
    let audit = match &config.audit.path {
        Some(path) => AuditLog::open(path, config.audit.rotation(), metrics.audit_health())
            .map_err(|source| StartError::Audit { path: path.clone(), source })?,
        None => AuditLog::disabled(),
    };
    let router = Arc::new(Router::new(
        Arc::clone(&registry),
        Arc::clone(&public_keys),
        Arc::clone(&queues),
        cache.clone(),
        info,
        audit.clone(),
    ));
    let ctx = Arc::new(ConnectionContext {
        router,
        limits,
        max_in_flight: config.server.max_in_flight_per_connection,
        shutdown_grace: config.server.shutdown_grace,
        metrics: Arc::clone(&metrics),
        acl: Acl::new(config.acl.clone()),
        quotas: QuotaRegistry::new(config.quotas.clone()),
        audit: audit.clone(),
        handshake_timeout: config.server.handshake_timeout,
        idle_timeout: config.server.idle_timeout,
        frame_timeout: config.server.frame_timeout,
        write_timeout: config.server.write_timeout,
        max_lifetime: config.server.max_connection_lifetime,
    });

    let front_door = FrontDoor::new(Arc::clone(&ctx));

    let bind_error = |what, address: String| move |source| StartError::Bind { what, address, source };
    let tcp = if config.serves_plain_tcp() {
        let listen = config.server.listen;
        Some(TcpAcceptor::bind(listen).await.map_err(bind_error("tcp", listen.to_string()))?)
    } else {
        None
    };
    let tcp_addr = match &tcp {
        Some(tcp) => Some(tcp.local_addr().map_err(bind_error("tcp", config.server.listen.to_string()))?),
        None => None,
    };
    let admin = if config.admin.enabled {
        let listener = tokio::net::TcpListener::bind(config.admin.listen)
            .await
            .map_err(bind_error("admin", config.admin.listen.to_string()))?;
        Some(listener)
    } else {
        None
    };
    let admin_addr = admin.as_ref().and_then(|listener| listener.local_addr().ok());

    // TLS over TCP and QUIC, sharing the [tls] certificates and one reloader.
    let mut tls_listener = None;
    let mut quic_listener = None;
    let mut reloader = None;
    if let Some(tls_config) = &config.tls {
        let tls_auth = tls_config.listen.map(|_| tls_config.client_auth_or_default(tls_config.client_auth));
        let quic_auth = config.quic.as_ref().map(|quic| tls_config.client_auth_or_default(quic.client_auth));
        // The files are read once for both listeners, and only if one is configured.
        let auths: Vec<ClientAuth> = tls_auth.into_iter().chain(quic_auth).collect();
        let material = if auths.is_empty() { None } else { Some(tls::Material::load(tls_config, &auths)?) };
        let mut tls_target = None;
        if let (Some(listen), Some(client_auth), Some(material)) = (tls_config.listen, tls_auth, &material) {
            let live = Arc::new(arc_swap::ArcSwap::from_pointee(material.server_config(client_auth)?));
            let acceptor = TlsAcceptor::bind(listen, Arc::clone(&live))
                .await
                .map_err(bind_error("tls", listen.to_string()))?;
            tls_target = Some(reload::TlsTarget { client_auth, live });
            tls_listener = Some(acceptor);
        }
        let mut quic_target = None;
        if let (Some(quic_config), Some(client_auth), Some(material)) = (&config.quic, quic_auth, &material) {
            let base = material.server_config(client_auth)?;
            let server_config = crate::transport::quic::server_config(
                base,
                config.server.idle_timeout,
                quic_config.enable_0rtt,
            )?;
            let acceptor =
                QuicAcceptor::bind(quic_config.listen, server_config, quic_config.address_validation)
                    .map_err(bind_error("quic", quic_config.listen.to_string()))?;
            quic_target = Some(reload::QuicTarget {
                client_auth,
                idle_timeout: config.server.idle_timeout,
                enable_0rtt: quic_config.enable_0rtt,
                endpoint: acceptor.endpoint().clone(),
            });
            quic_listener = Some(acceptor);
        }
        reloader =
            Some(Arc::new(CertReloader::new(tls_config.clone(), tls_target, quic_target, audit.clone())));
    }
    let tls_addr = tls_listener.as_ref().and_then(|l| l.local_addr().ok());
    let quic_addr = quic_listener.as_ref().and_then(|l| l.local_addr().ok());

    let settings = Arc::new(arc_swap::ArcSwap::from_pointee(live::LiveConfig::batch_settings(config)));
    let executors = Executors::start(
        backend.preferred_workers().unwrap_or_else(|| config.batch.threads()),
        Arc::clone(&backend),
        Arc::clone(&queues),
        Arc::clone(&registry),
        Arc::clone(&settings),
    )
    .map_err(StartError::Threads)?;

    let shutdown = CancellationToken::new();
    let admin_shutdown = CancellationToken::new();
    let readiness = Arc::new(Readiness::new(
        Arc::clone(&registry),
        Arc::clone(&metrics),
        config.keys.refresh_interval,
        config.keys.max_staleness(),
    ));
    let tasks = TaskTracker::new();
    let connections = Arc::new(Semaphore::new(config.server.max_connections));
    let sources = admission::SourceLimits::new(config.server.max_connections_per_source);
    let live = Arc::new(LiveConfig::new(
        config.clone(),
        live::LiveParts {
            ctx: Arc::clone(&ctx),
            batch: settings,
            queues: Arc::clone(&queues),
            cache: cache.clone(),
            sources: Arc::clone(&sources),
            certs: reloader.clone(),
            audit: audit.clone(),
        },
    ));
    if config.source.is_some() {
        tasks.spawn(Arc::clone(&live).watch(shutdown.clone()));
    }
    let listeners = listener::ListenerSet {
        ctx: Arc::clone(&ctx),
        connections,
        sources,
        max_handshakes: config.server.max_handshakes,
        tasks: tasks.clone(),
        shutdown: shutdown.clone(),
    };
    if let Some(tcp) = tcp {
        listeners.spawn(tcp);
    }
    if let Some(acceptor) = tls_listener {
        listeners.spawn(acceptor);
    }
    if let Some(acceptor) = quic_listener {
        listeners.spawn(acceptor);
    }
    if let (Some(reloader), Some(tls_config)) = (&reloader, &config.tls) {
        if !tls_config.reload_interval.is_zero() {
            tasks.spawn(Arc::clone(reloader).watch(tls_config.reload_interval, shutdown.clone()));
        }
    }
    #[cfg(unix)]
    if let Some(path) = &config.server.unix_socket {
        let unix = crate::transport::uds::UnixAcceptor::bind(path)
            .map_err(bind_error("unix", path.display().to_string()))?;
        listeners.spawn(unix);
    }
    if let Some(kubernetes) = &config.kubernetes_kms {
        crate::frontend::kubernetes::spawn(kubernetes, front_door.clone(), &tasks, shutdown.clone())
            .map_err(bind_error("kubernetes_kms", kubernetes.socket.display().to_string()))?;
    }
    let store: Arc<dyn KeyStore> = Arc::clone(&backend) as _;
    let refresher = Arc::new(KeyRefresher::new(
        store,
        Arc::clone(&registry),
        Arc::clone(&public_keys),
        cache.clone(),
        audit.clone(),
    ));
    tokio::spawn(Arc::clone(&refresher).run(config.keys.refresh_interval, shutdown.clone()));
    let vault_addr = match &config.vault {
        Some(vault) => {
            let wiring = crate::frontend::vault::Wiring {
                front_door: front_door.clone(),
                store: Arc::clone(&backend) as _,
                refresher: Arc::clone(&refresher),
                registry: Arc::clone(&registry),
                public_keys: Arc::clone(&public_keys),
                audit: audit.clone(),
                metrics: Arc::clone(&metrics),
            };
            let started = crate::frontend::vault::start(
                vault,
                wiring,
                reloader.as_ref(),
                &tasks,
                shutdown.clone(),
                config.server.shutdown_grace,
            );
            Some(started.await?)
        }
        None => None,
    };
    let xks_addr = match &config.xks {
        Some(xks) => {
            let wiring = crate::frontend::xks::Wiring {
                front_door: front_door.clone(),
                registry: Arc::clone(&registry),
                backend_kind: backend.kind(),
            };
            let grace = config.server.shutdown_grace;
            Some(
                crate::frontend::xks::start(xks, wiring, reloader.as_ref(), &tasks, shutdown.clone(), grace)
                    .await?,
            )
        }
        None => None,
    };
    if let Some(listener) = admin {
        tokio::spawn(admin_http::serve_admin(
            listener,
            Arc::clone(&metrics),
            Arc::clone(&readiness),
            backend.kind(),
            operator_http::routes(Arc::clone(&live))
                .merge(console::routes(Arc::clone(&live), Arc::clone(&registry))),
            admin_shutdown.clone(),
        ));
    }

    audit.record(Event::Admin {
        action: "start".into(),
        detail: format!("keymux {} started", env!("CARGO_PKG_VERSION")),
    });
    Ok(RunningServer {
        front_door,
        refresher,
        tcp_addr,
        tls_addr,
        quic_addr,
        vault_addr,
        xks_addr,
        reloader,
        live,
        audit,
        unix_socket: config.server.unix_socket.clone(),
        admin_addr,
        metrics,
        backend,
        cache,
        shutdown,
        admin_shutdown,
        readiness,
        drain_delay: config.server.drain_delay,
        tasks,
        executors,
    })
}

impl RunningServer {
    /// The router as the standard front ends reach it.
    pub fn front_door(&self) -> &FrontDoor {
        &self.front_door
    }

    /// The plain TCP address the proxy serves on, unless that listener is off.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    /// The TLS-over-TCP address, if configured.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    /// The QUIC (UDP) address, if configured.
    pub fn quic_addr(&self) -> Option<SocketAddr> {
        self.quic_addr
    }

    /// The Vault Transit API's address, if `[vault]` is configured.
    pub fn vault_addr(&self) -> Option<SocketAddr> {
        self.vault_addr
    }

    /// The XKS proxy API's address, if `[xks]` is configured.
    pub fn xks_addr(&self) -> Option<SocketAddr> {
        self.xks_addr
    }

    /// The certificate reloader, when TLS is configured (`main.rs` calls it on SIGHUP).
    pub fn reloader(&self) -> Option<Arc<CertReloader>> {
        self.reloader.clone()
    }

    /// The live config: what SIGHUP, `POST /reload` and the file watch reload.
    pub fn live(&self) -> &Arc<LiveConfig> {
        &self.live
    }

    /// Re-reads the TLS certificates now; a no-op without TLS.
    pub fn reload_certificates(&self) -> Result<(), TlsError> {
        self.reloader.as_ref().map_or(Ok(()), |reloader| reloader.reload("admin"))
    }

    /// The audit log (disabled unless `audit.path` is set).
    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    /// The Unix socket the proxy serves on, if any.
    pub fn unix_socket(&self) -> Option<&std::path::Path> {
        self.unix_socket.as_deref()
    }

    /// The admin HTTP address, if enabled.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The proxy's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The unwrap cache, if enabled.
    pub fn cache(&self) -> Option<&Arc<UnwrapCache>> {
        self.cache.as_ref()
    }

    /// The backend serving the keys.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// Re-reads keys and versions from the backend now (it also happens every
    /// `keys.refresh_interval`).
    pub fn refresh_keys(&self) -> Result<(), BackendFault> {
        self.refresher.refresh()
    }

    /// A token that starts the shutdown when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// What `/readyz` answers.
    pub fn readiness(&self) -> &Arc<Readiness> {
        &self.readiness
    }

    /// The drain that starts a shutdown (on SIGTERM in `main.rs`): not ready at once,
    /// listeners closed `server.drain_delay` later.
    pub fn drain(&self) -> Drain {
        Drain {
            readiness: Arc::clone(&self.readiness),
            shutdown: self.shutdown.clone(),
            delay: self.drain_delay,
        }
    }

    /// Drains ([`RunningServer::drain`]), stops accepting, lets in-flight requests
    /// finish (up to the grace period), then stops the executors.
    pub async fn shutdown(self) {
        self.drain().run().await;
        self.wait().await;
    }

    /// Waits until the shutdown token is cancelled (by [`RunningServer::shutdown`] or
    /// anyone holding [`RunningServer::shutdown_token`]) and everything has drained.
    pub async fn wait(self) {
        self.shutdown.cancelled().await;
        self.readiness.start_draining();
        self.tasks.close();
        self.tasks.wait().await;
        self.admin_shutdown.cancel();
        let executors = self.executors;
        let _ = tokio::task::spawn_blocking(move || executors.stop()).await;
        self.audit.record(Event::Admin { action: "stop".into(), detail: String::new() });
        let audit = self.audit;
        let _ = tokio::task::spawn_blocking(move || audit.sync()).await;
    }
}
