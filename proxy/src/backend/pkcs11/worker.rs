//! One executor thread's session, and how a batch runs on it: wraps and unwraps under
//! the AES keys, and SIGN with the key pairs' private keys (see `signing.rs`), each key
//! handle resolved once per session.
//!
//! Recovery: a session-level failure (the session closed or invalidated, the user
//! logged out, the device removed or failing) marks the session lost, and bumps the
//! backend's session epoch so that every other worker replaces its session too before
//! its next batch (modules may reuse the handles of closed sessions, so an old handle
//! could name another thread's new session). A lost session is forgotten rather than
//! closed, for the same reason. The batch's failed
//! operations are retried once on a freshly opened, logged-in session; if none can be
//! opened, they fail with BACKEND_UNAVAILABLE, and until `probe_interval` has passed
//! later batches fail the same way at once, then the next batch probes again. Never a
//! wrong answer, never a hung request.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use keymux_protocol::{BlobHeader, BlobMode, Reply, SecretBytes};

use super::gcm;
use super::iv::IvSequence;
use super::pairs::Mechanisms;
use super::scheme::{CBC_IV_LEN, GCM_IV_LEN, GCM_TAG_LEN, MAC_LEN, Scheme, mac_input};
use super::{Shared, describe, labels, signing};
use crate::backend::{BackendFault, BackendWorker, BatchOp, Completions, Op, ParsedBlob, RetryReason};
use crate::error::OpError;
use crate::keys::KeyInfo;

/// Why one operation failed: [`BackendFault`], where a lost session is the retryable
/// [`RetryReason::SessionLost`].
type Fault = BackendFault;

/// The session is unusable: reopen it and retry.
fn session_lost(error: &CkError) -> Fault {
    BackendFault::Retryable { reason: RetryReason::SessionLost(describe(error)), retry_after: Duration::ZERO }
}

/// Sorts a PKCS#11 failure into a lost session or an operation error.
fn classify(error: CkError, key: &str, version: u32) -> Fault {
    let CkError::Pkcs11(rv, _) = &error else { return Fault::Final(OpError::Internal(describe(&error))) };
    match rv {
        RvError::SessionHandleInvalid
        | RvError::SessionClosed
        | RvError::UserNotLoggedIn
        | RvError::DeviceError
        | RvError::DeviceRemoved
        | RvError::DeviceMemory
        | RvError::TokenNotPresent
        | RvError::TokenNotRecognized
        | RvError::CryptokiNotInitialized
        | RvError::OperationActive => session_lost(&error),
        // The session is fine; the object a cached handle named is not there any more.
        RvError::KeyHandleInvalid | RvError::ObjectHandleInvalid => BackendFault::Retryable {
            reason: RetryReason::StaleHandle(describe(&error)),
            retry_after: Duration::ZERO,
        },
        RvError::EncryptedDataInvalid
        | RvError::EncryptedDataLenRange
        | RvError::SignatureInvalid
        | RvError::SignatureLenRange => Fault::Final(OpError::Integrity),
        // The token refuses the key for this use: the version is disabled.
        RvError::KeyFunctionNotPermitted => {
            Fault::Final(BackendFault::KeyRefused.into_op_error(key, version))
        }
        _ => Fault::Final(OpError::Internal(describe(&error))),
    }
}

/// A session and what is cached on it.
struct OpenSession {
    session: Session,
    /// The backend's session epoch when this session was opened.
    epoch: u64,
    scheme: Scheme,
    /// The signing mechanisms the token offers.
    mechanisms: Mechanisms,
    ivs: IvSequence,
    /// Key handles by label, resolved once per session (a key pair's label names its
    /// private key here: the data path never uses the public one).
    handles: HashMap<String, ObjectHandle>,
}

impl OpenSession {
    /// Opens and logs in a session, which must pass the AES-GCM self-test (when that is
    /// the scheme) before it serves; otherwise a secret-free sentence why not.
    fn open(shared: &Shared) -> Result<Self, String> {
        let epoch = shared.session_epoch.load(Ordering::SeqCst);
        let session = shared.open_session().map_err(|e| describe(&e))?;
        if shared.scheme == Scheme::Gcm {
            gcm::self_test(&session).map_err(|why| {
                tracing::error!(%why, "the PKCS#11 session failed the AES-GCM self-test; not using it");
                format!("the token failed the AES-GCM self-test: {why}")
            })?;
        }
        let fixed = Self::fixed_field(&session).map_err(|e| describe(&e))?;
        Ok(Self {
            session,
            epoch,
            scheme: shared.scheme,
            mechanisms: shared.mechanisms.clone(),
            ivs: IvSequence::new(fixed),
            handles: HashMap::new(),
        })
    }

    /// Drops a session whose handle may no longer be ours without calling
    /// C_CloseSession on it (the handle may now name another thread's session). The
    /// small `Session` value is leaked, once per session loss.
    fn abandon(self) {
        std::mem::forget(self.session);
    }

    /// A fresh 64-bit IV fixed field: the HSM's RNG XOR the OS CSPRNG.
    fn fixed_field(session: &Session) -> Result<[u8; 8], CkError> {
        let mut from_hsm = [0u8; 8];
        session.generate_random_slice(&mut from_hsm)?;
        let mut from_os = [0u8; 8];
        getrandom::fill(&mut from_os).expect("the operating system's random number generator failed");
        Ok(std::array::from_fn(|i| from_hsm[i] ^ from_os[i]))
    }

    fn next_iv(&mut self) -> Result<[u8; GCM_IV_LEN], Fault> {
        if let Some(iv) = self.ivs.next_iv() {
            return Ok(iv);
        }
        let fixed = Self::fixed_field(&self.session).map_err(|e| classify(e, "", 0))?;
        self.ivs = IvSequence::new(fixed);
        self.ivs.next_iv().ok_or_else(|| Fault::Final(OpError::Internal("IV sequence exhausted".into())))
    }

    /// The handle of the key of class `class` labelled `label` (a version of `name`),
    /// resolved once per session.
    fn handle(
        &mut self,
        class: ObjectClass,
        label: String,
        name: &str,
        version: u32,
    ) -> Result<ObjectHandle, Fault> {
        if let Some(handle) = self.handles.get(&label) {
            return Ok(*handle);
        }
        let template = [Attribute::Class(class), Attribute::Label(label.clone().into_bytes())];
        let found = self.session.find_objects(&template).map_err(|e| classify(e, name, version))?;
        let handle = match found.as_slice() {
            [handle] => *handle,
            [] => return Err(OpError::UnknownVersion { key: name.into(), version }.into()),
            _ => {
                return Err(
                    OpError::Internal(format!("several objects labelled {label} on the token")).into()
                );
            }
        };
        self.handles.insert(label, handle);
        Ok(handle)
    }

    fn aes_key(&mut self, name: &str, version: u32) -> Result<ObjectHandle, Fault> {
        self.handle(ObjectClass::SECRET_KEY, labels::version_label(name, version), name, version)
    }

    fn mac_key(&mut self, name: &str, version: u32) -> Result<ObjectHandle, Fault> {
        self.handle(ObjectClass::SECRET_KEY, labels::mac_label(name, version), name, version)
    }

    /// Signs `input` (a digest if `digest`) with the private key of `key`'s current
    /// version.
    fn sign(&mut self, key: &KeyInfo, input: &[u8], digest: bool) -> Result<Reply, Fault> {
        key.check_signs()?;
        let version = key.current_version()?;
        let plan = signing::plan(key.key_type, input, digest, &self.mechanisms)?;
        let label = labels::pair_label(&key.name, version, key.key_type);
        let handle = self.handle(ObjectClass::PRIVATE_KEY, label, &key.name, version)?;
        let raw = self.session.sign(&plan.mechanism, handle, &plan.data).map_err(|error| match error {
            // Listed by C_GetMechanismInfo, yet refused for this key.
            CkError::Pkcs11(RvError::MechanismInvalid | RvError::MechanismParamInvalid, _) => {
                Fault::Final(OpError::BadRequest(format!(
                    "the token refused {} for {} key {:?}: {}",
                    plan.mechanism.mechanism_type(),
                    key.key_type,
                    key.name,
                    describe(&error)
                )))
            }
            error => classify(error, &key.name, version),
        })?;
        Ok(Reply::Sign { version, signature: plan.finish(raw)? })
    }

    /// Seals `plaintext` under the key's current version: `header || scheme || sealed`.
    fn seal(&mut self, key: &KeyInfo, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, Fault> {
        key.check_wraps()?;
        let version = key.current_version()?;
        let header = BlobHeader { key: key.name.clone(), version, mode: BlobMode::Direct };
        let mut blob = header.to_bytes().map_err(|e| OpError::Internal(e.to_string()))?;
        let associated = BlobHeader::associated_data(&blob, aad);
        blob.push(self.scheme as u8);
        let fail = |e| classify(e, &key.name, version);
        match self.scheme {
            Scheme::Gcm => {
                let handle = self.aes_key(&key.name, version)?;
                let mut iv = self.next_iv()?;
                let sealed =
                    gcm::encrypt(&self.session, handle, &mut iv, &associated, plaintext).map_err(fail)?;
                // The IV the token used: some choose their own and write it back.
                blob.extend_from_slice(&iv);
                blob.extend_from_slice(&sealed);
            }
            Scheme::CbcHmac => {
                let (aes, mac) = (self.aes_key(&key.name, version)?, self.mac_key(&key.name, version)?);
                let mut iv = [0u8; CBC_IV_LEN];
                self.session.generate_random_slice(&mut iv).map_err(fail)?;
                let ciphertext =
                    self.session.encrypt(&Mechanism::AesCbcPad(iv), aes, plaintext).map_err(fail)?;
                let tag = self
                    .session
                    .sign(&Mechanism::Sha256Hmac, mac, &mac_input(&associated, &iv, &ciphertext))
                    .map_err(fail)?;
                blob.extend_from_slice(&iv);
                blob.extend_from_slice(&ciphertext);
                blob.extend_from_slice(&tag);
            }
        }
        Ok(blob)
    }

    fn open_blob(&mut self, key: &KeyInfo, aad: &[u8], blob: &ParsedBlob) -> Result<SecretBytes, Fault> {
        key.check_wraps()?;
        if !blob.is_direct() {
            return Err(OpError::Integrity.into());
        }
        let version = blob.header.version;
        key.check_decryptable(version)?;
        let associated = BlobHeader::associated_data(blob.header_bytes(), aad);
        let (&scheme, body) = blob.body().split_first().ok_or(OpError::Integrity)?;
        match Scheme::from_byte(scheme).ok_or(OpError::Integrity)? {
            Scheme::Gcm => self.open_gcm(key, version, &associated, body),
            Scheme::CbcHmac => self.open_cbc_hmac(key, version, &associated, body),
        }
    }

    /// Verifies the HMAC on the token, then decrypts.
    fn open_cbc_hmac(
        &mut self,
        key: &KeyInfo,
        version: u32,
        associated: &[u8],
        body: &[u8],
    ) -> Result<SecretBytes, Fault> {
        if body.len() < CBC_IV_LEN + 16 + MAC_LEN || !(body.len() - CBC_IV_LEN - MAC_LEN).is_multiple_of(16) {
            return Err(OpError::Integrity.into());
        }
        let (iv, rest) = body.split_at(CBC_IV_LEN);
        let (ciphertext, tag) = rest.split_at(rest.len() - MAC_LEN);
        let (aes, mac) = (self.aes_key(&key.name, version)?, self.mac_key(&key.name, version)?);
        let fail = |e| classify(e, &key.name, version);
        self.session
            .verify(&Mechanism::Sha256Hmac, mac, &mac_input(associated, iv, ciphertext), tag)
            .map_err(fail)?;
        let iv: [u8; CBC_IV_LEN] = iv.try_into().map_err(|_| OpError::Integrity)?;
        self.session.decrypt(&Mechanism::AesCbcPad(iv), aes, ciphertext).map(SecretBytes::new).map_err(fail)
    }

    fn open_gcm(
        &mut self,
        key: &KeyInfo,
        version: u32,
        associated: &[u8],
        body: &[u8],
    ) -> Result<SecretBytes, Fault> {
        let handle = self.aes_key(&key.name, version)?;
        if body.len() < GCM_IV_LEN + GCM_TAG_LEN {
            return Err(OpError::Integrity.into());
        }
        let (iv, sealed) = body.split_at(GCM_IV_LEN);
        let iv: [u8; GCM_IV_LEN] = iv.try_into().map_err(|_| OpError::Integrity)?;
        match gcm::decrypt(&self.session, handle, iv, associated, sealed) {
            Ok(plaintext) => Ok(SecretBytes::new(plaintext)),
            // Modules differ in how they report a GCM tag mismatch: SoftHSM2 says
            // CKR_GENERAL_ERROR, others CKR_FUNCTION_FAILED or CKR_ENCRYPTED_DATA_INVALID.
            // If the session is still healthy, the failure was the tag: INTEGRITY.
            Err(CkError::Pkcs11(RvError::GeneralError | RvError::FunctionFailed, _))
                if self.session.get_session_info().is_ok() =>
            {
                Err(OpError::Integrity.into())
            }
            Err(error) => Err(classify(error, &key.name, version)),
        }
    }

    /// The raw AEAD: CKM_AES_GCM under `version`'s key (0: the current one) with the caller's AAD
    /// as it is, an IV from the session's sequence (or the token's own, read back).
    /// Tokens without CKM_AES_GCM (scheme 2) cannot do it: UNSUPPORTED.
    fn encrypt_raw(
        &mut self,
        key: &KeyInfo,
        version: u32,
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<Reply, Fault> {
        key.check_wraps()?;
        if self.scheme != Scheme::Gcm {
            return Err(OpError::Unsupported.into());
        }
        let version = key.encryption_version(version)?;
        let handle = self.aes_key(&key.name, version)?;
        let mut iv = self.next_iv()?;
        let mut ciphertext = gcm::encrypt(&self.session, handle, &mut iv, aad, plaintext)
            .map_err(|e| classify(e, &key.name, version))?;
        if ciphertext.len() != plaintext.len() + GCM_TAG_LEN {
            return Err(
                OpError::Internal("the token's AES-GCM output has an unexpected length".into()).into()
            );
        }
        let tag = ciphertext.split_off(plaintext.len());
        Ok(Reply::Encrypt { version, iv: iv.to_vec(), ciphertext, tag })
    }

    /// The inverse of [`OpenSession::encrypt_raw`]: an IV or tag of the wrong length, like
    /// any other mismatch, does not verify.
    fn decrypt_raw(
        &mut self,
        key: &KeyInfo,
        version: u32,
        aad: &[u8],
        iv: &[u8],
        ciphertext: &[u8],
        tag: &[u8],
    ) -> Result<Reply, Fault> {
        key.check_wraps()?;
        key.check_decryptable(version)?;
        if self.scheme != Scheme::Gcm {
            return Err(OpError::Unsupported.into());
        }
        if iv.len() != GCM_IV_LEN || tag.len() != GCM_TAG_LEN {
            return Err(OpError::Integrity.into());
        }
        let body = [iv, ciphertext, tag].concat();
        Ok(Reply::Decrypt { plaintext: self.open_gcm(key, version, aad, &body)? })
    }

    /// Random bytes for every GENERATE_DATA_KEY of the batch, in one HSM call.
    fn data_keys(&self, ops: &[&Op]) -> Result<SecretBytes, Fault> {
        let total: usize = ops
            .iter()
            .map(|op| if let Op::GenerateDataKey { length, .. } = op { usize::from(*length) } else { 0 })
            .sum();
        let mut pool = SecretBytes::zeroed(total);
        if total > 0 {
            self.session.generate_random_slice(pool.expose_mut()).map_err(|e| classify(e, "", 0))?;
        }
        Ok(pool)
    }

    fn run(&mut self, key: &KeyInfo, op: &Op, pool: &mut &[u8]) -> Result<Reply, Fault> {
        match op {
            Op::Sign { input, digest } => self.sign(key, input, *digest),
            Op::Encrypt { version, aad, plaintext } => {
                self.encrypt_raw(key, *version, aad, plaintext.expose())
            }
            Op::Decrypt { version, aad, iv, ciphertext, tag } => {
                self.decrypt_raw(key, *version, aad, iv, ciphertext, tag)
            }
            Op::Wrap { aad, plaintext } => Ok(Reply::Wrap { blob: self.seal(key, aad, plaintext.expose())? }),
            Op::GenerateDataKey { aad, length } => {
                let (dek, rest) = pool.split_at(usize::from(*length));
                *pool = rest;
                let plaintext = SecretBytes::copy_from(dek);
                let blob = self.seal(key, aad, plaintext.expose())?;
                Ok(Reply::GenerateDataKey { plaintext, blob })
            }
            Op::Unwrap { aad, blob } => Ok(Reply::Unwrap { plaintext: self.open_blob(key, aad, blob)? }),
            Op::Rewrap { aad, blob } => {
                let plaintext = self.open_blob(key, aad, blob)?;
                Ok(Reply::Rewrap { blob: self.seal(key, aad, plaintext.expose())? })
            }
        }
    }

    /// Runs `ops`, returning one outcome each.
    fn run_all(&mut self, key: &KeyInfo, ops: &[&Op]) -> Vec<Result<Reply, Fault>> {
        let pool = match self.data_keys(ops) {
            Ok(pool) => pool,
            Err(fault) => return ops.iter().map(|_| Err(fault.clone())).collect(),
        };
        let mut rest = pool.expose();
        ops.iter().map(|op| self.run(key, op, &mut rest)).collect()
    }
}

/// An executor thread's state: its session, opened lazily and reopened on failure.
pub(crate) struct Pkcs11Worker {
    shared: Arc<Shared>,
    session: Option<OpenSession>,
    /// While the token is unavailable: when the next reopen may be tried.
    next_probe: Option<Instant>,
}

impl Pkcs11Worker {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared, session: None, next_probe: None }
    }

    fn unavailable(&self, reason: String) -> OpError {
        OpError::BackendUnavailable { reason, retry_after: self.shared.probe_interval }
    }

    /// Marks the session lost: abandoned here, and replaced by every worker. Called
    /// without the fence held; waits until no other worker is inside a batch.
    fn lose_session(&mut self) {
        self.shared.metrics.sessions_lost.inc();
        let shared = Arc::clone(&self.shared);
        let _exclusive = shared.recovery_fence.write().unwrap_or_else(|p| p.into_inner());
        let seen = self.session.as_ref().map(|s| s.epoch);
        // Another worker may already have moved the epoch past this session's.
        if seen.is_none_or(|epoch| epoch == shared.session_epoch.load(Ordering::SeqCst)) {
            shared.session_epoch.fetch_add(1, Ordering::SeqCst);
        }
        if let Some(session) = self.session.take() {
            session.abandon();
        }
    }

    /// The open session, opening one if there is none (or another worker saw sessions
    /// lost since it was opened) and a probe is due.
    fn session(&mut self) -> Result<&mut OpenSession, OpError> {
        let epoch = self.shared.session_epoch.load(Ordering::SeqCst);
        if self.session.as_ref().is_some_and(|s| s.epoch != epoch) {
            if let Some(session) = self.session.take() {
                session.abandon();
            }
        }
        if self.session.is_none() {
            if self.next_probe.is_some_and(|at| Instant::now() < at) {
                return Err(self.unavailable("the token is unavailable; waiting to probe again".into()));
            }
            match OpenSession::open(&self.shared) {
                Ok(session) => {
                    self.shared.metrics.session_opens.inc();
                    if self.next_probe.take().is_some() {
                        tracing::info!("PKCS#11 session reopened; token available again");
                    }
                    self.session = Some(session);
                }
                Err(error) => {
                    self.next_probe = Some(Instant::now() + self.shared.probe_interval);
                    tracing::warn!(%error, "cannot open a PKCS#11 session");
                    return Err(self.unavailable(error));
                }
            }
        }
        Ok(self.session.as_mut().expect("opened above"))
    }
}

impl BackendWorker for Pkcs11Worker {
    fn run_batch(&mut self, key: &KeyInfo, ops: &[BatchOp], done: &mut Completions<'_>) {
        let mut pending: Vec<usize> = (0..ops.len()).collect();
        for attempt in 0..2 {
            let shared = Arc::clone(&self.shared);
            let fence = shared.recovery_fence.read().unwrap_or_else(|p| p.into_inner());
            let session = match self.session() {
                Ok(session) => session,
                Err(error) => {
                    pending.iter().for_each(|&i| done(i, Err(error.clone())));
                    return;
                }
            };
            let batch: Vec<&Op> = pending.iter().map(|&i| &ops[i].op).collect();
            let outcomes = session.run_all(key, &batch);
            let mut lost = Vec::new();
            let mut stale = Vec::new();
            let mut reason = String::new();
            for (&index, outcome) in pending.iter().zip(outcomes) {
                match outcome {
                    Ok(reply) => done(index, Ok(reply)),
                    Err(Fault::Retryable { reason: RetryReason::SessionLost(why), .. }) => {
                        reason = why;
                        lost.push(index);
                    }
                    Err(Fault::Retryable { reason: RetryReason::StaleHandle(why), .. }) => {
                        reason = why;
                        stale.push(index);
                    }
                    // `classify` has already named the key version a refusal is about.
                    Err(fault) => done(index, Err(fault.into_op_error(&key.name, 0))),
                }
            }
            if lost.is_empty() && !stale.is_empty() && attempt == 0 {
                // A healthy session with a stale handle: find the objects again and retry
                // on this same session. The session, and every other worker's, stays.
                tracing::info!(%reason, failed = stale.len(), "PKCS#11 key handle stale; resolving it again");
                session.handles.clear();
                drop(fence);
                pending = stale;
                continue;
            }
            drop(fence);
            lost.extend(stale);
            if lost.is_empty() {
                return;
            }
            tracing::warn!(%reason, failed = lost.len(), attempt, "PKCS#11 session lost; reopening");
            self.lose_session();
            if attempt == 1 {
                lost.iter().for_each(|&i| done(i, Err(self.unavailable(reason.clone()))));
            }
            pending = lost;
        }
    }
}
