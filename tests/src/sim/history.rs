//! History generator: days of the same usage models as OpenMetrics text, for
//! `promtool tsdb create-blocks-from openmetrics`, so Prometheus holds a week of history
//! seconds after it starts.
//!
//! Each container is taken to start at the beginning of the window. CPU above the limit is
//! capped (throttled), memory above the limit is capped at the limit (the live simulator
//! OOM-kills instead; history shows what a container *could* use).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use super::state::RSS_SHARE;
use super::usage::{Model, Trace};

/// One container whose history is generated.
#[derive(Debug, Clone)]
pub struct HistoryContainer {
    /// Namespace.
    pub namespace: String,
    /// Pod.
    pub pod: String,
    /// Container.
    pub container: String,
    /// Image.
    pub image: String,
    /// Node.
    pub node: String,
    /// The usage model.
    pub model: Model,
    /// The seed (see [`super::usage::container_seed`]).
    pub seed: u64,
    /// The trace, for `Model::Trace`.
    pub trace: Option<Arc<Trace>>,
    /// CPU request and limit, cores.
    pub cpu: (Option<f64>, Option<f64>),
    /// Memory request and limit, bytes.
    pub memory: (Option<f64>, Option<f64>),
    /// The pod's controlling owner `(kind, name)`, for `kube_pod_owner`.
    pub owner: Option<(String, String)>,
    /// When the pod existed `(from, to)`, unix seconds; `None`: the whole window. Pods of an
    /// earlier rollout existed only in the earlier part.
    pub lifetime: Option<(i64, i64)>,
    /// OOM kills (unix seconds): each adds a restart and sets the last terminated reason.
    pub oom_kills: Vec<i64>,
}

impl HistoryContainer {
    /// Container `container` (image `example/<container>:1`) of `namespace/pod` on node
    /// `sim-0`, seeded from its names with seed 1, owned by `owner` `(kind, name)`, for the
    /// whole window, without requests, limits or OOM kills.
    pub fn new(
        namespace: &str,
        pod: &str,
        container: &str,
        model: Model,
        owner: (&str, &str),
    ) -> Self {
        Self {
            namespace: namespace.into(),
            pod: pod.into(),
            container: container.into(),
            image: format!("example/{container}:1"),
            node: "sim-0".into(),
            seed: super::usage::container_seed(1, namespace, pod, container),
            model,
            trace: None,
            cpu: (None, None),
            memory: (None, None),
            owner: Some((owner.0.into(), owner.1.into())),
            lifetime: None,
            oom_kills: vec![],
        }
    }
}

/// A ReplicaSet and its controlling owner, for `kube_replicaset_owner`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaSetOwner {
    /// Namespace.
    pub namespace: String,
    /// ReplicaSet.
    pub replicaset: String,
    /// Owner kind (`Deployment`).
    pub owner_kind: String,
    /// Owner name.
    pub owner_name: String,
}

/// One generated series: its labels and samples `(unix seconds, value)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Metric name.
    pub metric: &'static str,
    /// Labels, sorted.
    pub labels: BTreeMap<&'static str, String>,
    /// Samples.
    pub samples: Vec<(i64, f64)>,
}

const FAMILIES: [(&str, &str); 12] = [
    ("container_cpu_usage_seconds_total", "counter"),
    ("container_memory_working_set_bytes", "gauge"),
    ("container_memory_rss", "gauge"),
    ("container_spec_memory_limit_bytes", "gauge"),
    ("kube_pod_container_resource_requests", "gauge"),
    ("kube_pod_container_resource_limits", "gauge"),
    ("kube_pod_container_status_restarts_total", "counter"),
    ("kube_pod_container_status_last_terminated_reason", "gauge"),
    ("kube_pod_owner", "gauge"),
    ("kube_replicaset_owner", "gauge"),
    ("jvm_memory_max_bytes", "gauge"),
    ("jvm_memory_bytes_max", "gauge"),
];

/// How an application exposes its JVM's heap ceiling.
#[derive(Debug, Clone, PartialEq)]
pub enum JvmHeapMetrics {
    /// Micrometer (Spring Boot): `jvm_memory_max_bytes{area="heap",id=<pool>}`, one series per
    /// memory pool; `-1` where the pool has no ceiling of its own (G1's eden and survivor).
    Micrometer(Vec<(String, f64)>),
    /// The Prometheus client_java / JMX exporter: `jvm_memory_bytes_max{area="heap"}`.
    ClientJava(f64),
}

/// The JVM heap series of one pod (applications expose metrics per pod: without
/// `container`, the scrape adds no `container` label).
#[derive(Debug, Clone, PartialEq)]
pub struct JvmHeap {
    /// Namespace.
    pub namespace: String,
    /// Pod.
    pub pod: String,
    /// The `container` label, if the scrape configuration adds one.
    pub container: Option<String>,
    /// The series.
    pub metrics: JvmHeapMetrics,
    /// When the pod reported them `(from, to)`, unix seconds; `None`: the whole window.
    pub lifetime: Option<(i64, i64)>,
}

/// The JVM heap series of `heaps` from `start` to `end` every `step` seconds, with an
/// `area="nonheap"` series beside them (which must not count as heap), as the libraries do.
pub fn jvm_heap(heaps: &[JvmHeap], start: i64, end: i64, step: i64) -> Vec<Series> {
    let step = step.max(1);
    let mut out = Vec::new();
    for h in heaps {
        let (from, to) = h.lifetime.unwrap_or((start, end));
        let times: Vec<i64> = (0..)
            .map(|i| start + i * step)
            .take_while(|t| *t <= end)
            .filter(|t| (from..=to).contains(t))
            .collect();
        let labels = |area: &str| {
            let mut l = BTreeMap::from([
                ("namespace", h.namespace.clone()),
                ("pod", h.pod.clone()),
                ("area", area.to_owned()),
                ("instance", format!("{}:8080", h.pod)),
            ]);
            if let Some(c) = &h.container {
                l.insert("container", c.clone());
            }
            l
        };
        let constant = |v: f64| times.iter().map(|t| (*t, v)).collect::<Vec<_>>();
        match &h.metrics {
            JvmHeapMetrics::Micrometer(pools) => {
                for (id, max) in pools
                    .iter()
                    .map(|(id, max)| (id.as_str(), *max))
                    .chain([("Metaspace", 512.0 * 1024.0 * 1024.0)])
                {
                    let mut l = labels(if id == "Metaspace" { "nonheap" } else { "heap" });
                    l.insert("id", id.to_owned());
                    out.push(Series {
                        metric: "jvm_memory_max_bytes",
                        labels: l,
                        samples: constant(max),
                    });
                }
            }
            JvmHeapMetrics::ClientJava(max) => {
                for (area, v) in [("heap", *max), ("nonheap", -1.0)] {
                    out.push(Series {
                        metric: "jvm_memory_bytes_max",
                        labels: labels(area),
                        samples: constant(v),
                    });
                }
            }
        }
    }
    out
}

/// Generates every series for `containers` from `start` to `end` (unix seconds, inclusive)
/// every `step` seconds.
pub fn generate(containers: &[HistoryContainer], start: i64, end: i64, step: i64) -> Vec<Series> {
    let step = step.max(1);
    let times: Vec<i64> = (0..)
        .map(|i| start + i * step)
        .take_while(|t| *t <= end)
        .collect();
    let mut out = Vec::new();
    for c in containers {
        let (from, to) = c.lifetime.unwrap_or((start, end));
        let times: Vec<i64> = times
            .iter()
            .copied()
            .filter(|t| (from..=to).contains(t))
            .collect();
        if times.is_empty() {
            continue;
        }
        let start = times[0];
        let base = || {
            BTreeMap::from([
                ("namespace", c.namespace.clone()),
                ("pod", c.pod.clone()),
                ("container", c.container.clone()),
            ])
        };
        let cadvisor = || {
            let mut l = base();
            l.insert("image", c.image.clone());
            l.insert("node", c.node.clone());
            l
        };
        let mut cpu_total = 0.0;
        let mut cpu = Vec::with_capacity(times.len());
        let mut ws = Vec::with_capacity(times.len());
        let mut rss = Vec::with_capacity(times.len());
        for (i, &t) in times.iter().enumerate() {
            let u = c
                .model
                .sample(t as f64, (t - start) as f64, c.seed, c.trace.as_deref());
            let used_cpu = c.cpu.1.map_or(u.cpu, |l| u.cpu.min(l));
            if i > 0 {
                cpu_total += used_cpu * step as f64;
            }
            let mem = c.memory.1.map_or(u.memory, |l| u.memory.min(l)).round();
            cpu.push((t, cpu_total));
            ws.push((t, mem));
            rss.push((t, (mem * RSS_SHARE).round()));
        }
        let constant = |v: f64| times.iter().map(|t| (*t, v)).collect::<Vec<_>>();
        let restarts: Vec<(i64, f64)> = times
            .iter()
            .map(|t| (*t, c.oom_kills.iter().filter(|k| **k <= *t).count() as f64))
            .collect();
        out.push(Series {
            metric: "kube_pod_container_status_restarts_total",
            labels: base(),
            samples: restarts,
        });
        if let Some(first) = c.oom_kills.iter().min() {
            let mut l = base();
            l.insert("reason", "OOMKilled".into());
            out.push(Series {
                metric: "kube_pod_container_status_last_terminated_reason",
                labels: l,
                samples: times
                    .iter()
                    .filter(|t| *t >= first)
                    .map(|t| (*t, 1.0))
                    .collect(),
            });
        }
        if let Some((kind, name)) = &c.owner
            && !out.iter().any(|s| {
                s.metric == "kube_pod_owner"
                    && s.labels.get("pod") == Some(&c.pod)
                    && s.labels.get("namespace") == Some(&c.namespace)
            })
        {
            let labels = BTreeMap::from([
                ("namespace", c.namespace.clone()),
                ("pod", c.pod.clone()),
                ("owner_kind", kind.clone()),
                ("owner_name", name.clone()),
                ("owner_is_controller", "true".to_owned()),
            ]);
            out.push(Series {
                metric: "kube_pod_owner",
                labels,
                samples: constant(1.0),
            });
        }
        out.push(Series {
            metric: "container_cpu_usage_seconds_total",
            labels: cadvisor(),
            samples: cpu,
        });
        out.push(Series {
            metric: "container_memory_working_set_bytes",
            labels: cadvisor(),
            samples: ws,
        });
        out.push(Series {
            metric: "container_memory_rss",
            labels: cadvisor(),
            samples: rss,
        });
        out.push(Series {
            metric: "container_spec_memory_limit_bytes",
            labels: cadvisor(),
            samples: constant(c.memory.1.unwrap_or(0.0)),
        });
        for (metric, (cpu_v, mem_v)) in [
            (
                "kube_pod_container_resource_requests",
                (c.cpu.0, c.memory.0),
            ),
            ("kube_pod_container_resource_limits", (c.cpu.1, c.memory.1)),
        ] {
            for (resource, unit, v) in [("cpu", "core", cpu_v), ("memory", "byte", mem_v)] {
                if let Some(v) = v {
                    let mut l = base();
                    l.insert("node", c.node.clone());
                    l.insert("resource", resource.into());
                    l.insert("unit", unit.into());
                    out.push(Series {
                        metric,
                        labels: l,
                        samples: constant(v),
                    });
                }
            }
        }
    }
    out
}

/// `kube_replicaset_owner` for `replicasets` over the window.
pub fn replicaset_owners(
    replicasets: &[ReplicaSetOwner],
    start: i64,
    end: i64,
    step: i64,
) -> Vec<Series> {
    let step = step.max(1);
    replicasets
        .iter()
        .map(|r| Series {
            metric: "kube_replicaset_owner",
            labels: BTreeMap::from([
                ("namespace", r.namespace.clone()),
                ("replicaset", r.replicaset.clone()),
                ("owner_kind", r.owner_kind.clone()),
                ("owner_name", r.owner_name.clone()),
                ("owner_is_controller", "true".to_owned()),
            ]),
            samples: (0..)
                .map(|i| start + i * step)
                .take_while(|t| *t <= end)
                .map(|t| (t, 1.0))
                .collect(),
        })
        .collect()
}

/// Renders series as OpenMetrics text (families contiguous, ending in `# EOF`).
pub fn openmetrics(series: &[Series]) -> String {
    let mut out = String::new();
    for (family, kind) in FAMILIES {
        let _ = writeln!(out, "# TYPE {family} {kind}");
        for s in series.iter().filter(|s| s.metric == family) {
            write_series(&mut out, s);
        }
    }
    out.push_str("# EOF\n");
    out
}

fn write_series(out: &mut String, s: &Series) {
    let labels = s
        .labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect::<Vec<_>>()
        .join(",");
    for (t, v) in &s.samples {
        let _ = writeln!(out, "{}{{{labels}}} {v} {t}", s.metric);
    }
}

/// Streams the OpenMetrics text of `containers` and `replicasets` to `out`, holding one
/// container's series in memory at a time (for histories too large for a string).
pub fn write_openmetrics(
    containers: &[HistoryContainer],
    replicasets: &[ReplicaSetOwner],
    (start, end, step): (i64, i64, i64),
    out: &mut dyn std::io::Write,
) -> std::io::Result<()> {
    let mut buf = String::new();
    for (family, kind) in FAMILIES {
        writeln!(out, "# TYPE {family} {kind}")?;
        let series: Box<dyn Iterator<Item = Vec<Series>>> = if family == "kube_replicaset_owner" {
            Box::new(std::iter::once(replicaset_owners(
                replicasets,
                start,
                end,
                step,
            )))
        } else {
            Box::new(
                containers
                    .iter()
                    .map(|c| generate(std::slice::from_ref(c), start, end, step)),
            )
        };
        for batch in series {
            for s in batch.iter().filter(|s| s.metric == family) {
                buf.clear();
                write_series(&mut buf, s);
                out.write_all(buf.as_bytes())?;
            }
        }
    }
    out.write_all(b"# EOF\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::usage::Bytes;

    #[test]
    fn counters_accumulate_and_limits_cap() {
        let c = HistoryContainer {
            namespace: "ns".into(),
            pod: "p".into(),
            container: "c".into(),
            image: "i".into(),
            node: "n".into(),
            model: Model::Constant {
                cpu: 0.5,
                memory: Bytes(300.0),
                noise: 0.0,
            },
            seed: 1,
            trace: None,
            cpu: (Some(0.1), Some(0.25)),
            memory: (Some(100.0), Some(200.0)),
            owner: None,
            lifetime: None,
            oom_kills: vec![],
        };
        let s = generate(&[c], 0, 120, 60);
        let find = |m: &str| s.iter().find(|x| x.metric == m).unwrap();
        let cpu = find("container_cpu_usage_seconds_total");
        assert_eq!(
            cpu.samples,
            vec![(0, 0.0), (60, 15.0), (120, 30.0)],
            "0.25 cores (throttled) x 60 s"
        );
        assert_eq!(
            find("container_memory_working_set_bytes").samples[0].1,
            200.0,
            "memory capped at the limit"
        );
        let text = openmetrics(&s);
        assert!(text.ends_with("# EOF\n"));
        assert!(
            !text.lines().any(|l| l.starts_with("jvm_")),
            "no JVM series unless asked for: {text}"
        );
        assert!(text.contains("kube_pod_container_resource_limits{container=\"c\",namespace=\"ns\",node=\"n\",pod=\"p\",resource=\"cpu\",unit=\"core\"} 0.25 60"));
    }

    #[test]
    fn jvm_heap_series_per_pool() {
        let gi = 1024.0 * 1024.0 * 1024.0;
        let h = |metrics, container: Option<&str>| JvmHeap {
            namespace: "ns".into(),
            pod: "p".into(),
            container: container.map(Into::into),
            metrics,
            lifetime: Some((60, 120)),
        };
        let s = jvm_heap(
            &[
                h(
                    JvmHeapMetrics::Micrometer(vec![
                        ("G1 Eden Space".into(), -1.0),
                        ("G1 Old Gen".into(), 2.0 * gi),
                    ]),
                    None,
                ),
                h(JvmHeapMetrics::ClientJava(gi), Some("app")),
            ],
            0,
            180,
            60,
        );
        let text = openmetrics(&s);
        assert!(text.contains("jvm_memory_max_bytes{area=\"heap\",id=\"G1 Eden Space\",instance=\"p:8080\",namespace=\"ns\",pod=\"p\"} -1 60\n"), "{text}");
        assert!(text.contains("jvm_memory_max_bytes{area=\"heap\",id=\"G1 Old Gen\",instance=\"p:8080\",namespace=\"ns\",pod=\"p\"} 2147483648 120\n"), "{text}");
        assert!(
            text.contains("jvm_memory_max_bytes{area=\"nonheap\",id=\"Metaspace\""),
            "{text}"
        );
        assert!(text.contains("jvm_memory_bytes_max{area=\"heap\",container=\"app\",instance=\"p:8080\",namespace=\"ns\",pod=\"p\"} 1073741824 60\n"), "{text}");
        assert!(
            !text.contains(" 0\n") && !text.contains(" 180\n"),
            "only within the lifetime: {text}"
        );
    }
}
