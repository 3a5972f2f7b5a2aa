//! `[xks]` and `[[xks.credentials]]`: the AWS KMS External Key Store proxy API's
//! listener, URI prefix, region and SigV4 credentials.

use std::net::SocketAddr;
use std::time::Duration;

use bytesize::ByteSize;
use serde::Deserialize;

use crate::config::TlsConfig;
use crate::config::error::{InvalidSetting, invalid};
use crate::frontend::http::HttpConfig;
use crate::secrets::SecretSource;

/// `[xks]`: the XKS proxy API (AWS KMS's External Key Store). Absent: off.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct XksConfig {
    /// Address to serve on. Default `127.0.0.1:7480`.
    pub listen: SocketAddr,
    /// TLS (1.3, and 1.2 with `allow_tls12`, which AWS KMS may negotiate), mTLS, limits
    /// and time-outs of the listener (`[xks.http]`). Default body limit 64 KiB.
    pub http: HttpConfig,
    /// The optional path prefix before `/kms/xks/v1` (`XksProxyUriPath` in AWS KMS is
    /// `/<uri_prefix>/kms/xks/v1`). Default: none.
    pub uri_prefix: String,
    /// The AWS region whose KMS signs the requests (the SigV4 credential scope).
    /// Required.
    pub region: String,
    /// The SigV4 credentials of the key store (two during a rotation). Required.
    pub credentials: Vec<XksCredential>,
    /// How far a request's `X-Amz-Date` may be from the proxy's clock, either way: older
    /// requests (replays) and ones from the future fail authentication. Default 5 min,
    /// the XKS specification's window.
    #[serde(with = "humantime_serde")]
    pub max_clock_skew: Duration,
    /// The deadline of one request's work in keymux: AWS KMS gives up after 250 ms.
    /// Default 250 ms.
    #[serde(with = "humantime_serde")]
    pub deadline: Duration,
    /// A keymux key the health check encrypts and decrypts with (a test key, as the
    /// specification asks, not one AWS KMS uses). Default: none, and the health check
    /// only reports the proxy up.
    pub health_key: Option<String>,
    /// How long a health check's result is reused. Default 5 s (the specification
    /// allows up to one minute).
    #[serde(with = "humantime_serde")]
    pub health_cache_ttl: Duration,
    /// With mTLS: the subject CN the client certificate must have
    /// (`cks.kms.<region>.amazonaws.com` for AWS KMS). Default: any verified one.
    pub client_cn: Option<String>,
    /// `xksProxyFleetSize` in the health answer: how many proxies serve this key store.
    /// Default 1.
    pub fleet_size: u32,
}

/// One `[[xks.credentials]]` entry: an access key id and its secret, both read from the
/// environment or a file, and the identity they stand for.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XksCredential {
    /// The identity's name: `[[acl]]` rules match it as `token = "xks:<name>"` (its
    /// principal in quotas and the audit log is `token:xks:<name>`).
    pub name: String,
    /// Where the access key id is.
    pub access_key_id: SecretSource,
    /// Where the secret access key is.
    pub secret_access_key: SecretSource,
}

impl Default for XksConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7480)),
            http: HttpConfig { max_body: ByteSize::kib(64), ..HttpConfig::default() },
            uri_prefix: String::new(),
            region: String::new(),
            credentials: Vec::new(),
            max_clock_skew: Duration::from_secs(300),
            deadline: Duration::from_millis(250),
            health_key: None,
            health_cache_ttl: Duration::from_secs(5),
            client_cn: None,
            fleet_size: 1,
        }
    }
}

impl XksConfig {
    /// Checks every value; keys are relative to `[xks]`. `tls` is the `[tls]` table.
    pub fn validate(&self, tls: Option<&TlsConfig>) -> Result<(), InvalidSetting> {
        self.http.validate(tls).map_err(|e| e.within("http"))?;
        let prefix_ok = self.uri_prefix.len() <= 100
            && self
                .uri_prefix
                .split('/')
                .all(|part| part.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
            && !self.uri_prefix.starts_with('/')
            && !self.uri_prefix.ends_with('/')
            && !self.uri_prefix.contains("//");
        if !prefix_ok {
            return invalid(
                "uri_prefix",
                "/-separated names of letters, digits, '-' and '_', no leading or trailing '/'",
            );
        }
        if self.region.is_empty() || !self.region.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return invalid("region", "the AWS region whose KMS calls the proxy, e.g. us-east-1");
        }
        if self.credentials.is_empty() {
            return invalid("credentials", "at least one [[xks.credentials]] entry");
        }
        for (index, credential) in self.credentials.iter().enumerate() {
            let at = |field: &str| format!("credentials[{index}].{field}");
            if credential.name.is_empty() {
                return Err(InvalidSetting::new(at("name"), "must not be empty"));
            }
            if self.credentials[..index].iter().any(|other| other.name == credential.name) {
                return Err(InvalidSetting::new(at("name"), "names must be unique"));
            }
            credential
                .access_key_id
                .validate()
                .map_err(|why| InvalidSetting::new(at("access_key_id"), why))?;
            credential
                .secret_access_key
                .validate()
                .map_err(|why| InvalidSetting::new(at("secret_access_key"), why))?;
        }
        if self.max_clock_skew.is_zero() {
            return invalid("max_clock_skew", "must be positive");
        }
        if self.deadline.is_zero() {
            return invalid("deadline", "must be positive");
        }
        if self.health_cache_ttl > Duration::from_secs(60) {
            return invalid("health_cache_ttl", "at most 1 minute (the XKS specification's limit)");
        }
        if self.fleet_size == 0 {
            return invalid("fleet_size", "must be at least 1");
        }
        Ok(())
    }

    /// The path every XKS API path starts with: `/<uri_prefix>/kms/xks/v1`.
    pub fn base_path(&self) -> String {
        if self.uri_prefix.is_empty() {
            "/kms/xks/v1".to_owned()
        } else {
            format!("/{}/kms/xks/v1", self.uri_prefix)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;
    use crate::secrets::SecretSource;

    #[test]
    fn the_example_config_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/xks.toml");
        let config = Config::load(&path).unwrap();
        let xks = config.xks.as_ref().expect("[xks]");
        assert_eq!(xks.listen, "127.0.0.1:7480".parse().unwrap());
        assert_eq!(xks.base_path(), "/example/uri/path/prefix/kms/xks/v1");
        assert_eq!(xks.region, "us-east-1");
        assert_eq!(xks.deadline, std::time::Duration::from_millis(250));
        let credential = &xks.credentials[0];
        assert_eq!(credential.access_key_id, SecretSource::Env("KEYMUX_XKS_ACCESS_KEY_ID".into()));
        assert_eq!(credential.secret_access_key, SecretSource::Env("KEYMUX_XKS_SECRET_ACCESS_KEY".into()));
        assert!(!xks.http.tls);
    }

    #[test]
    fn errors_name_the_key() {
        let base = "[backend]\ntype = \"soft\"\npassphrase = { env = \"P\" }\n[server]\nplain_tcp = false\n";
        let credential = "[[xks.credentials]]\nname = \"a\"\naccess_key_id = { env = \"A\" }\nsecret_access_key = { env = \"S\" }\n";
        let parse = |text: String| Config::parse(&text).unwrap_err().key().map(str::to_owned);
        assert_eq!(parse(format!("{base}[xks]\n{credential}")), Some("xks.region".into()));
        assert_eq!(parse(format!("{base}[xks]\nregion = \"us-east-1\"\n")), Some("xks.credentials".into()));
        assert_eq!(
            parse(format!("{base}[xks]\nregion = \"r\"\nuri_prefix = \"/bad\"\n{credential}")),
            Some("xks.uri_prefix".into())
        );
        assert_eq!(
            parse(format!("{base}[xks]\nregion = \"r\"\n{credential}{credential}")),
            Some("xks.credentials[1].name".into())
        );
        Config::parse(&format!("{base}[xks]\nregion = \"r\"\n{credential}")).unwrap();
    }
}
