//! The simulator's I/O: Node objects and Leases, watches on pods and ReplicaSets, the clock,
//! writes of pod status, bindings, deletions and Events, and the metrics endpoint. All
//! decisions are made by [`SimState`].

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Binding, Event as CoreEvent, Node, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::watcher;
use serde_json::json;
use tokio::sync::Notify;
use tokio::task::JoinSet;

use super::config::{NodeSpec, SimConfig};
use super::state::{Effect, SimState};
use super::usage::{PodUsage, Trace, USAGE_ANNOTATION};
use super::{metrics, scrape};
use crate::prometheus::ScrapeTarget;
use crate::{HarnessError, Result};

const FIELD_MANAGER: &str = "tailor-sim";
const LEASE_RENEW: Duration = Duration::from_secs(10);
const NODE_STATUS_REPORT: Duration = Duration::from_secs(60);
const WRITE_CONCURRENCY: usize = 32;

/// A running simulator. Dropping it stops every task (Node objects stay).
#[derive(Debug)]
pub struct SimHandle {
    state: Arc<Mutex<SimState>>,
    metrics_addr: SocketAddr,
    tasks: JoinSet<()>,
}

impl SimHandle {
    /// Where `/metrics/cadvisor`, `/metrics/kube-state` and `/metrics` are served.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
    }

    /// What Prometheus scrapes here, as a kube-prometheus cluster's does (see [`scrape`]):
    /// each node's cAdvisor (`job="kubelet"`, `instance="<node IP>:10250"`, `node`,
    /// `metrics_path`, `endpoint`, `service`) and kube-state-metrics
    /// (`job="kube-state-metrics"`, `instance`). The backfilled history carries the same labels.
    pub fn scrape_targets(&self) -> Vec<ScrapeTarget> {
        let owned = |labels: Vec<(&str, String)>| {
            labels
                .into_iter()
                .filter(|(k, _)| *k != "job")
                .map(|(k, v)| (k.to_owned(), v))
                .collect()
        };
        let nodes: Vec<(String, String)> = lock(&self.state)
            .nodes()
            .map(|(spec, ip)| (spec.name.clone(), ip))
            .collect();
        let mut targets: Vec<ScrapeTarget> = nodes
            .iter()
            .map(|(node, ip)| ScrapeTarget {
                job: scrape::KUBELET_JOB.into(),
                address: self.metrics_addr.to_string(),
                metrics_path: scrape::CADVISOR_PATH.into(),
                labels: owned(scrape::kubelet_labels(node, ip)),
                params: vec![("node".into(), node.clone())],
                ..ScrapeTarget::default()
            })
            .collect();
        targets.push(ScrapeTarget {
            job: scrape::KSM_JOB.into(),
            address: self.metrics_addr.to_string(),
            metrics_path: scrape::KSM_PATH.into(),
            labels: owned(scrape::ksm_labels()),
            ..ScrapeTarget::default()
        });
        targets
    }

    /// Runs `f` on the state (for tests and benchmarks).
    pub fn with_state<T>(&self, f: impl FnOnce(&SimState) -> T) -> T {
        f(&lock(&self.state))
    }

    /// Stops the simulator.
    pub async fn shutdown(mut self) {
        self.tasks.shutdown().await;
    }
}

fn lock(state: &Mutex<SimState>) -> MutexGuard<'_, SimState> {
    // A panic while holding the lock leaves consistent-enough data for a simulator.
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// Starts the simulator: registers the nodes, then plays their kubelets until dropped.
pub async fn start(
    client: kube::Client,
    config: SimConfig,
    metrics_addr: SocketAddr,
) -> Result<SimHandle> {
    let nodes = config
        .node_specs()
        .map_err(|e| HarnessError::Other(e.to_string()))?;
    register_nodes(&client, &nodes).await?;
    let state = Arc::new(Mutex::new(SimState::new(&config, &nodes)));
    let wake = Arc::new(Notify::new());
    let mut tasks = JoinSet::new();

    let listener = tokio::net::TcpListener::bind(metrics_addr)
        .await
        .map_err(HarnessError::io(format!(
            "bind metrics address {metrics_addr}"
        )))?;
    let metrics_addr = listener
        .local_addr()
        .map_err(HarnessError::io("metrics address"))?;
    tasks.spawn(metrics::serve(listener, state.clone()));
    tasks.spawn(watch_pods(client.clone(), state.clone(), wake.clone()));
    tasks.spawn(watch_replicasets(client.clone(), state.clone()));
    tasks.spawn(clock(state.clone(), wake.clone(), config.tick()));
    tasks.spawn(write_loop(client.clone(), state.clone(), wake.clone()));
    tasks.spawn(heartbeats(client, nodes));
    Ok(SimHandle {
        state,
        metrics_addr,
        tasks,
    })
}

async fn register_nodes(client: &kube::Client, nodes: &[NodeSpec]) -> Result<()> {
    let api = Api::<Node>::all(client.clone());
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    futures::stream::iter(nodes)
        .map(|n| {
            let api = api.clone();
            let pp = pp.clone();
            async move {
                let mut labels = n.labels.clone();
                labels.insert("kubernetes.io/hostname".into(), n.name.clone());
                labels.insert("kubernetes.io/os".into(), "linux".into());
                labels.insert("kubernetes.io/arch".into(), "amd64".into());
                labels.insert("sim.tailor.dev/node".into(), "true".into());
                let node = json!({
                    "apiVersion": "v1", "kind": "Node",
                    "metadata": {"name": n.name, "labels": labels},
                });
                api.patch(&n.name, &pp, &Patch::Apply(node))
                    .await
                    .map_err(|e| HarnessError::Other(format!("register node {}: {e}", n.name)))?;
                api.patch_status(
                    &n.name,
                    &PatchParams::default(),
                    &Patch::Merge(node_status(n)),
                )
                .await
                .map_err(|e| HarnessError::Other(format!("node {} status: {e}", n.name)))?;
                Ok::<_, HarnessError>(())
            }
        })
        .buffer_unordered(WRITE_CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

fn node_status(n: &NodeSpec) -> serde_json::Value {
    let cpu = tailor_crds::quantity::format_cpu_millis(n.allocatable.cpu).0;
    let memory = tailor_crds::quantity::format_memory_bytes(n.allocatable.memory).0;
    let t = Time(chrono_now());
    let cond = |type_: &str, status: &str, reason: &str, message: &str| {
        json!({"type": type_, "status": status, "reason": reason, "message": message,
               "lastHeartbeatTime": t, "lastTransitionTime": t})
    };
    json!({"status": {
        "capacity": {"cpu": cpu, "memory": memory, "pods": n.pods.to_string()},
        "allocatable": {"cpu": cpu, "memory": memory, "pods": n.pods.to_string()},
        "conditions": [
            cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            cond("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
        ],
        "nodeInfo": {
            "machineID": n.name, "systemUUID": n.name, "bootID": n.name,
            "kernelVersion": "6.1.0-sim", "osImage": "tailor-sim", "containerRuntimeVersion": "sim://1.0",
            "kubeletVersion": "v1.35.4-sim", "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64",
        },
    }})
}

fn chrono_now() -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::now()
}

async fn heartbeats(client: kube::Client, nodes: Vec<NodeSpec>) {
    let leases = Api::<Lease>::namespaced(client.clone(), "kube-node-lease");
    let api = Api::<Node>::all(client);
    let mut last_report = None::<tokio::time::Instant>;
    loop {
        let report = last_report.is_none_or(|t| t.elapsed() >= NODE_STATUS_REPORT);
        futures::stream::iter(&nodes)
            .for_each_concurrent(WRITE_CONCURRENCY, |n| {
                let leases = leases.clone();
                let api = api.clone();
                async move {
                    let lease = json!({
                        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                        "metadata": {"name": n.name, "namespace": "kube-node-lease"},
                        "spec": {"holderIdentity": n.name, "leaseDurationSeconds": 40,
                                 "renewTime": MicroTime(chrono_now())},
                    });
                    if let Err(e) = leases
                        .patch(
                            &n.name,
                            &PatchParams::apply(FIELD_MANAGER).force(),
                            &Patch::Apply(lease),
                        )
                        .await
                    {
                        tracing::warn!(node = %n.name, error = %e, "lease renewal failed");
                    }
                    if report
                        && let Err(e) = api
                            .patch_status(
                                &n.name,
                                &PatchParams::default(),
                                &Patch::Merge(node_status(n)),
                            )
                            .await
                    {
                        tracing::warn!(node = %n.name, error = %e, "node status report failed");
                    }
                }
            })
            .await;
        if report {
            last_report = Some(tokio::time::Instant::now());
        }
        tokio::time::sleep(LEASE_RENEW).await;
    }
}

async fn watch_pods(client: kube::Client, state: Arc<Mutex<SimState>>, wake: Arc<Notify>) {
    let api = Api::<Pod>::all(client);
    let stream = watcher(api, watcher::Config::default().page_size(1000));
    futures::pin_mut!(stream);
    loop {
        match stream.next().await {
            Some(Ok(event)) => {
                match event {
                    watcher::Event::Apply(pod) | watcher::Event::InitApply(pod) => {
                        load_traces(&state, &pod);
                        lock(&state).observe_pod(&pod, now());
                    }
                    watcher::Event::Delete(pod) => {
                        let ns = pod.metadata.namespace.clone().unwrap_or_default();
                        let name = pod.metadata.name.clone().unwrap_or_default();
                        lock(&state).forget_pod(&ns, &name);
                    }
                    watcher::Event::Init | watcher::Event::InitDone => {}
                }
                wake.notify_one();
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "pod watch failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            None => return,
        }
    }
}

/// Loads the trace files a pod's usage models replay, once each.
fn load_traces(state: &Mutex<SimState>, pod: &Pod) {
    let Some(json) = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(USAGE_ANNOTATION))
    else {
        return;
    };
    let Ok(usage) = PodUsage::parse(json) else {
        return;
    };
    for path in usage.trace_paths() {
        if lock(state).has_trace(path) {
            continue;
        }
        match Trace::load(path) {
            Ok(trace) => lock(state).add_trace(path.to_owned(), trace),
            Err(e) => tracing::warn!(error = %e, "trace not loaded; the container uses zero usage"),
        }
    }
}

async fn watch_replicasets(client: kube::Client, state: Arc<Mutex<SimState>>) {
    let api = Api::<kube::core::PartialObjectMeta<ReplicaSet>>::all(client);
    let stream = watcher(api, watcher::Config::default());
    futures::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Apply(rs) | watcher::Event::InitApply(rs)) => {
                let owner = rs.metadata.owner_references.as_ref().and_then(|refs| {
                    refs.iter()
                        .find(|r| r.controller == Some(true))
                        .map(|r| (r.kind.clone(), r.name.clone()))
                });
                lock(&state).observe_replicaset(
                    rs.metadata.namespace.as_deref().unwrap_or_default(),
                    rs.metadata.name.as_deref().unwrap_or_default(),
                    owner,
                );
            }
            Ok(watcher::Event::Delete(rs)) => lock(&state).forget_replicaset(
                rs.metadata.namespace.as_deref().unwrap_or_default(),
                rs.metadata.name.as_deref().unwrap_or_default(),
            ),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "replicaset watch failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

async fn clock(state: Arc<Mutex<SimState>>, wake: Arc<Notify>, tick: Duration) {
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        lock(&state).tick(now());
        wake.notify_one();
    }
}

async fn write_loop(client: kube::Client, state: Arc<Mutex<SimState>>, wake: Arc<Notify>) {
    loop {
        wake.notified().await;
        loop {
            let (effects, statuses) = {
                let mut s = lock(&state);
                (s.take_effects(), s.take_dirty())
            };
            if effects.is_empty() && statuses.is_empty() {
                break;
            }
            futures::stream::iter(effects)
                .for_each_concurrent(WRITE_CONCURRENCY, |e| apply_effect(&client, &state, e))
                .await;
            let failed = std::sync::atomic::AtomicBool::new(false);
            futures::stream::iter(statuses)
                .for_each_concurrent(WRITE_CONCURRENCY, |(ns, name, status)| {
                    let client = client.clone();
                    let (state, failed) = (state.clone(), &failed);
                    async move {
                        let api = Api::<Pod>::namespaced(client, &ns);
                        match api
                            .patch_status(&name, &PatchParams::default(), &Patch::Merge(json!({"status": status})))
                            .await
                        {
                            Ok(_) => {}
                            // Gone: the watch will tell the state.
                            Err(kube::Error::Api(s)) if s.code == 404 => {}
                            Err(e) => {
                                tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "status write failed; retrying");
                                lock(&state).mark_dirty(&format!("{ns}/{name}"));
                                failed.store(true, std::sync::atomic::Ordering::Relaxed);
                            }
                        }
                    }
                })
                .await;
            // A failed write is retried after a pause, not at once: with the API server gone
            // (a test tearing down) the loop would otherwise spin and never yield.
            if failed.load(std::sync::atomic::Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

async fn apply_effect(client: &kube::Client, state: &Mutex<SimState>, effect: Effect) {
    match effect {
        Effect::Bind {
            namespace,
            name,
            node,
        } => {
            let api = Api::<Pod>::namespaced(client.clone(), &namespace);
            let binding = Binding {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(namespace.clone()),
                    ..Default::default()
                },
                target: ObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Node".into()),
                    name: Some(node.clone()),
                    ..Default::default()
                },
            };
            let result: std::result::Result<serde_json::Value, _> = api
                .create_subresource("binding", &name, &PostParams::default(), &binding)
                .await;
            if let Err(e) = result {
                tracing::warn!(pod = %format!("{namespace}/{name}"), %node, error = %e, "binding failed");
                lock(state).binding_failed(&namespace, &name, &node);
            }
        }
        Effect::Delete {
            namespace,
            name,
            uid,
        } => {
            let api = Api::<Pod>::namespaced(client.clone(), &namespace);
            let dp = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid: Some(uid),
                    resource_version: None,
                }),
                ..Default::default()
            };
            if let Err(e) = api.delete(&name, &dp).await
                && !matches!(&e, kube::Error::Api(s) if s.code == 404 || s.code == 409)
            {
                tracing::warn!(pod = %format!("{namespace}/{name}"), error = %e, "delete failed");
            }
        }
        Effect::Event {
            namespace,
            name,
            uid,
            type_,
            reason,
            message,
        } => {
            let node = lock(state)
                .pod(&format!("{namespace}/{name}"))
                .map(|p| p.node.clone())
                .unwrap_or_default();
            let t = Time(chrono_now());
            let event = CoreEvent {
                metadata: ObjectMeta {
                    generate_name: Some(format!("{name}.")),
                    namespace: Some(namespace.clone()),
                    ..Default::default()
                },
                involved_object: ObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: Some(name.clone()),
                    namespace: Some(namespace.clone()),
                    uid: Some(uid),
                    ..Default::default()
                },
                reason: Some(reason.into()),
                message: Some(message),
                type_: Some(type_.into()),
                count: Some(1),
                first_timestamp: Some(t.clone()),
                last_timestamp: Some(t),
                source: Some(k8s_openapi::api::core::v1::EventSource {
                    component: Some("kubelet".into()),
                    host: Some(node.clone()),
                }),
                reporting_component: Some("kubelet".into()),
                reporting_instance: Some(node),
                ..Default::default()
            };
            if let Err(e) = Api::<CoreEvent>::namespaced(client.clone(), &namespace)
                .create(&PostParams::default(), &event)
                .await
            {
                tracing::warn!(pod = %format!("{namespace}/{name}"), %reason, error = %e, "event not recorded");
            }
        }
    }
}
