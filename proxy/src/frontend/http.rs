//! The listener every HTTP front end serves on (the Vault Transit API; AWS XKS):
//! plain TCP or TLS, HTTP/1.1 and HTTP/2, any [`axum::Router`].
//!
//! The protocol work is hyper's and axum's; this module only puts the limits around it:
//!
//! - **Connections**: at most `max_connections` at once; further clients wait in the
//!   kernel's accept backlog.
//! - **Head**: the TLS handshake and then the first request must arrive within
//!   `header_read_timeout` (a client that connects and sends nothing is dropped, on
//!   either HTTP version); later HTTP/1.1 request heads have the same limit (hyper's
//!   own timer). Heads over `max_header_bytes` or with more than `max_headers` fields
//!   are refused by hyper (431) before a handler runs.
//! - **Body**: a `Content-Length` over `max_body` is answered 413 before a byte of the
//!   body is read, and every body is read through [`http_body_util::Limited`], so a
//!   chunked body that grows past the limit is 413 too, and never more than `max_body`
//!   bytes is held.
//! - **Time**: a request (body read and handler) has `request_timeout`; past it the
//!   front end's own error body is answered with 503.
//! - **Shutdown**: on the server's shutdown token the listener stops accepting, open
//!   connections finish their requests (HTTP/1.1 closes after the current one, HTTP/2
//!   sends GOAWAY), and whatever is still open after `shutdown_grace` is dropped.
//!
//! With TLS, the certificates are the `[tls]` ones, swapped by the same
//! [`CertReloader`] as the other listeners' on SIGHUP and on file change. Under mTLS
//! the client certificate's [`Identity`] reaches every handler in the [`HttpPeer`]
//! request extension (anonymous when the client sent none).

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use axum::response::Response;
use bytesize::ByteSize;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::access::identity::Identity;
use crate::config::error::{InvalidSetting, invalid};
use crate::config::{ClientAuth, TlsConfig};
use crate::server::{CertReloader, HttpTlsTarget};
use crate::transport::tls::{self, TlsError};

/// `[<front end>.http]`: how an HTTP front end's listener serves. Every limit has a
/// default; the front end's own table holds its `listen` address.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Serve HTTPS with the `[tls]` certificates (reloaded like the other listeners').
    /// Default false: plain HTTP.
    pub tls: bool,
    /// Client certificates, as `tls.client_auth`: default `required` when
    /// `tls.client_ca` is set, `none` otherwise.
    pub client_auth: Option<ClientAuth>,
    /// Offer TLS 1.2 besides TLS 1.3 (AWS XKS needs it). Default false.
    pub allow_tls12: bool,
    /// Largest request body; larger ones get 413. Default 4 MiB.
    pub max_body: ByteSize,
    /// Most header fields in one request (HTTP/1.1); more get 431. Default 64.
    pub max_headers: usize,
    /// Largest request head: the HTTP/1.1 read buffer, the HTTP/2 header list. At
    /// least 8 KiB. Default 16 KiB.
    pub max_header_bytes: ByteSize,
    /// The TLS handshake and each request head must arrive within this. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Longest one request may take, reading its body included; past it, 503.
    /// Default 30 s.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Open connections on this listener. Default 1024.
    pub max_connections: usize,
    /// Concurrent HTTP/2 streams per connection. Default 256.
    pub max_concurrent_streams: u32,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            tls: false,
            client_auth: None,
            allow_tls12: false,
            max_body: ByteSize::mib(4),
            max_headers: 64,
            max_header_bytes: ByteSize::kib(16),
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_connections: 1024,
            max_concurrent_streams: 256,
        }
    }
}

impl HttpConfig {
    /// The smallest `max_header_bytes` hyper's HTTP/1.1 reader takes.
    pub const MIN_HEADER_BYTES: u64 = 8192;

    /// Checks every value against the `[tls]` table (`tls` needs one); keys are relative
    /// to the front end's `http` table.
    pub fn validate(&self, tls: Option<&TlsConfig>) -> Result<(), InvalidSetting> {
        if self.tls && tls.is_none() {
            return invalid("tls", "needs a [tls] section with the certificates");
        }
        if !self.tls && (self.client_auth.is_some() || self.allow_tls12) {
            return invalid("tls", "client_auth and allow_tls12 need tls = true");
        }
        let needs_ca = matches!(self.client_auth, Some(ClientAuth::Optional | ClientAuth::Required));
        if needs_ca && tls.is_some_and(|tls| tls.client_ca.is_none()) {
            return invalid("client_auth", "client certificates need tls.client_ca");
        }
        if self.max_body.as_u64() == 0 {
            return invalid("max_body", "must be positive");
        }
        if self.max_headers == 0 {
            return invalid("max_headers", "must be at least 1");
        }
        if self.max_header_bytes.as_u64() < Self::MIN_HEADER_BYTES
            || self.max_header_bytes.as_u64() > u64::from(u32::MAX)
        {
            return invalid("max_header_bytes", "must be between 8 KiB and 4 GiB");
        }
        if self.header_read_timeout.is_zero() {
            return invalid("header_read_timeout", "must be positive");
        }
        if self.request_timeout.is_zero() {
            return invalid("request_timeout", "must be positive");
        }
        if self.max_connections == 0 {
            return invalid("max_connections", "must be at least 1");
        }
        if self.max_concurrent_streams == 0 {
            return invalid("max_concurrent_streams", "must be at least 1");
        }
        Ok(())
    }

    fn max_body_bytes(&self) -> usize {
        usize::try_from(self.max_body.as_u64()).unwrap_or(usize::MAX)
    }
}

/// Who sent a request: on every request's extensions, for the handlers.
#[derive(Debug, Clone)]
pub struct HttpPeer {
    /// The client's address.
    pub addr: SocketAddr,
    /// The verified client certificate's identity; anonymous without one (plain HTTP,
    /// or TLS where the client sent no certificate).
    pub identity: Arc<Identity>,
}

/// How a front end words the listener's own refusals (body too large, request timed
/// out) in its protocol's error format.
pub type Rejection = fn(StatusCode, &'static str) -> Response;

/// Why an HTTP listener could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpListenerError {
    /// The address could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// Where.
        address: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// TLS was asked for without `[tls]` (the config's validation prevents it).
    #[error("tls = true needs a [tls] section")]
    NoTls,
    /// The certificates could not be loaded.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// A bound HTTP front end listener, not yet serving.
pub struct HttpListener {
    name: &'static str,
    listener: TcpListener,
    tls: Option<Arc<ArcSwap<rustls::ServerConfig>>>,
    config: HttpConfig,
}

impl HttpListener {
    /// Binds `listen` for front end `name` (for logs). With `config.tls`, loads the
    /// `[tls]` certificates through `reloader` (which exists whenever `[tls]` does) and
    /// registers the listener with it, so reloads reach it.
    pub async fn bind(
        name: &'static str,
        listen: SocketAddr,
        config: &HttpConfig,
        reloader: Option<&Arc<CertReloader>>,
    ) -> Result<Self, HttpListenerError> {
        let tls = if config.tls {
            let reloader = reloader.ok_or(HttpListenerError::NoTls)?;
            let tls_config = reloader.tls_config();
            let client_auth = tls_config.client_auth_or_default(config.client_auth);
            let material = tls::Material::load(tls_config, &[client_auth])?;
            let live = Arc::new(ArcSwap::from_pointee(
                material.http_server_config(client_auth, config.allow_tls12)?,
            ));
            reloader.add_http(HttpTlsTarget {
                client_auth,
                allow_tls12: config.allow_tls12,
                live: Arc::clone(&live),
            });
            Some(live)
        } else {
            None
        };
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| HttpListenerError::Bind { address: listen, source })?;
        Ok(Self { name, listener, tls, config: config.clone() })
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves `app` on a task tracked by `tasks` until `shutdown`, each connection on
    /// its own tracked task, given `grace` to finish once `shutdown` fires. `reject`
    /// words the listener's own refusals.
    pub fn spawn(
        self,
        app: axum::Router,
        reject: Rejection,
        tasks: &TaskTracker,
        shutdown: CancellationToken,
        grace: Duration,
    ) {
        let shared = Arc::new(Shared { app, reject, config: self.config, grace });
        tasks.spawn(accept_loop(self.name, self.listener, self.tls, shared, tasks.clone(), shutdown));
    }
}

/// What every connection of one listener shares.
struct Shared {
    app: axum::Router,
    reject: Rejection,
    config: HttpConfig,
    grace: Duration,
}

async fn accept_loop(
    name: &'static str,
    listener: TcpListener,
    tls: Option<Arc<ArcSwap<rustls::ServerConfig>>>,
    shared: Arc<Shared>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
) {
    let connections = Arc::new(Semaphore::new(shared.config.max_connections));
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&connections).acquire_owned() => permit.expect("never closed"),
            () = shutdown.cancelled() => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => break,
        };
        match accepted {
            Ok((stream, addr)) => {
                let _ = stream.set_nodelay(true);
                let tls = tls.as_ref().map(|live| live.load_full());
                let shared = Arc::clone(&shared);
                let shutdown = shutdown.clone();
                tasks.spawn(async move {
                    establish(name, stream, addr, tls, shared, shutdown).await;
                    drop(permit);
                });
            }
            Err(error) => {
                // Out of file descriptors and the like: back off rather than spin.
                tracing::warn!(listener = name, %error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Runs the TLS handshake, if any, and serves the connection.
async fn establish(
    name: &'static str,
    stream: TcpStream,
    addr: SocketAddr,
    tls: Option<Arc<rustls::ServerConfig>>,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    let Some(tls) = tls else {
        let peer = HttpPeer { addr, identity: Arc::new(Identity::anonymous()) };
        return serve_connection(stream, peer, Protocols::Either, shared, shutdown).await;
    };
    let handshake = tokio_rustls::TlsAcceptor::from(tls).accept(stream);
    let finished = tokio::select! {
        finished = tokio::time::timeout(shared.config.header_read_timeout, handshake) => finished,
        () = shutdown.cancelled() => return,
    };
    let stream = match finished {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => return tracing::debug!(listener = name, %addr, %error, "TLS handshake failed"),
        Err(_) => return tracing::debug!(listener = name, %addr, "TLS handshake timed out"),
    };
    let session = stream.get_ref().1;
    let identity = match tls::identity_of(session.peer_certificates()) {
        Ok(identity) => identity,
        Err(error) => return tracing::debug!(listener = name, %addr, %error, "client certificate refused"),
    };
    // ALPN decides the version; a client that negotiated none speaks HTTP/1.1.
    let protocols = match session.alpn_protocol() {
        Some(b"h2") => Protocols::Http2,
        _ => Protocols::Http1,
    };
    let peer = HttpPeer { addr, identity: Arc::new(identity) };
    serve_connection(stream, peer, protocols, shared, shutdown).await;
}

/// The HTTP versions a connection may speak.
#[derive(Clone, Copy)]
enum Protocols {
    /// Plain TCP: hyper tells HTTP/2's preface from an HTTP/1.1 request.
    Either,
    Http1,
    Http2,
}

async fn serve_connection<S>(
    stream: S,
    peer: HttpPeer,
    protocols: Protocols,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let config = &shared.config;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .max_headers(config.max_headers)
        .max_buf_size(usize::try_from(config.max_header_bytes.as_u64()).unwrap_or(usize::MAX));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(config.max_header_bytes.as_u64()).unwrap_or(u32::MAX))
        .max_concurrent_streams(config.max_concurrent_streams)
        .keep_alive_interval(Some(config.header_read_timeout))
        .keep_alive_timeout(config.header_read_timeout);
    let builder = match protocols {
        Protocols::Either => builder,
        Protocols::Http1 => builder.http1_only(),
        Protocols::Http2 => builder.http2_only(),
    };
    // Cancelled by the first request: until then the head deadline below runs.
    let first_request = CancellationToken::new();
    let addr = peer.addr;
    let service = {
        let shared = Arc::clone(&shared);
        let first_request = first_request.clone();
        hyper::service::service_fn(move |request: Request<Incoming>| {
            first_request.cancel();
            handle(Arc::clone(&shared), peer.clone(), request)
        })
    };
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let head_deadline = tokio::time::sleep(config.header_read_timeout);
    tokio::pin!(head_deadline);
    let grace = tokio::time::sleep(Duration::MAX);
    tokio::pin!(grace);
    let mut draining = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%addr, %error, "HTTP connection ended");
                }
                return;
            }
            () = &mut head_deadline, if !first_request.is_cancelled() => {
                // The head deadline passed with no request: drop the connection.
                if !first_request.is_cancelled() {
                    return;
                }
            }
            () = shutdown.cancelled(), if !draining => {
                draining = true;
                connection.as_mut().graceful_shutdown();
                grace.as_mut().reset(tokio::time::Instant::now() + shared.grace);
            }
            () = &mut grace, if draining => return,
        }
    }
}

/// One request: the body limit, the peer extension, the time limit, then the app.
async fn handle(
    shared: Arc<Shared>,
    peer: HttpPeer,
    request: Request<Incoming>,
) -> Result<Response, Infallible> {
    let limit = shared.config.max_body_bytes();
    if declared_length(&request).is_some_and(|length| length > limit as u64) {
        return Ok((shared.reject)(StatusCode::PAYLOAD_TOO_LARGE, "request body too large"));
    }
    let mut request = request.map(|body| Body::new(http_body_util::Limited::new(body, limit)));
    request.extensions_mut().insert(peer);
    let answer = shared.app.clone().oneshot(request);
    match tokio::time::timeout(shared.config.request_timeout, answer).await {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(never)) => match never {},
        Err(_) => Ok((shared.reject)(StatusCode::SERVICE_UNAVAILABLE, "request timed out")),
    }
}

/// The `Content-Length` a request declares, if it declares one that parses.
fn declared_length<B>(request: &Request<B>) -> Option<u64> {
    request.headers().get(header::CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_validated() {
        HttpConfig::default().validate(None).unwrap();
        let tls = HttpConfig { tls: true, ..HttpConfig::default() };
        assert_eq!(tls.validate(None).unwrap_err().key, "tls");
        let small = HttpConfig { max_header_bytes: ByteSize::kib(1), ..HttpConfig::default() };
        assert_eq!(small.validate(None).unwrap_err().key, "max_header_bytes");
        let lonely = HttpConfig { allow_tls12: true, ..HttpConfig::default() };
        assert_eq!(lonely.validate(None).unwrap_err().key, "tls");
        let mtls = HttpConfig { tls: true, client_auth: Some(ClientAuth::Required), ..HttpConfig::default() };
        let no_ca = TlsConfig::new("c".into(), "k".into());
        assert_eq!(mtls.validate(Some(&no_ca)).unwrap_err().key, "client_auth");
    }
}
