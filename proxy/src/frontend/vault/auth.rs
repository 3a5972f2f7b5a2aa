//! Who is calling: the `X-Vault-Token` (or `Authorization: Bearer`) header matched
//! against the `[[vault.tokens]]` hashes, else the client certificate's identity under
//! mutual TLS. Anything else is refused 403, as Vault refuses an unknown token.
//!
//! Tokens are kept only as SHA-256 digests: the plain text read from the environment or
//! a file is hashed at start and zeroized. A presented token is hashed and looked up;
//! comparing digests leaks nothing useful about a token through timing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::{FromRequestParts, State};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::VaultState;
use super::config::TokenConfig;
use super::error::VaultError;
use super::reply::envelope;
use crate::access::identity::Identity;
use crate::audit::Event;
use crate::frontend::http::HttpPeer;
use crate::secrets::SecretError;
use crate::server::peer::Peer;

/// Why the tokens could not be loaded at start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The token or its hash could not be read.
    #[error("vault.tokens {name:?}: {source}")]
    Secret {
        /// The entry's name.
        name: String,
        /// Why.
        source: SecretError,
    },
    /// A `sha256` source does not hold 64 hex digits.
    #[error("vault.tokens {0:?}: sha256 must be 64 hex digits")]
    BadHash(String),
    /// Two entries have the same token.
    #[error("vault.tokens {0:?}: the same token as another entry")]
    Duplicate(String),
}

/// The configured tokens, by digest.
#[derive(Debug, Default)]
pub struct Tokens {
    names: HashMap<[u8; 32], Arc<str>>,
}

impl Tokens {
    /// Reads and hashes every entry's token (or reads its digest).
    pub fn load(entries: &[TokenConfig]) -> Result<Self, TokenError> {
        let mut names = HashMap::new();
        for entry in entries {
            let secret = |source: &crate::secrets::SecretSource| {
                source.resolve().map_err(|source| TokenError::Secret { name: entry.name.clone(), source })
            };
            let digest = match (&entry.token, &entry.sha256) {
                (Some(token), _) => digest(secret(token)?.as_bytes()),
                (None, Some(hash)) => {
                    parse_digest(&secret(hash)?).ok_or_else(|| TokenError::BadHash(entry.name.clone()))?
                }
                (None, None) => continue,
            };
            if names.insert(digest, Arc::from(entry.name.as_str())).is_some() {
                return Err(TokenError::Duplicate(entry.name.clone()));
            }
        }
        Ok(Self { names })
    }

    /// The name of the entry whose token is `presented`.
    pub fn find(&self, presented: &[u8]) -> Option<&Arc<str>> {
        self.names.get(&digest(presented))
    }
}

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

fn parse_digest(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    let mut out = [0u8; 32];
    if text.len() != 64 {
        return None;
    }
    for (byte, pair) in out.iter_mut().zip(text.as_bytes().chunks(2)) {
        let pair = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}

/// The token a request presents: `X-Vault-Token`, else `Authorization: Bearer`.
fn presented(headers: &HeaderMap) -> Option<Zeroizing<Vec<u8>>> {
    if let Some(value) = headers.get("x-vault-token") {
        return Some(Zeroizing::new(value.as_bytes().to_vec()));
    }
    let authorization = headers.get(axum::http::header::AUTHORIZATION)?.as_bytes();
    let scheme = authorization.get(..7)?;
    scheme.eq_ignore_ascii_case(b"bearer ").then(|| Zeroizing::new(authorization[7..].trim_ascii().to_vec()))
}

/// An authenticated caller, resolved to a router peer (ACL permissions and quota).
pub(crate) struct Caller {
    /// Who, as the audit log and quotas name it.
    pub(crate) identity: Identity,
    /// The router's view of the caller.
    pub(crate) peer: Peer,
}

impl FromRequestParts<VaultState> for Caller {
    type Rejection = VaultError;

    async fn from_request_parts(parts: &mut Parts, state: &VaultState) -> Result<Self, Self::Rejection> {
        let http = parts.extensions.get::<HttpPeer>().cloned();
        let addr = http.as_ref().map_or_else(|| "unknown".to_owned(), |peer| peer.addr.to_string());
        let identity = match presented(&parts.headers) {
            Some(token) => match state.tokens.find(&token) {
                Some(name) => Identity::token(name),
                None => return Err(refuse(state, addr, "unknown token")),
            },
            None => match http {
                Some(peer) if peer.identity.authenticated => (*peer.identity).clone(),
                _ => return Err(refuse(state, addr, "no token")),
            },
        };
        let peer = state.peers.resolve(&state.wiring.front_door, &identity, addr)?;
        Ok(Caller { identity, peer })
    }
}

/// Callers resolved to router peers, by principal: each identity's ACL permissions and
/// quota are resolved once and shared by all its requests, as a binary-protocol
/// connection shares them (so `[quotas]` apply to the identity across requests). The
/// Vault API holds one of the identity's connection slots while it is cached.
#[derive(Default)]
pub(crate) struct Peers {
    resolved: Mutex<HashMap<String, Arc<Peer>>>,
}

impl Peers {
    /// The most identities cached; past it the cache starts over (tokens are few; client
    /// certificates could be many).
    const MAX: usize = 4096;

    fn resolve(
        &self,
        door: &crate::frontend::FrontDoor,
        identity: &Identity,
        addr: String,
    ) -> Result<Peer, VaultError> {
        let principal = identity.principal();
        if let Some(peer) = self.resolved.lock().unwrap_or_else(PoisonError::into_inner).get(&principal) {
            return Ok(peer.at(addr));
        }
        let peer = door.peer(identity, addr.clone()).map_err(|retry_after| VaultError::Busy {
            message: "over this identity's connection quota".into(),
            retry_after,
        })?;
        let peer = Arc::new(peer);
        let mut resolved = self.resolved.lock().unwrap_or_else(PoisonError::into_inner);
        if resolved.len() >= Self::MAX {
            resolved.clear();
        }
        let peer = Arc::clone(resolved.entry(principal).or_insert(peer));
        Ok(peer.at(addr))
    }
}

/// A refused authentication: audited (as the binary protocol audits a denial), 403.
fn refuse(state: &VaultState, addr: String, why: &'static str) -> VaultError {
    tracing::debug!(peer = %addr, why, "Vault API request without a valid token");
    state.wiring.audit.record(Event::Denied {
        principal: "anonymous".into(),
        peer: addr,
        op: "vault_auth",
        key: String::new(),
    });
    VaultError::PermissionDenied
}

/// `GET /v1/auth/token/lookup-self`: what Vault says about the caller's token, minus
/// the token itself (`id` is empty: keymux never echoes a secret).
pub(super) async fn lookup_self(State(_state): State<VaultState>, caller: Caller) -> Response {
    let name = caller.identity.token.clone().unwrap_or_else(|| caller.identity.principal());
    envelope(json!({
        "accessor": "",
        "creation_time": 0,
        "creation_ttl": 0,
        "display_name": name,
        "entity_id": "",
        "expire_time": null,
        "explicit_max_ttl": 0,
        "id": "",
        "issue_time": null,
        "meta": { "principal": caller.peer.principal },
        "num_uses": 0,
        "orphan": true,
        "path": "",
        "policies": [],
        "renewable": false,
        "ttl": 0,
        "type": "service",
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::SecretSource;

    #[test]
    fn tokens_are_found_by_their_hash_only() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("token");
        std::fs::write(&plain, "s3cret\n").unwrap();
        let hashed = dir.path().join("hash");
        let hex: String = digest(b"other").iter().map(|b| format!("{b:02x}")).collect();
        std::fs::write(&hashed, hex).unwrap();
        let tokens = Tokens::load(&[
            TokenConfig { name: "app".into(), token: Some(SecretSource::File(plain)), sha256: None },
            TokenConfig { name: "ops".into(), token: None, sha256: Some(SecretSource::File(hashed.clone())) },
        ])
        .unwrap();
        assert_eq!(tokens.find(b"s3cret").map(|n| &**n), Some("app"));
        assert_eq!(tokens.find(b"other").map(|n| &**n), Some("ops"));
        assert!(tokens.find(b"s3cret\n").is_none() && tokens.find(b"").is_none());
        assert!(!format!("{tokens:?}").contains("s3cret"));
        std::fs::write(&hashed, "zz").unwrap();
        let bad = TokenConfig { name: "ops".into(), token: None, sha256: Some(SecretSource::File(hashed)) };
        assert!(matches!(Tokens::load(&[bad]), Err(TokenError::BadHash(_))));
    }

    #[test]
    fn the_token_comes_from_either_header() {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", "Bearer  abc ".parse().unwrap());
        assert_eq!(presented(&headers).unwrap().as_slice(), b"abc");
        headers.insert("x-vault-token", "xyz".parse().unwrap());
        assert_eq!(presented(&headers).unwrap().as_slice(), b"xyz", "X-Vault-Token first");
        assert!(presented(&HeaderMap::new()).is_none());
    }
}
