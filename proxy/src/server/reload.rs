//! Certificate reload of every TLS listener (TLS, QUIC, the HTTP front ends): on SIGHUP
//! (see `main.rs`) and when the certificate, key or client CA files change (their
//! modification times and sizes are polled).
//!
//! A reload builds every listener's new configuration first and swaps them in only if
//! all of them build, so a half-written key file never takes a listener down: the old
//! certificates stay in service until the files change again. Open connections keep
//! the session they negotiated; only new connections see the new certificates.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

use crate::audit::{AuditLog, Event};
use crate::config::{ClientAuth, TlsConfig};
use crate::transport::{quic, tls};

/// The TLS-over-TCP listener's live configuration.
pub(super) struct TlsTarget {
    pub(super) client_auth: ClientAuth,
    pub(super) live: Arc<ArcSwap<rustls::ServerConfig>>,
}

/// The QUIC listener's endpoint and settings.
pub(super) struct QuicTarget {
    pub(super) client_auth: ClientAuth,
    pub(super) idle_timeout: Duration,
    pub(super) enable_0rtt: bool,
    pub(super) endpoint: quinn::Endpoint,
}

/// An HTTP front end's TLS listener (see `frontend::http`): its live configuration.
pub(crate) struct HttpTlsTarget {
    pub(crate) client_auth: ClientAuth,
    pub(crate) allow_tls12: bool,
    pub(crate) live: Arc<ArcSwap<rustls::ServerConfig>>,
}

/// Reloads the certificates of the TLS, QUIC and HTTPS listeners.
pub struct CertReloader {
    config: TlsConfig,
    tls: Option<TlsTarget>,
    quic: Option<QuicTarget>,
    http: Mutex<Vec<HttpTlsTarget>>,
    audit: AuditLog,
    fingerprint: Mutex<Vec<Option<(SystemTime, u64)>>>,
}

impl CertReloader {
    pub(super) fn new(
        config: TlsConfig,
        tls: Option<TlsTarget>,
        quic: Option<QuicTarget>,
        audit: AuditLog,
    ) -> Self {
        let fingerprint = Mutex::new(tls::fingerprint(&config));
        Self { config, tls, quic, http: Mutex::default(), audit, fingerprint }
    }

    /// The `[tls]` settings the certificates come from.
    pub(crate) fn tls_config(&self) -> &TlsConfig {
        &self.config
    }

    /// Adds an HTTP front end's listener to those a reload updates.
    pub(crate) fn add_http(&self, target: HttpTlsTarget) {
        self.http.lock().unwrap_or_else(PoisonError::into_inner).push(target);
    }

    /// Re-reads the certificate files and swaps the new configuration in for new
    /// connections. On error nothing changes. `trigger` (`sighup`, `file change`, ...)
    /// goes to the audit log.
    pub fn reload(&self, trigger: &str) -> Result<(), tls::TlsError> {
        // Remember what was tried, success or not: a failed reload is retried when the
        // files change again (the rest of a half-written update arrives), not every poll.
        *self.fingerprint.lock().unwrap_or_else(PoisonError::into_inner) = tls::fingerprint(&self.config);
        let http = self.http.lock().unwrap_or_else(PoisonError::into_inner);
        match self.build(&http) {
            Ok((tls_config, quic_config, http_configs)) => {
                if let (Some(target), Some(config)) = (&self.tls, tls_config) {
                    target.live.store(Arc::new(config));
                }
                if let (Some(target), Some(config)) = (&self.quic, quic_config) {
                    target.endpoint.set_server_config(Some(config));
                }
                for (target, config) in http.iter().zip(http_configs) {
                    target.live.store(Arc::new(config));
                }
                tracing::info!(trigger, cert = %self.config.cert.display(), "certificates reloaded");
                self.audit.record(Event::Admin {
                    action: "cert_reload".into(),
                    detail: format!("{trigger}: {}", self.config.cert.display()),
                });
                Ok(())
            }
            Err(error) => {
                tracing::warn!(trigger, %error, "certificate reload failed; keeping the current certificates");
                self.audit.record(Event::Admin {
                    action: "cert_reload_failed".into(),
                    detail: format!("{trigger}: {error}"),
                });
                Err(error)
            }
        }
    }

    #[allow(clippy::type_complexity)]
    fn build(
        &self,
        http: &[HttpTlsTarget],
    ) -> Result<
        (Option<rustls::ServerConfig>, Option<quinn::ServerConfig>, Vec<rustls::ServerConfig>),
        tls::TlsError,
    > {
        let auths: Vec<ClientAuth> = self
            .tls
            .iter()
            .map(|t| t.client_auth)
            .chain(self.quic.iter().map(|q| q.client_auth))
            .chain(http.iter().map(|h| h.client_auth))
            .collect();
        if auths.is_empty() {
            return Ok((None, None, Vec::new()));
        }
        // One read of the files for both listeners, so they always serve the same ones.
        let material = tls::Material::load(&self.config, &auths)?;
        let tls_config = self.tls.as_ref().map(|t| material.server_config(t.client_auth)).transpose()?;
        let quic_config = match &self.quic {
            Some(q) => {
                let base = material.server_config(q.client_auth)?;
                Some(quic::server_config(base, q.idle_timeout, q.enable_0rtt)?)
            }
            None => None,
        };
        let http_configs = http
            .iter()
            .map(|h| material.http_server_config(h.client_auth, h.allow_tls12))
            .collect::<Result<_, _>>()?;
        Ok((tls_config, quic_config, http_configs))
    }

    /// Polls the files every `interval` until `shutdown`, reloading when they change.
    pub(super) async fn watch(self: Arc<Self>, interval: Duration, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                () = shutdown.cancelled() => return,
            }
            let current = tls::fingerprint(&self.config);
            let changed = *self.fingerprint.lock().unwrap_or_else(PoisonError::into_inner) != current;
            if changed {
                let _ = self.reload("file change");
            }
        }
    }
}

impl std::fmt::Debug for CertReloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertReloader").field("cert", &self.config.cert).finish_non_exhaustive()
    }
}
