//! The actuator: watches VerticalAutoscalers, pods, ReplicaSets, Jobs and HPAs; plans each
//! `InPlace` object's pods with [`crate::plan`]; patches the `resize` subresource; follows the
//! kubelet's resize conditions; writes the updater's part of the status (pending approvals, the
//! resize conditions, the last resizes) with server-side apply; records Events.
//!
//! Nothing here decides what to resize: that is the planner's. Everything the updater needs
//! after a restart is in the cluster (pod specs hold what was asked, pod status what was done,
//! the object's status the pending approvals and the last resizes), so a restarted updater
//! plans from the pods' specs and never patches the same resize twice.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tailor_crds::quantity::{format_cpu_millis, format_memory_bytes};
use tailor_crds::v1alpha1::{
    APPROVE_MEMORY_DECREASE_ANNOTATION, ContainerResize, HpaConflict, PendingApproval,
    ResizeOutcome, ResizeRecord, ResourceName, Resources, SUPPORTED_TARGETS, UpdateMode,
    VerticalAutoscaler, VerticalAutoscalerStatus, condition,
};
use tailor_runtime::workload::Owners;
use tokio::sync::mpsc;

use crate::metrics::{HeldDecrease, Metrics, UnfinishedResize};
use crate::plan::approval::{self, Cut, Pending};
use crate::plan::resources::{self, ResizeStatus};
use crate::plan::workload::{self, PodView};
use crate::plan::{self, PodInput, PodPlan};

/// The field manager of the updater's status writes and resize patches.
pub const FIELD_MANAGER: &str = "tailor-updater";

/// How many resize records `status.lastResizes` keeps.
const LAST_RESIZES: usize = 10;

/// Updater settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// Log and record what would be done; change nothing.
    pub dry_run: bool,
    /// Resize patches per second, over all objects.
    pub resizes_per_second: f64,
    /// Resize patches that may go at once before the rate applies.
    pub burst: u32,
    /// Objects reconciled at the same time.
    pub concurrency: usize,
    /// Every object is reconciled at least this often.
    pub resync: Duration,
    /// The first back-off after a failed resize (doubles up to 30 minutes).
    pub backoff: Duration,
    /// This replica's name in Events.
    pub identity: String,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            dry_run: false,
            resizes_per_second: 100.0,
            burst: 100,
            concurrency: 16,
            resync: Duration::from_secs(30),
            backoff: Duration::from_secs(30),
            identity: FIELD_MANAGER.to_owned(),
        }
    }
}

/// A token bucket: `rate` per second, at most `burst` at once.
struct RateLimiter {
    rate: f64,
    burst: f64,
    state: tokio::sync::Mutex<(f64, tokio::time::Instant)>,
}

impl RateLimiter {
    fn new(rate: f64, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            rate: if rate.is_finite() && rate > 0.0 {
                rate
            } else {
                f64::INFINITY
            },
            burst,
            state: tokio::sync::Mutex::new((burst, tokio::time::Instant::now())),
        }
    }

    async fn acquire(&self) {
        let mut state = self.state.lock().await;
        loop {
            let now = tokio::time::Instant::now();
            let (tokens, last) = *state;
            let tokens =
                (tokens + now.duration_since(last).as_secs_f64() * self.rate).min(self.burst);
            if tokens >= 1.0 {
                *state = (tokens - 1.0, now);
                return;
            }
            *state = (tokens, now);
            tokio::time::sleep(Duration::from_secs_f64((1.0 - tokens) / self.rate)).await;
        }
    }
}

/// A resize this process issued and is following.
#[derive(Debug, Clone)]
struct InFlight {
    /// The VerticalAutoscaler that issued it.
    va: (String, String),
    generation: i64,
    restarts: bool,
    resources: Vec<&'static str>,
    recommended_at: Instant,
}

/// What the updater remembers between reconciles. All of it can be lost: it only avoids
/// repeating Events and measures time.
#[derive(Default)]
struct Memory {
    in_flight: HashMap<String, InFlight>,
    backoff: HashMap<String, (Instant, Duration)>,
    reported: HashSet<String>,
    applied_approvals: HashSet<String>,
    recommendations: HashMap<(String, String), (String, Instant)>,
    dry_run: HashMap<String, String>,
    /// When an unfinished resize state was first seen, for pods whose condition has no time.
    first_seen: HashMap<((String, String), String, &'static str), i64>,
    /// The updater's part of each object's status as last written. It is the truth for those
    /// fields (only the updater writes them), and the watch cache may not show it yet.
    written: HashMap<(String, String), Written>,
}

/// The updater-owned status fields of one object, as written.
#[derive(Clone, Debug)]
struct Written {
    uid: String,
    pending: Vec<PendingApproval>,
    conditions: Vec<Condition>,
    records: Vec<ResizeRecord>,
}

/// Whether the updater owns this condition.
fn updater_condition(c: &Condition) -> bool {
    [
        condition::RESIZE_DEFERRED,
        condition::RESIZE_INFEASIBLE,
        condition::AWAITING_APPROVAL,
    ]
    .contains(&c.type_.as_str())
        || (c.type_ == condition::CONFIG_UNSUPPORTED && c.reason == "HpaConflict")
}

/// Everything a reconcile needs.
#[allow(missing_debug_implementations)] // kube's Store and Recorder are not Debug
pub struct Context {
    client: kube::Client,
    options: Options,
    metrics: Arc<Metrics>,
    vas: Store<VerticalAutoscaler>,
    pods: Store<Pod>,
    owners: Owners,
    hpas: Store<HorizontalPodAutoscaler>,
    limiter: RateLimiter,
    /// Events waiting to be sent; a bounded queue drained by two senders, so a burst of
    /// resizes costs a small record per Event rather than a task each.
    events: mpsc::Sender<QueuedEvent>,
    memory: Mutex<Memory>,
    /// When this process started, in Unix seconds: OOM kills before it are not counted again.
    started: i64,
}

impl Context {
    fn memory(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.memory
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Publishes an Event without holding up the reconcile; Events are best effort.
    fn event(&self, reference: ObjectReference, type_: EventType, reason: &str, note: String) {
        let item = (reference, type_, reason.to_owned(), truncate(&note, 1000));
        if self.events.try_send(item).is_err() {
            self.metrics.request("event_dropped");
            tracing::debug!(reason, "event queue full: event dropped");
        }
    }

    /// Backs off a pod: the first time by `--backoff-seconds`, then twice as long each time,
    /// up to 30 minutes.
    fn back_off(&self, uid: &str) {
        let mut memory = self.memory();
        let next = memory
            .backoff
            .get(uid)
            .map_or(self.options.backoff, |(_, d)| {
                (*d * 2).min(Duration::from_secs(1800))
            });
        memory
            .backoff
            .insert(uid.to_owned(), (Instant::now() + next, next));
    }

    /// Whether a pod is being backed off.
    fn backing_off(&self, uid: &str) -> bool {
        self.memory()
            .backoff
            .get(uid)
            .is_some_and(|(until, _)| *until > Instant::now())
    }

    /// An Event once per `key` (for this process).
    fn event_once(
        &self,
        key: String,
        reference: ObjectReference,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        if self.memory().reported.insert(key) {
            self.event(reference, type_, reason, note);
        }
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

fn va_key(va: &VerticalAutoscaler) -> (String, String) {
    (va.namespace().unwrap_or_default(), va.name_any())
}

/// An Event waiting to be sent: about what, its type, reason and note.
type QueuedEvent = (ObjectReference, EventType, String, String);

/// Events queued at most; beyond that they are dropped and counted
/// (`tailor_updater_api_requests_total{verb="event_dropped"}`).
const EVENT_QUEUE: usize = 20_000;

/// Sends queued Events until the queue closes.
async fn send_events(
    recorder: Recorder,
    queue: Arc<tokio::sync::Mutex<mpsc::Receiver<QueuedEvent>>>,
    metrics: Arc<Metrics>,
) {
    loop {
        let next = queue.lock().await.recv().await;
        let Some((reference, type_, reason, note)) = next else {
            return;
        };
        metrics.request("event");
        let event = Event {
            type_,
            reason: reason.clone(),
            note: Some(note),
            action: "Resize".into(),
            secondary: None,
        };
        if let Err(e) = recorder.publish(&event, &reference).await {
            tracing::debug!(error = %e, reason, "event not recorded");
        }
    }
}

/// Runs the updater until the future is dropped.
pub async fn run(client: kube::Client, options: Options, metrics: Arc<Metrics>) {
    let (pods, pod_writer) = reflector::store::<Pod>();
    let (replicasets, rs_stream) =
        tailor_runtime::cache(Api::<PartialObjectMeta<ReplicaSet>>::all(client.clone()));
    let (jobs, job_stream) =
        tailor_runtime::cache(Api::<PartialObjectMeta<Job>>::all(client.clone()));
    let (hpas, hpa_stream) =
        tailor_runtime::cache(Api::<HorizontalPodAutoscaler>::all(client.clone()));
    let (vas, va_writer) = reflector::store::<VerticalAutoscaler>();
    let recorder_for_events = Recorder::new(
        client.clone(),
        Reporter {
            controller: FIELD_MANAGER.into(),
            instance: Some(options.identity.clone()),
        },
    );
    let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
    let ctx = Arc::new(Context {
        client: client.clone(),
        limiter: RateLimiter::new(options.resizes_per_second, options.burst),
        options,
        metrics,
        vas: vas.clone(),
        pods: pods.clone(),
        owners: Owners {
            replicasets: replicasets.clone(),
            jobs: jobs.clone(),
        },
        hpas: hpas.clone(),
        events: events_tx,
        memory: Mutex::default(),
        started: now().0.as_second(),
    });
    let (queue, work) = mpsc::unbounded_channel::<(String, String)>();

    tracing::info!("starting watches of VerticalAutoscalers, pods, ReplicaSets, Jobs and HPAs");
    // A VerticalAutoscaler changes: its spec, its recommendation, its approval annotation.
    let va_queue = queue.clone();
    let va_stream = reflector::reflector(
        va_writer,
        watcher(
            Api::<VerticalAutoscaler>::all(client.clone()),
            watcher::Config::default(),
        )
        .modify(|va| va.managed_fields_mut().clear()),
    )
    .default_backoff()
    .applied_objects()
    .for_each(move |va| {
        if let Ok(va) = va {
            let _ = va_queue.send(va_key(&va));
        }
        std::future::ready(())
    });
    // A pod changes: the objects whose workload it belongs to.
    let pod_queue = queue.clone();
    let pod_ctx = ctx.clone();
    let pod_stream = reflector::reflector(
        pod_writer,
        watcher(
            Api::<Pod>::all(client.clone()),
            watcher::Config::default().page_size(100),
        )
        .modify(slim_pod),
    )
    .default_backoff()
    .applied_objects()
    .for_each(move |pod| {
        if let Ok(pod) = pod
            && let Some((kind, name)) = pod_ctx.owners.workload_of(&pod)
        {
            let ns = pod.namespace().unwrap_or_default();
            for va in pod_ctx.vas.state() {
                if va.namespace().as_deref() == Some(ns.as_str())
                    && va.spec.target_ref.kind == kind
                    && va.spec.target_ref.name == name
                {
                    let _ = pod_queue.send(va_key(&va));
                }
            }
        }
        std::future::ready(())
    });
    let timer_ctx = ctx.clone();
    let timer_queue = queue.clone();
    let timer = async move {
        let mut interval = tokio::time::interval(timer_ctx.options.resync);
        interval.tick().await;
        loop {
            interval.tick().await;
            for va in timer_ctx.vas.state() {
                let _ = timer_queue.send(va_key(&va));
            }
        }
    };
    let worker_ctx = ctx.clone();
    let worker = async move {
        let ctx = worker_ctx;
        let _ = tokio::join!(
            ctx.pods.wait_until_ready(),
            ctx.owners.replicasets.wait_until_ready(),
            ctx.owners.jobs.wait_until_ready(),
            ctx.hpas.wait_until_ready(),
            ctx.vas.wait_until_ready()
        );
        tracing::info!(
            verticalautoscalers = ctx.vas.len(),
            pods = ctx.pods.len(),
            "caches synced; first pass starts"
        );
        // The first pass: every object once.
        let first: Vec<(String, String)> = ctx.vas.state().iter().map(|va| va_key(va)).collect();
        futures::stream::iter(first)
            .for_each_concurrent(ctx.options.concurrency.max(1), |key| {
                let ctx = ctx.clone();
                async move { reconcile(&ctx, &key).await }
            })
            .await;
        ctx.metrics.set_ready();
        tracing::info!("first pass done");
        // Then: each object by one task at a time; triggers merge.
        tailor_runtime::queue::run(
            work,
            ctx.options.concurrency,
            |key: (String, String)| {
                let ctx = ctx.clone();
                async move { reconcile(&ctx, &key).await }
            },
            |_| {},
        )
        .await;
    };
    let events_rx = Arc::new(tokio::sync::Mutex::new(events_rx));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..2 {
        tasks.spawn(send_events(
            recorder_for_events.clone(),
            events_rx.clone(),
            ctx.metrics.clone(),
        ));
    }
    tasks.spawn(pod_stream);
    tasks.spawn(rs_stream);
    tasks.spawn(job_stream);
    tasks.spawn(hpa_stream);
    tasks.spawn(va_stream);
    tasks.spawn(timer);
    tasks.spawn(worker);
    while tasks.join_next().await.is_some() {}
}

/// Keeps only what the planner and the actuator read of a cached pod: identity and owners,
/// the containers' names, resources and resize policies, and the status fields that say where
/// a resize stands. On a large cluster the pod cache is most of the process's memory.
fn slim_pod(pod: &mut Pod) {
    use k8s_openapi::api::core::v1::{
        Container, ContainerState, ContainerStateTerminated, ContainerStatus, PodSpec, PodStatus,
    };
    let meta = std::mem::take(&mut pod.metadata);
    pod.metadata = kube::api::ObjectMeta {
        name: meta.name,
        namespace: meta.namespace,
        uid: meta.uid,
        resource_version: meta.resource_version,
        generation: meta.generation,
        owner_references: meta.owner_references,
        deletion_timestamp: meta.deletion_timestamp,
        ..Default::default()
    };
    let slim = |c: Container| Container {
        name: c.name,
        resources: c.resources,
        resize_policy: c.resize_policy,
        ..Default::default()
    };
    pod.spec = pod.spec.take().map(|spec| PodSpec {
        containers: spec.containers.into_iter().map(slim).collect(),
        init_containers: spec
            .init_containers
            .map(|cs| cs.into_iter().map(slim).collect()),
        node_name: spec.node_name,
        ..Default::default()
    });
    pod.status = pod.status.take().map(|status| PodStatus {
        phase: status.phase,
        observed_generation: status.observed_generation,
        qos_class: status.qos_class,
        conditions: status.conditions.map(|cs| {
            cs.into_iter()
                .filter(|c| {
                    matches!(
                        c.type_.as_str(),
                        "Ready" | "PodResizePending" | "PodResizeInProgress"
                    )
                })
                .collect()
        }),
        container_statuses: status.container_statuses.map(|ss| {
            ss.into_iter()
                .map(|s| ContainerStatus {
                    name: s.name,
                    resources: s.resources,
                    restart_count: s.restart_count,
                    ready: s.ready,
                    // Only what OOM kills after a resize need.
                    last_state: s.last_state.and_then(|l| {
                        let t = l
                            .terminated
                            .filter(|t| t.reason.as_deref() == Some("OOMKilled"))?;
                        Some(ContainerState {
                            terminated: Some(ContainerStateTerminated {
                                reason: t.reason,
                                finished_at: t.finished_at,
                                exit_code: t.exit_code,
                                ..Default::default()
                            }),
                            ..Default::default()
                        })
                    }),
                    ..Default::default()
                })
                .collect()
        }),
        ..Default::default()
    });
}

/// How long after a resize an OOM kill is blamed on it.
const OOM_AFTER_RESIZE: i64 = 24 * 3600;

/// Counts and reports, once each, OOM kills of the pod's containers that happened after tailor
/// resized the pod (within a day) and after this process started.
fn oom_kills_after(ctx: &Context, va: &VerticalAutoscaler, pod: &Pod, record: &ResizeRecord) {
    let resized = record.time.0.as_second();
    let uid = pod.uid().unwrap_or_default();
    let statuses = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_deref())
        .unwrap_or_default();
    for s in statuses {
        let Some(t) = s.last_state.as_ref().and_then(|l| l.terminated.as_ref()) else {
            continue;
        };
        if t.reason.as_deref() != Some("OOMKilled") {
            continue;
        }
        let Some(at) = t.finished_at.as_ref().map(|f| f.0.as_second()) else {
            continue;
        };
        if at < resized || at > resized + OOM_AFTER_RESIZE || at < ctx.started {
            continue;
        }
        let key = format!("oom/{uid}/{}/{}", s.name, s.restart_count);
        if !ctx.memory().reported.insert(key) {
            continue;
        }
        let ns = va.namespace().unwrap_or_default();
        ctx.metrics.oom_after_resize(&ns, &va.name_any(), &s.name);
        let limit = pod
            .spec
            .as_ref()
            .and_then(|spec| spec.containers.iter().find(|c| c.name == s.name))
            .and_then(|c| {
                c.resources
                    .as_ref()?
                    .limits
                    .as_ref()?
                    .get("memory")
                    .cloned()
            })
            .map_or_else(|| "none".to_owned(), |q| q.0);
        let note = format!(
            "container {} was OOM-killed {} min after tailor resized the pod (memory limit {limit}); the recommender raises the floor after an OOM kill",
            s.name,
            (at - resized) / 60
        );
        ctx.event(
            object_ref(pod),
            EventType::Warning,
            "OOMKilledAfterResize",
            note.clone(),
        );
        ctx.event(
            object_ref(va),
            EventType::Warning,
            "OOMKilledAfterResize",
            format!("pod {}: {note}", pod.name_any()),
        );
    }
}

fn object_ref<K: Resource<DynamicType = ()>>(obj: &K) -> ObjectReference {
    obj.object_ref(&())
}

fn describe(c: &plan::ContainerChange) -> String {
    let mut parts = Vec::new();
    for r in [ResourceName::Cpu, ResourceName::Memory] {
        if !c.changes(r) {
            continue;
        }
        let fmt = |v: Option<i64>| match (r, v) {
            (_, None) => "-".to_owned(),
            (ResourceName::Cpu, Some(m)) => format_cpu_millis(m).0,
            (ResourceName::Memory, Some(b)) => format_memory_bytes(b).0,
        };
        let name = if r == ResourceName::Cpu {
            "cpu"
        } else {
            "memory"
        };
        let (fr, tr) = (c.from.requests.get(r), c.to.requests.get(r));
        let (fl, tl) = (c.from.limits.get(r), c.to.limits.get(r));
        let mut s = format!("{name} request {} -> {}", fmt(fr), fmt(tr));
        if fl != tl {
            s.push_str(&format!(", limit {} -> {}", fmt(fl), fmt(tl)));
        }
        parts.push(s);
    }
    format!("{}: {}", c.container, parts.join("; "))
}

fn changed_resources(plan: &PodPlan) -> Vec<&'static str> {
    let mut out = Vec::new();
    if plan.changes.iter().any(|c| c.changes(ResourceName::Cpu)) {
        out.push("cpu");
    }
    if plan.changes.iter().any(|c| c.changes(ResourceName::Memory)) {
        out.push("memory");
    }
    out
}

fn resources_of(a: &resources::Amounts) -> Resources {
    Resources {
        cpu: a.cpu.map(format_cpu_millis),
        memory: a.memory.map(format_memory_bytes),
    }
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// A fingerprint of the recommendation, to time "recommended -> applied".
fn fingerprint(va: &VerticalAutoscaler) -> String {
    va.status
        .as_ref()
        .and_then(|s| s.recommendation.as_ref())
        .and_then(|r| serde_json::to_string(&r.container_recommendations).ok())
        .unwrap_or_default()
}

/// The outcome of trying one pod's resize.
enum Issued {
    Done(i64),
    DryRun,
    Nothing,
    Failed,
}

/// Patches one pod's resize; on a conflict re-reads the pod and plans it again once.
async fn issue(
    ctx: &Context,
    va: &VerticalAutoscaler,
    pod: &Pod,
    plan: &PodPlan,
    replan: &(dyn Fn(&Pod) -> PodPlan + Sync),
) -> (Issued, PodPlan) {
    let ns = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let summary = plan
        .changes
        .iter()
        .map(describe)
        .collect::<Vec<_>>()
        .join("; ");
    let resources = changed_resources(plan);
    if ctx.options.dry_run {
        let uid = pod.uid().unwrap_or_default();
        let first = ctx.memory().dry_run.insert(uid, summary.clone()) != Some(summary.clone());
        if first {
            tracing::info!(pod = %format!("{ns}/{name}"), changes = %summary, "dry run: would resize");
            ctx.metrics.resize("dry_run", &resources);
            ctx.event(
                object_ref(pod),
                EventType::Normal,
                "DryRunResize",
                format!("would resize {summary}"),
            );
        }
        return (Issued::DryRun, plan.clone());
    }
    let mut plan = plan.clone();
    let mut rv = pod.resource_version();
    for attempt in 0..2 {
        ctx.limiter.acquire().await;
        ctx.metrics.request("resize");
        let patch = plan::resize_patch(&plan, rv.as_deref());
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        match api
            .patch_subresource("resize", &name, &params, &Patch::Strategic(&patch))
            .await
        {
            Ok(updated) => {
                let generation = updated.metadata.generation.unwrap_or(0);
                tracing::info!(pod = %format!("{ns}/{name}"), generation, changes = %summary, restarts = plan.restarts(), "resize issued");
                ctx.metrics.resize("issued", &resources);
                let note = if plan.restarts() {
                    format!("resizing (the kubelet restarts the container) {summary}")
                } else {
                    format!("resizing in place {summary}")
                };
                ctx.event(object_ref(pod), EventType::Normal, "Resizing", note);
                return (Issued::Done(generation), plan);
            }
            Err(kube::Error::Api(e)) if e.code == 409 && attempt == 0 => {
                ctx.metrics.resize("conflict", &resources);
                ctx.metrics.request("get");
                match api.get_opt(&name).await {
                    Ok(Some(fresh)) => {
                        plan = replan(&fresh);
                        rv = fresh.resource_version();
                        if !plan.resizes() {
                            return (Issued::Nothing, plan);
                        }
                    }
                    Ok(None) => {
                        ctx.metrics.resize("vanished", &resources);
                        return (Issued::Nothing, plan);
                    }
                    Err(e) => {
                        tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "re-read after a conflict failed");
                        return (Issued::Failed, plan);
                    }
                }
            }
            Err(kube::Error::Api(e)) if e.code == 404 => {
                tracing::info!(pod = %format!("{ns}/{name}"), "pod vanished before its resize");
                ctx.metrics.resize("vanished", &resources);
                return (Issued::Nothing, plan);
            }
            Err(e) => {
                tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "resize refused");
                ctx.metrics.resize("failed", &resources);
                let note = format!("resize {summary} refused: {e}");
                ctx.event(
                    object_ref(pod),
                    EventType::Warning,
                    "ResizeFailed",
                    note.clone(),
                );
                ctx.event(
                    object_ref(va),
                    EventType::Warning,
                    "ResizeFailed",
                    format!("pod {name}: {note}"),
                );
                ctx.back_off(&pod.uid().unwrap_or_default());
                return (Issued::Failed, plan);
            }
        }
    }
    (Issued::Failed, plan)
}

/// Reconciles one VerticalAutoscaler.
pub async fn reconcile(ctx: &Context, key: &(String, String)) {
    ctx.metrics.reconciled();
    let Some(va) = ctx.vas.get(&ObjectRef::new(&key.1).within(&key.0)) else {
        ctx.metrics.pending(&key.0, &key.1, 0);
        ctx.metrics.held(&key.0, &key.1, &[]);
        ctx.metrics.unfinished(&key.0, &key.1, &[]);
        let mut memory = ctx.memory();
        memory.recommendations.remove(key);
        memory.written.remove(key);
        return;
    };
    let va = va.as_ref();
    let mut status = va.status.clone().unwrap_or_default();
    let written = ctx
        .memory()
        .written
        .get(key)
        .filter(|w| va.metadata.uid.as_deref() == Some(w.uid.as_str()))
        .cloned();
    if let Some(w) = written {
        status.pending_approvals = w.pending;
        status.last_resizes = w.records;
        status.conditions.retain(|c| !updater_condition(c));
        status.conditions.extend(w.conditions);
    }
    if va.spec.update_policy.update_mode != UpdateMode::InPlace {
        ctx.metrics.pending(&key.0, &key.1, 0);
        ctx.metrics.held(&key.0, &key.1, &[]);
        ctx.metrics.unfinished(&key.0, &key.1, &[]);
        // Never acted on; clear what the updater wrote while it was InPlace.
        if !status.pending_approvals.is_empty() || status.conditions.iter().any(updater_condition) {
            write_status(ctx, va, Vec::new(), Vec::new(), status.last_resizes.clone()).await;
        }
        return;
    }
    let Some(recommendation) = status.recommendation.clone() else {
        return;
    };
    let target = &va.spec.target_ref;
    if !SUPPORTED_TARGETS
        .iter()
        .any(|(v, k)| *v == target.api_version && *k == target.kind)
    {
        return;
    }
    let (ns, name) = key;
    let va_uid = va.uid().unwrap_or_default();
    let print = fingerprint(va);
    let recommended_at = {
        let mut memory = ctx.memory();
        let entry = memory
            .recommendations
            .entry(key.clone())
            .or_insert_with(|| (print.clone(), Instant::now()));
        if entry.0 != print {
            *entry = (print.clone(), Instant::now());
        }
        entry.1
    };

    // HPAs scaling the same workload.
    let (blocked, hpa_names) = if va.spec.update_policy.hpa_conflict == HpaConflict::Skip {
        let hpas: Vec<_> = ctx
            .hpas
            .state()
            .into_iter()
            .filter(|h| h.namespace().as_deref() == Some(ns.as_str()))
            .collect();
        crate::plan::hpa::scaled_resources(
            hpas.iter().map(AsRef::as_ref),
            &target.kind,
            &target.name,
        )
    } else {
        (BTreeSet::new(), Vec::new())
    };

    // Approvals.
    let ids = va
        .annotations()
        .get(APPROVE_MEMORY_DECREASE_ANNOTATION)
        .map(|v| approval::annotation_ids(v))
        .unwrap_or_default();
    let (approved, stale) = approval::approvals(&ids, &status.pending_approvals);
    // Approvals already used, by this process or (from the recorded resizes) an earlier one.
    let used: HashSet<&str> = status
        .last_resizes
        .iter()
        .flat_map(|r| r.containers.iter().filter_map(|c| c.approval.as_deref()))
        .collect();
    for id in stale {
        if used.contains(id.as_str()) || ctx.memory().applied_approvals.contains(&id) {
            continue;
        }
        ctx.event_once(
            format!("stale/{va_uid}/{id}"),
            object_ref(va),
            EventType::Warning,
            "StaleApproval",
            format!(
                "approval {id} matches no pending memory decrease: it approves nothing (a newer recommendation has a new id; see status.pendingApprovals)"
            ),
        );
    }

    let pods = ctx.owners.pods(&ctx.pods, ns, &target.kind, &target.name);
    let spec = va.spec.clone();
    let recs = recommendation.container_recommendations.clone();
    let plan_for = |pod: &Pod| {
        plan::plan_pod(&PodInput {
            pod,
            spec: &spec,
            recommendation: &recs,
            blocked: &blocked,
            approved: &approved,
        })
    };

    // Follow what is under way.
    let mut records = status.last_resizes.clone();
    let mut deferred = Vec::new();
    let mut infeasible = Vec::new();
    let by_name: HashMap<String, &Arc<Pod>> = pods.iter().map(|p| (p.name_any(), p)).collect();
    let mut unfinished = Vec::new();
    let mut states_now: HashSet<(String, &'static str)> = HashSet::new();
    let now_s = now().0.as_second();
    for pod in &pods {
        let rs = ResizeStatus::of(pod);
        let uid = pod.uid().unwrap_or_default();
        let pod_name = pod.name_any();
        let generation = pod.metadata.generation.unwrap_or(1);
        if let Some((state, since)) = rs.state() {
            states_now.insert((uid.clone(), state));
            let since = since.unwrap_or_else(|| {
                *ctx.memory()
                    .first_seen
                    .entry((key.clone(), uid.clone(), state))
                    .or_insert(now_s)
            });
            unfinished.push(UnfinishedResize {
                pod: pod_name.clone(),
                state,
                since,
            });
        }
        if let Some(record) = status.last_resizes.iter().find(|r| r.pod == pod_name) {
            oom_kills_after(ctx, va, pod, record);
        }
        if let Some(c) = &rs.pending {
            let line = format!("pod {pod_name}: {}", c.message);
            if rs.infeasible() {
                infeasible.push(line.clone());
                ctx.event_once(
                    format!("infeasible/{uid}/{generation}"),
                    object_ref(va),
                    EventType::Warning,
                    "ResizeInfeasible",
                    format!("{line}; not retried until the recommendation changes"),
                );
            } else {
                deferred.push(line.clone());
                ctx.event_once(
                    format!("deferred/{uid}/{generation}"),
                    object_ref(va),
                    EventType::Normal,
                    "ResizeDeferred",
                    format!("{line}; the kubelet retries it"),
                );
            }
        }
        if let Some(e) = rs.error() {
            ctx.event_once(
                format!("error/{uid}/{generation}"),
                object_ref(va),
                EventType::Warning,
                "ResizeError",
                format!("pod {pod_name}: {}", e.message),
            );
            if !ctx.backing_off(&uid) {
                ctx.back_off(&uid);
                let resources = ctx
                    .memory()
                    .in_flight
                    .get(&uid)
                    .map(|f| f.resources.clone())
                    .unwrap_or_default();
                ctx.metrics.resize("error", &resources);
            }
        }
        let flight = ctx.memory().in_flight.get(&uid).cloned();
        if let Some(f) = flight {
            let synced = rs.synced;
            if rs.complete() && synced && generation >= f.generation {
                ctx.memory().in_flight.remove(&uid);
                let outcome = if f.restarts { "restarted" } else { "applied" };
                ctx.metrics.resize(outcome, &f.resources);
                ctx.metrics
                    .applied_after(f.recommended_at.elapsed().as_secs_f64());
            } else if rs.infeasible() {
                ctx.memory().in_flight.remove(&uid);
                ctx.metrics.resize("infeasible", &f.resources);
            } else if rs.deferred()
                && ctx
                    .memory()
                    .reported
                    .insert(format!("deferred-metric/{uid}/{generation}"))
            {
                ctx.metrics.resize("deferred", &f.resources);
            }
        }
    }
    ctx.metrics.unfinished(ns, name, &unfinished);
    // Resizes of pods that are gone are not followed any more.
    {
        let present: HashSet<String> = pods.iter().filter_map(|p| p.uid()).collect();
        let mut memory = ctx.memory();
        memory
            .in_flight
            .retain(|uid, f| f.va != *key || present.contains(uid));
        memory
            .first_seen
            .retain(|(va, uid, state), _| va != key || states_now.contains(&(uid.clone(), *state)));
    }
    // Records of resizes under way take the pods' current state.
    for record in &mut records {
        if !matches!(
            record.outcome,
            ResizeOutcome::InProgress | ResizeOutcome::Deferred
        ) {
            continue;
        }
        let Some(pod) = by_name.get(&record.pod) else {
            record.outcome = ResizeOutcome::PodDeleted;
            continue;
        };
        // A cached pod older than the resize this process issued says nothing about it.
        let issued = ctx
            .memory()
            .in_flight
            .get(&pod.uid().unwrap_or_default())
            .map(|f| f.generation);
        if issued.is_some_and(|g| pod.metadata.generation.unwrap_or(1) < g) {
            continue;
        }
        let rs = ResizeStatus::of(pod);
        let restarts = pod.spec.as_ref().is_some_and(|spec| {
            record.containers.iter().any(|c| {
                spec.containers
                    .iter()
                    .find(|k| k.name == c.container_name)
                    .is_some_and(|k| {
                        (c.from.cpu != c.to.cpu && resources::restarts_on(k, ResourceName::Cpu))
                            || (c.from.memory != c.to.memory
                                && resources::restarts_on(k, ResourceName::Memory))
                    })
            })
        });
        record.outcome = if rs.complete() {
            if restarts {
                ResizeOutcome::Restarted
            } else {
                ResizeOutcome::Applied
            }
        } else if rs.infeasible() {
            ResizeOutcome::Infeasible
        } else if rs.deferred() {
            ResizeOutcome::Deferred
        } else if rs.error().is_some() {
            ResizeOutcome::Failed
        } else {
            record.outcome
        };
    }

    // Plan and select.
    let plans: Vec<PodPlan> = pods.iter().map(|p| plan_for(p)).collect();
    let in_flight_restarts = {
        let memory = ctx.memory();
        pods.iter()
            .filter(|p| {
                let uid = p.uid().unwrap_or_default();
                memory.in_flight.get(&uid).is_some_and(|f| {
                    f.restarts && !(ResizeStatus::of(p).complete() && resources::ready(p))
                })
            })
            .count()
    };
    let views: Vec<PodView<'_>> = pods
        .iter()
        .zip(&plans)
        .map(|(p, plan)| {
            let rs = ResizeStatus::of(p);
            PodView {
                plan,
                ready: resources::ready(p),
                terminal: resources::terminal(p),
                resizing: !rs.complete(),
                infeasible: rs.infeasible(),
                backing_off: ctx.backing_off(&p.uid().unwrap_or_default()),
            }
        })
        .collect();
    let max_restarts = va.spec.update_policy.max_concurrent_restarts;
    let selection = workload::select(&views, max_restarts, in_flight_restarts);
    if selection.waiting_for_restart > 0 {
        tracing::debug!(va = %format!("{ns}/{name}"), waiting = selection.waiting_for_restart, "restart-causing resizes wait for the budget");
    }

    // Act.
    let mut issued_lines = Vec::new();
    let mut approved_cuts: Vec<Cut> = Vec::new();
    let mut held: Vec<Cut> = Vec::new();
    for (i, plan) in plans.iter().enumerate() {
        if selection.now.contains(&i) {
            continue;
        }
        held.extend(plan.held.iter().cloned());
        approved_cuts.extend(plan.approved_cuts());
    }
    // A workload's resizes go together; the global rate limit paces them.
    let outcomes = futures::future::join_all(
        selection
            .now
            .iter()
            .map(|&i| issue(ctx, va, &pods[i], &plans[i], &plan_for)),
    )
    .await;
    for (&i, (outcome, plan)) in selection.now.iter().zip(outcomes) {
        let pod = &pods[i];
        held.extend(plan.held.iter().cloned());
        match outcome {
            Issued::Done(generation) => {
                let uid = pod.uid().unwrap_or_default();
                ctx.memory().in_flight.insert(
                    uid,
                    InFlight {
                        va: key.clone(),
                        generation,
                        restarts: plan.restarts(),
                        resources: changed_resources(&plan),
                        recommended_at,
                    },
                );
                for c in &plan.changes {
                    if let Some(id) = &c.approval {
                        ctx.memory().applied_approvals.insert(id.clone());
                    }
                }
                issued_lines.push(format!(
                    "pod {}: {}",
                    pod.name_any(),
                    plan.changes
                        .iter()
                        .map(describe)
                        .collect::<Vec<_>>()
                        .join("; ")
                ));
                records.retain(|r| r.pod != pod.name_any());
                records.insert(
                    0,
                    ResizeRecord {
                        pod: pod.name_any(),
                        time: now(),
                        outcome: ResizeOutcome::InProgress,
                        containers: plan
                            .changes
                            .iter()
                            .map(|c| ContainerResize {
                                container_name: c.container.clone(),
                                from: resources_of(&c.from.requests),
                                to: resources_of(&c.to.requests),
                                approval: c.approval.clone(),
                            })
                            .collect(),
                    },
                );
            }
            Issued::DryRun | Issued::Failed => approved_cuts.extend(plan.approved_cuts()),
            Issued::Nothing => {}
        }
    }
    records.truncate(LAST_RESIZES);
    if !issued_lines.is_empty() {
        let verb = if ctx.options.dry_run {
            "would resize"
        } else {
            "resizing"
        };
        ctx.event(
            object_ref(va),
            EventType::Normal,
            "Resizing",
            format!(
                "{verb} {} pod(s): {}",
                issued_lines.len(),
                issued_lines.join(" | ")
            ),
        );
    }
    ctx.metrics
        .waiting("restart_budget", selection.waiting_for_restart);

    if ctx.options.dry_run {
        return;
    }

    // Status: pending approvals and conditions.
    let mut cuts = held;
    cuts.extend(approved_cuts);
    let pending: Vec<Pending> = approval::pending(&va_uid, &cuts, &approved);
    let stamp = now();
    let pending_status: Vec<PendingApproval> = pending
        .iter()
        .map(|p| p.to_status(&status.pending_approvals, &stamp))
        .collect();
    ctx.metrics
        .pending(ns, name, pending.iter().filter(|p| !p.approved).count());
    let held_series: Vec<HeldDecrease> = pending
        .iter()
        .zip(&pending_status)
        .filter(|(p, _)| !p.approved)
        .map(|(p, s)| HeldDecrease {
            container: p.container.clone(),
            id: p.id.clone(),
            from: format_memory_bytes(p.from).0,
            to: format_memory_bytes(p.to).0,
            since: s.since.as_ref().map_or(now_s, |t| t.0.as_second()),
        })
        .collect();
    ctx.metrics.held(ns, name, &held_series);
    let awaiting: Vec<String> = pending
        .iter()
        .filter(|p| !p.approved)
        .map(|p| {
            format!(
                "container {} memory limit {} -> {}: kubectl annotate va {name} -n {ns} {APPROVE_MEMORY_DECREASE_ANNOTATION}={} --overwrite",
                p.container,
                format_memory_bytes(p.from).0,
                format_memory_bytes(p.to).0,
                p.id
            )
        })
        .collect();
    let mut conditions = vec![
        cond(
            condition::RESIZE_DEFERRED,
            !deferred.is_empty(),
            if deferred.is_empty() {
                "NoneDeferred"
            } else {
                "Deferred"
            },
            if deferred.is_empty() {
                "no resize is deferred".into()
            } else {
                deferred.join("; ")
            },
        ),
        cond(
            condition::RESIZE_INFEASIBLE,
            !infeasible.is_empty() || selection.stopped_infeasible,
            if infeasible.is_empty() {
                "NoneInfeasible"
            } else {
                "Infeasible"
            },
            if infeasible.is_empty() {
                "no resize is infeasible".into()
            } else {
                format!(
                    "{}; resizes stop until the recommendation changes",
                    infeasible.join("; ")
                )
            },
        ),
        cond(
            condition::AWAITING_APPROVAL,
            !awaiting.is_empty(),
            if awaiting.is_empty() {
                "NothingToApprove"
            } else {
                "MemoryDecreaseHeld"
            },
            if awaiting.is_empty() {
                "no memory decrease waits for approval".into()
            } else {
                awaiting.join("; ")
            },
        ),
    ];
    if !hpa_names.is_empty() {
        let names: Vec<&str> = blocked
            .iter()
            .map(|r| {
                if *r == ResourceName::Cpu {
                    "cpu"
                } else {
                    "memory"
                }
            })
            .collect();
        conditions.push(cond(
            condition::CONFIG_UNSUPPORTED,
            true,
            "HpaConflict",
            format!(
                "HorizontalPodAutoscaler {} scales {}/{} on {}: tailor leaves {} alone (set updatePolicy.hpaConflict: Resize to resize it anyway)",
                hpa_names.join(", "),
                target.kind,
                target.name,
                names.join(" and "),
                names.join(" and ")
            ),
        ));
    }
    // Write only what changed.
    let unchanged =
        status.pending_approvals == pending_status
            && status.last_resizes == records
            && conditions.iter().all(|c| {
                status.conditions.iter().any(|o| {
                    o.type_ == c.0 && o.status == c.1 && o.reason == c.2 && o.message == c.3
                })
            })
            && (!hpa_names.is_empty()
                || !status.conditions.iter().any(|c| {
                    c.type_ == condition::CONFIG_UNSUPPORTED && c.reason == "HpaConflict"
                }));
    if unchanged {
        return;
    }
    let conditions = conditions
        .into_iter()
        .map(|(type_, status_, reason, message)| {
            let since = status
                .conditions
                .iter()
                .find(|c| c.type_ == type_ && c.status == status_)
                .map(|c| c.last_transition_time.clone())
                .unwrap_or_else(|| stamp.clone());
            Condition {
                type_: type_.to_owned(),
                status: status_.to_owned(),
                reason: reason.to_owned(),
                message: truncate(&message, 32_000),
                last_transition_time: since,
                observed_generation: va.metadata.generation,
            }
        })
        .collect();
    write_status(ctx, va, pending_status, conditions, records).await;
}

fn cond(
    type_: &'static str,
    on: bool,
    reason: &'static str,
    message: String,
) -> (&'static str, &'static str, &'static str, String) {
    (type_, if on { "True" } else { "False" }, reason, message)
}

/// Applies the updater's part of the status. Fields it leaves out are dropped from what it
/// owns; the recommender's fields are untouched.
async fn write_status(
    ctx: &Context,
    va: &VerticalAutoscaler,
    pending: Vec<PendingApproval>,
    conditions: Vec<Condition>,
    records: Vec<ResizeRecord>,
) {
    let count = i32::try_from(pending.len()).unwrap_or(i32::MAX);
    let status = VerticalAutoscalerStatus {
        pending_approval_count: Some(count),
        pending_approvals: pending,
        conditions,
        last_resizes: records,
        ..Default::default()
    };
    let patch = json!({
        "apiVersion": VerticalAutoscaler::api_version(&()),
        "kind": VerticalAutoscaler::kind(&()),
        "status": status,
    });
    let api: Api<VerticalAutoscaler> =
        Api::namespaced(ctx.client.clone(), &va.namespace().unwrap_or_default());
    ctx.metrics.request("status");
    match api
        .patch_status(
            &va.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(patch),
        )
        .await
    {
        Ok(_) => {
            ctx.memory().written.insert(
                va_key(va),
                Written {
                    uid: va.uid().unwrap_or_default(),
                    pending: status.pending_approvals,
                    conditions: status.conditions,
                    records: status.last_resizes,
                },
            );
        }
        Err(e) => {
            tracing::warn!(va = %format!("{}/{}", va.namespace().unwrap_or_default(), va.name_any()), error = %e, "status not written")
        }
    }
}
