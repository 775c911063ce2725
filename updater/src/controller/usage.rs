//! Reads a pod's working set right before a memory decrease that restarts a container, for
//! [`crate::plan::usage::check`], and reports a held cut. Thin I/O: one instant query to
//! Prometheus, only for such patches (rare: one pod at a time per workload).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use tailor_crds::quantity::format_memory_bytes;
use tailor_recommender::prometheus::Prometheus;

use super::events::Kind;
use super::observe::Workload;
use super::{Context, object_ref, uid_of};
use crate::plan::PodPlan;
use crate::plan::usage::{self, Hold};

/// Where the updater reads what a container uses now.
#[derive(Debug, Clone)]
pub struct UsageSource {
    /// Prometheus (the series the recommender reads).
    pub prometheus: Arc<Prometheus>,
    /// How far back "now" reaches: the highest working set over this window counts.
    pub window: Duration,
    /// How often the live memory guard reads every container's working set; `None`: off.
    pub guard_every: Option<Duration>,
}

/// Whether `plan` may go as far as usage is concerned; reads Prometheus only when the plan
/// restarts a container into less memory.
pub(super) async fn clear(ctx: &Context, pod: &Pod, plan: &PodPlan) -> Result<(), Hold> {
    let cuts = usage::restart_cuts(plan);
    if cuts.is_empty() {
        return Ok(());
    }
    let Some(source) = &ctx.options.usage else {
        return usage::check(
            &cuts,
            Err("the updater has no Prometheus to read it from (--prometheus-url)"),
        );
    };
    let at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    ctx.metrics.request("prometheus");
    let read = source
        .prometheus
        .working_sets(
            &pod.namespace().unwrap_or_default(),
            &pod.name_any(),
            source.window,
            at,
        )
        .await
        .map_err(|e| e.to_string());
    match &read {
        Ok(sets) => usage::check(&cuts, Ok(sets)),
        Err(why) => usage::check(&cuts, Err(why)),
    }
}

/// A held cut: logged, counted, a Warning Event on the pod and the object, and the pod backed
/// off (the next try reads usage again).
pub(super) fn held(ctx: &Context, w: &Workload, pod: &Pod, summary: &str, hold: &Hold) {
    let name = pod.name_any();
    let (outcome, why) = match hold {
        Hold::BelowUsage {
            container,
            ceiling,
            usage,
        } => (
            "held_below_usage",
            format!(
                "container {container} uses {} now, more than its new memory {}",
                format_memory_bytes(usage.ceil() as i64).0,
                format_memory_bytes(*ceiling).0
            ),
        ),
        Hold::Unknown(why) => (
            "held_usage_unknown",
            format!("what the container uses now is unknown: {why}"),
        ),
    };
    tracing::warn!(pod = %format!("{}/{name}", w.key.0), reason = %why, "memory decrease held");
    ctx.metrics.resize(outcome, &["memory"]);
    let note = format!(
        "memory decrease held ({summary}): it restarts the container, and {why}; tailor never restarts a container into less memory than it uses, and tries again later"
    );
    ctx.event(
        object_ref(pod),
        Kind::Warning,
        "MemoryDecreaseHeld",
        note.clone(),
    );
    ctx.event(
        object_ref(w.va.as_ref()),
        Kind::Warning,
        "MemoryDecreaseHeld",
        format!("pod {name}: {note}"),
    );
    ctx.back_off(&uid_of(pod));
}
