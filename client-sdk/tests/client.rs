//! The client end to end against the scripted test server: pipelining, limits,
//! deadlines, retries, status mapping, reconnects, failover and transports.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keymux_client::testing::{Action, Gate, ScriptedServer, refused_endpoint, toy_keystore};
use keymux_client::{CallOptions, Client, Error, Status};
use keymux_protocol::{Failure, Reply, Request, RequestFrame};
use tokio::task::JoinSet;

use common::config;

const CALLS: u64 = 1_500;

/// Waits until `condition` holds, checking every 5 ms, and panics naming `what` after
/// `timeout`. (The proxy's tests have the same in `keymux-test-support`, which these
/// tests do not depend on: they need no proxy.)
async fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < timeout, "waited {timeout:?} for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_calls_on_one_connection_are_matched_out_of_order() {
    // No answer leaves before every request has arrived; then later calls are answered
    // sooner, so answers return in roughly reverse order.
    let gate = Gate::new();
    let arrived = Arc::new(AtomicU64::new(0));
    let server = ScriptedServer::builder()
        .start_tcp(move |request: &RequestFrame| match &request.request {
            Request::Wrap { plaintext, .. } => {
                if arrived.fetch_add(1, Ordering::SeqCst) + 1 == CALLS {
                    gate.open();
                }
                let index = u64::from_be_bytes(plaintext.expose().try_into().unwrap());
                let reply = Action::Reply(Reply::Wrap { blob: plaintext.expose().to_vec() });
                Action::when(&gate, Action::after(Duration::from_micros((CALLS - index) * 20), reply))
            }
            _ => Action::Ignore,
        })
        .await
        .unwrap();
    let mut config = config(vec![server.endpoint()]);
    config.connections = 1;
    let client = Client::connect(config).await.unwrap();

    let completed = Arc::new(Mutex::new(Vec::new()));
    let mut calls = JoinSet::new();
    for index in 0..CALLS {
        let (client, completed) = (client.clone(), Arc::clone(&completed));
        calls.spawn(async move {
            let blob = client.wrap("k", b"", &index.to_be_bytes()).await.unwrap();
            assert_eq!(blob, index.to_be_bytes(), "call {index} got another call's answer");
            completed.lock().unwrap().push(index);
        });
    }
    while let Some(joined) = calls.join_next().await {
        joined.unwrap();
    }

    assert_eq!(server.accepted(), 1, "all calls share one connection");
    assert_eq!(server.received(), CALLS as usize);
    assert_eq!(server.peak_in_flight(), CALLS as usize, "every call was in flight at once");
    // Timers tick in milliseconds, so answers within one tick come in any order; across
    // the 30 ms spread the high indexes must finish first.
    let completed = completed.lock().unwrap();
    let mean = |indexes: &[u64]| indexes.iter().sum::<u64>() / indexes.len() as u64;
    let (first, last) = (mean(&completed[..300]), mean(&completed[completed.len() - 300..]));
    assert!(first > last + 500, "answers came back in call order: first {first}, last {last}");
}

#[tokio::test]
async fn in_flight_calls_are_capped_at_the_servers_max_in_flight() {
    let server = ScriptedServer::builder()
        .max_in_flight(8)
        .start_tcp(|_: &RequestFrame| Action::after(Duration::from_millis(2), Action::Reply(Reply::Pong)))
        .await
        .unwrap();
    let mut config = config(vec![server.endpoint()]);
    config.connections = 1;
    let client = Client::connect(config).await.unwrap();
    assert_eq!(client.server_info().max_in_flight, 8);

    let mut calls = JoinSet::new();
    for _ in 0..200 {
        let client = client.clone();
        calls.spawn(async move { client.ping().await });
    }
    while let Some(joined) = calls.join_next().await {
        joined.unwrap().unwrap();
    }
    assert_eq!(server.received(), 200);
    // 200 callers at once: the cap is reached, and never passed.
    assert_eq!(server.peak_in_flight(), 8, "peak in flight");
}

#[tokio::test]
async fn the_remaining_deadline_is_sent_on_the_wire() {
    let server = ScriptedServer::builder().start_tcp(toy_keystore).await.unwrap();
    let client = Client::connect(config(vec![server.endpoint()])).await.unwrap();
    // What is left of the deadline when the request goes out: the whole of it, less the
    // time the call took until then (at most the whole call), rounded down to a ms.
    let remaining = |deadline: Duration, took: Duration| {
        (deadline.saturating_sub(took).as_millis() as u32).saturating_sub(1)..=deadline.as_millis() as u32
    };
    let started = Instant::now();
    client.ping_with(&CallOptions::new().with_timeout(Duration::from_millis(1500))).await.unwrap();
    let took = started.elapsed();
    let started = Instant::now();
    client.ping().await.unwrap();
    let default_took = started.elapsed();

    let requests = server.requests();
    let sent = requests[0].timeout_ms.expect("every call carries its deadline");
    let expected = remaining(Duration::from_millis(1500), took);
    assert!(expected.contains(&sent), "timeout_ms {sent}, not in {expected:?}");
    let sent = requests[1].timeout_ms.unwrap();
    let expected = remaining(Duration::from_secs(5), default_took);
    assert!(expected.contains(&sent), "default deadline: timeout_ms {sent}, not in {expected:?}");
}

#[tokio::test]
async fn bypass_cache_is_sent_on_unwrap_only() {
    let server = ScriptedServer::builder().start_tcp(toy_keystore).await.unwrap();
    let client = Client::connect(config(vec![server.endpoint()])).await.unwrap();
    let bypass = CallOptions::new().with_bypass_cache(true);
    let blob = client.wrap_with("k", b"ctx", &[9; 32], &bypass).await.unwrap();
    let key = client.unwrap_with(b"ctx", &blob, &bypass).await.unwrap();
    assert_eq!(key.expose(), &[9; 32]);
    client.unwrap(b"ctx", &blob).await.unwrap();

    let flags: Vec<bool> = server.requests().iter().map(|request| request.bypass_cache).collect();
    assert_eq!(flags, [false, true, false]);
}

#[tokio::test]
async fn busy_is_retried_no_sooner_than_retry_after_then_succeeds() {
    let attempts = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&attempts);
    let server = ScriptedServer::builder()
        .start_tcp(move |_: &RequestFrame| match seen.fetch_add(1, Ordering::SeqCst) {
            0 => Action::fail(Status::Busy, "queue full", 200),
            _ => Action::Reply(Reply::Pong),
        })
        .await
        .unwrap();
    let client = Client::connect(config(vec![server.endpoint()])).await.unwrap();

    let started = Instant::now();
    client.ping().await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(200), "retried after {:?}", started.elapsed());
    assert_eq!(server.received(), 2);
}

#[tokio::test]
async fn no_retry_runs_past_the_deadline() {
    let server = ScriptedServer::builder()
        .start_tcp(|_: &RequestFrame| Action::fail(Status::Busy, "queue full", 1_000))
        .await
        .unwrap();
    let client = Client::connect(config(vec![server.endpoint()])).await.unwrap();

    let started = Instant::now();
    let error =
        client.ping_with(&CallOptions::new().with_timeout(Duration::from_millis(300))).await.unwrap_err();
    assert!(
        matches!(error, Error::Busy { retry_after, .. } if retry_after == Duration::from_secs(1)),
        "{error:?}"
    );
    assert!(started.elapsed() < Duration::from_millis(300), "gave up after {:?}", started.elapsed());
    assert_eq!(server.received(), 1, "a retry after 1 s would pass the 300 ms deadline");
}

#[tokio::test]
async fn a_silent_proxy_fails_the_call_at_its_deadline() {
    // The first request is never answered, the next ones are.
    let first = AtomicBool::new(true);
    let server = ScriptedServer::builder()
        .start_tcp(move |_: &RequestFrame| match first.swap(false, Ordering::SeqCst) {
            true => Action::Ignore,
            false => Action::Reply(Reply::Pong),
        })
        .await
        .unwrap();
    let mut config = config(vec![server.endpoint()]);
    config.connections = 1;
    let client = Client::connect(config).await.unwrap();

    let started = Instant::now();
    let error =
        client.ping_with(&CallOptions::new().with_timeout(Duration::from_millis(100))).await.unwrap_err();
    let waited = started.elapsed();
    assert!(matches!(error, Error::DeadlineExceeded), "{error:?}");
    // tokio's timers fire within a millisecond of their deadline; the rest is scheduling,
    // for which a loaded 2-core runner gets 100 ms.
    assert!(
        waited >= Duration::from_millis(100) && waited < Duration::from_millis(200),
        "waited {waited:?} for a 100 ms deadline"
    );
    // The connection is still good for the next call.
    client.ping().await.unwrap();
    assert_eq!((server.accepted(), server.received()), (1, 2), "the next call went on the same connection");
}

#[tokio::test]
async fn a_server_timeout_is_retried_while_time_is_left() {
    let attempts = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&attempts);
    let server = ScriptedServer::builder()
        .start_tcp(move |_: &RequestFrame| match seen.fetch_add(1, Ordering::SeqCst) {
            0 => Action::fail(Status::Timeout, "deadline passed in queue", 0),
            _ => Action::Reply(Reply::Pong),
        })
        .await
        .unwrap();
    let client = Client::connect(config(vec![server.endpoint()])).await.unwrap();
    client.ping().await.unwrap();
    assert_eq!(server.received(), 2);
}

#[tokio::test]
async fn retries_stop_after_max_retries() {
    let server = ScriptedServer::builder()
        .start_tcp(|_: &RequestFrame| Action::fail(Status::BackendUnavailable, "hsm down", 0))
        .await
        .unwrap();
    let mut config = config(vec![server.endpoint()]);
    config.max_retries = 2;
    let client = Client::connect(config).await.unwrap();
    let error = client.ping().await.unwrap_err();
    assert!(matches!(error, Error::BackendUnavailable { .. }), "{error:?}");
    assert_eq!(server.received(), 3, "one attempt and two retries");
}

#[tokio::test]
async fn every_status_maps_to_its_error_variant() {
    // The key name picks the status: "status-6" is answered BUSY.
    let server = ScriptedServer::builder()
        .start_tcp(|request: &RequestFrame| match &request.request {
            Request::Wrap { key, .. } => {
                let code: u16 = key.strip_prefix("status-").unwrap().parse().unwrap();
                let status = Status::from_u16(code).unwrap();
                Action::Fail(Failure::retry_after(status, format!("scripted {status}"), 7))
            }
            _ => Action::Ignore,
        })
        .await
        .unwrap();
    let mut config = config(vec![server.endpoint()]);
    config.max_retries = 0;
    let client = Client::connect(config).await.unwrap();

    type IsVariant = fn(&Error) -> bool;
    let cases: [(Status, IsVariant); 10] = [
        (Status::BadRequest, |e| matches!(e, Error::BadRequest { .. })),
        (Status::UnknownKey, |e| matches!(e, Error::UnknownKey { .. })),
        (Status::Forbidden, |e| matches!(e, Error::Forbidden { .. })),
        (Status::Integrity, |e| matches!(e, Error::Integrity { .. })),
        (Status::KeyDisabled, |e| matches!(e, Error::KeyDisabled { .. })),
        (Status::Busy, |e| matches!(e, Error::Busy { .. })),
        (Status::BackendUnavailable, |e| matches!(e, Error::BackendUnavailable { .. })),
        (Status::Timeout, |e| matches!(e, Error::Timeout { .. })),
        (Status::Unsupported, |e| matches!(e, Error::Unsupported { .. })),
        (Status::Internal, |e| matches!(e, Error::Internal { .. })),
    ];
    for (status, is_variant) in cases {
        let key = format!("status-{}", status as u16);
        let error = client.wrap(&key, b"", &[0; 32]).await.unwrap_err();
        assert!(is_variant(&error), "{status} became {error:?}");
        assert_eq!(error.status(), Some(status));
        assert_eq!(error.server_message(), Some(format!("scripted {status}").as_str()));
        assert_eq!(error.is_retryable(), status.is_retryable());
        let retry_after = status.is_retryable().then_some(Duration::from_millis(7));
        assert_eq!(error.retry_after(), retry_after, "{status}");
    }
}

#[tokio::test]
async fn connection_loss_fails_pending_calls_and_the_next_call_reconnects() {
    let answer = Arc::new(AtomicBool::new(false));
    let answering = Arc::clone(&answer);
    let server = ScriptedServer::builder()
        .start_tcp(move |_: &RequestFrame| match answering.load(Ordering::SeqCst) {
            true => Action::Reply(Reply::Pong),
            false => Action::Ignore,
        })
        .await
        .unwrap();
    let mut config = config(vec![server.endpoint()]);
    config.connections = 1;
    config.max_retries = 0;
    let client = Client::connect(config).await.unwrap();

    let mut pending = JoinSet::new();
    for _ in 0..10 {
        let client = client.clone();
        pending.spawn(async move { client.ping().await });
    }
    wait_until("the ten pings to arrive", Duration::from_secs(5), || server.received() == 10).await;
    server.close_connections();
    while let Some(joined) = pending.join_next().await {
        let error = joined.unwrap().unwrap_err();
        assert!(matches!(error, Error::ConnectionClosed), "{error:?}");
    }

    answer.store(true, Ordering::SeqCst);
    client.ping().await.unwrap();
    assert_eq!(server.accepted(), 2, "the next call opened a new connection");
}

#[tokio::test]
async fn a_lost_connection_is_retried_on_a_new_one() {
    let attempts = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&attempts);
    let server = ScriptedServer::builder()
        .start_tcp(move |_: &RequestFrame| match seen.fetch_add(1, Ordering::SeqCst) {
            0 => Action::Close,
            _ => Action::Reply(Reply::Pong),
        })
        .await
        .unwrap();
    let mut config = config(vec![server.endpoint()]);
    config.connections = 1;
    let client = Client::connect(config).await.unwrap();
    client.ping().await.unwrap();
    assert_eq!(server.accepted(), 2);
    assert_eq!(server.received(), 2);
}

#[tokio::test]
async fn fails_over_to_the_next_endpoint_when_one_refuses() {
    let server = ScriptedServer::builder().start_tcp(toy_keystore).await.unwrap();
    let client = Client::connect(config(vec![refused_endpoint(), server.endpoint()])).await.unwrap();
    for _ in 0..4 {
        client.ping().await.unwrap();
    }
    // Both pooled connections went to the endpoint that answers.
    assert_eq!(server.accepted(), 2);
    assert_eq!(server.received(), 4);
}

#[tokio::test]
async fn fails_over_past_an_endpoint_that_does_not_speak_the_protocol() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let not_keymux = keymux_client::Endpoint::from(listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            use tokio::io::AsyncWriteExt;
            let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
        }
    });
    let server = ScriptedServer::builder().start_tcp(toy_keystore).await.unwrap();
    let client = Client::connect(config(vec![not_keymux, server.endpoint()])).await.unwrap();
    client.ping().await.unwrap();
    // The pool's first connection failed over to the scripted server and carried the
    // ping; the second is made on first use.
    assert_eq!((server.accepted(), server.received()), (1, 1));
}

#[tokio::test]
async fn connections_are_spread_over_endpoints() {
    let first = ScriptedServer::builder().start_tcp(toy_keystore).await.unwrap();
    let second = ScriptedServer::builder().start_tcp(toy_keystore).await.unwrap();
    let mut config = config(vec![first.endpoint(), second.endpoint()]);
    config.connections = 4;
    let client = Client::connect(config).await.unwrap();
    for _ in 0..8 {
        client.ping().await.unwrap();
    }
    assert_eq!((first.accepted(), second.accepted()), (2, 2));
}

#[tokio::test]
async fn connect_fails_when_every_endpoint_refuses() {
    let error = Client::connect(config(vec![refused_endpoint(), refused_endpoint()])).await.unwrap_err();
    assert!(matches!(error, Error::Connect { .. }), "{error:?}");
    assert!(error.is_retryable());
}

#[tokio::test]
async fn connect_to_rejects_a_malformed_endpoint() {
    let error = Client::connect_to("localhost:7450").await.unwrap_err();
    assert!(matches!(error, Error::InvalidEndpoint(_)), "{error:?}");
    let error = Client::connect(config(vec![])).await.unwrap_err();
    assert!(matches!(error, Error::Config(ref config) if config.key == "endpoints"), "{error:?}");
}

#[tokio::test]
async fn operations_round_trip_and_learn_server_info() {
    let server = ScriptedServer::builder().max_in_flight(77).start_tcp(toy_keystore).await.unwrap();
    let client = Client::connect_to(&server.endpoint().to_string()).await.unwrap();
    let info = client.server_info();
    assert_eq!((info.max_in_flight, info.server_version.as_str()), (77, "scripted-test-server"));

    let blob = client.wrap("payments", b"ctx", b"0123456789abcdef").await.unwrap();
    assert_eq!(client.unwrap(b"ctx", &blob).await.unwrap().expose(), b"0123456789abcdef");
    let data_key = client.generate_data_key("payments", b"ctx", 24).await.unwrap();
    assert_eq!(data_key.plaintext.len(), 24);
    let rewrapped = client.rewrap(b"ctx", &data_key.blob).await.unwrap();
    assert_ne!(rewrapped, data_key.blob);
    let unwrapped = client.unwrap(b"ctx", &rewrapped).await.unwrap();
    assert_eq!(unwrapped.expose(), data_key.plaintext.expose());
    assert!(!format!("{data_key:?}").contains(&format!("{:?}", data_key.plaintext.expose())));

    let error = client.wrap("missing", b"", b"k").await.unwrap_err();
    assert!(matches!(error, Error::UnknownKey { .. }), "{error:?}");
    let error = client.wrap("", b"", b"k").await.unwrap_err();
    assert!(matches!(error, Error::InvalidRequest(_)), "{error:?}");
}

#[cfg(unix)]
#[tokio::test]
async fn works_over_a_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keymux.sock");
    let server = ScriptedServer::builder().start_unix(&path, toy_keystore).await.unwrap();
    let endpoint = server.endpoint();
    assert_eq!(endpoint.to_string(), format!("unix://{}", path.display()));

    let client = Client::connect_to(&endpoint.to_string()).await.unwrap();
    let blob = client.wrap("k", b"ctx", &[1; 32]).await.unwrap();
    assert_eq!(client.unwrap(b"ctx", &blob).await.unwrap().expose(), &[1; 32]);
    // Two calls, round-robin over the two pooled connections.
    assert_eq!(server.accepted(), 2);
}

#[test]
fn client_is_shareable_across_tasks() {
    fn assert_send_sync<T: Send + Sync + Clone + 'static>() {}
    assert_send_sync::<Client>();
}
