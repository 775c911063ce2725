//! Sizing a pod at its creation. A new pod is a fresh process: giving it the recommended
//! resources disturbs nothing, above or below the template. So the rules of a resize apply
//! (controlled containers and resources, `minAllowed`/`maxAllowed`, limits per
//! `controlledValues` and their cap, the template's QoS class kept, resources an HPA scales on
//! left alone, declines named) with three differences:
//!
//! - no `minChange`: the target goes as it is;
//! - no memory-decrease route: memory below the template needs no approval or restart;
//! - memory never below the recommendation's floor, even when `maxAllowed` is lower.
//!
//! The pod is read as submitted (no status yet). What it returns is a [`PodPlan`] whose
//! `changes` are the containers' new resources, `from` the template's.

use super::container::Mode;
use super::{PodInput, PodPlan, plan_containers, read_resources};

/// Sizes a pod being created. Never fails: every reason to leave (part of) it as submitted is
/// in the plan.
pub fn size(input: &PodInput<'_>) -> PodPlan {
    match read_resources(input.pod) {
        Ok(pod) => plan_containers(input, Mode::Admission, &pod),
        Err(plan) => *plan,
    }
}
