//! `Status`: a real round trip through the backend (wrap a probe, unwrap it again past
//! the cache), its answer reused for `status_cache_ttl` so that polling API servers do
//! not load the HSM.

use std::time::Instant;

use keymux_protocol::{BlobHeader, Reply, Request, SecretBytes};
use tokio::sync::Mutex;

use super::metadata;
use crate::frontend::{CallOptions, FrontDoor};
use crate::server::peer::Peer;

/// What the probe wraps; bound to its own AAD, so a probe blob is no use elsewhere.
const PROBE: &[u8; 32] = b"keymux kubernetes-kms probe DEK!";
const PROBE_AAD: &[u8] = b"keymux kubernetes-kms status probe";

/// One Status answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Health {
    /// `ok`, or why not.
    pub(super) healthz: String,
    /// The current key version's key id (the last one known, when unhealthy).
    pub(super) key_id: String,
}

/// The last probe's answer, shared by every caller: one probe at a time, the others
/// waiting for its answer.
#[derive(Debug, Default)]
pub(super) struct StatusCache {
    last: Mutex<Option<(Instant, Health)>>,
}

impl StatusCache {
    /// The health of `key` as `peer` sees it, probed now unless the last answer is
    /// younger than `ttl`.
    pub(super) async fn health(
        &self,
        door: &FrontDoor,
        peer: &Peer,
        key: &str,
        options: CallOptions,
        ttl: std::time::Duration,
    ) -> Health {
        let mut last = self.last.lock().await;
        if let Some((at, health)) = last.as_ref() {
            if at.elapsed() < ttl {
                return health.clone();
            }
        }
        let previous_key_id = last.as_ref().map(|(_, health)| health.key_id.clone()).unwrap_or_default();
        let health = match probe(door, peer, key, options).await {
            Ok(key_id) => Health { healthz: "ok".into(), key_id },
            Err(why) => {
                tracing::warn!(key, why, "kubernetes_kms: status probe failed");
                Health { healthz: why, key_id: previous_key_id }
            }
        };
        *last = Some((Instant::now(), health.clone()));
        health
    }
}

/// Wraps and unwraps the probe; the key id of the version that wrapped it, or why the
/// round trip failed.
async fn probe(door: &FrontDoor, peer: &Peer, key: &str, options: CallOptions) -> Result<String, String> {
    let wrap = Request::Wrap {
        key: key.to_owned(),
        aad: PROBE_AAD.to_vec(),
        plaintext: SecretBytes::copy_from(PROBE),
    };
    let blob = match door.call(peer, wrap, options).await {
        Ok(Reply::Wrap { blob }) => blob,
        Ok(_) => return Err("keymux: wrap gave an unexpected answer".into()),
        Err(failure) => return Err(format!("keymux: wrap under {key:?}: {}", failure.message)),
    };
    let version =
        BlobHeader::parse(&blob).map_err(|_| "keymux: wrap gave an unreadable blob".to_owned())?.0.version;
    let unwrap = Request::Unwrap { aad: PROBE_AAD.to_vec(), blob };
    match door.call(peer, unwrap, CallOptions { bypass_cache: true, ..options }).await {
        Ok(Reply::Unwrap { plaintext }) if plaintext.expose() == PROBE => Ok(metadata::key_id(key, version)),
        Ok(_) => Err("keymux: the probe did not unwrap to what was wrapped".into()),
        Err(failure) => Err(format!("keymux: unwrap under {key:?}: {}", failure.message)),
    }
}
