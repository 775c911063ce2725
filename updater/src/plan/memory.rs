//! What the updater does with a container's memory change. This file is the whole rule.
//!
//! - An **increase** goes live. (If the container's memory `resizePolicy` is `RestartContainer`
//!   the kubelet restarts it to apply any memory change; the resize is then paced like every
//!   restart.)
//! - A **limit decrease** is what can OOM-kill a process that keeps its memory resident. It is
//!   routed by `updatePolicy.memoryDecrease`:
//!   - `ManualApproval` (default): held in `status.pendingApprovals` under an id bound to the
//!     exact values; applied once a person sets `tailor.dev/approve-memory-decrease=<id>`, and
//!     then only to pods whose cut lies within the approved one (from no higher, to no lower).
//!   - `RestartContainer`: applied only where the container's memory `resizePolicy` is
//!     `RestartContainer` (immutable after creation), so the process restarts into the new
//!     limit instead of being squeezed under it; elsewhere it is declined
//!     (`ResizePolicyNotRequired`).
//!   - `Never`: declined (`MemoryDecreaseNever`).
//! - A **request decrease with an unchanged limit** (no limit set, or `controlledValues:
//!   RequestsOnly`) cannot OOM-kill anything: the request only reserves node capacity. It goes
//!   live, except under `Never`, which never lowers memory at all (`MemoryDecreaseNever`).
//! - Nothing is ever lowered below the recommendation's memory floor (done by the caller).

use tailor_crds::v1alpha1::MemoryDecrease;

use super::declined::DeclineReason;
use super::resources::ContainerResources;

/// A memory decrease approved by a person: the envelope of cuts it allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Approved {
    /// Container name.
    pub container: String,
    /// The memory limit the approval was given for (bytes); pods above it are not covered.
    pub from: i64,
    /// The lowest limit approved (bytes).
    pub to: i64,
    /// The approval id.
    pub id: String,
}

impl Approved {
    /// Whether this approval covers lowering `container`'s limit from `from` to `to`.
    pub fn covers(&self, container: &str, from: i64, to: i64) -> bool {
        self.container == container && from <= self.from && to >= self.to
    }
}

/// The route a container's memory change takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// No memory change.
    Unchanged,
    /// Apply it (live, or through a restart when the container's policy says so).
    Apply,
    /// Apply it: a person approved it with this id.
    ApplyApproved(String),
    /// Hold it for approval: lower the limit from `from` to `to` (bytes).
    Hold {
        /// Current limit.
        from: i64,
        /// Planned limit.
        to: i64,
    },
    /// Leave memory as it is: declined, for this reason.
    Decline(DeclineReason, &'static str),
}

fn never() -> Route {
    Route::Decline(
        DeclineReason::MemoryDecreaseNever,
        "memoryDecrease is Never: memory is not lowered",
    )
}

/// Routes a container's memory change from `current` to `planned`.
pub fn route(
    container: &str,
    current: &ContainerResources,
    planned: &ContainerResources,
    decrease: MemoryDecrease,
    restart_policy: bool,
    approved: &[Approved],
) -> Route {
    let (cur_req, new_req) = (current.requests.memory, planned.requests.memory);
    let (cur_lim, new_lim) = (current.limits.memory, planned.limits.memory);
    if cur_req == new_req && cur_lim == new_lim {
        return Route::Unchanged;
    }
    let lowers =
        |cur: Option<i64>, new: Option<i64>| matches!((cur, new), (Some(c), Some(n)) if n < c);
    let limit_down = lowers(cur_lim, new_lim);
    let request_down = lowers(cur_req, new_req);
    if !limit_down && !request_down {
        return Route::Apply;
    }
    if decrease == MemoryDecrease::Never {
        return never();
    }
    let (Some(from), Some(to)) = (cur_lim, new_lim) else {
        // A request decrease without a limit to lower: it cannot OOM-kill anything.
        return Route::Apply;
    };
    if !limit_down {
        return Route::Apply;
    }
    match decrease {
        MemoryDecrease::Never => never(),
        MemoryDecrease::RestartContainer if restart_policy => Route::Apply,
        MemoryDecrease::RestartContainer => Route::Decline(
            DeclineReason::ResizePolicyNotRequired,
            "memoryDecrease is RestartContainer but the container's memory resizePolicy is NotRequired (it is immutable; set it in the pod template)",
        ),
        MemoryDecrease::ManualApproval => approved
            .iter()
            .find(|a| a.covers(container, from, to))
            .map_or(Route::Hold { from, to }, |a| {
                Route::ApplyApproved(a.id.clone())
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::resources::Amounts;

    const MI: i64 = 1 << 20;

    fn mem(req: Option<i64>, lim: Option<i64>) -> ContainerResources {
        ContainerResources {
            requests: Amounts {
                cpu: None,
                memory: req,
            },
            limits: Amounts {
                cpu: None,
                memory: lim,
            },
        }
    }

    #[test]
    fn increases_apply_under_every_policy() {
        for d in [
            MemoryDecrease::Never,
            MemoryDecrease::ManualApproval,
            MemoryDecrease::RestartContainer,
        ] {
            let r = route(
                "app",
                &mem(Some(100 * MI), Some(200 * MI)),
                &mem(Some(150 * MI), Some(300 * MI)),
                d,
                false,
                &[],
            );
            assert_eq!(r, Route::Apply, "{d:?}");
        }
    }

    #[test]
    fn limit_decreases_are_routed_by_policy() {
        let cur = mem(Some(200 * MI), Some(400 * MI));
        let new = mem(Some(100 * MI), Some(200 * MI));
        let r = |d, restart, approved: &[Approved]| route("app", &cur, &new, d, restart, approved);
        assert_eq!(
            r(MemoryDecrease::ManualApproval, false, &[]),
            Route::Hold {
                from: 400 * MI,
                to: 200 * MI
            }
        );
        assert!(matches!(
            r(MemoryDecrease::Never, true, &[]),
            Route::Decline(DeclineReason::MemoryDecreaseNever, _)
        ));
        assert_eq!(r(MemoryDecrease::RestartContainer, true, &[]), Route::Apply);
        assert!(matches!(
            r(MemoryDecrease::RestartContainer, false, &[]),
            Route::Decline(DeclineReason::ResizePolicyNotRequired, m) if m.contains("NotRequired")
        ));
    }

    #[test]
    fn an_approval_covers_only_cuts_within_it() {
        let cur = mem(Some(200 * MI), Some(400 * MI));
        let new = mem(Some(100 * MI), Some(200 * MI));
        let approval = |container: &str, from, to| Approved {
            container: container.into(),
            from,
            to,
            id: "abc".into(),
        };
        let r = |a: Approved| {
            route(
                "app",
                &cur,
                &new,
                MemoryDecrease::ManualApproval,
                false,
                &[a],
            )
        };
        assert_eq!(
            r(approval("app", 400 * MI, 200 * MI)),
            Route::ApplyApproved("abc".into())
        );
        // The approved cut was smaller (to a higher limit): a bigger cut is not covered.
        assert!(matches!(
            r(approval("app", 400 * MI, 250 * MI)),
            Route::Hold { .. }
        ));
        // The pod has more memory than the approval was given for.
        assert!(matches!(
            r(approval("app", 300 * MI, 200 * MI)),
            Route::Hold { .. }
        ));
        // Another container's approval.
        assert!(matches!(
            r(approval("sidecar", 400 * MI, 200 * MI)),
            Route::Hold { .. }
        ));
    }

    #[test]
    fn request_only_decreases_go_live_except_under_never() {
        // No limit at all.
        let r = route(
            "app",
            &mem(Some(400 * MI), None),
            &mem(Some(200 * MI), None),
            MemoryDecrease::ManualApproval,
            false,
            &[],
        );
        assert_eq!(r, Route::Apply);
        // RequestsOnly: the limit stays.
        let r = route(
            "app",
            &mem(Some(400 * MI), Some(800 * MI)),
            &mem(Some(200 * MI), Some(800 * MI)),
            MemoryDecrease::ManualApproval,
            false,
            &[],
        );
        assert_eq!(r, Route::Apply);
        let r = route(
            "app",
            &mem(Some(400 * MI), None),
            &mem(Some(200 * MI), None),
            MemoryDecrease::Never,
            false,
            &[],
        );
        assert!(matches!(
            r,
            Route::Decline(DeclineReason::MemoryDecreaseNever, _)
        ));
    }
}
