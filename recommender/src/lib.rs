//! The tailor recommender: reads container usage history from Prometheus and writes
//! per-container CPU/memory recommendations into `VerticalAutoscaler` status.
//!
//! Layout:
//! - `model`: the pure recommendation model (no Kubernetes, no HTTP).
//! - `prometheus`: the history source.
//! - `controller`: watches VerticalAutoscalers and pods and writes status.
//! - `mirror`: copies the updater's ResizeStates into VerticalAutoscaler status (the
//!   recommender alone may write it).
//! - `backtest`: reads trace files for `tailor-recommender backtest` and renders the scores.
#![forbid(unsafe_code)]

pub mod backtest;
pub mod cli;
pub mod controller;
pub mod metrics;
pub mod mirror;
pub mod model;
pub mod prometheus;
pub mod spec;
