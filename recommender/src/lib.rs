//! The tailor recommender: reads container usage history from Prometheus and writes
//! per-container CPU/memory recommendations into `VerticalAutoscaler` status.
//!
//! Layout (see the repository's `DESIGN` notes in the README):
//! - `model`: the pure recommendation model (no Kubernetes, no HTTP).
//! - `prometheus`: the history source.
//! - `controller`: watches VerticalAutoscalers and pods and writes status.
//!
//! This crate currently carries the binary's command-line surface only; the model, the history
//! source and the controller are being built.
#![forbid(unsafe_code)]
