//! Keys on the token: the [`KeyStore`] listing and writes. A version of an `aes-256` key
//! is a non-extractable AES-256 key (and, for the CBC scheme, an HMAC key), a version of
//! a signing key a key pair (see `pairs.rs`), each labelled by [`labels`]; the minimum
//! decryption version is a data object. A key pair's public key is read back as a DER
//! SubjectPublicKeyInfo, once per version by each proxy. Admin sessions are opened per
//! call and serialised per process; the data path never takes them.

use std::collections::BTreeMap;
use std::sync::Mutex;

use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType as CkKeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;

use super::scheme::Scheme;
use super::{Pkcs11Backend, describe, labels, pairs};
use crate::backend::BackendFault;
use crate::error::OpError;
use crate::keys::lifecycle::unix_now;
use crate::keys::{KeyAdminError, KeyInfo, KeyStore, KeyType, VersionInfo, VersionState};

/// A failed call on an admin or listing session: final, with the function and the
/// return value.
fn internal(error: CkError) -> BackendFault {
    BackendFault::Final(OpError::Internal(describe(&error)))
}

/// The objects of one key version on the token.
enum VersionObjects {
    /// An `aes-256` version: its AES key.
    Aes(ObjectHandle),
    /// A signing key's version: a key pair of `key_type`.
    Pair {
        key_type: KeyType,
        private: ObjectHandle,
        /// `None` if the public key object has gone (destroyed by hand).
        public: Option<ObjectHandle>,
    },
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

    /// The objects of class `class` labelled `label`.
    fn find_all(
        session: &Session,
        class: ObjectClass,
        label: &str,
    ) -> Result<Vec<ObjectHandle>, BackendFault> {
        let template = [Attribute::Class(class), Attribute::Label(label.as_bytes().to_vec())];
        session.find_objects(&template).map_err(internal)
    }

    /// The object labelled `label` of class `class`, if any.
    fn find(
        session: &Session,
        class: ObjectClass,
        label: &str,
    ) -> Result<Option<ObjectHandle>, BackendFault> {
        Ok(Self::find_all(session, class, label)?.into_iter().next())
    }

    /// The objects of `version` of `name`, whatever its type.
    fn find_version(session: &Session, name: &str, version: u32) -> Result<VersionObjects, KeyAdminError> {
        if let Some(aes) =
            Self::find(session, ObjectClass::SECRET_KEY, &labels::version_label(name, version))?
        {
            return Ok(VersionObjects::Aes(aes));
        }
        for key_type in labels::PAIR_TYPES {
            let label = labels::pair_label(name, version, key_type);
            if let Some(private) = Self::find(session, ObjectClass::PRIVATE_KEY, &label)? {
                let public = Self::find(session, ObjectClass::PUBLIC_KEY, &label)?;
                return Ok(VersionObjects::Pair { key_type, private, public });
            }
        }
        Err(KeyAdminError::UnknownVersion { key: name.into(), version })
    }

    /// The records of when `version` of `name` was disabled (normally none or one).
    fn disabled_records(
        session: &Session,
        name: &str,
        version: u32,
    ) -> Result<Vec<ObjectHandle>, BackendFault> {
        Self::find_all(session, ObjectClass::DATA, &labels::disabled_label(name, version))
    }

    /// A record that `version` of `name` was disabled at `at` (seconds since the epoch).
    fn disabled_record(name: &str, version: u32, at: u64) -> [Attribute; 6] {
        [
            Attribute::Class(ObjectClass::DATA),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Application(labels::APPLICATION.to_vec()),
            Attribute::Label(labels::disabled_label(name, version).into_bytes()),
            Attribute::Value(at.to_string().into_bytes()),
        ]
    }

    /// How many keys claim to be `version` of `name`: AES keys, and the private keys of
    /// pairs of every type.
    fn claims(session: &Session, name: &str, version: u32) -> Result<usize, BackendFault> {
        let mut claims =
            Self::find_all(session, ObjectClass::SECRET_KEY, &labels::version_label(name, version))?.len();
        for key_type in labels::PAIR_TYPES {
            let label = labels::pair_label(name, version, key_type);
            claims += Self::find_all(session, ObjectClass::PRIVATE_KEY, &label)?.len();
        }
        Ok(claims)
    }

    /// Generates version `version` of `name`, an `aes-256` key, on the token (and its
    /// HMAC key where new blobs are sealed with AES-CBC + HMAC).
    fn generate(&self, session: &Session, name: &str, version: u32) -> Result<(), KeyAdminError> {
        let created = unix_now().to_be_bytes().to_vec();
        let mut made = Vec::new();
        if self.shared.scheme == Scheme::CbcHmac {
            let label = labels::mac_label(name, version);
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
                Attribute::Label(label.clone().into_bytes()),
                Attribute::Id(created.clone()),
            ];
            made.push(session.generate_key(&Mechanism::GenericSecretKeyGen, &template).map_err(internal)?);
            let macs = Self::find_all(session, ObjectClass::SECRET_KEY, &label)?.len();
            Self::undo_if_claimed_twice(session, &made, macs, name, version)?;
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
        made.push(session.generate_key(&Mechanism::AesKeyGen, &template).map_err(internal)?);
        Self::undo_if_claimed_twice(session, &made, Self::claims(session, name, version)?, name, version)
    }

    /// Generates version `version` of `name`, a key pair of `key_type`, on the token.
    fn generate_pair(
        &self,
        session: &Session,
        name: &str,
        version: u32,
        key_type: KeyType,
    ) -> Result<(), KeyAdminError> {
        let label = labels::pair_label(name, version, key_type);
        let template = pairs::template(key_type, &label, &unix_now().to_be_bytes());
        let (public, private) = session
            .generate_key_pair(&template.mechanism, &template.public, &template.private)
            .map_err(internal)?;
        Self::undo_if_claimed_twice(
            session,
            &[private, public],
            Self::claims(session, name, version)?,
            name,
            version,
        )
    }

    /// Undoes the objects just made (`made`) if `claims` keys now claim their label:
    /// another process made the same version at the same time (two concurrent
    /// rotations). Two keys for one version would make proxies disagree on which key a
    /// blob or a signature names.
    fn undo_if_claimed_twice(
        session: &Session,
        made: &[ObjectHandle],
        claims: usize,
        name: &str,
        version: u32,
    ) -> Result<(), KeyAdminError> {
        if claims <= 1 {
            return Ok(());
        }
        for handle in made {
            session.destroy_object(*handle).map_err(internal)?;
        }
        Err(KeyAdminError::ConcurrentChange { key: name.into(), version })
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

/// One key version as its objects on the token say.
struct Listed {
    name: String,
    version: u32,
    key_type: KeyType,
    state: VersionState,
    created_at: u64,
}

/// The versions named by the objects of `class` that `filter` selects: `parse` reads a
/// label, `enabled` is the attribute that must be true for an enabled version (both,
/// for AES keys, of `CKA_ENCRYPT` and `CKA_DECRYPT`).
fn list_objects(
    session: &Session,
    filter: &[Attribute],
    enabled: &[AttributeType],
    parse: impl Fn(&str) -> Option<(&str, u32, KeyType)>,
    listed: &mut Vec<Listed>,
) -> Result<(), BackendFault> {
    let mut wanted = vec![AttributeType::Label, AttributeType::Id];
    wanted.extend_from_slice(enabled);
    for handle in session.find_objects(filter).map_err(internal)? {
        let (mut label, mut on, mut created_at) = (None, true, 0);
        let Some(attributes) = attributes_of(session, handle, &wanted)? else { continue };
        for attribute in attributes {
            match attribute {
                Attribute::Label(bytes) => label = String::from_utf8(bytes).ok(),
                Attribute::Encrypt(flag) | Attribute::Decrypt(flag) | Attribute::Sign(flag) => on &= flag,
                Attribute::Id(bytes) => {
                    created_at = <[u8; 8]>::try_from(bytes.as_slice()).map_or(0, u64::from_be_bytes);
                }
                _ => {}
            }
        }
        let Some((name, version, key_type)) = label.as_deref().and_then(&parse) else { continue };
        let state = if on { VersionState::Enabled } else { VersionState::Disabled };
        listed.push(Listed { name: name.to_owned(), version, key_type, state, created_at });
    }
    Ok(())
}

/// Every key on the token, read from the objects' labels and attributes.
fn list(session: &Session) -> Result<Vec<KeyInfo>, BackendFault> {
    let mut listed = Vec::new();
    list_objects(
        session,
        &[Attribute::Class(ObjectClass::SECRET_KEY), Attribute::KeyType(CkKeyType::AES)],
        &[AttributeType::Encrypt, AttributeType::Decrypt],
        |label| labels::parse_version_label(label).map(|(name, version)| (name, version, KeyType::Aes256)),
        &mut listed,
    )?;
    list_objects(
        session,
        &[Attribute::Class(ObjectClass::PRIVATE_KEY)],
        &[AttributeType::Sign],
        labels::parse_pair_label,
        &mut listed,
    )?;
    listed.sort_by(|a, b| (&a.name, a.version).cmp(&(&b.name, b.version)));
    let mut keys: BTreeMap<String, KeyInfo> = BTreeMap::new();
    for Listed { name, version, key_type, state, created_at } in listed {
        let key = keys.entry(name.clone()).or_insert_with(|| KeyInfo {
            name,
            key_type,
            versions: Vec::new(),
            min_decryption_version: 1,
        });
        // Only a race of two admins creating the same key, or a proxy of another
        // version, leaves objects of two types (or two objects) for one key: the
        // lowest version's type is the key's, and the first object a version's.
        if key.key_type != key_type || key.versions.last().is_some_and(|v| v.version == version) {
            tracing::warn!(
                key = %key.name, version, %key_type, listed_as = %key.key_type,
                "another object on the token claims this key version; ignored"
            );
            continue;
        }
        key.versions.push(VersionInfo { version, state, created_at, disabled_at: None });
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
                Attribute::Value(bytes) => value = String::from_utf8(bytes).ok(),
                _ => {}
            }
        }
        let (Some(label), Some(value)) = (label, value) else { continue };
        if let Some(name) = labels::parse_meta_label(&label)
            && let (Some(key), Ok(min)) = (keys.get_mut(name), value.parse::<u32>())
        {
            // Several records (a write cut short between create and delete): the highest.
            key.min_decryption_version = key.min_decryption_version.max(min);
        } else if let Some((name, version)) = labels::parse_disabled_label(&label)
            && let (Some(key), Ok(at)) = (keys.get_mut(name), value.parse::<u64>())
            && let Some(listed) = key.versions.iter_mut().find(|v| v.version == version)
            && listed.state == VersionState::Disabled
        {
            // Several records (two admins disabling at once): the latest.
            listed.disabled_at = Some(listed.disabled_at.map_or(at, |seen| seen.max(at)));
        }
    }
    Ok(keys.into_values().collect())
}

impl KeyStore for Pkcs11Backend {
    fn list_keys(&self) -> Result<Vec<KeyInfo>, BackendFault> {
        list(&self.session()?.0)
    }

    fn write_new_version(&self, name: &str, version: u32, key_type: KeyType) -> Result<(), KeyAdminError> {
        if key_type == KeyType::Aes256 {
            let (session, _admin) = self.session()?;
            return self.generate(&session, name, version);
        }
        if !labels::PAIR_TYPES.contains(&key_type) {
            // ML-DSA-65 and ML-KEM-768: no mechanism for them in PKCS#11 before 3.2,
            // nor in SoftHSM2 2.6 or opencryptoki 3.8.
            return Err(KeyAdminError::UnsupportedKeyType { key_type, backend: "pkcs11" });
        }
        self.shared
            .mechanisms
            .check_holds(key_type)
            .map_err(|why| KeyAdminError::Backend(BackendFault::Final(OpError::BadRequest(why))))?;
        let (session, _admin) = self.session()?;
        self.generate_pair(&session, name, version, key_type)
    }

    fn public_key(&self, name: &str, version: u32) -> Result<Vec<u8>, BackendFault> {
        let (session, _admin) = self.session()?;
        let found = match Self::find_version(&session, name, version) {
            Ok(found) => found,
            Err(KeyAdminError::Backend(fault)) => return Err(fault),
            Err(_) => {
                return Err(BackendFault::Final(OpError::VersionNotFound { key: name.into(), version }));
            }
        };
        let fail = |why: String| {
            BackendFault::Final(OpError::Internal(format!("key {name:?} version {version}: {why}")))
        };
        let (key_type, public) = match found {
            VersionObjects::Pair { key_type, public: Some(public), .. } => (key_type, public),
            VersionObjects::Pair { public: None, .. } => {
                return Err(fail("its public key object is missing from the token".into()));
            }
            VersionObjects::Aes(_) => {
                return Err(BackendFault::Final(OpError::BadRequest(format!(
                    "key {name:?} is an aes-256 key: a symmetric key has no public key"
                ))));
            }
        };
        let attributes =
            session.get_attributes(public, pairs::public_attributes(key_type)).map_err(internal)?;
        pairs::spki_der(key_type, &attributes).map_err(fail)
    }

    fn write_version_state(
        &self,
        name: &str,
        version: u32,
        state: VersionState,
    ) -> Result<(), KeyAdminError> {
        let (session, _admin) = self.session()?;
        let on = state == VersionState::Enabled;
        let objects = Self::find_version(&session, name, version)?;
        // The disabled-at record first: a crash between the two writes leaves at worst
        // a record beside an enabled version (ignored) or a disabled version without
        // one (destroy then waits for it to be disabled again).
        let records = Self::disabled_records(&session, name, version)?;
        if on {
            for handle in records {
                session.destroy_object(handle).map_err(internal)?;
            }
        } else if records.is_empty() {
            session.create_object(&Self::disabled_record(name, version, unix_now())).map_err(internal)?;
        }
        match objects {
            VersionObjects::Aes(handle) => session
                .update_attributes(handle, &[Attribute::Encrypt(on), Attribute::Decrypt(on)])
                .map_err(internal)?,
            VersionObjects::Pair { private, public, .. } => {
                session.update_attributes(private, &[Attribute::Sign(on)]).map_err(internal)?;
                if let Some(public) = public {
                    session.update_attributes(public, &[Attribute::Verify(on)]).map_err(internal)?;
                }
            }
        }
        Ok(())
    }

    fn write_min_decryption_version(&self, name: &str, version: u32) -> Result<(), KeyAdminError> {
        let (session, _admin) = self.session()?;
        Self::find_version(&session, name, version)?;
        let label = labels::meta_label(name);
        // Create the new record first, then delete the old ones: a crash (or a failed
        // delete) in between leaves two records, of which listing takes the highest, so
        // the minimum is never lost (which would let old versions unwrap again).
        let search = [Attribute::Class(ObjectClass::DATA), Attribute::Label(label.as_bytes().to_vec())];
        let old = session.find_objects(&search).map_err(internal)?;
        let template = [
            Attribute::Class(ObjectClass::DATA),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Application(labels::APPLICATION.to_vec()),
            Attribute::Label(label.into_bytes()),
            Attribute::Value(version.to_string().into_bytes()),
        ];
        session.create_object(&template).map_err(internal)?;
        for handle in old {
            session.destroy_object(handle).map_err(internal)?;
        }
        Ok(())
    }

    fn erase_version(&self, name: &str, version: u32) -> Result<(), KeyAdminError> {
        let (session, _admin) = self.session()?;
        for handle in Self::disabled_records(&session, name, version)? {
            session.destroy_object(handle).map_err(internal)?;
        }
        match Self::find_version(&session, name, version)? {
            VersionObjects::Aes(handle) => {
                let mac = labels::mac_label(name, version);
                if let Some(mac) = Self::find(&session, ObjectClass::SECRET_KEY, &mac)? {
                    session.destroy_object(mac).map_err(internal)?;
                }
                session.destroy_object(handle).map_err(internal)?;
            }
            VersionObjects::Pair { private, public, .. } => {
                session.destroy_object(private).map_err(internal)?;
                if let Some(public) = public {
                    session.destroy_object(public).map_err(internal)?;
                }
            }
        }
        Ok(())
    }
}
