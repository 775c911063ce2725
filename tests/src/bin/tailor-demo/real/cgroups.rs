//! The containers' cgroup files, watched: each settled change (a resize applied live, or a
//! container restarted into new limits) is recorded with the files before and after.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Pod, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::ResourceExt;
use tailor_e2e::real_node::RealNode;

use crate::expected::{container_status, pod_condition};
use crate::history::{cores, quantity};

/// A cgroup file shown for each container: `(hierarchy, file)`.
type File = (&'static str, &'static str);

/// The files read: cgroup v1's, or their cgroup v2 counterparts.
pub fn files() -> [File; 3] {
    if Path::new("/sys/fs/cgroup/cgroup.controllers").is_file() {
        [("", "cpu.max"), ("", "cpu.weight"), ("", "memory.max")]
    } else {
        [
            ("cpu", "cpu.cfs_quota_us"),
            ("cpu", "cpu.shares"),
            ("memory", "memory.limit_in_bytes"),
        ]
    }
}

/// One container as the node runs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    pub container_id: String,
    pub restart_count: i32,
    /// The files' values, in the order of [`files`].
    pub values: Vec<String>,
    /// The resources the kubelet reports applied.
    pub applied: String,
}

impl Seen {
    /// The value of `file`.
    pub fn value(&self, file: &str) -> Option<&str> {
        let i = files().iter().position(|(_, f)| *f == file)?;
        self.values.get(i).map(String::as_str)
    }

    /// The first figure of `file` (`cpu.max` holds the quota, then the period).
    pub fn number(&self, file: &str) -> Option<i64> {
        self.value(file)?.split_whitespace().next()?.parse().ok()
    }
}

/// A change seen on a pod.
#[derive(Debug, Clone)]
pub struct Change {
    pub pod: String,
    pub before: Seen,
    pub after: Seen,
}

/// What the watch has seen: the last state of each pod, and the changes.
#[derive(Debug, Default)]
pub struct Watch {
    pub last: BTreeMap<String, Seen>,
    pub changes: Vec<Change>,
}

impl Watch {
    /// Records `pod`'s current state; returns the change from the last one, if any.
    pub fn observe(&mut self, node: &RealNode, pod: &Pod) -> Option<Change> {
        let now = seen(node, pod)?;
        let name = pod.name_any();
        // The first sight of a pod is its baseline.
        let last = self.last.insert(name.clone(), now.clone())?;
        if last.container_id == now.container_id && last.values == now.values {
            return None;
        }
        let change = Change {
            pod: name,
            before: last,
            after: now,
        };
        self.changes.push(change.clone());
        Some(change)
    }
}

/// The pod's first container, once it runs and no resize is under way: with its cgroup files
/// read, and its applied resources equal to the spec's (or the resize pending).
fn seen(node: &RealNode, pod: &Pod) -> Option<Seen> {
    let status = container_status(pod)?;
    status.state.as_ref()?.running.as_ref()?;
    if pod_condition(pod, "PodResizeInProgress") {
        return None;
    }
    let spec = pod.spec.as_ref()?.containers.first()?.resources.as_ref();
    let applied = status.resources.as_ref();
    if !pod_condition(pod, "PodResizePending") && !same(spec, applied) {
        return None;
    }
    let id = status.container_id.clone()?;
    let values = files()
        .iter()
        .map(|(hierarchy, file)| node.cgroup_value(hierarchy, &id, file))
        .collect::<Option<Vec<_>>>()?;
    Some(Seen {
        container_id: id,
        restart_count: status.restart_count,
        values,
        applied: describe(applied),
    })
}

/// Whether two sets of requests and limits are the same amounts.
fn same(a: Option<&ResourceRequirements>, b: Option<&ResourceRequirements>) -> bool {
    let amounts = |r: Option<&ResourceRequirements>| {
        let get = |m: Option<&BTreeMap<String, Quantity>>, k: &str| {
            let q = m?.get(k)?;
            let v = serde_json::Value::String(q.0.clone());
            if k == "cpu" { cores(&v) } else { quantity(&v) }
        };
        let (req, lim) = (
            r.and_then(|r| r.requests.as_ref()),
            r.and_then(|r| r.limits.as_ref()),
        );
        [
            get(req, "cpu"),
            get(req, "memory"),
            get(lim, "cpu"),
            get(lim, "memory"),
        ]
    };
    amounts(a) == amounts(b)
}

fn describe(r: Option<&ResourceRequirements>) -> String {
    let get = |m: Option<&BTreeMap<String, Quantity>>, k: &str| {
        m.and_then(|m| m.get(k))
            .map_or("-".to_owned(), |q| q.0.clone())
    };
    let (req, lim) = (
        r.and_then(|r| r.requests.as_ref()),
        r.and_then(|r| r.limits.as_ref()),
    );
    format!(
        "requests cpu {} memory {}, limits cpu {} memory {}",
        get(req, "cpu"),
        get(req, "memory"),
        get(lim, "cpu"),
        get(lim, "memory")
    )
}

/// A value with what it means.
fn explain(file: &str, value: &str) -> String {
    let Ok(n) = value.parse::<i64>() else {
        return value.to_owned();
    };
    let meaning = match file {
        "cpu.cfs_quota_us" if n < 0 => "no CPU limit".to_owned(),
        "cpu.cfs_quota_us" => format!("{}m CPU per 100 ms period", n / 100),
        "cpu.shares" => format!("the weight of a ~{}m request", (n * 1000 + 512) / 1024),
        "memory.limit_in_bytes" | "memory.max" if n >= 1 << 50 => "no limit".to_owned(),
        "memory.limit_in_bytes" | "memory.max" => format!("{} MiB", n >> 20),
        _ => return value.to_owned(),
    };
    format!("{value} ({meaning})")
}

/// The change as printed.
pub fn print_change(c: &Change) -> String {
    let mut out = String::new();
    let (b, a) = (&c.before, &c.after);
    let kind = if b.container_id == a.container_id {
        "resized live, same container"
    } else {
        "container restarted into new limits"
    };
    let _ = writeln!(out, "\ncgroups of pod {} changed: {kind}", c.pod);
    let _ = writeln!(
        out,
        "  applied:      {}\n            -> {}",
        b.applied, a.applied
    );
    let _ = writeln!(
        out,
        "  containerID:  {}\n            -> {}",
        b.container_id, a.container_id
    );
    let _ = writeln!(
        out,
        "  restartCount: {} -> {}",
        b.restart_count, a.restart_count
    );
    for (i, (_, file)) in files().iter().enumerate() {
        let (x, y) = (
            b.values.get(i).map_or("-", String::as_str),
            a.values.get(i).map_or("-", String::as_str),
        );
        let mark = if x == y { "  (same)" } else { "" };
        let _ = writeln!(
            out,
            "  {file:<22} {} -> {}{mark}",
            explain(file, x),
            explain(file, y)
        );
    }
    out
}

/// The cgroup directories of a pod's container, one per hierarchy read.
pub fn dirs(node: &RealNode, container_id: &str) -> Vec<PathBuf> {
    let mut hierarchies: Vec<&str> = files().iter().map(|(h, _)| *h).collect();
    hierarchies.dedup();
    hierarchies
        .iter()
        .filter_map(|h| node.cgroup_dir(h, container_id))
        .collect()
}
