//! Approval ids for held memory decreases, the workload's pending approvals, and reading the
//! approval annotation. This file is the whole approval rule.
//!
//! - A pending approval is one per container: the envelope of the held cuts of the workload's
//!   pods (from: the highest current limit, to: the lowest planned limit) and **the pods that
//!   hold them**. Its id is a hash of the VerticalAutoscaler's uid, the container, both values
//!   and the pods' uids and generations, so a new recommendation that cuts further, a cut of
//!   other pods, or the same cut of a pod resized since (for example after the kubelet refused
//!   it and the updater took it back) gets a new id, and an old approval never approves a
//!   bigger cut, another pod, or a cut it has already been used for.
//! - An approval (`tailor.dev/approve-memory-decrease: <id>` on the object) grants the cut to
//!   the pods of the pending entry with that id and to no other pod, and only while the
//!   annotation is there: removing it stops the cuts that have not been sent.
//! - An approved entry stays as it is until none of its pods holds the cut any more (each was
//!   cut, or is gone). Cuts of pods outside it wait; once it is done they get an entry, and a
//!   new id, of their own. So an approval is used once: after a rollout puts the template's
//!   limits back, the same cut of the new pods needs a new approval.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use tailor_crds::quantity::{format_memory_bytes, memory_bytes};
use tailor_crds::v1alpha1::{PendingApproval, PodRef};

use super::memory::Approved;

/// The approval id of lowering `container`'s memory limit from `from` to `to` bytes in the
/// pods named by these `uid@generation` keys (order does not matter).
pub fn id(owner_uid: &str, container: &str, from: i64, to: i64, pod_uids: &[&str]) -> String {
    let mut uids: Vec<&str> = pod_uids.to_vec();
    uids.sort_unstable();
    uids.dedup();
    // FNV-1a, 64 bits: stable across versions and platforms, unlike std's hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let text = format!("{owner_uid}/{container}/{from}/{to}/{}", uids.join(","));
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{:010x}", hash & 0xff_ffff_ffff)
}

/// One held or approved cut of one pod's container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cut {
    /// Container name.
    pub container: String,
    /// Current limit (bytes).
    pub from: i64,
    /// Planned limit (bytes).
    pub to: i64,
    /// The approval it goes ahead under, if any.
    pub approved: Option<String>,
}

/// A cut and the pod it is planned for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodCut {
    /// The pod.
    pub pod: PodRef,
    /// The pod's `metadata.generation` (after the resizes issued so far).
    pub generation: i64,
    /// The cut.
    pub cut: Cut,
}

/// An approval a person gave: what it allows, and the pods it covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The envelope of cuts it allows.
    pub approved: Approved,
    /// The pods it covers.
    pub pods: Vec<PodRef>,
}

impl Grant {
    /// Whether it covers the pod with this uid.
    pub fn covers_pod(&self, uid: &str) -> bool {
        self.pods.iter().any(|p| p.uid == uid)
    }
}

/// The approvals that apply to the pod with this uid (the planner's `approved` input).
pub fn for_pod(grants: &[Grant], uid: &str) -> Vec<Approved> {
    grants
        .iter()
        .filter(|g| g.covers_pod(uid))
        .map(|g| g.approved.clone())
        .collect()
}

/// The pending approvals for a workload's cuts: one per container. A granted approval keeps
/// its entry while a pod it covers still holds a cut within it; the other pods' cuts of that
/// container wait for it (they are not listed until it is done).
pub fn pending(owner_uid: &str, cuts: &[PodCut], grants: &[Grant]) -> Vec<Pending> {
    let mut by_container: BTreeMap<&str, Vec<&PodCut>> = BTreeMap::new();
    for c in cuts {
        by_container.entry(&c.cut.container).or_default().push(c);
    }
    by_container
        .into_iter()
        .map(|(container, cuts)| {
            let granted = grants.iter().find(|g| {
                g.approved.container == container
                    && cuts.iter().any(|c| {
                        g.covers_pod(&c.pod.uid)
                            && g.approved.covers(container, c.cut.from, c.cut.to)
                    })
            });
            match granted {
                Some(g) => Pending {
                    container: container.to_owned(),
                    from: g.approved.from,
                    to: g.approved.to,
                    id: g.approved.id.clone(),
                    pods: g.pods.clone(),
                    approved: true,
                },
                None => envelope(owner_uid, container, &cuts),
            }
        })
        .collect()
}

/// The unapproved entry of one container's held cuts.
fn envelope(owner_uid: &str, container: &str, cuts: &[&PodCut]) -> Pending {
    let from = cuts.iter().map(|c| c.cut.from).max().unwrap_or_default();
    let to = cuts.iter().map(|c| c.cut.to).min().unwrap_or_default();
    let pods: BTreeSet<(&str, &str, i64)> = cuts
        .iter()
        .map(|c| (c.pod.name.as_str(), c.pod.uid.as_str(), c.generation))
        .collect();
    let keys: Vec<String> = pods
        .iter()
        .map(|(_, uid, g)| format!("{uid}@{g}"))
        .collect();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    Pending {
        container: container.to_owned(),
        from,
        to,
        id: id(owner_uid, container, from, to, &keys),
        pods: pods
            .into_iter()
            .map(|(name, uid, _)| PodRef {
                name: name.to_owned(),
                uid: uid.to_owned(),
            })
            .collect(),
        approved: false,
    }
}

/// A pending approval, in bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pending {
    /// Container name.
    pub container: String,
    /// Highest current limit among the pods held.
    pub from: i64,
    /// Lowest planned limit.
    pub to: i64,
    /// The id a person approves.
    pub id: String,
    /// The pods it covers.
    pub pods: Vec<PodRef>,
    /// Already approved; waiting for the remaining pods to be resized.
    pub approved: bool,
}

impl Pending {
    /// The status entry, keeping `since` from the previous entry with the same id.
    pub fn to_status(
        &self,
        previous: &[PendingApproval],
        now: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
    ) -> PendingApproval {
        PendingApproval {
            container_name: self.container.clone(),
            from: format_memory_bytes(self.from),
            to: format_memory_bytes(self.to),
            id: self.id.clone(),
            since: Some(
                previous
                    .iter()
                    .find(|p| p.id == self.id)
                    .and_then(|p| p.since.clone())
                    .unwrap_or_else(|| now.clone()),
            ),
            pods: self.pods.clone(),
            approved: self.approved.then_some(true),
        }
    }
}

/// The ids in an approval annotation value: separated by commas or whitespace.
pub fn annotation_ids(value: &str) -> Vec<String> {
    value
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Matches the annotation's ids against the pending approvals in status: the approvals they
/// grant (each for the pods of its entry), and the ids that match nothing pending (stale or
/// mistyped). An entry without pods (written by an older updater) grants nothing: its cut
/// is listed again under a new id.
pub fn approvals(ids: &[String], pending: &[PendingApproval]) -> (Vec<Grant>, Vec<String>) {
    let bytes = |q: &Quantity| memory_bytes(q).ok();
    let mut granted = Vec::new();
    let mut stale = Vec::new();
    for id in ids {
        let found = pending
            .iter()
            .filter(|p| !p.pods.is_empty())
            .find(|p| &p.id == id)
            .and_then(|p| {
                Some(Grant {
                    approved: Approved {
                        container: p.container_name.clone(),
                        from: bytes(&p.from)?,
                        to: bytes(&p.to)?,
                        id: id.clone(),
                    },
                    pods: p.pods.clone(),
                })
            });
        match found {
            Some(g) => granted.push(g),
            None => stale.push(id.clone()),
        }
    }
    (granted, stale)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MI: i64 = 1 << 20;

    fn pod(n: u8) -> PodRef {
        PodRef {
            name: format!("p-{n}"),
            uid: format!("uid-{n}"),
        }
    }

    #[test]
    fn ids_are_stable_and_bound_to_the_values_and_the_pods() {
        let a = id("uid-1", "app", 400 * MI, 200 * MI, &["a", "b"]);
        assert_eq!(a, id("uid-1", "app", 400 * MI, 200 * MI, &["b", "a"]));
        assert_eq!(a.len(), 10);
        assert_ne!(a, id("uid-1", "app", 400 * MI, 199 * MI, &["a", "b"]));
        assert_ne!(a, id("uid-1", "app", 401 * MI, 200 * MI, &["a", "b"]));
        assert_ne!(a, id("uid-1", "db", 400 * MI, 200 * MI, &["a", "b"]));
        assert_ne!(a, id("uid-2", "app", 400 * MI, 200 * MI, &["a", "b"]));
        assert_ne!(a, id("uid-1", "app", 400 * MI, 200 * MI, &["a", "c"]));
        assert_ne!(a, id("uid-1", "app", 400 * MI, 200 * MI, &["a"]));
    }

    fn cut(container: &str, from: i64, to: i64, p: u8) -> PodCut {
        PodCut {
            pod: pod(p),
            generation: 1,
            cut: Cut {
                container: container.into(),
                from,
                to,
                approved: None,
            },
        }
    }

    #[test]
    fn pending_is_the_envelope_per_container_with_its_pods() {
        let cuts = [
            cut("app", 400 * MI, 220 * MI, 1),
            cut("app", 500 * MI, 200 * MI, 2),
            cut("db", 2048 * MI, 1024 * MI, 1),
        ];
        let p = pending("u", &cuts, &[]);
        assert_eq!(p.len(), 2);
        assert_eq!(
            (p[0].container.as_str(), p[0].from, p[0].to),
            ("app", 500 * MI, 200 * MI)
        );
        assert_eq!(p[0].pods, [pod(1), pod(2)]);
        assert_eq!(
            p[0].id,
            id("u", "app", 500 * MI, 200 * MI, &["uid-1@1", "uid-2@1"])
        );
        assert!(!p[0].approved);
        // The same cut of a pod resized since is another cut.
        let mut later = cuts.clone();
        later[1].generation = 3;
        assert_ne!(pending("u", &later, &[])[0].id, p[0].id);
    }

    fn grant(pods: &[u8]) -> Grant {
        Grant {
            approved: Approved {
                container: "app".into(),
                from: 500 * MI,
                to: 200 * MI,
                id: "x".into(),
            },
            pods: pods.iter().map(|&n| pod(n)).collect(),
        }
    }

    #[test]
    fn an_approval_keeps_its_entry_while_its_pods_remain_and_covers_no_other_pod() {
        let granted = grant(&[1, 2]);
        // Pod 2 left, with a cut inside the approval: the approved entry stays as it was.
        let p = pending(
            "u",
            &[cut("app", 400 * MI, 220 * MI, 2)],
            std::slice::from_ref(&granted),
        );
        assert_eq!(p[0].id, "x");
        assert!(p[0].approved);
        assert_eq!(p[0].pods, [pod(1), pod(2)]);
        // A cut beyond the approval makes a new entry.
        let p = pending(
            "u",
            &[cut("app", 400 * MI, 100 * MI, 2)],
            std::slice::from_ref(&granted),
        );
        assert_ne!(p[0].id, "x");
        assert!(!p[0].approved);
        // The same cut of a pod the approval did not cover (created after it, or recreated
        // under the same name) needs a new approval, once the approved pods are done.
        let p = pending(
            "u",
            &[cut("app", 500 * MI, 200 * MI, 3)],
            std::slice::from_ref(&granted),
        );
        assert_ne!(p[0].id, "x");
        assert!(!p[0].approved);
        assert_eq!(p[0].pods, [pod(3)]);
        assert!(for_pod(std::slice::from_ref(&granted), "uid-3").is_empty());
        assert_eq!(for_pod(&[granted], "uid-1").len(), 1);
    }

    fn entry(id: &str, pods: Vec<PodRef>) -> PendingApproval {
        PendingApproval {
            container_name: "app".into(),
            from: Quantity("500Mi".into()),
            to: Quantity("200Mi".into()),
            id: id.into(),
            since: None,
            pods,
            approved: None,
        }
    }

    #[test]
    fn annotation_ids_match_pending_or_are_stale() {
        let pending = [entry("abc", vec![pod(1)]), entry("nopods", vec![])];
        let ids = annotation_ids(" abc, old  nopods");
        assert_eq!(ids, ["abc", "old", "nopods"]);
        let (granted, stale) = approvals(&ids, &pending);
        assert_eq!(
            granted,
            [Grant {
                approved: Approved {
                    container: "app".into(),
                    from: 500 * MI,
                    to: 200 * MI,
                    id: "abc".into()
                },
                pods: vec![pod(1)],
            }]
        );
        assert_eq!(stale, ["old", "nopods"]);
    }
}
