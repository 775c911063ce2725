//! The recommender controller: for every VerticalAutoscaler, resolve the workload's pods, read
//! their history from Prometheus, run the model and write `status.recommendation` and the
//! conditions with server-side apply.
//!
//! - Triggers: a VerticalAutoscaler created or its spec changed (generation), and a refresh of
//!   every object each `refresh` interval.
//! - The updater's record of each object (its ResizeState) is mirrored into the status by
//!   [`crate::mirror`], under a field manager of its own.
//! - A failure to read history keeps the previous recommendation and sets
//!   `HistoryUnavailable`; one object's failure never stops the others.
//! - Pods, ReplicaSets and Jobs are read from reflectors (watch caches), not listed per object.
//! - Heap hints: with `heap.source: Auto`, the pod annotation wins; else the larger floor of the
//!   heap ceiling the JVM reports in Prometheus (see [`heap::MeasuredHeaps`]) and the one its
//!   command line and environment give.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tailor_crds::quantity::{cpu_millis, format_cpu_millis, format_memory_bytes, memory_bytes};
use tailor_crds::v1alpha1::{
    ContainerRecommendation, FloorReason, HeapSource, MemoryFloor, Recommendation, ResizeOutcome,
    ResourceName, Resources, SUPPORTED_TARGETS, VerticalAutoscaler, VerticalAutoscalerStatus,
    condition,
};
use tailor_runtime::queue::Progress;
use tokio::sync::mpsc;

use crate::model::estimator::{self, Current, Estimate, MemoryReason, Settings, Verdict};
use crate::model::heap::{self, HeapHint, HeapSize, MeasuredHeaps, MeasuredKey, Process, Runtime};
use crate::model::history::ContainerHistory;
use crate::prometheus::{HistoryError, Prometheus};
use crate::spec;

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
    /// Model settings.
    pub settings: Settings,
    /// Checked immediately before each write: false once this replica may no longer lead.
    pub fence: tailor_runtime::lease::Fence,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            refresh: Duration::from_secs(300),
            concurrency: 4,
            settings: Settings::default(),
            fence: tailor_runtime::lease::Fence::always(),
        }
    }
}

/// Shared state of the controller (and of the one-shot CLI, which fills the caches from lists).
pub struct Context {
    metrics: Arc<crate::metrics::Metrics>,
    client: kube::Client,
    prometheus: Arc<Prometheus>,
    options: Options,
    pods: Store<Pod>,
    replicasets: Store<PartialObjectMeta<ReplicaSet>>,
    jobs: Store<PartialObjectMeta<Job>>,
    cache: std::sync::Mutex<BTreeMap<(String, String), Cached>>,
}

/// What was read for one VerticalAutoscaler, so the next pass reads only what is new.
#[derive(Debug)]
struct Cached {
    target: (String, String),
    window: f64,
    pods: std::collections::BTreeSet<String>,
    histories: BTreeMap<String, crate::model::history::ContainerHistory>,
    heaps: MeasuredHeaps,
    until: f64,
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
    let (pods, pod_stream) = tailor_runtime::cache(Api::<Pod>::all(client.clone()));
    let (replicasets, rs_stream) =
        tailor_runtime::cache(Api::<PartialObjectMeta<ReplicaSet>>::all(client.clone()));
    let (jobs, job_stream) =
        tailor_runtime::cache(Api::<PartialObjectMeta<Job>>::all(client.clone()));
    let (vas, va_writer) = reflector::store::<VerticalAutoscaler>();
    let ctx = Arc::new(Context {
        metrics,
        client: client.clone(),
        prometheus,
        options,
        pods,
        replicasets,
        jobs,
        cache: Default::default(),
    });

    tracing::info!("starting watches of pods, ReplicaSets, Jobs and VerticalAutoscalers");

    let (queue, work) = mpsc::unbounded_channel::<ObjectRef<VerticalAutoscaler>>();
    // Spec changes (new generation) trigger at once, and so does a memory decrease the
    // updater took back (its usage raises the floor); other status writes do not. Every change
    // is looked at by the mirror.
    let trigger_queue = queue.clone();
    let (mirror_queue, mirror_keys) = mpsc::unbounded_channel::<crate::mirror::Key>();
    let va_mirror_queue = mirror_queue.clone();
    let va_stream = reflector::reflector(
        va_writer,
        watcher(
            Api::<VerticalAutoscaler>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .applied_objects()
    .inspect(move |va| {
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
        vas.clone(),
        ctx.options.fence.clone(),
        (mirror_queue, mirror_keys),
    );
    let refresh_vas = vas.clone();
    let refresh = ctx.options.refresh;
    let timer_metrics = ctx.metrics.clone();
    let timer_ctx = ctx.clone();
    let timer = async move {
        let mut interval = tokio::time::interval(refresh);
        interval.tick().await;
        loop {
            interval.tick().await;
            let state = refresh_vas.state();
            // Deleted objects' series go away.
            timer_metrics.retain(
                &state
                    .iter()
                    .map(|va| (va.namespace().unwrap_or_default(), va.name_any()))
                    .collect(),
            );
            // Deleted objects' cached history goes away.
            timer_ctx
                .cache
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .retain(|k, _| {
                    state
                        .iter()
                        .any(|va| va.namespace().as_ref() == Some(&k.0) && va.name_any() == k.1)
                });
            if state.is_empty() {
                timer_metrics.pass_done(now(), 0.0);
            }
            for va in state {
                let _ = queue.send(ObjectRef::from_obj(va.as_ref()));
            }
        }
    };
    let worker = async move {
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
        // Each object is computed by one task at a time; triggers merge.
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
            |progress| match progress {
                Progress::Received => {
                    pass_start.get_or_insert_with(now);
                }
                // Every queued object is computed: a pass is over.
                Progress::Idle => {
                    let end = now();
                    ctx.metrics
                        .pass_done(end, end - pass_start.take().unwrap_or(end));
                }
            },
        )
        .await;
    };
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

/// Pods currently belonging to the workload, from the caches.
fn live_pods(ctx: &Context, namespace: &str, kind: &str, name: &str) -> Vec<Arc<Pod>> {
    tailor_runtime::workload::Owners {
        replicasets: ctx.replicasets.clone(),
        jobs: ctx.jobs.clone(),
    }
    .pods(&ctx.pods, namespace, kind, name)
}

fn process_of(c: &Container) -> (Vec<String>, Vec<String>, Vec<(String, String)>) {
    let env = c
        .env
        .iter()
        .flatten()
        .filter_map(|e| e.value.clone().map(|v| (e.name.clone(), v)))
        .collect();
    (
        c.command.clone().unwrap_or_default(),
        c.args.clone().unwrap_or_default(),
        env,
    )
}

/// The heap floor for a container, and the hint that set it. `measured`: the heap ceiling the
/// container's JVM reported in its metrics, if any.
///
/// With `heap.source: Auto`, a pod annotation is taken as it is: a person said so. Otherwise
/// the measured ceiling and the one the process's flags give are both weighed and the higher
/// floor wins. The measured ceiling is what the JVM actually resolved (a
/// `-XX:MaxRAMPercentage` against its real limit, an `-Xmx` baked into the image's entrypoint),
/// so it usually beats a percentage read from the command line; an explicit `-Xmx` and the
/// measurement should agree, and if they do not, the larger is the safe one.
fn heap_floor(
    policy: &tailor_crds::v1alpha1::ContainerPolicy,
    pod: Option<&Pod>,
    container: &str,
    measured: Option<&HeapHint>,
) -> Result<Option<(f64, HeapHint)>, String> {
    let heap_policy = policy.heap.clone().unwrap_or_default();
    let overhead = heap_policy
        .overhead
        .as_ref()
        .map(|q| memory_bytes(q).map(|b| b as f64))
        .transpose()
        .map_err(|e| format!("heap.overhead: {e}"))?;
    let hints: Vec<HeapHint> = match heap_policy.source {
        HeapSource::Off => Vec::new(),
        HeapSource::Explicit => heap_policy
            .max_heap
            .as_ref()
            .map(|q| memory_bytes(q).map(|b| b as f64))
            .transpose()
            .map_err(|e| format!("heap.maxHeap: {e}"))?
            .map(|bytes| HeapHint {
                runtime: Runtime::Explicit,
                size: HeapSize::Bytes(bytes),
                source: "heap.maxHeap".into(),
            })
            .into_iter()
            .collect(),
        HeapSource::Auto => {
            if let Some(hint) = pod.and_then(|pod| annotated_heap(pod, container)) {
                vec![hint]
            } else {
                let detected = pod
                    .and_then(|p| p.spec.as_ref())
                    .and_then(|s| s.containers.iter().find(|c| c.name == container))
                    .and_then(detect);
                measured.cloned().into_iter().chain(detected).collect()
            }
        }
    };
    Ok(heap::highest(hints, overhead))
}

/// The heap hint of the process a container starts, from its command, args and environment.
fn detect(c: &Container) -> Option<HeapHint> {
    let (command, args, env) = process_of(c);
    heap::detect(&Process {
        command: &command,
        args: &args,
        env: &env,
    })
}

/// The heap ceiling a pod annotation gives `container`.
fn annotated_heap(pod: &Pod, container: &str) -> Option<HeapHint> {
    let annotations = pod.metadata.annotations.as_ref();
    let v = annotations.and_then(|a| {
        a.get(&format!("{HEAP_ANNOTATION}.{container}"))
            .or_else(|| a.get(HEAP_ANNOTATION))
    })?;
    let bytes = memory_bytes(&k8s_openapi::apimachinery::pkg::api::resource::Quantity(
        v.clone(),
    ))
    .ok()?;
    Some(HeapHint {
        runtime: Runtime::Explicit,
        size: HeapSize::Bytes(bytes as f64),
        source: format!("annotation {HEAP_ANNOTATION}"),
    })
}

/// The heap ceiling each container's JVM reported, the largest over the workload's pods.
/// A series without a `container` label is attributed by the pod's spec (from the cache, or
/// for pods that are gone, the current `template`); one that cannot be attributed is left out.
fn measured_heaps(
    ctx: &Context,
    namespace: &str,
    heaps: &MeasuredHeaps,
    template: Option<&Pod>,
) -> BTreeMap<String, HeapHint> {
    let mut out: BTreeMap<String, (f64, HeapHint)> = BTreeMap::new();
    for (key, bytes) in heaps.maxima() {
        let containers: Vec<(String, Option<Runtime>)> = if key.container.is_empty() {
            let cached = ctx.pods.get(&ObjectRef::new(&key.pod).within(namespace));
            cached
                .as_deref()
                .or(template)
                .and_then(|p| p.spec.as_ref())
                .map(|s| {
                    s.containers
                        .iter()
                        .map(|c| (c.name.clone(), detect(c).map(|h| h.runtime)))
                        .collect()
                })
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let Some(container) = heap::attribute(&key.container, &containers) else {
            tracing::debug!(
                namespace,
                pod = %key.pod,
                metric = %key.metric,
                bytes,
                "JVM heap metric without a container label in a pod whose JVM container cannot be told; ignored"
            );
            continue;
        };
        if out.get(container).is_none_or(|(b, _)| bytes > *b) {
            out.insert(
                container.to_owned(),
                (bytes, heap::measured_hint(&key.metric, bytes)),
            );
        }
    }
    out.into_iter().map(|(c, (_, h))| (c, h)).collect()
}

fn current(pod: Option<&Pod>, container: &str) -> Current {
    let requests = pod
        .and_then(|p| p.spec.as_ref())
        .and_then(|s| s.containers.iter().find(|c| c.name == container))
        .and_then(|c| c.resources.as_ref())
        .and_then(|r| r.requests.clone())
        .unwrap_or_default();
    Current {
        cpu: requests
            .get("cpu")
            .and_then(|q| cpu_millis(q).ok())
            .map(|m| m as f64 / 1000.0),
        memory: requests
            .get("memory")
            .and_then(|q| memory_bytes(q).ok())
            .map(|b| b as f64),
    }
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

fn reason(r: MemoryReason) -> FloorReason {
    match r {
        MemoryReason::Percentile => FloorReason::Percentile,
        MemoryReason::Peak => FloorReason::Peak,
        MemoryReason::HeapHint => FloorReason::HeapHint,
        MemoryReason::Oom => FloorReason::Oom,
    }
}

fn resources(cpu: Option<i64>, memory: Option<i64>) -> Resources {
    Resources {
        cpu: cpu.map(format_cpu_millis),
        memory: memory.map(format_memory_bytes),
    }
}

fn to_status(container: &str, e: &Estimate, cpu: bool, memory: bool) -> ContainerRecommendation {
    let pick = |a: estimator::Amounts| resources(cpu.then_some(a.cpu), memory.then_some(a.memory));
    ContainerRecommendation {
        container_name: container.to_owned(),
        target: pick(e.target),
        lower_bound: Some(pick(e.lower)),
        upper_bound: Some(pick(e.upper)),
        uncapped_target: Some(pick(e.uncapped)),
        memory_floor: memory.then(|| MemoryFloor {
            value: format_memory_bytes(e.floor),
            reason: reason(e.reason),
            peak_margin: Some((e.peak_margin * 1000.0).round() / 1000.0),
        }),
        samples: Some(e.samples as i64),
        history_span: Some(spec::format_duration(e.span)),
        observed_peak: Some(resources(Some(e.peak.cpu), Some(e.peak.memory))),
    }
}

/// The outcome of computing one object, before it is written.
#[derive(Debug)]
pub struct Outcome {
    /// The recommendation to write (the previous one when history is unavailable).
    pub recommendation: Option<Recommendation>,
    /// `(type, status, reason, message)` of each condition.
    pub conditions: Vec<(&'static str, bool, &'static str, String)>,
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
            pods: fill(pods),
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

/// Reads the workload's history: only what is new since the last pass for pods already read,
/// the whole window for pods not seen before (a new rollout) or without a previous pass.
async fn read_history(
    ctx: &Context,
    ns: &str,
    (kind, name): (&str, &str),
    (start, end, window): (f64, f64, f64),
    cached: Option<Cached>,
) -> Result<Cached, HistoryError> {
    let step = ctx.prometheus.config().step.as_secs_f64().max(1.0);
    // With a previous pass, only pods that existed since then can have new samples: the
    // ownership query looks back that far, not over the whole window.
    let (mut histories, mut heaps, known, from, lookback, heap_since) = match cached {
        Some(c) => {
            let since = (end - c.until).max(0.0) + 2.0 * step;
            (
                c.histories,
                c.heaps,
                c.pods,
                c.until + step,
                since.max(300.0).min(window),
                c.until,
            )
        }
        None => (
            BTreeMap::new(),
            MeasuredHeaps::default(),
            Default::default(),
            start,
            window,
            start,
        ),
    };
    let recent: std::collections::BTreeSet<String> = ctx
        .prometheus
        .workload_pods(ns, kind, name, end, lookback)
        .await?
        .into_iter()
        .collect();
    let old: Vec<String> = recent.intersection(&known).cloned().collect();
    let new: Vec<String> = recent.difference(&known).cloned().collect();
    ctx.prometheus
        .extend_history(&mut histories, ns, &old, from.max(start), end)
        .await?;
    ctx.prometheus
        .extend_history(&mut histories, ns, &new, start, end)
        .await?;
    for h in histories.values_mut() {
        h.expire(start);
    }
    // JVM heap ceilings: since the last pass for pods already read, the whole window for new
    // ones.
    for (pods, since) in [(&old, heap_since.max(start)), (&new, start)] {
        for h in ctx.prometheus.jvm_heaps(ns, pods, since, end).await? {
            let key = MeasuredKey {
                pod: h.pod,
                container: h.container,
                metric: h.metric,
            };
            for (t, bytes) in h.samples {
                if !heaps.add(key.clone(), t, bytes) {
                    tracing::debug!(namespace = ns, pod = %key.pod, metric = %key.metric, bytes, "JVM heap metric is not a positive number; ignored");
                }
            }
        }
    }
    heaps.expire(start);
    let pods = known.union(&recent).cloned().collect();
    Ok(Cached {
        target: (kind.to_owned(), name.to_owned()),
        window,
        pods,
        histories,
        heaps,
        until: end,
    })
}

/// What triggers a recompute of an object: its generation and its `Reverted` resizes (in
/// `status.lastResizes`, mirrored from the updater's ResizeState).
fn trigger(va: &VerticalAutoscaler) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    va.metadata.generation.hash(&mut h);
    for r in va.status.iter().flat_map(|s| &s.last_resizes) {
        if r.outcome == ResizeOutcome::Reverted {
            (&r.pod, &r.pod_uid, r.time.0.as_second()).hash(&mut h);
        }
    }
    Some(h.finish())
}

/// The history with the memory usage the kubelet reported when it refused one of the
/// updater's memory decreases (`status.lastResizes`, outcome `Reverted`) in the window: an
/// observation like any sample, so the floor stays above it.
fn with_refused_usage<'a>(
    h: &'a ContainerHistory,
    va: &VerticalAutoscaler,
    container: &str,
    since: f64,
) -> std::borrow::Cow<'a, ContainerHistory> {
    let refused: Vec<(f64, f64)> = va
        .status
        .as_ref()
        .map(|s| s.last_resizes.as_slice())
        .unwrap_or_default()
        .iter()
        .filter(|r| r.outcome == ResizeOutcome::Reverted)
        .flat_map(|r| {
            let t = r.time.0.as_millisecond() as f64 / 1000.0;
            r.containers
                .iter()
                .filter(|c| c.container_name == container)
                .filter_map(move |c| {
                    Some((t, memory_bytes(c.refused_usage.as_ref()?).ok()? as f64))
                })
        })
        .filter(|(t, _)| *t >= since)
        .collect();
    if refused.is_empty() {
        return std::borrow::Cow::Borrowed(h);
    }
    let mut h = h.clone();
    for (t, bytes) in refused {
        h.add_memory(t, bytes);
    }
    std::borrow::Cow::Owned(h)
}

/// Computes one VerticalAutoscaler's recommendation and conditions without writing them.
pub async fn compute(ctx: &Context, va: &VerticalAutoscaler) -> Outcome {
    let mut conditions = Vec::new();
    let previous = va.status.as_ref().and_then(|s| s.recommendation.clone());
    let ns = va.namespace().unwrap_or_default();
    let target = &va.spec.target_ref;
    let unsupported = |message: String| Outcome {
        recommendation: previous.clone(),
        conditions: vec![
            (
                condition::CONFIG_UNSUPPORTED,
                true,
                "UnsupportedTarget",
                message,
            ),
            (
                condition::RECOMMENDATION_PROVIDED,
                false,
                "ConfigUnsupported",
                "see ConfigUnsupported".into(),
            ),
        ],
    };
    if !SUPPORTED_TARGETS
        .iter()
        .any(|(v, k)| *v == target.api_version && *k == target.kind)
    {
        return unsupported(format!(
            "targetRef {}/{} is not a workload tailor can resolve (supported: Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob)",
            target.api_version, target.kind
        ));
    }
    let window = match spec::parse_duration(&va.spec.recommender_policy.history_window) {
        Ok(w) => w,
        Err(e) => return unsupported(format!("recommenderPolicy.historyWindow: {e}")),
    };
    // ConfigUnsupported is written only while true: the updater sets it for an HPA conflict,
    // and each writer's entry goes away when it stops applying it.

    let live = live_pods(ctx, &ns, &target.kind, &target.name);
    let template = live.first().map(|p| p.as_ref());
    let end = now();
    let start = end - window;
    let key = (ns.clone(), va.name_any());
    let target_key = (target.kind.clone(), target.name.clone());
    let cached = ctx
        .cache
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .remove(&key)
        .filter(|c| c.target == target_key && c.window == window);
    let history = read_history(
        ctx,
        &ns,
        (&target.kind, &target.name),
        (start, end, window),
        cached,
    )
    .await;
    let history = match history {
        Ok(c) => {
            let result = (
                c.pods.iter().cloned().collect::<Vec<_>>(),
                c.histories.clone(),
                measured_heaps(ctx, &ns, &c.heaps, template),
            );
            ctx.cache
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(key, c);
            Ok(result)
        }
        Err(e) => Err(e),
    };
    let (history_pods, histories, measured) = match history {
        Ok(h) => h,
        Err(e) => {
            conditions.push((
                condition::HISTORY_UNAVAILABLE,
                true,
                "PrometheusError",
                e.to_string(),
            ));
            let kept = previous.is_some();
            conditions.push((
                condition::RECOMMENDATION_PROVIDED,
                kept,
                if kept {
                    "PreviousRecommendationKept"
                } else {
                    "HistoryUnavailable"
                },
                "usage history could not be read; see HistoryUnavailable".into(),
            ));
            return Outcome {
                recommendation: previous,
                conditions,
            };
        }
    };
    conditions.push((
        condition::HISTORY_UNAVAILABLE,
        false,
        "HistoryRead",
        format!("history of {} pods read", history_pods.len()),
    ));
    let no_pods = live.is_empty() && history_pods.is_empty();
    conditions.push((
        condition::NO_PODS_MATCHED,
        no_pods,
        if no_pods { "NoPods" } else { "PodsFound" },
        format!(
            "{} running pods and {} pods in the history window of {}/{}",
            live.len(),
            history_pods.len(),
            target.kind,
            target.name
        ),
    ));

    // Containers: those of the live pods, else those in the history.
    let mut names: Vec<String> = template
        .and_then(|p| p.spec.as_ref())
        .map(|s| s.containers.iter().map(|c| c.name.clone()).collect())
        .unwrap_or_else(|| histories.keys().cloned().collect());
    names.retain(|n| !n.is_empty());

    let mut recs = Vec::new();
    let mut low = Vec::new();
    let mut missing = Vec::new();
    for name in &names {
        let policy = spec::container_policy(&va.spec, name);
        if !spec::is_controlled(&policy) {
            continue;
        }
        let model_policy = match spec::model_policy(&va.spec, &policy) {
            Ok(p) => p,
            Err(e) => return unsupported(format!("container {name}: {e}")),
        };
        let heap = match heap_floor(&policy, template, name, measured.get(name)) {
            Ok(h) => h.map(|(floor, hint)| {
                tracing::debug!(
                    namespace = %ns,
                    verticalautoscaler = %va.name_any(),
                    container = %name,
                    floor,
                    source = %hint.source,
                    "heap hint"
                );
                floor
            }),
            Err(e) => return unsupported(format!("container {name}: {e}")),
        };
        let Some(h) = histories.get(name) else {
            missing.push(format!("{name}: no samples"));
            continue;
        };
        let h = with_refused_usage(h, va, name, start);
        match estimator::estimate(
            &h,
            &model_policy,
            heap,
            &current(template, name),
            &ctx.options.settings,
        ) {
            Verdict::Estimate(e) => {
                if e.low_confidence {
                    low.push(format!("{name}: {}", spec::format_duration(e.span)));
                }
                recs.push(to_status(
                    name,
                    &e,
                    spec::controls(&policy, ResourceName::Cpu),
                    spec::controls(&policy, ResourceName::Memory),
                ));
            }
            Verdict::NotEnoughHistory(m) => missing.push(format!("{name}: {m}")),
        }
    }
    let low_confidence = !low.is_empty() || !missing.is_empty();
    conditions.push((
        condition::LOW_CONFIDENCE,
        low_confidence,
        if low_confidence {
            "LittleHistory"
        } else {
            "EnoughHistory"
        },
        if low_confidence {
            format!(
                "little history, no decreases recommended: {}",
                low.iter()
                    .chain(&missing)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        } else {
            "at least a day of history for every container".into()
        },
    ));
    let provided = !recs.is_empty();
    conditions.push((
        condition::RECOMMENDATION_PROVIDED,
        provided,
        if provided {
            "Computed"
        } else if no_pods {
            "NoPodsMatched"
        } else {
            "NotEnoughHistory"
        },
        if provided {
            format!(
                "from {} of history over {} pods",
                spec::format_duration(window),
                history_pods.len()
            )
        } else {
            "no container has enough history yet".into()
        },
    ));
    Outcome {
        // Bound to the spec and the target it was computed from: the updater acts on nothing
        // else. A recommendation kept from an earlier pass keeps its own binding.
        recommendation: provided.then_some(Recommendation {
            observed_generation: va.metadata.generation,
            target_ref: Some(target.clone()),
            container_recommendations: recs,
        }),
        conditions,
    }
}

async fn reconcile(ctx: &Context, va: &VerticalAutoscaler) {
    let started = std::time::Instant::now();
    let outcome = compute(ctx, va).await;
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
    let stats = ctx.prometheus.stats();
    ctx.metrics.prometheus_totals(
        stats.queries.load(std::sync::atomic::Ordering::Relaxed),
        stats.samples.load(std::sync::atomic::Ordering::Relaxed),
    );
    ctx.metrics
        .reconciled(label, started.elapsed().as_secs_f64());
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
    let conditions: Vec<Condition> = outcome
        .conditions
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
        .collect();
    let status = VerticalAutoscalerStatus {
        observed_generation: va.metadata.generation,
        recommendation: outcome.recommendation,
        conditions,
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
