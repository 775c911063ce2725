//! Which of a workload's planned resizes go now.
//!
//! - Live resizes (no container restart) all go now; the actuator's global rate limit paces them.
//! - Restart-causing resizes go at most `maxConcurrentRestarts` at a time: a pod that is not
//!   Ready, or whose resize the kubelet has not finished, counts against the budget, so the
//!   next restart waits until the last restarted pod is Ready again. Only Ready pods are
//!   restarted. A pod that has ended for good (phase `Failed`, evicted pods among them, or
//!   `Succeeded`) will never be Ready again: it does not count, so it cannot hold the budget
//!   for the rest of the workload.
//! - When a pod's resize to the current recommendation was declared Infeasible, nothing more is
//!   issued for the workload until the recommendation changes (the kubelet will not fit the
//!   same values on a node of the same size either).

use super::PodPlan;

/// One pod of the workload as the selection needs it.
#[derive(Clone, Copy, Debug)]
pub struct PodView<'a> {
    /// The pod's plan.
    pub plan: &'a PodPlan,
    /// The pod's `Ready` condition is True.
    pub ready: bool,
    /// The pod has ended for good: phase `Failed` (evicted pods among them) or `Succeeded`
    /// ([`super::resources::terminal`]).
    pub terminal: bool,
    /// A resize of the pod is not complete (pending, in progress, or not yet observed).
    pub resizing: bool,
    /// The pod's resize is `PodResizePending` with reason `Infeasible`.
    pub infeasible: bool,
    /// The actuator is backing off this pod (an actuation error, a failed patch).
    pub backing_off: bool,
}

/// The outcome of the selection.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selection {
    /// Indexes of the pods to resize now.
    pub now: Vec<usize>,
    /// Restart-causing resizes waiting for the restart budget.
    pub waiting_for_restart: usize,
    /// Nothing is issued: a pod's resize to the current recommendation is Infeasible.
    pub stopped_infeasible: bool,
}

/// Selects the resizes to issue now. `in_flight_restarts` counts restart-causing resizes the
/// actuator issued that the pod cache may not show yet.
pub fn select(pods: &[PodView<'_>], max_restarts: i32, in_flight_restarts: usize) -> Selection {
    let mut selection = Selection::default();
    // An Infeasible pod whose spec already holds what the current recommendation asks for.
    if pods
        .iter()
        .any(|p| p.infeasible && !p.plan.resizes() && p.plan.skip.is_none())
    {
        selection.stopped_infeasible = true;
        return selection;
    }
    let disrupted = pods
        .iter()
        .filter(|p| !p.terminal && (!p.ready || p.resizing))
        .count();
    let mut budget = usize::try_from(max_restarts.max(0))
        .unwrap_or(0)
        .saturating_sub(disrupted.max(in_flight_restarts));
    for (i, p) in pods.iter().enumerate() {
        if !p.plan.resizes() || p.backing_off {
            continue;
        }
        if !p.plan.restarts() {
            selection.now.push(i);
        } else if budget > 0 && p.ready && !p.resizing && !p.terminal {
            budget -= 1;
            selection.now.push(i);
        } else {
            selection.waiting_for_restart += 1;
        }
    }
    selection
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::ContainerChange;
    use crate::plan::resources::ContainerResources;

    fn plan(restarts: bool) -> PodPlan {
        PodPlan {
            changes: vec![ContainerChange {
                container: "app".into(),
                from: ContainerResources::default(),
                to: ContainerResources::default(),
                restarts,
                approval: None,
            }],
            ..PodPlan::default()
        }
    }

    fn view(plan: &PodPlan) -> PodView<'_> {
        PodView {
            plan,
            ready: true,
            terminal: false,
            resizing: false,
            infeasible: false,
            backing_off: false,
        }
    }

    #[test]
    fn live_resizes_all_go() {
        let p = plan(false);
        let pods = vec![view(&p); 5];
        assert_eq!(select(&pods, 1, 0).now, [0, 1, 2, 3, 4]);
    }

    #[test]
    fn restarts_wait_for_the_budget_and_readiness() {
        let p = plan(true);
        let pods = vec![view(&p); 3];
        let s = select(&pods, 1, 0);
        assert_eq!((s.now.as_slice(), s.waiting_for_restart), (&[0][..], 2));
        assert_eq!(select(&pods, 2, 0).now, [0, 1]);
        // One pod is still coming back: no budget left.
        let mut pods = pods;
        pods[0].ready = false;
        let s = select(&pods, 1, 0);
        assert!(s.now.is_empty());
        assert_eq!(s.waiting_for_restart, 3);
        // The actuator's own record counts when the cache lags.
        pods[0].ready = true;
        assert!(select(&pods, 1, 1).now.is_empty());
    }

    #[test]
    fn a_failed_or_evicted_pod_does_not_hold_the_restart_budget() {
        let p = plan(true);
        let gone = PodPlan::default();
        // An evicted pod: phase Failed, never Ready again, nothing to resize.
        let mut evicted = view(&gone);
        evicted.ready = false;
        evicted.terminal = true;
        let mut pods = vec![evicted, view(&p), view(&p)];
        let s = select(&pods, 1, 0);
        assert_eq!((s.now.as_slice(), s.waiting_for_restart), (&[1][..], 1));
        // The restarted pod is coming back: the next one waits for it.
        pods[1].ready = false;
        let s = select(&pods, 1, 0);
        assert!(s.now.is_empty());
        assert_eq!(s.waiting_for_restart, 2);
        // Ready again (its plan now done): the next one goes.
        pods[1] = view(&gone);
        assert_eq!(select(&pods, 1, 0).now, [2]);
    }

    #[test]
    fn an_infeasible_target_stops_the_workload() {
        let done = PodPlan::default();
        let p = plan(false);
        let mut stuck = view(&done);
        stuck.infeasible = true;
        let s = select(&[stuck, view(&p)], 1, 0);
        assert!(s.stopped_infeasible);
        assert!(s.now.is_empty());
        // A new recommendation re-plans the infeasible pod too: it goes again.
        let mut retry = view(&p);
        retry.infeasible = true;
        assert_eq!(select(&[retry, view(&p)], 1, 0).now, [0, 1]);
    }
}
