//! Who a client is: taken from its verified TLS/QUIC client certificate (subject CN and
//! OU, SAN DNS names and URIs) or, on a Unix socket, from the peer's uid. Everything
//! else is anonymous.
//!
//! The identity is fixed when the connection is set up and never re-read, so the ACL
//! and the per-identity limits can be resolved once per connection.

use std::fmt;

use rustls_pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// A connected client's identity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// The certificate subject's common names (normally one).
    pub common_names: Vec<String>,
    /// The certificate subject's organisational units.
    pub org_units: Vec<String>,
    /// DNS subject alternative names.
    pub dns_names: Vec<String>,
    /// URI subject alternative names (SPIFFE IDs and the like).
    pub uris: Vec<String>,
    /// The peer's uid, on a Unix socket.
    pub uid: Option<u32>,
    /// Whether the identity comes from a verified client certificate.
    pub authenticated: bool,
}

/// A client certificate whose subject or extensions cannot be parsed. rustls has
/// already verified the chain by then, so this is rare: a CA issuing odd certificates.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("client certificate cannot be parsed: {0}")]
pub struct IdentityError(String);

impl Identity {
    /// A client that presented nothing.
    pub fn anonymous() -> Self {
        Self::default()
    }

    /// A Unix socket peer.
    pub fn unix(uid: u32) -> Self {
        Self { uid: Some(uid), authenticated: true, ..Self::default() }
    }

    /// The identity in a verified end-entity certificate.
    pub fn from_certificate(cert: &CertificateDer<'_>) -> Result<Self, IdentityError> {
        let (_, parsed) =
            X509Certificate::from_der(cert.as_ref()).map_err(|e| IdentityError(e.to_string()))?;
        let text =
            |attr: &x509_parser::x509::AttributeTypeAndValue<'_>| attr.as_str().ok().map(str::to_owned);
        let subject = parsed.subject();
        let mut identity = Self {
            common_names: subject.iter_common_name().filter_map(text).collect(),
            org_units: subject.iter_organizational_unit().filter_map(text).collect(),
            authenticated: true,
            ..Self::default()
        };
        let san = parsed.subject_alternative_name().map_err(|e| IdentityError(e.to_string()))?;
        for name in san.iter().flat_map(|san| san.value.general_names.iter()) {
            match name {
                GeneralName::DNSName(dns) => identity.dns_names.push((*dns).to_owned()),
                GeneralName::URI(uri) => identity.uris.push((*uri).to_owned()),
                _ => {}
            }
        }
        Ok(identity)
    }

    /// The name per-identity limits and the audit log use: the first of CN, URI SAN,
    /// DNS SAN; `uid:N` for a Unix peer; `anonymous` otherwise.
    pub fn principal(&self) -> String {
        let first = self.common_names.first().or(self.uris.first()).or(self.dns_names.first());
        match (first, self.uid) {
            (Some(name), _) => name.clone(),
            (None, Some(uid)) => format!("uid:{uid}"),
            (None, None) => "anonymous".to_owned(),
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.principal())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principals() {
        assert_eq!(Identity::anonymous().principal(), "anonymous");
        assert_eq!(Identity::unix(1000).principal(), "uid:1000");
        let identity =
            Identity { uris: vec!["spiffe://x/y".into()], authenticated: true, ..Identity::default() };
        assert_eq!(identity.principal(), "spiffe://x/y");
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        assert!(Identity::from_certificate(&CertificateDer::from(vec![1, 2, 3])).is_err());
    }
}
