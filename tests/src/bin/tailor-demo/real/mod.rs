//! `make demo-real-node`: the demo's workloads on a real kubelet + containerd + runc on this
//! machine ([`tailor_e2e::real_node`]), so the cgroups can be seen to change.
//!
//! - The same workloads, kinds, VerticalAutoscaler policies and usage models as `make demo`,
//!   with their CPU requests, limits and usage multiplied by `--cpu-scale` (default
//!   [`CPU_SCALE`]): the simulator's nodes have 8 cores, this machine may have 2, shared with the
//!   API server, Prometheus and tailor. Memory is real-sized (the workloads use about 2.5 GiB
//!   at first, 4.5 GiB once the `orders` heaps have grown).
//! - Each container's load follows its model: every few seconds the demo samples the pod's
//!   usage annotation as the simulator does and writes it into the container's load file.
//! - Prometheus scrapes the real kubelet's `/metrics/cadvisor` with the labels of a
//!   kube-prometheus cluster, and the kube-state-metrics series from [`kube_state`].
//! - Every settled change of a container's cgroup files is printed with the files before and
//!   after, its containerID and restartCount.

mod adapt;
mod cgroups;
mod expected;
mod kube_state;
mod load;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use tailor_e2e::ControlPlane;
use tailor_e2e::real_node::{NODE_NAME, RealNode};

use crate::history::History;
use crate::services::{Stack, target};
use crate::workloads::Workload;
use crate::{Args, Error, NS, finish, setup, step, wait_for};
use cgroups::Watch;

/// The default factor for the workloads' CPU: 1/20, so that their requests (9.5 cores on the
/// simulator) fit 2 cores and their use (about 9 cores) stays under half a core.
pub const CPU_SCALE: f64 = 0.05;

/// What the demo runs on the real node beside its own work.
struct OnNode<'a> {
    node: &'a RealNode,
    watch: &'a Mutex<Watch>,
}

pub async fn run(args: &Args) -> Result<(), Error> {
    let started = Instant::now();
    if !(args.cpu_scale > 0.0 && args.cpu_scale <= 1.0) {
        return Err(format!("--cpu-scale {} is not in (0, 1]", args.cpu_scale).into());
    }
    step("starting kube-apiserver and etcd");
    let cp = ControlPlane::start().await?;
    step(
        "starting the real node: containerd, runc and a kubelet v1.35 (one per machine: waits for any other)",
    );
    let node = RealNode::start(&cp).await?;
    let client = cp.client();
    let list = adapt::workloads(crate::workloads::workloads(), args.cpu_scale)?;
    describe_node(&client, &list, args.cpu_scale).await?;
    let watch = Mutex::new(Watch::default());
    let background = load::drive(&node, &client, &watch);
    let demo = demo(
        args,
        (&cp, started),
        &list,
        OnNode {
            node: &node,
            watch: &watch,
        },
    );
    tokio::select! {
        result = demo => result,
        e = background => Err(e),
    }
}

/// Prints the node's allocatable resources and what is scaled; fails when the pods' CPU
/// requests do not fit.
async fn describe_node(client: &kube::Client, list: &[Workload], scale: f64) -> Result<(), Error> {
    let n = Api::<Node>::all(client.clone()).get(NODE_NAME).await?;
    let alloc = n.status.and_then(|s| s.allocatable).unwrap_or_default();
    let cpu = alloc.get("cpu").map(|q| q.0.clone()).unwrap_or_default();
    let memory = alloc.get("memory").map(|q| q.0.clone()).unwrap_or_default();
    let requested = adapt::cpu_requests(list);
    step(&format!(
        "node {NODE_NAME}: allocatable cpu {cpu}, memory {memory}; the workloads' CPU requests, limits and usage are scaled by {scale} (1/{:.0} of `make demo`'s), {requested}m requested in all; memory is real-sized",
        1.0 / scale
    ));
    let allocatable = tailor_crds::quantity::cpu_millis(
        &k8s_openapi::apimachinery::pkg::api::resource::Quantity(cpu),
    )?;
    if requested > allocatable {
        return Err(format!(
            "the pods request {requested}m CPU, more than the node's {allocatable}m: lower --cpu-scale"
        )
        .into());
    }
    Ok(())
}

async fn demo(
    args: &Args,
    (cp, started): (&ControlPlane, Instant),
    list: &[Workload],
    n: OnNode<'_>,
) -> Result<(), Error> {
    let client = cp.client();
    setup::namespace(&client).await?;
    let mut created = BTreeMap::new();
    let spec = |pod: &str, c: &serde_json::Value| adapt::pod_spec(n.node, pod, c);
    for w in list {
        created.insert(w.name, setup::create(&client, w, &spec).await?);
    }
    let total: usize = list.iter().map(|w| w.replicas).sum();
    let running = setup::wait_running(&client, total, true, Duration::from_secs(180)).await?;
    let original = setup::uids(&running);
    step(&format!(
        "{total} pods running on {NODE_NAME} in namespace {NS}"
    ));
    print!("{}", baseline(&n, total).await);

    let history = History::new(list, &created, &running, Vec::new(), args.days)?;
    let dir = tempfile::Builder::new().prefix("tailor-demo-").tempdir()?;
    let kube_state = kube_state::serve(client.clone()).await?;
    let targets = vec![
        n.node.scrape_target(),
        target("kube-state-metrics", kube_state.address.clone(), "/metrics"),
    ];
    let stack = Stack::start(cp, list, (history, targets), dir.path()).await?;

    let outcome = wait_for(Duration::from_secs(args.timeout), || {
        expected::real((&client, &stack.prom), list, &original, n.watch)
    })
    .await;
    let extra = by_hand(&n);
    finish(args, cp, list, &stack, (outcome, started, extra)).await
}

/// The containers' cgroup files once every pod's have been read.
async fn baseline(n: &OnNode<'_>, total: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut out = String::new();
    while Instant::now() < deadline {
        let complete = n.watch.lock().is_ok_and(|w| w.last.len() >= total);
        if complete {
            break;
        }
        tokio::time::sleep(load::PERIOD).await;
    }
    let files = cgroups::files();
    let _ = writeln!(
        out,
        "\nThe containers' cgroup files now ({}); each change is printed when the kubelet has applied it:",
        files.map(|(_, f)| f).join(", ")
    );
    if let Ok(w) = n.watch.lock() {
        for (pod, s) in &w.last {
            let _ = writeln!(
                out,
                "  {pod:<22} restartCount {}  {}  {}",
                s.restart_count,
                s.values.join("  "),
                s.container_id
            );
        }
    }
    out
}

/// How to look at the cgroups by hand.
fn by_hand(n: &OnNode<'_>) -> String {
    let mut out = String::from(
        "\n\nThe cgroup files, to read by hand (the changes seen are printed above, as they happened):\n",
    );
    let files = cgroups::files();
    if let Ok(w) = n.watch.lock() {
        for (pod, s) in &w.last {
            let _ = writeln!(out, "  {pod} ({})", s.container_id);
            for dir in cgroups::dirs(n.node, &s.container_id) {
                let here: Vec<&str> = files
                    .iter()
                    .filter(|(h, _)| {
                        dir.starts_with(std::path::Path::new("/sys/fs/cgroup").join(h))
                    })
                    .map(|(_, f)| *f)
                    .collect();
                let _ = writeln!(out, "    cd {} && cat {}", dir.display(), here.join(" "));
            }
        }
    }
    let _ = write!(
        out,
        "  a pod's containerID: kubectl -n {NS} get pod POD -o jsonpath='{{.status.containerStatuses[0].containerID}}'\n  the node's logs: {}/logs/",
        n.node.dir().display()
    );
    out
}
