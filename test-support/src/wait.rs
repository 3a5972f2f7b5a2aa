//! Waiting on something a test can observe, instead of sleeping and hoping: polls a
//! condition until it holds, and fails the test, naming what it waited for, when it
//! does not hold in time.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// How often a condition is checked.
const POLL: Duration = Duration::from_millis(5);

/// Waits until `condition` holds, checking it every 5 ms; panics naming `what` if it
/// still does not hold after `timeout`. Returns how long the wait took.
pub async fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) -> Duration {
    wait_until_async(what, timeout, || std::future::ready(condition())).await
}

/// [`wait_until`] for a condition that is itself asynchronous (a connection attempt, a
/// scrape of the metrics page).
pub async fn wait_until_async<F, Fut>(what: &str, timeout: Duration, mut condition: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if condition().await {
            return started.elapsed();
        }
        if started.elapsed() >= timeout {
            panic!("waited {timeout:?} for {what}");
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test]
    async fn returns_once_the_condition_holds() {
        let checks = AtomicU32::new(0);
        wait_until("the third check", Duration::from_secs(5), || checks.fetch_add(1, Ordering::SeqCst) == 2)
            .await;
        assert_eq!(checks.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    #[should_panic(expected = "waited 20ms for nothing at all")]
    async fn panics_naming_what_never_happened() {
        wait_until("nothing at all", Duration::from_millis(20), || false).await;
    }
}
