//! `--embedded`: a keymux proxy started in this process on the development soft
//! keystore, in a temporary directory, so one command shows real numbers.

use std::time::Duration;

use anyhow::{Context, ensure};
use keymux_client::Endpoint;
use keymux_proxy::backend::BackendConfig;
use keymux_proxy::backend::soft::{DEFAULT_KEY, SoftConfig};
use keymux_proxy::config::Config;
use keymux_proxy::keys::{KeyLifecycle, KeyType};
use keymux_proxy::server::{self, RunningServer};

/// A proxy serving on an ephemeral loopback port until dropped or shut down.
pub struct EmbeddedProxy {
    server: RunningServer,
    _dir: tempfile::TempDir,
}

impl EmbeddedProxy {
    /// Starts a proxy whose keystore holds every key in `keys`, all `aes-256`.
    pub async fn start(keys: &[String]) -> anyhow::Result<Self> {
        let keys: Vec<(String, KeyType)> = keys.iter().map(|name| (name.clone(), KeyType::Aes256)).collect();
        Self::start_with_keys(&keys).await
    }

    /// Starts a proxy whose keystore holds every key in `keys`, each of its type (see
    /// [`Scenario::embedded_keys`](crate::Scenario::embedded_keys)).
    ///
    /// The soft keystore always holds [`DEFAULT_KEY`] as an `aes-256` key, so that name
    /// cannot be asked for with another type.
    pub async fn start_with_keys(keys: &[(String, KeyType)]) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("temporary directory for the embedded keystore")?;
        let mut config = Config::default();
        config.server.listen = "127.0.0.1:0".parse()?;
        config.admin.enabled = false;
        config.server.shutdown_grace = Duration::from_secs(1);
        config.backend = BackendConfig::Soft(SoftConfig::throwaway(dir.path()));
        let backend = keymux_proxy::backend::open(&config.backend)?;
        for (name, key_type) in keys {
            if name == DEFAULT_KEY {
                ensure!(
                    *key_type == KeyType::Aes256,
                    "the embedded keystore's {DEFAULT_KEY:?} key is aes-256: name the {key_type} keys otherwise"
                );
                continue;
            }
            backend
                .create_key(name, *key_type)
                .with_context(|| format!("cannot create {key_type} key {name:?}"))?;
        }
        let server = server::start_with_backend(&config, backend).await?;
        Ok(Self { server, _dir: dir })
    }

    /// Where to send load.
    pub fn endpoint(&self) -> Endpoint {
        Endpoint::from(self.server.tcp_addr().expect("the embedded proxy serves plain TCP"))
    }

    /// Stops the proxy, letting in-flight requests finish.
    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}
