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
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7450)),
            unix_socket: None,
            max_in_flight_per_connection: 1024,
            max_connections: 10_000,
            shutdown_grace: Duration::from_secs(10),
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
        /// The dotted key, e.g. `batch.max_batch`.
        key: &'static str,
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
        let invalid = |key, message: String| Err(ConfigError::Invalid { key, message });
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
        }
        if self.keys.refresh_interval < Duration::from_millis(100) {
            return invalid("keys.refresh_interval", "must be at least 100ms".into());
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
    fn development_default_is_valid() {
        Config::development().validate().unwrap();
    }
}
