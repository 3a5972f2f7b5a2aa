//! Keys on an HSM through PKCS#11 (Thales Luna, Entrust nShield, Utimaco, AWS
//! CloudHSM; SoftHSM2 locally).
//!
//! Each executor thread owns one session, opened and logged in on that thread and
//! pinned to it for its life (a cryptoki `Session` is `!Sync`; no session is ever shared
//! behind a lock). Key versions are non-extractable, sensitive AES-256 keys named by
//! the scheme in [`labels`]; wraps are AES-256-GCM on the token with IVs from [`iv`],
//! and the blob header followed by the client AAD as the GCM associated data.
//!
//! Data keys for GENERATE_DATA_KEY come from the HSM's RNG (`C_GenerateRandom`), one
//! call per batch: the token's RNG is the one its certification covers, the same one
//! that made the KEKs, and batching makes its per-call cost negligible.
//!
//! Signing keys are key pairs generated on the token ([`pairs`]: the private key
//! non-extractable and for signing only), labelled with their type. SIGN runs on the
//! pinned sessions through the same per-key batches ([`signing`]); VERIFY and
//! GET_PUBLIC_KEY never reach the token: the proxy answers them from the public key,
//! read once per version as a DER SubjectPublicKeyInfo built from the public key
//! object's attributes.

mod config;
mod gcm;
mod iv;
pub mod labels;
mod metrics;
mod pairs;
mod scheme;
mod signing;
mod store;
mod worker;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::MechanismType;
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;

use crate::backend::{Backend, BackendFault, BackendWorker};
use crate::keys::KeyType;
use crate::secrets::SecretError;
use scheme::Scheme;

pub use config::{Pkcs11Config, Pkcs11Mechanism};

/// Why the PKCS#11 backend could not start. Never carries the PIN. Failed PKCS#11
/// calls keep cryptoki's error: the return value and the function that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Pkcs11Error {
    /// The config names no PIN source.
    #[error("no PIN source configured (backend.pin)")]
    NoPin,
    /// The PIN source gave nothing usable.
    #[error("pin: {0}")]
    Pin(#[from] SecretError),
    /// The module could not be loaded or initialised.
    #[error("module {module}: {source}")]
    Module {
        /// The module path.
        module: PathBuf,
        /// The failed call.
        source: CkError,
    },
    /// No token matches the configured label or slot.
    #[error("no token {wanted} in this module (present: {present})")]
    NoToken {
        /// The label or slot asked for.
        wanted: String,
        /// The slots and labels the module offers.
        present: String,
    },
    /// The token cannot do what keymux needs.
    #[error("{0}")]
    Mechanism(String),
    /// Logging in failed.
    #[error("login to the token failed: {0}")]
    Login(CkError),
    /// The token's AES-GCM does not round-trip: blobs it sealed could not be opened.
    #[error("the token failed keymux's AES-GCM self-test, so it is not used: {0}")]
    SelfTest(String),
}

/// What every session of this backend shares.
pub(crate) struct Shared {
    pub(crate) context: Pkcs11,
    pub(crate) slot: Slot,
    pin: AuthPin,
    pub(crate) probe_interval: Duration,
    /// How new blobs are sealed.
    pub(crate) scheme: Scheme,
    /// The signing mechanisms the token offers.
    pub(crate) mechanisms: pairs::Mechanisms,
    /// Bumped whenever a worker finds its session lost: some modules (opencryptoki)
    /// reuse session handles, so after a token reset every other worker's handle may
    /// now name a stranger's session, and each must open a new one.
    pub(crate) session_epoch: AtomicU64,
    /// Held shared by every worker for the length of a batch, and exclusively to bump
    /// `session_epoch`: once the epoch moves, no worker is still inside a batch on an
    /// old handle, so a reopened session (which may reuse an old handle's number) is
    /// never touched by a worker that has not yet seen the new epoch. No session is
    /// shared or locked; uncontended until a session is lost.
    pub(crate) recovery_fence: std::sync::RwLock<()>,
    /// This backend's counters.
    pub(crate) metrics: metrics::Pkcs11Metrics,
}

/// Logins tried before a CKR_GENERAL_ERROR counts (see [`Shared::open_session`]).
const LOGIN_ATTEMPTS: u32 = 5;

impl Shared {
    /// Opens a read-write session and logs the user in (login state is per
    /// application, so a later session may find it already done).
    ///
    /// A login that fails CKR_GENERAL_ERROR is tried again, up to
    /// [`LOGIN_ATTEMPTS`] times a few milliseconds apart: SoftHSM2 2.6 fails logins
    /// that way while another process logs in to the same token (several replicas
    /// starting on one token, or the admin CLI), and they succeed a moment later. Seen
    /// in `proxy/tests/replicas.rs`, where it made a replica unavailable for a probe
    /// interval (250 ms) just after it reported ready.
    pub(crate) fn open_session(&self) -> Result<Session, CkError> {
        let session = self.context.open_rw_session(self.slot)?;
        let mut attempt = 1;
        loop {
            match session.login(UserType::User, Some(&self.pin)) {
                Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => return Ok(session),
                Err(CkError::Pkcs11(RvError::GeneralError, _)) if attempt < LOGIN_ATTEMPTS => {
                    tracing::debug!(attempt, "C_Login failed CKR_GENERAL_ERROR; trying again");
                    std::thread::sleep(Duration::from_millis(5 * u64::from(attempt)));
                    attempt += 1;
                }
                Err(error) => return Err(error),
            }
        }
    }
}

/// The PKCS#11 backend.
#[derive(Clone)]
pub struct Pkcs11Backend {
    shared: Arc<Shared>,
    sessions: usize,
}

/// The process-wide context of each module: a module is initialised once per process,
/// and several backends (two proxies in one test, the admin CLI) share it.
fn module_context(module: &Path) -> Result<Pkcs11, Pkcs11Error> {
    static CONTEXTS: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let mut contexts = CONTEXTS.get_or_init(Mutex::default).lock().unwrap_or_else(|p| p.into_inner());
    if let Some(context) = contexts.get(module) {
        return Ok(context.clone());
    }
    let fail = |source: CkError| Pkcs11Error::Module { module: module.to_owned(), source };
    let context = Pkcs11::new(module).map_err(fail)?;
    match context.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(error) => return Err(fail(error)),
    }
    contexts.insert(module.to_owned(), context.clone());
    Ok(context)
}

/// A short, secret-free description of a PKCS#11 failure: the function and the
/// return value's name.
pub(crate) fn describe(error: &CkError) -> String {
    match error {
        CkError::Pkcs11(rv, function) => format!("{function}: {rv:?}"),
        other => other.to_string(),
    }
}

impl Pkcs11Backend {
    /// Loads the module, finds the token and checks that the PIN logs in.
    pub fn open(config: &Pkcs11Config) -> Result<Self, Pkcs11Error> {
        let pin = config.pin.as_ref().ok_or(Pkcs11Error::NoPin)?.resolve()?;
        let context = module_context(&config.module)?;
        let slot = find_slot(&context, config)?;
        let offered: Vec<MechanismType> =
            [MechanismType::AES_GCM, MechanismType::AES_CBC_PAD, MechanismType::SHA256_HMAC]
                .into_iter()
                .filter(|mechanism| context.get_mechanism_info(slot, *mechanism).is_ok())
                .collect();
        let scheme = Scheme::choose(config.mechanism, &offered).map_err(Pkcs11Error::Mechanism)?;
        let mechanisms = pairs::Mechanisms::probe(&context, slot);
        for key_type in labels::PAIR_TYPES {
            if let Err(why) = mechanisms.check_holds(key_type) {
                tracing::debug!(slot = slot.id(), "no {key_type} keys on this token: {why}");
            }
        }
        let shared = Arc::new(Shared {
            context,
            slot,
            pin: AuthPin::from(pin.as_str()),
            probe_interval: config.probe_interval,
            scheme,
            mechanisms,
            session_epoch: AtomicU64::new(0),
            recovery_fence: std::sync::RwLock::new(()),
            metrics: metrics::Pkcs11Metrics::default(),
        });
        let session = shared.open_session().map_err(Pkcs11Error::Login)?;
        if scheme == Scheme::Gcm {
            match gcm::self_test(&session).map_err(Pkcs11Error::SelfTest)? {
                gcm::IvHandling::KeepsCallersIv => {}
                gcm::IvHandling::ChoosesItsOwn => tracing::info!(
                    slot = slot.id(),
                    "the token chooses its own AES-GCM IVs; blobs store the IV it reports"
                ),
            }
        }
        Ok(Self { shared, sessions: config.sessions })
    }

    /// The module context (for tests that act on the token behind the proxy's back).
    pub fn context(&self) -> &Pkcs11 {
        &self.shared.context
    }

    /// The token's slot.
    pub fn slot(&self) -> Slot {
        self.shared.slot
    }

    /// Whether this token can hold signing keys of `key_type` (generate them and sign
    /// with them), as its mechanisms said when the backend opened; otherwise a sentence
    /// naming the mechanism it lacks. Creating such a key is refused with the same
    /// sentence.
    pub fn can_hold(&self, key_type: KeyType) -> Result<(), String> {
        if key_type == KeyType::Aes256 {
            return Ok(());
        }
        self.shared.mechanisms.check_holds(key_type)
    }
}

fn find_slot(context: &Pkcs11, config: &Pkcs11Config) -> Result<Slot, Pkcs11Error> {
    let slots = context
        .get_slots_with_token()
        .map_err(|source| Pkcs11Error::Module { module: config.module.clone(), source })?;
    // Labels are blank-padded; some modules (opencryptoki) pad with NULs instead.
    let label_of = |slot: Slot| {
        context.get_token_info(slot).map(|info| info.label().trim_end_matches([' ', '\0']).to_owned())
    };
    let found = slots.iter().copied().find(|slot| match (&config.token_label, config.slot) {
        (Some(label), _) => label_of(*slot).is_ok_and(|l| l == *label),
        (None, Some(id)) => slot.id() == id,
        (None, None) => false,
    });
    found.ok_or_else(|| {
        let present: Vec<String> = slots
            .iter()
            .map(|slot| format!("slot {} {:?}", slot.id(), label_of(*slot).unwrap_or_else(|e| describe(&e))))
            .collect();
        let wanted = match (&config.token_label, config.slot) {
            (Some(label), _) => format!("labelled {label:?}"),
            (None, id) => format!("in slot {}", id.unwrap_or_default()),
        };
        Pkcs11Error::NoToken { wanted, present: present.join(", ") }
    })
}

impl Backend for Pkcs11Backend {
    fn kind(&self) -> &'static str {
        "pkcs11"
    }

    fn open_worker(&self) -> Result<Box<dyn BackendWorker>, BackendFault> {
        Ok(Box::new(worker::Pkcs11Worker::new(Arc::clone(&self.shared))))
    }

    fn preferred_workers(&self) -> Option<usize> {
        Some(self.sessions)
    }

    fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        self.shared.metrics.register(registry);
    }
}
