//! When the updater may act on an object at all, and whether what it planned still holds at the
//! moment it patches. Pure: the actuator passes in what it read. This file is the whole rule.
//!
//! - **A recommendation is acted on only when it is current**: computed for the object's
//!   current `metadata.generation` and for its current `spec.targetRef`
//!   (`status.recommendation.observedGeneration`, `.targetRef`, written by the recommender).
//!   A recommendation kept from before a spec change (the recommender keeps the last one while
//!   Prometheus is down), one computed for another workload, or one without that binding is
//!   stale: condition `RecommendationStale`, no resize.
//! - **One owner per workload**: of the autoscalers that would act on the same pods (other
//!   `InPlace` VerticalAutoscalers, on the same workload or on one that owns or is owned by
//!   it, and upstream VerticalPodAutoscalers in an updating mode), the oldest acts (creation
//!   time, then uid); the others get condition `AutoscalerConflict` naming it.
//! - **Re-checked before each patch**: the actuator takes a [`Snapshot`] of the object when it
//!   plans, and again from its watch cache right before each resize patch (after waiting for
//!   the rate limit). The patch goes only if nothing that decides it changed: the same object
//!   (uid), the same spec (generation and `updateMode`, so `updateMode: Off` stops it), the same recommended
//!   values (targets, bounds, floors; not the evidence, which every recommender pass
//!   refreshes), and every approval the patch uses still in the annotation.

use tailor_crds::v1alpha1::{Recommendation, TargetRef, UpdateMode};

/// Why a recommendation is not acted on, or `None` when it is current.
pub fn stale(
    generation: Option<i64>,
    target: &TargetRef,
    recommendation: &Recommendation,
) -> Option<String> {
    let Some(for_generation) = recommendation.observed_generation else {
        return Some(
            "the recommendation does not say which spec it was computed for (written by an older recommender); waiting for a new one".into(),
        );
    };
    if recommendation.target_ref.as_ref() != Some(target) {
        let was = recommendation.target_ref.as_ref().map_or_else(
            || "no target".to_owned(),
            |t| format!("{}/{}", t.kind, t.name),
        );
        return Some(format!(
            "the recommendation was computed for {was}, not for the current target {}/{}; waiting for a new one",
            target.kind, target.name
        ));
    }
    if generation != Some(for_generation) {
        return Some(format!(
            "the recommendation was computed for generation {for_generation} of the spec, the object is at generation {}; waiting for a new one",
            generation.map_or_else(|| "unknown".to_owned(), |g| g.to_string())
        ));
    }
    None
}

/// What decides a patch, as read from the object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// The object's uid.
    pub uid: String,
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// `spec.updatePolicy.updateMode`.
    pub mode: UpdateMode,
    /// The recommended values that decide a resize, serialized.
    pub recommendation: String,
    /// The ids in the approval annotation.
    pub approvals: Vec<String>,
}

/// Whether a patch planned from `planned` that uses the approvals `uses` may still go, given
/// the object as it is now (`None`: deleted). Returns why not.
pub fn still_holds(
    planned: &Snapshot,
    now: Option<&Snapshot>,
    uses: &[&str],
) -> Result<(), String> {
    let Some(now) = now else {
        return Err("the VerticalAutoscaler was deleted".into());
    };
    if now.uid != planned.uid {
        return Err("the VerticalAutoscaler was replaced".into());
    }
    if now.mode != planned.mode {
        return Err(format!("updateMode is now {:?}", now.mode));
    }
    if now.generation != planned.generation {
        return Err("the spec changed".into());
    }
    if now.recommendation != planned.recommendation {
        return Err("the recommendation changed".into());
    }
    if let Some(id) = uses
        .iter()
        .find(|id| !now.approvals.iter().any(|a| a == *id))
    {
        return Err(format!("approval {id} was withdrawn"));
    }
    Ok(())
}

/// An autoscaler that would act on a workload's pods.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claimant {
    /// How a person finds it: `VerticalAutoscaler/name` or `VerticalPodAutoscaler/name`.
    pub name: String,
    /// Its uid.
    pub uid: String,
    /// Its creation time (Unix seconds).
    pub created: i64,
}

/// The claimant that acts instead of `me`, if any: the oldest of those that share pods with
/// it (`others` holds only those), when older than `me`.
pub fn owner<'a>(me: &Claimant, others: &'a [Claimant]) -> Option<&'a Claimant> {
    let order = |c: &Claimant| (c.created, c.uid.clone());
    others
        .iter()
        .filter(|c| c.uid != me.uid && order(c) < order(me))
        .min_by_key(|c| order(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(name: &str) -> TargetRef {
        TargetRef {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            name: name.into(),
        }
    }

    fn rec(generation: Option<i64>, t: Option<TargetRef>) -> Recommendation {
        Recommendation {
            observed_generation: generation,
            target_ref: t,
            container_recommendations: Vec::new(),
        }
    }

    #[test]
    fn only_a_recommendation_for_this_spec_and_target_is_current() {
        let a = target("a");
        assert_eq!(stale(Some(3), &a, &rec(Some(3), Some(a.clone()))), None);
        let s = stale(Some(4), &a, &rec(Some(3), Some(a.clone()))).unwrap_or_default();
        assert!(
            s.contains("generation 3") && s.contains("generation 4"),
            "{s}"
        );
        let s = stale(Some(3), &a, &rec(Some(3), Some(target("b")))).unwrap_or_default();
        assert!(
            s.contains("Deployment/b") && s.contains("Deployment/a"),
            "{s}"
        );
        assert!(stale(Some(3), &a, &rec(None, Some(a.clone()))).is_some());
        assert!(stale(Some(3), &a, &rec(Some(3), None)).is_some());
    }

    fn snap() -> Snapshot {
        Snapshot {
            uid: "u".into(),
            generation: Some(2),
            mode: UpdateMode::InPlace,
            recommendation: "r".into(),
            approvals: vec!["x".into()],
        }
    }

    #[test]
    fn a_patch_goes_only_while_nothing_that_decides_it_changed() {
        let planned = snap();
        assert_eq!(still_holds(&planned, Some(&snap()), &["x"]), Ok(()));
        assert!(still_holds(&planned, None, &[]).is_err());
        let mut off = snap();
        off.mode = UpdateMode::Off;
        assert!(still_holds(&planned, Some(&off), &[]).is_err());
        let mut replaced = snap();
        replaced.uid = "v".into();
        assert!(still_holds(&planned, Some(&replaced), &[]).is_err());
        let mut respec = snap();
        respec.generation = Some(3);
        assert!(still_holds(&planned, Some(&respec), &[]).is_err());
        let mut rerec = snap();
        rerec.recommendation = "s".into();
        assert!(still_holds(&planned, Some(&rerec), &[]).is_err());
        let mut withdrawn = snap();
        withdrawn.approvals.clear();
        assert_eq!(still_holds(&planned, Some(&withdrawn), &[]), Ok(()));
        let e = still_holds(&planned, Some(&withdrawn), &["x"]).unwrap_err();
        assert!(e.contains("approval x"), "{e}");
    }

    #[test]
    fn the_oldest_claimant_owns_the_pods() {
        let c = |name: &str, created: i64| Claimant {
            name: name.into(),
            uid: format!("uid-{name}"),
            created,
        };
        let me = c("me", 100);
        assert_eq!(owner(&me, &[]), None);
        assert_eq!(owner(&me, &[c("young", 200)]), None);
        let others = [c("young", 200), c("old", 50), c("older", 10)];
        assert_eq!(owner(&me, &others).map(|c| c.name.as_str()), Some("older"));
        // A tie on the creation time goes to the lower uid, the same answer for both.
        let twin = c("twin", 100);
        assert_eq!(owner(&me, std::slice::from_ref(&twin)), None);
        assert_eq!(
            owner(&twin, std::slice::from_ref(&me)).map(|c| c.name.as_str()),
            Some("me")
        );
    }
}
