//! The kubelet's resource decisions, as pure functions: node admission of a pod or of a pod
//! resize, the messages the kubelet writes, and the order in which deferred resizes are
//! retried. No I/O; the runtime applies the decisions to the API server.
//!
//! Behaviour followed (kubelet v1.35, `pkg/kubelet/allocation` and the scheduler's
//! `NodeResourcesFit` predicate it reuses for admission; see `docs/simulator.md`):
//! - a resize is admitted only if the sum of the *other* pods' allocated requests plus the new
//!   requests fits node allocatable, for the whole pod at once;
//! - requests above allocatable on their own are `Infeasible`
//!   ("Node didn't have enough capacity: memory, requested: N, capacity: M"), memory checked first;
//! - otherwise not fitting now is `Deferred`, with the admission failure message
//!   ("Node didn't have enough resource: cpu, requested: N, used: U, capacity: C");
//! - deferred resizes are retried in this order: those that do not increase requests first,
//!   then higher priority, then Guaranteed before Burstable, then the oldest.

use std::cmp::Ordering;
use std::collections::BTreeMap;

/// CPU in millicores and memory in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, PartialOrd, Ord, Hash)]
pub struct Amounts {
    /// Millicores.
    pub cpu: i64,
    /// Bytes.
    pub memory: i64,
}

impl Amounts {
    /// A new pair.
    pub const fn new(cpu: i64, memory: i64) -> Self {
        Self { cpu, memory }
    }

    fn add(self, o: Self) -> Self {
        Self::new(
            self.cpu.saturating_add(o.cpu),
            self.memory.saturating_add(o.memory),
        )
    }

    /// Whether either resource is above `o`'s.
    pub fn exceeds_any(self, o: Self) -> bool {
        self.cpu > o.cpu || self.memory > o.memory
    }
}

/// What the kubelet decides about a pod resize.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Accepted: allocate and actuate.
    Admit,
    /// Fits the node in principle, not now: `PodResizePending` reason `Deferred`.
    Deferred(String),
    /// Can never fit this node: `PodResizePending` reason `Infeasible`.
    Infeasible(String),
}

/// One node's allocatable resources and the requests allocated to its pods.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeBook {
    allocatable: Amounts,
    max_pods: usize,
    allocated: BTreeMap<String, Amounts>,
}

impl NodeBook {
    /// A node with nothing allocated.
    pub fn new(allocatable: Amounts, max_pods: usize) -> Self {
        Self {
            allocatable,
            max_pods,
            allocated: BTreeMap::new(),
        }
    }

    /// Allocatable resources.
    pub fn allocatable(&self) -> Amounts {
        self.allocatable
    }

    /// The sum of allocated requests.
    pub fn used(&self) -> Amounts {
        self.used_except("")
    }

    /// Pods on the node.
    pub fn pod_count(&self) -> usize {
        self.allocated.len()
    }

    fn used_except(&self, pod: &str) -> Amounts {
        self.allocated
            .iter()
            .filter(|(k, _)| k.as_str() != pod)
            .fold(Amounts::default(), |acc, (_, a)| acc.add(*a))
    }

    /// Whether a new pod with `requests` fits (scheduling and admission of a new pod).
    pub fn fits_new(&self, requests: Amounts) -> bool {
        self.allocated.len() < self.max_pods
            && !self.used().add(requests).exceeds_any(self.allocatable)
    }

    /// Allocates (or re-allocates) `requests` to `pod`.
    pub fn allocate(&mut self, pod: &str, requests: Amounts) {
        self.allocated.insert(pod.to_owned(), requests);
    }

    /// Frees `pod`'s requests. Returns whether it was allocated here.
    pub fn release(&mut self, pod: &str) -> bool {
        self.allocated.remove(pod).is_some()
    }

    /// The requests allocated to `pod`.
    pub fn allocation(&self, pod: &str) -> Option<Amounts> {
        self.allocated.get(pod).copied()
    }

    /// The kubelet's decision on resizing `pod` to `requests` (the pod's total requests).
    pub fn check_resize(&self, pod: &str, requests: Amounts) -> Admission {
        let cap = self.allocatable;
        if requests.memory > cap.memory {
            return Admission::Infeasible(format!(
                "Node didn't have enough capacity: memory, requested: {}, capacity: {}",
                requests.memory, cap.memory
            ));
        }
        if requests.cpu > cap.cpu {
            return Admission::Infeasible(format!(
                "Node didn't have enough capacity: cpu, requested: {}, capacity: {}",
                requests.cpu, cap.cpu
            ));
        }
        let used = self.used_except(pod);
        let mut short = Vec::new();
        if used.cpu + requests.cpu > cap.cpu {
            short.push(format!(
                "Node didn't have enough resource: cpu, requested: {}, used: {}, capacity: {}",
                requests.cpu, used.cpu, cap.cpu
            ));
        }
        if used.memory + requests.memory > cap.memory {
            short.push(format!(
                "Node didn't have enough resource: memory, requested: {}, used: {}, capacity: {}",
                requests.memory, used.memory, cap.memory
            ));
        }
        if short.is_empty() {
            Admission::Admit
        } else {
            Admission::Deferred(short.join(", "))
        }
    }
}

/// A resize waiting for room on its node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingResize {
    /// `namespace/name`.
    pub pod: String,
    /// Whether the resize raises the pod's CPU or memory requests.
    pub increases_requests: bool,
    /// `spec.priority`.
    pub priority: i32,
    /// Whether the pod is Guaranteed.
    pub guaranteed: bool,
    /// When the resize was first deferred (any monotonic unit).
    pub since: u64,
}

/// The kubelet's retry order for deferred resizes.
pub fn retry_order(a: &PendingResize, b: &PendingResize) -> Ordering {
    a.increases_requests
        .cmp(&b.increases_requests)
        .then(b.priority.cmp(&a.priority))
        .then(b.guaranteed.cmp(&a.guaranteed))
        .then(a.since.cmp(&b.since))
        .then(a.pod.cmp(&b.pod))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GI: i64 = 1 << 30;

    fn node() -> NodeBook {
        let mut n = NodeBook::new(Amounts::new(4000, 8 * GI), 110);
        n.allocate("a", Amounts::new(1000, 2 * GI));
        n.allocate("b", Amounts::new(2500, 2 * GI));
        n
    }

    #[test]
    fn resize_that_fits_is_admitted() {
        assert_eq!(
            node().check_resize("a", Amounts::new(1500, 4 * GI)),
            Admission::Admit
        );
        // Shrinking always fits.
        assert_eq!(
            node().check_resize("b", Amounts::new(100, GI)),
            Admission::Admit
        );
    }

    #[test]
    fn resize_beyond_free_room_is_deferred_with_the_admission_message() {
        assert_eq!(
            node().check_resize("a", Amounts::new(2000, 2 * GI)),
            Admission::Deferred(
                "Node didn't have enough resource: cpu, requested: 2000, used: 2500, capacity: 4000".into()
            )
        );
    }

    #[test]
    fn resize_beyond_allocatable_is_infeasible() {
        assert_eq!(
            node().check_resize("a", Amounts::new(5000, GI)),
            Admission::Infeasible(
                "Node didn't have enough capacity: cpu, requested: 5000, capacity: 4000".into()
            )
        );
        assert_eq!(
            node().check_resize("a", Amounts::new(5000, 9 * GI)),
            Admission::Infeasible(format!(
                "Node didn't have enough capacity: memory, requested: {}, capacity: {}",
                9 * GI,
                8 * GI
            )),
            "memory is reported first"
        );
    }

    #[test]
    fn release_makes_room_for_a_deferred_resize() {
        let mut n = node();
        let want = Amounts::new(3000, 2 * GI);
        assert!(matches!(n.check_resize("a", want), Admission::Deferred(_)));
        assert!(n.release("b"));
        assert_eq!(n.check_resize("a", want), Admission::Admit);
        assert!(!n.release("b"));
    }

    #[test]
    fn new_pods_fit_by_requests_and_pod_count() {
        let mut n = NodeBook::new(Amounts::new(1000, GI), 2);
        assert!(n.fits_new(Amounts::new(600, 0)));
        n.allocate("x", Amounts::new(600, 0));
        assert!(!n.fits_new(Amounts::new(600, 0)));
        n.allocate("y", Amounts::new(0, 0));
        assert!(!n.fits_new(Amounts::new(0, 0)), "pod limit");
    }

    #[test]
    fn deferred_resizes_retry_in_the_kubelets_order() {
        let p = |pod: &str, inc, prio, g, since| PendingResize {
            pod: pod.into(),
            increases_requests: inc,
            priority: prio,
            guaranteed: g,
            since,
        };
        let mut v = [
            p("old-burstable", true, 0, false, 1),
            p("new-guaranteed", true, 0, true, 5),
            p("shrink", false, 0, false, 9),
            p("high-priority", true, 100, false, 7),
            p("newer-burstable", true, 0, false, 3),
        ];
        v.sort_by(retry_order);
        let order: Vec<_> = v.iter().map(|x| x.pod.as_str()).collect();
        assert_eq!(
            order,
            [
                "shrink",
                "high-priority",
                "new-guaranteed",
                "old-burstable",
                "newer-burstable"
            ]
        );
    }
}
