//! Heap hints of a workload's containers: a pod annotation, the command line and environment
//! (`-Xmx`, `GOMEMLIMIT`, ...), and the ceilings the JVM reports in Prometheus.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use kube::runtime::reflector::ObjectRef;
use tailor_crds::quantity::memory_bytes;
use tailor_crds::v1alpha1::HeapSource;

use super::{Context, HEAP_ANNOTATION};
use crate::model::heap::{self, HeapHint, HeapSize, MeasuredHeaps, Process, Runtime};

pub(super) fn process_of(c: &Container) -> (Vec<String>, Vec<String>, Vec<(String, String)>) {
    let env = c
        .env
        .iter()
        .flatten()
        .filter_map(|e| e.value.clone().map(|v| (e.name.clone(), v)))
        .collect();
    (
        c.command.clone().unwrap_or_default(),
        c.args.clone().unwrap_or_default(),
        env,
    )
}

/// The heap floor for a container, and the hint that set it. `measured`: the heap ceiling the
/// container's JVM reported in its metrics, if any.
///
/// With `heap.source: Auto`, a pod annotation is taken as it is: a person said so. Otherwise
/// the measured ceiling and the one the process's flags give are both weighed and the higher
/// floor wins. The measured ceiling is what the JVM actually resolved (a
/// `-XX:MaxRAMPercentage` against its real limit, an `-Xmx` baked into the image's entrypoint),
/// so it usually beats a percentage read from the command line; an explicit `-Xmx` and the
/// measurement should agree, and if they do not, the larger is the safe one.
pub(super) fn heap_floor(
    policy: &tailor_crds::v1alpha1::ContainerPolicy,
    pod: Option<&Pod>,
    container: &str,
    measured: Option<&HeapHint>,
) -> Result<Option<(f64, HeapHint)>, String> {
    let heap_policy = policy.heap.clone().unwrap_or_default();
    let overhead = heap_policy
        .overhead
        .as_ref()
        .map(|q| memory_bytes(q).map(|b| b as f64))
        .transpose()
        .map_err(|e| format!("heap.overhead: {e}"))?;
    let hints: Vec<HeapHint> = match heap_policy.source {
        HeapSource::Off => Vec::new(),
        HeapSource::Explicit => heap_policy
            .max_heap
            .as_ref()
            .map(|q| memory_bytes(q).map(|b| b as f64))
            .transpose()
            .map_err(|e| format!("heap.maxHeap: {e}"))?
            .map(|bytes| HeapHint {
                runtime: Runtime::Explicit,
                size: HeapSize::Bytes(bytes),
                source: "heap.maxHeap".into(),
            })
            .into_iter()
            .collect(),
        HeapSource::Auto => {
            if let Some(hint) = pod.and_then(|pod| annotated_heap(pod, container)) {
                vec![hint]
            } else {
                let detected = pod
                    .and_then(|p| p.spec.as_ref())
                    .and_then(|s| s.containers.iter().find(|c| c.name == container))
                    .and_then(detect);
                measured.cloned().into_iter().chain(detected).collect()
            }
        }
    };
    Ok(heap::highest(hints, overhead))
}

/// The heap hint of the process a container starts, from its command, args and environment.
pub(super) fn detect(c: &Container) -> Option<HeapHint> {
    let (command, args, env) = process_of(c);
    heap::detect(&Process {
        command: &command,
        args: &args,
        env: &env,
    })
}

/// The heap ceiling a pod annotation gives `container`.
pub(super) fn annotated_heap(pod: &Pod, container: &str) -> Option<HeapHint> {
    let annotations = pod.metadata.annotations.as_ref();
    let v = annotations.and_then(|a| {
        a.get(&format!("{HEAP_ANNOTATION}.{container}"))
            .or_else(|| a.get(HEAP_ANNOTATION))
    })?;
    let bytes = memory_bytes(&k8s_openapi::apimachinery::pkg::api::resource::Quantity(
        v.clone(),
    ))
    .ok()?;
    Some(HeapHint {
        runtime: Runtime::Explicit,
        size: HeapSize::Bytes(bytes as f64),
        source: format!("annotation {HEAP_ANNOTATION}"),
    })
}

/// The heap ceiling each container's JVM reported, the largest over the workload's pods.
/// A series without a `container` label is attributed by the pod's spec (from the cache, or
/// for pods that are gone, the current `template`); one that cannot be attributed is left out.
pub(super) fn measured_heaps(
    ctx: &Context,
    namespace: &str,
    heaps: &MeasuredHeaps,
    template: Option<&Pod>,
) -> BTreeMap<String, HeapHint> {
    let mut out: BTreeMap<String, (f64, HeapHint)> = BTreeMap::new();
    for (key, bytes) in heaps.maxima() {
        let containers: Vec<(String, Option<Runtime>)> = if key.container.is_empty() {
            let cached = ctx
                .pods
                .get(&ObjectRef::new(&key.pod).within(namespace))
                .map(|p| p.unpack());
            cached
                .as_ref()
                .or(template)
                .and_then(|p| p.spec.as_ref())
                .map(|s| {
                    s.containers
                        .iter()
                        .map(|c| (c.name.clone(), detect(c).map(|h| h.runtime)))
                        .collect()
                })
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let Some(container) = heap::attribute(&key.container, &containers) else {
            tracing::debug!(
                namespace,
                pod = %key.pod,
                metric = %key.metric,
                bytes,
                "JVM heap metric without a container label in a pod whose JVM container cannot be told; ignored"
            );
            continue;
        };
        if out.get(container).is_none_or(|(b, _)| bytes > *b) {
            out.insert(
                container.to_owned(),
                (bytes, heap::measured_hint(&key.metric, bytes)),
            );
        }
    }
    out.into_iter().map(|(c, (_, h))| (c, h)).collect()
}
