//! The proxy on a real SoftHSM2 token: operations, rotation, disabling, recovery.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use keymux_client::Error;
use keymux_protocol::BlobHeader;
use keymux_proxy::backend::pkcs11::{Pkcs11Backend, Pkcs11Mechanism};
use keymux_proxy::keys::{KeyLifecycle, VersionState};
use keymux_test_support::pkcs11::{one_at_a_time, own_iv_module, token};
use keymux_test_support::proxy::{TestProxy, client_for};
use keymux_test_support::unique_key;

fn version_of(blob: &[u8]) -> u32 {
    BlobHeader::parse(blob).unwrap().0.version
}

#[tokio::test]
async fn operations_on_the_token() {
    operations_with(Pkcs11Mechanism::Auto).await;
}

/// The encrypt-then-MAC scheme for tokens without AES-GCM, forced on a token that has it.
#[tokio::test]
async fn operations_on_the_token_with_cbc_and_hmac() {
    operations_with(Pkcs11Mechanism::AesCbcHmacSha256).await;
}

/// A token that ignores the caller's AES-GCM IV and writes the one it chose into the
/// mechanism parameter (AWS CloudHSM does): the blobs store the IV it used, so they
/// open. Before the IV was read back, every such blob failed with INTEGRITY.
#[tokio::test]
async fn a_token_choosing_its_own_gcm_ivs_writes_blobs_that_open() {
    let _turn = one_at_a_time().await;
    let proxy = TestProxy::start_hsm(|config| {
        let mut hsm = token().config(2);
        hsm.module = own_iv_module();
        config.backend = keymux_proxy::backend::BackendConfig::Pkcs11(hsm);
    })
    .await;
    let key = unique_key("own-iv");
    proxy.create_key(&key);
    let client = client_for(&proxy).await;
    for round in 0..8u8 {
        let blob = client.wrap(&key, b"ctx", &[round; 32]).await.unwrap();
        assert_eq!(client.unwrap(b"ctx", &blob).await.unwrap().expose(), &[round; 32]);
    }
    let data_key = client.generate_data_key(&key, b"gdk", 32).await.unwrap();
    assert_eq!(client.unwrap(b"gdk", &data_key.blob).await.unwrap().expose(), data_key.plaintext.expose());
}

async fn operations_with(mechanism: Pkcs11Mechanism) {
    let _turn = one_at_a_time().await;
    let proxy = TestProxy::start_hsm(|config| {
        let mut hsm = token().config(2);
        hsm.mechanism = mechanism;
        config.backend = keymux_proxy::backend::BackendConfig::Pkcs11(hsm);
    })
    .await;
    let key = unique_key("ops");
    proxy.create_key(&key);
    let client = client_for(&proxy).await;

    let blob = client.wrap(&key, b"ctx", &[0x5a; 32]).await.unwrap();
    assert_eq!(client.unwrap(b"ctx", &blob).await.unwrap().expose(), &[0x5a; 32]);
    assert!(matches!(client.unwrap(b"other", &blob).await, Err(Error::Integrity { .. })));
    let mut tampered = blob.clone();
    *tampered.last_mut().unwrap() ^= 1;
    assert!(matches!(client.unwrap(b"ctx", &tampered).await, Err(Error::Integrity { .. })));
    assert!(matches!(client.wrap("no-such-key", b"", &[1; 32]).await, Err(Error::UnknownKey { .. })));

    let data_key = client.generate_data_key(&key, b"gdk", 32).await.unwrap();
    assert_eq!(client.unwrap(b"gdk", &data_key.blob).await.unwrap().expose(), data_key.plaintext.expose());

    assert_eq!(proxy.backend.rotate_key(&key).unwrap(), 2);
    proxy.server.refresh_keys().unwrap();
    let rewrapped = client.rewrap(b"ctx", &blob).await.unwrap();
    assert_eq!(version_of(&rewrapped), 2);
    assert_eq!(client.unwrap(b"ctx", &rewrapped).await.unwrap().expose(), &[0x5a; 32]);
    assert!(proxy.backend_ops("wrap") > 0, "the work ran on the pkcs11 backend");
}

#[tokio::test]
async fn rotation_under_load_is_seen_by_two_proxies_sharing_the_token() {
    let _turn = one_at_a_time().await;
    let fast_refresh = |config: &mut keymux_proxy::config::Config| {
        config.keys.refresh_interval = Duration::from_millis(200);
        config.cache.enabled = false;
    };
    let first = TestProxy::start_hsm(fast_refresh).await;
    let second = TestProxy::start_hsm(fast_refresh).await;
    let key = unique_key("rotate");
    first.create_key(&key);
    second.server.refresh_keys().unwrap();
    let clients = [Arc::new(client_for(&first).await), Arc::new(client_for(&second).await)];
    let mut old_blobs = Vec::new();
    for i in 0..8u8 {
        old_blobs.push(clients[0].wrap(&key, b"old", &[i; 32]).await.unwrap());
    }

    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicU64::new(0));
    let unwraps = Arc::new(AtomicU64::new(0));
    let mut load = Vec::new();
    for worker in 0..16usize {
        let (client, blobs) = (Arc::clone(&clients[worker % 2]), old_blobs.clone());
        let (stop, failures, unwraps) = (Arc::clone(&stop), Arc::clone(&failures), Arc::clone(&unwraps));
        load.push(tokio::spawn(async move {
            let mut i = worker;
            while !stop.load(Ordering::Relaxed) {
                let blob = &blobs[i % blobs.len()];
                match client.unwrap(b"old", blob).await {
                    Ok(dek) if dek.expose() == [(i % blobs.len()) as u8; 32] => {
                        unwraps.fetch_add(1, Ordering::Relaxed)
                    }
                    _ => failures.fetch_add(1, Ordering::Relaxed),
                };
                i += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Rotate through a third handle on the token, as `keymux key rotate` would.
    let admin = keymux_proxy::backend::pkcs11::Pkcs11Backend::open(&token().config(1)).unwrap();
    assert_eq!(admin.rotate_key(&key).unwrap(), 2);

    let deadline = Instant::now() + Duration::from_secs(5);
    for client in &clients {
        loop {
            let blob = client.wrap(&key, b"new", &[9; 32]).await.unwrap();
            if version_of(&blob) == 2 {
                break;
            }
            assert!(Instant::now() < deadline, "a proxy never picked up the new version");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    assert_eq!(failures.load(Ordering::Relaxed), 0, "no unwrap of an old-version blob failed");
    assert!(unwraps.load(Ordering::Relaxed) > 50);
}

#[tokio::test]
async fn disabled_versions_and_the_minimum_decryption_version() {
    let _turn = one_at_a_time().await;
    let proxy = TestProxy::start_hsm(|_| {}).await;
    let key = unique_key("disable");
    proxy.create_key(&key);
    let client = client_for(&proxy).await;
    let v1 = client.wrap(&key, b"", &[1; 32]).await.unwrap();
    client.unwrap(b"", &v1).await.unwrap();
    assert!(proxy.server.metrics().cache_misses() >= 1, "now cached");

    proxy.backend.rotate_key(&key).unwrap();
    proxy.backend.set_version_state(&key, 1, VersionState::Disabled).unwrap();
    proxy.server.refresh_keys().unwrap();
    let hits = proxy.server.metrics().cache_hits();
    assert!(matches!(client.unwrap(b"", &v1).await, Err(Error::KeyDisabled { .. })));
    assert_eq!(
        proxy.server.metrics().cache_hits(),
        hits,
        "the cached DEK of a disabled version is not served"
    );

    proxy.backend.set_version_state(&key, 1, VersionState::Enabled).unwrap();
    proxy.server.refresh_keys().unwrap();
    assert_eq!(client.unwrap(b"", &v1).await.unwrap().expose(), &[1; 32]);

    proxy.backend.set_min_decryption_version(&key, 2).unwrap();
    proxy.server.refresh_keys().unwrap();
    assert!(matches!(client.unwrap(b"", &v1).await, Err(Error::KeyDisabled { .. })));
    let v2 = client.wrap(&key, b"", &[2; 32]).await.unwrap();
    assert_eq!(client.unwrap(b"", &v2).await.unwrap().expose(), &[2; 32]);
    let listed = proxy.backend.list_keys().unwrap().into_iter().find(|k| k.name == key).unwrap();
    assert_eq!(listed.min_decryption_version, 2);

    // A write cut short between creating the new record and deleting the old one leaves
    // an older, lower record beside it: the minimum must stay the highest.
    let admin = keymux_proxy::backend::pkcs11::Pkcs11Backend::open(&token().config(1)).unwrap();
    let session = admin.context().open_rw_session(admin.slot()).unwrap();
    let pin = cryptoki::types::AuthPin::from(token().pin().trim().to_owned());
    let _ = session.login(cryptoki::session::UserType::User, Some(&pin));
    use cryptoki::object::{Attribute, ObjectClass};
    session
        .create_object(&[
            Attribute::Class(ObjectClass::DATA),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Application(b"keymux".to_vec()),
            Attribute::Label(format!("kmx-meta:{key}").into_bytes()),
            Attribute::Value(b"1".to_vec()),
        ])
        .unwrap();
    let listed = proxy.backend.list_keys().unwrap().into_iter().find(|k| k.name == key).unwrap();
    assert_eq!(listed.min_decryption_version, 2, "two records: the highest minimum wins");
    proxy.backend.set_min_decryption_version(&key, 2).unwrap();
    let session_records = session
        .find_objects(&[
            Attribute::Class(ObjectClass::DATA),
            Attribute::Label(format!("kmx-meta:{key}").into_bytes()),
        ])
        .unwrap();
    assert_eq!(session_records.len(), 1, "the next write leaves one record");
}

#[tokio::test]
async fn a_key_made_again_behind_the_proxy_is_found_again_without_losing_sessions() {
    let _turn = one_at_a_time().await;
    let proxy = TestProxy::start_hsm(|_| {}).await;
    let key = unique_key("remade");
    proxy.create_key(&key);
    let client = client_for(&proxy).await;
    for _ in 0..8 {
        client.wrap(&key, b"", &[1; 32]).await.unwrap();
    }
    // Destroy version 1's AES key and make a new one under the same label, as a restore
    // from backup would: every session's cached handle now names nothing.
    let admin = keymux_proxy::backend::pkcs11::Pkcs11Backend::open(&token().config(1)).unwrap();
    let session = admin.context().open_rw_session(admin.slot()).unwrap();
    let pin = cryptoki::types::AuthPin::from(token().pin().trim().to_owned());
    let _ = session.login(cryptoki::session::UserType::User, Some(&pin));
    use cryptoki::object::{Attribute, KeyType, ObjectClass};
    let label = keymux_proxy::backend::pkcs11::labels::version_label(&key, 1).into_bytes();
    let old =
        session.find_objects(&[Attribute::Class(ObjectClass::SECRET_KEY), Attribute::Label(label.clone())]);
    for handle in old.unwrap() {
        session.destroy_object(handle).unwrap();
    }
    let template = [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::ValueLen(32.into()),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
        Attribute::Label(label),
        Attribute::Id(0u64.to_be_bytes().to_vec()),
    ];
    session.generate_key(&cryptoki::mechanism::Mechanism::AesKeyGen, &template).unwrap();
    let lost = || {
        keymux_test_support::metrics::metric(
            &proxy.server.metrics().encode(),
            "keymux_pkcs11_sessions_lost_total",
        )
    };
    let before = lost();
    for _ in 0..8 {
        let blob = client.wrap(&key, b"", &[2; 32]).await.unwrap();
        assert_eq!(client.unwrap(b"", &blob).await.unwrap().expose(), &[2; 32]);
    }
    assert_eq!(lost(), before, "a stale key handle is resolved again, not taken for a lost session");
}

/// Whether the test token offers CKM_AES_GCM (SoftHSM2 does, opencryptoki 3.8 does not).
fn token_offers_aes_gcm() -> bool {
    let admin = Pkcs11Backend::open(&token().config(1)).unwrap();
    admin
        .context()
        .get_mechanism_list(admin.slot())
        .unwrap()
        .contains(&cryptoki::mechanism::MechanismType::AES_GCM)
}

/// The raw AEAD (ENCRYPT/DECRYPT, as the XKS front end uses it) on the token: AES-GCM
/// with the caller's AAD, IV and tag apart; a changed AAD or tag does not verify; a named
/// version is used; a token without CKM_AES_GCM (the CBC+HMAC scheme) answers UNSUPPORTED.
#[tokio::test]
async fn raw_aes_gcm_on_the_token() {
    use keymux_protocol::{Reply, Request, RequestFrame, SecretBytes, Status};
    let _turn = one_at_a_time().await;
    let proxy = TestProxy::start_hsm(|config| {
        config.backend = keymux_proxy::backend::BackendConfig::Pkcs11(token().config(2));
    })
    .await;
    let key = unique_key("raw");
    proxy.create_key(&key);
    let mut raw = proxy.connect().await;
    let encrypt = |version| Request::Encrypt {
        key: key.clone(),
        version,
        aad: b"aad".to_vec(),
        plaintext: SecretBytes::copy_from(&[7; 4096]),
    };
    let first = raw.call(RequestFrame::new(1, encrypt(0))).await.result;
    if !token_offers_aes_gcm() {
        // opencryptoki 3.8's soft token: the proxy seals with CBC+HMAC, which has no raw
        // AEAD to offer.
        assert_eq!(first.map(|_| ()).map_err(|failure| failure.status), Err(Status::Unsupported));
        return;
    }
    let Ok(Reply::Encrypt { version, iv, ciphertext, tag }) = first else {
        panic!("ENCRYPT failed: {first:?}")
    };
    assert_eq!((version, iv.len(), ciphertext.len(), tag.len()), (1, 12, 4096, 16));
    let decrypt = |aad: &[u8], tag: Vec<u8>| Request::Decrypt {
        key: key.clone(),
        version,
        aad: aad.to_vec(),
        iv: iv.clone(),
        ciphertext: ciphertext.clone(),
        tag,
    };
    let Ok(Reply::Decrypt { plaintext }) =
        raw.call(RequestFrame::new(2, decrypt(b"aad", tag.clone()))).await.result
    else {
        panic!("DECRYPT failed")
    };
    assert_eq!(plaintext.expose(), &[7; 4096]);
    let wrong_aad = raw.call(RequestFrame::new(3, decrypt(b"other", tag.clone()))).await;
    assert_eq!(wrong_aad.status(), Status::Integrity);
    let mut bad_tag = tag.clone();
    bad_tag[0] ^= 1;
    assert_eq!(raw.call(RequestFrame::new(4, decrypt(b"aad", bad_tag))).await.status(), Status::Integrity);
    assert_eq!(proxy.backend.rotate_key(&key).unwrap(), 2);
    proxy.server.refresh_keys().unwrap();
    let Ok(Reply::Encrypt { version: named, .. }) = raw.call(RequestFrame::new(5, encrypt(1))).await.result
    else {
        panic!("ENCRYPT under version 1 failed")
    };
    assert_eq!(named, 1, "a named, enabled version is used");
    let Ok(Reply::Encrypt { version: current, .. }) = raw.call(RequestFrame::new(6, encrypt(0))).await.result
    else {
        panic!("ENCRYPT failed")
    };
    assert_eq!(current, 2);
    drop(proxy);

    let cbc = TestProxy::start_hsm(|config| {
        let mut hsm = token().config(1);
        hsm.mechanism = Pkcs11Mechanism::AesCbcHmacSha256;
        config.backend = keymux_proxy::backend::BackendConfig::Pkcs11(hsm);
    })
    .await;
    let mut raw = cbc.connect().await;
    assert_eq!(raw.call(RequestFrame::new(7, encrypt(0))).await.status(), Status::Unsupported);
}
