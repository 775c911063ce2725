//! The updater's metrics, served on `/metrics` by the admin server.
//!
//! | metric | labels | what |
//! | --- | --- | --- |
//! | `tailor_updater_resizes_total` | `outcome`, `resource` | resizes by outcome: `issued`, `applied`, `restarted`, `deferred`, `infeasible`, `error`, `failed`, `conflict`, `vanished`, `dry_run` |
//! | `tailor_updater_pending_approvals` | `namespace`, `verticalautoscaler` | memory decreases waiting for a person |
//! | `tailor_updater_recommendation_to_applied_seconds` | | time from first seeing a recommendation to its resize being complete on a pod |
//! | `tailor_updater_resizes_waiting` | `reason` = `restart_budget`, `infeasible` | planned resizes held back |
//! | `tailor_updater_reconciles_total` | | VerticalAutoscaler reconciles |
//! | `tailor_updater_api_requests_total` | `verb` | requests to the API server: `resize`, `get`, `status`, `event`; `event_dropped` counts Events not sent (queue full); `fenced` counts writes skipped because this replica could no longer be sure it leads |
//! | `tailor_updater_leader` | | 1 on the replica that writes |
//! | `tailor_updater_resize_started_timestamp_seconds` | `namespace`, `verticalautoscaler`, `pod`, `state` = `in_progress`, `deferred`, `infeasible`, `error` | when the kubelet set the condition of a resize that is not finished; present only while it is not |
//! | `tailor_updater_pending_approval_since_timestamp_seconds` | `namespace`, `verticalautoscaler`, `container`, `id`, `from`, `to` | when each memory decrease awaiting approval was first held |
//! | `tailor_updater_oom_kills_after_resize_total` | `namespace`, `verticalautoscaler`, `container` | OOM kills of a container within 24 h after tailor resized its pod |
//! | `tailor_updater_memory_guard_raises_total` | `namespace`, `verticalautoscaler`, `container` | memory limits the live memory guard raised |
//! | `tailor_updater_memory_guard_declined_total` | `reason` | hot containers the guard left alone: `MemoryGuardNeedsRestart`, `MemoryGuardAtMaxAllowed`, `MemoryGuardNoRoom` |
//! | `tailor_updater_memory_guard_scans_total` | `outcome` = `ok`, `error` | the guard's reads of every container's working set |
//!
//! The admission webhook's metrics (`tailor_admission_*`) are in
//! [`crate::admission::metrics`].

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
    resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VaLabels {
    namespace: String,
    verticalautoscaler: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PodStateLabels {
    namespace: String,
    verticalautoscaler: String,
    pod: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApprovalLabels {
    namespace: String,
    verticalautoscaler: String,
    container: String,
    id: String,
    from: String,
    to: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ContainerLabels {
    namespace: String,
    verticalautoscaler: String,
    container: String,
}

/// One unfinished resize, for `tailor_updater_resize_started_timestamp_seconds`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnfinishedResize {
    /// The pod.
    pub pod: String,
    /// `in_progress`, `deferred`, `infeasible` or `error`.
    pub state: &'static str,
    /// Unix seconds.
    pub since: i64,
}

/// One memory decrease awaiting approval, for
/// `tailor_updater_pending_approval_since_timestamp_seconds`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldDecrease {
    /// The container.
    pub container: String,
    /// The approval id.
    pub id: String,
    /// The current memory, as a quantity.
    pub from: String,
    /// The memory it would go to, as a quantity.
    pub to: String,
    /// Unix seconds.
    pub since: i64,
}

type PerObject<L> = Mutex<HashMap<(String, String), Vec<L>>>;

/// Replaces the series one object contributes to a gauge family.
fn replace<L>(
    family: &Family<L, Gauge>,
    tracked: &PerObject<L>,
    key: (String, String),
    now: Vec<(L, i64)>,
) where
    L: Clone + std::hash::Hash + Eq + prometheus_client::encoding::EncodeLabelSet + std::fmt::Debug,
{
    let mut tracked = tracked
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let labels: Vec<L> = now.iter().map(|(l, _)| l.clone()).collect();
    for old in tracked.remove(&key).unwrap_or_default() {
        if !labels.contains(&old) {
            family.remove(&old);
        }
    }
    for (l, v) in now {
        family.get_or_create(&l).set(v);
    }
    if !labels.is_empty() {
        tracked.insert(key, labels);
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeOnly {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerbLabels {
    verb: String,
}

/// The updater's metrics.
#[allow(missing_debug_implementations)] // the registry is not Debug
pub struct Metrics {
    registry: Registry,
    resizes: Family<OutcomeLabels, Counter>,
    pending: Family<VaLabels, Gauge>,
    to_applied: Histogram,
    waiting: Family<ReasonLabels, Gauge>,
    reconciles: Counter,
    requests: Family<VerbLabels, Counter>,
    leader: Gauge,
    started: Family<PodStateLabels, Gauge>,
    started_keys: PerObject<PodStateLabels>,
    held: Family<ApprovalLabels, Gauge>,
    held_keys: PerObject<ApprovalLabels>,
    oom: Family<ContainerLabels, Counter>,
    guard_raises: Family<ContainerLabels, Counter>,
    guard_declined: Family<ReasonLabels, Counter>,
    guard_scans: Family<OutcomeOnly, Counter>,
    pending_keys: Mutex<HashSet<(String, String)>>,
    ready: AtomicBool,
    standby: AtomicBool,
    issued: AtomicU64,
    /// The admission webhook's metrics.
    pub admission: crate::admission::metrics::AdmissionMetrics,
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
        let resizes = Family::<OutcomeLabels, Counter>::default();
        let pending = Family::<VaLabels, Gauge>::default();
        let to_applied = Histogram::new(exponential_buckets(0.5, 2.0, 14));
        let waiting = Family::<ReasonLabels, Gauge>::default();
        let reconciles = Counter::default();
        let requests = Family::<VerbLabels, Counter>::default();
        let leader = Gauge::default();
        let started = Family::<PodStateLabels, Gauge>::default();
        let held = Family::<ApprovalLabels, Gauge>::default();
        let oom = Family::<ContainerLabels, Counter>::default();
        let guard_raises = Family::<ContainerLabels, Counter>::default();
        let guard_declined = Family::<ReasonLabels, Counter>::default();
        let guard_scans = Family::<OutcomeOnly, Counter>::default();
        registry.register(
            "tailor_updater_memory_guard_raises",
            "Memory limits the live memory guard raised",
            guard_raises.clone(),
        );
        registry.register(
            "tailor_updater_memory_guard_declined",
            "Containers near their memory limit the memory guard left alone, by reason",
            guard_declined.clone(),
        );
        registry.register(
            "tailor_updater_memory_guard_scans",
            "The memory guard's reads of every container's working set, by outcome",
            guard_scans.clone(),
        );
        for outcome in ["ok", "error"] {
            let _ = guard_scans.get_or_create(&OutcomeOnly {
                outcome: outcome.to_owned(),
            });
        }
        registry.register(
            "tailor_updater_resize_started_timestamp_seconds",
            "When the kubelet set the condition of a resize that is not finished, by state",
            started.clone(),
        );
        registry.register(
            "tailor_updater_pending_approval_since_timestamp_seconds",
            "When each memory decrease awaiting approval was first held",
            held.clone(),
        );
        registry.register(
            "tailor_updater_oom_kills_after_resize",
            "OOM kills of a container within 24 hours after tailor resized its pod",
            oom.clone(),
        );
        registry.register(
            "tailor_updater_resizes",
            "Pod resizes by outcome and resource",
            resizes.clone(),
        );
        registry.register(
            "tailor_updater_pending_approvals",
            "Memory decreases waiting for approval",
            pending.clone(),
        );
        registry.register(
            "tailor_updater_recommendation_to_applied_seconds",
            "Time from first seeing a recommendation to a pod's resize to it being complete",
            to_applied.clone(),
        );
        registry.register(
            "tailor_updater_resizes_waiting",
            "Planned resizes held back, by reason",
            waiting.clone(),
        );
        registry.register(
            "tailor_updater_reconciles",
            "VerticalAutoscaler reconciles",
            reconciles.clone(),
        );
        registry.register(
            "tailor_updater_api_requests",
            "Writes and reads the updater sends to the API server outside its watches",
            requests.clone(),
        );
        registry.register(
            "tailor_updater_leader",
            "1 on the replica that writes",
            leader.clone(),
        );
        let admission = crate::admission::metrics::AdmissionMetrics::default();
        admission.register(&mut registry);
        Self {
            registry,
            resizes,
            pending,
            to_applied,
            waiting,
            reconciles,
            requests,
            leader,
            started,
            started_keys: Mutex::default(),
            held,
            held_keys: Mutex::default(),
            oom,
            guard_raises,
            guard_declined,
            guard_scans,
            pending_keys: Mutex::new(HashSet::new()),
            ready: AtomicBool::new(false),
            standby: AtomicBool::new(true),
            issued: AtomicU64::new(0),
            admission,
        }
    }

    /// Counts a raise by the memory guard.
    pub fn guard_raised(&self, namespace: &str, name: &str, container: &str) {
        self.guard_raises
            .get_or_create(&ContainerLabels {
                namespace: namespace.to_owned(),
                verticalautoscaler: name.to_owned(),
                container: container.to_owned(),
            })
            .inc();
    }

    /// Counts a hot container the memory guard left alone.
    pub fn guard_declined(&self, reason: &str) {
        self.guard_declined
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Counts a memory guard scan.
    pub fn guard_scanned(&self, ok: bool) {
        let outcome = if ok { "ok" } else { "error" };
        self.guard_scans
            .get_or_create(&OutcomeOnly {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Counts a resize outcome for each resource it touched.
    pub fn resize(&self, outcome: &str, resources: &[&str]) {
        for r in resources {
            self.resizes
                .get_or_create(&OutcomeLabels {
                    outcome: outcome.to_owned(),
                    resource: (*r).to_owned(),
                })
                .inc();
        }
        if outcome == "issued" {
            self.issued.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Resizes issued since start.
    pub fn issued(&self) -> u64 {
        self.issued.load(Ordering::Relaxed)
    }

    /// Sets the pending approvals of one VerticalAutoscaler.
    pub fn pending(&self, namespace: &str, name: &str, count: usize) {
        let key = (namespace.to_owned(), name.to_owned());
        let labels = VaLabels {
            namespace: key.0.clone(),
            verticalautoscaler: key.1.clone(),
        };
        let mut keys = self
            .pending_keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if count == 0 {
            if keys.remove(&key) {
                self.pending.remove(&labels);
            }
            return;
        }
        keys.insert(key);
        self.pending
            .get_or_create(&labels)
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// Sets the unfinished resizes of one VerticalAutoscaler's pods.
    pub fn unfinished(&self, namespace: &str, name: &str, resizes: &[UnfinishedResize]) {
        let series = resizes
            .iter()
            .map(|r| {
                let labels = PodStateLabels {
                    namespace: namespace.to_owned(),
                    verticalautoscaler: name.to_owned(),
                    pod: r.pod.clone(),
                    state: r.state.to_owned(),
                };
                (labels, r.since)
            })
            .collect();
        let key = (namespace.to_owned(), name.to_owned());
        replace(&self.started, &self.started_keys, key, series);
    }

    /// Sets the memory decreases one VerticalAutoscaler holds for approval.
    pub fn held(&self, namespace: &str, name: &str, decreases: &[HeldDecrease]) {
        let series = decreases
            .iter()
            .map(|d| {
                let labels = ApprovalLabels {
                    namespace: namespace.to_owned(),
                    verticalautoscaler: name.to_owned(),
                    container: d.container.clone(),
                    id: d.id.clone(),
                    from: d.from.clone(),
                    to: d.to.clone(),
                };
                (labels, d.since)
            })
            .collect();
        let key = (namespace.to_owned(), name.to_owned());
        replace(&self.held, &self.held_keys, key, series);
    }

    /// Counts an OOM kill after a resize.
    pub fn oom_after_resize(&self, namespace: &str, name: &str, container: &str) {
        self.oom
            .get_or_create(&ContainerLabels {
                namespace: namespace.to_owned(),
                verticalautoscaler: name.to_owned(),
                container: container.to_owned(),
            })
            .inc();
    }

    /// Observes the time from a recommendation to its resize being complete.
    pub fn applied_after(&self, seconds: f64) {
        self.to_applied.observe(seconds);
    }

    /// Sets the number of resizes held back for `reason`.
    pub fn waiting(&self, reason: &str, count: usize) {
        self.waiting
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// Counts a reconcile.
    pub fn reconciled(&self) {
        self.reconciles.inc();
    }

    /// Counts a request to the API server.
    pub fn request(&self, verb: &str) {
        self.requests
            .get_or_create(&VerbLabels {
                verb: verb.to_owned(),
            })
            .inc();
    }

    /// Records whether this replica leads.
    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
        self.standby.store(!leader, Ordering::Relaxed);
        if leader {
            self.ready.store(false, Ordering::Relaxed);
        }
    }

    /// The first pass is over.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Relaxed);
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
        if self.admission.waiting() {
            return Some("the admission webhook has no certificate or its caches are not synced");
        }
        // A standby is ready: it serves metrics, the webhook, and waits for the lease.
        if self.standby.load(Ordering::Relaxed) || self.ready.load(Ordering::Relaxed) {
            None
        } else {
            Some("caches not synced or first pass not finished")
        }
    }
}
