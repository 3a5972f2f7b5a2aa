//! `[kubernetes_kms]`: the Kubernetes KMS v2 plugin socket and the key it wraps under.

use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use serde::Deserialize;

use crate::config::InvalidSetting;
use crate::config::error::invalid;

/// `[kubernetes_kms]`: serve the KMS v2 plugin API to kube-apiserver. Absent: off.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KubernetesKmsConfig {
    /// The Unix socket the API server dials (`unix://` + this path in its
    /// EncryptionConfiguration). Required. A stale socket file is replaced; one another
    /// process still serves is refused.
    pub socket: PathBuf,
    /// The keymux key that wraps the API server's DEK seeds. Required.
    pub key: String,
    /// The group (numeric gid) allowed to connect: the socket is then mode 0660 and owned
    /// by this group. Default: none, mode 0600 (only the proxy's own user connects).
    pub socket_group: Option<u32>,
    /// How long one Encrypt or Decrypt may take, the deadline given to the router.
    /// Default 3 s, kube-apiserver's own default KMS timeout.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// How long a Status answer (a real round trip through the backend) is reused before
    /// the next Status probes again. Default 1 s; `0s` probes on every call.
    #[serde(with = "humantime_serde")]
    pub status_cache_ttl: Duration,
    /// The largest gRPC message accepted. Default 64 KiB: a ciphertext is under 1 kB and
    /// the API server keeps annotations under 32 kB.
    pub max_message_size: ByteSize,
    /// Concurrent calls (HTTP/2 streams) per connection; further calls wait in the
    /// client. Default 1024.
    pub max_concurrent_streams: u32,
}

impl Default for KubernetesKmsConfig {
    fn default() -> Self {
        Self {
            socket: PathBuf::new(),
            key: String::new(),
            socket_group: None,
            request_timeout: Duration::from_secs(3),
            status_cache_ttl: Duration::from_secs(1),
            max_message_size: ByteSize::kib(64),
            max_concurrent_streams: 1024,
        }
    }
}

impl KubernetesKmsConfig {
    /// Checks every value; keys are relative to `[kubernetes_kms]`.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if self.socket.as_os_str().is_empty() {
            return invalid("socket", "the plugin's Unix socket path is required");
        }
        if self.key.is_empty() || self.key.len() > 255 {
            return invalid("key", "the keymux key name is required (1 to 255 bytes)");
        }
        if self.request_timeout.is_zero() {
            return invalid("request_timeout", "must be positive");
        }
        if self.max_message_size < ByteSize::kib(4) || self.max_message_size > ByteSize::mib(16) {
            return invalid("max_message_size", "must be between 4 KiB and 16 MiB");
        }
        if self.max_concurrent_streams == 0 {
            return invalid("max_concurrent_streams", "must be at least 1");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;

    #[test]
    fn the_example_config_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/kubernetes-kms.toml");
        let config = Config::load(&path).unwrap();
        let kubernetes = config.kubernetes_kms.as_ref().expect("[kubernetes_kms]");
        assert_eq!(kubernetes.socket, Path::new("./keymux-kms.sock"));
        assert_eq!(kubernetes.key, "default");
        assert_eq!(kubernetes.socket_group, None);
        assert!(!config.serves_plain_tcp());
    }

    #[test]
    fn errors_name_the_key() {
        let base = "[backend]\ntype = \"soft\"\npassphrase = { env = \"P\" }\n[server]\nplain_tcp = false\n";
        let error = Config::parse(&format!("{base}[kubernetes_kms]\nkey = \"k\"\n")).unwrap_err();
        assert_eq!(error.key(), Some("kubernetes_kms.socket"), "{error}");
        let error = Config::parse(&format!("{base}[kubernetes_kms]\nsocket = \"s\"\n")).unwrap_err();
        assert_eq!(error.key(), Some("kubernetes_kms.key"), "{error}");
        let zero = format!("{base}[kubernetes_kms]\nsocket = \"s\"\nkey = \"k\"\nrequest_timeout = \"0s\"\n");
        assert_eq!(Config::parse(&zero).unwrap_err().key(), Some("kubernetes_kms.request_timeout"));
    }
}
