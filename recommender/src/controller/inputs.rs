//! What the recommender gives the estimator for each container besides its history, for a
//! replay of the workload (the live backtest): the model policy, the history window and the
//! heap floor, computed as [`super::compute`] computes them.

use std::collections::BTreeMap;

use kube::ResourceExt;
use tailor_crds::v1alpha1::VerticalAutoscaler;

use super::heap_hints::measured_heaps;
use super::history::add_heaps;
use super::{Context, compute, live_pods};
use crate::model::estimator::Policy;
use crate::model::heap::{HeapHint, MeasuredHeaps};
use crate::spec;

/// What the estimator gets for one container, its history aside.
#[derive(Debug, Clone, PartialEq)]
pub struct EstimatorInputs {
    /// The model policy: the VerticalAutoscaler's `recommenderPolicy` with the container's
    /// `minAllowed` and `maxAllowed`.
    pub policy: Policy,
    /// The history window, seconds.
    pub window: f64,
    /// The heap floor (heap ceiling + overhead, bytes) and the hint that set it.
    pub heap: Option<(f64, HeapHint)>,
}

impl Context {
    /// The estimator's inputs for `containers` of `va`'s workload as the recommender computes
    /// them at `end`: the template is the first of the workload's current pods, the JVM heap
    /// ceilings are read over `va`'s history window before `end`. A target tailor cannot
    /// resolve, a window, policy or heap setting that cannot be read, or Prometheus failing is
    /// an error.
    pub async fn estimator_inputs(
        &self,
        va: &VerticalAutoscaler,
        containers: &[String],
        end: f64,
    ) -> Result<BTreeMap<String, EstimatorInputs>, String> {
        let window = compute::check(va)?;
        let (ns, target) = (va.namespace().unwrap_or_default(), &va.spec.target_ref);
        let live = live_pods(self, &ns, &target.kind, &target.name);
        let template = live.first().map(|p| p.as_ref());
        let start = end - window;
        let pods = self
            .prometheus
            .workload_pods(&ns, &target.kind, &target.name, end, window)
            .await
            .map_err(|e| e.to_string())?;
        let mut heaps = MeasuredHeaps::default();
        let read = self
            .prometheus
            .jvm_heaps(&ns, &pods, start, end)
            .await
            .map_err(|e| e.to_string())?;
        add_heaps(&mut heaps, &ns, read);
        heaps.expire(start);
        let measured = measured_heaps(self, &ns, &heaps, template);
        containers
            .iter()
            .map(|name| {
                let policy = spec::container_policy(&va.spec, name);
                let (policy, heap) = compute::inputs(va, &policy, template, name, &measured)
                    .map_err(|e| format!("container {name}: {e}"))?;
                Ok((
                    name.clone(),
                    EstimatorInputs {
                        policy,
                        window,
                        heap,
                    },
                ))
            })
            .collect()
    }
}
