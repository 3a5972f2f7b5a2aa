//! The `keymux` binary as a newcomer runs it: no arguments but ports, a fresh
//! directory, then SIGTERM.

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

/// Runs `keymux key ...` in `dir` (the development soft keystore), feeding `stdin`.
fn key_command(dir: &std::path::Path, args: &[impl AsRef<std::ffi::OsStr>], stdin: &str) -> (bool, String) {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_keymux"))
        .arg("key")
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .env("KEYMUX_SOFT_PASSPHRASE", "cli-test")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    let text =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

/// A soft keystore config whose versions may be destroyed two seconds after they are
/// disabled.
const SHORT_SAFE_PERIOD: &str = r#"
[server]
allow_anonymous = true
[keys]
refresh_interval = "100ms"
max_staleness = "1s"
destroy_safe_period = "2s"
[backend]
type = "soft"
data_dir = "keymux-data"
passphrase = { env = "KEYMUX_SOFT_PASSPHRASE" }
create_if_missing = true
kdf_memory_kib = 8192
kdf_passes = 1
"#;

#[test]
fn the_key_admin_cli_manages_versions() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("keymux.toml"), SHORT_SAFE_PERIOD).unwrap();
    let with_config = |args: &[&str]| -> Vec<String> {
        args.iter().chain(&["--config", "keymux.toml"]).map(|arg| (*arg).to_owned()).collect()
    };
    let run = |args: &[&str]| key_command(dir.path(), &with_config(args), "");
    let (ok, text) = run(&["create", "payments"]);
    assert!(ok, "{text}");
    assert!(run(&["rotate", "payments"]).1.contains("version 2 is current"));
    assert!(run(&["rotate", "payments"]).1.contains("version 3 is current"));
    let (ok, list) = run(&["list"]);
    assert!(ok && list.contains("payments") && list.contains("current, age"), "{list}");
    assert!(list.lines().filter(|l| l.starts_with("payments")).count() == 3, "{list}");

    assert!(run(&["disable", "payments", "--version", "1"]).0);
    assert!(
        run(&["list"])
            .1
            .lines()
            .any(|l| l.starts_with("payments") && l.contains(" 1 ") && l.contains("disabled"))
    );
    assert!(run(&["enable", "payments", "--version", "1"]).0);
    assert!(run(&["set-min-decryption-version", "payments", "2"]).0);
    assert!(run(&["list"]).1.contains("retired"), "v1 is below the minimum");

    let (ok, text) = run(&["destroy", "payments", "--version", "3", "--yes"]);
    assert!(!ok && text.contains("current"), "the current version is never destroyed: {text}");
    let (ok, text) = run(&["destroy", "payments", "--version", "1", "--yes"]);
    assert!(!ok && text.contains("is enabled: disable it"), "only a disabled version is destroyed: {text}");
    assert!(run(&["disable", "payments", "--version", "1"]).0);
    assert!(run(&["disable", "payments", "--version", "2"]).0);
    let (ok, text) = run(&["destroy", "payments", "--version", "1", "--yes"]);
    assert!(!ok && text.contains("keys.destroy_safe_period"), "not before the safe period: {text}");
    std::thread::sleep(std::time::Duration::from_millis(3100));
    let confirm = |answer: &str| {
        key_command(dir.path(), &with_config(&["destroy", "payments", "--version", "1"]), answer)
    };
    let (ok, text) = confirm("not-the-name\n");
    assert!(!ok && text.contains("not confirmed"), "{text}");
    let (ok, text) = confirm("payments\n");
    assert!(ok, "typing the key name confirms: {text}");
    let (ok, text) = run(&["destroy", "payments", "--version", "2", "--yes"]);
    assert!(ok, "{text}");
    let list = run(&["list"]).1;
    assert_eq!(list.lines().filter(|l| l.starts_with("payments")).count(), 1, "{list}");
    let (ok, text) = run(&["rotate", "nope"]);
    assert!(!ok && text.contains("unknown key"), "{text}");
}
