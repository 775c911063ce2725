//! The memory gate's approval check: who may lower a container's memory limit through a pod's
//! `resize` subresource, besides the updater. Pure: the webhook passes in the request and the
//! pending approvals of the pod's namespace. This file is the whole rule.
//!
//! In a namespace with the gate, a ValidatingAdmissionPolicy lets a resize lower a memory limit
//! only when tailor-updater sends it or the pod carries `tailor.dev/approve-memory-decrease`.
//! The validating webhook adds what CEL cannot look up: the annotation's value must be the id
//! of a pending approval (in a ResizeState of the pod's namespace) that
//! - is for that container,
//! - covers that pod (its `pods` list holds the pod's uid),
//! - and allows the new limit: it is not below the approval's `to`.
//!
//! Every lowered container must be covered; a value that names no such approval (made up, of
//! another pod, or of a cut already done and gone from the list) is denied. So an approval is
//! the cut that was pending when it was given, for the pods it named, and nothing else.

use tailor_crds::quantity::memory_bytes;
use tailor_crds::v1alpha1::PendingApproval;

use super::approval::annotation_ids;

/// A container whose memory limit the resize lowers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lowered {
    /// The container.
    pub container: String,
    /// Its new limit (bytes).
    pub to: i64,
}

/// Whether the resize of the pod with `pod_uid`, lowering `lowered`, is approved by the
/// annotation `value` against the namespace's `pending` approvals. `Err` says why not.
pub fn check(
    lowered: &[Lowered],
    value: Option<&str>,
    pod_uid: &str,
    pending: &[PendingApproval],
) -> Result<(), String> {
    if lowered.is_empty() {
        return Ok(());
    }
    let ids = value.map(annotation_ids).unwrap_or_default();
    if ids.is_empty() {
        return Err(
            "lowering a memory limit needs the id of a pending approval in the pod's annotation tailor.dev/approve-memory-decrease".into(),
        );
    }
    for l in lowered {
        let covered = pending.iter().any(|p| {
            ids.contains(&p.id)
                && p.container_name == l.container
                && p.pods.iter().any(|r| r.uid == pod_uid)
                && memory_bytes(&p.to).is_ok_and(|to| l.to >= to)
        });
        if !covered {
            return Err(format!(
                "no pending approval with id {} covers lowering container {}'s memory limit to {} bytes in this pod (see the VerticalAutoscaler's status.pendingApprovals)",
                ids.join(","),
                l.container,
                l.to
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use tailor_crds::v1alpha1::PodRef;

    fn pending(id: &str, container: &str, to: &str, uids: &[&str]) -> PendingApproval {
        PendingApproval {
            container_name: container.into(),
            from: Quantity("1Gi".into()),
            to: Quantity(to.into()),
            id: id.into(),
            since: None,
            pods: uids
                .iter()
                .map(|u| PodRef {
                    name: format!("pod-{u}"),
                    uid: (*u).into(),
                })
                .collect(),
            approved: None,
        }
    }

    fn lowered(container: &str, mib: i64) -> Vec<Lowered> {
        vec![Lowered {
            container: container.into(),
            to: mib << 20,
        }]
    }

    #[test]
    fn nothing_lowered_needs_nothing() {
        assert_eq!(check(&[], None, "u1", &[]), Ok(()));
    }

    #[test]
    fn a_pending_id_for_the_pod_and_container_allows_down_to_its_value() {
        let p = [pending("abc", "app", "512Mi", &["u1", "u2"])];
        assert_eq!(check(&lowered("app", 512), Some("abc"), "u1", &p), Ok(()));
        assert_eq!(check(&lowered("app", 600), Some("abc"), "u2", &p), Ok(()));
        // Below the approved value.
        assert!(check(&lowered("app", 500), Some("abc"), "u1", &p).is_err());
    }

    #[test]
    fn any_other_value_is_denied() {
        let p = [pending("abc", "app", "512Mi", &["u1"])];
        for value in [None, Some(""), Some("yes"), Some("true"), Some("abd")] {
            let e = check(&lowered("app", 512), value, "u1", &p).unwrap_err();
            assert!(e.contains("app") || e.contains("needs"), "{e}");
        }
    }

    #[test]
    fn another_pod_or_container_is_not_covered() {
        let p = [pending("abc", "app", "512Mi", &["u1"])];
        // A pod the approval did not name (created later, or recreated under the same name).
        assert!(check(&lowered("app", 512), Some("abc"), "u9", &p).is_err());
        assert!(check(&lowered("sidecar", 512), Some("abc"), "u1", &p).is_err());
        // Every lowered container must be covered.
        let both = [
            lowered("app", 512).remove(0),
            lowered("sidecar", 64).remove(0),
        ];
        assert!(check(&both, Some("abc"), "u1", &p).is_err());
        let p2 = [p[0].clone(), pending("def", "sidecar", "64Mi", &["u1"])];
        assert_eq!(check(&both, Some("abc,def"), "u1", &p2), Ok(()));
    }
}
