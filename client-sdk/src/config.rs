//! Client configuration: where the proxies are, how many connections, deadlines and
//! retries.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::error::{ConfigError, InvalidEndpoint};
use crate::tls::TlsConfig;

/// Where a keymux proxy listens.
///
/// Parsed from `tcp://host:port` (an IPv6 host goes in brackets, `tcp://[::1]:7450`),
/// `tls://host:port` (TLS 1.3 over TCP), `quic://host:port` or `unix:///absolute/path`;
/// [`Display`](fmt::Display) writes the same form back. TLS and QUIC endpoints need
/// [`ClientConfig::tls`]; the host is the name the server certificate must carry
/// unless [`TlsConfig::with_server_name`](crate::TlsConfig::with_server_name) says otherwise.
///
/// ```
/// use keymux_client::Endpoint;
///
/// let endpoint: Endpoint = "tcp://127.0.0.1:7450".parse().unwrap();
/// assert_eq!(endpoint.to_string(), "tcp://127.0.0.1:7450");
/// let socket: Endpoint = "unix:///run/keymux.sock".parse().unwrap();
/// assert!(matches!(socket, Endpoint::Unix(_)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Endpoint {
    /// Plain TCP to a host name or IP address.
    Tcp {
        /// Host name or IP address (without brackets).
        host: String,
        /// TCP port.
        port: u16,
    },
    /// TLS 1.3 over TCP.
    Tls {
        /// Host name or IP address (without brackets), also the name verified in the
        /// server's certificate by default.
        host: String,
        /// TCP port.
        port: u16,
    },
    /// QUIC (one bidirectional stream per connection, ALPN `keymux/1`).
    Quic {
        /// Host name or IP address (without brackets), also the name verified in the
        /// server's certificate by default.
        host: String,
        /// UDP port.
        port: u16,
    },
    /// A Unix domain socket.
    Unix(PathBuf),
}

impl Endpoint {
    /// A TCP endpoint.
    pub fn tcp(host: impl Into<String>, port: u16) -> Self {
        Endpoint::Tcp { host: host.into(), port }
    }

    /// A TLS endpoint.
    pub fn tls(host: impl Into<String>, port: u16) -> Self {
        Endpoint::Tls { host: host.into(), port }
    }

    /// A QUIC endpoint.
    pub fn quic(host: impl Into<String>, port: u16) -> Self {
        Endpoint::Quic { host: host.into(), port }
    }

    /// Whether the endpoint needs [`ClientConfig::tls`].
    pub fn needs_tls(&self) -> bool {
        matches!(self, Endpoint::Tls { .. } | Endpoint::Quic { .. })
    }

    /// A Unix domain socket endpoint.
    pub fn unix(path: impl Into<PathBuf>) -> Self {
        Endpoint::Unix(path.into())
    }
}

impl From<std::net::SocketAddr> for Endpoint {
    fn from(addr: std::net::SocketAddr) -> Self {
        Endpoint::Tcp { host: addr.ip().to_string(), port: addr.port() }
    }
}

impl FromStr for Endpoint {
    type Err = InvalidEndpoint;

    fn from_str(input: &str) -> Result<Self, InvalidEndpoint> {
        let owned = || input.to_owned();
        let network = [("tcp://", 0), ("tls://", 1), ("quic://", 2)]
            .into_iter()
            .find_map(|(scheme, kind)| input.strip_prefix(scheme).map(|rest| (rest, kind)));
        if let Some((rest, kind)) = network {
            let (host, port) = rest.rsplit_once(':').ok_or_else(|| InvalidEndpoint::MissingPort(owned()))?;
            let host = match host.strip_prefix('[') {
                Some(bracketed) => {
                    bracketed.strip_suffix(']').ok_or_else(|| InvalidEndpoint::InvalidHost(owned()))?
                }
                // An unbracketed host with a colon is an IPv6 address written ambiguously.
                None if host.contains(':') => return Err(InvalidEndpoint::InvalidHost(owned())),
                None => host,
            };
            if host.is_empty() || host.contains(['/', '[', ']', ' ']) {
                return Err(InvalidEndpoint::InvalidHost(owned()));
            }
            let port = port.parse::<u16>().map_err(|_| InvalidEndpoint::InvalidPort(owned()))?;
            if port == 0 {
                return Err(InvalidEndpoint::InvalidPort(owned()));
            }
            let host = host.to_owned();
            Ok(match kind {
                0 => Endpoint::Tcp { host, port },
                1 => Endpoint::Tls { host, port },
                _ => Endpoint::Quic { host, port },
            })
        } else if let Some(path) = input.strip_prefix("unix://") {
            if !path.starts_with('/') {
                return Err(InvalidEndpoint::RelativePath(owned()));
            }
            Ok(Endpoint::Unix(PathBuf::from(path)))
        } else {
            Err(InvalidEndpoint::UnknownScheme(owned()))
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp { host, port } => write_network(f, "tcp", host, *port),
            Endpoint::Tls { host, port } => write_network(f, "tls", host, *port),
            Endpoint::Quic { host, port } => write_network(f, "quic", host, *port),
            Endpoint::Unix(path) => write!(f, "unix://{}", path.display()),
        }
    }
}

fn write_network(f: &mut fmt::Formatter<'_>, scheme: &str, host: &str, port: u16) -> fmt::Result {
    if host.contains(':') {
        write!(f, "{scheme}://[{host}]:{port}")
    } else {
        write!(f, "{scheme}://{host}:{port}")
    }
}

/// Everything a [`Client`](crate::Client) needs to know. Build one with
/// [`ClientConfig::new`] and adjust the public fields; [`ClientConfig::validate`] is
/// called by [`Client::connect`](crate::Client::connect).
///
/// ```
/// use std::time::Duration;
/// use keymux_client::{ClientConfig, Endpoint};
///
/// let mut config = ClientConfig::new(vec!["tcp://10.0.0.1:7450".parse().unwrap()]);
/// config.endpoints.push(Endpoint::tcp("10.0.0.2", 7450));
/// config.connections = 4;
/// config.default_timeout = Duration::from_millis(250);
/// config.validate().unwrap();
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientConfig {
    /// Proxies to connect to. Connections are spread over them round-robin, and a
    /// connect failure fails over to the next one. At least one.
    pub endpoints: Vec<Endpoint>,
    /// Connections kept open, each multiplexing many requests. Default 2.
    pub connections: usize,
    /// Sent in HELLO, for the proxy's logs and metrics (1 to 255 bytes). Default
    /// `keymux-client`.
    pub client_name: String,
    /// The deadline of a call that sets none in its [`CallOptions`]: retries included,
    /// the call fails with [`Error::DeadlineExceeded`](crate::Error::DeadlineExceeded)
    /// (or its last retryable error) once it is spent. Default 5 s.
    pub default_timeout: Duration,
    /// Longest wait for one TCP/Unix connect plus the HELLO exchange. Default 2 s.
    pub connect_timeout: Duration,
    /// Retries after the first attempt, on retryable failures. Default 32: with the
    /// default backoff (10 ms doubling to 1 s, full jitter) that outlasts any deadline of
    /// a few seconds, so it is the call's deadline that ends the retries, and a call
    /// that fails had no time left to try again (a proxy restarting, a queue full of
    /// another client's requests). Lower it to fail sooner than the deadline.
    pub max_retries: u32,
    /// Base of the full-jitter exponential backoff: retry `n` (from 0) sleeps a random
    /// time in `0..=min(backoff_cap, backoff_base * 2^n)`, and never less than the
    /// server's `retry_after_ms`. Default 10 ms.
    pub backoff_base: Duration,
    /// Ceiling of the backoff. Default 1 s.
    pub backoff_cap: Duration,
    /// Trusted CA, optional client certificate and server name for `tls://` and
    /// `quic://` endpoints. Default none (required by those endpoints).
    pub tls: Option<TlsConfig>,
}

impl ClientConfig {
    /// Default for [`ClientConfig::connections`].
    pub const DEFAULT_CONNECTIONS: usize = 2;
    /// Default for [`ClientConfig::client_name`].
    pub const DEFAULT_CLIENT_NAME: &'static str = "keymux-client";
    /// Default for [`ClientConfig::default_timeout`].
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
    /// Default for [`ClientConfig::connect_timeout`].
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
    /// Default for [`ClientConfig::max_retries`].
    pub const DEFAULT_MAX_RETRIES: u32 = 32;
    /// Default for [`ClientConfig::backoff_base`].
    pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(10);
    /// Default for [`ClientConfig::backoff_cap`].
    pub const DEFAULT_BACKOFF_CAP: Duration = Duration::from_secs(1);

    /// A configuration for `endpoints` with every other setting at its default.
    pub fn new(endpoints: Vec<Endpoint>) -> Self {
        Self {
            endpoints,
            connections: Self::DEFAULT_CONNECTIONS,
            client_name: Self::DEFAULT_CLIENT_NAME.to_owned(),
            default_timeout: Self::DEFAULT_TIMEOUT,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            max_retries: Self::DEFAULT_MAX_RETRIES,
            backoff_base: Self::DEFAULT_BACKOFF_BASE,
            backoff_cap: Self::DEFAULT_BACKOFF_CAP,
            tls: None,
        }
    }

    /// Checks that the settings are usable, naming the first one that is not.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |key: &'static str, reason: &str| Err(ConfigError { key, reason: reason.to_owned() });
        if self.endpoints.is_empty() {
            return fail("endpoints", "at least one endpoint is required");
        }
        if self.connections == 0 {
            return fail("connections", "must be at least 1");
        }
        if self.client_name.is_empty() || self.client_name.len() > 255 {
            return fail("client_name", "must be 1 to 255 bytes");
        }
        if self.default_timeout.is_zero() {
            return fail("default_timeout", "must be greater than zero");
        }
        if self.connect_timeout.is_zero() {
            return fail("connect_timeout", "must be greater than zero");
        }
        if self.backoff_base.is_zero() {
            return fail("backoff_base", "must be greater than zero");
        }
        if self.backoff_cap < self.backoff_base {
            return fail("backoff_cap", "must be at least backoff_base");
        }
        if self.tls.is_none() && self.endpoints.iter().any(Endpoint::needs_tls) {
            return fail("tls", "tls:// and quic:// endpoints need ClientConfig::tls (the CA to trust)");
        }
        Ok(())
    }
}

/// Options for one call; the defaults come from the [`ClientConfig`].
///
/// ```
/// use std::time::Duration;
/// use keymux_client::CallOptions;
///
/// let options = CallOptions::new().with_timeout(Duration::from_millis(100)).with_bypass_cache(true);
/// assert_eq!(options.timeout, Some(Duration::from_millis(100)));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CallOptions {
    /// The whole call's budget, retries included; `None` uses
    /// [`ClientConfig::default_timeout`]. What is left of it is sent to the proxy as
    /// the request's `timeout_ms` on every attempt.
    pub timeout: Option<Duration>,
    /// UNWRAP and REWRAP: ask the proxy to skip its unwrap cache. Ignored by the other
    /// operations, which never touch the cache.
    pub bypass_cache: bool,
}

impl CallOptions {
    /// Options with every setting at its default.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`CallOptions::timeout`].
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sets [`CallOptions::bypass_cache`].
    pub fn with_bypass_cache(mut self, bypass_cache: bool) -> Self {
        self.bypass_cache = bypass_cache;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_displays_endpoints() {
        for text in [
            "tcp://127.0.0.1:7450",
            "tcp://proxy.internal:1",
            "tcp://[::1]:7450",
            "unix:///run/k.sock",
            "tls://proxy.internal:7443",
            "quic://[::1]:7443",
        ] {
            let endpoint: Endpoint = text.parse().unwrap();
            assert_eq!(endpoint.to_string(), text);
        }
        assert_eq!("tcp://[::1]:9".parse::<Endpoint>().unwrap(), Endpoint::tcp("::1", 9));
        assert_eq!("unix:///tmp/x".parse::<Endpoint>().unwrap(), Endpoint::unix("/tmp/x"));
        assert_eq!("tls://k:1".parse::<Endpoint>().unwrap(), Endpoint::tls("k", 1));
        assert_eq!("quic://k:1".parse::<Endpoint>().unwrap(), Endpoint::quic("k", 1));
    }

    #[test]
    fn rejects_malformed_endpoints() {
        type IsVariant = fn(&InvalidEndpoint) -> bool;
        let cases: [(&str, IsVariant); 8] = [
            ("127.0.0.1:7450", |e| matches!(e, InvalidEndpoint::UnknownScheme(_))),
            ("http://x:1", |e| matches!(e, InvalidEndpoint::UnknownScheme(_))),
            ("tcp://localhost", |e| matches!(e, InvalidEndpoint::MissingPort(_))),
            ("tcp://localhost:http", |e| matches!(e, InvalidEndpoint::InvalidPort(_))),
            ("tcp://localhost:0", |e| matches!(e, InvalidEndpoint::InvalidPort(_))),
            ("tcp://:7450", |e| matches!(e, InvalidEndpoint::InvalidHost(_))),
            ("tcp://::1:7450", |e| matches!(e, InvalidEndpoint::InvalidHost(_))),
            ("unix://run/k.sock", |e| matches!(e, InvalidEndpoint::RelativePath(_))),
        ];
        for (text, expected) in cases {
            let error = text.parse::<Endpoint>().unwrap_err();
            assert!(expected(&error), "{text}: {error:?}");
        }
    }

    #[test]
    fn validate_names_the_offending_setting() {
        let endpoint = Endpoint::tcp("localhost", 7450);
        ClientConfig::new(vec![endpoint.clone()]).validate().unwrap();
        assert_eq!(ClientConfig::new(vec![]).validate().unwrap_err().key, "endpoints");
        let mut config = ClientConfig::new(vec![endpoint]);
        config.connections = 0;
        assert_eq!(config.validate().unwrap_err().key, "connections");
        config.connections = 1;
        config.backoff_cap = Duration::from_millis(1);
        assert_eq!(config.validate().unwrap_err().key, "backoff_cap");
        config.backoff_cap = ClientConfig::DEFAULT_BACKOFF_CAP;
        config.client_name = String::new();
        assert_eq!(config.validate().unwrap_err().key, "client_name");
        let config = ClientConfig::new(vec![Endpoint::tls("localhost", 7443)]);
        assert_eq!(config.validate().unwrap_err().key, "tls");
    }
}
