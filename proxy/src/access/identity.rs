//! Who a client is: taken from its verified TLS/QUIC client certificate (subject CN and
//! OU, SAN DNS names and URIs), on a Unix socket from the peer's uid, or, on an HTTP
//! front end, from the configured token it presented (`[[vault.tokens]]`, matched by
//! `token = "<name>"` in `[[acl]]` rules). Everything else is anonymous.
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
    /// The name of the configured token the client presented, on an HTTP front end
    /// (`[[vault.tokens]]`).
    pub token: Option<String>,
    /// Whether the identity comes from a verified client certificate.
    pub authenticated: bool,
}

/// A client certificate keymux will not take an identity from. rustls has already
/// verified the chain by then, so this is rare: a CA issuing odd certificates.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The subject or the extensions do not parse.
    #[error("client certificate cannot be parsed: {0}")]
    Unparsable(String),
    /// The subject has several common names. An ACL rule on `cn` matches any of them,
    /// while a principal needs one name: such a certificate is refused rather than
    /// guessed about.
    #[error("client certificate has {0} common names; keymux takes exactly one (or none)")]
    SeveralCommonNames(usize),
}

impl Identity {
    /// A client that presented nothing.
    pub fn anonymous() -> Self {
        Self::default()
    }

    /// A Unix socket peer.
    pub fn unix(uid: u32) -> Self {
        Self { uid: Some(uid), authenticated: true, ..Self::default() }
    }

    /// A client that presented the configured token named `name`.
    pub fn token(name: &str) -> Self {
        Self { token: Some(name.to_owned()), authenticated: true, ..Self::default() }
    }

    /// The identity in a verified end-entity certificate.
    pub fn from_certificate(cert: &CertificateDer<'_>) -> Result<Self, IdentityError> {
        let (_, parsed) =
            X509Certificate::from_der(cert.as_ref()).map_err(|e| IdentityError::Unparsable(e.to_string()))?;
        let text =
            |attr: &x509_parser::x509::AttributeTypeAndValue<'_>| attr.as_str().ok().map(str::to_owned);
        let subject = parsed.subject();
        let mut identity = Self {
            common_names: subject.iter_common_name().filter_map(text).collect(),
            org_units: subject.iter_organizational_unit().filter_map(text).collect(),
            authenticated: true,
            ..Self::default()
        };
        if identity.common_names.len() > 1 {
            return Err(IdentityError::SeveralCommonNames(identity.common_names.len()));
        }
        let san = parsed.subject_alternative_name().map_err(|e| IdentityError::Unparsable(e.to_string()))?;
        for name in san.iter().flat_map(|san| san.value.general_names.iter()) {
            match name {
                GeneralName::DNSName(dns) => identity.dns_names.push((*dns).to_owned()),
                GeneralName::URI(uri) => identity.uris.push((*uri).to_owned()),
                _ => {}
            }
        }
        Ok(identity)
    }

    /// The name per-identity quotas and the audit log use, covering the whole identity
    /// the ACL may match on: the CN (else the first URI SAN, else the first DNS SAN),
    /// then every other OU, DNS and URI name as `;ou=`, `;dns=`, `;uri=` (sorted), so two
    /// certificates that differ in any matched field never share a quota or an audit
    /// name. A certificate with only a CN is just that CN. `uid:N` for a Unix peer;
    /// `token:NAME` for a token's bearer; `anonymous` otherwise.
    pub fn principal(&self) -> String {
        if let Some(token) = &self.token {
            return format!("token:{token}");
        }
        let head = if let Some(cn) = self.common_names.first() {
            ("cn", cn)
        } else if let Some(uri) = self.uris.first() {
            ("uri", uri)
        } else if let Some(dns) = self.dns_names.first() {
            ("dns", dns)
        } else {
            return match self.uid {
                Some(uid) => format!("uid:{uid}"),
                None => "anonymous".to_owned(),
            };
        };
        let mut out = head.1.clone();
        for (field, values) in [("ou", &self.org_units), ("dns", &self.dns_names), ("uri", &self.uris)] {
            let mut values: Vec<&String> = values.iter().collect();
            values.sort();
            for value in values {
                if (field, value) != head {
                    out.push_str(&format!(";{field}={value}"));
                }
            }
        }
        out
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
        assert_eq!(Identity::token("app").principal(), "token:app");
        let identity =
            Identity { uris: vec!["spiffe://x/y".into()], authenticated: true, ..Identity::default() };
        assert_eq!(identity.principal(), "spiffe://x/y");
    }

    #[test]
    fn principals_cover_every_field_the_acl_matches() {
        let finance = Identity {
            common_names: vec!["svc".into()],
            org_units: vec!["finance".into()],
            authenticated: true,
            ..Identity::default()
        };
        let hr = Identity { org_units: vec!["hr".into()], ..finance.clone() };
        assert_ne!(finance.principal(), hr.principal(), "one CN, different OUs: two principals");
        assert_eq!(finance.principal(), "svc;ou=finance");
        let only_cn =
            Identity { common_names: vec!["svc".into()], authenticated: true, ..Identity::default() };
        assert_eq!(only_cn.principal(), "svc");
        let spiffe = Identity {
            uris: vec!["spiffe://b".into(), "spiffe://a".into()],
            dns_names: vec!["x.example".into()],
            authenticated: true,
            ..Identity::default()
        };
        assert_eq!(spiffe.principal(), "spiffe://b;dns=x.example;uri=spiffe://a");
    }

    #[test]
    fn several_common_names_are_refused() {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, "reader");
        // rcgen keeps one value per attribute type: the CN's OID as a "custom" type adds a
        // second commonName attribute.
        params.distinguished_name.push(rcgen::DnType::CustomDnType(vec![2, 5, 4, 3]), "admin");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let refused = Identity::from_certificate(cert.der()).unwrap_err();
        assert_eq!(refused, IdentityError::SeveralCommonNames(2));
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        assert!(Identity::from_certificate(&CertificateDer::from(vec![1, 2, 3])).is_err());
    }
}
