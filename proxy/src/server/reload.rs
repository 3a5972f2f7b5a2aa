//! Certificate reload: on SIGHUP (see `main.rs`) and when the certificate, key or
//! client CA files change (their modification times and sizes are polled).
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

/// Reloads the certificates of the TLS and QUIC listeners.
pub struct CertReloader {
    config: TlsConfig,
    tls: Option<TlsTarget>,
    quic: Option<QuicTarget>,
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
        Self { config, tls, quic, audit, fingerprint }
    }

    /// Re-reads the certificate files and swaps the new configuration in for new
    /// connections. On error nothing changes. `trigger` (`sighup`, `file change`, ...)
    /// goes to the audit log.
    pub fn reload(&self, trigger: &str) -> Result<(), tls::TlsError> {
        // Remember what was tried, success or not: a failed reload is retried when the
        // files change again (the rest of a half-written update arrives), not every poll.
        *self.fingerprint.lock().unwrap_or_else(PoisonError::into_inner) = tls::fingerprint(&self.config);
        match self.build() {
            Ok((tls_config, quic_config)) => {
                if let (Some(target), Some(config)) = (&self.tls, tls_config) {
                    target.live.store(Arc::new(config));
                }
                if let (Some(target), Some(config)) = (&self.quic, quic_config) {
                    target.endpoint.set_server_config(Some(config));
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
    fn build(&self) -> Result<(Option<rustls::ServerConfig>, Option<quinn::ServerConfig>), tls::TlsError> {
        let auths: Vec<ClientAuth> =
            self.tls.iter().map(|t| t.client_auth).chain(self.quic.iter().map(|q| q.client_auth)).collect();
        if auths.is_empty() {
            return Ok((None, None));
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
        Ok((tls_config, quic_config))
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
