//! The soak's cluster: one SoftHSM2 token, proxy A in this process, proxy B a
//! `keymux serve` child ([`Replica`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use keymux_client::testing::free_port;
use keymux_client::{Client, ClientConfig, Endpoint};
use keymux_proxy::backend::pkcs11::Pkcs11Backend;
use keymux_proxy::config::Config;
use keymux_proxy::server::{self, RunningServer};
use keymux_test_support::certs::Pki;
use keymux_test_support::gate::{Gate, GatedBackend};
use keymux_test_support::pkcs11::token;
use keymux_test_support::replica::{self, Replica};

/// The key every checking client uses.
pub(crate) const KEY: &str = "soak";

/// The two proxies and what they run on.
pub(crate) struct Cluster {
    pub(crate) pki: Pki,
    _dir: tempfile::TempDir,
    pub(crate) a: Option<RunningServer>,
    /// In front of A's backend: SoftHSM2 frees a session that `C_CloseAllSessions`
    /// closes even while another thread is inside a call on it (a use after free that
    /// crashes the process; a real HSM fences this), so the soak holds A's executors
    /// outside their batches for the instant of the reset, as the recovery test does.
    pub(crate) a_gate: Gate,
    pub(crate) a_plain: SocketAddr,
    pub(crate) a_tls: SocketAddr,
    pub(crate) b: Replica,
    pub(crate) b_tls: SocketAddr,
    /// The token's slot, for `C_CloseAllSessions`.
    pub(crate) slot: u64,
    /// Keeps the module initialised in this process for the soak's own calls.
    _admin: Pkcs11Backend,
    /// Where A's audit log lives: a 4 MiB tmpfs when one could be mounted.
    pub(crate) audit_dir: PathBuf,
    pub(crate) audit_on_tmpfs: bool,
}

/// `[server]` lines both proxies add: plain TCP beside TLS, and short timeouts so the
/// chaos's stuck clients are let go soon.
const SERVER: &str =
    "plain_tcp = true\nwrite_timeout = \"2s\"\nhandshake_timeout = \"2s\"\nframe_timeout = \"2s\"\n";

/// Everything after `[server]` and `[admin]`: TLS on `tls` with `cert`, the audit log
/// at `audit`, a fast key refresh, and the test token.
fn tables(tls: SocketAddr, cert: &(PathBuf, PathBuf), ca: &Path, audit: &Path) -> String {
    format!(
        "[tls]\nlisten = \"{tls}\"\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\nclient_auth = \"optional\"\n\
         reload_interval = \"0s\"\n\n[keys]\nrefresh_interval = \"1s\"\n\n[audit]\npath = \"{}\"\n\n{}probe_interval = \"100ms\"\n",
        cert.0.display(),
        cert.1.display(),
        ca.display(),
        audit.display(),
        token().backend_toml(2),
    )
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

impl Cluster {
    /// Makes a token of its own (`SOFTHSM2_CONF` names where) and the key, and starts
    /// both proxies.
    pub(crate) async fn start(keymux: &Path) -> anyhow::Result<Self> {
        anyhow::ensure!(
            keymux.exists(),
            "{} is missing: cargo build --release --bin keymux",
            keymux.display()
        );
        let conf =
            PathBuf::from(std::env::var_os("SOFTHSM2_CONF").context("SOFTHSM2_CONF names the soak's own")?);
        keymux_test_support::softhsm::fresh_config(&conf)?;
        let pki = Pki::new("soak ca");
        let dir = tempfile::tempdir()?;
        let audit_dir = dir.path().join("audit");
        std::fs::create_dir_all(&audit_dir)?;
        let audit_on_tmpfs = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
            .arg(&audit_dir)
            .status()
            .is_ok_and(|status| status.success());
        let ca = pki.ca_path();
        let (a_tls, b_tls) = (loopback(free_port()), loopback(free_port()));
        let a_cert = pki.write("a", &pki.server("proxy-a"));
        let b_cert = pki.write("b", &pki.server("proxy-b"));
        let b_tables = tables(b_tls, &b_cert, &ca, &dir.path().join("b.jsonl"));
        let b = Replica::start(keymux, dir.path(), "b", SERVER, &b_tables, &[], None)?;
        let created =
            Command::new(keymux).args(["key", "create", KEY, "--config"]).arg(b.config()).status()?;
        anyhow::ensure!(created.success(), "keymux key create failed");
        let a_plain = loopback(free_port());
        let a_text = replica::config_text(
            a_plain.port(),
            free_port(),
            SERVER,
            &tables(a_tls, &a_cert, &ca, &audit_dir.join("a.jsonl")),
        );
        let a_config = Config::parse(&a_text)?;
        let gate = Gate::default();
        let backend = keymux_proxy::backend::open(&a_config.backend)?;
        let a =
            server::start_with_backend(&a_config, Arc::new(GatedBackend::new(backend, gate.clone()))).await?;
        let admin = Pkcs11Backend::open(&token().config(1))?;
        let slot = admin.slot().id();
        // Both proxies see the key within a refresh interval.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        Ok(Self {
            pki,
            _dir: dir,
            a: Some(a),
            a_gate: gate,
            a_plain,
            a_tls,
            b,
            b_tls,
            slot,
            _admin: admin,
            audit_dir,
            audit_on_tmpfs,
        })
    }

    /// An SDK client with both proxies' TLS endpoints and a client certificate.
    pub(crate) async fn client(&self) -> anyhow::Result<Client> {
        let me = self.pki.client_cn("soak-client");
        let mut config = ClientConfig::new(vec![
            Endpoint::tls("localhost", self.a_tls.port()),
            Endpoint::tls("localhost", self.b_tls.port()),
        ]);
        config.tls = Some(self.pki.client_tls(Some(&me)));
        config.connections = 4;
        config.default_timeout = Duration::from_secs(5);
        Ok(Client::connect(config).await?)
    }

    /// Stops both proxies and unmounts the audit tmpfs.
    pub(crate) async fn stop(mut self) {
        self.b.kill();
        if let Some(a) = self.a.take() {
            a.shutdown().await;
        }
        if self.audit_on_tmpfs {
            let _ = Command::new("umount").arg(&self.audit_dir).status();
        }
    }
}
