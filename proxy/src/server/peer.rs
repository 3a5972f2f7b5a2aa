//! The client on one connection, resolved once after the handshake.

use std::sync::Arc;

use crate::access::acl::Permissions;
use crate::access::quota::ConnectionQuota;

/// The client on a connection: who it is, what it may do, and its share of its
/// identity's quota. Resolved once, after the handshake.
#[derive(Debug)]
pub struct Peer {
    /// The peer address, for logs and the audit log.
    pub addr: String,
    /// [`Identity::principal`], computed once.
    pub principal: String,
    /// What the ACL lets it do.
    pub permissions: Permissions,
    /// Its identity's quota, when one is configured (shared by the requests of an HTTP
    /// front end's caller, see [`Peer::at`]).
    pub quota: Option<Arc<ConnectionQuota>>,
}

impl Peer {
    /// The same client calling from `addr`: the same principal, permissions and quota
    /// (an HTTP front end resolves a caller once and serves its requests, from any
    /// connection, on that).
    pub fn at(&self, addr: String) -> Peer {
        Peer {
            addr,
            principal: self.principal.clone(),
            permissions: self.permissions.clone(),
            quota: self.quota.clone(),
        }
    }
}
