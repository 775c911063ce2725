//! tailor's test harness: real servers for tests that do I/O.
//!
//! - [`ControlPlane`]: a real `etcd` + `kube-apiserver` (v1.35.x) on free loopback ports, with a
//!   fresh data directory and credentials, a [`kube::Client`] and the tailor CRDs installed.
//! - [`Prometheus`]: the real Prometheus server, on a TSDB backfilled from OpenMetrics text with
//!   `promtool tsdb create-blocks-from openmetrics`, optionally scraping targets.
//! - [`fault::FaultProxy`]: a TCP proxy in front of a server that a test can take down or make
//!   hang.
//! - [`real_node::RealNode`]: containerd + runc + a real kubelet registered with a
//!   [`ControlPlane`], one per machine at a time.
//!
//! Every server belongs to the value that started it: dropping the value (also while a test
//! panics) stops the processes and removes their directories. Processes are also tied to the
//! test process itself, so a test binary that is killed leaves nothing running.

pub mod api_proxy;
pub mod assets;
pub mod bench;
pub mod cargo;
pub mod control_plane;
pub mod fault;
pub mod process;
pub mod prometheus;
pub mod real_node;
pub mod sim;
pub mod webhooks;

pub use control_plane::ControlPlane;
pub use prometheus::Prometheus;

/// Why a test server could not be provided.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// A binary the tests need is missing; the message says how to get it.
    #[error("{0}")]
    MissingBinary(String),
    /// A server did not start or did not become ready.
    #[error("{what} did not start: {reason}\n--- last lines of its log ---\n{log}")]
    Startup {
        /// The server.
        what: &'static str,
        /// What went wrong.
        reason: String,
        /// The tail of its log.
        log: String,
    },
    /// Filesystem trouble.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: std::io::Error,
    },
    /// Anything else, with context.
    #[error("{0}")]
    Other(String),
}

impl HarnessError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| Self::Io { context, source }
    }
}

/// Result of harness operations.
pub type Result<T, E = HarnessError> = std::result::Result<T, E>;

/// A free TCP port on 127.0.0.1 (free when asked; callers retry on a lost race).
pub fn free_port() -> Result<u16> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(HarnessError::io("bind 127.0.0.1:0"))?;
    let port = listener
        .local_addr()
        .map_err(HarnessError::io("local_addr"))?
        .port();
    Ok(port)
}
