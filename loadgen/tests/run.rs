//! Short load runs against the scripted test server (a test double, not the proxy), and
//! against an embedded proxy.

use std::time::Duration;

use keymux_client::Status;
use keymux_client::testing::{Action, ScriptedServer, refused_endpoint, toy_keystore};
use keymux_loadgen::embedded::EmbeddedProxy;
use keymux_loadgen::{Driver, Op, Scenario, run};
use keymux_protocol::{Request, RequestFrame};
use keymux_proxy::keys::KeyType;

fn scenario(server: &ScriptedServer, op: Op) -> Scenario {
    let mut scenario = Scenario::new(server.endpoint());
    scenario.connections = 2;
    scenario.pipeline = 4;
    scenario.duration = Duration::from_secs(1);
    scenario.warmup = Duration::from_millis(200);
    scenario.op = op;
    scenario
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_wrap_run_measures_throughput_and_latency() {
    let server = ScriptedServer::builder().start_tcp(toy_keystore).await.unwrap();
    let report = run(scenario(&server, Op::Wrap), Default::default()).await.unwrap();

    assert!(report.ops > 0, "{report}");
    assert!(report.errors.is_empty(), "{report}");
    // Every request issued in the window was answered, and answered OK.
    assert_eq!((report.issued, report.answered), (report.ops, report.ops), "{report}");
    let latency = report.latency_us;
    assert!(latency.p50 > 0 && latency.p50 <= latency.p99 && latency.p99 <= latency.max, "{latency:?}");
    assert_eq!(server.accepted(), 2, "one connection per --connections");
    // Warm-up operations ran but were not counted.
    assert!(server.received() as u64 > report.ops);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unwrap_makes_its_blobs_first_and_cycles_through_them() {
    let server = ScriptedServer::builder().start_tcp(toy_keystore).await.unwrap();
    let mut scenario = scenario(&server, Op::Unwrap);
    scenario.blobs = 20;
    scenario.no_cache = true;
    scenario.warmup = Duration::ZERO;
    scenario.duration = Duration::from_millis(300);
    let report = run(scenario, Default::default()).await.unwrap();
    assert!(report.ops > 0 && report.errors.is_empty(), "{report}");

    let requests = server.requests();
    let (setup, load) = requests.split_at(20);
    assert!(setup.iter().all(|r| matches!(r.request, Request::GenerateDataKey { length: 32, .. })));
    assert!(load.iter().all(|r| matches!(r.request, Request::Unwrap { .. }) && r.bypass_cache));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_counted_by_status() {
    let server = ScriptedServer::builder()
        .start_tcp(|request: &RequestFrame| match request.request {
            Request::GenerateDataKey { .. } => Action::fail(Status::Busy, "queue full", 0),
            _ => toy_keystore(request),
        })
        .await
        .unwrap();
    let mut scenario = scenario(&server, Op::GenerateDataKey);
    scenario.duration = Duration::from_millis(300);
    let report = run(scenario, Default::default()).await.unwrap();
    assert_eq!(report.ops, 0);
    assert!(report.errors["BUSY"] > 0, "{report}");
    assert_eq!(report.errors.len(), 1, "{report}");
    // BUSY is the server's answer: every request issued was answered.
    assert_eq!((report.issued, report.answered), (report.errors["BUSY"], report.errors["BUSY"]), "{report}");
}

#[tokio::test]
async fn an_unreachable_target_fails_the_run() {
    let error = run(Scenario::new(refused_endpoint()), Default::default()).await.unwrap_err();
    assert!(format!("{error:#}").contains("cannot connect"), "{error:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_prints_a_table_and_writes_json() {
    let server = ScriptedServer::builder().start_tcp(toy_keystore).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let json_path = dir.path().join("report.json");
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_keymux-loadgen"));
    command
        .args(["--target", &server.endpoint().to_string()])
        .args(["--connections", "1", "--pipeline", "2", "--duration", "1s", "--warmup", "100ms"])
        .args(["--op", "rewrap", "--blobs", "5", "--json"])
        .arg(&json_path);
    // The scripted server runs on this test's runtime, so wait for the binary elsewhere.
    let output = tokio::task::spawn_blocking(move || command.output()).await.unwrap().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "stdout: {stdout}\nstderr: {}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("ops/s") && stdout.contains("p99.9"), "{stdout}");

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    assert!(json["ops"].as_u64().unwrap() > 0, "{json}");
    assert_eq!((&json["issued"], &json["answered"]), (&json["ops"], &json["ops"]), "{json}");
    assert!(json["open_loop"].is_null(), "a closed-loop run: {json}");
    assert!(json["throughput_ops_per_s"].as_f64().unwrap() > 0.0);
    assert!(json["latency_us"]["p999"].is_u64());
    assert_eq!(json["errors"], serde_json::json!({}));
    assert_eq!(json["config"]["op"], "rewrap");
    assert_eq!(json["config"]["blobs"], 5);
}

/// An embedded proxy (the real one, on the soft keystore), loaded in the open loop with
/// a mix of operations over several Zipf-skewed keys.
#[tokio::test]
async fn open_loop_mix_over_keys_against_an_embedded_proxy() {
    let mut scenario = Scenario::new("tcp://127.0.0.1:1".parse().unwrap());
    scenario.keys = 4;
    scenario.zipf = 1.1;
    let proxy = keymux_loadgen::embedded::EmbeddedProxy::start(&scenario.key_names()).await.unwrap();
    scenario.target = proxy.endpoint();
    scenario.op = Op::Mix;
    scenario.mix = "wrap=2,unwrap=1,generate-data-key=1,rewrap=1".parse().unwrap();
    scenario.blobs = 20;
    scenario.rate = Some(2_000.0);
    scenario.warmup = std::time::Duration::from_millis(200);
    scenario.duration = std::time::Duration::from_secs(1);
    let completed = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let report = run(scenario, std::sync::Arc::clone(&completed)).await.unwrap();
    assert_eq!(report.error_count(), 0, "{report}");
    // 2,000 requests are due in the measured second whatever the proxy's speed (an open
    // loop), every one answered OK, however late.
    assert_eq!((report.issued, report.answered, report.ops), (2_000, 2_000, 2_000), "{report}");
    // Sent on time within 10%: the pacer's thread competes for the CPU with the embedded
    // proxy, a debug build on this test's runtime, and with the other tests.
    let achieved = report.open_loop.expect("the open loop reports its pacing").achieved_rate;
    assert!((1_800.0..=2_200.0).contains(&achieved), "sent {achieved:.0}/s: {report}");
    // The warm-up's requests were answered too, though not measured.
    assert!(completed.load(std::sync::atomic::Ordering::Relaxed) > report.ops);
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(json["config"]["rate"], 2000.0);
    assert_eq!(json["config"]["mix"], "wrap=2,unwrap=1,generate-data-key=1,rewrap=1");

    let dir = tempfile::tempdir().unwrap();
    let (hdr, plot) = (dir.path().join("run.hlog"), dir.path().join("run.svg"));
    keymux_loadgen::output::write_hdr(&report, &hdr).unwrap();
    let log = std::fs::read_to_string(&hdr).unwrap();
    assert!(log.contains("#[MaxValueDivisor: 1000.0]") || log.contains("MaxValueDivisor"), "{log}");
    assert!(log.lines().any(|l| l.starts_with("0.000,")), "one interval from the start: {log}");
    keymux_loadgen::output::write_plot(&report, &plot).unwrap();
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("polyline"), "an SVG line plot");
    let png = dir.path().join("run.png");
    keymux_loadgen::output::write_plot(&report, &png).unwrap();
    let image = std::fs::read(&png).unwrap();
    assert!(image.starts_with(b"\x89PNG\r\n\x1a\n") && image.len() > 5_000, "a real PNG image");
    assert!(keymux_loadgen::output::write_plot(&report, &dir.path().join("run.jpg")).is_err());
    proxy.shutdown().await;
}

/// The raw driver against an embedded proxy: cache-hit unwraps with every request
/// answered, `pipeline` in flight per connection, and errors counted by status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_driver_loads_an_embedded_proxy() {
    let mut scenario = Scenario::new("tcp://127.0.0.1:1".parse().unwrap());
    let proxy = keymux_loadgen::embedded::EmbeddedProxy::start(&scenario.key_names()).await.unwrap();
    scenario.target = proxy.endpoint();
    scenario.driver = Driver::Raw;
    scenario.op = Op::Unwrap;
    scenario.blobs = 10;
    scenario.connections = 3;
    scenario.pipeline = 8;
    scenario.warmup = Duration::from_millis(100);
    scenario.duration = Duration::from_millis(500);
    let report = run(scenario.clone(), Default::default()).await.unwrap();
    assert!(report.ops > 100 && report.errors.is_empty(), "{report}");
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(json["config"]["driver"], "raw");

    // An unknown key is answered UNKNOWN_KEY, request after request.
    scenario.op = Op::Wrap;
    scenario.key = "no-such-key".into();
    let report = run(scenario, Default::default()).await.unwrap();
    assert_eq!(report.ops, 0, "{report}");
    assert!(report.errors.get("UNKNOWN_KEY").is_some_and(|n| *n > 100), "{report}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn raw_driver_refuses_what_it_cannot_do() {
    let mut scenario = Scenario::new("tls://127.0.0.1:1".parse().unwrap());
    scenario.driver = Driver::Raw;
    let error = run(scenario.clone(), Default::default()).await.unwrap_err();
    assert!(error.to_string().contains("tcp:// and unix:// only"), "{error:#}");
    scenario.target = "tcp://127.0.0.1:1".parse().unwrap();
    scenario.rate = Some(100.0);
    let error = run(scenario, Default::default()).await.unwrap_err();
    assert!(error.to_string().contains("closed loop only"), "{error:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_signs_once_per_key_then_verifies_that_signature() {
    let server = ScriptedServer::builder().start_tcp(toy_keystore).await.unwrap();
    let mut scenario = scenario(&server, Op::Verify);
    scenario.keys = 3;
    scenario.warmup = Duration::ZERO;
    scenario.duration = Duration::from_millis(300);
    let report = run(scenario, Default::default()).await.unwrap();
    assert!(report.ops > 0 && report.errors.is_empty(), "{report}");

    let requests = server.requests();
    let (setup, load) = requests.split_at(3);
    let mut signed: Vec<&str> = setup
        .iter()
        .map(|r| match &r.request {
            Request::Sign { key, digest: false, .. } => key.as_str(),
            other => panic!("set-up sent {other:?}"),
        })
        .collect();
    signed.sort_unstable();
    assert_eq!(signed, ["signing-0", "signing-1", "signing-2"]);
    assert!(
        load.iter()
            .all(|r| matches!(&r.request, Request::Verify { version: 1, input, .. } if input.len() == 32))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signature_that_does_not_verify_is_counted_as_an_error() {
    let server = ScriptedServer::builder()
        .start_tcp(|request: &RequestFrame| match request.request {
            Request::Verify { .. } => Action::Reply(keymux_protocol::Reply::Verify { valid: false }),
            _ => toy_keystore(request),
        })
        .await
        .unwrap();
    let mut scenario = scenario(&server, Op::Verify);
    scenario.duration = Duration::from_millis(300);
    let report = run(scenario, Default::default()).await.unwrap();
    assert_eq!(report.ops, 0, "{report}");
    assert!(report.errors["INVALID_SIGNATURE"] > 0, "{report}");
}

/// Sign and verify against an embedded proxy, with the SDK and the raw driver, and in a
/// mix with wraps: two key families of two types, every request answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_and_verify_load_an_embedded_proxy() {
    let mut scenario = Scenario::new("tcp://127.0.0.1:1".parse().unwrap());
    scenario.op = Op::Mix;
    scenario.mix = "wrap=1,sign=1,verify=1".parse().unwrap();
    scenario.keys = 2;
    scenario.sign_key_type = KeyType::EcP256;
    let proxy = EmbeddedProxy::start_with_keys(&scenario.embedded_keys()).await.unwrap();
    scenario.target = proxy.endpoint();
    (scenario.connections, scenario.pipeline) = (2, 4);
    scenario.warmup = Duration::from_millis(100);
    scenario.duration = Duration::from_millis(500);
    for (op, driver) in [
        (Op::Sign, Driver::Sdk),
        (Op::Verify, Driver::Sdk),
        (Op::Sign, Driver::Raw),
        (Op::Verify, Driver::Raw),
        (Op::Mix, Driver::Sdk),
    ] {
        let mut scenario = scenario.clone();
        (scenario.op, scenario.driver) = (op, driver);
        let report = run(scenario, Default::default()).await.unwrap();
        assert!(report.ops > 20 && report.errors.is_empty(), "{op:?} {driver:?}: {report}");
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        assert_eq!(json["config"]["sign_key_type"], "ec-p256");
    }

    // Signing with a wrapping key is the proxy's BAD_REQUEST, counted.
    scenario.op = Op::Sign;
    scenario.sign_key = "default".into();
    scenario.keys = 1;
    let report = run(scenario.clone(), Default::default()).await.unwrap();
    assert_eq!(report.ops, 0, "{report}");
    assert!(report.errors.get("BAD_REQUEST").is_some_and(|n| *n > 0), "{report}");
    // Verify cannot even make its signature, and says so.
    scenario.op = Op::Verify;
    let error = run(scenario, Default::default()).await.unwrap_err();
    assert!(format!("{error:#}").contains("cannot sign with \"default\""), "{error:#}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn the_embedded_default_key_keeps_its_type() {
    let keys = [("default".to_owned(), KeyType::Ed25519)];
    let error = EmbeddedProxy::start_with_keys(&keys).await.err().expect("refused");
    assert!(error.to_string().contains("\"default\" key is aes-256"), "{error:#}");
}
