//! Bad input gets a clear status, or closes only the offending connection.

use keymux_protocol::{Opcode, Status};
use keymux_test_support::proxy::TestProxy;
use keymux_test_support::raw::raw_frame;

#[tokio::test]
async fn integrity_failures_and_unknown_keys() {
    let proxy = TestProxy::start(|_| {}).await;
    let mut client = proxy.connect().await;
    let blob = client.wrap("default", b"right", &[9; 32]).await.unwrap();
    assert_eq!(client.unwrap(b"wrong", &blob).await, Err(Status::Integrity));

    for index in [0, 5, blob.len() / 2, blob.len() - 1] {
        let mut tampered = blob.clone();
        tampered[index] ^= 0x01;
        let status = client.unwrap(b"right", &tampered).await.unwrap_err();
        assert!(matches!(status, Status::Integrity | Status::UnknownKey), "byte {index}: {status:?}");
    }
    assert_eq!(client.unwrap(b"right", b"not a blob").await, Err(Status::Integrity));
    assert_eq!(client.wrap("no-such-key", b"", &[1; 32]).await, Err(Status::UnknownKey));
}

#[tokio::test]
async fn malformed_fields_get_bad_request_and_the_connection_stays() {
    let proxy = TestProxy::start(|_| {}).await;
    let mut client = proxy.connect().await;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated aad", raw_frame(1, Opcode::Unwrap as u8, 0, 1, &[0x00, 0x10, 1, 2])),
        ("trailing bytes", raw_frame(1, Opcode::Ping as u8, 0, 2, &[0xff])),
        ("invalid utf-8 key", raw_frame(1, Opcode::Wrap as u8, 0, 3, &[1, 0xff, 0, 0, 0, 1, 9])),
        ("empty key", raw_frame(1, Opcode::Wrap as u8, 0, 4, &[0, 0, 0, 0, 1, 9])),
        ("unknown flag", raw_frame(1, Opcode::Ping as u8, 0x8000, 5, &[])),
        ("bypass on wrap", raw_frame(1, Opcode::Wrap as u8, 1, 6, &[1, b'k', 0, 0, 0, 1, 9])),
        ("zero-length data key", raw_frame(1, Opcode::GenerateDataKey as u8, 0, 7, &[1, b'k', 0, 0, 0, 0])),
        ("deadline flag without deadline", raw_frame(1, Opcode::Ping as u8, 2, 8, &[0, 0])),
    ];
    for (name, bytes) in cases {
        client.send_bytes(&bytes).await;
        let response = client.recv().await.unwrap_or_else(|| panic!("{name}: connection closed"));
        assert_eq!(response.status(), Status::BadRequest, "{name}");
        client.ping().await;
    }
    for (id, opcode) in [(9, 0x55), (10, 0x82)] {
        client.send_bytes(&raw_frame(1, opcode, 0, id, &[])).await;
        let response = client.recv().await.unwrap();
        assert_eq!((response.request_id, response.status()), (id, Status::Unsupported), "opcode {opcode:#x}");
        client.ping().await;
    }
}

#[tokio::test]
async fn frame_faults_close_only_that_connection() {
    let proxy = TestProxy::start(|_| {}).await;
    let mut bystander = proxy.connect().await;

    let mut oversize = proxy.connect().await;
    oversize.send_bytes(&(1u32 << 30).to_be_bytes()).await;
    assert!(oversize.recv().await.is_none(), "an oversize length closes the connection at once");

    let mut short = proxy.connect().await;
    short.send_bytes(&[0, 0, 0, 3, 1, 2, 3]).await;
    assert!(short.recv().await.is_none());

    let mut bad_version = proxy.connect().await;
    bad_version.send_bytes(&raw_frame(9, Opcode::Ping as u8, 0, 42, &[])).await;
    let response = bad_version.recv().await.expect("a BAD_REQUEST before closing");
    assert_eq!((response.request_id, response.status()), (42, Status::BadRequest));
    assert!(bad_version.recv().await.is_none());

    bystander.ping().await;
    assert!(bystander.wrap("default", b"", &[1; 32]).await.is_ok());
}

#[tokio::test]
async fn garbage_on_hundreds_of_connections_leaves_the_proxy_serving() {
    let proxy = TestProxy::start(|_| {}).await;
    let addr = proxy.addr();
    let mut tasks = Vec::new();
    for seed in 0..300u64 {
        tasks.push(tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            // A deterministic xorshift stream of garbage, some of it frame-shaped.
            let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            let mut garbage = Vec::with_capacity(4096);
            for _ in 0..(256 + seed as usize * 13 % 4096) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                garbage.push(state as u8);
            }
            if seed % 3 == 0 {
                garbage[..4].copy_from_slice(&20u32.to_be_bytes());
                garbage[4] = 1;
            }
            let _ = stream.write_all(&garbage).await;
            let mut sink = Vec::new();
            let _ =
                tokio::time::timeout(std::time::Duration::from_secs(5), stream.read_to_end(&mut sink)).await;
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let mut client = proxy.connect().await;
    let blob = client.wrap("default", b"after", &[5; 32]).await.unwrap();
    assert_eq!(client.unwrap(b"after", &blob).await.unwrap(), vec![5; 32]);
}
