//! keymux load generator, as a library.
//!
//! The `keymux-loadgen` binary is a thin wrapper: it parses [`cli::Cli`] into a
//! [`Scenario`], calls [`run`] and prints the [`Report`]. Tests and `--embedded` call
//! [`run`] in-process.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use std::time::Duration;
//! use keymux_loadgen::{Op, Scenario, run};
//!
//! let mut scenario = Scenario::new("tcp://127.0.0.1:7450".parse()?);
//! scenario.op = Op::Unwrap;
//! scenario.duration = Duration::from_secs(5);
//! let report = run(scenario, Default::default()).await?;
//! println!("{report}");
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

pub mod cli;
pub mod embedded;
pub mod output;
pub mod progress;
mod raw;
pub mod report;
pub mod scenario;
mod setup;
pub mod stats;
pub mod workload;

pub use report::Report;
pub use scenario::{Driver, Scenario, run};
pub use workload::{Mix, Op};
