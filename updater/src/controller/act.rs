//! Step 4, act: resize patches, paced by a global rate limit, each re-checked against the
//! object right before it goes ([`crate::plan::guard::still_holds`]); refused memory
//! decreases taken back ([`crate::plan::refused`]).

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use tailor_crds::quantity::{format_cpu_millis, format_memory_bytes};
use tailor_crds::v1alpha1::{
    ContainerResize, PodRef, ResizeOutcome, ResizeRecord, ResourceName, Resources, UpdateMode,
    VerticalAutoscaler,
};

use super::events::Kind;
use super::follow::Followed;
use super::observe::{self, Workload};
use super::usage;
use super::{
    Context, FIELD_MANAGER, InFlight, LAST_RESIZES, Planned, changed_resources, now, object_ref,
    plan_pod, uid_of,
};
use crate::plan::approval::{Cut, PodCut};
use crate::plan::guard;
use crate::plan::{self, PodPlan};

/// A token bucket: `rate` per second, at most `burst` at once.
pub(super) struct RateLimiter {
    rate: f64,
    burst: f64,
    state: tokio::sync::Mutex<(f64, tokio::time::Instant)>,
}

impl RateLimiter {
    pub(super) fn new(rate: f64, burst: u32) -> Self {
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

/// What acting did.
pub(super) struct Acted {
    /// One line per pod resized, for the object's Event.
    pub issued: Vec<String>,
    /// Held memory cuts and cuts that went ahead under an approval, per pod.
    pub cuts: Vec<PodCut>,
    /// New records, newest first.
    pub records: Vec<ResizeRecord>,
    /// The memory guard's raises sent, newest first.
    pub raises: Vec<tailor_crds::v1alpha1::MemoryGuardRaise>,
}

/// The outcome of trying one pod's resize.
enum Issued {
    Done(i64, PodPlan),
    DryRun,
    /// Nothing sent: the pod is gone, needs nothing any more, or the object no longer asks.
    Nothing,
    Failed,
    /// Not sent: a memory decrease that restarts a container, held for its usage.
    Held,
}

fn describe(c: &plan::ContainerChange) -> String {
    let mut parts = Vec::new();
    for (r, name) in [(ResourceName::Cpu, "cpu"), (ResourceName::Memory, "memory")] {
        if !c.changes(r) {
            continue;
        }
        let fmt = |v: Option<i64>| match (r, v) {
            (_, None) => "-".to_owned(),
            (ResourceName::Cpu, Some(m)) => format_cpu_millis(m).0,
            (ResourceName::Memory, Some(b)) => format_memory_bytes(b).0,
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

fn summary(plan: &PodPlan) -> String {
    plan.changes
        .iter()
        .map(describe)
        .collect::<Vec<_>>()
        .join("; ")
}

fn pod_ref(pod: &Pod) -> PodRef {
    PodRef {
        name: pod.name_any(),
        uid: uid_of(pod),
    }
}

/// Whether the object still asks for this patch, as the watch cache shows it now. A revert
/// needs only the object to be there and `InPlace`.
fn still_wanted(ctx: &Context, w: &Workload, plan: &PodPlan, revert: bool) -> Result<(), String> {
    let now = ctx
        .vas
        .get(&ObjectRef::new(&w.key.1).within(&w.key.0))
        .map(|va| observe::snapshot(&va));
    if revert {
        return match now {
            Some(s) if s.uid == w.snapshot.uid && s.mode == UpdateMode::InPlace => Ok(()),
            _ => Err("the VerticalAutoscaler is gone or no longer InPlace".into()),
        };
    }
    let uses: Vec<&str> = plan
        .changes
        .iter()
        .filter_map(|c| c.approval.as_deref())
        .collect();
    guard::still_holds(&w.snapshot, now.as_ref(), &uses)
}

/// After a conflict: the object as the API server has it now must still ask for the patch.
async fn still_wanted_fresh(ctx: &Context, w: &Workload, plan: &PodPlan) -> Result<(), String> {
    let api: Api<VerticalAutoscaler> = Api::namespaced(ctx.client.clone(), &w.key.0);
    ctx.metrics.request("get");
    let fresh = api
        .get_opt(&w.key.1)
        .await
        .map_err(|e| format!("re-reading the VerticalAutoscaler failed: {e}"))?;
    let uses: Vec<&str> = plan
        .changes
        .iter()
        .filter_map(|c| c.approval.as_deref())
        .collect();
    guard::still_holds(
        &w.snapshot,
        fresh.map(|v| observe::snapshot(&v)).as_ref(),
        &uses,
    )
}

/// `--dry-run`: what would be resized, logged, counted and an Event, once per planned change.
fn dry_run(ctx: &Context, pod: &Pod, plan: &PodPlan) -> Issued {
    let summary = summary(plan);
    let first = ctx.memory().dry_run.insert(uid_of(pod), summary.clone()) != Some(summary.clone());
    if first {
        let name = format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any());
        tracing::info!(pod = %name, changes = %summary, "dry run: would resize");
        ctx.metrics.resize("dry_run", &changed_resources(plan));
        ctx.event(
            object_ref(pod),
            Kind::Normal,
            "DryRunResize",
            format!("would resize {summary}"),
        );
    }
    Issued::DryRun
}

/// After a conflict: the object (read from the API server) must still ask for the patch, and
/// the pod read again is planned again. The new plan and the pod's resourceVersion, or what
/// became of the resize.
async fn replan(
    ctx: &Context,
    w: &Workload,
    api: &Api<Pod>,
    pod: &Pod,
    plan: &PodPlan,
) -> Result<(PodPlan, Option<String>), Issued> {
    let resources = changed_resources(plan);
    let name = pod.name_any();
    ctx.metrics.resize("conflict", &resources);
    if let Err(why) = still_wanted_fresh(ctx, w, plan).await {
        tracing::info!(pod = %format!("{}/{name}", w.key.0), reason = %why, "resize not sent after a conflict");
        ctx.metrics.resize("cancelled", &resources);
        return Err(Issued::Nothing);
    }
    ctx.metrics.request("get");
    match api.get_opt(&name).await {
        Ok(Some(fresh)) if uid_of(&fresh) == uid_of(pod) => {
            let plan = plan_pod(w, &fresh);
            if !plan.resizes() {
                return Err(Issued::Nothing);
            }
            Ok((plan, fresh.resource_version()))
        }
        Ok(_) => {
            ctx.metrics.resize("vanished", &resources);
            Err(Issued::Nothing)
        }
        Err(e) => {
            tracing::warn!(pod = %format!("{}/{name}", w.key.0), error = %e, "re-read after a conflict failed");
            Err(Issued::Failed)
        }
    }
}

/// Patches one pod's resize; on a conflict re-reads the object and the pod and plans the pod
/// again once. `revert`: the plan takes back a refused memory decrease (not re-planned).
async fn issue(ctx: &Context, w: &Workload, pod: &Pod, plan: &PodPlan, revert: bool) -> Issued {
    let (ns, name) = (pod.namespace().unwrap_or_default(), pod.name_any());
    let resources = changed_resources(plan);
    if ctx.options.dry_run {
        return dry_run(ctx, pod, plan);
    }
    let _resizing = ctx.events.resizing();
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let mut plan = plan.clone();
    let mut rv = pod.resource_version();
    for attempt in 0..2 {
        ctx.limiter.acquire().await;
        if let Err(why) = still_wanted(ctx, w, &plan, revert) {
            tracing::info!(pod = %format!("{ns}/{name}"), reason = %why, "resize not sent");
            ctx.metrics.resize("cancelled", &resources);
            return Issued::Nothing;
        }
        if !ctx.options.fence.holds() {
            ctx.metrics.request("fenced");
            return Issued::Nothing;
        }
        if !revert && let Err(hold) = usage::clear(ctx, pod, &plan).await {
            usage::held(ctx, w, pod, &summary(&plan), &hold);
            return Issued::Held;
        }
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
                sent(ctx, pod, &plan, generation, revert);
                return Issued::Done(generation, plan);
            }
            Err(kube::Error::Api(e)) if e.code == 409 && attempt == 0 && !revert => {
                match replan(ctx, w, &api, pod, &plan).await {
                    Ok((fresh, version)) => (plan, rv) = (fresh, version),
                    Err(outcome) => return outcome,
                }
            }
            Err(kube::Error::Api(e)) if e.code == 404 => {
                tracing::info!(pod = %format!("{ns}/{name}"), "pod vanished before its resize");
                ctx.metrics.resize("vanished", &resources);
                return Issued::Nothing;
            }
            Err(e) => {
                if ambiguous(&e)
                    && let Some(generation) = landed(ctx, &api, pod, &plan).await
                {
                    tracing::info!(pod = %format!("{ns}/{name}"), error = %e, generation, "the resize was applied although its answer was an error");
                    sent(ctx, pod, &plan, generation, revert);
                    return Issued::Done(generation, plan);
                }
                refused(ctx, w, pod, &plan, &e);
                return Issued::Failed;
            }
        }
    }
    Issued::Failed
}

/// Whether an error leaves open whether the patch was applied: a 5xx, a connection cut or a
/// timeout, an answer that could not be read. (A 4xx, 429 included, was not applied.)
fn ambiguous(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => s.code >= 500,
        kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::SerdeError(_) => true,
        _ => false,
    }
}

/// After an [`ambiguous`] error: the pod read again. If it is the same pod, its generation
/// moved on, and every container the plan changes has exactly the requests and limits the
/// plan sent, the patch was applied: the new generation. Then it is followed and recorded as
/// any resize, and never sent a second time. A change by another writer (other values) is not
/// taken for ours.
async fn landed(ctx: &Context, api: &Api<Pod>, pod: &Pod, plan: &PodPlan) -> Option<i64> {
    ctx.metrics.request("get");
    let fresh = api.get_opt(&pod.name_any()).await.ok()??;
    let generation = fresh.metadata.generation?;
    let spec = fresh.spec.as_ref()?;
    let applied = plan.changes.iter().all(|change| {
        spec.containers
            .iter()
            .find(|c| c.name == change.container)
            .is_some_and(|c| {
                plan::resources::ContainerResources::of(c.resources.as_ref()).ok()
                    == Some(change.to)
            })
    });
    (uid_of(&fresh) == uid_of(pod)
        && generation > pod.metadata.generation.unwrap_or(0)
        && !plan.changes.is_empty()
        && applied)
        .then_some(generation)
}

/// A resize the API server accepted: logged, counted, and an Event on the pod.
fn sent(ctx: &Context, pod: &Pod, plan: &PodPlan, generation: i64, revert: bool) {
    let name = format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any());
    let summary = summary(plan);
    tracing::info!(pod = %name, generation, changes = %summary, restarts = plan.restarts(), revert, "resize issued");
    ctx.metrics.resize("issued", &changed_resources(plan));
    let note = if revert {
        format!("taking back a memory decrease the kubelet refused: {summary}")
    } else if plan.restarts() {
        format!("resizing (the kubelet restarts the container) {summary}")
    } else {
        format!("resizing in place {summary}")
    };
    ctx.event(object_ref(pod), Kind::Normal, "Resizing", note);
}

/// A patch the API server refused: logged, counted, an Event, and the pod backed off.
fn refused(ctx: &Context, w: &Workload, pod: &Pod, plan: &PodPlan, e: &kube::Error) {
    let name = pod.name_any();
    tracing::warn!(pod = %format!("{}/{name}", w.key.0), error = %e, "resize refused");
    ctx.metrics.resize("failed", &changed_resources(plan));
    let note = format!("resize {} refused: {e}", summary(plan));
    ctx.event(object_ref(pod), Kind::Warning, "ResizeFailed", note.clone());
    ctx.event(
        object_ref(w.va.as_ref()),
        Kind::Warning,
        "ResizeFailed",
        format!("pod {name}: {note}"),
    );
    ctx.back_off(&uid_of(pod));
}

fn resources_of(a: &plan::resources::Amounts) -> Resources {
    Resources {
        cpu: a.cpu.map(format_cpu_millis),
        memory: a.memory.map(format_memory_bytes),
    }
}

/// The record of a resize just issued.
fn new_record(pod: &Pod, plan: &PodPlan, outcome: ResizeOutcome) -> ResizeRecord {
    ResizeRecord {
        pod: pod.name_any(),
        pod_uid: Some(uid_of(pod)),
        time: now(),
        outcome,
        containers: plan
            .changes
            .iter()
            .map(|c| ContainerResize {
                container_name: c.container.clone(),
                from: resources_of(&c.from.requests),
                to: resources_of(&c.to.requests),
                approval: c.approval.clone(),
                refused_usage: None,
            })
            .collect(),
    }
}

/// Remembers a resize this process issued, to follow it.
fn in_flight(ctx: &Context, w: &Workload, pod: &Pod, generation: i64, plan: &PodPlan) {
    let mut memory = ctx.memory();
    memory.in_flight.insert(
        uid_of(pod),
        InFlight {
            va: w.key.clone(),
            generation,
            restarts: plan.restarts(),
            resources: changed_resources(plan),
            recommended_at: w.recommended_at,
        },
    );
    for c in &plan.changes {
        if let Some(id) = &c.approval {
            memory.applied_approvals.insert(id.clone());
        }
    }
}

/// Step 4: issues the selected resizes (a workload's go together; the global rate limit paces
/// them) and gathers the cuts held or approved.
pub(super) async fn act(ctx: &Context, w: &Workload, planned: &Planned) -> Acted {
    let mut acted = Acted {
        issued: Vec::new(),
        cuts: Vec::new(),
        records: Vec::new(),
        raises: Vec::new(),
    };
    // A pod's generation as it is after what this process issued (the cache may lag).
    let generation = |pod: &Pod| {
        let issued = ctx
            .memory()
            .in_flight
            .get(&uid_of(pod))
            .map(|f| f.generation);
        pod.metadata
            .generation
            .unwrap_or(1)
            .max(issued.unwrap_or(0))
    };
    let cuts_of = |pod: &Pod, plan: &PodPlan, generation: i64| -> Vec<PodCut> {
        plan.held
            .iter()
            .cloned()
            .chain(plan.approved_cuts())
            .map(|cut: Cut| PodCut {
                pod: pod_ref(pod),
                generation,
                cut,
            })
            .collect()
    };
    for (i, plan) in planned.plans.iter().enumerate() {
        if !planned.selection.now.contains(&i) {
            acted
                .cuts
                .extend(cuts_of(&w.pods[i], plan, generation(&w.pods[i])));
        }
    }
    let outcomes = futures::future::join_all(
        planned
            .selection
            .now
            .iter()
            .map(|&i| issue(ctx, w, &w.pods[i], &planned.plans[i], false)),
    )
    .await;
    for (&i, outcome) in planned.selection.now.iter().zip(outcomes) {
        let pod = &w.pods[i];
        match outcome {
            Issued::Done(generation, plan) => {
                in_flight(ctx, w, pod, generation, &plan);
                acted.cuts.extend(cuts_of(pod, &plan, generation));
                acted
                    .issued
                    .push(format!("pod {}: {}", pod.name_any(), summary(&plan)));
                acted
                    .records
                    .push(new_record(pod, &plan, ResizeOutcome::InProgress));
                acted
                    .raises
                    .extend(super::memory_guard::raised(ctx, w, pod, &plan));
            }
            Issued::DryRun | Issued::Failed | Issued::Held => {
                acted
                    .cuts
                    .extend(cuts_of(pod, &planned.plans[i], generation(pod)));
            }
            Issued::Nothing => {}
        }
    }
    if !acted.issued.is_empty() {
        let verb = if ctx.options.dry_run {
            "would resize"
        } else {
            "resizing"
        };
        ctx.event(
            object_ref(w.va.as_ref()),
            Kind::Normal,
            "Resizing",
            format!(
                "{verb} {} pod(s): {}",
                acted.issued.len(),
                acted.issued.join(" | ")
            ),
        );
    }
    ctx.metrics
        .waiting("restart_budget", planned.selection.waiting_for_restart);
    acted
}

/// Takes back the memory decreases the kubelet refused (see [`crate::plan::refused`]): one
/// resize per pod back to the memory in force, recorded as `Reverted` with the usage the
/// kubelet reported, a Warning Event, counted once.
pub(super) async fn revert_refused(ctx: &Context, w: &Workload, followed: &mut Followed) {
    for (i, refusal) in std::mem::take(&mut followed.refused) {
        let pod = &w.pods[i];
        let Some(plan) = plan::refused::revert(pod) else {
            continue;
        };
        let Issued::Done(generation, plan) = issue(ctx, w, pod, &plan, true).await else {
            continue;
        };
        in_flight(ctx, w, pod, generation, &plan);
        ctx.metrics.resize("reverted", &["memory"]);
        let usage = |container: &str| {
            refusal
                .containers
                .iter()
                .find(|(c, _)| c == container)
                .map(|(_, u)| *u)
                .or(refusal.pod_usage)
                // The kubelet can name 0 before it has read the container's usage.
                .filter(|u| *u > 0)
        };
        // The refused resize's record becomes Reverted, with what the kubelet saw.
        let uid = uid_of(pod.as_ref());
        let mut record = followed
            .records
            .iter()
            .position(|r| {
                r.pod_uid.as_deref() == Some(uid.as_str())
                    || (r.pod_uid.is_none() && r.pod == pod.name_any())
            })
            .map(|at| followed.records.remove(at))
            .unwrap_or_else(|| new_record(pod, &plan, ResizeOutcome::Reverted));
        record.outcome = ResizeOutcome::Reverted;
        for c in &mut record.containers {
            c.refused_usage = usage(&c.container_name).map(format_memory_bytes);
        }
        let what = record
            .containers
            .iter()
            .map(|c| {
                format!(
                    "{} (memory request {} refused, usage {})",
                    c.container_name,
                    c.to.memory.as_ref().map_or("-", |q| q.0.as_str()),
                    c.refused_usage.as_ref().map_or("unknown", |q| q.0.as_str())
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        followed.records.insert(0, record);
        followed.records.truncate(LAST_RESIZES);
        let note = format!(
            "the kubelet refused a memory decrease because usage is above the new limit; tailor restored the memory in force so the cut is not applied later at a moment nobody chose: {what}; the recommender keeps its floor above that usage"
        );
        ctx.event(
            object_ref(pod.as_ref()),
            Kind::Warning,
            "MemoryDecreaseReverted",
            note.clone(),
        );
        ctx.event(
            object_ref(w.va.as_ref()),
            Kind::Warning,
            "MemoryDecreaseReverted",
            format!("pod {}: {note}", pod.name_any()),
        );
    }
}
