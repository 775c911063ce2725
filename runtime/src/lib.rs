//! What tailor's two binaries share at run time: leader election through a Lease and the admin
//! server (`/metrics`, `/healthz`, `/readyz`).

pub mod admin;
pub mod lease;
pub mod workload;

/// Waits for SIGTERM (Kubernetes stopping the pod) or Ctrl-C.
pub async fn shutdown_signal() -> Result<(), String> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    tokio::select! {
        _ = term.recv() => Ok(()),
        r = tokio::signal::ctrl_c() => r.map_err(|e| e.to_string()),
    }
}

/// A replica identity when none is given: the host name (the pod name in a cluster) and the
/// process id.
pub fn default_identity(program: &str) -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| program.to_owned());
    format!("{host}-{}", std::process::id())
}
