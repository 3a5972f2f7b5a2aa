//! The one place KMS tests start moto's KMS-compatible server, and make configs and
//! proxies for it.
//!
//! `./scripts/test` installs `moto[server]` into a virtual environment and exports
//! `KEYMUX_TEST_MOTO` (the `moto_server` program); without it the tests look in
//! `target/moto-venv`, where `./scripts/test` puts it.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use keymux_client::testing::free_port;
use keymux_proxy::backend::BackendConfig;
use keymux_proxy::backend::kms::{KmsConfig, KmsRegionConfig};
use keymux_proxy::config::Config;

use crate::metrics::metric_sum;
use crate::proxy::TestProxy;

/// A moto server on loopback. It stops when dropped, or when the test process exits
/// (a shell between us and moto kills it once our end of its stdin closes).
#[derive(Debug)]
pub struct Moto {
    /// Where it listens.
    pub addr: SocketAddr,
    process: Option<(Child, ChildStdin)>,
}

fn moto_server() -> PathBuf {
    let path = std::env::var_os("KEYMUX_TEST_MOTO").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/moto-venv/bin/moto_server"),
        PathBuf::from,
    );
    assert!(
        path.exists(),
        "{} is missing: run ./scripts/test once (it installs moto[server])",
        path.display()
    );
    path
}

impl Moto {
    /// Starts a server on a free ephemeral port.
    pub fn start() -> Self {
        let mut moto = Self { addr: SocketAddr::from(([127, 0, 0, 1], free_port())), process: None };
        moto.restart();
        moto
    }

    /// The server every test of this process shares (they keep apart by key names).
    pub fn shared() -> &'static Self {
        static SHARED: OnceLock<Moto> = OnceLock::new();
        SHARED.get_or_init(Self::start)
    }

    /// Its endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Starts the server again on the same port (its keys are gone: moto keeps them in
    /// memory).
    pub fn restart(&mut self) {
        assert!(self.process.is_none(), "already running");
        let log = std::env::temp_dir().join(format!("keymux-moto-{}.log", self.addr.port()));
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(r#""$0" -H 127.0.0.1 -p "$1" </dev/null >"$2" 2>&1 & pid=$!; read _; kill $pid; wait $pid"#)
            .arg(moto_server())
            .arg(self.addr.port().to_string())
            .arg(&log)
            .stdin(Stdio::piped())
            .spawn()
            .expect("sh runs");
        let stdin = child.stdin.take().unwrap();
        self.process = Some((child, stdin));
        let started = Instant::now();
        while TcpStream::connect(self.addr).is_err() {
            assert!(started.elapsed() < Duration::from_secs(60), "moto did not start; see {}", log.display());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the server and waits until it is gone.
    pub fn kill(&mut self) {
        if let Some((mut child, mut stdin)) = self.process.take() {
            let _ = stdin.write_all(b"\n");
            drop(stdin);
            let _ = child.wait();
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A credentials file in the AWS format (moto takes any credentials).
fn credentials_file() -> PathBuf {
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| {
        let path = std::env::temp_dir().join(format!("keymux-test-aws-credentials-{}", std::process::id()));
        std::fs::write(&path, "[default]\naws_access_key_id = testing\naws_secret_access_key = testing\n")
            .unwrap();
        path
    })
    .clone()
}

/// A KMS config for `regions` (region, endpoint), in order of preference, with
/// settings that suit tests: a fast probe and a short call timeout.
pub fn kms_config(regions: &[(&str, String)]) -> KmsConfig {
    let regions = regions
        .iter()
        .map(|(region, endpoint)| KmsRegionConfig {
            region: (*region).to_owned(),
            endpoint: Some(endpoint.clone()),
            name: None,
        })
        .collect();
    let mut config = KmsConfig::new(regions);
    config.credentials_file = Some(credentials_file());
    config.probe_interval = Duration::from_millis(100);
    config.call_timeout = Duration::from_secs(2);
    config
}

/// Starts a proxy on `kms` with the test settings adjusted by `tweak`; the key refresh
/// is left to the test ([`TestProxy::create_key`] refreshes), so KMS sees only the calls a test makes.
pub async fn start_proxy(kms: KmsConfig, tweak: impl FnOnce(&mut Config)) -> TestProxy {
    TestProxy::start_on(
        |config| config.backend = BackendConfig::Kms(kms),
        |config| {
            config.keys.refresh_interval = Duration::from_secs(3600);
            tweak(config);
        },
    )
    .await
}

/// KMS requests of `call` that region `backend` answered, from the proxy's metrics.
pub async fn kms_calls(proxy: &TestProxy, backend: &str, call: &str) -> u64 {
    let page = proxy.scrape().await;
    let prefix =
        format!("keymux_kms_calls_total{{backend=\"{backend}\",call=\"{call}\",outcome=\"answered\"}}");
    metric_sum(&page, &prefix) as u64
}
