//! Which resources a HorizontalPodAutoscaler scales a workload on. Resizing a resource an HPA
//! scales on fights the HPA (its utilisation is relative to the request), so the updater leaves
//! such resources alone unless the VerticalAutoscaler opts in (`hpaConflict: Resize`).

use std::collections::BTreeSet;

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use tailor_crds::v1alpha1::{HpaConflict, ResourceName, VerticalAutoscaler};

fn resource(name: &str) -> Option<ResourceName> {
    match name {
        "cpu" => Some(ResourceName::Cpu),
        "memory" => Some(ResourceName::Memory),
        _ => None,
    }
}

/// The resources HPAs in `hpas` scale the workload `kind`/`name` on, with the HPA names.
pub fn scaled_resources<'a>(
    hpas: impl IntoIterator<Item = &'a HorizontalPodAutoscaler>,
    kind: &str,
    name: &str,
) -> (BTreeSet<ResourceName>, Vec<String>) {
    let mut resources = BTreeSet::new();
    let mut names = Vec::new();
    for hpa in hpas {
        let Some(spec) = hpa.spec.as_ref() else {
            continue;
        };
        if spec.scale_target_ref.kind != kind || spec.scale_target_ref.name != name {
            continue;
        }
        let scaled: Vec<ResourceName> = match spec.metrics.as_deref() {
            // No metrics: the HPA's default is 80% average CPU utilisation.
            None | Some([]) => vec![ResourceName::Cpu],
            Some(metrics) => metrics
                .iter()
                .filter_map(|m| {
                    m.resource
                        .as_ref()
                        .map(|r| r.name.as_str())
                        .or_else(|| m.container_resource.as_ref().map(|r| r.name.as_str()))
                        .and_then(resource)
                })
                .collect(),
        };
        if !scaled.is_empty() {
            resources.extend(scaled);
            names.push(hpa.metadata.name.clone().unwrap_or_default());
        }
    }
    (resources, names)
}

/// The resources left alone for `va` and the HPAs behind them: those the HPAs in its
/// namespace scale its target on, unless it opts in (`hpaConflict: Resize`).
pub fn blocked_for<'a>(
    va: &VerticalAutoscaler,
    hpas: impl IntoIterator<Item = &'a HorizontalPodAutoscaler>,
) -> (BTreeSet<ResourceName>, Vec<String>) {
    if va.spec.update_policy.hpa_conflict != HpaConflict::Skip {
        return (BTreeSet::new(), Vec::new());
    }
    let ns = va.metadata.namespace.as_deref();
    let target = &va.spec.target_ref;
    let same_namespace = hpas
        .into_iter()
        .filter(|h| h.metadata.namespace.as_deref() == ns);
    scaled_resources(same_namespace, &target.kind, &target.name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hpa(name: &str, target: &str, metrics: serde_json::Value) -> HorizontalPodAutoscaler {
        let mut spec = json!({"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
                              "maxReplicas": 5});
        if !metrics.is_null() {
            spec["metrics"] = metrics;
        }
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap()
    }

    #[test]
    fn resource_and_container_resource_metrics_count() {
        let hpas = [
            hpa(
                "a",
                "web",
                json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}]),
            ),
            hpa(
                "b",
                "web",
                json!([{"type": "ContainerResource", "containerResource": {"name": "memory", "container": "app", "target": {"type": "Utilization", "averageUtilization": 70}}}]),
            ),
            hpa(
                "c",
                "other",
                json!([{"type": "Resource", "resource": {"name": "memory", "target": {"type": "Utilization", "averageUtilization": 70}}}]),
            ),
        ];
        let (r, names) = scaled_resources(&hpas, "Deployment", "web");
        assert_eq!(r, BTreeSet::from([ResourceName::Cpu, ResourceName::Memory]));
        assert_eq!(names, ["a", "b"]);
    }

    #[test]
    fn default_metric_is_cpu_and_external_metrics_do_not_count() {
        let (r, _) = scaled_resources(
            &[hpa("a", "web", serde_json::Value::Null)],
            "Deployment",
            "web",
        );
        assert_eq!(r, BTreeSet::from([ResourceName::Cpu]));
        let external = hpa(
            "q",
            "web",
            json!([{"type": "External", "external": {"metric": {"name": "queue"}, "target": {"type": "Value", "value": "10"}}}]),
        );
        let (r, names) = scaled_resources(&[external], "Deployment", "web");
        assert!(r.is_empty());
        assert!(names.is_empty());
    }
}
