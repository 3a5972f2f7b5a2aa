//! The one place tests make a real SoftHSM2 token.
//!
//! SoftHSM reads `SOFTHSM2_CONF` once per process (`.cargo/config.toml` points it at
//! `target/softhsm/softhsm2.conf` unless the environment already sets it), so one token
//! serves every test of a run, and tests keep apart by using their own key names.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use keymux_proxy::backend::BackendConfig;
use keymux_proxy::backend::pkcs11::{Pkcs11Config, Pkcs11Mechanism};
use keymux_proxy::secrets::SecretSource;

/// The SoftHSM2 module Debian installs; `KEYMUX_TEST_PKCS11_MODULE` overrides it.
const DEFAULT_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const PIN: &str = "4321";

/// The test token.
pub struct SoftHsmToken {
    pub module: PathBuf,
    /// Its label, or `None` to select it by `slot`.
    pub label: Option<String>,
    pub slot: Option<u64>,
    pin_file: PathBuf,
}

impl SoftHsmToken {
    /// The user PIN.
    pub fn pin(&self) -> String {
        std::fs::read_to_string(&self.pin_file).unwrap()
    }

    /// A backend config for this token.
    pub fn backend_config(&self) -> BackendConfig {
        BackendConfig::Pkcs11(self.config(2))
    }

    /// A PKCS#11 config for this token with `sessions` sessions.
    pub fn config(&self, sessions: usize) -> Pkcs11Config {
        Pkcs11Config {
            module: self.module.clone(),
            token_label: self.label.clone(),
            slot: self.slot,
            pin: Some(SecretSource::File(self.pin_file.clone())),
            sessions,
            probe_interval: std::time::Duration::from_millis(50),
            mechanism: Pkcs11Mechanism::Auto,
        }
    }
}

/// A key name no other test of this run uses.
pub fn unique_key(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // The process id keeps names apart on a token that outlives the run (opencryptoki).
    format!("{prefix}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The test process's token, made on first use (before the module is loaded: SoftHSM
/// only sees tokens that exist when it is initialised).
///
/// With `KEYMUX_TEST_PKCS11_SLOT` set, the tests use that existing token of
/// `KEYMUX_TEST_PKCS11_MODULE` instead, with the PIN in `KEYMUX_TEST_PKCS11_PIN`: this is
/// how `./scripts/test` runs the same suite on opencryptoki (by slot: cryptoki cannot
/// parse opencryptoki 3.8's token info, so its label cannot be read).
pub fn token() -> &'static SoftHsmToken {
    static TOKEN: OnceLock<SoftHsmToken> = OnceLock::new();
    TOKEN.get_or_init(|| match std::env::var("KEYMUX_TEST_PKCS11_SLOT") {
        Ok(slot) => external_token(slot.parse().expect("KEYMUX_TEST_PKCS11_SLOT is a slot id")),
        Err(_) => make_token(&scratch_config()),
    })
}

fn external_token(slot: u64) -> SoftHsmToken {
    let pin = std::env::var("KEYMUX_TEST_PKCS11_PIN")
        .expect("KEYMUX_TEST_PKCS11_PIN goes with KEYMUX_TEST_PKCS11_SLOT");
    let pin_file = std::env::temp_dir().join(format!("keymux-test-pin-{}", std::process::id()));
    std::fs::write(&pin_file, pin).unwrap();
    SoftHsmToken { module: module(), label: None, slot: Some(slot), pin_file }
}

fn module() -> PathBuf {
    let module = std::env::var_os("KEYMUX_TEST_PKCS11_MODULE")
        .map_or_else(|| PathBuf::from(DEFAULT_MODULE), PathBuf::from);
    assert!(module.exists(), "{} is missing: install softhsm2 (./scripts/test does)", module.display());
    module
}

fn scratch_config() -> PathBuf {
    let conf =
        PathBuf::from(std::env::var_os("SOFTHSM2_CONF").expect("SOFTHSM2_CONF is set by .cargo/config.toml"));
    let dir = conf.parent().unwrap().to_owned();
    let tokens = dir.join("tokens");
    if conf.starts_with(Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()) {
        // Our own scratch directory. Test binaries run one at a time: each starts clean.
        let _ = std::fs::remove_dir_all(&tokens);
        std::fs::create_dir_all(&tokens).unwrap();
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .unwrap();
    }
    conf
}

fn make_token(conf: &Path) -> SoftHsmToken {
    let module = module();
    let dir = conf.parent().unwrap();
    let label = format!("keymux-test-{}", std::process::id());
    let status = Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", &label, "--so-pin", "123456", "--pin", PIN])
        .env("SOFTHSM2_CONF", conf)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("softhsm2-util runs (install softhsm2)");
    assert!(status.success(), "softhsm2-util --init-token failed");
    let pin_file = dir.join(format!("pin-{}", std::process::id()));
    std::fs::write(&pin_file, PIN).unwrap();
    SoftHsmToken { module, label: Some(label), slot: None, pin_file }
}

/// HSM tests take turns. SoftHSM2 2.6 occasionally fails `C_GenerateKey` with
/// CKR_GENERAL_ERROR while other sessions of the same process are busy encrypting (in
/// production the admin CLI is its own process), and the recovery tests reset every
/// session on the token. Within a test, load and rotation still run concurrently.
pub async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    TURN.lock().await
}

/// An SDK client for `proxy` that does not retry, so every status is seen.
pub async fn client_for(proxy: &crate::common::TestProxy) -> keymux_client::Client {
    let mut config = keymux_client::ClientConfig::new(vec![keymux_client::Endpoint::from(proxy.addr())]);
    config.max_retries = 0;
    keymux_client::Client::connect(config).await.unwrap()
}
