//! The watches behind the caches, and what each change puts on the work queue.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::Job;
use kube::ResourceExt;
use kube::core::{ApiResource, DynamicObject, GroupVersionKind, PartialObjectMeta};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tailor_crds::resize_state::ResizeState;
use tailor_crds::v1alpha1::VerticalAutoscaler;
use tailor_runtime::queue::Progress;
use tailor_runtime::workload::Owners;
use tokio::sync::mpsc;

use super::{Context, FIELD_MANAGER, Key, Options, act, events, pods, reconcile, va_key};
use crate::metrics::Metrics;

/// Upstream VPA's API, watched when installed so that tailor never acts beside it.
fn vpa_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("autoscaling.k8s.io", "v1", "VerticalPodAutoscaler"),
        "verticalpodautoscalers",
    )
}

/// A cache of upstream VerticalPodAutoscalers, when their CRD is installed (checked at start).
async fn vpa_cache(
    client: &kube::Client,
    scope: &tailor_runtime::Scope,
) -> Option<(
    Store<DynamicObject>,
    impl std::future::Future<Output = ()> + Send + 'static,
)> {
    let installed = client
        .list_api_group_resources("autoscaling.k8s.io/v1")
        .await
        .is_ok_and(|list| {
            list.resources
                .iter()
                .any(|r| r.name == "verticalpodautoscalers")
        });
    if !installed {
        tracing::info!("no autoscaling.k8s.io/v1 VerticalPodAutoscaler API: not watching VPAs");
        return None;
    }
    let resource = vpa_resource();
    let writer = reflector::store::Writer::new(resource.clone());
    let store = writer.as_reader();
    let events = scope.watcher(client, &resource, watcher::Config::default(), store.clone());
    let run = reflector::reflector(writer, events)
        .default_backoff()
        .for_each(|e| {
            tailor_runtime::report_watch("VerticalPodAutoscaler", &e);
            std::future::ready(())
        });
    Some((store, run))
}

/// Runs the updater until the future is dropped.
pub async fn run(client: kube::Client, options: Options, metrics: Arc<Metrics>) {
    let scope = options.scope.clone();
    let (pod_store, pod_writer) = reflector::store::<pods::CachedPod>();
    let (replicasets, rs_stream) =
        tailor_runtime::cache_scoped::<PartialObjectMeta<ReplicaSet>>(&scope, &client);
    let (jobs, job_stream) =
        tailor_runtime::cache_scoped::<PartialObjectMeta<Job>>(&scope, &client);
    let (hpas, hpa_stream) =
        tailor_runtime::cache_scoped::<HorizontalPodAutoscaler>(&scope, &client);
    let vpas = vpa_cache(&client, &scope).await;
    // Its own records: where it left off (the pending approvals, the resizes it follows).
    let (states, state_stream) = tailor_runtime::cache_scoped::<ResizeState>(&scope, &client);
    let (va_store, va_writer) = reflector::store::<VerticalAutoscaler>();
    let (events, event_sender) = events::Events::new(
        client.clone(),
        (FIELD_MANAGER.to_owned(), options.identity.clone()),
        metrics.clone(),
    );
    let ctx = Arc::new(Context {
        client: client.clone(),
        limiter: act::RateLimiter::new(options.resizes_per_second, options.burst),
        options,
        metrics,
        vas: va_store,
        states,
        pods: pod_store,
        pod_index: tailor_runtime::index::OwnerIndex::default(),
        owners: Owners { replicasets, jobs },
        hpas,
        vpas: vpas.as_ref().map(|(s, _)| s.clone()),
        events,
        writes: super::writer::Writes::default(),
        memory: Mutex::default(),
        started: super::now().0.as_second(),
    });
    let (queue, work) = mpsc::unbounded_channel::<Key>();

    tracing::info!(
        scope = %scope,
        "starting watches of VerticalAutoscalers, ResizeStates, pods, ReplicaSets, Jobs and HPAs"
    );
    let va_stream = va_watch(&client, &ctx, va_writer, queue.clone());
    let pod_stream = pod_watch(&client, &ctx, pod_writer, queue.clone());
    let timer = resync(ctx.clone(), queue.clone());
    let guard_every = ctx.options.usage.as_ref().and_then(|u| u.guard_every);
    let worker = work_loop(ctx.clone(), work);
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(event_sender);
    tasks.spawn(super::writer::run(ctx.clone()));
    tasks.spawn(pod_stream);
    tasks.spawn(rs_stream);
    tasks.spawn(job_stream);
    tasks.spawn(hpa_stream);
    if let Some((_, vpa_stream)) = vpas {
        tasks.spawn(vpa_stream);
    }
    tasks.spawn(va_stream);
    tasks.spawn(state_stream);
    tasks.spawn(timer);
    if let Some(every) = guard_every {
        tracing::info!(every_seconds = every.as_secs(), "live memory guard on");
        tasks.spawn(super::memory_guard::run(ctx.clone(), queue.clone(), every));
    }
    tasks.spawn(worker);
    while tasks.join_next().await.is_some() {}
}

/// Watches VerticalAutoscalers into the cache: a change (its spec, its recommendation, its
/// approval annotation) queues the object.
fn va_watch(
    client: &kube::Client,
    ctx: &Arc<Context>,
    writer: reflector::store::Writer<VerticalAutoscaler>,
    queue: mpsc::UnboundedSender<Key>,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let events =
        ctx.options
            .scope
            .watcher(client, &(), watcher::Config::default(), ctx.vas.clone());
    reflector::reflector(writer, events.modify(|va| va.managed_fields_mut().clear()))
        .default_backoff()
        .applied_objects()
        .for_each(move |va| {
            tailor_runtime::report_watch("VerticalAutoscaler", &va);
            if let Ok(va) = va {
                let _ = queue.send(va_key(&va));
            }
            std::future::ready(())
        })
}

/// Watches pods into the cache (slimmed and packed as they are read) and its owner index: a
/// change queues the objects whose workload the pod
/// belongs to.
fn pod_watch(
    client: &kube::Client,
    ctx: &Arc<Context>,
    writer: reflector::store::Writer<pods::CachedPod>,
    queue: mpsc::UnboundedSender<Key>,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let events = ctx.options.scope.watcher(
        client,
        &(),
        watcher::Config::default().page_size(100),
        ctx.pods.clone(),
    );
    let ctx = ctx.clone();
    reflector::reflector(writer, events)
        .default_backoff()
        .for_each(move |event| {
            tailor_runtime::report_watch("Pod", &event);
            let Ok(event) = event else {
                return std::future::ready(());
            };
            ctx.pod_index.observe(&event);
            if let watcher::Event::Apply(pod) | watcher::Event::InitApply(pod) = &event {
                pods::sizing_note(&ctx, pod);
                for key in objects_of(&ctx, pod) {
                    let _ = queue.send(key);
                }
            }
            std::future::ready(())
        })
}

/// Every `--resync-seconds`: forgets what is remembered of gone pods, and queues every object.
async fn resync(ctx: Arc<Context>, queue: mpsc::UnboundedSender<Key>) {
    let mut interval = tokio::time::interval(ctx.options.resync);
    interval.tick().await;
    loop {
        interval.tick().await;
        ctx.prune();
        for va in ctx.vas.state() {
            let _ = queue.send(va_key(&va));
        }
    }
}

/// The VerticalAutoscalers whose workload a pod belongs to.
pub(super) fn objects_of<P: kube::Resource>(ctx: &Context, pod: &P) -> Vec<Key> {
    let Some((kind, name)) = ctx.owners.workload_of(pod) else {
        return Vec::new();
    };
    let ns = pod.namespace().unwrap_or_default();
    ctx.vas
        .state()
        .iter()
        .filter(|va| {
            va.namespace().as_deref() == Some(ns.as_str())
                && va.spec.target_ref.kind == kind
                && va.spec.target_ref.name == name
        })
        .map(|va| va_key(va))
        .collect()
}

/// Waits for the caches, reconciles every object once, then works the queue; the work's
/// progress goes to the process's health (`/healthz` fails when it stalls).
async fn work_loop(ctx: Arc<Context>, work: mpsc::UnboundedReceiver<Key>) {
    let _health = tailor_runtime::health::LoopGuard::new("updater");
    let _ = tokio::join!(
        ctx.pods.wait_until_ready(),
        ctx.owners.replicasets.wait_until_ready(),
        ctx.owners.jobs.wait_until_ready(),
        ctx.hpas.wait_until_ready(),
        ctx.vas.wait_until_ready(),
        ctx.states.wait_until_ready()
    );
    if let Some(vpas) = &ctx.vpas {
        let _ = vpas.wait_until_ready().await;
    }
    tracing::info!(
        verticalautoscalers = ctx.vas.len(),
        pods = ctx.pods.len(),
        "caches synced; first pass starts"
    );
    // The first pass: every object once.
    let first: Vec<Key> = ctx.vas.state().iter().map(|va| va_key(va)).collect();
    let progress = |p| tailor_runtime::health::global().work("updater", p, Instant::now());
    progress(Progress::Received);
    futures::stream::iter(first)
        .for_each_concurrent(ctx.options.concurrency.max(1), |key| {
            let ctx = ctx.clone();
            async move {
                reconcile(&ctx, &key).await;
                progress(Progress::Done);
            }
        })
        .await;
    progress(Progress::Idle);
    ctx.metrics.set_ready();
    tracing::info!("first pass done");
    // Then: each object by one task at a time; triggers merge.
    let concurrency = ctx.options.concurrency;
    tailor_runtime::queue::run(
        work,
        concurrency,
        |key: Key| {
            let ctx = ctx.clone();
            async move { reconcile(&ctx, &key).await }
        },
        progress,
    )
    .await;
}
