//! SigV4 verification of XKS requests: the `Authorization` header parsed here, the
//! signature recomputed with AWS's own signer (`aws-sigv4`) from the headers the request
//! signed, its body and its `X-Amz-Date`, and compared in constant time. The date must be
//! within `max_clock_skew` of the proxy's clock, which bounds replays.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings};
use aws_smithy_runtime_api::client::identity::Identity;
use axum::http::HeaderMap;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// The SigV4 service name of the XKS proxy API.
pub const SERVICE: &str = "kms-xks-proxy";
const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// Why a request does not authenticate. The messages name no secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SigV4Error {
    /// No `Authorization` header, or not a SigV4 one.
    #[error("no AWS4-HMAC-SHA256 Authorization header")]
    Missing,
    /// The header does not parse.
    #[error("malformed Authorization header: {0}")]
    Malformed(&'static str),
    /// The access key id is not configured.
    #[error("unknown access key id")]
    UnknownAccessKey,
    /// The credential scope names another region or service.
    #[error("the credential scope is for {0}, not this key store")]
    WrongScope(String),
    /// `X-Amz-Date` is missing, unsigned, malformed or not the scope's date.
    #[error("bad X-Amz-Date: {0}")]
    BadDate(&'static str),
    /// The request is older or newer than the clock skew allows.
    #[error("the request's X-Amz-Date is more than {0:?} from the proxy's clock")]
    Skewed(Duration),
    /// A signed header is not in the request.
    #[error("signed header {0:?} is missing")]
    MissingHeader(String),
    /// The signature does not match.
    #[error("the signature does not match")]
    Mismatch,
}

/// The parts of a SigV4 `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization<'a> {
    /// The access key id.
    pub access_key_id: &'a str,
    /// The scope's date, `YYYYMMDD`.
    pub date: &'a str,
    /// The scope's region.
    pub region: &'a str,
    /// The scope's service.
    pub service: &'a str,
    /// The signed header names, lowercase and sorted.
    pub signed_headers: Vec<&'a str>,
    /// The signature, 64 lowercase hex digits.
    pub signature: &'a str,
}

/// Parses `AWS4-HMAC-SHA256 Credential=<id>/<date>/<region>/<service>/aws4_request,
/// SignedHeaders=<a;b;c>, Signature=<hex>`.
pub fn parse_authorization(value: &str) -> Result<Authorization<'_>, SigV4Error> {
    let rest = value.strip_prefix(ALGORITHM).ok_or(SigV4Error::Missing)?;
    let rest = rest.strip_prefix(' ').ok_or(SigV4Error::Malformed("no space after the algorithm"))?;
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let (name, value) =
            part.trim().split_once('=').ok_or(SigV4Error::Malformed("a part is not name=value"))?;
        let slot = match name {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed,
            "Signature" => &mut signature,
            _ => return Err(SigV4Error::Malformed("unknown part")),
        };
        if slot.replace(value).is_some() {
            return Err(SigV4Error::Malformed("a part appears twice"));
        }
    }
    let credential = credential.ok_or(SigV4Error::Malformed("no Credential"))?;
    let signed = signed.ok_or(SigV4Error::Malformed("no SignedHeaders"))?;
    let signature = signature.ok_or(SigV4Error::Malformed("no Signature"))?;
    let scope: Vec<&str> = credential.split('/').collect();
    let [access_key_id, date, region, service, "aws4_request"] = scope[..] else {
        return Err(SigV4Error::Malformed("Credential is not <id>/<date>/<region>/<service>/aws4_request"));
    };
    if access_key_id.is_empty() || date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SigV4Error::Malformed("Credential has an empty id or a bad date"));
    }
    let signed_headers: Vec<&str> = signed.split(';').collect();
    let canonical = signed_headers.iter().all(|name| {
        !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    }) && signed_headers.windows(2).all(|pair| pair[0] < pair[1]);
    if !canonical {
        return Err(SigV4Error::Malformed("SignedHeaders are not sorted lowercase names"));
    }
    if signature.len() != 64 || !signature.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return Err(SigV4Error::Malformed("Signature is not 64 lowercase hex digits"));
    }
    Ok(Authorization { access_key_id, date, region, service, signed_headers, signature })
}

/// Parses an `X-Amz-Date`, `YYYYMMDD'T'HHMMSS'Z'`.
pub fn parse_amz_date(value: &str) -> Option<SystemTime> {
    let b = value.as_bytes();
    let digits =
        |range: std::ops::Range<usize>| b.get(range).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' || !digits(0..8) || !digits(9..15) {
        return None;
    }
    let rfc3339 = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &value[0..4],
        &value[4..6],
        &value[6..8],
        &value[9..11],
        &value[11..13],
        &value[13..15]
    );
    humantime::parse_rfc3339(&rfc3339).ok()
}

/// What a request's signature covers, as the server received it.
#[derive(Debug, Clone, Copy)]
pub struct ReceivedRequest<'a> {
    /// The method.
    pub method: &'a str,
    /// The path and query, as received (already URI-encoded).
    pub path_and_query: &'a str,
    /// The request headers.
    pub headers: &'a HeaderMap,
    /// The host (the `Host` header, or HTTP/2's `:authority`).
    pub host: Option<&'a str>,
    /// The body.
    pub body: &'a [u8],
}

/// One configured credential: the secret and the name of the identity it stands for.
struct Secret {
    name: String,
    secret: Zeroizing<String>,
}

/// Verifies requests against a key store's credentials, region and service.
pub struct Verifier {
    region: String,
    service: String,
    max_clock_skew: Duration,
    secrets: HashMap<String, Secret>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("region", &self.region)
            .field("credentials", &self.secrets.len())
            .finish()
    }
}

impl Verifier {
    /// A verifier for `region` and `service` with no credentials yet.
    pub fn new(region: &str, service: &str, max_clock_skew: Duration) -> Self {
        Self {
            region: region.to_owned(),
            service: service.to_owned(),
            max_clock_skew,
            secrets: HashMap::new(),
        }
    }

    /// Adds the credential `access_key_id` / `secret`, standing for identity `name`.
    pub fn add(&mut self, name: &str, access_key_id: &str, secret: Zeroizing<String>) {
        self.secrets.insert(access_key_id.to_owned(), Secret { name: name.to_owned(), secret });
    }

    /// Checks `request`'s signature at time `now`; the name of the credential that
    /// signed it.
    pub fn verify(&self, request: &ReceivedRequest<'_>, now: SystemTime) -> Result<&str, SigV4Error> {
        let header = request
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .ok_or(SigV4Error::Missing)?;
        let auth = parse_authorization(header)?;
        let secret = self.secrets.get(auth.access_key_id).ok_or(SigV4Error::UnknownAccessKey)?;
        if auth.region != self.region || auth.service != self.service {
            let scope: String = format!("{}/{}", auth.region, auth.service).chars().take(80).collect();
            return Err(SigV4Error::WrongScope(scope));
        }
        if !auth.signed_headers.contains(&"host") {
            return Err(SigV4Error::MissingHeader("host".into()));
        }
        if !auth.signed_headers.contains(&"x-amz-date") {
            return Err(SigV4Error::BadDate("not signed"));
        }
        let amz_date = request
            .headers
            .get("x-amz-date")
            .and_then(|v| v.to_str().ok())
            .ok_or(SigV4Error::BadDate("missing"))?;
        let time = parse_amz_date(amz_date).ok_or(SigV4Error::BadDate("not YYYYMMDDTHHMMSSZ"))?;
        if !amz_date.starts_with(auth.date) {
            return Err(SigV4Error::BadDate("not the credential scope's date"));
        }
        let skew =
            now.duration_since(time).or_else(|early| Ok::<_, ()>(early.duration())).unwrap_or_default();
        if skew > self.max_clock_skew {
            return Err(SigV4Error::Skewed(self.max_clock_skew));
        }
        let host = request.host.ok_or_else(|| SigV4Error::MissingHeader("host".into()))?;
        let mut headers: Vec<(&str, String)> = vec![("host", host.to_owned())];
        for name in auth.signed_headers.iter().filter(|name| !matches!(**name, "host" | "x-amz-date")) {
            let values: Vec<&str> =
                request.headers.get_all(*name).iter().filter_map(|value| value.to_str().ok()).collect();
            if values.is_empty() {
                return Err(SigV4Error::MissingHeader((*name).chars().take(64).collect()));
            }
            headers.push((name, values.join(",")));
        }
        let expected = self.signature(request, host, &headers, &auth, &secret.secret, time)?;
        if bool::from(expected.as_bytes().ct_eq(auth.signature.as_bytes())) {
            Ok(&secret.name)
        } else {
            Err(SigV4Error::Mismatch)
        }
    }

    /// The signature of `request` under `secret`, by AWS's signer.
    fn signature(
        &self,
        request: &ReceivedRequest<'_>,
        host: &str,
        headers: &[(&str, String)],
        auth: &Authorization<'_>,
        secret: &str,
        time: SystemTime,
    ) -> Result<String, SigV4Error> {
        let uri = format!("https://{host}{}", request.path_and_query);
        let signable = SignableRequest::new(
            request.method,
            uri,
            headers.iter().map(|(name, value)| (*name, value.as_str())),
            SignableBody::Bytes(request.body),
        )
        .map_err(|_| SigV4Error::Malformed("the request cannot be put in canonical form"))?;
        let identity: Identity =
            Credentials::new(auth.access_key_id, secret, None, None, "keymux-xks").into();
        let mut settings = SigningSettings::default();
        // Exactly the headers the client signed, no more and no fewer.
        settings.excluded_headers = Some(Vec::new());
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name(&self.service)
            .time(time)
            .settings(settings)
            .build()
            .map_err(|_| SigV4Error::Malformed("signing parameters"))?
            .into();
        let output = aws_sigv4::http_request::sign(signable, &params)
            .map_err(|_| SigV4Error::Malformed("the request cannot be signed"))?;
        Ok(output.signature().to_owned())
    }
}

#[cfg(test)]
mod tests;
