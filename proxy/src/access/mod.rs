//! Who a client is and what it may do: its [`identity`], the [`acl`] rules (with
//! [`glob`] patterns over [`ops`]), and its identity's [`quota`].

pub mod acl;
pub mod glob;
pub mod identity;
pub mod ops;
pub mod quota;
