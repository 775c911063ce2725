//! The node simulator: plays the kubelets of simulated nodes against a real API server.
//!
//! - [`usage`]: what each container wants to use over time (pod annotation models).
//! - [`kubelet`]: the kubelet's admission and resize decisions (pure).
//! - [`scrape`]: the labels a kube-prometheus stack's scrape puts on the series, shared by the
//!   live scrape targets and the backfilled [`history`].

pub mod config;
pub mod history;
pub mod kubelet;
pub mod metrics;
pub mod runtime;
pub mod scrape;
pub mod state;
pub mod usage;
