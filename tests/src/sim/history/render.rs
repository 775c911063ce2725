//! OpenMetrics text of the history: families contiguous, each with its `# TYPE`, ending in
//! `# EOF`, as `promtool tsdb create-blocks-from openmetrics` reads it.

use std::fmt::Write as _;
use std::io::{Seek, Write};

use super::ksm::{HistoryNode, ReplicaSetOwner, node_status, replicaset_owners};
use super::{HistoryContainer, Series, Window, container_series};

/// Every family the history may hold, in the order written, with its type.
const FAMILIES: [(&str, &str); 20] = [
    ("container_cpu_usage_seconds_total", "counter"),
    ("container_memory_working_set_bytes", "gauge"),
    ("container_memory_rss", "gauge"),
    ("container_spec_memory_limit_bytes", "gauge"),
    ("container_cpu_cfs_periods_total", "counter"),
    ("container_cpu_cfs_throttled_periods_total", "counter"),
    ("kube_pod_container_resource_requests", "gauge"),
    ("kube_pod_container_resource_limits", "gauge"),
    ("kube_pod_container_status_restarts_total", "counter"),
    ("kube_pod_container_status_last_terminated_reason", "gauge"),
    ("kube_pod_owner", "gauge"),
    ("kube_pod_status_phase", "gauge"),
    ("kube_pod_labels", "gauge"),
    ("kube_pod_info", "gauge"),
    ("kube_pod_status_ready_time", "gauge"),
    ("kube_replicaset_owner", "gauge"),
    ("kube_node_status_capacity", "gauge"),
    ("kube_node_status_allocatable", "gauge"),
    ("jvm_memory_max_bytes", "gauge"),
    ("jvm_memory_bytes_max", "gauge"),
];

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

/// What a history is generated for.
#[derive(Debug, Clone, Copy, Default)]
pub struct Inventory<'a> {
    /// The containers (and, with the first container of each, their pods).
    pub containers: &'a [HistoryContainer],
    /// The ReplicaSets, for `kube_replicaset_owner`.
    pub replicasets: &'a [ReplicaSetOwner],
    /// The nodes, for their capacity and allocatable.
    pub nodes: &'a [HistoryNode],
}

/// Streams the OpenMetrics text of `inventory` over `window` to `out`, generating each
/// container once and holding one container's series in memory at a time (the families are
/// gathered in temporary files, then written one after the other).
pub fn write_openmetrics(
    inventory: &Inventory<'_>,
    window: Window,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let mut files = FAMILIES
        .iter()
        .map(|_| tempfile::tempfile().map(std::io::BufWriter::new))
        .collect::<std::io::Result<Vec<_>>>()?;
    let mut buf = String::new();
    let mut write = |series: Vec<Series>| -> std::io::Result<()> {
        for s in &series {
            let Some(i) = FAMILIES.iter().position(|(f, _)| *f == s.metric) else {
                continue;
            };
            buf.clear();
            write_series(&mut buf, s);
            files[i].write_all(buf.as_bytes())?;
        }
        Ok(())
    };
    let mut seen = std::collections::BTreeSet::new();
    for c in inventory.containers {
        let first = seen.insert((c.namespace.as_str(), c.pod.as_str()));
        write(container_series(c, first, &window))?;
    }
    let (start, end, interval) = (window.start, window.end, window.interval);
    write(window.emit(replicaset_owners(
        inventory.replicasets,
        start,
        end,
        interval,
    )))?;
    write(window.emit(node_status(inventory.nodes, start, end, interval)))?;
    for ((family, kind), file) in FAMILIES.iter().zip(files) {
        writeln!(out, "# TYPE {family} {kind}")?;
        let mut file = file.into_inner().map_err(|e| e.into_error())?;
        file.rewind()?;
        std::io::copy(&mut file, out)?;
    }
    out.write_all(b"# EOF\n")
}
