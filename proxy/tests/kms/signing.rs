//! Signing keys on KMS: every type KMS holds signs with one KMS `Sign` per signature and
//! verifies on the proxy, `openssl` verifies from the public key keymux serves, the type
//! is recorded in KMS (key spec and tag) so every proxy reads it back, and what KMS
//! cannot hold is refused.
//!
//! moto 5.2 differs from AWS KMS in two ways these tests meet, and say so where they do:
//! it signs RSASSA-PSS with the largest salt the key allows (350 bytes for RSA-3072 and
//! SHA-256) where AWS uses the digest's length (32, keymux's `rsa-3072-pss`), and it
//! ignores `MessageType = DIGEST`, hashing the digest again. It also never refuses a
//! disabled key, so KMS's own refusal (`DisabledException` → KEY_DISABLED) is checked by
//! the backend's unit tests, and here keymux's refusal of a version it lists disabled.

use std::path::Path;
use std::process::Command;

use aws_sdk_kms::types::{KeySpec, KeyUsageType, Tag};
use keymux_crypto::PublicKey;
use keymux_protocol::{Algorithm, Status};
use keymux_proxy::backend::kms::KmsConfig;
use keymux_proxy::keys::{KeyAdminError, KeyLifecycle, KeyType, VersionState};
use keymux_test_support::forwarder::Forwarder;
use keymux_test_support::metrics::metric_sum;
use keymux_test_support::moto::{Moto, kms_calls, kms_config, start_proxy};
use keymux_test_support::openssl;
use keymux_test_support::proxy::TestProxy;
use keymux_test_support::unique_key;
use sha2::Digest;

/// Every signing type the KMS backend holds, with its wire algorithm.
const SIGNING: [(KeyType, Algorithm); 4] = [
    (KeyType::EcP256, Algorithm::EcdsaP256Sha256),
    (KeyType::EcP384, Algorithm::EcdsaP384Sha384),
    (KeyType::Rsa3072Pss, Algorithm::Rsa3072PssSha256),
    (KeyType::Rsa3072Pkcs1, Algorithm::Rsa3072Pkcs1Sha256),
];

const REGION: &str = "us-east-1";

/// One region on the shared moto, under an alias prefix of the test's own: its proxies
/// see only its keys, so KMS call counts are the test's alone.
fn one_region() -> KmsConfig {
    let mut kms = kms_config(&[(REGION, Moto::shared().endpoint())]);
    kms.alias_prefix = unique_key("sig");
    kms
}

/// Every KMS request the proxy's data path made (answered or not), from its metrics.
async fn all_kms_calls(proxy: &TestProxy) -> f64 {
    metric_sum(&proxy.scrape().await, "keymux_kms_calls_total{")
}

async fn sign_calls(proxy: &TestProxy, region: &str) -> u64 {
    kms_calls(proxy, region, "sign").await
}

/// Whether `openssl` verifies `signature` as RSASSA-PSS with SHA-256 and MGF1-SHA-256
/// and the largest salt an RSA-3072 key allows (384 - 32 - 2 = 350 bytes): how moto 5.2
/// signs `RSASSA_PSS_SHA_256`.
fn openssl_verifies_pss_with_moto_salt(spki_der: &[u8], message: &[u8], signature: &[u8]) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    };
    let (der, data, sig) = (write("key.der", spki_der), write("data", message), write("sig", signature));
    let pem = dir.path().join("key.pem");
    let converted = Command::new("openssl")
        .args(["pkey", "-pubin", "-inform", "DER", "-outform", "PEM", "-in"])
        .args([&der, Path::new("-out"), &pem])
        .status()
        .expect("openssl is installed");
    assert!(converted.success());
    let output = Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(&pem)
        .args(["-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:350"])
        .args(["-sigopt", "rsa_mgf1_md:sha256", "-signature"])
        .args([&sig, &data])
        .output()
        .expect("openssl is installed");
    output.status.success() && String::from_utf8_lossy(&output.stdout).contains("Verified OK")
}

#[tokio::test]
async fn every_type_signs_with_one_kms_call_and_verifies_on_the_proxy() {
    let proxy = start_proxy(one_region(), |_| {}).await;
    let mut client = proxy.connect().await;
    let message = b"a message for KMS to sign";
    for (key_type, algorithm) in SIGNING {
        let name = unique_key(&format!("sig-{key_type}"));
        proxy.create_key_of_type(&name, key_type);
        assert_eq!(proxy.backend.find_key(&name).unwrap().key_type, key_type, "listed with its type");

        let before = sign_calls(&proxy, REGION).await;
        let mut signatures = Vec::new();
        for _ in 0..3 {
            let (version, signature) = client.sign(&name, message, false).await.unwrap();
            assert_eq!(version, 1, "{key_type}");
            if let Some(len) = algorithm.signature_len() {
                assert_eq!(signature.len(), len, "{key_type}: raw RSA signatures");
            }
            signatures.push(signature);
        }
        assert_eq!(sign_calls(&proxy, REGION).await - before, 3, "{key_type}: one Sign per signature");
        let signature = &signatures[0];

        // VERIFY and GET_PUBLIC_KEY are answered on the proxy: no KMS call at all.
        let calls = all_kms_calls(&proxy).await;
        let (served, served_algorithm, spki) = client.public_key(&name, 0).await.unwrap();
        assert_eq!((served, served_algorithm), (1, algorithm), "{key_type}");
        PublicKey::from_spki_der(key_type, &spki).expect("KMS's public key parses as keymux's type");
        let valid = client.verify(&name, 1, message, signature, false).await.unwrap();
        assert_eq!(client.verify(&name, 1, b"another message", signature, false).await, Ok(false));
        let mut tampered = signature.clone();
        tampered[signature.len() / 2] ^= 1;
        assert_eq!(client.verify(&name, 1, message, &tampered, false).await, Ok(false), "{key_type}");
        assert_eq!(all_kms_calls(&proxy).await, calls, "{key_type}: VERIFY and GET_PUBLIC_KEY stay local");

        if key_type == KeyType::Rsa3072Pss && !valid {
            // moto 5.2's PSS salt is the largest, not AWS's (and keymux's) 32 bytes, so
            // keymux rightly answers valid = 0. The signature is still PSS with SHA-256
            // by this key over this message, which is what keymux asked KMS for.
            for signature in &signatures {
                assert!(openssl_verifies_pss_with_moto_salt(&spki, message, signature), "moto's PSS");
            }
            assert!(!openssl_verifies_pss_with_moto_salt(&spki, message, &tampered));
            assert!(!openssl::verifies(algorithm, &spki, message, signature), "not salt 32");
            continue;
        }
        assert!(valid, "{key_type}: KMS's signature verifies on the proxy");
        for signature in &signatures {
            assert!(openssl::verifies(algorithm, &spki, message, signature), "openssl verifies {key_type}");
            assert_eq!(client.verify(&name, 1, message, signature, false).await, Ok(true));
        }
        assert!(!openssl::verifies(algorithm, &spki, message, &tampered), "openssl refuses {key_type}");
    }

    // One GetPublicKey per version, at the refresh that first listed it; later
    // refreshes reuse it.
    proxy.server.refresh_keys().unwrap();
    proxy.server.refresh_keys().unwrap();
    assert_eq!(kms_calls(&proxy, REGION, "get_public_key").await, SIGNING.len() as u64);
}

#[tokio::test]
async fn digests_go_to_kms_as_digests_and_what_kms_refuses_never_reaches_it() {
    let proxy = start_proxy(one_region(), |_| {}).await;
    let mut client = proxy.connect().await;
    let message = b"hashed by the caller";
    let sha256 = sha2::Sha256::digest(message).to_vec();
    let sha384 = sha2::Sha384::digest(message).to_vec();
    for (key_type, algorithm, digest) in [
        (KeyType::EcP256, Algorithm::EcdsaP256Sha256, &sha256),
        (KeyType::EcP384, Algorithm::EcdsaP384Sha384, &sha384),
        (KeyType::Rsa3072Pkcs1, Algorithm::Rsa3072Pkcs1Sha256, &sha256),
    ] {
        let name = unique_key(&format!("digest-{key_type}"));
        proxy.create_key_of_type(&name, key_type);
        let before = sign_calls(&proxy, REGION).await;
        let (version, signature) = client.sign(&name, digest, true).await.unwrap();
        assert_eq!(sign_calls(&proxy, REGION).await - before, 1, "{key_type}");
        if client.verify(&name, version, message, &signature, false).await == Ok(true) {
            // AWS KMS: the digest is signed as it is, so this is a signature over the message.
            assert_eq!(client.verify(&name, version, digest, &signature, true).await, Ok(true));
            let (_, _, spki) = client.public_key(&name, version).await.unwrap();
            assert!(openssl::verifies(algorithm, &spki, message, &signature), "{key_type}");
        } else {
            // moto 5.2 ignores MessageType = DIGEST and hashes what it is given: its
            // signature is over the digest as a message. (That keymux sends DIGEST is
            // the backend's unit test `messages_go_raw_and_digests_as_digests`.)
            let over_digest = client.verify(&name, version, digest, &signature, false).await;
            assert_eq!(over_digest, Ok(true), "{key_type}: moto signed SHA(digest)");
        }

        // Refused before KMS: a digest of the wrong length (the router), a message KMS
        // would not sign as RAW (empty, or over 4096 bytes).
        let before = all_kms_calls(&proxy).await;
        let short = &digest[..digest.len() - 1];
        assert_eq!(client.sign(&name, short, true).await, Err(Status::BadRequest), "{key_type}");
        assert_eq!(client.sign(&name, &[7; 4097], false).await, Err(Status::BadRequest), "{key_type}");
        assert_eq!(client.sign(&name, b"", false).await, Err(Status::BadRequest), "{key_type}");
        assert_eq!(all_kms_calls(&proxy).await, before, "{key_type}: no KMS call for a refusal");
        assert!(client.sign(&name, &[7; 4096], false).await.is_ok(), "{key_type}: 4096 bytes sign");
    }
}

#[tokio::test]
async fn rotation_keeps_the_type_and_another_proxy_reads_it_from_kms() {
    let kms = one_region();
    let proxy = start_proxy(kms.clone(), |_| {}).await;
    let mut client = proxy.connect().await;
    // The RSA types: the key spec (RSA_3072) cannot tell them apart, the tag does.
    let keys =
        [(unique_key("rot-pss"), KeyType::Rsa3072Pss), (unique_key("rot-pkcs1"), KeyType::Rsa3072Pkcs1)];
    let mut first = Vec::new();
    for (name, key_type) in &keys {
        proxy.create_key_of_type(name, *key_type);
        first.push(client.sign(name, b"before rotation", false).await.unwrap());
        assert_eq!(proxy.backend.rotate_key(name).unwrap(), 2);
    }
    proxy.server.refresh_keys().unwrap();

    let other = start_proxy(kms, |_| {}).await;
    other.server.refresh_keys().unwrap();
    let mut other_client = other.connect().await;
    for ((name, key_type), (v1, signature_v1)) in keys.iter().zip(first) {
        assert_eq!(v1, 1);
        let listed = proxy.backend.find_key(name).unwrap();
        assert_eq!((listed.key_type, listed.versions.len()), (*key_type, 2), "rotation keeps {key_type}");
        let (version, signature) = client.sign(name, b"after rotation", false).await.unwrap();
        assert_eq!(version, 2, "{key_type}: signs with the new version");
        let (_, _, spki_1) = client.public_key(name, 1).await.unwrap();
        let (_, _, spki_2) = client.public_key(name, 2).await.unwrap();
        assert_ne!(spki_1, spki_2, "a new KMS key per version");

        // A proxy that never saw these keys made reads the same types from KMS.
        assert_eq!(other.backend.find_key(name).unwrap().key_type, *key_type, "{key_type}");
        assert_eq!(other_client.public_key(name, 2).await.unwrap().2, spki_2);
        for (proxy_client, which) in [(&mut client, "this proxy"), (&mut other_client, "the other")] {
            let v2 = proxy_client.verify(name, 2, b"after rotation", &signature, false).await;
            let v1 = proxy_client.verify(name, 1, b"before rotation", &signature_v1, false).await;
            // moto's PSS signatures do not verify as keymux's rsa-3072-pss (see above).
            let expected = *key_type == KeyType::Rsa3072Pkcs1 || v2 == Ok(true);
            assert_eq!((v1, v2), (Ok(expected), Ok(expected)), "{key_type} on {which}");
        }
    }
}

#[tokio::test]
async fn disabled_versions_are_key_disabled_and_unsupported_types_are_refused() {
    let proxy = start_proxy(one_region(), |_| {}).await;
    let mut client = proxy.connect().await;
    let name = unique_key("disabled");
    proxy.create_key_of_type(&name, KeyType::EcP256);
    let (_, signature) = client.sign(&name, b"m", false).await.unwrap();
    proxy.backend.rotate_key(&name).unwrap();
    proxy.backend.set_version_state(&name, 2, VersionState::Disabled).unwrap();
    proxy.server.refresh_keys().unwrap();
    assert_eq!(client.sign(&name, b"m", false).await.unwrap().0, 1, "the highest enabled version signs");
    assert_eq!(client.verify(&name, 2, b"m", &[0; 70], false).await, Err(Status::KeyDisabled));

    proxy.backend.set_version_state(&name, 1, VersionState::Disabled).unwrap();
    proxy.server.refresh_keys().unwrap();
    let before = all_kms_calls(&proxy).await;
    assert_eq!(client.sign(&name, b"m", false).await, Err(Status::KeyDisabled));
    assert_eq!(client.verify(&name, 1, b"m", &signature, false).await, Err(Status::KeyDisabled));
    assert_eq!(client.public_key(&name, 0).await, Err(Status::KeyDisabled));
    assert_eq!(all_kms_calls(&proxy).await, before, "refused by keymux, before KMS");

    proxy.backend.set_version_state(&name, 1, VersionState::Enabled).unwrap();
    proxy.server.refresh_keys().unwrap();
    assert_eq!(client.verify(&name, 1, b"m", &signature, false).await, Ok(true), "enabled again");

    for key_type in [KeyType::Ed25519, KeyType::MlDsa65, KeyType::MlKem768] {
        let name = unique_key("unsupported");
        let refused = proxy.backend.create_key(&name, key_type).unwrap_err();
        assert_eq!(refused, KeyAdminError::UnsupportedKeyType { key_type, backend: "kms" });
        assert_eq!(proxy.backend.find_key(&name).unwrap_err(), KeyAdminError::UnknownKey(name.clone()));
    }
}

#[tokio::test]
async fn signing_fails_over_to_the_replica_of_a_multi_region_key() {
    let moto = Moto::shared();
    let primary = Forwarder::start(moto.addr);
    let mut kms = kms_config(&[(REGION, primary.endpoint()), ("eu-west-1", moto.endpoint())]);
    kms.alias_prefix = unique_key("sig");
    let proxy = start_proxy(kms, |_| {}).await;
    let mut client = proxy.connect().await;
    let name = unique_key("mrk-sign");
    proxy.create_key_of_type(&name, KeyType::EcP384);
    let (_, first) = client.sign(&name, b"from the primary", false).await.unwrap();
    assert_eq!(sign_calls(&proxy, REGION).await, 1);

    primary.cut();
    let (version, second) = client.sign(&name, b"from the replica", false).await.unwrap();
    assert_eq!((version, sign_calls(&proxy, "eu-west-1").await), (1, 1), "the replica signed");
    // One key pair across the regions: both verify under the one public key.
    assert_eq!(client.verify(&name, 1, b"from the primary", &first, false).await, Ok(true));
    assert_eq!(client.verify(&name, 1, b"from the replica", &second, false).await, Ok(true));
    primary.restore();
}

/// An SDK client on moto, for keys made by hand as an operator would.
fn operator_client(region: &str) -> aws_sdk_kms::Client {
    use aws_sdk_kms::config::{BehaviorVersion, Credentials, Region};
    let http = aws_smithy_http_client::Builder::new().build_http();
    let config = aws_sdk_kms::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region.to_owned()))
        .endpoint_url(Moto::shared().endpoint())
        .credentials_provider(Credentials::new("testing", "testing", None, None, "keymux-test"))
        .http_client(http)
        .build();
    aws_sdk_kms::Client::from_conf(config)
}

/// Creates a KMS key by hand and aliases it as `alias`.
async fn key_by_hand(
    client: &aws_sdk_kms::Client,
    alias: &str,
    spec: KeySpec,
    usage: KeyUsageType,
    tag: Option<&str>,
) {
    let tag =
        tag.map(|value| vec![Tag::builder().tag_key("keymux:key-type").tag_value(value).build().unwrap()]);
    let created = client.create_key().key_spec(spec).key_usage(usage).set_tags(tag).send().await.unwrap();
    let key_id = created.key_metadata().unwrap().key_id().to_owned();
    client.create_alias().alias_name(alias).target_key_id(key_id).send().await.unwrap();
}

#[tokio::test]
async fn keys_made_by_hand_are_typed_by_their_spec_and_tag() {
    let kms = one_region();
    let prefix = kms.alias_prefix.clone();
    let operator = operator_client(REGION);
    let alias = |key: &str, version: u32| format!("alias/{prefix}/{key}/v{version}");
    use aws_sdk_kms::types::{KeySpec as S, KeyUsageType as U};
    key_by_hand(&operator, &alias("legacy", 1), S::SymmetricDefault, U::EncryptDecrypt, None).await;
    key_by_hand(&operator, &alias("imported", 1), S::Rsa3072, U::SignVerify, Some("rsa-3072-pkcs1")).await;
    key_by_hand(&operator, &alias("untagged-rsa", 1), S::Rsa3072, U::SignVerify, None).await;
    key_by_hand(&operator, &alias("mistagged", 1), S::Rsa3072, U::SignVerify, Some("ec-p256")).await;
    key_by_hand(&operator, &alias("untagged-ec", 1), S::EccNistP256, U::SignVerify, None).await;
    key_by_hand(&operator, &alias("hmac", 1), S::Hmac256, U::GenerateVerifyMac, None).await;
    key_by_hand(&operator, &alias("mixed", 1), S::EccNistP256, U::SignVerify, None).await;
    key_by_hand(&operator, &alias("mixed", 2), S::SymmetricDefault, U::EncryptDecrypt, None).await;

    let proxy = start_proxy(kms, |_| {}).await;
    proxy.server.refresh_keys().unwrap();
    let listed: Vec<_> = proxy
        .backend
        .list_keys()
        .unwrap()
        .into_iter()
        .map(|k| (k.name, k.key_type, k.versions.len()))
        .collect();
    assert_eq!(
        listed,
        [
            ("imported".to_owned(), KeyType::Rsa3072Pkcs1, 1),
            ("legacy".to_owned(), KeyType::Aes256, 1),
            ("mixed".to_owned(), KeyType::EcP256, 1),
            ("untagged-ec".to_owned(), KeyType::EcP256, 1),
        ],
        "keys before types are aes-256; an RSA key needs its tag; a version of another type is left out"
    );
    let mut client = proxy.connect().await;
    let (_, signature) = client.sign("imported", b"m", false).await.unwrap();
    assert_eq!(client.verify("imported", 1, b"m", &signature, false).await, Ok(true));
    assert_eq!(client.wrap("legacy", b"", &[1; 32]).await.map(|blob| blob.is_empty()), Ok(false));
    assert_eq!(client.sign("untagged-rsa", b"m", false).await, Err(Status::UnknownKey));
}
