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
//! | `tailor_recommender_leader` | 1 on the replica that writes |

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
    queries: Counter,
    samples: Counter,
    leader: Gauge,
    exported: Mutex<HashMap<(String, String), Series>>,
    ready: AtomicBool,
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
        let (queries, samples, leader) = (Counter::default(), Counter::default(), Gauge::default());
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
        registry.register(
            "tailor_recommender_prometheus_queries",
            "HTTP queries sent to Prometheus",
            queries.clone(),
        );
        registry.register(
            "tailor_recommender_prometheus_samples",
            "Samples received from Prometheus",
            samples.clone(),
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
            queries,
            samples,
            leader,
            exported: Mutex::new(HashMap::new()),
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
    pub fn prometheus_totals(&self, queries: u64, samples: u64) {
        let (q, s) = (self.queries.get(), self.samples.get());
        self.queries.inc_by(queries.saturating_sub(q));
        self.samples.inc_by(samples.saturating_sub(s));
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
