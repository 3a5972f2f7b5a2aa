//! The token the PKCS#11 tests target: a fresh SoftHSM2 token by default, or an
//! existing token of another module (opencryptoki) named by the environment.
//!
//! SoftHSM reads `SOFTHSM2_CONF` once per process (`.cargo/config.toml` points it at
//! `target/softhsm/softhsm2.conf` unless the environment already sets it), so one token
//! serves every test of a run, and tests keep apart by using their own key names
//! ([`crate::unique_key`]).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use keymux_proxy::backend::BackendConfig;
use keymux_proxy::backend::pkcs11::{Pkcs11Config, Pkcs11Mechanism};
use keymux_proxy::secrets::SecretSource;

use crate::softhsm;

/// The user PIN of the SoftHSM2 test token.
const PIN: &str = "4321";
/// Its security officer PIN.
const SO_PIN: &str = "123456";

/// The test token.
#[derive(Debug)]
pub struct TestToken {
    /// The PKCS#11 module: SoftHSM2's, or `KEYMUX_TEST_PKCS11_MODULE`.
    pub module: PathBuf,
    /// Its label, or `None` to select it by `slot`.
    pub label: Option<String>,
    /// Its slot id, when it is selected by slot.
    pub slot: Option<u64>,
    pin_file: PathBuf,
}

impl TestToken {
    /// The user PIN.
    pub fn pin(&self) -> String {
        std::fs::read_to_string(&self.pin_file).unwrap()
    }

    /// A backend config for this token.
    pub fn backend_config(&self) -> BackendConfig {
        BackendConfig::Pkcs11(self.config(2))
    }

    /// This token's `[backend]` table, for a proxy started as its own process
    /// ([`crate::replica::Replica`]).
    pub fn backend_toml(&self, sessions: usize) -> String {
        crate::replica::pkcs11_backend(
            &self.module,
            self.label.as_deref(),
            self.slot,
            &self.pin_file,
            sessions,
        )
    }

    /// A PKCS#11 config for this token with `sessions` sessions.
    pub fn config(&self, sessions: usize) -> Pkcs11Config {
        Pkcs11Config {
            module: self.module.clone(),
            token_label: self.label.clone(),
            slot: self.slot,
            pin: Some(SecretSource::File(self.pin_file.clone())),
            sessions,
            probe_interval: Duration::from_millis(50),
            mechanism: Pkcs11Mechanism::Auto,
        }
    }
}

/// The test process's token, made on first use (before the module is loaded: SoftHSM
/// only sees tokens that exist when it is initialised).
///
/// With `KEYMUX_TEST_PKCS11_SLOT` set, the tests use that existing token of
/// `KEYMUX_TEST_PKCS11_MODULE` instead, with the PIN in `KEYMUX_TEST_PKCS11_PIN`: this is
/// how `./scripts/test` runs the same suite on opencryptoki (by slot: cryptoki cannot
/// parse opencryptoki 3.8's token info, so its label cannot be read).
pub fn token() -> &'static TestToken {
    static TOKEN: OnceLock<TestToken> = OnceLock::new();
    TOKEN.get_or_init(|| match std::env::var("KEYMUX_TEST_PKCS11_SLOT") {
        Ok(slot) => external_token(slot.parse().expect("KEYMUX_TEST_PKCS11_SLOT is a slot id")),
        Err(_) => softhsm_token(&scratch_config()),
    })
}

/// Calls `C_CloseAllSessions` on `slot` through a second handle on `module`, closing
/// every session this process has on that token, as a token reset would. The module
/// must already be loaded and initialised in this process (by a proxy).
#[allow(unsafe_code)]
pub fn close_all_sessions(module: &Path, slot: u64) {
    type CloseAll = unsafe extern "C" fn(std::os::raw::c_ulong) -> std::os::raw::c_ulong;
    // SAFETY: the module is already loaded and initialised; loading it again returns
    // the same instance, and C_CloseAllSessions takes a slot id only.
    unsafe {
        let module = libloading::Library::new(module).unwrap();
        let close_all: libloading::Symbol<'_, CloseAll> = module.get(b"C_CloseAllSessions").unwrap();
        assert_eq!(close_all(slot as std::os::raw::c_ulong), 0, "CKR_OK");
    }
}

/// HSM tests take turns. SoftHSM2 2.6 occasionally fails `C_GenerateKey` with
/// CKR_GENERAL_ERROR while other sessions of the same process are busy encrypting (in
/// production the admin CLI is its own process), and the recovery tests reset every
/// session on the token. Within a test, load and rotation still run concurrently.
pub async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    TURN.lock().await
}

fn external_token(slot: u64) -> TestToken {
    let pin = std::env::var("KEYMUX_TEST_PKCS11_PIN")
        .expect("KEYMUX_TEST_PKCS11_PIN goes with KEYMUX_TEST_PKCS11_SLOT");
    let pin_file = std::env::temp_dir().join(format!("keymux-test-pin-{}", std::process::id()));
    std::fs::write(&pin_file, pin).unwrap();
    TestToken { module: module(), label: None, slot: Some(slot), pin_file }
}

fn module() -> PathBuf {
    let module = std::env::var_os("KEYMUX_TEST_PKCS11_MODULE")
        .map_or_else(|| PathBuf::from(softhsm::MODULE), PathBuf::from);
    assert!(module.exists(), "{} is missing: install softhsm2 (./scripts/test does)", module.display());
    module
}

/// The SoftHSM2 configuration `SOFTHSM2_CONF` names; when it is our own scratch file
/// under the workspace, it is written fresh (test binaries run one at a time: each
/// starts clean).
fn scratch_config() -> PathBuf {
    let conf =
        PathBuf::from(std::env::var_os("SOFTHSM2_CONF").expect("SOFTHSM2_CONF is set by .cargo/config.toml"));
    if conf.starts_with(Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()) {
        softhsm::fresh_config(&conf).unwrap();
    }
    conf
}

fn softhsm_token(conf: &Path) -> TestToken {
    let module = module();
    let label = format!("keymux-test-{}", std::process::id());
    softhsm::init_token(conf, &label, SO_PIN, PIN).unwrap();
    let pin_file = conf.parent().unwrap().join(format!("pin-{}", std::process::id()));
    std::fs::write(&pin_file, PIN).unwrap();
    TestToken { module, label: Some(label), slot: None, pin_file }
}

/// The test module in front of the test token's that chooses its own AES-GCM IVs
/// (`test-support/pkcs11-own-iv`), built beside the test binaries by
/// `cargo build -p keymux-pkcs11-own-iv` (`./scripts/test` does).
pub fn own_iv_module() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test binary>
    let profile = exe.parent().and_then(Path::parent).unwrap();
    let module = profile.join("libkeymux_pkcs11_own_iv.so");
    assert!(module.exists(), "{} is missing: run cargo build -p keymux-pkcs11-own-iv", module.display());
    module
}
