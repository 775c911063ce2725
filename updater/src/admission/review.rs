//! The two webhooks' answers, each a few named steps over the caches:
//!
//! - **size** (pods, CREATE): find the pod's workload and the VerticalAutoscaler that sizes it
//!   (`Initial` or `InPlace`, the oldest if several), check its recommendation is current for
//!   its spec and target ([`guard::stale`]), size the pod ([`admission::size`]) and answer with
//!   the JSON Patch ([`admission::patch`]). Anything else admits the pod as submitted: a pod is
//!   never refused, only left at its template's values (and resized live later under
//!   `InPlace`).
//! - **gate** (pods/resize, UPDATE, by someone other than the updater): the containers whose
//!   memory limit the resize lowers, checked against the namespace's pending approvals
//!   ([`gate::check`]).

use k8s_openapi::api::core::v1::{Container, Pod};
use kube::ResourceExt;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, Operation};
use tailor_crds::quantity::memory_bytes;
use tailor_crds::v1alpha1::{APPROVE_MEMORY_DECREASE_ANNOTATION, VerticalAutoscaler};

use super::lookup::Lookup;
use crate::plan::admission::{self, NOTE_ANNOTATION, Source};
use crate::plan::gate::{self, Lowered};
use crate::plan::guard;
use crate::plan::{DeclineReason, PodInput, PodPlan};

/// Why a pod was (not) sized; the `outcome` label of `tailor_admission_requests_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Sized: a patch was returned.
    Sized,
    /// Its VerticalAutoscaler sizes it, but it already matches the recommendation.
    Unchanged,
    /// No VerticalAutoscaler in `Initial` or `InPlace` for its workload (or no workload).
    NotManaged,
    /// The recommendation is missing, or not current for the spec or target.
    NoRecommendation,
    /// The planner declined every change (e.g. it would change the QoS class).
    Declined,
    /// The caches have not listed yet.
    NotReady,
    /// The gate allowed the resize.
    Allowed,
    /// The gate denied the resize.
    Denied,
    /// The request could not be read.
    Invalid,
}

impl Outcome {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sized => "sized",
            Self::Unchanged => "unchanged",
            Self::NotManaged => "not_managed",
            Self::NoRecommendation => "no_recommendation",
            Self::Declined => "declined",
            Self::NotReady => "not_ready",
            Self::Allowed => "allowed",
            Self::Denied => "denied",
            Self::Invalid => "invalid",
        }
    }
}

/// Something a person can fix, said as an Event on the VerticalAutoscaler.
#[derive(Clone, Debug)]
pub struct Notice {
    pub va: std::sync::Arc<VerticalAutoscaler>,
    pub reason: &'static str,
    pub note: String,
}

/// An answer, why, and what to tell a person.
#[derive(Debug)]
pub struct Answer {
    pub response: AdmissionResponse,
    pub outcome: Outcome,
    pub notice: Option<Notice>,
}

fn answer(response: AdmissionResponse, outcome: Outcome) -> Answer {
    Answer {
        response,
        outcome,
        notice: None,
    }
}

/// The size webhook's answer for `req`: find the autoscaler and its current recommendation,
/// size the pod, answer with the patch.
pub async fn size(lookup: &Lookup, req: &AdmissionRequest<Pod>) -> Answer {
    let admit = AdmissionResponse::from(req);
    let (Some(pod), Some(ns), Operation::Create) = (
        req.object.as_ref(),
        req.namespace.as_deref(),
        &req.operation,
    ) else {
        return answer(admit, Outcome::NotManaged);
    };
    if !lookup.scope.contains(ns) {
        // Outside the namespaces served: admitted as submitted, nothing read.
        return answer(admit, Outcome::NotManaged);
    }
    let va = match sizer(lookup, ns, pod).await {
        Ok(va) => va,
        Err((outcome, notice)) => return respond(admit, pod, Vec::new(), outcome, notice),
    };
    let recommendation = va.status.as_ref().and_then(|s| s.recommendation.as_ref());
    let (recs, generation) = recommendation.map_or((&[][..], None), |r| {
        (
            r.container_recommendations.as_slice(),
            r.observed_generation,
        )
    });
    let blocked = lookup.blocked(&va);
    let plan = admission::size(&PodInput {
        pod,
        spec: &va.spec,
        recommendation: recs,
        blocked: &blocked,
        approved: &[],
        now: chrono::Utc::now().timestamp(),
        unboost_only: false,
    });
    let source = Source {
        verticalautoscaler: &va.name_any(),
        generation,
    };
    let ops = admission::patch(pod, &plan, &source);
    let outcome = match (ops.is_empty(), plan.declined.is_empty()) {
        (false, _) => Outcome::Sized,
        (true, true) => Outcome::Unchanged,
        (true, false) => Outcome::Declined,
    };
    respond(admit, pod, ops, outcome, declined_notice(&va, &plan))
}

/// The VerticalAutoscaler that sizes `pod` with a current recommendation, or why none does.
async fn sizer(
    lookup: &Lookup,
    ns: &str,
    pod: &Pod,
) -> Result<std::sync::Arc<VerticalAutoscaler>, (Outcome, Option<Notice>)> {
    let (kind, name) = lookup
        .workload_of(ns, pod)
        .await
        .ok_or((Outcome::NotManaged, None))?;
    let va = lookup
        .autoscaler_for(ns, &kind, &name)
        .ok_or((Outcome::NotManaged, None))?;
    let recommendation = va.status.as_ref().and_then(|s| s.recommendation.as_ref());
    let recommendation = recommendation.ok_or((Outcome::NoRecommendation, None))?;
    if let Some(why) = guard::stale(va.metadata.generation, &va.spec.target_ref, recommendation) {
        let notice = Notice {
            va: va.clone(),
            reason: "AdmissionSkipped",
            note: format!("new pods are created at their template's values: {why}"),
        };
        return Err((Outcome::NoRecommendation, Some(notice)));
    }
    Ok(va)
}

/// The answer: `ops`, plus the notice (if any) as the pod's [`NOTE_ANNOTATION`].
fn respond(
    admit: AdmissionResponse,
    pod: &Pod,
    mut ops: Vec<serde_json::Value>,
    outcome: Outcome,
    notice: Option<Notice>,
) -> Answer {
    if let Some(n) = &notice {
        admission::annotate(pod, &mut ops, NOTE_ANNOTATION, &n.note);
    }
    if ops.is_empty() {
        return Answer {
            response: admit,
            outcome,
            notice,
        };
    }
    let patched = serde_json::from_value::<json_patch::Patch>(serde_json::Value::Array(ops))
        .map_err(|e| e.to_string())
        .and_then(|p| admit.clone().with_patch(p).map_err(|e| e.to_string()));
    match patched {
        Ok(response) => Answer {
            response,
            outcome,
            notice,
        },
        Err(e) => {
            tracing::error!(error = %e, "cannot encode the sizing patch; admitting the pod as submitted");
            answer(admit, Outcome::Invalid)
        }
    }
}

/// The changes the planner declined at creation, as one notice.
fn declined_notice(va: &std::sync::Arc<VerticalAutoscaler>, plan: &PodPlan) -> Option<Notice> {
    let why: Vec<String> = plan
        .declined
        .iter()
        .filter(|d| {
            !matches!(
                d.reason,
                DeclineReason::HpaConflict | DeclineReason::MemoryDecreaseNever
            )
        })
        .map(|d| format!("container {}: {}", d.container, d.message))
        .collect();
    (!why.is_empty()).then(|| Notice {
        va: va.clone(),
        reason: "AdmissionDeclined",
        note: format!("new pods are not fully sized: {}", why.join("; ")),
    })
}

/// The memory limit of each container, by name.
fn limits(pod: &Pod) -> Vec<(&str, Option<i64>)> {
    let spec = pod.spec.as_ref();
    let all = spec
        .map(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
        })
        .into_iter()
        .flatten();
    all.map(|c: &Container| {
        let limit = c
            .resources
            .as_ref()
            .and_then(|r| r.limits.as_ref())
            .and_then(|l| l.get("memory"))
            .and_then(|q| memory_bytes(q).ok());
        (c.name.as_str(), limit)
    })
    .collect()
}

/// The gate webhook's answer for `req` (a resize of a pod in a gated namespace).
pub async fn gate(lookup: &Lookup, updater: &str, req: &AdmissionRequest<Pod>) -> Answer {
    let admit = AdmissionResponse::from(req);
    if req.user_info.username.as_deref() == Some(updater) {
        return answer(admit, Outcome::Allowed);
    }
    let (Some(new), Some(old), Some(ns)) = (
        req.object.as_ref(),
        req.old_object.as_ref(),
        req.namespace.as_deref(),
    ) else {
        return answer(admit, Outcome::Allowed);
    };
    if !lookup.scope.contains(ns) {
        // Outside the namespaces served: tailor holds no approvals there to check.
        return answer(admit, Outcome::Allowed);
    }
    let before = limits(old);
    let lowered: Vec<Lowered> = limits(new)
        .into_iter()
        .filter_map(|(name, to)| {
            let from = before.iter().find(|(n, _)| *n == name)?.1?;
            let to = to?;
            (to < from).then(|| Lowered {
                container: name.to_owned(),
                to,
            })
        })
        .collect();
    let value = old.annotations().get(APPROVE_MEMORY_DECREASE_ANNOTATION);
    let uid = old.uid().unwrap_or_default();
    let value = value.map(String::as_str);
    let mut checked = gate::check(&lowered, value, &uid, &lookup.pending_in(ns));
    if checked.is_err() {
        // The caches may trail an approval written a moment ago: ask the API server.
        if let Some(pending) = lookup.pending_read(ns).await {
            checked = gate::check(&lowered, value, &uid, &pending);
        }
    }
    match checked {
        Ok(()) => answer(admit, Outcome::Allowed),
        Err(why) => {
            let mut denied = admit.deny(why);
            denied.result.code = 403;
            denied.result.reason = "Forbidden".into();
            answer(denied, Outcome::Denied)
        }
    }
}
