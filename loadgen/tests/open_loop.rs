//! The open loop against a scripted server (a test double, not the proxy) that stalls
//! for a known time: latencies run from each request's intended send time, so a stall
//! shows in full (no coordinated omission); requests issued in the window count however
//! late they are answered; and the pacer keeps to its rate, neither short nor over.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use keymux_client::testing::{Action, ScriptedServer, toy_keystore};
use keymux_loadgen::{Op, Report, Scenario, run};
use keymux_protocol::RequestFrame;

/// Requests per second: one a millisecond, so request `n` is intended `n` ms in.
const RATE: f64 = 1_000.0;
const WARMUP: Duration = Duration::from_millis(200);
const DURATION: Duration = Duration::from_millis(1_500);
/// How long the server holds its answers.
const STALL: Duration = Duration::from_millis(300);

/// A server that answers as the toy keystore does, except that when its `stall_at`-th
/// request arrives it holds every answer until `STALL` after that arrival.
async fn stalling_server(stall_at: usize) -> ScriptedServer {
    let arrived = AtomicUsize::new(0);
    let stall_until = Mutex::new(None::<Instant>);
    ScriptedServer::builder()
        .start_tcp(move |request: &RequestFrame| {
            let now = Instant::now();
            let mut until = stall_until.lock().unwrap();
            if arrived.fetch_add(1, Ordering::SeqCst) + 1 == stall_at {
                *until = Some(now + STALL);
            }
            match *until {
                Some(until) if now < until => Action::after(until - now, toy_keystore(request)),
                _ => toy_keystore(request),
            }
        })
        .await
        .unwrap()
}

fn open_loop(server: &ScriptedServer, max_in_flight: usize) -> Scenario {
    let mut scenario = Scenario::new(server.endpoint());
    scenario.op = Op::Wrap;
    scenario.connections = 2;
    scenario.rate = Some(RATE);
    scenario.max_in_flight = max_in_flight;
    scenario.warmup = WARMUP;
    scenario.duration = DURATION;
    scenario
}

/// Requests whose intended send time falls in the window: one every millisecond.
const IN_WINDOW: u64 = 1_500;

/// The two runs take turns: each is timed, and on a 2-core machine one would slow the
/// other's pacer.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Latencies recorded at `at_least` or above.
fn latencies_from(report: &Report, at_least: Duration) -> u64 {
    let histogram = &report.histogram;
    histogram.count_between(at_least.as_micros() as u64, histogram.max())
}

/// Checks what every run here must show: every request of the window issued, answered
/// and successful, at the rate asked for.
fn assert_complete_and_on_rate(report: &Report) {
    assert!(report.errors.is_empty(), "{report}");
    assert_eq!((report.issued, report.answered, report.ops), (IN_WINDOW, IN_WINDOW, IN_WINDOW), "{report}");
    let open = report.open_loop.expect("an open-loop run reports its pacing");
    assert_eq!(open.intended_rate, RATE);
    // Both ways, within 3%: 1,500 requests are due in the window, and only those a
    // millisecond from either edge (the pacer's sleep granularity) can go out on the
    // other side of it. More would mean a burst beyond the rate, fewer a pacer that
    // waited on answers or fell behind for good.
    let achieved = open.achieved_rate;
    assert!((0.97 * RATE..=1.03 * RATE).contains(&achieved), "achieved {achieved:.1}/s: {report}");
}

/// The server stalls half a second into the window, and only 8 requests may be in
/// flight, so the pacer itself waits out the stall: measured from when requests were
/// actually sent, the stall would all but vanish from the latencies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_counts_in_full_from_each_requests_intended_time() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let stall_at = (WARMUP + DURATION / 3).as_millis() as usize;
    let server = stalling_server(stall_at).await;
    let report = run(open_loop(&server, 8), Default::default()).await.unwrap();
    assert_complete_and_on_rate(&report);

    // The request that started the stall arrived after its intended time and was held
    // STALL from its arrival.
    let max = Duration::from_micros(report.latency_us.max);
    assert!(max >= STALL, "the longest latency {max:?} is shorter than the stall: {report}");
    // Nothing else adds up to more than the stall and a scheduling slack (200 ms, for
    // a loaded 2-core runner; the stall itself is 300 ms).
    assert!(max < STALL + Duration::from_millis(200), "{max:?}: {report}");
    // Every request intended in the first half of the stall (151 of them, one per ms)
    // was answered after the stall ended, so at least half a stall after its intended
    // time; all but the 8 already in flight went out only when the stall ended.
    let half_stalled = latencies_from(&report, STALL / 2);
    assert!(half_stalled >= 150, "only {half_stalled} latencies of half the stall or more: {report}");
    // And the generator says it was late.
    let lag = Duration::from_micros(report.open_loop.unwrap().max_send_lag_us);
    assert!(lag >= STALL - Duration::from_millis(50), "the pacer reports at most {lag:?} of lag");
}

/// The server stalls 100 ms before the window closes: the requests issued in those
/// last 100 ms are answered after the window, and still count, with their latencies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_after_the_window_count_for_the_requests_issued_in_it() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let stall_at = (WARMUP + DURATION - Duration::from_millis(100)).as_millis() as usize;
    let server = stalling_server(stall_at).await;
    let report = run(open_loop(&server, 10_000), Default::default()).await.unwrap();
    assert_complete_and_on_rate(&report);
    let max = Duration::from_micros(report.latency_us.max);
    assert!(max >= STALL, "the stalled answers after the window were left out: {report}");
    // The ~100 requests of the window's last 100 ms each waited for the stall's end,
    // at least 200 ms after their intended time.
    let stalled = latencies_from(&report, STALL - Duration::from_millis(100));
    assert!(stalled >= 99, "only {stalled} stalled latencies counted: {report}");
    // Nothing held the pacer back this time (10,000 may be in flight): had it waited on
    // the stalled answers, it would lag 200 ms or more.
    let lag = Duration::from_micros(report.open_loop.unwrap().max_send_lag_us);
    assert!(lag < STALL / 2, "the pacer lagged {lag:?}: {report}");
}
