//! The front ends' way in: requests take the binary protocol's path (ACL, queues,
//! batching), and a call of many submits them all before awaiting any.

use keymux_protocol::{Reply, Request, Status};
use keymux_proxy::access::identity::Identity;
use keymux_proxy::frontend::CallOptions;
use keymux_test_support::metrics::metric;
use keymux_test_support::proxy::TestProxy;

fn wrap(key: &str, plaintext: &[u8]) -> Request {
    Request::Wrap { key: key.into(), aad: b"ctx".to_vec(), plaintext: plaintext.to_vec().into() }
}

#[tokio::test]
async fn many_calls_batch_on_the_key_queue_and_answer_in_order() {
    let proxy = TestProxy::start(|config| config.batch.executor_threads = 1).await;
    let door = proxy.server.front_door();
    let peer = door.peer(&Identity::anonymous(), "test".into()).unwrap();
    proxy.gate.close();
    let requests = (0..64u8).map(|i| wrap("default", &[i; 32])).chain([wrap("absent", &[0; 32])]).collect();
    let calls = door.call_many(&peer, requests, CallOptions::default());
    let gate = proxy.gate.clone();
    let opener = tokio::spawn(async move {
        gate.wait_for_blocked(1).await;
        gate.open();
    });
    let answers = calls.await;
    opener.await.unwrap();
    assert_eq!(answers.len(), 65);
    let page = proxy.scrape().await;
    let (batches, jobs) = (metric(&page, "keymux_batch_size_count"), metric(&page, "keymux_batch_size_sum"));
    assert_eq!(jobs, 64.0, "each item is its own job");
    assert!(batches < jobs, "64 items submitted together went out in {batches} batches");
    let failure = answers[64].as_ref().unwrap_err();
    assert_eq!(failure.status, Status::UnknownKey, "one failed item does not fail the others");
    for (i, answer) in answers[..64].iter().enumerate() {
        let Ok(Reply::Wrap { blob }) = answer else { panic!("item {i}: {answer:?}") };
        let unwrap = Request::Unwrap { aad: b"ctx".to_vec(), blob: blob.clone() };
        let Ok(Reply::Unwrap { plaintext }) = door.call(&peer, unwrap, CallOptions::default()).await else {
            panic!("item {i} does not unwrap")
        };
        assert_eq!(plaintext.expose(), &[i as u8; 32], "item {i} answered in order");
    }
}
