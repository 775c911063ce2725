//! The recommender controller: for every VerticalAutoscaler, resolve the workload's pods, read
//! their history from Prometheus, run the model and write `status.recommendation` and the
//! conditions with server-side apply.
//!
//! A pass over one object (`reconcile`): [`compute`] (check the spec, read the history
//! (`history`), estimate each container with its heap hints (`heap_hints`), the conditions),
//! then the metrics and the status write.
//!
//! - Triggers: a VerticalAutoscaler created or its spec changed (generation), and a refresh of
//!   every object each `refresh` interval.
//! - The updater's record of each object (its ResizeState) is mirrored into the status by
//!   [`crate::mirror`], under a field manager of its own.
//! - A failure to read history keeps the previous recommendation and sets
//!   `HistoryUnavailable`; one object's failure never stops the others.
//! - Pods, ReplicaSets and Jobs are read from reflectors (watch caches), not listed per object.
//! - Heap hints: with `heap.source: Auto`, the pod annotation wins; else the larger floor of the
//!   heap ceiling the JVM reports in Prometheus (see [`crate::model::heap::MeasuredHeaps`]) and
//!   the one its command line and environment give.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tailor_crds::v1alpha1::{
    ResizeOutcome, VerticalAutoscaler, VerticalAutoscalerStatus, condition,
};
use tailor_runtime::queue::Progress;
use tokio::sync::mpsc;

use crate::model::estimator::{Current, Settings};
use crate::model::heap::MeasuredHeaps;
use crate::prometheus::Prometheus;

mod compute;
mod heap_hints;
mod history;
mod inputs;
mod partial;
mod slim;

use compute::current;
pub use compute::{Outcome, compute};
pub use inputs::EstimatorInputs;

/// The field manager of everything the recommender writes.
pub const FIELD_MANAGER: &str = "tailor-recommender";
/// A pod annotation giving a container's heap ceiling: `tailor.dev/heap-max.<container>: 2Gi`
/// or `tailor.dev/heap-max: 2Gi` for every container.
pub const HEAP_ANNOTATION: &str = "tailor.dev/heap-max";

/// Controller settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// How often every object is recomputed.
    pub refresh: Duration,
    /// Objects computed at once.
    pub concurrency: usize,
    /// How far back each pass reads again what the previous one read, for samples that reach
    /// Prometheus late (remote-write lag).
    pub history_overlap: Duration,
    /// Model settings.
    pub settings: Settings,
    /// Checked immediately before each write: false once this replica may no longer lead.
    pub fence: tailor_runtime::lease::Fence,
    /// The namespaces watched: objects elsewhere are never read nor written.
    pub scope: tailor_runtime::Scope,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            refresh: Duration::from_secs(300),
            concurrency: 4,
            history_overlap: Duration::from_secs(120),
            settings: Settings::default(),
            fence: tailor_runtime::lease::Fence::always(),
            scope: tailor_runtime::Scope::Cluster,
        }
    }
}

/// Shared state of the controller (and of the one-shot CLI, which fills the caches from lists).
pub struct Context {
    metrics: Arc<crate::metrics::Metrics>,
    client: kube::Client,
    prometheus: Arc<Prometheus>,
    options: Options,
    pods: Store<slim::CachedPod>,
    /// The cached pods by controller owner.
    pod_index: tailor_runtime::index::OwnerIndex,
    replicasets: Store<PartialObjectMeta<ReplicaSet>>,
    jobs: Store<PartialObjectMeta<Job>>,
    cache: std::sync::Mutex<BTreeMap<(String, String), Cached>>,
}

/// What was read for one VerticalAutoscaler, so the next pass reads only what is new.
#[derive(Debug)]
struct Cached {
    target: (String, String),
    window: f64,
    /// The startup boosts whose windows were left out of the CPU history.
    boosts: BTreeMap<String, Option<f64>>,
    /// The workload's pods seen in Prometheus, with when each was last seen; those not seen
    /// within the window are forgotten ([`history::remember_pods`]).
    pods: BTreeMap<String, f64>,
    /// Samples settled for good, up to `settled`.
    histories: BTreeMap<String, crate::model::history::ContainerHistory>,
    /// Later samples, read again by the next pass.
    unsettled: crate::model::history::Unsettled,
    heaps: MeasuredHeaps,
    /// The last point of the object's query grid settled into `histories`.
    settled: f64,
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// Runs the controller until the future is dropped.
pub async fn run(
    client: kube::Client,
    prometheus: Arc<Prometheus>,
    options: Options,
    metrics: Arc<crate::metrics::Metrics>,
) {
    metrics.pass_started();
    let scope = options.scope.clone();
    let (pods, pod_index, pod_stream) =
        tailor_runtime::cache_indexed::<slim::CachedPod>(&scope, &client);
    let (replicasets, rs_stream) =
        tailor_runtime::cache_scoped::<PartialObjectMeta<ReplicaSet>>(&scope, &client);
    let (jobs, job_stream) =
        tailor_runtime::cache_scoped::<PartialObjectMeta<Job>>(&scope, &client);
    let (vas, va_writer) = reflector::store::<VerticalAutoscaler>();
    let ctx = Arc::new(Context {
        metrics,
        client: client.clone(),
        prometheus,
        options,
        pods,
        pod_index,
        replicasets,
        jobs,
        cache: Default::default(),
    });

    tracing::info!(
        scope = %scope,
        "starting watches of pods, ReplicaSets, Jobs and VerticalAutoscalers"
    );

    let (queue, keys) = mpsc::unbounded_channel::<ObjectRef<VerticalAutoscaler>>();
    // Spec changes (new generation) trigger at once, and so does a memory decrease the
    // updater took back (its usage raises the floor); other status writes do not. Every change
    // is looked at by the mirror.
    let trigger_queue = queue.clone();
    let (mirror_queue, mirror_keys) = mpsc::unbounded_channel::<crate::mirror::Key>();
    let va_mirror_queue = mirror_queue.clone();
    let va_stream = reflector::reflector(
        va_writer,
        scope
            .watcher(&client, &(), watcher::Config::default(), vas.clone())
            .modify(crate::mirror::slim_managed_fields),
    )
    .default_backoff()
    .applied_objects()
    .inspect(move |va| {
        tailor_runtime::report_watch("VerticalAutoscaler", va);
        if let Ok(va) = va {
            let _ = va_mirror_queue.send(ObjectRef::from_obj(va));
        }
    })
    .predicate_filter(trigger, Default::default())
    .for_each(move |va| {
        if let Ok(va) = va {
            let _ = trigger_queue.send(ObjectRef::from_obj(&va));
        }
        std::future::ready(())
    });
    let mirror = crate::mirror::run(
        client.clone(),
        (vas.clone(), &scope),
        ctx.options.fence.clone(),
        (mirror_queue, mirror_keys),
    );
    let timer = refresh(ctx.clone(), vas.clone(), queue);
    let worker = work(ctx, vas, keys);
    // Each watch in a task of its own; dropping `run` drops the set, which aborts them.
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(pod_stream);
    tasks.spawn(rs_stream);
    tasks.spawn(job_stream);
    tasks.spawn(va_stream);
    tasks.spawn(mirror);
    tasks.spawn(timer);
    tasks.spawn(worker);
    while tasks.join_next().await.is_some() {}
}

/// Every `refresh` interval: every object is queued again, and the metrics and cached history
/// of deleted objects go.
async fn refresh(
    ctx: Arc<Context>,
    vas: Store<VerticalAutoscaler>,
    queue: mpsc::UnboundedSender<ObjectRef<VerticalAutoscaler>>,
) {
    let mut interval = tokio::time::interval(ctx.options.refresh);
    interval.tick().await;
    loop {
        interval.tick().await;
        let state = vas.state();
        // Deleted objects' series go away.
        ctx.metrics.retain(
            &state
                .iter()
                .map(|va| (va.namespace().unwrap_or_default(), va.name_any()))
                .collect(),
        );
        // Deleted objects' cached history goes away.
        ctx.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|k, _| {
                state
                    .iter()
                    .any(|va| va.namespace().as_ref() == Some(&k.0) && va.name_any() == k.1)
            });
        if state.is_empty() {
            ctx.metrics.pass_done(now(), 0.0);
        }
        for va in state {
            let _ = queue.send(ObjectRef::from_obj(va.as_ref()));
        }
    }
}

/// Once the caches are synced, computes the queued objects, each by one task at a time
/// (triggers merge), and reports when a pass is over.
async fn work(
    ctx: Arc<Context>,
    vas: Store<VerticalAutoscaler>,
    work: mpsc::UnboundedReceiver<ObjectRef<VerticalAutoscaler>>,
) {
    let _health = tailor_runtime::health::LoopGuard::new("recommender");
    // Wait for the caches, so the first pass sees every pod.
    let _ = tokio::join!(
        ctx.pods.wait_until_ready(),
        ctx.replicasets.wait_until_ready(),
        ctx.jobs.wait_until_ready(),
        vas.wait_until_ready()
    );
    tracing::info!(
        verticalautoscalers = vas.len(),
        pods = ctx.pods.len(),
        "caches synced; first pass starts"
    );
    if vas.is_empty() {
        // Nothing to compute: the first pass is trivially over.
        ctx.metrics.pass_done(now(), 0.0);
    }
    let mut pass_start: Option<f64> = None;
    tailor_runtime::queue::run(
        work,
        ctx.options.concurrency,
        |key: ObjectRef<VerticalAutoscaler>| {
            let (ctx, vas) = (ctx.clone(), vas.clone());
            async move {
                if let Some(va) = vas.get(&key) {
                    reconcile(&ctx, &va).await;
                }
            }
        },
        |progress| {
            tailor_runtime::health::global().work(
                "recommender",
                progress,
                std::time::Instant::now(),
            );
            match progress {
                Progress::Received => {
                    pass_start.get_or_insert_with(now);
                }
                Progress::Done => {}
                // Every queued object is computed: a pass is over.
                Progress::Idle => {
                    let end = now();
                    ctx.metrics
                        .pass_done(end, end - pass_start.take().unwrap_or(end));
                }
            }
        },
    )
    .await;
}

/// Pods currently belonging to the workload, from the caches.
fn live_pods(ctx: &Context, namespace: &str, kind: &str, name: &str) -> Vec<Arc<Pod>> {
    tailor_runtime::workload::Owners {
        replicasets: ctx.replicasets.clone(),
        jobs: ctx.jobs.clone(),
    }
    .pods(&ctx.pods, &ctx.pod_index, namespace, kind, name)
    .iter()
    .map(|p| Arc::new(p.unpack()))
    .collect()
}

/// The pods of a target and their mean requests per container, for the metrics.
fn workload_of<'a>(pods: impl Iterator<Item = &'a Pod>) -> crate::metrics::Workload {
    let mut names = Vec::new();
    // container -> (cpu sum, cpu count, memory sum, memory count), in first-seen order
    let mut sums: Vec<(String, f64, u32, f64, u32)> = Vec::new();
    for pod in pods {
        names.push(pod.name_any());
        for c in pod.spec.iter().flat_map(|s| &s.containers) {
            let i = match sums.iter().position(|s| s.0 == c.name) {
                Some(i) => i,
                None => {
                    sums.push((c.name.clone(), 0.0, 0, 0.0, 0));
                    sums.len() - 1
                }
            };
            let cur = current(Some(pod), &c.name);
            if let Some(v) = cur.cpu {
                sums[i].1 += v;
                sums[i].2 += 1;
            }
            if let Some(v) = cur.memory {
                sums[i].3 += v;
                sums[i].4 += 1;
            }
        }
    }
    let mean = |sum: f64, n: u32| (n > 0).then(|| sum / f64::from(n));
    crate::metrics::Workload {
        pods: names,
        requests: sums
            .into_iter()
            .map(|(c, cs, cn, ms, mn)| (c, mean(cs, cn), mean(ms, mn)))
            .collect(),
    }
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("pods", &self.pods.len())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// A context whose caches hold `pods`, `replicasets` and `jobs` as listed once.
    pub fn from_lists(
        client: kube::Client,
        prometheus: Arc<Prometheus>,
        options: Options,
        pods: Vec<Pod>,
        replicasets: Vec<PartialObjectMeta<ReplicaSet>>,
        jobs: Vec<PartialObjectMeta<Job>>,
    ) -> Self {
        fn fill<K>(items: Vec<K>) -> Store<K>
        where
            K: kube::Resource + Clone + 'static,
            K::DynamicType: Default + Eq + std::hash::Hash + Clone,
        {
            let mut writer = reflector::store::Writer::<K>::default();
            writer.apply_watcher_event(&watcher::Event::Init);
            for item in items {
                writer.apply_watcher_event(&watcher::Event::InitApply(item));
            }
            writer.apply_watcher_event(&watcher::Event::InitDone);
            writer.as_reader()
        }
        Self {
            metrics: Arc::new(crate::metrics::Metrics::new()),
            client,
            prometheus,
            options,
            pod_index: tailor_runtime::index::OwnerIndex::of(&pods),
            pods: fill(
                pods.into_iter()
                    .filter_map(|p| slim::CachedPod::pack(p).ok())
                    .collect(),
            ),
            replicasets: fill(replicasets),
            jobs: fill(jobs),
            cache: Default::default(),
        }
    }

    /// The containers of the workload's current pods with their requests (cores, bytes).
    pub fn current_requests(
        &self,
        namespace: &str,
        kind: &str,
        name: &str,
    ) -> BTreeMap<String, Current> {
        let live = live_pods(self, namespace, kind, name);
        let Some(pod) = live.first() else {
            return BTreeMap::new();
        };
        pod.spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .map(|c| (c.name.clone(), current(Some(pod.as_ref()), &c.name)))
            .collect()
    }
}

/// What triggers a recompute of an object: its generation, its `Reverted` resizes (in
/// `status.lastResizes`) and the memory guard's raises (`status.memoryGuardRaises`), both
/// mirrored from the updater's ResizeState.
fn trigger(va: &VerticalAutoscaler) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    va.metadata.generation.hash(&mut h);
    for s in va.status.iter() {
        for r in &s.last_resizes {
            if r.outcome == ResizeOutcome::Reverted {
                (&r.pod, &r.pod_uid, r.time.0.as_second()).hash(&mut h);
            }
        }
        for r in &s.memory_guard_raises {
            (&r.pod_uid, &r.container_name, r.time.0.as_second()).hash(&mut h);
        }
    }
    Some(h.finish())
}

/// The metrics of one computed object.
fn record_metrics(
    ctx: &Context,
    va: &VerticalAutoscaler,
    outcome: &Outcome,
    started: std::time::Instant,
) {
    let on = |t: &str| outcome.conditions.iter().any(|(c, v, _, _)| *c == t && *v);
    let label = if on(condition::CONFIG_UNSUPPORTED) {
        "config_unsupported"
    } else if on(condition::HISTORY_UNAVAILABLE) {
        "history_unavailable"
    } else if on(condition::RECOMMENDATION_PROVIDED) {
        "recommended"
    } else {
        "not_recommended"
    };
    let (ns, name) = (va.namespace().unwrap_or_default(), va.name_any());
    let target = &va.spec.target_ref;
    let live = live_pods(ctx, &ns, &target.kind, &target.name);
    ctx.metrics
        .workload(&ns, &name, &workload_of(live.iter().map(AsRef::as_ref)));
    ctx.metrics.record(
        &ns,
        &name,
        outcome
            .recommendation
            .as_ref()
            .map(|r| r.container_recommendations.as_slice())
            .unwrap_or_default(),
    );
    ctx.metrics.prometheus_totals(ctx.prometheus.stats());
    ctx.metrics
        .reconciled(label, started.elapsed().as_secs_f64());
}

/// The computed conditions as status conditions: a condition whose status did not change
/// keeps its transition time.
fn status_conditions(
    va: &VerticalAutoscaler,
    computed: Vec<(&'static str, bool, &'static str, String)>,
) -> Vec<Condition> {
    let previous: BTreeMap<String, Condition> = va
        .status
        .as_ref()
        .map(|s| {
            s.conditions
                .iter()
                .map(|c| (c.type_.clone(), c.clone()))
                .collect()
        })
        .unwrap_or_default();
    let stamp = Time(k8s_openapi::jiff::Timestamp::now());
    computed
        .into_iter()
        .map(|(type_, on, reason, message)| {
            let status = if on { "True" } else { "False" };
            let since = previous
                .get(type_)
                .filter(|c| c.status == status)
                .map(|c| c.last_transition_time.clone())
                .unwrap_or_else(|| stamp.clone());
            Condition {
                type_: type_.to_owned(),
                status: status.to_owned(),
                reason: reason.to_owned(),
                message,
                last_transition_time: since,
                observed_generation: va.metadata.generation,
            }
        })
        .collect()
}

/// One pass over an object: compute (read and estimate), record the metrics, and write the
/// recommender's part of the status with server-side apply (only while leading).
async fn reconcile(ctx: &Context, va: &VerticalAutoscaler) {
    let started = std::time::Instant::now();
    let outcome = compute(ctx, va).await;
    record_metrics(ctx, va, &outcome, started);
    let status = VerticalAutoscalerStatus {
        observed_generation: va.metadata.generation,
        recommendation: outcome.recommendation,
        conditions: status_conditions(va, outcome.conditions),
        ..Default::default()
    };
    let api: Api<VerticalAutoscaler> =
        Api::namespaced(ctx.client.clone(), &va.namespace().unwrap_or_default());
    let patch = json!({
        "apiVersion": VerticalAutoscaler::api_version(&()),
        "kind": VerticalAutoscaler::kind(&()),
        "status": status,
    });
    if !ctx.options.fence.holds() {
        tracing::info!(va = %va.name_any(), "not the leader any more: status not written");
        return;
    }
    if let Err(e) = api
        .patch_status(
            &va.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(patch),
        )
        .await
    {
        tracing::warn!(va = %format!("{}/{}", va.namespace().unwrap_or_default(), va.name_any()), error = %e, "status not written");
    }
}
