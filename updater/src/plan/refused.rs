//! A memory decrease the kubelet refused, and taking it back. This file is the whole rule.
//!
//! The kubelet checks a live memory-limit decrease against current usage. When usage is above
//! the new limit it does not refuse once: it reports `PodResizeInProgress` with reason `Error`
//! (`cannot decrease memory limits: ... below current usage (N)`), keeps retrying about every
//! 15 s, and applies the cut as soon as usage drops below it, at a moment nobody chose. So the
//! updater takes such a decrease back: one resize that puts the memory requests and limits the
//! container runs with (its status `resources`) back into the spec. The kubelet then has
//! nothing left to apply. CPU in the same resize is left as planned. A container whose memory
//! `resizePolicy` is `RestartContainer` is never reverted this way (the kubelet does not check
//! usage for it, and a revert would restart it).
//!
//! The usage the kubelet reported is kept (`refusedUsage` in the resize record): the
//! recommender keeps its floor above it.

use k8s_openapi::api::core::v1::Pod;
use tailor_crds::v1alpha1::ResourceName;

use super::resources::{ContainerResources, restarts_on};
use super::{ContainerChange, PodPlan};

/// What the kubelet's message says about a refused decrease.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Refusal {
    /// The pod's memory usage, when the pod-level check failed.
    pub pod_usage: Option<i64>,
    /// Per container: its memory usage.
    pub containers: Vec<(String, i64)>,
}

/// Reads the kubelet's `cannot decrease memory limits: ...` message; `None` for any other.
pub fn refusal(message: &str) -> Option<Refusal> {
    let rest = message.strip_prefix("cannot decrease memory limits:")?;
    let mut out = Refusal::default();
    for part in rest.split("attempting to set ").skip(1) {
        let Some(usage) = number_after(part, "below current usage (") else {
            continue;
        };
        if part.starts_with("pod ") {
            out.pod_usage = Some(usage);
        } else if let Some(name) = part
            .strip_prefix("container \"")
            .and_then(|s| s.split('"').next())
        {
            out.containers.push((name.to_owned(), usage));
        }
    }
    Some(out)
}

fn number_after(s: &str, marker: &str) -> Option<i64> {
    let start = s.find(marker)? + marker.len();
    let digits: String = s[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// The resize that takes back the memory decrease the pod's spec asks for and its runtime has
/// not applied: each container's memory requests and limits as they run. `None` when there is
/// nothing to take back.
pub fn revert(pod: &Pod) -> Option<PodPlan> {
    let spec = pod.spec.as_ref()?;
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    let mut plan = PodPlan::default();
    for c in &spec.containers {
        if restarts_on(c, ResourceName::Memory) {
            continue;
        }
        let Ok(desired) = ContainerResources::of(c.resources.as_ref()) else {
            continue;
        };
        let Some(Ok(running)) = statuses
            .iter()
            .find(|s| s.name == c.name)
            .map(|s| ContainerResources::of(s.resources.as_ref()))
        else {
            continue;
        };
        let lower = |d: Option<i64>, r: Option<i64>| matches!((d, r), (Some(d), Some(r)) if d < r);
        if !lower(desired.limits.memory, running.limits.memory)
            && !lower(desired.requests.memory, running.requests.memory)
        {
            continue;
        }
        let mut to = desired;
        to.requests.memory = running.requests.memory.or(desired.requests.memory);
        to.limits.memory = running.limits.memory.or(desired.limits.memory);
        plan.changes.push(ContainerChange {
            container: c.name.clone(),
            from: desired,
            to,
            restarts: false,
            approval: None,
        });
    }
    plan.resizes().then_some(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_kubelets_messages() {
        let both = r#"cannot decrease memory limits: [attempting to set pod memory limit (104857600) below current usage (118554624), attempting to set container "c1" memory limit (104857600) below current usage (118554624)]"#;
        assert_eq!(
            refusal(both),
            Some(Refusal {
                pod_usage: Some(118_554_624),
                containers: vec![("c1".into(), 118_554_624)],
            })
        );
        let single = "cannot decrease memory limits: attempting to set pod memory limit (10) below current usage (20)";
        assert_eq!(
            refusal(single),
            Some(Refusal {
                pod_usage: Some(20),
                containers: vec![],
            })
        );
        assert_eq!(refusal("Node didn't have enough capacity: cpu"), None);
    }

    fn pod(spec_limit: &str, running_limit: &str, policy: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "app",
                "resizePolicy": [{"resourceName": "memory", "restartPolicy": policy}],
                "resources": {"requests": {"cpu": "200m", "memory": "100Mi"}, "limits": {"memory": spec_limit}}}]},
            "status": {"containerStatuses": [{"name": "app", "image": "i", "imageID": "", "ready": true,
                "restartCount": 0,
                "resources": {"requests": {"cpu": "100m", "memory": "100Mi"}, "limits": {"memory": running_limit}}}]},
        }))
        .unwrap_or_default()
    }

    #[test]
    fn takes_back_only_the_memory_not_yet_applied() {
        let p = revert(&pod("200Mi", "400Mi", "NotRequired")).unwrap_or_default();
        assert_eq!(p.changes.len(), 1);
        let c = &p.changes[0];
        assert_eq!(c.to.limits.memory, Some(400 << 20));
        // CPU stays as the spec asks.
        assert_eq!(c.to.requests.cpu, Some(200));
        assert!(!c.restarts);
        // Nothing to take back once applied, or when the limit went up.
        assert_eq!(revert(&pod("400Mi", "400Mi", "NotRequired")), None);
        assert_eq!(revert(&pod("800Mi", "400Mi", "NotRequired")), None);
        // Never for RestartContainer: a revert would restart the container.
        assert_eq!(revert(&pod("200Mi", "400Mi", "RestartContainer")), None);
    }
}
