//! The recommendation model. Pure: no Kubernetes client, no HTTP, no clock.
//!
//! - [`histogram`]: decaying exponential-bucket histograms (as upstream VPA's).
//! - [`history`]: a container's usage history: distributions, hourly peaks, OOM kills.
//! - [`heap`]: heap hints from JVM flags, `GOMEMLIMIT`, Node's `--max-old-space-size`, and
//!   the heap ceilings JVMs report in their metrics.
//! - [`trace`]: usage traces in the shared CSV format, read strictly (for backtests).
//! - [`backtest`]: walk-forward scoring of tailor, VPA, KRR and the provisioned sizes on a trace.
//! - [`estimator`]: **how the CPU and memory targets are computed**, with bounds, the memory
//!   floor and its reason.

pub mod backtest;
pub mod estimator;
pub mod heap;
pub mod histogram;
pub mod history;
pub mod trace;
