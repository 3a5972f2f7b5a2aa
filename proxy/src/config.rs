//! The TOML configuration: typed, with documented defaults and a `validate()` that
//! names the offending key.
//!
//! `examples/soft.toml` at the repository root shows every setting with its default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytesize::ByteSize;
use keymux_protocol::Limits;
use serde::Deserialize;

pub use crate::secrets::SecretSource;

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Client-facing listeners and connection limits.
    pub server: ServerConfig,
    /// The admin HTTP listener (metrics, health).
    pub admin: AdminConfig,
    /// Bounds on request fields.
    pub limits: LimitsConfig,
    /// Per-key queues and batching.
    pub batch: BatchConfig,
    /// The unwrap cache.
    pub cache: CacheConfig,
    /// Key registry settings.
    pub keys: KeysConfig,
    /// Where the key-encryption keys live.
    pub backend: BackendConfig,
    /// TLS certificates and the TLS-over-TCP listener. Absent: no TLS, no QUIC.
    pub tls: Option<TlsConfig>,
    /// The QUIC listener (uses the `[tls]` certificates). Absent: no QUIC.
    pub quic: Option<QuicConfig>,
    /// Access control rules (`[[acl]]`). None: every client may do everything; once
    /// any rule exists, whatever no rule allows is FORBIDDEN.
    pub acl: Vec<AclRule>,
    /// Limits applied to each client identity across all its connections.
    pub identity_limits: IdentityLimitsConfig,
    /// The hash-chained audit log.
    pub audit: AuditConfig,
}

/// `[keys]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeysConfig {
    /// How often running proxies re-read keys and versions from the backend, so new
    /// and disabled versions take effect without a restart. Default 2 s.
    #[serde(with = "humantime_serde")]
    pub refresh_interval: Duration,
}

impl Default for KeysConfig {
    fn default() -> Self {
        Self { refresh_interval: Duration::from_secs(2) }
    }
}

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// TCP address to serve the binary protocol on. Default `127.0.0.1:7450`.
    pub listen: SocketAddr,
    /// Also serve on this Unix socket path. Default: none.
    pub unix_socket: Option<PathBuf>,
    /// Requests read ahead on one connection before the proxy stops reading it (the
    /// per-connection backpressure). Default 1024.
    pub max_in_flight_per_connection: u32,
    /// Open connections across all listeners; further clients wait in the accept
    /// backlog. Default 10000.
    pub max_connections: usize,
    /// On SIGINT/SIGTERM, how long in-flight requests get to finish. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
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
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7450)),
            unix_socket: None,
            max_in_flight_per_connection: 1024,
            max_connections: 10_000,
            shutdown_grace: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            frame_timeout: Duration::from_secs(10),
        }
    }
}

/// `[admin]`
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

/// `[limits]`: see [`keymux_protocol::Limits`].
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
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let limits = Limits::default();
        Self {
            max_frame: ByteSize::b(u64::from(limits.max_frame)),
            max_aad: ByteSize::b(limits.max_aad as u64),
            max_plaintext: ByteSize::b(limits.max_plaintext as u64),
            max_blob: ByteSize::b(limits.max_blob as u64),
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
            // The signing limits are not configurable yet (issue 11): their defaults.
            ..Limits::default()
        }
    }
}

/// `[batch]`: how work on one key is queued and batched.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// Most jobs one backend call takes from a key's queue. Default 64. 1 disables
    /// batching.
    pub max_batch: usize,
    /// How long an executor lingers for a batch to fill before running a partial one.
    /// Default 0: batches form from whatever is queued, so low load keeps low latency.
    #[serde(with = "humantime_serde")]
    pub max_delay: Duration,
    /// Jobs one key may have queued; beyond it requests are answered BUSY at once.
    /// Default 4096.
    pub queue_capacity: usize,
    /// Executor threads for blocking backends. Default 0: one per CPU.
    pub executor_threads: usize,
    /// The retry-after hint sent with BUSY. Default 5 ms.
    #[serde(with = "humantime_serde")]
    pub busy_retry_after: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_batch: 64,
            max_delay: Duration::ZERO,
            queue_capacity: 4096,
            executor_threads: 0,
            busy_retry_after: Duration::from_millis(5),
        }
    }
}

impl BatchConfig {
    /// Executor threads to start, resolving 0 to the CPU count.
    pub fn threads(&self) -> usize {
        match self.executor_threads {
            0 => std::thread::available_parallelism().map_or(2, usize::from),
            n => n,
        }
    }
}

/// `[cache]`: the unwrap cache.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Whether unwraps are cached. Default true.
    pub enabled: bool,
    /// Most entries held. Default 100000.
    pub max_entries: u64,
    /// An entry's lifetime from insertion. Default 5 min.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// An entry's lifetime from its last use. Default 1 min.
    #[serde(with = "humantime_serde")]
    pub tti: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_entries: 100_000,
            ttl: Duration::from_secs(300),
            tti: Duration::from_secs(60),
        }
    }
}

/// `[backend]`: where the key-encryption keys live.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
#[non_exhaustive]
pub enum BackendConfig {
    /// The embedded soft keystore (development only).
    Soft(SoftConfig),
    /// An HSM through PKCS#11.
    Pkcs11(Pkcs11Config),
    /// AWS KMS, or a server that speaks its API.
    Kms(KmsConfig),
}

/// `[backend] type = "kms"`: KEKs in AWS KMS (or a server speaking its API), named by
/// aliases. See `docs/KMS.md`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KmsConfig {
    /// The regions (or endpoints) holding the keys, in order of preference: work goes to
    /// the first whose circuit is closed. More than one needs multi-region keys.
    pub regions: Vec<KmsRegionConfig>,
    /// Aliases `alias/<alias_prefix>/<key>/v<version>` name the keys. Default `keymux`.
    #[serde(default = "KmsConfig::default_alias_prefix")]
    pub alias_prefix: String,
    /// A shared credentials file (AWS format) to read instead of `~/.aws/credentials`;
    /// the rest of the standard chain (environment, web identity, ECS, IMDS) still
    /// applies. Credentials never go in this config file.
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
    /// The profile to read from the shared files. Default: the chain's own (`default`,
    /// or `AWS_PROFILE`).
    #[serde(default)]
    pub profile: Option<String>,
    /// Executor threads; each runs one batch at a time, its operations concurrently.
    /// Default 4.
    #[serde(default = "KmsConfig::default_executors")]
    pub executors: usize,
    /// KMS requests in flight per region at most. Default 64.
    #[serde(default = "KmsConfig::default_max_in_flight")]
    pub max_in_flight: usize,
    /// Requests per second per region (token bucket). Default 5000, below AWS's
    /// smallest shared quota for symmetric operations (10,000/s per account and region).
    #[serde(default = "KmsConfig::default_rate")]
    pub rate: f64,
    /// Requests a region may take at once above the rate. Default 500.
    #[serde(default = "KmsConfig::default_burst")]
    pub burst: u32,
    /// How long an operation without a client deadline may wait for admission and
    /// retries before it is answered BUSY. Default 2 s.
    #[serde(default = "KmsConfig::default_max_wait", with = "humantime_serde")]
    pub max_wait: Duration,
    /// Longest one KMS request may take; longer counts as a failure. Default 2 s.
    #[serde(default = "KmsConfig::default_call_timeout", with = "humantime_serde")]
    pub call_timeout: Duration,
    /// Longest a TCP + TLS connect may take. Default 1 s.
    #[serde(default = "KmsConfig::default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Retries of one operation after throttling or a failure. Default 4.
    #[serde(default = "KmsConfig::default_max_retries")]
    pub max_retries: u32,
    /// First retry backoff, doubled per retry, with full jitter. Default 25 ms.
    #[serde(default = "KmsConfig::default_backoff", with = "humantime_serde")]
    pub backoff: Duration,
    /// Consecutive failures (errors or timeouts) that open a region's circuit.
    /// Default 5.
    #[serde(default = "KmsConfig::default_failure_threshold")]
    pub failure_threshold: u32,
    /// While a circuit is open, how often the region is probed; requests fail fast
    /// (or move to the next region) meanwhile. Default 250 ms.
    #[serde(default = "KmsConfig::default_probe_interval", with = "humantime_serde")]
    pub probe_interval: Duration,
    /// Intermediate mode: which keys use it, and the epochs.
    #[serde(default)]
    pub intermediate: IntermediateConfig,
}

/// One `[[backend.regions]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KmsRegionConfig {
    /// The AWS region, e.g. `eu-west-1`.
    pub region: String,
    /// An endpoint override (a KMS-compatible server, a VPC endpoint). Default: the
    /// region's public endpoint.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The name in metrics and logs. Default: the region.
    #[serde(default)]
    pub name: Option<String>,
}

impl KmsRegionConfig {
    /// The name in metrics and logs.
    pub fn label(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.region)
    }
}

/// `[backend.intermediate]`: keys whose wraps seal DEKs locally under an intermediate
/// key that KMS wraps once per epoch.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IntermediateConfig {
    /// Globs on key names that use intermediate mode for new wraps. Default none.
    /// Unwraps of intermediate blobs work for every key.
    pub keys: Vec<String>,
    /// An intermediate key wraps for at most this long. Default 5 min.
    #[serde(with = "humantime_serde")]
    pub lifetime: Duration,
    /// An intermediate key wraps at most this many DEKs. Default 1,000,000 (at most
    /// 2^32: nonces are random 96-bit values).
    pub max_uses: u64,
    /// Unwrapped intermediate keys kept for unwraps. Default 10,000.
    pub cache_entries: u64,
    /// How long an unwrapped intermediate key is kept. Default 1 h.
    #[serde(with = "humantime_serde")]
    pub cache_ttl: Duration,
}

impl Default for IntermediateConfig {
    fn default() -> Self {
        Self {
            keys: Vec::new(),
            lifetime: Duration::from_secs(300),
            max_uses: 1_000_000,
            cache_entries: 10_000,
            cache_ttl: Duration::from_secs(3600),
        }
    }
}

impl KmsConfig {
    fn default_alias_prefix() -> String {
        "keymux".into()
    }
    fn default_executors() -> usize {
        4
    }
    fn default_max_in_flight() -> usize {
        64
    }
    fn default_rate() -> f64 {
        5000.0
    }
    fn default_burst() -> u32 {
        500
    }
    fn default_max_wait() -> Duration {
        Duration::from_secs(2)
    }
    fn default_call_timeout() -> Duration {
        Duration::from_secs(2)
    }
    fn default_connect_timeout() -> Duration {
        Duration::from_secs(1)
    }
    fn default_max_retries() -> u32 {
        4
    }
    fn default_backoff() -> Duration {
        Duration::from_millis(25)
    }
    fn default_failure_threshold() -> u32 {
        5
    }
    fn default_probe_interval() -> Duration {
        Duration::from_millis(250)
    }

    /// A config for `regions` with every other setting at its default.
    pub fn new(regions: Vec<KmsRegionConfig>) -> Self {
        Self {
            regions,
            alias_prefix: Self::default_alias_prefix(),
            credentials_file: None,
            profile: None,
            executors: Self::default_executors(),
            max_in_flight: Self::default_max_in_flight(),
            rate: Self::default_rate(),
            burst: Self::default_burst(),
            max_wait: Self::default_max_wait(),
            call_timeout: Self::default_call_timeout(),
            connect_timeout: Self::default_connect_timeout(),
            max_retries: Self::default_max_retries(),
            backoff: Self::default_backoff(),
            failure_threshold: Self::default_failure_threshold(),
            probe_interval: Self::default_probe_interval(),
            intermediate: IntermediateConfig::default(),
        }
    }

    /// Checks every value, naming the offending key (under `backend.`).
    fn validate(&self) -> Result<(), (String, String)> {
        let fail = |key: &str, message: &str| Err((format!("backend.{key}"), message.to_owned()));
        if self.regions.is_empty() {
            return fail("regions", "list at least one [[backend.regions]]");
        }
        for (index, region) in self.regions.iter().enumerate() {
            if region.region.is_empty() {
                return Err((format!("backend.regions[{index}].region"), "must not be empty".into()));
            }
        }
        let prefix_ok = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
        if self.alias_prefix.is_empty() || !self.alias_prefix.chars().all(prefix_ok) {
            return fail("alias_prefix", "letters, digits, '_' and '-' only");
        }
        if !(1..=256).contains(&self.executors) {
            return fail("executors", "must be 1..=256");
        }
        if self.max_in_flight == 0 {
            return fail("max_in_flight", "must be at least 1");
        }
        if !(self.rate.is_finite() && self.rate > 0.0) {
            return fail("rate", "must be a positive number");
        }
        if self.burst == 0 {
            return fail("burst", "must be at least 1");
        }
        if self.call_timeout.is_zero() || self.connect_timeout.is_zero() || self.max_wait.is_zero() {
            return fail("call_timeout", "call_timeout, connect_timeout and max_wait must be positive");
        }
        if self.failure_threshold == 0 {
            return fail("failure_threshold", "must be at least 1");
        }
        if self.probe_interval.is_zero() {
            return fail("probe_interval", "must be positive");
        }
        let intermediate = &self.intermediate;
        if !(1..=1 << 32).contains(&intermediate.max_uses) {
            return fail("intermediate.max_uses", "must be 1..=4294967296 (random 96-bit nonces)");
        }
        if intermediate.lifetime.is_zero() || intermediate.cache_ttl.is_zero() {
            return fail("intermediate.lifetime", "lifetime and cache_ttl must be positive");
        }
        if intermediate.cache_entries == 0 {
            return fail("intermediate.cache_entries", "must be at least 1");
        }
        Ok(())
    }
}

/// `[backend] type = "pkcs11"`: KEKs as non-extractable AES-256 keys on an HSM token.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pkcs11Config {
    /// The vendor's PKCS#11 module, e.g. `/usr/lib/softhsm/libsofthsm2.so`.
    pub module: PathBuf,
    /// The token, by label. Give this or `slot`.
    #[serde(default)]
    pub token_label: Option<String>,
    /// The token, by slot id. Give this or `token_label`.
    #[serde(default)]
    pub slot: Option<u64>,
    /// Where the user PIN comes from (never the config file itself).
    pub pin: SecretSource,
    /// Sessions to open, each pinned to its own executor thread. Default 2.
    #[serde(default = "Pkcs11Config::default_sessions")]
    pub sessions: usize,
    /// While the token is unavailable, how often a session tries to reopen; requests
    /// in between fail fast with BACKEND_UNAVAILABLE. Default 250 ms.
    #[serde(default = "Pkcs11Config::default_probe_interval", with = "humantime_serde")]
    pub probe_interval: Duration,
    /// How new blobs are sealed on the token. Default `auto`: AES-GCM where the token
    /// offers it, else AES-CBC with HMAC-SHA256. Unwraps accept either.
    #[serde(default)]
    pub mechanism: Pkcs11Mechanism,
}

/// The sealing scheme for new PKCS#11 blobs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pkcs11Mechanism {
    /// `aes-gcm` if the token offers `CKM_AES_GCM`, else `aes-cbc-hmac-sha256`.
    #[default]
    Auto,
    /// `CKM_AES_GCM`, 96-bit IVs, 128-bit tags.
    AesGcm,
    /// `CKM_AES_CBC_PAD` then `CKM_SHA256_HMAC`, encrypt-then-MAC, for tokens without GCM.
    AesCbcHmacSha256,
}

impl Pkcs11Config {
    fn default_sessions() -> usize {
        2
    }

    fn default_probe_interval() -> Duration {
        Duration::from_millis(250)
    }
}

impl Default for BackendConfig {
    fn default() -> Self {
        BackendConfig::Soft(SoftConfig::default())
    }
}

/// `[backend] type = "soft"`: KEKs in a local file sealed under a passphrase.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SoftConfig {
    /// Directory holding `keystore.kmx`. Default `./keymux-data`.
    #[serde(default = "SoftConfig::default_data_dir")]
    pub data_dir: PathBuf,
    /// Where the passphrase comes from. Required in a config file; only the
    /// no-argument development default generates one.
    #[serde(default)]
    pub passphrase: Option<SecretSource>,
    /// Create the keystore, with a key named `default`, if it does not exist.
    /// Default false.
    #[serde(default)]
    pub create_if_missing: bool,
    /// Argon2id memory cost in KiB for a newly created keystore. Default 65536 (64 MiB).
    #[serde(default = "SoftConfig::default_kdf_memory_kib")]
    pub kdf_memory_kib: u32,
    /// Argon2id passes for a newly created keystore. Default 3.
    #[serde(default = "SoftConfig::default_kdf_passes")]
    pub kdf_passes: u32,
}

impl SoftConfig {
    fn default_data_dir() -> PathBuf {
        PathBuf::from("./keymux-data")
    }

    fn default_kdf_memory_kib() -> u32 {
        64 * 1024
    }

    fn default_kdf_passes() -> u32 {
        3
    }

    /// The keystore file inside `data_dir`.
    pub fn keystore_path(&self) -> PathBuf {
        self.data_dir.join("keystore.kmx")
    }
}

impl Default for SoftConfig {
    fn default() -> Self {
        Self {
            data_dir: Self::default_data_dir(),
            passphrase: None,
            create_if_missing: false,
            kdf_memory_kib: Self::default_kdf_memory_kib(),
            kdf_passes: Self::default_kdf_passes(),
        }
    }
}

/// `[tls]`: the server's certificate, the CA that signs client certificates, and the
/// TLS 1.3 over TCP listener. The QUIC listener uses the same certificates.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// TLS over TCP address. Absent: only QUIC uses the certificates.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// PEM file with the server certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM file with the server's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM file with the CA certificate(s) that client certificates must chain to.
    /// Required for mutual TLS.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// Client certificates on the TLS listener. Default `required` when `client_ca` is
    /// set, `none` otherwise.
    #[serde(default)]
    pub client_auth: Option<ClientAuth>,
    /// How often the certificate files are checked for changes (they are also reloaded
    /// on SIGHUP). Default 10 s; `0s` reloads on SIGHUP only.
    #[serde(default = "TlsConfig::default_reload_interval", with = "humantime_serde")]
    pub reload_interval: Duration,
}

impl TlsConfig {
    fn default_reload_interval() -> Duration {
        Duration::from_secs(10)
    }

    /// The effective client authentication of a listener that asked for `wanted`.
    pub fn client_auth_or_default(&self, wanted: Option<ClientAuth>) -> ClientAuth {
        wanted.unwrap_or(if self.client_ca.is_some() { ClientAuth::Required } else { ClientAuth::None })
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
#[serde(deny_unknown_fields)]
pub struct QuicConfig {
    /// UDP address.
    pub listen: SocketAddr,
    /// Client certificates on the QUIC listener; the same default as `tls.client_auth`.
    #[serde(default)]
    pub client_auth: Option<ClientAuth>,
    /// Accept 0-RTT data. Default false. 0-RTT requests can be replayed by anyone who
    /// captured them: only enable it if every client is happy to have a WRAP or
    /// GENERATE_DATA_KEY executed twice.
    #[serde(default)]
    pub enable_0rtt: bool,
}

/// One `[[acl]]` rule: who (every matcher given must match) may do which operations on
/// which keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclRule {
    /// Glob on the certificate subject's common name.
    #[serde(default)]
    pub cn: Option<String>,
    /// Glob matched against each organisational unit of the subject.
    #[serde(default)]
    pub ou: Option<String>,
    /// Glob matched against each DNS subject alternative name.
    #[serde(default)]
    pub dns: Option<String>,
    /// Glob matched against each URI subject alternative name (SPIFFE IDs, say).
    #[serde(default)]
    pub uri: Option<String>,
    /// The peer uid of a Unix socket client.
    #[serde(default)]
    pub uid: Option<u32>,
    /// Matches every client, anonymous ones included (no other matcher allowed).
    #[serde(default)]
    pub any: bool,
    /// Operations allowed: `wrap`, `unwrap`, `generate_data_key`, `rewrap`, or `*`.
    pub ops: Vec<String>,
    /// Globs on key names (`*` any run of characters, `?` one character).
    pub keys: Vec<String>,
}

impl AclRule {
    /// Whether the rule names no matcher at all.
    pub fn has_matcher(&self) -> bool {
        self.cn.is_some()
            || self.ou.is_some()
            || self.dns.is_some()
            || self.uri.is_some()
            || self.uid.is_some()
    }
}

/// `[identity_limits]`: per client identity (certificate principal, Unix uid, or
/// `anonymous` for all unauthenticated clients together). 0 means unlimited.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityLimitsConfig {
    /// Open connections per identity; a further connection is answered BUSY and
    /// closed. Default 0.
    pub max_connections: u32,
    /// Requests in flight per identity across its connections; beyond it, BUSY.
    /// Default 0.
    pub max_in_flight: u32,
    /// Sustained requests per second per identity (token bucket); beyond it, BUSY with
    /// the time until the next token. Default 0.
    pub rate: f64,
    /// Requests an identity may send at once above the rate. Default 100.
    pub burst: u32,
    /// The retry-after sent when a connection or in-flight limit is hit. Default 10 ms.
    #[serde(with = "humantime_serde")]
    pub retry_after: Duration,
}

impl Default for IdentityLimitsConfig {
    fn default() -> Self {
        Self {
            max_connections: 0,
            max_in_flight: 0,
            rate: 0.0,
            burst: 100,
            retry_after: Duration::from_millis(10),
        }
    }
}

/// `[audit]`: the append-only, hash-chained JSON-lines audit log.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// The log file, created if missing and appended to. Default: none (no audit log).
    pub path: Option<PathBuf>,
}

/// A configuration that cannot be used, naming the key at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML does not parse or has unknown keys.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's explanation, with the line.
        message: String,
    },
    /// A value is out of range.
    #[error("{key}: {message}")]
    Invalid {
        /// The dotted key, e.g. `batch.max_batch` or `acl[2].ops`.
        key: String,
        /// What is wrong with it.
        message: String,
    },
}

impl Config {
    /// The development default: everything at its default, the soft keystore in
    /// `./keymux-data`, created on first start with a generated passphrase file.
    pub fn development() -> Self {
        let soft = SoftConfig::default();
        let passphrase = SecretSource::GeneratedFile(soft.data_dir.join("passphrase"));
        Self {
            backend: BackendConfig::Soft(SoftConfig {
                passphrase: Some(passphrase),
                create_if_missing: true,
                ..soft
            }),
            ..Self::default()
        }
    }

    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        let config = Self::parse(&text).map_err(|error| match error {
            ConfigError::Parse { message, .. } => ConfigError::Parse { path: path.to_owned(), message },
            other => other,
        })?;
        Ok(config)
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text)
            .map_err(|error| ConfigError::Parse { path: PathBuf::new(), message: error.to_string() })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every value, naming the first offending key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| Err(ConfigError::Invalid { key: key.to_owned(), message });
        if self.server.max_in_flight_per_connection == 0 {
            return invalid("server.max_in_flight_per_connection", "must be at least 1".into());
        }
        if self.server.max_connections == 0 {
            return invalid("server.max_connections", "must be at least 1".into());
        }
        if let Err(message) = self.limits.to_limits().validate() {
            return invalid("limits", message);
        }
        if !(1..=4096).contains(&self.batch.max_batch) {
            return invalid("batch.max_batch", format!("must be 1..=4096, got {}", self.batch.max_batch));
        }
        if self.batch.max_delay > Duration::from_secs(1) {
            return invalid("batch.max_delay", "must be at most 1s".into());
        }
        if self.batch.queue_capacity == 0 {
            return invalid("batch.queue_capacity", "must be at least 1".into());
        }
        if self.batch.executor_threads > 1024 {
            return invalid("batch.executor_threads", "must be at most 1024".into());
        }
        if self.cache.enabled && self.cache.max_entries == 0 {
            return invalid("cache.max_entries", "must be at least 1 when the cache is enabled".into());
        }
        if self.cache.ttl.is_zero() || self.cache.tti.is_zero() {
            return invalid("cache.ttl", "cache.ttl and cache.tti must be positive".into());
        }
        if self.server.handshake_timeout.is_zero() {
            return invalid("server.handshake_timeout", "must be positive".into());
        }
        if self.server.frame_timeout.is_zero() {
            return invalid("server.frame_timeout", "must be positive".into());
        }
        self.validate_tls()?;
        for (index, rule) in self.acl.iter().enumerate() {
            crate::acl::validate_rule(rule).map_err(|(field, message)| ConfigError::Invalid {
                key: format!("acl[{index}].{field}"),
                message,
            })?;
        }
        let limits = &self.identity_limits;
        if !(limits.rate.is_finite() && limits.rate >= 0.0) {
            return invalid("identity_limits.rate", "must be a non-negative number".into());
        }
        if limits.rate > 0.0 && limits.burst == 0 {
            return invalid("identity_limits.burst", "must be at least 1 when a rate is set".into());
        }
        match &self.backend {
            BackendConfig::Soft(soft) => {
                match &soft.passphrase {
                    None => {
                        return invalid(
                            "backend.passphrase",
                            "the soft keystore needs a passphrase source: passphrase = { env = \"VAR\" } \
                             or passphrase = { file = \"/path\" }"
                                .into(),
                        );
                    }
                    Some(SecretSource::Env(name)) if name.is_empty() => {
                        return invalid("backend.passphrase", "env variable name is empty".into());
                    }
                    Some(_) => {}
                }
                if soft.kdf_memory_kib < 8 * 1024 {
                    return invalid("backend.kdf_memory_kib", "must be at least 8192 (8 MiB)".into());
                }
                if soft.kdf_passes == 0 {
                    return invalid("backend.kdf_passes", "must be at least 1".into());
                }
            }
            BackendConfig::Pkcs11(hsm) => {
                if hsm.token_label.is_some() == hsm.slot.is_some() {
                    return invalid("backend.token_label", "give exactly one of token_label and slot".into());
                }
                if !(1..=256).contains(&hsm.sessions) {
                    return invalid("backend.sessions", format!("must be 1..=256, got {}", hsm.sessions));
                }
                if matches!(&hsm.pin, SecretSource::Env(name) if name.is_empty()) {
                    return invalid("backend.pin", "env variable name is empty".into());
                }
            }
            BackendConfig::Kms(kms) => {
                if let Err((key, message)) = kms.validate() {
                    return Err(ConfigError::Invalid { key, message });
                }
            }
        }
        if self.keys.refresh_interval < Duration::from_millis(100) {
            return invalid("keys.refresh_interval", "must be at least 100ms".into());
        }
        Ok(())
    }

    fn validate_tls(&self) -> Result<(), ConfigError> {
        let invalid =
            |key: &str, message: &str| Err(ConfigError::Invalid { key: key.into(), message: message.into() });
        let Some(tls) = &self.tls else {
            if self.quic.is_some() {
                return invalid("quic", "needs a [tls] section with the certificates");
            }
            return Ok(());
        };
        if tls.listen.is_none() && self.quic.is_none() {
            return invalid("tls.listen", "set tls.listen, a [quic] listener, or both");
        }
        let needs_ca =
            |auth: Option<ClientAuth>| matches!(auth, Some(ClientAuth::Optional | ClientAuth::Required));
        if tls.client_ca.is_none() && needs_ca(tls.client_auth) {
            return invalid("tls.client_auth", "client certificates need tls.client_ca");
        }
        if tls.client_ca.is_none() && self.quic.as_ref().is_some_and(|quic| needs_ca(quic.client_auth)) {
            return invalid("quic.client_auth", "client certificates need tls.client_ca");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [backend]
        type = "soft"
        passphrase = { env = "KEYMUX_SOFT_PASSPHRASE" }
    "#;

    #[test]
    fn minimal_config_takes_the_defaults() {
        let config = Config::parse(MINIMAL).unwrap();
        assert_eq!(config.server.listen, "127.0.0.1:7450".parse().unwrap());
        assert_eq!(config.batch.max_batch, 64);
        assert_eq!(config.limits.to_limits(), Limits::default());
    }

    #[test]
    fn typed_values_parse() {
        let config = Config::parse(&format!(
            "{MINIMAL}\n[batch]\nmax_delay = \"250us\"\n[limits]\nmax_aad = \"2 KiB\"\n[cache]\nttl = \"10m\"\n"
        ))
        .unwrap();
        assert_eq!(config.batch.max_delay, Duration::from_micros(250));
        assert_eq!(config.limits.to_limits().max_aad, 2048);
        assert_eq!(config.cache.ttl, Duration::from_secs(600));
    }

    #[test]
    fn errors_name_the_key() {
        let error = Config::parse(&format!("{MINIMAL}\n[batch]\nmax_batch = 0\n")).unwrap_err();
        assert!(error.to_string().starts_with("batch.max_batch"), "{error}");
        let error = Config::parse("[backend]\ntype = \"soft\"\n").unwrap_err();
        assert!(error.to_string().starts_with("backend.passphrase"), "{error}");
        let error = Config::parse(&format!("{MINIMAL}\n[server]\nlisten = \"nope\"\n")).unwrap_err();
        assert!(error.to_string().contains("listen"), "{error}");
        let error = Config::parse(&format!("{MINIMAL}\n[server]\nlisen = \"127.0.0.1:1\"\n")).unwrap_err();
        assert!(error.to_string().contains("lisen"), "{error}");
    }

    #[test]
    fn the_example_config_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/soft.toml");
        let config = Config::load(&path).unwrap();
        let BackendConfig::Soft(soft) = &config.backend else { panic!("a soft backend") };
        assert_eq!(soft.passphrase, Some(SecretSource::Env("KEYMUX_SOFT_PASSPHRASE".into())));
        assert!(soft.create_if_missing);
        assert_eq!(config.batch.max_batch, 64);
    }

    #[test]
    fn the_softhsm_example_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/softhsm.toml");
        let config = Config::load(&path).unwrap();
        let BackendConfig::Pkcs11(hsm) = &config.backend else { panic!("a pkcs11 backend") };
        assert_eq!(hsm.module, Path::new("/usr/lib/softhsm/libsofthsm2.so"));
        assert_eq!(hsm.token_label.as_deref(), Some("keymux"));
        assert_eq!(hsm.pin, SecretSource::Env("KEYMUX_PKCS11_PIN".into()));
        let both = format!("{}\nslot = 0\n", std::fs::read_to_string(&path).unwrap());
        assert!(Config::parse(&both).unwrap_err().to_string().starts_with("backend.token_label"));
    }

    #[test]
    fn the_kms_example_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/kms.toml");
        let config = Config::load(&path).unwrap();
        let BackendConfig::Kms(kms) = &config.backend else { panic!("a kms backend") };
        assert_eq!(kms.regions.len(), 2);
        assert_eq!(kms.regions[0].label(), "eu-west-1");
        assert_eq!(kms.intermediate.keys, vec!["bulk-*".to_owned()]);
        assert_eq!(kms.probe_interval, Duration::from_millis(250));
        let none = "[backend]\ntype = \"kms\"\nregions = []\n";
        assert!(Config::parse(none).unwrap_err().to_string().starts_with("backend.regions"));
        let slow = format!(
            "{}\n[backend.intermediate]\nmax_uses = 0\n",
            "[backend]\ntype = \"kms\"\n[[backend.regions]]\nregion = \"x\""
        );
        assert!(Config::parse(&slow).unwrap_err().to_string().starts_with("backend.intermediate.max_uses"));
    }

    #[test]
    fn the_tls_example_config_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/tls.toml");
        let config = Config::load(&path).unwrap();
        let tls = config.tls.as_ref().unwrap();
        assert_eq!(tls.client_auth_or_default(tls.client_auth), ClientAuth::Required);
        assert!(!config.quic.as_ref().unwrap().enable_0rtt);
        assert_eq!(config.acl.len(), 3);
        assert_eq!(config.acl[2].uid, Some(0));
        assert_eq!(config.identity_limits.max_connections, 64);
        assert_eq!(config.server.handshake_timeout, Duration::from_secs(5));
        assert!(config.audit.path.is_some());
    }

    #[test]
    fn tls_and_acl_errors_name_the_key() {
        let tls = "[tls]\nlisten = \"127.0.0.1:0\"\ncert = \"c\"\nkey = \"k\"\n";
        let error = Config::parse(&format!("{MINIMAL}\n{tls}client_auth = \"required\"\n")).unwrap_err();
        assert!(error.to_string().starts_with("tls.client_auth"), "{error}");
        let error = Config::parse(&format!("{MINIMAL}\n[quic]\nlisten = \"127.0.0.1:0\"\n")).unwrap_err();
        assert!(error.to_string().starts_with("quic"), "{error}");
        let acl = "[[acl]]\ncn = \"a\"\nops = [\"wrap\"]\nkeys = [\"k\"]\n[[acl]]\ncn = \"b\"\nops = [\"sign\"]\nkeys = [\"k\"]\n";
        let error = Config::parse(&format!("{MINIMAL}\n{acl}")).unwrap_err();
        assert!(error.to_string().starts_with("acl[1].ops"), "{error}");
        let error = Config::parse(&format!("{MINIMAL}\n[identity_limits]\nrate = -1.0\n")).unwrap_err();
        assert!(error.to_string().starts_with("identity_limits.rate"), "{error}");
        Config::parse(&format!("{MINIMAL}\n{tls}")).unwrap();
    }

    #[test]
    fn development_default_is_valid() {
        Config::development().validate().unwrap();
    }
}
