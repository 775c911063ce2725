//! Computing one VerticalAutoscaler's recommendation and conditions, without writing them:
//! check the spec, read the history, estimate each container, then say how it went.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use tailor_crds::quantity::{cpu_millis, format_cpu_millis, format_memory_bytes, memory_bytes};
use tailor_crds::v1alpha1::{
    ContainerPolicy, ContainerRecommendation, FloorReason, MemoryFloor, Recommendation,
    ResourceName, Resources, SUPPORTED_TARGETS, VerticalAutoscaler, condition,
};

use super::heap_hints::{heap_floor, measured_heaps};
use super::history::{read_history, with_updater_evidence};
use super::{Context, live_pods, now};
use crate::model::estimator::{self, Current, Estimate, MemoryReason, Verdict};
use crate::model::heap::HeapHint;
use crate::model::history::ContainerHistory;
use crate::prometheus::HistoryError;
use crate::spec;

pub(super) fn current(pod: Option<&Pod>, container: &str) -> Current {
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

pub(super) fn reason(r: MemoryReason) -> FloorReason {
    match r {
        MemoryReason::Percentile => FloorReason::Percentile,
        MemoryReason::Peak => FloorReason::Peak,
        MemoryReason::HeapHint => FloorReason::HeapHint,
        MemoryReason::GuardRaise => FloorReason::MemoryGuard,
        MemoryReason::Oom => FloorReason::Oom,
    }
}

pub(super) fn resources(cpu: Option<i64>, memory: Option<i64>) -> Resources {
    Resources {
        cpu: cpu.map(format_cpu_millis),
        memory: memory.map(format_memory_bytes),
    }
}

pub(super) fn to_status(
    container: &str,
    e: &Estimate,
    cpu: bool,
    memory: bool,
) -> ContainerRecommendation {
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

/// A condition as computed: `(type, status, reason, message)`.
type Cond = (&'static str, bool, &'static str, String);

/// The spec asks for something tailor cannot do: the previous recommendation is kept.
fn unsupported(previous: Option<Recommendation>, message: String) -> Outcome {
    Outcome {
        recommendation: previous,
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
    }
}

/// The history could not be read: the previous recommendation is kept, and says so.
fn history_unavailable(previous: Option<Recommendation>, error: &HistoryError) -> Outcome {
    let kept = previous.is_some();
    Outcome {
        recommendation: previous,
        conditions: vec![
            (
                condition::HISTORY_UNAVAILABLE,
                true,
                "PrometheusError",
                error.to_string(),
            ),
            (
                condition::RECOMMENDATION_PROVIDED,
                kept,
                if kept {
                    "PreviousRecommendationKept"
                } else {
                    "HistoryUnavailable"
                },
                "usage history could not be read; see HistoryUnavailable".into(),
            ),
        ],
    }
}

/// Step 1: a target tailor can resolve and a readable window (seconds).
pub(super) fn check(va: &VerticalAutoscaler) -> Result<f64, String> {
    let target = &va.spec.target_ref;
    if !SUPPORTED_TARGETS
        .iter()
        .any(|(v, k)| *v == target.api_version && *k == target.kind)
    {
        return Err(format!(
            "targetRef {}/{} is not a workload tailor can resolve (supported: Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob)",
            target.api_version, target.kind
        ));
    }
    spec::parse_duration(&va.spec.recommender_policy.history_window)
        .map_err(|e| format!("recommenderPolicy.historyWindow: {e}"))
}

/// What was read for one object.
struct Read {
    /// The pods in the history window.
    pods: Vec<String>,
    histories: BTreeMap<String, ContainerHistory>,
    /// Heap ceilings the JVMs report, by container.
    measured: BTreeMap<String, HeapHint>,
}

/// Step 2: the history over `(start, end, window)`, reading only what is new since the last
/// pass over the same target and window (the cache keeps the rest), and the warnings
/// Prometheus attached to the answers. What an answer with warnings gave is used for this pass
/// only: it may lack samples, so it is not kept, and the next pass reads the same range again.
async fn history(
    ctx: &Context,
    va: &VerticalAutoscaler,
    template: Option<&Pod>,
    (start, end, window): (f64, f64, f64),
) -> Result<(Read, Vec<String>), HistoryError> {
    let ns = va.namespace().unwrap_or_default();
    let target = &va.spec.target_ref;
    let key = (ns.clone(), va.name_any());
    let target_key = (target.kind.clone(), target.name.clone());
    let cache = || {
        ctx.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    };
    let boosts = super::history::startup_boosts(va);
    let cached = cache()
        .remove(&key)
        .filter(|c| c.target == target_key && c.window == window && c.boosts == boosts);
    let (read, warnings) = crate::prometheus::with_warnings(read_history(
        ctx,
        &ns,
        (&target.kind, &target.name),
        (start, end, window),
        cached.as_ref(),
        &boosts,
    ))
    .await;
    let c = match read {
        Ok(c) => c,
        Err(e) => {
            // Nothing read is lost: the next pass reads on from where the last one ended,
            // not the whole window again.
            if let Some(c) = cached {
                cache().insert(key, c);
            }
            return Err(e);
        }
    };
    let mut histories = c.histories.clone();
    c.unsettled.apply_to(&mut histories);
    let read = Read {
        pods: c.pods.keys().cloned().collect(),
        histories,
        measured: measured_heaps(ctx, &ns, &c.heaps, template),
    };
    // A partial answer is not kept: the cache stays as it was before this pass.
    let keep = if warnings.is_empty() { Some(c) } else { cached };
    if let Some(c) = keep {
        cache().insert(key, c);
    }
    Ok((read, warnings))
}

/// What the estimates came to.
#[derive(Default)]
struct Estimated {
    recs: Vec<ContainerRecommendation>,
    /// `container: span` of those with little history.
    low: Vec<String>,
    /// `container: why` of those without an estimate.
    missing: Vec<String>,
}

/// What the estimator gets for container `name` of `va` (whose entry is `policy`) besides its
/// history: the model policy, and the heap floor with the hint that set it (`measured`: the
/// heap ceilings the JVMs reported, by container). A policy or heap setting that cannot be
/// read is an error.
pub(super) fn inputs(
    va: &VerticalAutoscaler,
    policy: &ContainerPolicy,
    template: Option<&Pod>,
    name: &str,
    measured: &BTreeMap<String, HeapHint>,
) -> Result<(estimator::Policy, Option<(f64, HeapHint)>), String> {
    let model_policy = spec::model_policy(&va.spec, policy)?;
    let heap = heap_floor(policy, template, name, measured.get(name))?;
    Ok((model_policy, heap))
}

/// Step 3: an estimate for each controlled container (those of the live pods, else those in
/// the history). A policy or heap hint that cannot be read is an error.
fn estimate_all(
    ctx: &Context,
    va: &VerticalAutoscaler,
    template: Option<&Pod>,
    read: &Read,
    start: f64,
) -> Result<Estimated, String> {
    let mut names: Vec<String> = template
        .and_then(|p| p.spec.as_ref())
        .map(|s| s.containers.iter().map(|c| c.name.clone()).collect())
        .unwrap_or_else(|| read.histories.keys().cloned().collect());
    names.retain(|n| !n.is_empty());
    let mut out = Estimated::default();
    for name in &names {
        let policy = spec::container_policy(&va.spec, name);
        if !spec::is_controlled(&policy) {
            continue;
        }
        let (model_policy, heap) = inputs(va, &policy, template, name, &read.measured)
            .map_err(|e| format!("container {name}: {e}"))?;
        let heap = heap.map(|(floor, hint)| {
            tracing::debug!(verticalautoscaler = %va.name_any(), container = %name, floor, source = %hint.source, "heap hint");
            floor
        });
        let Some(h) = read.histories.get(name) else {
            out.missing.push(format!("{name}: no samples"));
            continue;
        };
        let h = with_updater_evidence(h, va, name, start);
        let current = current(template, name);
        match estimator::estimate(&h, &model_policy, heap, &current, &ctx.options.settings) {
            Verdict::Estimate(e) => {
                if e.low_confidence {
                    out.low
                        .push(format!("{name}: {}", spec::format_duration(e.span)));
                }
                out.recs.push(to_status(
                    name,
                    &e,
                    spec::controls(&policy, ResourceName::Cpu),
                    spec::controls(&policy, ResourceName::Memory),
                ));
            }
            Verdict::NotEnoughHistory(m) => out.missing.push(format!("{name}: {m}")),
        }
    }
    Ok(out)
}

/// Step 4: the conditions that say how the pass went.
fn conditions(
    va: &VerticalAutoscaler,
    (live, read): (usize, &Read),
    est: &Estimated,
    window: f64,
) -> Vec<Cond> {
    let target = &va.spec.target_ref;
    let history = read.pods.len();
    let no_pods = live == 0 && history == 0;
    let low_confidence = !est.low.is_empty() || !est.missing.is_empty();
    let provided = !est.recs.is_empty();
    let little: Vec<String> = est.low.iter().chain(&est.missing).cloned().collect();
    vec![
        (
            condition::HISTORY_UNAVAILABLE,
            false,
            "HistoryRead",
            format!("history of {history} pods read"),
        ),
        (
            condition::NO_PODS_MATCHED,
            no_pods,
            if no_pods { "NoPods" } else { "PodsFound" },
            format!(
                "{live} running pods and {history} pods in the history window of {}/{}",
                target.kind, target.name
            ),
        ),
        (
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
                    little.join("; ")
                )
            } else {
                "at least a day of history for every container".into()
            },
        ),
        (
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
                    "from {} of history over {history} pods",
                    spec::format_duration(window)
                )
            } else {
                "no container has enough history yet".into()
            },
        ),
    ]
}

/// Computes one VerticalAutoscaler's recommendation and conditions without writing them:
/// check the spec, read the history, estimate each container, say how it went.
/// `ConfigUnsupported` is written only while true: the updater sets it for an HPA conflict, and
/// each writer's entry goes away when it stops applying it.
pub async fn compute(ctx: &Context, va: &VerticalAutoscaler) -> Outcome {
    let previous = va.status.as_ref().and_then(|s| s.recommendation.clone());
    let window = match check(va) {
        Ok(w) => w,
        Err(message) => return unsupported(previous, message),
    };
    let (ns, target) = (va.namespace().unwrap_or_default(), &va.spec.target_ref);
    let live = live_pods(ctx, &ns, &target.kind, &target.name);
    let template = live.first().map(|p| p.as_ref());
    let end = now();
    let start = end - window;
    let (read, warnings) = match history(ctx, va, template, (start, end, window)).await {
        Ok(read) => read,
        Err(e) => return history_unavailable(previous, &e),
    };
    let est = match estimate_all(ctx, va, template, &read, start) {
        Ok(est) => est,
        Err(message) => return unsupported(previous, message),
    };
    let mut conditions = conditions(va, (live.len(), &read), &est, window);
    let recs = if warnings.is_empty() {
        est.recs
    } else {
        partial_history(va, previous.as_ref(), est.recs, &warnings, &mut conditions)
    };
    Outcome {
        // Bound to the spec and the target it was computed from: the updater acts on nothing
        // else. A recommendation kept from an earlier pass keeps its own binding.
        recommendation: (!recs.is_empty()).then(|| Recommendation {
            observed_generation: va.metadata.generation,
            target_ref: Some(target.clone()),
            container_recommendations: recs,
        }),
        conditions,
    }
}

/// Prometheus answered the read with `warnings`: the data may be partial, so `recs` may raise
/// but not lower the previous recommendation (see [`super::partial`]), and
/// `HistoryUnavailable` says so. A previous recommendation computed for another generation of
/// the spec or another target is not held to: the spec changed since.
fn partial_history(
    va: &VerticalAutoscaler,
    previous: Option<&Recommendation>,
    recs: Vec<ContainerRecommendation>,
    warnings: &[String],
    conditions: &mut [Cond],
) -> Vec<ContainerRecommendation> {
    let previous = previous.filter(|p| {
        p.observed_generation == va.metadata.generation
            && p.target_ref.as_ref() == Some(&va.spec.target_ref)
    });
    let (recs, held) = super::partial::hold_decreases(recs, previous);
    let first: String = warnings
        .first()
        .map(|w| w.chars().take(300).collect())
        .unwrap_or_default();
    let message = format!(
        "Prometheus answered with {} warning(s), the history may be partial, so no recommendation is lowered{}: {first}",
        warnings.len(),
        if held.is_empty() {
            String::new()
        } else {
            format!(" (held: {})", held.join(", "))
        },
    );
    for c in conditions.iter_mut() {
        if c.0 == condition::HISTORY_UNAVAILABLE {
            *c = (
                condition::HISTORY_UNAVAILABLE,
                true,
                "PartialHistory",
                message.clone(),
            );
        }
    }
    recs
}
