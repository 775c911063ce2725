//! A recommendation computed from partial history (Prometheus answered with warnings: a
//! remote-read store, a Thanos store or a Mimir querier failed) may raise but never lower.
//!
//! Missing samples can only hide usage, so what partial history shows is a lower bound of the
//! truth: a raise it calls for is real, a cut may not be. Against the previous recommendation,
//! per container and resource:
//! - target, lower and upper bound: the higher of the new and the previous value;
//! - memory floor: the previous one where it is higher;
//! - a container the partial history lost (no samples) keeps its previous entry.
//!
//! Without a previous recommendation there is nothing to hold: the new one is written as is
//! (its first write is no decrease).

use tailor_crds::quantity::{cpu_millis, memory_bytes};
use tailor_crds::v1alpha1::{ContainerRecommendation, Recommendation, Resources};

/// `new` with no value below `previous`; also the names of the containers where something
/// was held.
pub fn hold_decreases(
    new: Vec<ContainerRecommendation>,
    previous: Option<&Recommendation>,
) -> (Vec<ContainerRecommendation>, Vec<String>) {
    let Some(previous) = previous else {
        return (new, Vec::new());
    };
    let mut held = Vec::new();
    let mut out: Vec<ContainerRecommendation> = new
        .into_iter()
        .map(|mut rec| {
            let Some(old) = previous
                .container_recommendations
                .iter()
                .find(|o| o.container_name == rec.container_name)
            else {
                return rec;
            };
            if hold_container(&mut rec, old) {
                held.push(rec.container_name.clone());
            }
            rec
        })
        .collect();
    for old in &previous.container_recommendations {
        if !out.iter().any(|r| r.container_name == old.container_name) {
            held.push(old.container_name.clone());
            out.push(old.clone());
        }
    }
    (out, held)
}

/// Raises `rec`'s values to `old`'s where they are lower; whether any was.
fn hold_container(rec: &mut ContainerRecommendation, old: &ContainerRecommendation) -> bool {
    let mut held = at_least(&mut rec.target, &old.target);
    for (new, old) in [
        (&mut rec.lower_bound, &old.lower_bound),
        (&mut rec.upper_bound, &old.upper_bound),
    ] {
        if let (Some(new), Some(old)) = (new.as_mut(), old.as_ref()) {
            held |= at_least(new, old);
        }
    }
    if let (Some(new), Some(old)) = (&rec.memory_floor, &old.memory_floor)
        && lower(&new.value, &old.value, memory_bytes)
    {
        rec.memory_floor = Some(old.clone());
        held = true;
    }
    held
}

/// Raises each resource of `new` that `old` also has to `old`'s value where it is lower;
/// whether any was.
fn at_least(new: &mut Resources, old: &Resources) -> bool {
    let mut held = false;
    if let (Some(n), Some(o)) = (&new.cpu, &old.cpu)
        && lower(n, o, cpu_millis)
    {
        new.cpu = Some(o.clone());
        held = true;
    }
    if let (Some(n), Some(o)) = (&new.memory, &old.memory)
        && lower(n, o, memory_bytes)
    {
        new.memory = Some(o.clone());
        held = true;
    }
    held
}

/// Whether `new` is below `old`, both read with `parse`; a value that cannot be read is not
/// compared (the new one stands).
fn lower<Q, E>(new: &Q, old: &Q, parse: impl Fn(&Q) -> Result<i64, E>) -> bool {
    matches!((parse(new), parse(old)), (Ok(n), Ok(o)) if n < o)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use tailor_crds::v1alpha1::{
        ContainerRecommendation, FloorReason, MemoryFloor, Recommendation, Resources,
    };

    use super::hold_decreases;

    fn res(cpu: &str, memory: &str) -> Resources {
        Resources {
            cpu: Some(Quantity(cpu.into())),
            memory: Some(Quantity(memory.into())),
        }
    }

    fn rec(name: &str, cpu: &str, memory: &str, floor: &str) -> ContainerRecommendation {
        ContainerRecommendation {
            container_name: name.into(),
            target: res(cpu, memory),
            lower_bound: Some(res(cpu, memory)),
            upper_bound: Some(res(cpu, memory)),
            memory_floor: Some(MemoryFloor {
                value: Quantity(floor.into()),
                reason: FloorReason::Peak,
                peak_margin: None,
            }),
            uncapped_target: None,
            samples: None,
            history_span: None,
            observed_peak: None,
        }
    }

    fn previous(recs: Vec<ContainerRecommendation>) -> Recommendation {
        Recommendation {
            container_recommendations: recs,
            ..Default::default()
        }
    }

    #[test]
    fn decreases_are_held_and_increases_pass() {
        let old = previous(vec![rec("app", "500m", "1Gi", "900Mi")]);
        // CPU up, memory down: CPU goes up, memory stays.
        let (out, held) = hold_decreases(vec![rec("app", "700m", "512Mi", "400Mi")], Some(&old));
        assert_eq!(held, vec!["app".to_owned()]);
        assert_eq!(out[0].target, res("700m", "1Gi"));
        assert_eq!(out[0].lower_bound, Some(res("700m", "1Gi")));
        assert_eq!(out[0].upper_bound, Some(res("700m", "1Gi")));
        assert_eq!(
            out[0].memory_floor.as_ref().map(|f| f.value.0.as_str()),
            Some("900Mi")
        );
        // Everything up: nothing held, the new values as they are.
        let up = rec("app", "1", "2Gi", "1500Mi");
        let (out, held) = hold_decreases(vec![up.clone()], Some(&old));
        assert!(held.is_empty());
        assert_eq!(out, vec![up]);
    }

    #[test]
    fn a_container_the_partial_history_lost_keeps_its_entry() {
        let old = previous(vec![
            rec("app", "500m", "1Gi", "900Mi"),
            rec("sidecar", "100m", "128Mi", "100Mi"),
        ]);
        let (out, held) = hold_decreases(vec![rec("app", "600m", "1Gi", "900Mi")], Some(&old));
        assert_eq!(held, vec!["sidecar".to_owned()]);
        assert_eq!(out.len(), 2);
        assert_eq!(out[1], old.container_recommendations[1]);
    }

    #[test]
    fn without_a_previous_recommendation_nothing_is_held() {
        let new = vec![rec("app", "100m", "64Mi", "60Mi")];
        let (out, held) = hold_decreases(new.clone(), None);
        assert_eq!(out, new);
        assert!(held.is_empty());
    }
}
