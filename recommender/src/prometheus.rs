//! The usage history source: Prometheus (or any server with its HTTP API: Thanos, Mimir,
//! VictoriaMetrics). Thin I/O: it issues queries and feeds the pure model.
//!
//! - Queries go as `POST` forms (long pod lists never hit URL limits), in batches of pods, and
//!   range queries are cut into chunks of at most `max_points` steps (Prometheus refuses more
//!   than 11,000 points per series), and cut further where the server says a chunk is too
//!   large ([`range`]).
//! - Timeouts and retries with exponential back-off for connection errors, timeouts and 5xx;
//!   4xx and `bad_data` answers are not retried.
//! - Bearer-token or basic auth; TLS with the system roots, an extra CA, or none verified.
//! - A workload's pods come from kube-state-metrics ownership series over the whole window, so
//!   pods of earlier rollouts count, and names are matched exactly, so a workload whose name
//!   shares a prefix does not.
//! - JVM heap ceilings come from the applications' own metrics when they expose them
//!   ([`Prometheus::jvm_heaps`]); none is the usual case.
//! - The working set of one pod's containers now ([`Prometheus::working_sets`]) for the
//!   updater's check before a memory decrease that restarts a container.
//! - OOM kills come from the restart counter and the last terminated reason, found the same way
//!   whatever the step and the scrape interval ([`oom`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

mod access;
mod current;
mod http;
mod jvm;
pub mod oom;
mod range;
mod ready;
mod traces;
mod usage;
mod warnings;

pub use access::Access;
pub use current::WorkingSet;
pub use jvm::{JVM_HEAP_RESOLUTION, JvmHeap};
pub use oom::RecordedKill;
pub use range::too_large as range_too_large;
pub use warnings::with_warnings;

use usage::{container_matchers, container_of};

/// Why history could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    /// Prometheus could not be reached or kept failing.
    #[error("Prometheus unavailable: {0}")]
    Unavailable(String),
    /// Prometheus refused the query.
    #[error("Prometheus rejected the query: {0}")]
    Rejected(String),
    /// The answer was not what the API promises.
    #[error("Prometheus answered garbage: {0}")]
    Malformed(String),
    /// The client could not be built (bad URL, bad CA file).
    #[error("Prometheus client: {0}")]
    Config(String),
}

/// How to authenticate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Auth {
    /// None.
    #[default]
    None,
    /// `Authorization: Bearer <token>`.
    Bearer(String),
    /// Basic auth.
    Basic {
        /// User.
        user: String,
        /// Password.
        password: String,
    },
}

/// Metric and label names (kube-prometheus defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricNames {
    /// cAdvisor CPU counter.
    pub cpu: String,
    /// cAdvisor working set.
    pub memory: String,
    /// kube-state-metrics restarts counter.
    pub restarts: String,
    /// kube-state-metrics last terminated reason.
    pub terminated_reason: String,
    /// kube-state-metrics limits.
    pub limits: String,
    /// kube-state-metrics requests.
    pub requests: String,
    /// kube-state-metrics pod owner.
    pub pod_owner: String,
    /// kube-state-metrics ReplicaSet owner.
    pub replicaset_owner: String,
    /// kube-state-metrics Job owner.
    pub job_owner: String,
    /// kube-state-metrics time a pod became Ready (Unix seconds; kube-state-metrics 2.8+):
    /// where a startup boost's window ends.
    pub ready_time: String,
    /// JVM heap ceiling gauges, read where `area="heap"`: Micrometer's
    /// `jvm_memory_max_bytes` (one series per memory pool, `id` label; `-1` is undefined) and
    /// the Prometheus client_java / JMX exporter `jvm_memory_bytes_max` (one series per
    /// area). Empty: heap metrics are not read.
    pub jvm_heap_max: Vec<String>,
    /// cAdvisor's memory limit of a container (the cgroup's; 0 or huge when unlimited), read by
    /// the live memory guard before kube-state-metrics' limit.
    pub memory_limit: String,
    /// cAdvisor's memory pressure stall counter (cgroup v2 PSI `full`: seconds in which every
    /// task of the container waited for memory), read by the live memory guard where exported.
    pub memory_stalled: String,
    /// Extra label matchers added to every selector (e.g. `cluster="prod"`).
    pub extra_matchers: String,
}

impl Default for MetricNames {
    fn default() -> Self {
        Self {
            cpu: "container_cpu_usage_seconds_total".into(),
            memory: "container_memory_working_set_bytes".into(),
            restarts: "kube_pod_container_status_restarts_total".into(),
            terminated_reason: "kube_pod_container_status_last_terminated_reason".into(),
            limits: "kube_pod_container_resource_limits".into(),
            requests: "kube_pod_container_resource_requests".into(),
            pod_owner: "kube_pod_owner".into(),
            replicaset_owner: "kube_replicaset_owner".into(),
            job_owner: "kube_job_owner".into(),
            ready_time: "kube_pod_status_ready_time".into(),
            jvm_heap_max: vec!["jvm_memory_max_bytes".into(), "jvm_memory_bytes_max".into()],
            memory_limit: "container_spec_memory_limit_bytes".into(),
            memory_stalled: "container_pressure_memory_stalled_seconds_total".into(),
            extra_matchers: String::new(),
        }
    }
}

/// Client configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Base URL, e.g. `http://prometheus.monitoring:9090`.
    pub url: String,
    /// Authentication.
    pub auth: Auth,
    /// An extra CA certificate (PEM) to trust.
    pub ca_file: Option<PathBuf>,
    /// Skip TLS verification (never in production).
    pub insecure_skip_verify: bool,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Retries after the first attempt.
    pub retries: u32,
    /// First back-off; doubled on every retry.
    pub backoff: Duration,
    /// Resolution of the history.
    pub step: Duration,
    /// The window `rate()` uses for CPU.
    pub rate_window: Duration,
    /// Most steps in one range query (Prometheus refuses more than 11,000).
    pub max_points: usize,
    /// Most pods in one query.
    pub pod_batch: usize,
    /// How far back each point of the OOM-kill query looks for the restart counter and the
    /// memory limit; at least four steps are used (see [`oom`]). Several scrape intervals of
    /// kube-state-metrics, so a kill is found however seldom it is scraped.
    pub oom_window: Duration,
    /// The most memory a usage sample may show (bytes); above it a sample is garbage (no node
    /// has that much) and is left out of the history, counted in [`Stats::rejected`].
    pub max_memory_bytes: f64,
    /// The most CPU a usage sample may show (cores); likewise.
    pub max_cpu_cores: f64,
    /// The largest answer read (bytes); a larger one is refused.
    pub max_body_bytes: usize,
    /// Metric names.
    pub names: MetricNames,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            url: "http://localhost:9090".into(),
            auth: Auth::None,
            ca_file: None,
            insecure_skip_verify: false,
            timeout: Duration::from_secs(30),
            retries: 3,
            backoff: Duration::from_millis(500),
            step: Duration::from_secs(60),
            rate_window: Duration::from_secs(300),
            max_points: 10_000,
            pod_batch: 50,
            oom_window: Duration::from_secs(600),
            max_memory_bytes: DEFAULT_MAX_MEMORY_BYTES,
            max_cpu_cores: DEFAULT_MAX_CPU_CORES,
            max_body_bytes: 256 << 20,
            names: MetricNames::default(),
        }
    }
}

/// Counters of the work done, for logs and benchmarks.
#[derive(Debug, Default)]
pub struct Stats {
    /// HTTP queries issued (retries included).
    pub queries: AtomicU64,
    /// Samples received.
    pub samples: AtomicU64,
    /// Usage samples left out of the history: not below the bounds of [`Config`].
    pub rejected: AtomicU64,
    /// Warnings the server attached to its answers (partial data).
    pub warnings: AtomicU64,
    /// Range queries cut in two because the server refused them as too large.
    pub splits: AtomicU64,
    /// Queries failed at once because Prometheus had just stayed unavailable through every
    /// retry.
    pub short_circuited: AtomicU64,
}

/// The default bound on a memory usage sample: 16 TiB, above the largest machines.
pub const DEFAULT_MAX_MEMORY_BYTES: f64 = 16.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0;

/// The default bound on a CPU usage sample: 4,096 cores.
pub const DEFAULT_MAX_CPU_CORES: f64 = 4096.0;

/// A Prometheus HTTP API client.
#[derive(Debug)]
pub struct Prometheus {
    http: reqwest::Client,
    config: Config,
    stats: Stats,
    /// When a query last found Prometheus unreachable through every retry, and why: for
    /// [`BREAKER_COOLDOWN`] after that, queries fail at once (see [`http`]).
    breaker: std::sync::Mutex<Option<(std::time::Instant, String)>>,
}

/// How long after a query found Prometheus unreachable (no connection, no answer) through
/// every retry further queries fail at once instead of each waiting through its own retries;
/// after it they try again, and any answer ends it.
pub const BREAKER_COOLDOWN: Duration = Duration::from_secs(10);

/// One series of a range query: labels and `(unix seconds, value)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Samples; values Prometheus sends as `NaN`/`+Inf` arrive as such.
    pub samples: Vec<(f64, f64)>,
}

/// Whether `name` is a valid Prometheus metric name.
pub fn valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// The kinds of workload whose pods can be found.
pub const WORKLOAD_KINDS: &[&str] = &[
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "Job",
    "CronJob",
];

/// Quotes a label value for PromQL.
fn quote(v: &str) -> String {
    format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
}

/// An anchored regex alternation matching exactly `values`, quoted for PromQL.
fn exact_alternation(values: &[String]) -> String {
    let escaped: Vec<String> = values
        .iter()
        .map(|v| {
            v.chars()
                .flat_map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                        vec![c]
                    } else {
                        vec!['\\', c]
                    }
                })
                .collect()
        })
        .collect();
    quote(&escaped.join("|"))
}

impl Prometheus {
    /// A client for `config`.
    pub fn new(config: Config) -> Result<Self, HistoryError> {
        let mut builder = reqwest::Client::builder().timeout(config.timeout);
        if let Some(path) = &config.ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| HistoryError::Config(format!("CA file {}: {e}", path.display())))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| HistoryError::Config(format!("CA file {}: {e}", path.display())))?;
            builder = builder.add_root_certificate(cert);
        }
        if config.insecure_skip_verify {
            builder = builder.danger_accept_invalid_certs(true);
        }
        let http = builder
            .build()
            .map_err(|e| HistoryError::Config(e.to_string()))?;
        if let Some(bad) = config
            .names
            .jvm_heap_max
            .iter()
            .find(|n| !valid_metric_name(n))
        {
            return Err(HistoryError::Config(format!(
                "JVM heap metric {bad:?} is not a valid metric name"
            )));
        }
        if !(config.url.starts_with("http://") || config.url.starts_with("https://")) {
            return Err(HistoryError::Config(format!(
                "URL {:?} must start with http:// or https://",
                config.url
            )));
        }
        Ok(Self {
            http,
            config,
            stats: Stats::default(),
            breaker: std::sync::Mutex::new(None),
        })
    }

    /// The work done so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// An instant query at `time`.
    pub async fn query(&self, query: &str, time: f64) -> Result<Vec<Series>, HistoryError> {
        let data = self
            .post(
                "query",
                &[("query", query.to_owned()), ("time", time.to_string())],
            )
            .await?;
        self.series(data, "vector")
    }

    fn selector(&self, metric: &str, matchers: &[String]) -> String {
        let mut all: Vec<String> = matchers.to_vec();
        if !self.config.names.extra_matchers.is_empty() {
            all.push(self.config.names.extra_matchers.clone());
        }
        format!("{metric}{{{}}}", all.join(","))
    }

    /// What `owners` own, by the ownership series `metric` (its owned-object label is
    /// `owned_label`), seen at any time in the `window` seconds before `end`.
    async fn owned(
        &self,
        namespace: &str,
        (metric, owned_label, kind): (&str, &str, &str),
        owners: &[String],
        (end, window): (f64, f64),
    ) -> Result<Vec<String>, HistoryError> {
        if owners.is_empty() {
            return Ok(Vec::new());
        }
        let mut out = BTreeSet::new();
        for batch in owners.chunks(self.config.pod_batch.max(1)) {
            let sel = self.selector(
                metric,
                &[
                    format!("namespace={}", quote(namespace)),
                    format!("owner_kind={}", quote(kind)),
                    format!("owner_name=~{}", exact_alternation(batch)),
                ],
            );
            let q = format!(
                "max by ({owned_label}) (max_over_time({sel}[{}s]))",
                window.ceil() as i64
            );
            for s in self.query(&q, end).await? {
                if let Some(v) = s.labels.get(owned_label) {
                    out.insert(v.clone());
                }
            }
        }
        Ok(out.into_iter().collect())
    }

    /// Every pod the workload had in `[end - window, end]`, earlier rollouts included.
    pub async fn workload_pods(
        &self,
        namespace: &str,
        kind: &str,
        name: &str,
        end: f64,
        window: f64,
    ) -> Result<Vec<String>, HistoryError> {
        let n = &self.config.names;
        let name = vec![name.to_owned()];
        let (pod_owner_kind, owners) = match kind {
            "Deployment" => (
                "ReplicaSet",
                self.owned(
                    namespace,
                    (&n.replicaset_owner, "replicaset", "Deployment"),
                    &name,
                    (end, window),
                )
                .await?,
            ),
            "CronJob" => (
                "Job",
                self.owned(
                    namespace,
                    (&n.job_owner, "job_name", "CronJob"),
                    &name,
                    (end, window),
                )
                .await?,
            ),
            "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => (kind, name),
            other => {
                return Err(HistoryError::Config(format!(
                    "workload kind {other:?} is not supported; supported: {}",
                    WORKLOAD_KINDS.join(", ")
                )));
            }
        };
        self.owned(
            namespace,
            (&n.pod_owner, "pod", pod_owner_kind),
            &owners,
            (end, window),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jvm_heap_metric_names_are_checked() {
        assert!(valid_metric_name("jvm_memory_max_bytes"));
        assert!(valid_metric_name("app:jvm_heap_max"));
        for bad in ["", "9jvm", "jvm memory", "up{a=\"b\"}", "jvm-heap"] {
            assert!(!valid_metric_name(bad), "{bad}");
            let e = Prometheus::new(Config {
                names: MetricNames {
                    jvm_heap_max: vec![bad.into()],
                    ..MetricNames::default()
                },
                ..Config::default()
            })
            .unwrap_err();
            assert!(matches!(e, HistoryError::Config(_)), "{bad}: {e}");
        }
    }

    #[test]
    fn label_values_are_quoted_and_matched_exactly() {
        assert_eq!(quote("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(
            exact_alternation(&["web-7d9f".into(), "web.v2".into()]),
            "\"web-7d9f|web\\\\.v2\""
        );
    }
}
