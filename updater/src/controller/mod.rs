//! The actuator: watches VerticalAutoscalers, its own ResizeStates, pods, ReplicaSets, Jobs,
//! HPAs (and upstream VerticalPodAutoscalers where their CRD is installed), and reconciles each
//! `InPlace` object in five named steps:
//!
//! 1. [`observe`]: read the object, its pods and what bears on them from the watch caches;
//!    decide whether the updater may act at all (mode, a current recommendation, one owner per
//!    workload, supported target) and which approvals are granted, for which pods.
//! 2. [`follow`]: follow the resizes under way (the kubelet's conditions), update the records,
//!    count outcomes once each, and find memory decreases the kubelet refused.
//! 3. plan ([`plan_workload`], pure, in [`crate::plan`]): one plan per pod and the selection of
//!    what goes now (restart pacing, Infeasible).
//! 4. [`act`]: patch the `resize` subresource, re-checking before each patch that the object
//!    still asks for it and, for a memory decrease that restarts a container, that the
//!    container uses less than the new limit ([`usage`]); take back refused memory decreases.
//! 5. [`record`]: write the updater's record of the object (pending approvals, conditions,
//!    last resizes) to its `ResizeState` with server-side apply (by [`writer`], coalesced
//!    over a moment), and Events. The updater never
//!    writes the object's status: the recommender alone may (it mirrors the ResizeState there).
//!
//! Nothing here decides what to resize: that is the planner's. Everything the updater needs
//! after a restart is in the cluster (pod specs hold what was asked, pod status what was done,
//! the ResizeStates the pending approvals and the last resizes), so a restarted updater plans
//! from the pods' specs and never patches the same resize twice.

mod act;
pub(crate) mod events;
mod follow;
mod memory_guard;
mod observe;
mod pods;
mod record;
mod usage;
mod watch;
mod writer;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::core::DynamicObject;
use kube::runtime::reflector::Store;
use kube::{Resource, ResourceExt};
use tailor_crds::resize_state::{ResizeState, ResizeStateSpec};
use tailor_crds::v1alpha1::{ResourceName, UpdateMode, VerticalAutoscaler};
use tailor_runtime::workload::Owners;

use crate::metrics::Metrics;
use crate::plan::workload::{self, PodView, Selection};
use crate::plan::{self, PodInput, PodPlan};

pub use usage::UsageSource;
pub use watch::run;

/// The field manager of the updater's ResizeState writes and resize patches.
pub const FIELD_MANAGER: &str = "tailor-updater";

/// How many resize records `lastResizes` keeps.
const LAST_RESIZES: usize = 10;

/// How many memory guard raises `memoryGuardRaises` keeps.
const GUARD_RAISES: usize = 20;

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
    /// Checked immediately before each write: false once this replica may no longer lead.
    pub fence: tailor_runtime::lease::Fence,
    /// Where usage is read before a memory decrease that restarts a container; without it
    /// such decreases are held.
    pub usage: Option<UsageSource>,
    /// The namespaces watched: objects elsewhere are never read nor changed.
    pub scope: tailor_runtime::Scope,
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
            fence: tailor_runtime::lease::Fence::always(),
            usage: None,
            scope: tailor_runtime::Scope::Cluster,
        }
    }
}

/// A VerticalAutoscaler's namespace and name.
pub type Key = (String, String);

/// A resize this process issued and is following.
#[derive(Debug, Clone)]
struct InFlight {
    /// The VerticalAutoscaler that issued it.
    va: Key,
    generation: i64,
    restarts: bool,
    resources: Vec<&'static str>,
    recommended_at: Instant,
}

/// What the updater remembers between reconciles. All of it can be lost: it only avoids
/// repeating Events and counts, and measures time.
#[derive(Default)]
struct Memory {
    in_flight: HashMap<String, InFlight>,
    backoff: HashMap<String, (Instant, Duration)>,
    /// Keys of things reported (Events, counted outcomes) once per process.
    reported: HashSet<String>,
    applied_approvals: HashSet<String>,
    recommendations: HashMap<Key, (String, Instant)>,
    dry_run: HashMap<String, String>,
    /// When an unfinished resize state was first seen, for pods whose condition has no time.
    first_seen: HashMap<(Key, String, &'static str), i64>,
    /// What the memory guard's last scan found hot, by pod uid.
    hot: HashMap<String, memory_guard::Hot>,
    /// Each object's ResizeState as last written. It is the truth for those fields (only the
    /// updater writes them), and the watch cache may not show it yet.
    written: HashMap<Key, ResizeStateSpec>,
}

/// Everything a reconcile needs.
#[allow(missing_debug_implementations)] // kube's Store is not Debug
pub struct Context {
    client: kube::Client,
    options: Options,
    metrics: Arc<Metrics>,
    vas: Store<VerticalAutoscaler>,
    /// The updater's own records, one per object it has something to say about.
    states: Store<ResizeState>,
    pods: Store<pods::CachedPod>,
    /// The cached pods by controller owner.
    pod_index: tailor_runtime::index::OwnerIndex,
    owners: Owners,
    hpas: Store<HorizontalPodAutoscaler>,
    /// Upstream VerticalPodAutoscalers, where their CRD is installed.
    vpas: Option<Store<DynamicObject>>,
    limiter: act::RateLimiter,
    events: events::Events,
    /// The ResizeState writes waiting to go.
    writes: writer::Writes,
    memory: Mutex<Memory>,
    /// When this process started, in Unix seconds: OOM kills before it are not counted again.
    started: i64,
}

/// Whether a key of [`Memory::reported`] belongs to an object that is gone: its owner, the
/// first uid among its `/`-separated parts (a pod's, or a VerticalAutoscaler's), is not in
/// `present`. Keys without a uid stay.
fn names_a_gone_pod(key: &str, present: &HashSet<String>) -> bool {
    key.split('/')
        .find(|part| is_uid(part))
        .is_some_and(|owner| !present.contains(owner))
}

/// Whether `s` has the form of a Kubernetes uid (a UUID: 8-4-4-4-12 hexadecimal digits).
fn is_uid(s: &str) -> bool {
    let lens: Vec<usize> = s.split('-').map(str::len).collect();
    lens == [8, 4, 4, 4, 12] && s.chars().all(|c| c == '-' || c.is_ascii_hexdigit())
}

impl Context {
    fn memory(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.memory
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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

    /// Forgets what it remembers of pods that are gone (their uid no longer in the pod cache):
    /// backoffs, resizes followed, dry-run notes, memory guard readings, and the keys of what
    /// was reported once. Without it these grow with every pod ever seen.
    pub(super) fn prune(&self) {
        let pods: HashSet<String> = self
            .pods
            .state()
            .iter()
            .map(|p| uid_of(p.as_ref()))
            .collect();
        // Keys reported once for an object (a declined change, a stale approval) carry its
        // uid; they stay while the object does.
        let owners: HashSet<String> = pods
            .iter()
            .cloned()
            .chain(self.vas.state().iter().map(|va| uid_of(va.as_ref())))
            .collect();
        let mut memory = self.memory();
        memory.backoff.retain(|uid, _| pods.contains(uid));
        memory.in_flight.retain(|uid, _| pods.contains(uid));
        memory.dry_run.retain(|uid, _| pods.contains(uid));
        memory.hot.retain(|uid, _| pods.contains(uid));
        memory
            .reported
            .retain(|key| !names_a_gone_pod(key, &owners));
    }

    /// Whether `key` is new for this process (then it is remembered).
    fn first_time(&self, key: String) -> bool {
        self.memory().reported.insert(key)
    }

    /// Publishes an Event (best effort, off the reconcile's path).
    fn event(&self, regarding: ObjectReference, kind: events::Kind, reason: &str, note: String) {
        self.events.send(regarding, kind, reason, note);
    }

    /// An Event once per `key` for this process.
    fn event_once(
        &self,
        key: String,
        regarding: ObjectReference,
        kind: events::Kind,
        reason: &str,
        note: String,
    ) {
        if self.first_time(key) {
            self.event(regarding, kind, reason, note);
        }
    }
}

fn object_ref<K: Resource<DynamicType = ()>>(obj: &K) -> ObjectReference {
    obj.object_ref(&())
}

fn va_key(va: &VerticalAutoscaler) -> Key {
    (va.namespace().unwrap_or_default(), va.name_any())
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

fn uid_of<K: Resource>(obj: &K) -> String {
    obj.meta().uid.clone().unwrap_or_default()
}

/// What the plan step decided for a workload.
struct Planned {
    plans: Vec<PodPlan>,
    selection: Selection,
}

/// Step 3: one plan per pod (pure) and the selection of what goes now.
fn plan_workload(ctx: &Context, w: &observe::Workload) -> Planned {
    let plans: Vec<PodPlan> = w
        .pods
        .iter()
        .map(|p| memory_guard::plan(ctx, w, p, plan_pod(w, p)))
        .collect();
    surface_declines(ctx, w, &plans);
    let in_flight_restarts = {
        let memory = ctx.memory();
        w.pods
            .iter()
            .filter(|p| !plan::resources::terminal(p))
            .filter(|p| {
                memory.in_flight.get(&uid_of(p.as_ref())).is_some_and(|f| {
                    f.restarts
                        && !(plan::resources::ResizeStatus::of(p).complete()
                            && plan::resources::ready(p))
                })
            })
            .count()
    };
    let views: Vec<PodView<'_>> = w
        .pods
        .iter()
        .zip(&plans)
        .map(|(p, plan)| {
            let rs = plan::resources::ResizeStatus::of(p);
            PodView {
                plan,
                ready: plan::resources::ready(p),
                resizing: !rs.complete(),
                infeasible: rs.infeasible(),
                backing_off: ctx.backing_off(&uid_of(p.as_ref())),
                terminal: plan::resources::terminal(p),
            }
        })
        .collect();
    let selection = workload::select(
        &views,
        w.va.spec.update_policy.max_concurrent_restarts,
        in_flight_restarts,
    );
    if selection.waiting_for_restart > 0 {
        tracing::debug!(va = %format!("{}/{}", w.key.0, w.key.1), waiting = selection.waiting_for_restart, "restart-causing resizes wait for the budget");
    }
    Planned { plans, selection }
}

/// Every change the planner declined, as an Event on the object, once per distinct decline
/// for this process (the same decline comes back for every pod on every pass).
fn surface_declines(ctx: &Context, w: &observe::Workload, plans: &[PodPlan]) {
    use plan::declined::DeclineReason;
    for d in plans.iter().flat_map(|p| &p.declined) {
        let kind = match d.reason {
            DeclineReason::HpaConflict | DeclineReason::MemoryDecreaseNever => events::Kind::Normal,
            _ => events::Kind::Warning,
        };
        ctx.event_once(
            format!(
                "declined/{}/{}/{}/{}",
                uid_of(w.va.as_ref()),
                d.container,
                d.reason.as_str(),
                d.message
            ),
            object_ref(w.va.as_ref()),
            kind,
            d.reason.as_str(),
            format!("container {}: {}", d.container, d.message),
        );
    }
}

/// The planner's input for one pod of the workload: only the approvals that cover that pod,
/// and a memory floor above the usage the kubelet reported when it refused a cut of the pod,
/// or that prompted a memory guard raise of it (the recommender's rule: usage x (1 +
/// peakMargin)), so the same cut is not planned again and a raise is not cut right back.
fn plan_pod(w: &observe::Workload, pod: &Pod) -> PodPlan {
    let approved = plan::approval::for_pod(&w.grants, &uid_of(pod));
    let refused = floor_evidence(w, pod);
    let mut recommendation = std::borrow::Cow::Borrowed(w.recommendation.as_slice());
    for (container, usage) in refused {
        let margin = 1.0 + w.va.spec.recommender_policy.memory.peak_margin.max(0.0);
        let floor = (usage as f64 * margin).ceil() as i64;
        if let Some(r) = recommendation
            .to_mut()
            .iter_mut()
            .find(|r| r.container_name == container)
        {
            let current = r
                .memory_floor
                .as_ref()
                .and_then(|f| tailor_crds::quantity::memory_bytes(&f.value).ok());
            if current.is_none_or(|c| c < floor) {
                r.memory_floor = Some(tailor_crds::v1alpha1::MemoryFloor {
                    value: tailor_crds::quantity::format_memory_bytes(floor),
                    reason: tailor_crds::v1alpha1::FloorReason::Peak,
                    peak_margin: None,
                });
            }
        }
    }
    plan::plan_pod(&PodInput {
        pod,
        spec: &w.va.spec,
        recommendation: &recommendation,
        blocked: &w.blocked,
        approved: &approved,
        now: now().0.as_second(),
        unboost_only: w.va.spec.update_policy.update_mode == UpdateMode::Initial,
    })
}

/// The memory usage the kubelet reported for the pod's containers when it refused a cut
/// (records `Reverted`, matched by uid), and the usage that prompted each memory guard raise
/// of the pod: the plan keeps memory above both until the recommender has learned of them.
fn floor_evidence(w: &observe::Workload, pod: &Pod) -> Vec<(String, i64)> {
    use tailor_crds::quantity::memory_bytes;
    let uid = uid_of(pod);
    let this_pod = |r: Option<&String>| r.map(String::as_str) == Some(uid.as_str());
    let refused = w
        .status
        .last_resizes
        .iter()
        .filter(|r| {
            r.outcome == tailor_crds::v1alpha1::ResizeOutcome::Reverted
                && this_pod(r.pod_uid.as_ref())
        })
        .flat_map(|r| &r.containers)
        .filter_map(|c| {
            let usage = memory_bytes(c.refused_usage.as_ref()?).ok()?;
            Some((c.container_name.clone(), usage))
        });
    let raised = w
        .status
        .memory_guard_raises
        .iter()
        .filter(|r| this_pod(r.pod_uid.as_ref()))
        .filter_map(|r| Some((r.container_name.clone(), memory_bytes(&r.usage).ok()?)));
    refused.chain(raised).collect()
}

/// Reconciles one VerticalAutoscaler: observe, follow, plan, act, record.
pub async fn reconcile(ctx: &Context, key: &Key) {
    ctx.metrics.reconciled();
    let w = match observe::observe(ctx, key) {
        observe::Observed::Gone => return observe::forget(ctx, key),
        observe::Observed::Idle(idle) => return record::idle(ctx, &idle),
        observe::Observed::Active(w) => w,
    };
    let mut followed = follow::follow(ctx, &w);
    act::revert_refused(ctx, &w, &mut followed).await;
    let planned = plan_workload(ctx, &w);
    let acted = act::act(ctx, &w, &planned).await;
    if ctx.options.dry_run {
        return;
    }
    record::record(ctx, &w, followed, &planned, acted);
}

/// The resources a plan changes, for metrics.
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

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::{is_uid, names_a_gone_pod};

    #[test]
    fn reported_keys_of_gone_pods_are_found_by_their_uid() {
        let here = "6f1c2b0a-1d2e-4f3a-9b8c-7d6e5f4a3b2c";
        let gone = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
        assert!(is_uid(here) && !is_uid("w-0") && !is_uid("6f1c2b0a-1d2e-4f3a-9b8c-7d6e5f4a3b2"));
        let present: HashSet<String> = [here.to_owned()].into();
        assert!(!names_a_gone_pod(&format!("oom/{here}/app/3"), &present));
        assert!(names_a_gone_pod(&format!("oom/{gone}/app/3"), &present));
        assert!(names_a_gone_pod(
            &format!("deferred-metric/{gone}/2"),
            &present
        ));
        // A key owned by a present object stays, whatever uids follow; keys without one stay.
        assert!(!names_a_gone_pod(&format!("stale/{here}/{gone}"), &present));
        assert!(names_a_gone_pod(
            &format!("declined/{gone}/app/memory"),
            &present
        ));
        assert!(!names_a_gone_pod("approval/shop/web/abc", &present));
    }
}
