//! The `keymux` binary as a newcomer runs it: no arguments but ports, a fresh
//! directory, then SIGTERM.
#![allow(missing_docs)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use keymux_protocol::{ClientCodec, Limits, Reply, Request, RequestFrame, SecretBytes};

#[tokio::test]
async fn first_run_creates_the_keystore_serves_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_keymux"))
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .current_dir(dir.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut banner = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    banner.read_line(&mut first).unwrap();
    let addr = first.trim().rsplit("tcp://").next().unwrap().to_owned();
    let mut rest = String::new();
    for _ in 0..3 {
        banner.read_line(&mut rest).unwrap();
    }
    assert!(rest.contains("development only"), "the banner warns about the soft keystore: {rest}");
    assert!(dir.path().join("keymux-data/keystore.kmx").exists());

    let stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut framed = tokio_util::codec::Framed::new(stream, ClientCodec::new(Limits::default()));
    let wrap =
        Request::Wrap { key: "default".into(), aad: vec![], plaintext: SecretBytes::copy_from(&[1; 32]) };
    framed.send(&RequestFrame::new(1, wrap)).await.unwrap();
    let response = framed.next().await.unwrap().unwrap();
    assert!(matches!(response.result, Ok(Reply::Wrap { .. })), "{response:?}");

    let term = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(term.success());
    let status = wait_with_timeout(&mut child, Duration::from_secs(10));
    assert!(status.success(), "keymux exits 0 after SIGTERM: {status:?}");
}

fn wait_with_timeout(child: &mut std::process::Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("keymux did not stop after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
