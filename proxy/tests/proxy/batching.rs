//! Batches form by themselves under concurrent load.

use futures_util::{SinkExt, StreamExt};
use keymux_protocol::{RequestFrame, Status};
use keymux_test_support::metrics::metric;
use keymux_test_support::proxy::TestProxy;
use keymux_test_support::raw::wrap_request;

#[tokio::test]
async fn concurrent_callers_are_served_in_batches() {
    let proxy = TestProxy::start(|config| config.batch.executor_threads = 1).await;
    let mut tasks = Vec::new();
    for connection in 0..8u64 {
        let client = proxy.connect().await;
        tasks.push(tokio::spawn(async move {
            let (mut writer, mut reader) = (client.writer, client.reader);
            for round in 0..20u64 {
                for slot in 0..16u64 {
                    let id = (connection << 32) | (round << 8) | slot;
                    writer
                        .feed(&RequestFrame::new(id, wrap_request("default", b"", &[1; 32])))
                        .await
                        .unwrap();
                }
                writer.flush().await.unwrap();
                for _ in 0..16 {
                    assert_eq!(reader.next().await.unwrap().unwrap().status(), Status::Ok);
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let page = proxy.scrape().await;
    let (count, sum) = (metric(&page, "keymux_batch_size_count"), metric(&page, "keymux_batch_size_sum"));
    assert_eq!(sum, 8.0 * 20.0 * 16.0, "every wrap went through a batch");
    // (Fewer batches than jobs means some batch held more than one: a separate check of
    // the histogram's le="1" bucket could not fail once this one passes.)
    assert!(count < sum, "128 concurrent callers: mean batch size {:.1} should exceed 1", sum / count);
}
