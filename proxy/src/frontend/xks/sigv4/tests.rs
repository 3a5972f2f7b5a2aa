//! The verifier against the AWS SigV4 test suite's vectors (aws-sig-v4-test-suite:
//! `get-vanilla`, `post-vanilla`, `post-header-key-sort`, `post-x-www-form-urlencoded`),
//! and properties of the header parser and of tampering.

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;

use super::*;

const AKID: &str = "AKIDEXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const DATE: &str = "20150830T123600Z";

fn suite_verifier() -> Verifier {
    let mut verifier = Verifier::new("us-east-1", "service", Duration::from_secs(300));
    verifier.add("suite", AKID, Zeroizing::new(SECRET.to_owned()));
    verifier
}

fn at_date() -> SystemTime {
    parse_amz_date(DATE).unwrap()
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_str(value).unwrap());
    }
    map
}

fn authorization(signed: &str, signature: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256 Credential={AKID}/20150830/us-east-1/service/aws4_request, SignedHeaders={signed}, Signature={signature}"
    )
}

/// One vector: the request and the signature the suite gives for it.
fn check_vector(method: &str, extra: &[(&str, &str)], body: &[u8], signed: &str, signature: &str) {
    let mut pairs = vec![("host", "example.amazonaws.com"), ("x-amz-date", DATE)];
    pairs.extend_from_slice(extra);
    let auth = authorization(signed, signature);
    pairs.push(("authorization", &auth));
    let map = headers(&pairs);
    let request = ReceivedRequest {
        method,
        path_and_query: "/",
        headers: &map,
        host: Some("example.amazonaws.com"),
        body,
    };
    assert_eq!(suite_verifier().verify(&request, at_date()), Ok("suite"), "{method} {signed}");
    // One bit off in the signature, the body or a signed header: refused.
    let mut wrong = signature.as_bytes().to_vec();
    wrong[0] = if wrong[0] == b'0' { b'1' } else { b'0' };
    let bad = authorization(signed, std::str::from_utf8(&wrong).unwrap());
    let mut tampered = map.clone();
    tampered.insert("authorization", HeaderValue::from_str(&bad).unwrap());
    let request_bad = ReceivedRequest { headers: &tampered, ..request };
    assert_eq!(suite_verifier().verify(&request_bad, at_date()), Err(SigV4Error::Mismatch));
    let request_body = ReceivedRequest { body: b"tampered", ..request };
    assert_eq!(suite_verifier().verify(&request_body, at_date()), Err(SigV4Error::Mismatch));
}

#[test]
fn get_vanilla() {
    check_vector(
        "GET",
        &[],
        b"",
        "host;x-amz-date",
        "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
    );
}

#[test]
fn post_vanilla() {
    check_vector(
        "POST",
        &[],
        b"",
        "host;x-amz-date",
        "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b",
    );
}

#[test]
fn post_header_key_sort() {
    check_vector(
        "POST",
        &[("my-header1", "value1")],
        b"",
        "host;my-header1;x-amz-date",
        "c5410059b04c1ee005303aed430f6e6645f61f4dc9e1461ec8f8916fdf18852c",
    );
}

#[test]
fn post_x_www_form_urlencoded() {
    check_vector(
        "POST",
        &[("content-type", "application/x-www-form-urlencoded")],
        b"Param1=value1",
        "content-type;host;x-amz-date",
        "ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a",
    );
}

#[test]
fn scope_date_and_skew_are_checked() {
    let signature = "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b";
    let auth = authorization("host;x-amz-date", signature);
    let map = headers(&[("host", "example.amazonaws.com"), ("x-amz-date", DATE), ("authorization", &auth)]);
    let request = ReceivedRequest {
        method: "POST",
        path_and_query: "/",
        headers: &map,
        host: Some("example.amazonaws.com"),
        body: b"",
    };
    let late = at_date() + Duration::from_secs(301);
    assert_eq!(suite_verifier().verify(&request, late), Err(SigV4Error::Skewed(Duration::from_secs(300))));
    let early = at_date() - Duration::from_secs(301);
    assert_eq!(suite_verifier().verify(&request, early), Err(SigV4Error::Skewed(Duration::from_secs(300))));
    assert!(suite_verifier().verify(&request, at_date() + Duration::from_secs(299)).is_ok());
    let mut other_region = Verifier::new("eu-west-1", "service", Duration::from_secs(300));
    other_region.add("suite", AKID, Zeroizing::new(SECRET.to_owned()));
    assert!(matches!(other_region.verify(&request, at_date()), Err(SigV4Error::WrongScope(_))));
    let stranger = Verifier::new("us-east-1", "service", Duration::from_secs(300));
    assert_eq!(stranger.verify(&request, at_date()), Err(SigV4Error::UnknownAccessKey));
}

#[test]
fn dates_parse_strictly() {
    assert!(parse_amz_date(DATE).is_some());
    for bad in ["20150830T123600", "2015-08-30T12:36:00Z", "20151330T123600Z", "20150830t123600Z", ""] {
        assert!(parse_amz_date(bad).is_none(), "{bad}");
    }
}

#[test]
fn authorization_headers_parse_strictly() {
    let good = authorization("host;x-amz-date", &"a".repeat(64));
    let parsed = parse_authorization(&good).unwrap();
    assert_eq!((parsed.access_key_id, parsed.region, parsed.service), (AKID, "us-east-1", "service"));
    for bad in [
        "Basic abc".to_owned(),
        good.replace("host;x-amz-date", "x-amz-date;host"),
        good.replace("host;x-amz-date", "Host;x-amz-date"),
        good.replace("/aws4_request", "/aws4"),
        good.replacen(&"a".repeat(64), &"A".repeat(64), 1),
        format!("{good}, Signature=00"),
    ] {
        assert!(parse_authorization(&bad).is_err(), "{bad}");
    }
}

proptest! {
    /// Arbitrary header text never panics the parser.
    #[test]
    fn arbitrary_authorization_never_panics(text in "\\PC{0,300}") {
        let _ = parse_authorization(&text);
        let _ = parse_authorization(&format!("AWS4-HMAC-SHA256 {text}"));
        let _ = parse_amz_date(&text);
    }

    /// A request signed over any body verifies, and only with that body.
    #[test]
    fn signed_bodies_verify_and_changed_ones_do_not(body in proptest::collection::vec(any::<u8>(), 0..512), flip in any::<usize>()) {
        let verifier = suite_verifier();
        let base = headers(&[("host", "xks.example.com"), ("x-amz-date", DATE)]);
        let request = ReceivedRequest { method: "POST", path_and_query: "/kms/xks/v1/health", headers: &base, host: Some("xks.example.com"), body: &body };
        let pairs = vec![("host", "xks.example.com".to_owned())];
        let unsigned = authorization("host;x-amz-date", &"0".repeat(64));
        let auth = parse_authorization(&unsigned).unwrap();
        let signature = verifier.signature(&request, "xks.example.com", &pairs, &auth, SECRET, at_date()).unwrap();
        let mut signed = base.clone();
        signed.insert("authorization", HeaderValue::from_str(&authorization("host;x-amz-date", &signature)).unwrap());
        let request = ReceivedRequest { headers: &signed, ..request };
        prop_assert_eq!(verifier.verify(&request, at_date()), Ok("suite"));
        if !body.is_empty() {
            let mut changed = body.clone();
            let at = flip % changed.len();
            changed[at] ^= 1;
            let request = ReceivedRequest { body: &changed, ..request };
            prop_assert_eq!(verifier.verify(&request, at_date()), Err(SigV4Error::Mismatch));
        }
    }
}
