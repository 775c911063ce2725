//! Approval ids for held memory decreases, the workload's pending approvals, and reading the
//! approval annotation.
//!
//! A pending approval is one per container: the envelope of the held cuts of the workload's
//! pods (from: the highest current limit, to: the lowest planned limit). Its id is a hash of
//! the VerticalAutoscaler's uid, the container and both values, so a new recommendation that
//! cuts further gets a new id and an old approval never approves a bigger cut.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use tailor_crds::quantity::{format_memory_bytes, memory_bytes};
use tailor_crds::v1alpha1::PendingApproval;

use super::memory::Approved;

/// The approval id of lowering `container`'s memory limit from `from` to `to` bytes.
pub fn id(owner_uid: &str, container: &str, from: i64, to: i64) -> String {
    // FNV-1a, 64 bits: stable across versions and platforms, unlike std's hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in format!("{owner_uid}/{container}/{from}/{to}").bytes() {
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

/// The pending approvals for a workload's cuts: one per container. A container whose cuts all
/// lie within an approval keeps that approval's entry (and id) until every pod is resized.
pub fn pending(owner_uid: &str, cuts: &[Cut], approved: &[Approved]) -> Vec<Pending> {
    let mut by_container: BTreeMap<&str, Vec<&Cut>> = BTreeMap::new();
    for cut in cuts {
        by_container.entry(&cut.container).or_default().push(cut);
    }
    by_container
        .into_iter()
        .map(|(container, cuts)| {
            let covering = approved
                .iter()
                .find(|a| cuts.iter().all(|c| a.covers(container, c.from, c.to)));
            match covering {
                Some(a) => Pending {
                    container: container.to_owned(),
                    from: a.from,
                    to: a.to,
                    id: a.id.clone(),
                    approved: true,
                },
                None => {
                    let from = cuts.iter().map(|c| c.from).max().unwrap_or_default();
                    let to = cuts.iter().map(|c| c.to).min().unwrap_or_default();
                    Pending {
                        container: container.to_owned(),
                        from,
                        to,
                        id: id(owner_uid, container, from, to),
                        approved: false,
                    }
                }
            }
        })
        .collect()
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
/// grant, and the ids that match nothing pending (stale or mistyped).
pub fn approvals(ids: &[String], pending: &[PendingApproval]) -> (Vec<Approved>, Vec<String>) {
    let bytes = |q: &Quantity| memory_bytes(q).ok();
    let mut granted = Vec::new();
    let mut stale = Vec::new();
    for id in ids {
        let found = pending.iter().find(|p| &p.id == id).and_then(|p| {
            Some(Approved {
                container: p.container_name.clone(),
                from: bytes(&p.from)?,
                to: bytes(&p.to)?,
                id: id.clone(),
            })
        });
        match found {
            Some(a) => granted.push(a),
            None => stale.push(id.clone()),
        }
    }
    (granted, stale)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MI: i64 = 1 << 20;

    #[test]
    fn ids_are_stable_and_bound_to_the_values() {
        let a = id("uid-1", "app", 400 * MI, 200 * MI);
        assert_eq!(a, id("uid-1", "app", 400 * MI, 200 * MI));
        assert_eq!(a.len(), 10);
        assert_ne!(a, id("uid-1", "app", 400 * MI, 199 * MI));
        assert_ne!(a, id("uid-1", "app", 401 * MI, 200 * MI));
        assert_ne!(a, id("uid-1", "db", 400 * MI, 200 * MI));
        assert_ne!(a, id("uid-2", "app", 400 * MI, 200 * MI));
    }

    fn cut(container: &str, from: i64, to: i64) -> Cut {
        Cut {
            container: container.into(),
            from,
            to,
            approved: None,
        }
    }

    #[test]
    fn pending_is_the_envelope_per_container() {
        let cuts = [
            cut("app", 400 * MI, 220 * MI),
            cut("app", 500 * MI, 200 * MI),
            cut("db", 2048 * MI, 1024 * MI),
        ];
        let p = pending("u", &cuts, &[]);
        assert_eq!(p.len(), 2);
        assert_eq!(
            (p[0].container.as_str(), p[0].from, p[0].to),
            ("app", 500 * MI, 200 * MI)
        );
        assert_eq!(p[0].id, id("u", "app", 500 * MI, 200 * MI));
        assert!(!p[0].approved);
    }

    #[test]
    fn an_approval_keeps_its_entry_while_pods_remain() {
        let granted = Approved {
            container: "app".into(),
            from: 500 * MI,
            to: 200 * MI,
            id: "x".into(),
        };
        // One pod left, with a cut inside the approval: the approved entry stays as it was.
        let p = pending(
            "u",
            &[cut("app", 400 * MI, 220 * MI)],
            std::slice::from_ref(&granted),
        );
        assert_eq!(p[0].id, "x");
        assert!(p[0].approved);
        // A cut beyond the approval makes a new entry.
        let p = pending("u", &[cut("app", 400 * MI, 100 * MI)], &[granted]);
        assert_ne!(p[0].id, "x");
        assert!(!p[0].approved);
    }

    #[test]
    fn annotation_ids_match_pending_or_are_stale() {
        let pending = [PendingApproval {
            container_name: "app".into(),
            from: Quantity("500Mi".into()),
            to: Quantity("200Mi".into()),
            id: "abc".into(),
            since: None,
        }];
        let ids = annotation_ids(" abc, old  ");
        assert_eq!(ids, ["abc", "old"]);
        let (granted, stale) = approvals(&ids, &pending);
        assert_eq!(
            granted,
            [Approved {
                container: "app".into(),
                from: 500 * MI,
                to: 200 * MI,
                id: "abc".into()
            }]
        );
        assert_eq!(stale, ["old"]);
    }
}
