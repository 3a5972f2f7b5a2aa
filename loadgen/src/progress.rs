//! A live progress bar with the current throughput, on stderr when it is a terminal.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use tokio::task::JoinHandle;

/// Shows progress through warm-up and measurement, ticking every 250 ms.
pub struct Progress {
    task: JoinHandle<()>,
    bar: ProgressBar,
}

impl Progress {
    /// Starts a bar over `total` time, reading answered requests from `completed`.
    pub fn start(total: Duration, completed: Arc<AtomicU64>) -> Self {
        let bar = ProgressBar::new(total.as_millis() as u64);
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {msg}")
                .expect("a valid template"),
        );
        let task = tokio::spawn({
            let bar = bar.clone();
            async move {
                let tick = Duration::from_millis(250);
                let mut last = 0;
                loop {
                    tokio::time::sleep(tick).await;
                    let now = completed.load(Ordering::Relaxed);
                    let rate = (now - last) as f64 / tick.as_secs_f64();
                    last = now;
                    bar.inc(tick.as_millis() as u64);
                    bar.set_message(format!("{rate:>10.0} ops/s  {now} done"));
                }
            }
        });
        Self { task, bar }
    }

    /// Removes the bar.
    pub fn finish(self) {
        self.task.abort();
        self.bar.finish_and_clear();
    }
}
