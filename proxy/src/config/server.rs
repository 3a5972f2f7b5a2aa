//! `[server]`, `[admin]`, `[limits]`, `[tls]` and `[quic]`: where keymux listens, and
//! the bounds on connections and frames.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use keymux_protocol::Limits;
use serde::Deserialize;

use super::error::{InvalidSetting, invalid};

/// `[server]`: the binary protocol's TCP and Unix listeners and connection limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// TCP address to serve the binary protocol on, in the clear. Default
    /// `127.0.0.1:7450`.
    pub listen: SocketAddr,
    /// Whether to serve plain TCP on `listen` at all. Default: yes, unless `[tls]`
    /// requires client certificates: then a plain listener would let any local process
    /// in without one, so it is off unless this says `true`.
    pub plain_tcp: Option<bool>,
    /// Serve clients without a certificate or uid (plain TCP, TLS or QUIC without client
    /// certificates) even though no `[[acl]]` rule limits what they may do. Default
    /// false: such a config is refused, naming this key. The development default (no
    /// config file) sets it.
    pub allow_anonymous: bool,
    /// Also serve on this Unix socket path. Default: none.
    pub unix_socket: Option<PathBuf>,
    /// Requests read ahead on one connection before the proxy stops reading it (the
    /// per-connection backpressure). Default 1024.
    pub max_in_flight_per_connection: u32,
    /// Open connections across all listeners (counted once their handshake is done);
    /// a connection past this is answered BUSY and closed. Default 10000.
    pub max_connections: usize,
    /// Handshakes (TLS, QUIC) pending at once on each listener. When full, the oldest
    /// pending handshake is dropped to make room, so clients that never finish theirs
    /// cannot lock out those who do. Default 256.
    pub max_handshakes: usize,
    /// Connections (handshaking or open) from one IPv4 address or IPv6 /64; more are
    /// closed at once. Default 1024; 0: no limit. Behind a balancer that does not keep
    /// client addresses, every connection comes from the balancer: raise this to
    /// `max_connections` or set 0 there.
    pub max_connections_per_source: usize,
    /// On SIGINT/SIGTERM, how long in-flight requests get to finish. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// On SIGINT/SIGTERM, how long the proxy keeps serving, already not ready on
    /// `/readyz`, before its listeners close: time for load balancers' health checks
    /// to send new clients elsewhere. Default 0 s; behind a balancer, a few of its
    /// check intervals (see docs/OPERATIONS.md).
    #[serde(with = "humantime_serde")]
    pub drain_delay: Duration,
    /// Longest a TLS or QUIC handshake may take; the connection is dropped after it.
    /// Default 10 s.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// A connection with nothing in flight and nothing received for this long is
    /// closed. Default 5 min; `0s` never closes idle connections.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Once the first bytes of a frame arrive, the rest must follow within this time or
    /// the connection is closed (slowloris defence). Default 10 s.
    #[serde(with = "humantime_serde")]
    pub frame_timeout: Duration,
    /// Longest one write to a client may block; a client that stops reading its
    /// responses for this long is disconnected. Default 30 s.
    #[serde(with = "humantime_serde")]
    pub write_timeout: Duration,
    /// A connection is closed gracefully (no new requests read, in-flight ones
    /// answered) this long after it was set up, so a certificate that has since expired
    /// or been revoked stops being honoured; clients reconnect. Default 24 h; `0s`:
    /// never.
    #[serde(with = "humantime_serde")]
    pub max_connection_lifetime: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7450)),
            plain_tcp: None,
            allow_anonymous: false,
            unix_socket: None,
            max_in_flight_per_connection: 1024,
            max_connections: 10_000,
            max_handshakes: 256,
            max_connections_per_source: 1024,
            shutdown_grace: Duration::from_secs(10),
            drain_delay: Duration::ZERO,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            frame_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(30),
            max_connection_lifetime: Duration::from_secs(24 * 3600),
        }
    }
}

impl ServerConfig {
    /// Checks every value; keys are relative to `[server]`.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if self.max_in_flight_per_connection == 0 {
            return invalid("max_in_flight_per_connection", "must be at least 1");
        }
        if self.max_connections == 0 {
            return invalid("max_connections", "must be at least 1");
        }
        if self.max_handshakes == 0 {
            return invalid("max_handshakes", "must be at least 1");
        }
        if self.handshake_timeout.is_zero() {
            return invalid("handshake_timeout", "must be positive");
        }
        if self.frame_timeout.is_zero() {
            return invalid("frame_timeout", "must be positive");
        }
        if self.write_timeout.is_zero() {
            return invalid("write_timeout", "must be positive");
        }
        Ok(())
    }
}

/// `[admin]`: the admin HTTP listener (`/metrics`, `/healthz`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// HTTP address serving `/metrics` (Prometheus text) and `/healthz`. Default
    /// `127.0.0.1:7451`.
    pub listen: SocketAddr,
    /// Set to false to run without the admin listener. Default true.
    pub enabled: bool,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self { listen: SocketAddr::from(([127, 0, 0, 1], 7451)), enabled: true }
    }
}

/// `[limits]`: the protocol limits, see [`keymux_protocol::Limits`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest frame accepted. Default 64 KiB.
    pub max_frame: ByteSize,
    /// Largest AAD. Default 8 KiB.
    pub max_aad: ByteSize,
    /// Largest plaintext key, and largest generated data key. Default 4 KiB.
    pub max_plaintext: ByteSize,
    /// Largest blob. Default 16 KiB.
    pub max_blob: ByteSize,
    /// Largest SIGN or VERIFY input (a message, or a digest). Default 16 KiB.
    pub max_sign_input: ByteSize,
    /// Largest signature accepted for VERIFY. Default 4 KiB.
    pub max_signature: ByteSize,
    /// Largest public key served by GET_PUBLIC_KEY. Default 4 KiB.
    pub max_public_key: ByteSize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let limits = Limits::default();
        Self {
            max_frame: ByteSize::b(u64::from(limits.max_frame)),
            max_aad: ByteSize::b(limits.max_aad as u64),
            max_plaintext: ByteSize::b(limits.max_plaintext as u64),
            max_blob: ByteSize::b(limits.max_blob as u64),
            max_sign_input: ByteSize::b(limits.max_sign_input as u64),
            max_signature: ByteSize::b(limits.max_signature as u64),
            max_public_key: ByteSize::b(limits.max_public_key as u64),
        }
    }
}

impl LimitsConfig {
    /// The protocol limits these settings describe.
    pub fn to_limits(&self) -> Limits {
        let clamp = |size: ByteSize| usize::try_from(size.as_u64()).unwrap_or(usize::MAX);
        Limits {
            max_frame: u32::try_from(self.max_frame.as_u64()).unwrap_or(u32::MAX),
            max_aad: clamp(self.max_aad),
            max_plaintext: clamp(self.max_plaintext),
            max_blob: clamp(self.max_blob),
            max_sign_input: clamp(self.max_sign_input),
            max_signature: clamp(self.max_signature),
            max_public_key: clamp(self.max_public_key),
        }
    }

    /// Checks the limits together; keys are relative to `[limits]`, naming the limit
    /// the protocol crate found at fault.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        self.to_limits().validate().map_err(|error| InvalidSetting::new(error.field, error.to_string()))
    }
}

/// `[tls]`: the server's certificate, the CA that signs client certificates, and the
/// TLS 1.3 over TCP listener. The QUIC listener uses the same certificates.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// TLS over TCP address. Absent: only QUIC uses the certificates.
    pub listen: Option<SocketAddr>,
    /// PEM file with the server certificate chain, leaf first. Required.
    pub cert: PathBuf,
    /// PEM file with the server's private key (PKCS#8, PKCS#1 or SEC1). Required.
    pub key: PathBuf,
    /// PEM file with the CA certificate(s) that client certificates must chain to.
    /// Required for mutual TLS.
    pub client_ca: Option<PathBuf>,
    /// Client certificates on the TLS listener. Default `required` when `client_ca` is
    /// set, `none` otherwise.
    pub client_auth: Option<ClientAuth>,
    /// How often the certificate files are checked for changes (they are also reloaded
    /// on SIGHUP). Default 10 s; `0s` reloads on SIGHUP only.
    #[serde(with = "humantime_serde")]
    pub reload_interval: Duration,
}

impl TlsConfig {
    /// The default `reload_interval`.
    pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(10);

    /// A config serving `cert` and `key`, every other setting at its default.
    pub fn new(cert: PathBuf, key: PathBuf) -> Self {
        Self { cert, key, reload_interval: Self::DEFAULT_RELOAD_INTERVAL, ..Self::default() }
    }

    /// The effective client authentication of a listener that asked for `wanted`.
    pub fn client_auth_or_default(&self, wanted: Option<ClientAuth>) -> ClientAuth {
        wanted.unwrap_or(if self.client_ca.is_some() { ClientAuth::Required } else { ClientAuth::None })
    }

    /// Checks the TLS and QUIC settings together; keys are absolute (`tls.…`, `quic`).
    /// `https`: an HTTP front end serves TLS with these certificates.
    pub fn validate(
        tls: Option<&TlsConfig>,
        quic: Option<&QuicConfig>,
        https: bool,
    ) -> Result<(), InvalidSetting> {
        let Some(tls) = tls else {
            if quic.is_some() {
                return invalid("quic", "needs a [tls] section with the certificates");
            }
            return Ok(());
        };
        if tls.cert.as_os_str().is_empty() {
            return invalid("tls.cert", "the server certificate chain (a PEM file) is required");
        }
        if tls.key.as_os_str().is_empty() {
            return invalid("tls.key", "the server's private key (a PEM file) is required");
        }
        if tls.listen.is_none() && quic.is_none() && !https {
            return invalid(
                "tls.listen",
                "set tls.listen, a [quic] listener, an HTTPS front end, or some of them",
            );
        }
        let needs_ca =
            |auth: Option<ClientAuth>| matches!(auth, Some(ClientAuth::Optional | ClientAuth::Required));
        if tls.client_ca.is_none() && needs_ca(tls.client_auth) {
            return invalid("tls.client_auth", "client certificates need tls.client_ca");
        }
        if tls.client_ca.is_none() && quic.is_some_and(|quic| needs_ca(quic.client_auth)) {
            return invalid("quic.client_auth", "client certificates need tls.client_ca");
        }
        Ok(())
    }
}

/// Whether a listener asks for client certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// No client certificates: every client is anonymous.
    None,
    /// A client may present a certificate (verified against `client_ca`); clients
    /// without one are anonymous.
    Optional,
    /// Every client must present a certificate that chains to `client_ca`.
    Required,
}

/// `[quic]`: the QUIC listener (ALPN `keymux/1`), with the `[tls]` certificates.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuicConfig {
    /// UDP address. Default `127.0.0.1:7452`.
    pub listen: SocketAddr,
    /// Client certificates on the QUIC listener; the same default as `tls.client_auth`.
    pub client_auth: Option<ClientAuth>,
    /// Accept 0-RTT data. Default false. 0-RTT requests can be replayed by anyone who
    /// captured them: only enable it if every client is happy to have a WRAP or
    /// GENERATE_DATA_KEY executed twice.
    pub enable_0rtt: bool,
    /// When a client must prove its address with a Retry (one more round trip) before
    /// its handshake takes a slot: `under_load` (default: while half the listener's
    /// `server.max_handshakes` are pending), `always` or `never`. Spoofed Initials never
    /// answer a Retry, so they cannot fill the handshake budget.
    pub address_validation: AddressValidation,
}

/// `quic.address_validation`: when QUIC clients must answer a Retry first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AddressValidation {
    /// While at least half the listener's handshake budget is taken.
    #[default]
    UnderLoad,
    /// Every new connection.
    Always,
    /// Never (not advised on a network where addresses can be spoofed).
    Never,
}

impl Default for QuicConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7452)),
            client_auth: None,
            enable_0rtt: false,
            address_validation: AddressValidation::default(),
        }
    }
}
