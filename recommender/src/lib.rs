//! The tailor recommender: reads container usage history from Prometheus and writes
//! per-container CPU/memory recommendations into `VerticalAutoscaler` status.
//!
//! Layout:
//! - `model`: the pure recommendation model (no Kubernetes, no HTTP).
//! - `prometheus`: the history source.
//! - `controller`: watches VerticalAutoscalers and pods and writes status.
//!
//! The model is in place; the Prometheus history source and the controller are being built.
#![forbid(unsafe_code)]

pub mod cli;
pub mod controller;
pub mod metrics;
pub mod model;
pub mod prometheus;
pub mod spec;
