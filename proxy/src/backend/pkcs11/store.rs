//! Keys on the token: the [`KeyStore`] listing and writes. A key version is a
//! non-extractable AES-256 key (and, for the CBC scheme, an HMAC key) labelled by
//! [`labels`]; the minimum decryption version is a data object. Admin sessions are
//! opened per call and serialised per process; the data path never takes them.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType as CkKeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;

use super::scheme::Scheme;
use super::{Pkcs11Backend, describe, labels};
use crate::backend::BackendFault;
use crate::error::OpError;
use crate::keys::{KeyAdminError, KeyInfo, KeyStore, KeyType, VersionInfo, VersionState};

/// A failed call on an admin or listing session: final, with the function and the
/// return value.
fn internal(error: CkError) -> BackendFault {
    BackendFault::Final(OpError::Internal(describe(&error)))
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Pkcs11Backend {
    /// A session for listing and administering keys, with this process's admin lock.
    ///
    /// Key administration is rare, so it is serialised per process: some modules
    /// (SoftHSM2's file object store among them) fail when several sessions of one
    /// process create or enumerate token objects at once. The data path never takes it.
    fn session(&self) -> Result<(Session, std::sync::MutexGuard<'static, ()>), BackendFault> {
        static ADMIN: Mutex<()> = Mutex::new(());
        let guard = ADMIN.lock().unwrap_or_else(|p| p.into_inner());
        let session = self
            .shared
            .open_session()
            .map_err(|error| BackendFault::unavailable(describe(&error), self.shared.probe_interval))?;
        Ok((session, guard))
    }

    /// The object labelled `label` of class `class`, if any.
    fn find(
        session: &Session,
        class: ObjectClass,
        label: &str,
    ) -> Result<Option<ObjectHandle>, BackendFault> {
        let template = [Attribute::Class(class), Attribute::Label(label.as_bytes().to_vec())];
        Ok(session.find_objects(&template).map_err(internal)?.into_iter().next())
    }

    fn find_version(session: &Session, name: &str, version: u32) -> Result<ObjectHandle, KeyAdminError> {
        Self::find(session, ObjectClass::SECRET_KEY, &labels::version_label(name, version))?
            .ok_or_else(|| KeyAdminError::UnknownVersion { key: name.into(), version })
    }

    /// Generates version `version` of `name` on the token (and its HMAC key where new
    /// blobs are sealed with AES-CBC + HMAC).
    fn generate(&self, session: &Session, name: &str, version: u32) -> Result<(), KeyAdminError> {
        let created = now_secs().to_be_bytes().to_vec();
        if self.shared.scheme == Scheme::CbcHmac {
            let template = [
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(CkKeyType::GENERIC_SECRET),
                Attribute::ValueLen(32.into()),
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Sign(true),
                Attribute::Verify(true),
                Attribute::Label(labels::mac_label(name, version).into_bytes()),
                Attribute::Id(created.clone()),
            ];
            let handle =
                session.generate_key(&Mechanism::GenericSecretKeyGen, &template).map_err(internal)?;
            Self::ensure_unique(session, handle, name, version, &labels::mac_label(name, version))?;
        }
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(CkKeyType::AES),
            Attribute::ValueLen(32.into()),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::Label(labels::version_label(name, version).into_bytes()),
            Attribute::Id(created),
        ];
        let handle = session.generate_key(&Mechanism::AesKeyGen, &template).map_err(internal)?;
        Self::ensure_unique(session, handle, name, version, &labels::version_label(name, version))
    }

    /// Undoes a key just made if another process made one with the same label at the
    /// same time (two concurrent rotations): two objects with one label would make
    /// proxies disagree on which key a blob names.
    fn ensure_unique(
        session: &Session,
        handle: ObjectHandle,
        name: &str,
        version: u32,
        label: &str,
    ) -> Result<(), KeyAdminError> {
        let template =
            [Attribute::Class(ObjectClass::SECRET_KEY), Attribute::Label(label.as_bytes().to_vec())];
        if session.find_objects(&template).map_err(internal)?.len() > 1 {
            session.destroy_object(handle).map_err(internal)?;
            return Err(KeyAdminError::ConcurrentChange { key: name.into(), version });
        }
        Ok(())
    }
}

/// An object's attributes, or `None` if another session destroyed it meanwhile.
fn attributes_of(
    session: &Session,
    handle: ObjectHandle,
    wanted: &[AttributeType],
) -> Result<Option<Vec<Attribute>>, BackendFault> {
    match session.get_attributes(handle, wanted) {
        Ok(attributes) => Ok(Some(attributes)),
        Err(CkError::Pkcs11(RvError::ObjectHandleInvalid, _)) => Ok(None),
        Err(error) => Err(internal(error)),
    }
}

/// Every key on the token, read from the objects' labels and attributes.
fn list(session: &Session) -> Result<Vec<KeyInfo>, BackendFault> {
    let mut keys: BTreeMap<String, KeyInfo> = BTreeMap::new();
    let secret_keys = [Attribute::Class(ObjectClass::SECRET_KEY), Attribute::KeyType(CkKeyType::AES)];
    let wanted = [AttributeType::Label, AttributeType::Encrypt, AttributeType::Decrypt, AttributeType::Id];
    for handle in session.find_objects(&secret_keys).map_err(internal)? {
        let (mut label, mut enabled, mut created_at) = (None, true, 0);
        let Some(attributes) = attributes_of(session, handle, &wanted)? else { continue };
        for attribute in attributes {
            match attribute {
                Attribute::Label(bytes) => label = String::from_utf8(bytes).ok(),
                Attribute::Encrypt(on) | Attribute::Decrypt(on) => enabled &= on,
                Attribute::Id(bytes) => {
                    created_at = <[u8; 8]>::try_from(bytes.as_slice()).map_or(0, u64::from_be_bytes);
                }
                _ => {}
            }
        }
        let Some((name, version)) = label.as_deref().and_then(labels::parse_version_label) else { continue };
        let state = if enabled { VersionState::Enabled } else { VersionState::Disabled };
        let key = keys.entry(name.to_owned()).or_insert_with(|| KeyInfo {
            name: name.to_owned(),
            key_type: KeyType::Aes256,
            versions: Vec::new(),
            min_decryption_version: 1,
        });
        key.versions.push(VersionInfo { version, state, created_at });
    }
    let metadata =
        [Attribute::Class(ObjectClass::DATA), Attribute::Application(labels::APPLICATION.to_vec())];
    for handle in session.find_objects(&metadata).map_err(internal)? {
        let attributes = session
            .get_attributes(handle, &[AttributeType::Label, AttributeType::Value])
            .map_err(internal)?;
        let (mut label, mut value) = (None, None);
        for attribute in attributes {
            match attribute {
                Attribute::Label(bytes) => label = String::from_utf8(bytes).ok(),
                Attribute::Value(bytes) => {
                    value = String::from_utf8(bytes).ok().and_then(|v| v.parse::<u32>().ok())
                }
                _ => {}
            }
        }
        if let (Some(name), Some(min)) = (label.as_deref().and_then(labels::parse_meta_label), value)
            && let Some(key) = keys.get_mut(name)
        {
            key.min_decryption_version = min;
        }
    }
    let mut keys: Vec<KeyInfo> = keys.into_values().collect();
    for key in &mut keys {
        key.versions.sort_by_key(|v| v.version);
    }
    Ok(keys)
}

impl KeyStore for Pkcs11Backend {
    fn list_keys(&self) -> Result<Vec<KeyInfo>, BackendFault> {
        list(&self.session()?.0)
    }

    fn write_new_version(&self, name: &str, version: u32, key_type: KeyType) -> Result<(), KeyAdminError> {
        if key_type != KeyType::Aes256 {
            return Err(KeyAdminError::UnsupportedKeyType { key_type, backend: "pkcs11" });
        }
        let (session, _admin) = self.session()?;
        self.generate(&session, name, version)
    }

    fn public_key(&self, _name: &str, _version: u32) -> Result<Vec<u8>, BackendFault> {
        Err(BackendFault::Final(OpError::Unsupported))
    }

    fn write_version_state(
        &self,
        name: &str,
        version: u32,
        state: VersionState,
    ) -> Result<(), KeyAdminError> {
        let (session, _admin) = self.session()?;
        let handle = Self::find_version(&session, name, version)?;
        let on = state == VersionState::Enabled;
        session
            .update_attributes(handle, &[Attribute::Encrypt(on), Attribute::Decrypt(on)])
            .map_err(internal)?;
        Ok(())
    }

    fn write_min_decryption_version(&self, name: &str, version: u32) -> Result<(), KeyAdminError> {
        let (session, _admin) = self.session()?;
        Self::find_version(&session, name, version)?;
        let label = labels::meta_label(name);
        if let Some(old) = Self::find(&session, ObjectClass::DATA, &label)? {
            session.destroy_object(old).map_err(internal)?;
        }
        let template = [
            Attribute::Class(ObjectClass::DATA),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Application(labels::APPLICATION.to_vec()),
            Attribute::Label(label.into_bytes()),
            Attribute::Value(version.to_string().into_bytes()),
        ];
        session.create_object(&template).map_err(internal)?;
        Ok(())
    }

    fn erase_version(&self, name: &str, version: u32) -> Result<(), KeyAdminError> {
        let (session, _admin) = self.session()?;
        let handle = Self::find_version(&session, name, version)?;
        if let Some(mac) = Self::find(&session, ObjectClass::SECRET_KEY, &labels::mac_label(name, version))? {
            session.destroy_object(mac).map_err(internal)?;
        }
        session.destroy_object(handle).map_err(internal)?;
        Ok(())
    }
}
