//! The recommender's metrics and admin endpoints (`/metrics`, `/healthz`, `/readyz`).
//!
//! Every recommendation is exported so Grafana can plot it against requests and usage:
//!
//! | metric | labels |
//! | --- | --- |
//! | `tailor_recommendation_cpu_cores` | `namespace`, `verticalautoscaler`, `container`, `bound` = `target`, `lower`, `upper`, `uncapped` |
//! | `tailor_recommendation_memory_bytes` | same, plus `bound="floor"` |
//! | `tailor_recommendation_memory_floor_reason` | `namespace`, `verticalautoscaler`, `container`, `reason` (value 1) |
//! | `tailor_recommender_reconciles_total` | `outcome` = `recommended`, `not_recommended`, `history_unavailable`, `config_unsupported` |
//! | `tailor_recommender_reconcile_duration_seconds` | histogram |
//! | `tailor_recommender_last_pass_timestamp_seconds` | when the last pass over all objects finished |
//! | `tailor_recommender_last_pass_duration_seconds` | how long it took |
//! | `tailor_recommender_prometheus_queries_total`, `tailor_recommender_prometheus_samples_total` | |
//! | `tailor_recommender_prometheus_samples_rejected_total` | usage samples above `--max-memory-sample` / `--max-cpu-sample`, left out of the history |
//! | `tailor_recommender_prometheus_range_splits_total` | range queries cut in two because the server refused them as too large |
//! | `tailor_recommender_prometheus_short_circuited_total` | queries failed at once: Prometheus had just stayed unavailable through every retry |
//! | `tailor_recommender_prometheus_warnings_total` | warnings Prometheus attached to its answers (partial data: no recommendation is lowered from it) |
//! | `tailor_recommender_leader` | 1 on the replica that writes |
//! | `tailor_workload_pods` | `namespace`, `verticalautoscaler`: pods of the target (not being deleted) |
//! | `tailor_workload_requests_cpu_cores`, `tailor_workload_requests_memory_bytes` | `namespace`, `verticalautoscaler`, `container`: the mean request over those pods |
//! | `tailor_pod_info` | `namespace`, `pod`, `verticalautoscaler` (value 1): joins cAdvisor and kube-state-metrics series to an object |

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tailor_crds::quantity::{cpu_millis, memory_bytes};
use tailor_crds::v1alpha1::{ContainerRecommendation, FloorReason, Resources};

/// Labels of one recommendation value.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ValueLabels {
    namespace: String,
    verticalautoscaler: String,
    container: String,
    bound: String,
}

/// Labels of the floor reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    namespace: String,
    verticalautoscaler: String,
    container: String,
    reason: String,
}

/// Labels of one object.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ObjectLabels {
    namespace: String,
    verticalautoscaler: String,
}

/// Labels of one container of an object.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ContainerLabels {
    namespace: String,
    verticalautoscaler: String,
    container: String,
}

/// Labels of one pod of an object.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PodLabels {
    namespace: String,
    pod: String,
    verticalautoscaler: String,
}

/// The pods of one object's target and their mean requests, for the dashboards.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Workload {
    /// Names of the pods (not being deleted).
    pub pods: Vec<String>,
    /// Per container: the mean CPU request (cores) and memory request (bytes) over the pods
    /// that set one.
    pub requests: Vec<(String, Option<f64>, Option<f64>)>,
}

type WorkloadSeries = (Vec<ContainerLabels>, Vec<PodLabels>);

/// Labels of a reconcile outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    outcome: String,
}

type Series = (Vec<ValueLabels>, Vec<ValueLabels>, Vec<ReasonLabels>);

/// The recommender's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    cpu: Family<ValueLabels, Gauge<f64, AtomicU64>>,
    memory: Family<ValueLabels, Gauge<f64, AtomicU64>>,
    reason: Family<ReasonLabels, Gauge>,
    reconciles: Family<OutcomeLabels, Counter>,
    duration: Histogram,
    last_pass: Gauge<f64, AtomicU64>,
    pass_duration: Gauge<f64, AtomicU64>,
    client: ClientCounters,
    leader: Gauge,
    pods: Family<ObjectLabels, Gauge>,
    requests_cpu: Family<ContainerLabels, Gauge<f64, AtomicU64>>,
    requests_memory: Family<ContainerLabels, Gauge<f64, AtomicU64>>,
    pod_info: Family<PodLabels, Gauge>,
    exported: Mutex<HashMap<(String, String), Series>>,
    workloads: Mutex<HashMap<(String, String), WorkloadSeries>>,
    ready: AtomicBool,
}

/// The Prometheus client's counters, mirrored from its [`crate::prometheus::Stats`].
#[derive(Debug)]
struct ClientCounters {
    queries: Counter,
    samples: Counter,
    rejected: Counter,
    warnings: Counter,
    splits: Counter,
    short_circuited: Counter,
}

impl ClientCounters {
    fn register(registry: &mut Registry) -> Self {
        let c = Self {
            queries: Counter::default(),
            samples: Counter::default(),
            rejected: Counter::default(),
            warnings: Counter::default(),
            splits: Counter::default(),
            short_circuited: Counter::default(),
        };
        for (name, help, counter) in [
            (
                "tailor_recommender_prometheus_queries",
                "HTTP queries sent to Prometheus",
                &c.queries,
            ),
            (
                "tailor_recommender_prometheus_samples",
                "Samples received from Prometheus",
                &c.samples,
            ),
            (
                "tailor_recommender_prometheus_samples_rejected",
                "Usage samples above the sane bounds (--max-memory-sample, --max-cpu-sample), left out of the history",
                &c.rejected,
            ),
            (
                "tailor_recommender_prometheus_warnings",
                "Warnings Prometheus attached to its answers (partial data; no recommendation is lowered from it)",
                &c.warnings,
            ),
            (
                "tailor_recommender_prometheus_range_splits",
                "Range queries cut in two because the server refused them as too large",
                &c.splits,
            ),
            (
                "tailor_recommender_prometheus_short_circuited",
                "Queries failed at once because Prometheus had just stayed unavailable through every retry",
                &c.short_circuited,
            ),
        ] {
            registry.register(name, help, counter.clone());
        }
        c
    }

    fn mirror(&self, stats: &crate::prometheus::Stats) {
        for (counter, total) in [
            (&self.queries, &stats.queries),
            (&self.samples, &stats.samples),
            (&self.rejected, &stats.rejected),
            (&self.warnings, &stats.warnings),
            (&self.splits, &stats.splits),
            (&self.short_circuited, &stats.short_circuited),
        ] {
            let total = total.load(Ordering::Relaxed);
            counter.inc_by(total.saturating_sub(counter.get()));
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let cpu = Family::<ValueLabels, Gauge<f64, AtomicU64>>::default();
        let memory = Family::<ValueLabels, Gauge<f64, AtomicU64>>::default();
        let reason = Family::<ReasonLabels, Gauge>::default();
        let reconciles = Family::<OutcomeLabels, Counter>::default();
        let duration = Histogram::new(exponential_buckets(0.01, 2.0, 14));
        let last_pass = Gauge::<f64, AtomicU64>::default();
        let pass_duration = Gauge::<f64, AtomicU64>::default();
        let leader = Gauge::default();
        registry.register(
            "tailor_recommendation_cpu_cores",
            "Recommended CPU (target, bounds, uncapped target), cores",
            cpu.clone(),
        );
        registry.register(
            "tailor_recommendation_memory_bytes",
            "Recommended memory (target, bounds, uncapped target, floor), bytes",
            memory.clone(),
        );
        registry.register(
            "tailor_recommendation_memory_floor_reason",
            "The memory term that decided the target (1 for the reason)",
            reason.clone(),
        );
        registry.register(
            "tailor_recommender_reconciles",
            "VerticalAutoscaler computations by outcome",
            reconciles.clone(),
        );
        registry.register(
            "tailor_recommender_reconcile_duration_seconds",
            "Time to compute one VerticalAutoscaler",
            duration.clone(),
        );
        registry.register(
            "tailor_recommender_last_pass_timestamp_seconds",
            "When the last pass over every VerticalAutoscaler finished",
            last_pass.clone(),
        );
        registry.register(
            "tailor_recommender_last_pass_duration_seconds",
            "How long the last pass over every VerticalAutoscaler took",
            pass_duration.clone(),
        );
        let client = ClientCounters::register(&mut registry);
        let pods = Family::<ObjectLabels, Gauge>::default();
        let requests_cpu = Family::<ContainerLabels, Gauge<f64, AtomicU64>>::default();
        let requests_memory = Family::<ContainerLabels, Gauge<f64, AtomicU64>>::default();
        let pod_info = Family::<PodLabels, Gauge>::default();
        registry.register(
            "tailor_workload_pods",
            "Pods of the VerticalAutoscaler's target (not being deleted)",
            pods.clone(),
        );
        registry.register(
            "tailor_workload_requests_cpu_cores",
            "Mean CPU request of the container over the target's pods, cores",
            requests_cpu.clone(),
        );
        registry.register(
            "tailor_workload_requests_memory_bytes",
            "Mean memory request of the container over the target's pods, bytes",
            requests_memory.clone(),
        );
        registry.register(
            "tailor_pod_info",
            "1 for each pod of a VerticalAutoscaler's target",
            pod_info.clone(),
        );
        registry.register(
            "tailor_recommender_leader",
            "1 on the replica that writes status",
            leader.clone(),
        );
        Self {
            registry,
            cpu,
            memory,
            reason,
            reconciles,
            duration,
            last_pass,
            pass_duration,
            client,
            leader,
            pods,
            requests_cpu,
            requests_memory,
            pod_info,
            exported: Mutex::new(HashMap::new()),
            workloads: Mutex::new(HashMap::new()),
            ready: AtomicBool::new(false),
        }
    }

    /// Exports the recommendation of one VerticalAutoscaler, replacing what it had.
    pub fn record(&self, namespace: &str, name: &str, recs: &[ContainerRecommendation]) {
        let mut exported = self
            .exported
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(old) = exported.remove(&(namespace.to_owned(), name.to_owned())) {
            self.forget(old);
        }
        let (mut cpu_keys, mut memory_keys, mut reason_keys) = (Vec::new(), Vec::new(), Vec::new());
        for r in recs {
            let labels = |bound: &str| ValueLabels {
                namespace: namespace.to_owned(),
                verticalautoscaler: name.to_owned(),
                container: r.container_name.clone(),
                bound: bound.to_owned(),
            };
            let mut values: Vec<(&str, Option<&Resources>)> = vec![("target", Some(&r.target))];
            values.push(("lower", r.lower_bound.as_ref()));
            values.push(("upper", r.upper_bound.as_ref()));
            values.push(("uncapped", r.uncapped_target.as_ref()));
            for (bound, res) in values {
                let Some(res) = res else { continue };
                if let Some(m) = res.cpu.as_ref().and_then(|q| cpu_millis(q).ok()) {
                    let l = labels(bound);
                    self.cpu.get_or_create(&l).set(m as f64 / 1000.0);
                    cpu_keys.push(l);
                }
                if let Some(b) = res.memory.as_ref().and_then(|q| memory_bytes(q).ok()) {
                    let l = labels(bound);
                    self.memory.get_or_create(&l).set(b as f64);
                    memory_keys.push(l);
                }
            }
            if let Some(floor) = &r.memory_floor {
                if let Ok(b) = memory_bytes(&floor.value) {
                    let l = labels("floor");
                    self.memory.get_or_create(&l).set(b as f64);
                    memory_keys.push(l);
                }
                let l = ReasonLabels {
                    namespace: namespace.to_owned(),
                    verticalautoscaler: name.to_owned(),
                    container: r.container_name.clone(),
                    reason: match floor.reason {
                        FloorReason::Percentile => "Percentile",
                        FloorReason::Peak => "Peak",
                        FloorReason::HeapHint => "HeapHint",
                        FloorReason::Oom => "OOM",
                        FloorReason::MemoryGuard => "MemoryGuard",
                    }
                    .to_owned(),
                };
                self.reason.get_or_create(&l).set(1);
                reason_keys.push(l);
            }
        }
        exported.insert(
            (namespace.to_owned(), name.to_owned()),
            (cpu_keys, memory_keys, reason_keys),
        );
    }

    /// Exports the pods of one object's target and their requests, replacing what it
    /// had.
    pub fn workload(&self, namespace: &str, name: &str, workload: &Workload) {
        let key = (namespace.to_owned(), name.to_owned());
        let mut workloads = self
            .workloads
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let containers: Vec<ContainerLabels> = workload
            .requests
            .iter()
            .map(|(c, _, _)| ContainerLabels {
                namespace: namespace.to_owned(),
                verticalautoscaler: name.to_owned(),
                container: c.clone(),
            })
            .collect();
        let pods: Vec<PodLabels> = workload
            .pods
            .iter()
            .map(|p| PodLabels {
                namespace: namespace.to_owned(),
                pod: p.clone(),
                verticalautoscaler: name.to_owned(),
            })
            .collect();
        if let Some((old_containers, old_pods)) = workloads.remove(&key) {
            for l in old_containers.iter().filter(|l| !containers.contains(l)) {
                self.requests_cpu.remove(l);
                self.requests_memory.remove(l);
            }
            for l in old_pods.iter().filter(|l| !pods.contains(l)) {
                self.pod_info.remove(l);
            }
        }
        self.pods
            .get_or_create(&ObjectLabels {
                namespace: namespace.to_owned(),
                verticalautoscaler: name.to_owned(),
            })
            .set(i64::try_from(workload.pods.len()).unwrap_or(i64::MAX));
        for (l, (_, cpu, memory)) in containers.iter().zip(&workload.requests) {
            match cpu {
                Some(v) => {
                    self.requests_cpu.get_or_create(l).set(*v);
                }
                None => {
                    self.requests_cpu.remove(l);
                }
            }
            match memory {
                Some(v) => {
                    self.requests_memory.get_or_create(l).set(*v);
                }
                None => {
                    self.requests_memory.remove(l);
                }
            }
        }
        for l in &pods {
            self.pod_info.get_or_create(l).set(1);
        }
        workloads.insert(key, (containers, pods));
    }

    fn forget_workload(&self, key: &(String, String)) {
        let mut workloads = self
            .workloads
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((containers, pods)) = workloads.remove(key) {
            for l in containers {
                self.requests_cpu.remove(&l);
                self.requests_memory.remove(&l);
            }
            for l in pods {
                self.pod_info.remove(&l);
            }
            self.pods.remove(&ObjectLabels {
                namespace: key.0.clone(),
                verticalautoscaler: key.1.clone(),
            });
        }
    }

    fn forget(&self, (cpu, memory, reason): Series) {
        for l in cpu {
            self.cpu.remove(&l);
        }
        for l in memory {
            self.memory.remove(&l);
        }
        for l in reason {
            self.reason.remove(&l);
        }
    }

    /// Drops the series of objects not in `live`.
    pub fn retain(&self, live: &std::collections::HashSet<(String, String)>) {
        let mut exported = self
            .exported
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let gone: Vec<_> = exported
            .keys()
            .filter(|k| !live.contains(*k))
            .cloned()
            .collect();
        for k in gone {
            if let Some(series) = exported.remove(&k) {
                self.forget(series);
            }
        }
        drop(exported);
        let gone: Vec<_> = self
            .workloads
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .keys()
            .filter(|k| !live.contains(*k))
            .cloned()
            .collect();
        for k in gone {
            self.forget_workload(&k);
        }
    }

    /// Counts one computation.
    pub fn reconciled(&self, outcome: &str, seconds: f64) {
        self.reconciles
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
        self.duration.observe(seconds);
    }

    /// Marks the end of a pass over every object, which took `seconds`.
    pub fn pass_done(&self, unix_seconds: f64, seconds: f64) {
        self.last_pass.set(unix_seconds);
        self.pass_duration.set(seconds);
        self.ready.store(true, Ordering::Relaxed);
    }

    /// Mirrors the Prometheus client's counters.
    pub fn prometheus_totals(&self, stats: &crate::prometheus::Stats) {
        self.client.mirror(stats);
    }

    /// Sets the leader gauge. A standby replica is ready as soon as it runs.
    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
        if !leader {
            self.ready.store(true, Ordering::Relaxed);
        }
    }

    /// Not ready until the next pass is over (a new leader starting its first pass).
    pub fn pass_started(&self) {
        self.ready.store(false, Ordering::Relaxed);
    }

    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        tailor_runtime::admin::encode(&self.registry)
    }
}

impl tailor_runtime::admin::Admin for Metrics {
    fn encode(&self) -> String {
        Metrics::encode(self)
    }

    fn not_ready(&self) -> Option<&'static str> {
        (!self.is_ready()).then_some("first pass not finished")
    }
}
