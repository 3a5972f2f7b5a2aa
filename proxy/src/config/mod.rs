//! The TOML configuration: typed, with documented defaults and a `validate()` that
//! names the offending key.
//!
//! `examples/soft.toml` at the repository root shows every setting with its default.
//!
//! The top-level tables live here, split by concept: [`server`] (listeners and
//! connection bounds), [`batch`] (queues, batching and the unwrap cache), [`access`]
//! (ACL rules, per-identity quotas, the audit log) and [`keys`]. Each backend's table
//! lives in its own folder (`backend/<type>/config.rs`), with its defaults and checks.
//!
//! **One way to write defaults:** every table is `#[serde(default)]` and has one
//! `impl Default` that holds every default value, so a default is written exactly once
//! and a table missing from the file equals `Default::default()`. Settings that have
//! no sensible default (a PKCS#11 module, a certificate) default to empty, and the
//! table's `validate()` names them when they are missing. (Per-field
//! `#[serde(default = "fn")]` would need the same values again in `impl Default`.)
//!
//! **One error:** every table's `validate()` returns an [`InvalidSetting`] `{ key,
//! message }` with keys relative to the table; [`Config::validate`] prefixes the
//! table's name, so `check-config` always names the exact dotted key. Parse errors name
//! their key too (through `serde_path_to_error`).

pub mod access;
pub mod batch;
pub mod error;
pub mod keys;
pub mod operator;
pub mod server;

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use access::{AclRule, AuditConfig, QuotaConfig};
pub use batch::{BatchConfig, CacheConfig};
pub use error::{ConfigError, InvalidSetting};
pub use keys::KeysConfig;
pub use server::{
    AddressValidation, AdminConfig, ClientAuth, LimitsConfig, QuicConfig, ServerConfig, TlsConfig,
};

use crate::backend::BackendConfig;
use crate::backend::soft::SoftConfig;
use crate::secrets::SecretSource;

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Client-facing listeners and connection limits.
    pub server: ServerConfig,
    /// The admin HTTP listener (metrics, health).
    pub admin: AdminConfig,
    /// Bounds on request fields (the protocol limits).
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
    /// Quotas applied to each client identity across all its connections.
    #[serde(alias = "identity_limits")]
    pub quotas: QuotaConfig,
    /// The hash-chained audit log.
    pub audit: AuditConfig,
    /// The Vault Transit-compatible HTTP API. Absent: off.
    pub vault: Option<crate::frontend::vault::VaultConfig>,
    /// The Kubernetes KMS v2 plugin. Absent: off.
    pub kubernetes_kms: Option<crate::frontend::kubernetes::KubernetesKmsConfig>,
    /// The AWS KMS External Key Store (XKS) proxy API. Absent: off.
    pub xks: Option<crate::frontend::xks::XksConfig>,
    /// Config reload, audit queries and exports on the admin listener.
    pub operator: operator::OperatorConfig,
    /// The file this config was loaded from (set by [`Config::load`]; a reload reads it
    /// again).
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

impl Config {
    /// The development default: everything at its default, the soft keystore in
    /// `./keymux-data`, created on first start with a generated passphrase file.
    pub fn development() -> Self {
        let soft = SoftConfig::default();
        let passphrase = SecretSource::GeneratedFile(soft.data_dir.join("passphrase"));
        Self {
            // Loopback only, for one developer: anonymous clients may do everything.
            server: ServerConfig { allow_anonymous: true, ..ServerConfig::default() },
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
        Self::parse(&text)
            .map_err(|error| match error {
                ConfigError::Parse { key, message, .. } => {
                    ConfigError::Parse { path: path.to_owned(), key, message }
                }
                other => other,
            })
            .map(|config| Self { source: Some(path.to_owned()), ..config })
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let parse_error =
            |key: String, message: String| ConfigError::Parse { path: PathBuf::new(), key, message };
        let document =
            toml::de::Deserializer::parse(text).map_err(|e| parse_error(String::new(), e.to_string()))?;
        let config: Config = serde_path_to_error::deserialize(document).map_err(|error| {
            let key = error.path().to_string();
            parse_error(if key == "." { String::new() } else { key }, error.into_inner().to_string())
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Whether the plain TCP listener is on: `server.plain_tcp`, defaulting to off when
    /// `[tls]` requires client certificates and on otherwise.
    pub fn serves_plain_tcp(&self) -> bool {
        self.server.plain_tcp.unwrap_or_else(|| !self.tls_requires_client_certificates())
    }

    /// Whether the TLS listener (or, without one, the QUIC listener) requires client
    /// certificates.
    fn tls_requires_client_certificates(&self) -> bool {
        let Some(tls) = &self.tls else { return false };
        let required = |auth| tls.client_auth_or_default(auth) == ClientAuth::Required;
        match (tls.listen, &self.quic) {
            (Some(_), _) => required(tls.client_auth),
            (None, Some(quic)) => required(quic.client_auth),
            (None, None) => false,
        }
    }

    /// Whether some listener serves clients with no identity at all.
    pub fn serves_anonymous_clients(&self) -> bool {
        let open = |auth| {
            self.tls.as_ref().is_some_and(|tls| tls.client_auth_or_default(auth) != ClientAuth::Required)
        };
        self.serves_plain_tcp()
            || self.tls.as_ref().is_some_and(|tls| tls.listen.is_some() && open(tls.client_auth))
            || self.quic.as_ref().is_some_and(|quic| open(quic.client_auth))
    }

    /// Checks every value, naming the first offending key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate().map_err(|e| e.within("server"))?;
        self.limits.validate().map_err(|e| e.within("limits"))?;
        self.batch.validate().map_err(|e| e.within("batch"))?;
        self.cache.validate().map_err(|e| e.within("cache"))?;
        let https = self.vault.as_ref().is_some_and(|vault| vault.http.tls)
            || self.xks.as_ref().is_some_and(|xks| xks.http.tls);
        TlsConfig::validate(self.tls.as_ref(), self.quic.as_ref(), https)?;
        if let Some(vault) = &self.vault {
            vault.validate(self.tls.as_ref()).map_err(|e| e.within("vault"))?;
        }
        for (index, rule) in self.acl.iter().enumerate() {
            rule.validate().map_err(|e| e.within(&format!("acl[{index}]")))?;
        }
        self.quotas.validate().map_err(|e| e.within("quotas"))?;
        self.audit.validate().map_err(|e| e.within("audit"))?;
        self.operator.validate().map_err(|e| e.within("operator"))?;
        self.backend.validate().map_err(|e| e.within("backend"))?;
        self.keys.validate().map_err(|e| e.within("keys"))?;
        if let Some(xks) = &self.xks {
            xks.validate(self.tls.as_ref()).map_err(|e| e.within("xks"))?;
        }
        if let Some(kubernetes) = &self.kubernetes_kms {
            kubernetes.validate().map_err(|e| e.within("kubernetes_kms"))?;
        }
        if self.acl.is_empty() && self.serves_anonymous_clients() && !self.server.allow_anonymous {
            return Err(InvalidSetting::new(
                "server.allow_anonymous",
                "this config serves clients without a certificate (plain TCP, or TLS/QUIC without \
                 required client certificates) and has no [[acl]] rules, so any of them may use every \
                 key: add [[acl]] rules, require client certificates, set server.plain_tcp = false, or \
                 set server.allow_anonymous = true to accept that",
            )
            .into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod properties;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use keymux_protocol::Limits;

    use super::*;

    /// The least a config file says; it ends inside `[server]`, so tests may append
    /// server keys.
    const MINIMAL: &str = r#"
        [backend]
        type = "soft"
        passphrase = { env = "KEYMUX_SOFT_PASSPHRASE" }
        [server]
        allow_anonymous = true
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
        let error = Config::parse(&format!("{MINIMAL}listen = \"nope\"\n")).unwrap_err();
        assert!(error.to_string().contains("listen"), "{error}");
        let error = Config::parse(&format!("{MINIMAL}lisen = \"127.0.0.1:1\"\n")).unwrap_err();
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
        assert_eq!(hsm.pin, Some(SecretSource::Env("KEYMUX_PKCS11_PIN".into())));
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
        assert_eq!(config.quotas.max_connections, 64);
        assert_eq!(config.server.handshake_timeout, Duration::from_secs(5));
        assert!(config.audit.path.is_some());
        assert_eq!(config.operator.token, Some(SecretSource::Env("KEYMUX_OPERATOR_TOKEN".into())));
        assert_eq!(config.source.as_deref(), Some(path.as_path()), "a reload reads the same file");
        let error = Config::parse(&format!("{MINIMAL}\n[operator]\nwatch_interval = \"1ms\"\n")).unwrap_err();
        assert!(error.to_string().starts_with("operator.watch_interval"), "{error}");
    }

    #[test]
    fn tls_and_acl_errors_name_the_key() {
        let tls = "[tls]\nlisten = \"127.0.0.1:0\"\ncert = \"c\"\nkey = \"k\"\n";
        let error = Config::parse(&format!("{MINIMAL}\n{tls}client_auth = \"required\"\n")).unwrap_err();
        assert!(error.to_string().starts_with("tls.client_auth"), "{error}");
        let error = Config::parse(&format!("{MINIMAL}\n[quic]\nlisten = \"127.0.0.1:0\"\n")).unwrap_err();
        assert!(error.to_string().starts_with("quic"), "{error}");
        let acl = "[[acl]]\ncn = \"a\"\nops = [\"wrap\"]\nkeys = [\"k\"]\n[[acl]]\ncn = \"b\"\nops = [\"seal\"]\nkeys = [\"k\"]\n";
        let error = Config::parse(&format!("{MINIMAL}\n{acl}")).unwrap_err();
        assert!(error.to_string().starts_with("acl[1].ops"), "{error}");
        let error = Config::parse(&format!("{MINIMAL}\n[quotas]\nrate = -1.0\n")).unwrap_err();
        assert!(error.to_string().starts_with("quotas.rate"), "{error}");
        Config::parse(&format!("{MINIMAL}\n{tls}")).unwrap();
    }

    #[test]
    fn anonymous_clients_with_no_acl_are_refused_unless_allowed() {
        let bare = "[backend]\ntype = \"soft\"\npassphrase = { env = \"P\" }\n";
        let error = Config::parse(bare).unwrap_err();
        assert_eq!(error.key(), Some("server.allow_anonymous"), "{error}");
        Config::parse(&format!("{bare}[[acl]]\nany = true\nops = [\"wrap\"]\nkeys = [\"*\"]\n")).unwrap();
        let no_tcp = format!("{bare}[server]\nplain_tcp = false\n");
        assert!(!Config::parse(&no_tcp).unwrap().serves_plain_tcp());
    }

    #[test]
    fn plain_tcp_is_off_beside_required_client_certificates_unless_enabled() {
        let mtls = "[tls]\nlisten = \"127.0.0.1:0\"\ncert = \"c\"\nkey = \"k\"\nclient_ca = \"ca\"\n";
        let config =
            Config::parse(&format!("[backend]\ntype = \"soft\"\npassphrase = {{ env = \"P\" }}\n{mtls}"))
                .unwrap();
        assert!(!config.serves_plain_tcp(), "an mTLS config does not open plain TCP by default");
        assert!(!config.serves_anonymous_clients());
        let reopened = Config::parse(&format!("{MINIMAL}plain_tcp = true\n{mtls}")).unwrap();
        assert!(reopened.serves_plain_tcp(), "unless asked");
    }

    #[test]
    fn development_default_is_valid() {
        Config::development().validate().unwrap();
    }
}
