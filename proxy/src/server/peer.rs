//! The client on one connection, resolved once after the handshake.

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
    /// Its identity's quota, when one is configured.
    pub quota: Option<ConnectionQuota>,
}
