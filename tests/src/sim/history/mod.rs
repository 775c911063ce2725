//! History generator: days of the same usage models as OpenMetrics text, for
//! `promtool tsdb create-blocks-from openmetrics`, so Prometheus holds a week of history
//! seconds after it starts.
//!
//! The series are those a kube-prometheus stack stores for the simulator's scrape, with the
//! same labels (see [`super::scrape`]): the cAdvisor series under `job="kubelet"` with the
//! kubelet target's `instance`, `node`, `metrics_path`, `endpoint` and `service`, the
//! kube-state-metrics series under `job="kube-state-metrics"`. History and live scrapes of a
//! container are therefore one series. Samples are every `interval` seconds (a scrape
//! interval: 30 s for the demo).
//!
//! Each container is taken to start at the beginning of the window. CPU above the limit is
//! capped (throttled), memory above the limit is capped at the limit (the live simulator
//! OOM-kills instead; history shows what a container *could* use).

mod jvm;
mod ksm;
mod render;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;

pub use jvm::{JvmHeap, JvmHeapMetrics, jvm_heap};
pub use ksm::{HistoryNode, ReplicaSetOwner, node_status, replicaset_owners};
pub use render::{Inventory, openmetrics, write_openmetrics};

use super::scrape;
use super::state::RSS_SHARE;
use super::usage::{Model, Trace};

/// One container whose history is generated.
#[derive(Debug, Clone)]
pub struct HistoryContainer {
    /// Namespace.
    pub namespace: String,
    /// Pod.
    pub pod: String,
    /// The pod's UID (`uid` of the kube-state-metrics series; empty: none).
    pub uid: String,
    /// The pod's IP (`pod_ip` of `kube_pod_info`; empty: none).
    pub pod_ip: String,
    /// Container.
    pub container: String,
    /// Image.
    pub image: String,
    /// Node.
    pub node: String,
    /// The node's address: the cAdvisor series' `instance` is `<host_ip>:10250`.
    pub host_ip: String,
    /// The usage model.
    pub model: Model,
    /// The seed (see [`super::usage::container_seed`]).
    pub seed: u64,
    /// The trace, for `Model::Trace`.
    pub trace: Option<Arc<Trace>>,
    /// CPU request and limit, cores.
    pub cpu: (Option<f64>, Option<f64>),
    /// Memory request and limit, bytes.
    pub memory: (Option<f64>, Option<f64>),
    /// The pod's controlling owner `(kind, name)`, for `kube_pod_owner`.
    pub owner: Option<(String, String)>,
    /// When the pod existed `(from, to)`, unix seconds; `None`: the whole window. Pods of an
    /// earlier rollout existed only in the earlier part.
    pub lifetime: Option<(i64, i64)>,
    /// OOM kills (unix seconds): each adds a restart and sets the last terminated reason.
    pub oom_kills: Vec<i64>,
}

impl HistoryContainer {
    /// Container `container` (image `example/<container>:1`) of `namespace/pod` on node
    /// `sim-0` (the first simulated node's address), seeded from its names with seed 1, owned
    /// by `owner` `(kind, name)`, for the whole window, without UID, pod IP, requests, limits
    /// or OOM kills.
    pub fn new(
        namespace: &str,
        pod: &str,
        container: &str,
        model: Model,
        owner: (&str, &str),
    ) -> Self {
        Self {
            namespace: namespace.into(),
            pod: pod.into(),
            uid: String::new(),
            pod_ip: String::new(),
            container: container.into(),
            image: format!("example/{container}:1"),
            node: "sim-0".into(),
            host_ip: scrape::node_ip(0),
            seed: super::usage::container_seed(1, namespace, pod, container),
            model,
            trace: None,
            cpu: (None, None),
            memory: (None, None),
            owner: Some((owner.0.into(), owner.1.into())),
            lifetime: None,
            oom_kills: vec![],
        }
    }

    /// The labels of its cAdvisor series, the kubelet target's included.
    pub fn cadvisor_labels(&self) -> BTreeMap<&'static str, String> {
        labels(
            [
                ("namespace", self.namespace.clone()),
                ("pod", self.pod.clone()),
                ("container", self.container.clone()),
                ("image", self.image.clone()),
            ]
            .into_iter()
            .chain(scrape::kubelet_labels(&self.node, &self.host_ip)),
        )
    }

    /// The labels of its pod's kube-state-metrics series, the target's included.
    pub fn pod_labels(&self) -> BTreeMap<&'static str, String> {
        labels(
            [
                ("namespace", self.namespace.clone()),
                ("pod", self.pod.clone()),
                ("uid", self.uid.clone()),
            ]
            .into_iter()
            .chain(scrape::ksm_labels()),
        )
    }

    /// The labels of its own kube-state-metrics series, the target's included.
    pub fn container_labels(&self) -> BTreeMap<&'static str, String> {
        let mut l = self.pod_labels();
        l.insert("container", self.container.clone());
        l
    }
}

/// One generated series: its labels and samples `(unix seconds, value)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Metric name.
    pub metric: &'static str,
    /// Labels, sorted.
    pub labels: BTreeMap<&'static str, String>,
    /// Samples.
    pub samples: Vec<(i64, f64)>,
}

/// Labels without the empty ones (Prometheus stores a label with an empty value as no label).
pub fn labels(
    pairs: impl IntoIterator<Item = (&'static str, String)>,
) -> BTreeMap<&'static str, String> {
    pairs.into_iter().filter(|(_, v)| !v.is_empty()).collect()
}

/// The window of a history: samples every `interval` seconds from `start` to `end` (unix
/// seconds, inclusive), of which those before `emit_from` are left out (counters still count
/// them), so a history can be written in two parts that join up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// First sample.
    pub start: i64,
    /// Last sample (at most).
    pub end: i64,
    /// Seconds between samples: the scrape interval.
    pub interval: i64,
    /// Samples before this are not written.
    pub emit_from: i64,
}

impl Window {
    /// Every sample from `start` to `end` every `interval` seconds.
    pub fn new(start: i64, end: i64, interval: i64) -> Self {
        Self {
            start,
            end,
            interval: interval.max(1),
            emit_from: start,
        }
    }

    /// The same window writing only the samples from `t` on.
    pub fn from(self, t: i64) -> Self {
        Self {
            emit_from: t,
            ..self
        }
    }

    fn times(&self) -> impl Iterator<Item = i64> + '_ {
        (0..)
            .map(|i| self.start + i * self.interval)
            .take_while(|t| *t <= self.end)
    }

    /// Leaves out the samples before `emit_from`, and the series left without any.
    fn emit(&self, series: Vec<Series>) -> Vec<Series> {
        series
            .into_iter()
            .filter_map(|mut s| {
                s.samples.retain(|(t, _)| *t >= self.emit_from);
                (!s.samples.is_empty()).then_some(s)
            })
            .collect()
    }
}

/// Generates every series for `containers` from `start` to `end` (unix seconds, inclusive)
/// every `interval` seconds (the scrape interval).
pub fn generate(
    containers: &[HistoryContainer],
    start: i64,
    end: i64,
    interval: i64,
) -> Vec<Series> {
    generate_window(containers, Window::new(start, end, interval))
}

/// Generates every series for `containers` over `window`. The pod's series come with its
/// first container.
pub fn generate_window(containers: &[HistoryContainer], window: Window) -> Vec<Series> {
    let mut seen = std::collections::BTreeSet::new();
    containers
        .iter()
        .flat_map(|c| {
            let first = seen.insert((c.namespace.as_str(), c.pod.as_str()));
            container_series(c, first, &window)
        })
        .collect()
}

/// The series of one container (and of its pod with `pod_series`) over `window`.
pub(crate) fn container_series(
    c: &HistoryContainer,
    pod_series: bool,
    window: &Window,
) -> Vec<Series> {
    let (from, to) = c.lifetime.unwrap_or((window.start, window.end));
    let times: Vec<i64> = window.times().filter(|t| (from..=to).contains(t)).collect();
    if times.is_empty() {
        return Vec::new();
    }
    let mut out = cadvisor(c, &times, window.interval);
    out.extend(ksm::container(c, &times));
    if pod_series {
        out.extend(ksm::pod(c, &times));
    }
    window.emit(out)
}

/// The cAdvisor series of `c` at `times`.
fn cadvisor(c: &HistoryContainer, times: &[i64], interval: i64) -> Vec<Series> {
    let start = times[0];
    let cpu_limit = c.cpu.1;
    let (mut cpu_total, mut periods, mut throttled) = (0.0, 0.0, 0.0);
    let n = times.len();
    let (mut cpu, mut ws, mut rss) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut cfs, mut cfs_throttled) = (Vec::new(), Vec::new());
    for (i, &t) in times.iter().enumerate() {
        let u = c
            .model
            .sample(t as f64, (t - start) as f64, c.seed, c.trace.as_deref());
        let used_cpu = cpu_limit.map_or(u.cpu, |l| u.cpu.min(l));
        if i > 0 {
            cpu_total += used_cpu * interval as f64;
            // Every 100 ms CFS period counts; all of them are throttled while demand is above
            // the limit.
            periods += interval as f64 * 10.0;
            if cpu_limit.is_some_and(|l| u.cpu > l) {
                throttled += interval as f64 * 10.0;
            }
        }
        let mem = c.memory.1.map_or(u.memory, |l| u.memory.min(l)).round();
        cpu.push((t, cpu_total));
        ws.push((t, mem));
        rss.push((t, (mem * RSS_SHARE).round()));
        if cpu_limit.is_some() {
            cfs.push((t, periods));
            cfs_throttled.push((t, throttled));
        }
    }
    let limit = c.memory.1.unwrap_or(0.0);
    let series = |metric, samples| Series {
        metric,
        labels: c.cadvisor_labels(),
        samples,
    };
    let mut out = vec![
        series("container_cpu_usage_seconds_total", cpu),
        series("container_memory_working_set_bytes", ws),
        series("container_memory_rss", rss),
        series(
            "container_spec_memory_limit_bytes",
            times.iter().map(|t| (*t, limit)).collect(),
        ),
    ];
    if cpu_limit.is_some() {
        out.push(series("container_cpu_cfs_periods_total", cfs));
        out.push(series(
            "container_cpu_cfs_throttled_periods_total",
            cfs_throttled,
        ));
    }
    out
}
