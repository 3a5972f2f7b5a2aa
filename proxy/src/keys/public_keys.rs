//! The public keys of asymmetric key versions, fetched from the backend once per version
//! and kept in memory, so VERIFY and GET_PUBLIC_KEY never reach the HSM or KMS: they run
//! on the proxy's own threads and scale with its cores.
//!
//! The refresher loads the public key of every version it has not seen yet (at start-up
//! and after each listing); a version that disappears from the listing leaves the map.
//! Lookups take no lock (the map is swapped whole, as the key registry is).

// Operator-chosen key names: a fast hasher, no flooding to fear.
use foldhash::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use keymux_crypto::PublicKey;

use super::{KeyInfo, KeyStore};

type Map = HashMap<(String, u32), Arc<PublicKey>>;

/// Public keys by (key name, version).
#[derive(Default)]
pub struct PublicKeys {
    keys: ArcSwap<Map>,
}

impl PublicKeys {
    /// The public key of `version` of `key`, if loaded.
    pub fn get(&self, key: &str, version: u32) -> Option<Arc<PublicKey>> {
        // Borrowed lookups of a tuple key need the owned form; names are short.
        self.keys.load().get(&(key.to_owned(), version)).cloned()
    }

    /// Brings the map in line with `keys`: keeps what is loaded, fetches from `store`
    /// the public key of every enabled asymmetric version not loaded yet, drops versions
    /// no longer listed. A disabled version is not fetched (nothing is verified with it,
    /// and AWS KMS refuses GetPublicKey on a disabled key); it is, once enabled again. A
    /// fetch that fails is logged and retried on the next refresh.
    pub fn refresh(&self, store: &dyn KeyStore, keys: &[KeyInfo]) {
        let old = self.keys.load();
        let mut next = Map::default();
        for key in keys.iter().filter(|key| key.key_type.is_asymmetric()) {
            for version in &key.versions {
                let id = (key.name.clone(), version.version);
                if let Some(loaded) = old.get(&id) {
                    next.insert(id, Arc::clone(loaded));
                    continue;
                }
                if version.state != super::VersionState::Enabled {
                    continue;
                }
                let fetched = store.public_key(&key.name, version.version).and_then(|der| {
                    PublicKey::from_spki_der(key.key_type, &der).map_err(|error| {
                        crate::backend::BackendFault::Final(crate::error::OpError::Internal(format!(
                            "the backend's public key does not parse: {error}"
                        )))
                    })
                });
                match fetched {
                    Ok(public) => {
                        next.insert(id, Arc::new(public));
                    }
                    Err(error) => tracing::warn!(
                        key = %key.name,
                        version = version.version,
                        %error,
                        "cannot load a public key; VERIFY and GET_PUBLIC_KEY of this version wait for the next refresh"
                    ),
                }
            }
        }
        self.keys.store(Arc::new(next));
    }
}
