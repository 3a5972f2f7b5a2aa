//! PKCS#11 recovery: every session on the token is closed behind the proxy's back in
//! the middle of load. Its own test binary, so its own process: `C_CloseAllSessions`
//! reaches every session of the process on that slot, and SoftHSM2 also disturbs other
//! slots' handles, so no other test may share the module with it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use keymux_test_support::metrics::metric;
use keymux_test_support::pkcs11::{one_at_a_time, token};
use keymux_test_support::proxy::{TestProxy, client_for};
use keymux_test_support::unique_key;

/// A proxy on the test token, with the cache off and the key refresh left to the test,
/// and a fresh key named after `prefix` that it sees.
async fn proxy_with_key(prefix: &str) -> (TestProxy, String) {
    let proxy = TestProxy::start_hsm(|config| {
        config.cache.enabled = false;
        config.keys.refresh_interval = Duration::from_secs(3600);
    })
    .await;
    let key = unique_key(prefix);
    proxy.create_key(&key);
    (proxy, key)
}

/// Closes every session this process has on the test token, as a token reset would.
fn close_all_sessions_behind_the_proxys_back(slot: u64) {
    keymux_test_support::pkcs11::close_all_sessions(&token().module, slot);
}

#[tokio::test]
async fn sessions_closed_mid_load_recover_by_themselves() {
    let _turn = one_at_a_time().await;
    let (proxy, key) = proxy_with_key("recover").await;
    let client = Arc::new(client_for(&proxy).await);
    let blob = client.wrap(&key, b"r", &[3; 32]).await.unwrap();
    let slot = token_slot(&proxy);

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, retryable) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut load = Vec::new();
    for worker in 0..8u64 {
        let (client, blob, key) = (Arc::clone(&client), blob.clone(), key.clone());
        let (stop, ok, retryable) = (Arc::clone(&stop), Arc::clone(&ok), Arc::clone(&retryable));
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let outcome = if worker % 2 == 0 {
                    client.unwrap(b"r", &blob).await.map(|dek| assert_eq!(dek.expose(), &[3; 32]))
                } else {
                    client.wrap(&key, b"w", &[4; 32]).await.map(drop)
                };
                match outcome {
                    Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(error) if error.is_retryable() => retryable.fetch_add(1, Ordering::Relaxed),
                    Err(error) => panic!("a request failed with a non-retryable error: {error}"),
                };
            }
        }));
    }
    let session_opens = || metric(&proxy.server.metrics().encode(), "keymux_pkcs11_session_opens_total");
    let opens_before = session_opens();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        // SoftHSM2 frees a session that C_CloseAllSessions closes even while another
        // thread is inside a call on it (a real HSM fences this), so no executor may be
        // inside a batch at the instant of the reset. Requests keep
        // arriving and queueing meanwhile; the next batches find their sessions gone.
        proxy.gate.close();
        proxy.gate.wait_until_quiet().await;
        close_all_sessions_behind_the_proxys_back(slot);
        proxy.gate.open();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = ok.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    assert!(ok.load(Ordering::Relaxed) > before, "service returned by itself");
    assert!(session_opens() >= opens_before + 2.0, "sessions were reopened");
    assert_eq!(client.unwrap(b"r", &blob).await.unwrap().expose(), &[3; 32]);
    eprintln!("recovery: {} ok, {} retryable", ok.load(Ordering::Relaxed), retryable.load(Ordering::Relaxed));
}

fn token_slot(_proxy: &TestProxy) -> u64 {
    keymux_proxy::backend::pkcs11::Pkcs11Backend::open(&token().config(1)).unwrap().slot().id()
}

/// Changes the user PIN from `old` to `new` through a new session of this process.
fn change_pin(context: &cryptoki::context::Pkcs11, slot: cryptoki::slot::Slot, old: &str, new: &str) {
    use cryptoki::session::UserType;
    use cryptoki::types::AuthPin;
    let session = context.open_rw_session(slot).unwrap();
    match session.login(UserType::User, Some(&AuthPin::from(old))) {
        Ok(()) | Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::UserAlreadyLoggedIn, _)) => {}
        Err(error) => panic!("login with the old PIN: {error}"),
    }
    session.set_pin(&AuthPin::from(old), &AuthPin::from(new)).unwrap();
}

/// The token stays unavailable (its PIN no longer logs in) after every session was
/// closed: requests fail fast with BACKEND_UNAVAILABLE while the executors keep probing,
/// and service returns by itself once the PIN works again.
#[tokio::test]
async fn an_unavailable_token_fails_fast_and_service_returns_by_itself() {
    let _turn = one_at_a_time().await;
    let (proxy, key) = proxy_with_key("unavailable").await;
    let client = client_for(&proxy).await;
    client.wrap(&key, b"", &[1; 32]).await.unwrap();
    let admin = keymux_proxy::backend::pkcs11::Pkcs11Backend::open(&token().config(1)).unwrap();
    let (context, slot) = (admin.context().clone(), admin.slot());

    let (pin, other) = (token().pin(), "87651234".to_owned());
    change_pin(&context, slot, &pin, &other);
    close_all_sessions_behind_the_proxys_back(slot.id());
    for _ in 0..3 {
        let started = std::time::Instant::now();
        let error = client.wrap(&key, b"", &[1; 32]).await.unwrap_err();
        assert!(matches!(error, keymux_client::Error::BackendUnavailable { .. }), "{error}");
        assert!(started.elapsed() < Duration::from_millis(500), "fails fast, well under the deadline");
    }

    change_pin(&context, slot, &other, &pin);
    close_all_sessions_behind_the_proxys_back(slot.id());
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match client.wrap(&key, b"", &[1; 32]).await {
            Ok(_) => break,
            Err(error) if error.is_retryable() && std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(error) => panic!("service did not return: {error}"),
        }
    }
}
