//! `[vault]` and `[[vault.tokens]]`: the Transit-compatible API's listener, mount and
//! tokens.

use std::net::SocketAddr;

use serde::Deserialize;

use crate::config::TlsConfig;
use crate::config::error::{InvalidSetting, invalid};
use crate::frontend::http::HttpConfig;
use crate::secrets::SecretSource;

/// `[vault]`: the Vault Transit-compatible HTTP API. Absent: off.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VaultConfig {
    /// Address to serve on. Default `127.0.0.1:8200` (Vault's own port).
    pub listen: SocketAddr,
    /// The Transit mount: requests go to `/v1/<mount>/...`. Default `transit`.
    pub mount: String,
    /// TLS, limits and time-outs of the listener (`[vault.http]`).
    pub http: HttpConfig,
    /// Most items in one `batch_input`; more are refused (400). Default 10000.
    pub max_batch_items: usize,
    /// `encrypt` on a missing key creates it, as Vault's upsert does, when the caller
    /// may `manage_keys` on it. Default false: 404, so a typo never mints a key.
    pub create_keys_on_encrypt: bool,
    /// The tokens clients send as `X-Vault-Token` or `Authorization: Bearer`.
    pub tokens: Vec<TokenConfig>,
}

impl Default for VaultConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8200)),
            mount: "transit".to_owned(),
            http: HttpConfig::default(),
            max_batch_items: 10_000,
            create_keys_on_encrypt: false,
            tokens: Vec::new(),
        }
    }
}

/// One `[[vault.tokens]]` entry: a token, known only by its hash, and the keymux
/// identity it stands for (`token = "<name>"` in `[[acl]]` rules matches it).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenConfig {
    /// The identity's name (no `:`): the principal `token:<name>` in quotas and the
    /// audit log.
    pub name: String,
    /// Where the token itself is (an environment variable or a file): it is read at
    /// start, hashed, and the plain text dropped (zeroized).
    pub token: Option<SecretSource>,
    /// Where the token's SHA-256 is, in hex (so the proxy's host never holds the token
    /// at all: `printf %s "$TOKEN" | sha256sum`).
    pub sha256: Option<SecretSource>,
}

impl VaultConfig {
    /// Checks every value; keys are relative to `[vault]`. `tls` is the `[tls]` table.
    pub fn validate(&self, tls: Option<&TlsConfig>) -> Result<(), InvalidSetting> {
        let mount_ok = !self.mount.is_empty()
            && self.mount.split('/').all(|part| {
                !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            });
        if !mount_ok {
            return invalid("mount", "one or more /-separated names of letters, digits, '-', '_', '.'");
        }
        if self.mount.split('/').next().is_some_and(|first| first == "sys" || first == "auth") {
            return invalid("mount", "sys/ and auth/ are Vault's own paths");
        }
        self.http.validate(tls).map_err(|e| e.within("http"))?;
        if self.max_batch_items == 0 {
            return invalid("max_batch_items", "must be at least 1");
        }
        for (index, token) in self.tokens.iter().enumerate() {
            token.validate().map_err(|e| e.within(&format!("tokens[{index}]")))?;
            if self.tokens[..index].iter().any(|other| other.name == token.name) {
                return Err(InvalidSetting::new(format!("tokens[{index}].name"), "names must be unique"));
            }
        }
        Ok(())
    }
}

impl TokenConfig {
    /// Checks the entry; keys are relative to it.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if self.name.is_empty() || self.name.chars().any(|c| c.is_control() || c == ':') {
            // ':' is kept for other front ends' token identities (`xks:<name>`), so a
            // Vault token can never pass for one of them in [[acl]] rules.
            return invalid("name", "a non-empty name without control characters or ':'");
        }
        match (&self.token, &self.sha256) {
            (Some(source), None) => source.validate().map_err(|m| InvalidSetting::new("token", m)),
            (None, Some(source)) => source.validate().map_err(|m| InvalidSetting::new("sha256", m)),
            _ => invalid("token", "give exactly one of token = { env | file } or sha256 = { env | file }"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::access::identity::Identity;
    use crate::access::ops::AclOp;
    use crate::config::Config;

    #[test]
    fn the_example_config_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/vault.toml");
        let config = Config::load(&path).unwrap();
        let vault = config.vault.as_ref().expect("[vault]");
        assert_eq!(vault.listen, "127.0.0.1:8200".parse().unwrap());
        assert_eq!(vault.mount, "transit");
        assert!(!vault.http.tls);
        assert_eq!(vault.tokens.len(), 1);
        assert_eq!(vault.tokens[0].token, Some(SecretSource::Env("KEYMUX_VAULT_TOKEN".into())));
        assert!(!config.serves_plain_tcp());
        let acl = crate::access::acl::Acl::new(config.acl.clone());
        let root = acl.permissions(&Identity::token("root"));
        assert!(root.allows(AclOp::ManageKeys, "any") && root.allows(AclOp::Sign, "any"));
        assert!(!acl.permissions(&Identity::anonymous()).allows(AclOp::Wrap, "default"));
    }

    #[test]
    fn mounts_and_tokens_are_checked() {
        VaultConfig::default().validate(None).unwrap();
        let bad = |mount: &str| VaultConfig { mount: mount.into(), ..VaultConfig::default() };
        assert_eq!(bad("").validate(None).unwrap_err().key, "mount");
        assert_eq!(bad("a//b").validate(None).unwrap_err().key, "mount");
        assert_eq!(bad("sys").validate(None).unwrap_err().key, "mount");
        bad("team/transit").validate(None).unwrap();
        let token = |name: &str| TokenConfig {
            name: name.into(),
            token: Some(SecretSource::Env("T".into())),
            sha256: None,
        };
        let twice = VaultConfig { tokens: vec![token("a"), token("a")], ..VaultConfig::default() };
        assert_eq!(twice.validate(None).unwrap_err().key, "tokens[1].name");
        assert_eq!(
            token("xks:store").validate().unwrap_err().key,
            "name",
            "never another front end's identity"
        );
        let neither = TokenConfig { token: None, ..token("a") };
        assert_eq!(neither.validate().unwrap_err().key, "token");
    }
}
