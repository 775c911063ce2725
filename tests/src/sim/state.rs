//! The simulated kubelets' state machine. Pure: it observes API objects and the clock, and
//! produces pod statuses and effects (bindings, deletions, events) for the runtime to write.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Container, Pod};
use serde_json::{Value, json};

use super::config::{NodeSpec, SimConfig};
use super::kubelet::{Admission, Amounts, NodeBook, PendingResize, retry_order};
use super::usage::{Model, PodUsage, Trace, USAGE_ANNOTATION, Usage, container_seed};

/// The kubelet's crash-loop back-off: initial, maximum, and quiet time that resets it.
const INITIAL_BACKOFF_SECONDS: f64 = 10.0;
const MAX_BACKOFF_SECONDS: f64 = 300.0;
const BACKOFF_RESET_SECONDS: f64 = 600.0;
/// CFS period: 100 ms.
const CFS_PERIOD_SECONDS: f64 = 0.1;
/// The share of the working set reported as RSS (the rest is active page cache).
pub const RSS_SHARE: f64 = 0.85;

/// Something the runtime must do against the API server.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// `POST pods/binding`.
    Bind {
        /// Namespace.
        namespace: String,
        /// Pod.
        name: String,
        /// Node.
        node: String,
    },
    /// Delete the pod now (its graceful termination is over).
    Delete {
        /// Namespace.
        namespace: String,
        /// Pod.
        name: String,
        /// UID precondition.
        uid: String,
    },
    /// An Event on the pod.
    Event {
        /// Namespace.
        namespace: String,
        /// Pod.
        name: String,
        /// UID.
        uid: String,
        /// `Normal` or `Warning`.
        type_: &'static str,
        /// Reason.
        reason: &'static str,
        /// Message.
        message: String,
    },
}

/// Requests and limits of a container, in millicores and bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Resources {
    /// CPU request.
    pub cpu_request: Option<i64>,
    /// CPU limit.
    pub cpu_limit: Option<i64>,
    /// Memory request.
    pub memory_request: Option<i64>,
    /// Memory limit.
    pub memory_limit: Option<i64>,
}

impl Resources {
    fn of(c: &Container) -> Self {
        type List = BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>;
        fn get<'a>(
            m: Option<&'a List>,
            r: &str,
        ) -> Option<&'a k8s_openapi::apimachinery::pkg::api::resource::Quantity> {
            m.and_then(|m| m.get(r))
        }
        let res = c.resources.as_ref();
        let req = res.and_then(|r| r.requests.as_ref());
        let lim = res.and_then(|r| r.limits.as_ref());
        // Malformed quantities cannot pass the API server; treat them as unset.
        Self {
            cpu_request: get(req, "cpu").and_then(|q| tailor_crds::quantity::cpu_millis(q).ok()),
            cpu_limit: get(lim, "cpu").and_then(|q| tailor_crds::quantity::cpu_millis(q).ok()),
            memory_request: get(req, "memory")
                .and_then(|q| tailor_crds::quantity::memory_bytes(q).ok()),
            memory_limit: get(lim, "memory")
                .and_then(|q| tailor_crds::quantity::memory_bytes(q).ok()),
        }
    }

    fn requests(&self) -> Amounts {
        Amounts::new(
            self.cpu_request.unwrap_or(0),
            self.memory_request.unwrap_or(0),
        )
    }

    fn json(&self) -> Value {
        let mut requests = serde_json::Map::new();
        let mut limits = serde_json::Map::new();
        if let Some(c) = self.cpu_request {
            requests.insert(
                "cpu".into(),
                json!(tailor_crds::quantity::format_cpu_millis(c).0),
            );
        }
        if let Some(m) = self.memory_request {
            requests.insert(
                "memory".into(),
                json!(tailor_crds::quantity::format_memory_bytes(m).0),
            );
        }
        if let Some(c) = self.cpu_limit {
            limits.insert(
                "cpu".into(),
                json!(tailor_crds::quantity::format_cpu_millis(c).0),
            );
        }
        if let Some(m) = self.memory_limit {
            limits.insert(
                "memory".into(),
                json!(tailor_crds::quantity::format_memory_bytes(m).0),
            );
        }
        let mut out = serde_json::Map::new();
        if !requests.is_empty() {
            out.insert("requests".into(), Value::Object(requests));
        }
        if !limits.is_empty() {
            out.insert("limits".into(), Value::Object(limits));
        }
        Value::Object(out)
    }
}

/// How a container's last run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Terminated {
    /// `OOMKilled`, ...
    pub reason: &'static str,
    /// Exit code.
    pub exit_code: i32,
    /// Start of that run (unix seconds).
    pub started_at: f64,
    /// End of that run.
    pub finished_at: f64,
}

/// A simulated container.
#[derive(Debug, Clone)]
pub struct ContainerSim {
    /// Name.
    pub name: String,
    /// Image.
    pub image: String,
    model: Model,
    seed: u64,
    trace: Option<Arc<Trace>>,
    /// What the spec asks for.
    pub desired: Resources,
    /// What the runtime applied (`status.containerStatuses[].resources`).
    pub actual: Resources,
    /// Admitted requests (`allocatedResources`).
    pub allocated: Resources,
    restart_cpu: bool,
    restart_memory: bool,
    /// Start of the current run (unix seconds).
    pub started_at: f64,
    /// Restarts.
    pub restart_count: i32,
    /// The previous run's end.
    pub last_terminated: Option<Terminated>,
    /// CPU seconds used by the current run (a cAdvisor counter: resets on restart).
    pub cpu_seconds: f64,
    /// CFS periods of the current run.
    pub cfs_periods: f64,
    /// Throttled CFS periods of the current run.
    pub cfs_throttled: f64,
    /// The last usage sampled (CPU after throttling).
    pub usage: Usage,
    /// Crash-loop back-off before the next restart (0: none recorded).
    backoff: f64,
    /// When the back-off was last extended.
    backoff_updated: f64,
    /// Set while the container waits out its back-off (`CrashLoopBackOff`).
    pub waiting_until: Option<f64>,
    /// The readiness probe's `initialDelaySeconds`: after each start the container is not
    /// Ready for this long.
    ready_delay: f64,
    /// The readiness probe has passed since the container last started.
    pub ready: bool,
}

/// Where a resize stands.
#[derive(Debug, Clone, PartialEq)]
pub enum ResizeState {
    /// Nothing pending.
    Idle,
    /// `PodResizePending` reason `Deferred`.
    Deferred {
        /// The kubelet's message.
        message: String,
        /// When first deferred.
        since: f64,
    },
    /// `PodResizePending` reason `Infeasible`.
    Infeasible {
        /// The kubelet's message.
        message: String,
    },
    /// `PodResizeInProgress`.
    InProgress {
        /// When actuation completes (after a failure: the next pod sync).
        until: f64,
        /// The failure the status reports (reason `Error`): the kubelet writes it one pod
        /// sync after the failing one.
        error: Option<String>,
        /// The last failure seen, reported or not (its `ResizeError` Event is recorded at once).
        failed: Option<String>,
    },
}

/// A simulated pod.
#[derive(Debug, Clone)]
pub struct PodSim {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID.
    pub uid: String,
    /// Node.
    pub node: String,
    /// `metadata.generation` last seen.
    pub generation: i64,
    priority: i32,
    /// `status.qosClass`.
    pub qos: String,
    pod_ip: String,
    start_time: f64,
    /// Whether every container is ready (the pod's Ready condition), and since when it has
    /// been so (its `lastTransitionTime`; the start time until the first change).
    ready: bool,
    ready_changed: f64,
    /// Containers.
    pub containers: Vec<ContainerSim>,
    /// The resize state.
    pub resize: ResizeState,
    /// Set when the kubelet refused the pod (phase Failed).
    pub rejected: Option<(String, String)>,
    /// `(owner kind, owner name)` of the controlling owner.
    pub owner: Option<(String, String)>,
    resize_generation: i64,
    /// The usage annotation the models were read from.
    usage_annotation: Option<String>,
}

impl PodSim {
    /// When the pod last became Ready (Unix seconds), while it is.
    pub fn ready_since(&self) -> Option<f64> {
        self.ready.then_some(self.ready_changed)
    }

    /// `status.podIP`.
    pub fn pod_ip(&self) -> &str {
        &self.pod_ip
    }

    fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    fn requests(&self, pick: impl Fn(&ContainerSim) -> Resources) -> Amounts {
        self.containers.iter().fold(Amounts::default(), |acc, c| {
            let r = pick(c).requests();
            Amounts::new(acc.cpu + r.cpu, acc.memory + r.memory)
        })
    }
}

struct NodeState {
    spec: NodeSpec,
    book: NodeBook,
    index: usize,
    next_ip: u32,
    retry_deferred: bool,
    next_retry: Option<f64>,
}

/// Counters for benchmarks and the simulator's own metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Pods started (status Running written).
    pub pods_started: u64,
    /// Resizes admitted.
    pub resizes_admitted: u64,
    /// Resizes actuated (finished).
    pub resizes_completed: u64,
    /// Resizes deferred.
    pub resizes_deferred: u64,
    /// Resizes found infeasible.
    pub resizes_infeasible: u64,
    /// OOM kills.
    pub oom_kills: u64,
}

/// The state of every simulated node and pod.
pub struct SimState {
    seed: u64,
    scheduler_name: Option<String>,
    actuation_delay: f64,
    deferred_retry: f64,
    deferred_retry_period: f64,
    pod_sync_backoff: f64,
    nodes: BTreeMap<String, NodeState>,
    pods: HashMap<String, PodSim>,
    unscheduled: BTreeMap<String, (Amounts, String)>,
    dirty: BTreeSet<String>,
    effects: Vec<Effect>,
    traces: HashMap<PathBuf, Arc<Trace>>,
    replicaset_owners: HashMap<(String, String), Option<(String, String)>>,
    last_tick: Option<f64>,
    /// Counters.
    pub stats: Stats,
}

impl std::fmt::Debug for SimState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimState")
            .field("nodes", &self.nodes.len())
            .field("pods", &self.pods.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

fn key_of(pod: &Pod) -> (String, String, String) {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    (format!("{ns}/{name}"), ns, name)
}

fn rfc3339(t: f64) -> String {
    let secs = t.floor() as i64;
    chrono_like(secs)
}

/// Formats unix seconds as RFC 3339 UTC without a date library.
fn chrono_like(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

impl SimState {
    /// An empty state for `config`'s nodes.
    pub fn new(config: &SimConfig, nodes: &[NodeSpec]) -> Self {
        Self {
            seed: config.seed,
            scheduler_name: config.scheduler_name.clone(),
            actuation_delay: config.actuation_delay_seconds,
            deferred_retry: config.deferred_retry_seconds,
            deferred_retry_period: config.deferred_retry_period_seconds,
            pod_sync_backoff: config.pod_sync_backoff_seconds,
            nodes: nodes
                .iter()
                .enumerate()
                .map(|(index, spec)| {
                    (
                        spec.name.clone(),
                        NodeState {
                            book: NodeBook::new(spec.allocatable, spec.pods),
                            spec: spec.clone(),
                            index,
                            next_ip: 2,
                            retry_deferred: false,
                            next_retry: None,
                        },
                    )
                })
                .collect(),
            pods: HashMap::new(),
            unscheduled: BTreeMap::new(),
            dirty: BTreeSet::new(),
            effects: Vec::new(),
            traces: HashMap::new(),
            replicaset_owners: HashMap::new(),
            last_tick: None,
            stats: Stats::default(),
        }
    }

    /// Registers a loaded trace for `Model::Trace` paths.
    pub fn add_trace(&mut self, path: PathBuf, trace: Arc<Trace>) {
        self.traces.insert(path, trace);
    }

    /// Whether a trace for `path` is loaded.
    pub fn has_trace(&self, path: &std::path::Path) -> bool {
        self.traces.contains_key(path)
    }

    /// The simulated pods.
    pub fn pods(&self) -> impl Iterator<Item = &PodSim> {
        self.pods.values()
    }

    /// A simulated pod by `namespace/name`.
    pub fn pod(&self, key: &str) -> Option<&PodSim> {
        self.pods.get(key)
    }

    /// The node a simulated pod runs on.
    pub fn node_names(&self) -> impl Iterator<Item = &str> {
        self.nodes.keys().map(String::as_str)
    }

    /// The nodes in name order, each with its address (its pods' `hostIP`).
    pub fn nodes(&self) -> impl Iterator<Item = (&NodeSpec, String)> {
        self.nodes
            .values()
            .map(|n| (&n.spec, super::scrape::node_ip(n.index)))
    }

    /// The address of `node` (its pods' `hostIP`).
    pub fn node_ip(&self, node: &str) -> Option<String> {
        self.nodes
            .get(node)
            .map(|n| super::scrape::node_ip(n.index))
    }

    /// `(replicaset namespace, name) -> owner`.
    pub fn replicaset_owners(
        &self,
    ) -> impl Iterator<Item = (&(String, String), &Option<(String, String)>)> {
        self.replicaset_owners.iter()
    }

    /// Records a ReplicaSet's controlling owner (for `kube_replicaset_owner`).
    pub fn observe_replicaset(
        &mut self,
        namespace: &str,
        name: &str,
        owner: Option<(String, String)>,
    ) {
        self.replicaset_owners
            .insert((namespace.to_owned(), name.to_owned()), owner);
    }

    /// Forgets a ReplicaSet.
    pub fn forget_replicaset(&mut self, namespace: &str, name: &str) {
        self.replicaset_owners
            .remove(&(namespace.to_owned(), name.to_owned()));
    }

    /// Takes the effects produced so far.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    /// Takes the pods whose status changed, with the status to write.
    pub fn take_dirty(&mut self) -> Vec<(String, String, Value)> {
        let keys = std::mem::take(&mut self.dirty);
        keys.into_iter()
            .filter_map(|k| {
                let p = self.pods.get(&k)?;
                Some((p.namespace.clone(), p.name.clone(), self.status(p)))
            })
            .collect()
    }

    /// Marks a pod's status for rewriting (after a failed write).
    pub fn mark_dirty(&mut self, key: &str) {
        if self.pods.contains_key(key) {
            self.dirty.insert(key.to_owned());
        }
    }

    /// Observes a pod added or changed in the API.
    pub fn observe_pod(&mut self, pod: &Pod, now: f64) {
        let (key, namespace, name) = key_of(pod);
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let spec = match &pod.spec {
            Some(s) => s,
            None => return,
        };
        if pod.metadata.deletion_timestamp.is_some() {
            self.unscheduled.remove(&key);
            if let Some(p) = self.pods.remove(&key) {
                self.release(&p);
            }
            if spec
                .node_name
                .as_ref()
                .is_some_and(|n| self.nodes.contains_key(n))
            {
                self.effects.push(Effect::Delete {
                    namespace,
                    name,
                    uid,
                });
            }
            return;
        }
        let Some(node) = spec.node_name.clone() else {
            let ours = match &self.scheduler_name {
                Some(s) => {
                    spec.scheduler_name
                        .as_deref()
                        .unwrap_or("default-scheduler")
                        == s
                }
                None => true,
            };
            if ours && !self.unscheduled.contains_key(&key) {
                let total = spec.containers.iter().fold(Amounts::default(), |acc, c| {
                    let r = Resources::of(c).requests();
                    Amounts::new(acc.cpu + r.cpu, acc.memory + r.memory)
                });
                self.unscheduled.insert(key, (total, uid));
                self.schedule();
            }
            return;
        };
        if !self.nodes.contains_key(&node) {
            return;
        }
        let generation = pod.metadata.generation.unwrap_or(1);
        match self.pods.get(&key) {
            None => self.admit(pod, key, namespace, name, uid, node, generation, now),
            Some(p) if generation > p.generation => self.spec_changed(&key, pod, generation, now),
            Some(p) if usage_annotation(pod) != p.usage_annotation => self.usage_changed(&key, pod),
            Some(_) => {}
        }
    }

    /// Observes a pod deleted from the API.
    pub fn forget_pod(&mut self, namespace: &str, name: &str) {
        let key = format!("{namespace}/{name}");
        self.unscheduled.remove(&key);
        if let Some(p) = self.pods.remove(&key) {
            self.release(&p);
        }
        self.dirty.remove(&key);
    }

    fn release(&mut self, p: &PodSim) {
        if let Some(n) = self.nodes.get_mut(&p.node) {
            n.book.release(&p.key());
            // A pod left: deferred resizes may fit now, unscheduled pods too.
            n.retry_deferred = true;
        }
        self.schedule();
    }

    /// First-fit scheduling of unscheduled pods, in name order.
    fn schedule(&mut self) {
        let waiting: Vec<(String, Amounts, String)> = self
            .unscheduled
            .iter()
            .map(|(k, (a, uid))| (k.clone(), *a, uid.clone()))
            .collect();
        for (key, requests, _uid) in waiting {
            let Some(node) = self.nodes.values_mut().find(|n| n.book.fits_new(requests)) else {
                continue;
            };
            node.book.allocate(&key, requests);
            let node_name = node.spec.name.clone();
            self.unscheduled.remove(&key);
            if let Some((namespace, name)) = key.split_once('/') {
                self.effects.push(Effect::Bind {
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                    node: node_name,
                });
            }
        }
    }

    /// A binding failed: give the node room back and try again later.
    pub fn binding_failed(&mut self, namespace: &str, name: &str, node: &str) {
        let key = format!("{namespace}/{name}");
        if let Some(n) = self.nodes.get_mut(node)
            && !self.pods.contains_key(&key)
        {
            n.book.release(&key);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn admit(
        &mut self,
        pod: &Pod,
        key: String,
        namespace: String,
        name: String,
        uid: String,
        node: String,
        generation: i64,
        now: f64,
    ) {
        let spec = pod
            .spec
            .as_ref()
            .map(|s| s.containers.clone())
            .unwrap_or_default();
        let usage_json = usage_annotation(pod);
        let usage = usage_json.as_deref().map(PodUsage::parse);
        let usage = match usage {
            None => PodUsage::default(),
            Some(Ok(u)) => u,
            Some(Err(e)) => {
                self.effects.push(Effect::Event {
                    namespace: namespace.clone(),
                    name: name.clone(),
                    uid: uid.clone(),
                    type_: "Warning",
                    reason: "InvalidUsageModel",
                    message: format!("{e}; running with the default model (half the requests)"),
                });
                PodUsage::default()
            }
        };
        let containers: Vec<ContainerSim> = spec
            .iter()
            .map(|c| {
                let res = Resources::of(c);
                let model = usage.model(&c.name).cloned().unwrap_or_else(|| {
                    Model::fallback(
                        res.cpu_request.map(|m| m as f64 / 1000.0),
                        res.memory_request.map(|b| b as f64),
                    )
                });
                let trace = match &model {
                    Model::Trace { path, .. } => self.traces.get(path).cloned(),
                    _ => None,
                };
                let policy = |resource: &str| {
                    c.resize_policy.as_ref().is_some_and(|ps| {
                        ps.iter().any(|p| {
                            p.resource_name == resource && p.restart_policy == "RestartContainer"
                        })
                    })
                };
                ContainerSim {
                    name: c.name.clone(),
                    image: c.image.clone().unwrap_or_default(),
                    seed: container_seed(self.seed, &namespace, &name, &c.name),
                    model,
                    trace,
                    desired: res,
                    actual: res,
                    allocated: res,
                    restart_cpu: policy("cpu"),
                    restart_memory: policy("memory"),
                    started_at: now,
                    restart_count: 0,
                    last_terminated: None,
                    cpu_seconds: 0.0,
                    cfs_periods: 0.0,
                    cfs_throttled: 0.0,
                    usage: Usage::default(),
                    backoff: 0.0,
                    backoff_updated: 0.0,
                    waiting_until: None,
                    ready_delay: c
                        .readiness_probe
                        .as_ref()
                        .and_then(|p| p.initial_delay_seconds)
                        .map_or(0.0, f64::from),
                    ready: c
                        .readiness_probe
                        .as_ref()
                        .and_then(|p| p.initial_delay_seconds)
                        .is_none_or(|d| d <= 0),
                }
            })
            .collect();
        let owner = pod.metadata.owner_references.as_ref().and_then(|refs| {
            refs.iter()
                .find(|r| r.controller == Some(true))
                .map(|r| (r.kind.clone(), r.name.clone()))
        });
        let qos = pod
            .status
            .as_ref()
            .and_then(|s| s.qos_class.clone())
            .unwrap_or_else(|| "BestEffort".into());
        let Some(n) = self.nodes.get_mut(&node) else {
            return;
        };
        let mut sim = PodSim {
            namespace,
            name,
            uid,
            node: node.clone(),
            generation,
            priority: pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0),
            qos,
            pod_ip: format!("10.244.{}.{}", n.index % 256, n.next_ip % 256),
            start_time: now,
            ready: containers.iter().all(|c| c.ready),
            ready_changed: now,
            containers,
            resize: ResizeState::Idle,
            rejected: None,
            owner,
            resize_generation: generation,
            usage_annotation: usage_json,
        };
        n.next_ip += 1;
        let requests = sim.requests(|c| c.desired);
        if n.book.allocation(&key).is_none() {
            // Bound by someone else: the kubelet's own admission.
            if n.book.fits_new(requests) {
                n.book.allocate(&key, requests);
            } else {
                let free = Amounts::new(
                    n.book.allocatable().cpu - n.book.used().cpu,
                    n.book.allocatable().memory - n.book.used().memory,
                );
                let resource = if requests.cpu > free.cpu {
                    "cpu"
                } else if requests.memory > free.memory {
                    "memory"
                } else {
                    "pods"
                };
                sim.rejected = Some((
                    format!("Out{resource}"),
                    format!("Pod was rejected: Node didn't have enough resource: {resource}"),
                ));
            }
        } else {
            n.book.allocate(&key, requests);
        }
        if sim.rejected.is_none() {
            self.stats.pods_started += 1;
        }
        self.dirty.insert(key.clone());
        self.pods.insert(key, sim);
    }

    /// The usage annotation of a running pod changed: its containers use the new models from
    /// now on (their runs go on).
    fn usage_changed(&mut self, key: &str, pod: &Pod) {
        let Some(p) = self.pods.get_mut(key) else {
            return;
        };
        let json = usage_annotation(pod);
        p.usage_annotation = json.clone();
        let usage = match json.as_deref().map(PodUsage::parse) {
            None => PodUsage::default(),
            Some(Ok(u)) => u,
            Some(Err(e)) => {
                self.effects.push(Effect::Event {
                    namespace: p.namespace.clone(),
                    name: p.name.clone(),
                    uid: p.uid.clone(),
                    type_: "Warning",
                    reason: "InvalidUsageModel",
                    message: format!("{e}; the containers keep their models"),
                });
                return;
            }
        };
        for c in &mut p.containers {
            c.model = usage.model(&c.name).cloned().unwrap_or_else(|| {
                Model::fallback(
                    c.desired.cpu_request.map(|m| m as f64 / 1000.0),
                    c.desired.memory_request.map(|b| b as f64),
                )
            });
            c.trace = match &c.model {
                Model::Trace { path, .. } => self.traces.get(path).cloned(),
                _ => None,
            };
        }
    }

    fn spec_changed(&mut self, key: &str, pod: &Pod, generation: i64, now: f64) {
        let Some(p) = self.pods.get_mut(key) else {
            return;
        };
        p.generation = generation;
        self.dirty.insert(key.to_owned());
        if p.rejected.is_some() {
            return;
        }
        let spec = pod
            .spec
            .as_ref()
            .map(|s| s.containers.clone())
            .unwrap_or_default();
        let mut changed = false;
        for c in &mut p.containers {
            if let Some(sc) = spec.iter().find(|s| s.name == c.name) {
                let want = Resources::of(sc);
                if want != c.desired {
                    c.desired = want;
                    changed = true;
                }
            }
        }
        if !changed {
            return;
        }
        p.resize_generation = generation;
        p.resize = ResizeState::Idle;
        self.try_resize(key, now, true);
    }

    /// Admission of a pod's pending resize. `fresh`: first attempt for this generation (events).
    fn try_resize(&mut self, key: &str, now: f64, fresh: bool) {
        let Some(p) = self.pods.get_mut(key) else {
            return;
        };
        let Some(n) = self.nodes.get_mut(&p.node) else {
            return;
        };
        let want = p.requests(|c| c.desired);
        if p.containers.iter().all(|c| c.desired == c.actual) {
            p.resize = ResizeState::Idle;
            n.book.allocate(key, want);
            return;
        }
        let event = |reason: &'static str, type_: &'static str, message: String| Effect::Event {
            namespace: p.namespace.clone(),
            name: p.name.clone(),
            uid: p.uid.clone(),
            type_,
            reason,
            message,
        };
        match n.book.check_resize(key, want) {
            Admission::Admit => {
                n.book.allocate(key, want);
                for c in &mut p.containers {
                    c.allocated = c.desired;
                }
                p.resize = ResizeState::InProgress {
                    until: now + self.actuation_delay,
                    error: None,
                    failed: None,
                };
                self.stats.resizes_admitted += 1;
                let summary = resize_summary(p, p.resize_generation, None);
                self.effects.push(event(
                    "ResizeStarted",
                    "Normal",
                    format!("Pod resize started: {summary}"),
                ));
            }
            Admission::Deferred(message) => {
                let since = match &p.resize {
                    ResizeState::Deferred { since, .. } => *since,
                    _ => now,
                };
                if fresh
                    || !matches!(&p.resize, ResizeState::Deferred { message: m, .. } if *m == message)
                {
                    self.stats.resizes_deferred += 1;
                    let summary = resize_summary(p, p.resize_generation, Some(&message));
                    self.effects.push(event(
                        "ResizeDeferred",
                        "Warning",
                        format!("Pod resize Deferred: {summary}"),
                    ));
                }
                p.resize = ResizeState::Deferred { message, since };
            }
            Admission::Infeasible(message) => {
                self.stats.resizes_infeasible += 1;
                let summary = resize_summary(p, p.resize_generation, Some(&message));
                self.effects.push(event(
                    "ResizeInfeasible",
                    "Warning",
                    format!("Pod resize Infeasible: {summary}"),
                ));
                p.resize = ResizeState::Infeasible { message };
            }
        }
        self.dirty.insert(key.to_owned());
    }

    /// Advances the clock to `now`: retries deferred resizes, finishes actuations, samples
    /// usage, throttles CPU and OOM-kills containers over their memory limit.
    pub fn tick(&mut self, now: f64) {
        let dt = self.last_tick.map_or(0.0, |t| (now - t).max(0.0));
        self.last_tick = Some(now);

        // Deferred resizes: retried when something changed on the node, or on the timer.
        let mut retry_nodes = BTreeSet::new();
        // The kubelet's timer: first after the initial delay, then a longer period after any
        // retry.
        for (name, n) in &mut self.nodes {
            let next = *n.next_retry.get_or_insert(now + self.deferred_retry);
            if n.retry_deferred || now >= next {
                n.retry_deferred = false;
                n.next_retry = Some(now + self.deferred_retry_period);
                retry_nodes.insert(name.clone());
            }
        }
        if !retry_nodes.is_empty() {
            let mut pending: Vec<PendingResize> = self
                .pods
                .values()
                .filter(|p| retry_nodes.contains(&p.node))
                .filter_map(|p| match &p.resize {
                    ResizeState::Deferred { since, .. } => Some(PendingResize {
                        pod: p.key(),
                        increases_requests: p
                            .requests(|c| c.desired)
                            .exceeds_any(p.requests(|c| c.allocated)),
                        priority: p.priority,
                        guaranteed: p.qos == "Guaranteed",
                        since: (*since * 1000.0) as u64,
                    }),
                    _ => None,
                })
                .collect();
            pending.sort_by(retry_order);
            for r in pending {
                self.try_resize(&r.pod, now, false);
            }
        }

        let keys: Vec<String> = self.pods.keys().cloned().collect();
        for key in keys {
            self.tick_pod(&key, now, dt);
        }
    }

    fn tick_pod(&mut self, key: &str, now: f64, dt: f64) {
        let Some(p) = self.pods.get_mut(key) else {
            return;
        };
        if p.rejected.is_some() {
            return;
        }
        let mut changed = false;
        let mut resized = false;
        if let ResizeState::InProgress { until, .. } = p.resize
            && now >= until
        {
            // Actuation: a memory limit below current usage is not applied (NotRequired
            // policy). The kubelet records a ResizeError Event in the failing sync, writes
            // reason Error at the next one (its pod workers' back-off later) and retries then.
            if let Some(message) = memory_decrease_error(p) {
                let (error, failed) = match &p.resize {
                    ResizeState::InProgress { error, failed, .. } => {
                        (error.clone(), failed.clone())
                    }
                    _ => (None, None),
                };
                if failed.as_ref() != Some(&message) {
                    let summary = resize_summary(p, p.resize_generation, Some(&message));
                    self.effects.push(Effect::Event {
                        namespace: p.namespace.clone(),
                        name: p.name.clone(),
                        uid: p.uid.clone(),
                        type_: "Warning",
                        reason: "ResizeError",
                        message: format!("Pod resize error: {summary}"),
                    });
                }
                let error = if failed.is_some() {
                    Some(message.clone())
                } else {
                    error
                };
                changed = error != p_error(&p.resize);
                p.resize = ResizeState::InProgress {
                    until: now + self.pod_sync_backoff,
                    error,
                    failed: Some(message),
                };
            } else {
                for c in &mut p.containers {
                    let memory_changed = c.desired.memory_limit != c.actual.memory_limit
                        || c.desired.memory_request != c.actual.memory_request;
                    let cpu_changed = c.desired.cpu_limit != c.actual.cpu_limit
                        || c.desired.cpu_request != c.actual.cpu_request;
                    if (memory_changed && c.restart_memory) || (cpu_changed && c.restart_cpu) {
                        self.effects.push(Effect::Event {
                            namespace: p.namespace.clone(),
                            name: p.name.clone(),
                            uid: p.uid.clone(),
                            type_: "Normal",
                            reason: "Killing",
                            message: format!("Container {} resize requires restart", c.name),
                        });
                        restart(c, now, None);
                    }
                    c.actual = c.desired;
                }
                let summary = resize_summary(p, p.resize_generation, None);
                self.effects.push(Effect::Event {
                    namespace: p.namespace.clone(),
                    name: p.name.clone(),
                    uid: p.uid.clone(),
                    type_: "Normal",
                    reason: "ResizeCompleted",
                    message: format!("Pod resize completed: {summary}"),
                });
                p.resize = ResizeState::Idle;
                self.stats.resizes_completed += 1;
                changed = true;
                resized = true;
            }
        }

        for c in &mut p.containers {
            if !c.ready && c.waiting_until.is_none() && now >= c.started_at + c.ready_delay {
                // The readiness probe passes once its initial delay is over.
                c.ready = true;
                changed = true;
            }
            if let Some(until) = c.waiting_until {
                if now < until {
                    continue;
                }
                // The back-off is over: the container starts again.
                c.waiting_until = None;
                c.started_at = now;
                c.ready = c.ready_delay <= 0.0;
                c.backoff = (c.backoff * 2.0).min(MAX_BACKOFF_SECONDS);
                c.backoff_updated = now;
                changed = true;
            }
            let demand = c
                .model
                .sample(now, now - c.started_at, c.seed, c.trace.as_deref());
            let limit = c.actual.cpu_limit.map(|m| m as f64 / 1000.0);
            let cpu = match limit {
                Some(l) if demand.cpu > l => l,
                _ => demand.cpu,
            };
            let periods = dt / CFS_PERIOD_SECONDS;
            if limit.is_some() {
                c.cfs_periods += periods;
                if demand.cpu > cpu {
                    c.cfs_throttled += periods;
                }
            }
            c.cpu_seconds += cpu * dt;
            c.usage = Usage {
                cpu,
                memory: demand.memory,
            };
            if let Some(limit) = c.actual.memory_limit
                && demand.memory > limit as f64
            {
                let base = c.model.sample(now, 0.0, c.seed, c.trace.as_deref());
                restart(
                    c,
                    now,
                    Some(Terminated {
                        reason: "OOMKilled",
                        exit_code: 137,
                        started_at: c.started_at,
                        finished_at: now,
                    }),
                );
                c.usage = Usage {
                    cpu: 0.0,
                    memory: base.memory,
                };
                // The kubelet's crash-loop back-off: the first restart is immediate, later
                // ones wait 10 s doubling to 5 min; forgotten after 10 min without a crash.
                if c.backoff > 0.0 && now - c.backoff_updated > BACKOFF_RESET_SECONDS {
                    c.backoff = 0.0;
                }
                if c.backoff == 0.0 {
                    c.backoff = INITIAL_BACKOFF_SECONDS;
                    c.backoff_updated = now;
                } else {
                    c.waiting_until = Some(now + c.backoff);
                    c.usage = Usage::default();
                    self.effects.push(Effect::Event {
                        namespace: p.namespace.clone(),
                        name: p.name.clone(),
                        uid: p.uid.clone(),
                        type_: "Warning",
                        reason: "BackOff",
                        message: format!(
                            "Back-off restarting failed container {} in pod {}_{}({})",
                            c.name, p.name, p.namespace, p.uid
                        ),
                    });
                }
                self.stats.oom_kills += 1;
                changed = true;
            }
        }
        let all_ready = p
            .containers
            .iter()
            .all(|c| c.ready && c.waiting_until.is_none());
        if all_ready != p.ready {
            p.ready = all_ready;
            p.ready_changed = now;
            changed = true;
        }
        let node = p.node.clone();
        if changed {
            self.dirty.insert(key.to_owned());
        }
        if resized && let Some(n) = self.nodes.get_mut(&node) {
            n.retry_deferred = true;
        }
    }

    /// The pod status the kubelet would write.
    pub fn status(&self, p: &PodSim) -> Value {
        let start = rfc3339(p.start_time);
        let host_ip = self.node_ip(&p.node).unwrap_or_default();
        if let Some((reason, message)) = &p.rejected {
            return json!({
                "phase": "Failed", "reason": reason, "message": message,
                "startTime": start, "observedGeneration": p.generation,
            });
        }
        let unready: Vec<&str> = p
            .containers
            .iter()
            .filter(|c| c.waiting_until.is_some() || !c.ready)
            .map(|c| c.name.as_str())
            .collect();
        // Ready and ContainersReady change when the containers' readiness does (their
        // lastTransitionTime); the others hold from the start.
        let changed = rfc3339(p.ready_changed);
        let ready = |t: &str| {
            if !matches!(t, "Ready" | "ContainersReady") {
                json!({"type": t, "status": "True", "lastTransitionTime": start, "observedGeneration": p.generation})
            } else if unready.is_empty() {
                json!({"type": t, "status": "True", "lastTransitionTime": changed, "observedGeneration": p.generation})
            } else {
                json!({"type": t, "status": "False", "reason": "ContainersNotReady",
                       "message": format!("containers with unready status: [{}]", unready.join(" ")),
                       "lastTransitionTime": changed, "observedGeneration": p.generation})
            }
        };
        // The kubelet's order: resize conditions, then its standard conditions.
        let mut conditions = Vec::new();
        match &p.resize {
            ResizeState::Idle => {}
            ResizeState::Deferred { message, since } => conditions.push(json!({
                "type": "PodResizePending", "status": "True", "reason": "Deferred", "message": message,
                "lastTransitionTime": rfc3339(*since), "lastProbeTime": null, "observedGeneration": p.resize_generation,
            })),
            ResizeState::Infeasible { message } => conditions.push(json!({
                "type": "PodResizePending", "status": "True", "reason": "Infeasible", "message": message,
                "lastTransitionTime": start, "lastProbeTime": null, "observedGeneration": p.resize_generation,
            })),
            ResizeState::InProgress { error, .. } => {
                let mut c = json!({
                    "type": "PodResizeInProgress", "status": "True",
                    "lastTransitionTime": start, "lastProbeTime": null, "observedGeneration": p.resize_generation,
                });
                if let Some(message) = error {
                    c["reason"] = json!("Error");
                    c["message"] = json!(message);
                }
                conditions.push(c);
            }
        }
        for t in [
            "PodReadyToStartContainers",
            "Initialized",
            "Ready",
            "ContainersReady",
            "PodScheduled",
        ] {
            conditions.push(ready(t));
        }
        let statuses: Vec<Value> = p
            .containers
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut s = json!({
                    "name": c.name,
                    "image": c.image,
                    "imageID": format!("sim://{}", c.image),
                    "containerID": format!("sim://{}-{}-{}", p.uid, i, c.restart_count),
                    "ready": c.waiting_until.is_none() && c.ready,
                    "started": c.waiting_until.is_none(),
                    "restartCount": c.restart_count,
                    "state": match c.waiting_until {
                        None => json!({"running": {"startedAt": rfc3339(c.started_at)}}),
                        Some(_) => json!({"waiting": {
                            "reason": "CrashLoopBackOff",
                            "message": format!(
                                "back-off {} restarting failed container={} pod={}_{}({})",
                                go_duration(c.backoff), c.name, p.name, p.namespace, p.uid
                            ),
                        }}),
                    },
                    "allocatedResources": c.allocated.json().get("requests").cloned().unwrap_or(json!({})),
                    "resources": c.actual.json(),
                });
                if let Some(t) = &c.last_terminated {
                    s["lastState"] = json!({"terminated": {
                        "reason": t.reason, "exitCode": t.exit_code,
                        "startedAt": rfc3339(t.started_at), "finishedAt": rfc3339(t.finished_at),
                        "containerID": format!("sim://{}-{}-{}", p.uid, i, c.restart_count - 1),
                    }});
                }
                s
            })
            .collect();
        json!({
            "phase": "Running",
            "conditions": conditions,
            "hostIP": host_ip,
            "hostIPs": [{"ip": host_ip}],
            "podIP": p.pod_ip,
            "podIPs": [{"ip": p.pod_ip}],
            "startTime": start,
            "qosClass": p.qos,
            "observedGeneration": p.generation,
            "containerStatuses": statuses,
        })
    }
}

/// The reported failure of a resize in progress.
fn p_error(r: &ResizeState) -> Option<String> {
    match r {
        ResizeState::InProgress { error, .. } => error.clone(),
        _ => None,
    }
}

/// The kubelet's `validateMemoryResizeAction` for a pod whose memory limits go down in place:
/// the pod check, then the container check, both printing the pod's usage.
fn memory_decrease_error(p: &PodSim) -> Option<String> {
    let c = p.containers.iter().find(|c| {
        !c.restart_memory
            && matches!((c.desired.memory_limit, c.actual.memory_limit), (Some(new), old) if old.is_none_or(|o| new < o) && (new as f64) < c.usage.memory)
    })?;
    let pod_usage: f64 = p.containers.iter().map(|c| c.usage.memory).sum();
    let mut errors = Vec::new();
    let pod_limit: Option<i64> = p.containers.iter().map(|c| c.desired.memory_limit).sum();
    if let Some(limit) = pod_limit
        && (limit as f64) < pod_usage
    {
        errors.push(format!(
            "attempting to set pod memory limit ({limit}) below current usage ({})",
            pod_usage as i64
        ));
    }
    errors.push(format!(
        "attempting to set container {:?} memory limit ({}) below current usage ({})",
        c.name,
        c.desired.memory_limit.unwrap_or(0),
        pod_usage as i64
    ));
    Some(if errors.len() == 1 {
        format!("cannot decrease memory limits: {}", errors[0])
    } else {
        format!("cannot decrease memory limits: [{}]", errors.join(", "))
    })
}

/// The usage annotation of a pod.
fn usage_annotation(pod: &Pod) -> Option<String> {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(USAGE_ANNOTATION))
        .cloned()
}

/// Formats seconds as Go's `time.Duration` does (`10s`, `1m20s`, `5m0s`).
fn go_duration(seconds: f64) -> String {
    let s = seconds.round() as i64;
    if s < 60 {
        format!("{s}s")
    } else {
        format!("{}m{}s", s / 60, s % 60)
    }
}

fn restart(c: &mut ContainerSim, now: f64, terminated: Option<Terminated>) {
    // A container stopped for a restart-requiring resize ends on SIGTERM (143, `Error`).
    c.last_terminated = Some(terminated.unwrap_or(Terminated {
        reason: "Error",
        exit_code: 143,
        started_at: c.started_at,
        finished_at: now,
    }));
    c.restart_count += 1;
    c.started_at = now;
    c.ready = c.ready_delay <= 0.0;
    c.cpu_seconds = 0.0;
    c.cfs_periods = 0.0;
    c.cfs_throttled = 0.0;
}

/// The kubelet's `podResourceSummary` JSON: the desired resources of every container, the
/// generation, and the error where there is one, in the kubelet's field order (containers,
/// generation, error: its struct's, not sorted).
fn resize_summary(p: &PodSim, generation: i64, error: Option<&str>) -> String {
    let containers: Vec<Value> = p
        .containers
        .iter()
        .map(|c| json!({"name": c.name, "resources": c.desired.json()}))
        .collect();
    let error = error.map_or_else(String::new, |e| format!(",\"error\":{}", json!(e)));
    format!(
        "{{\"containers\":{},\"generation\":{generation}{error}}}",
        Value::Array(containers)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const MI: f64 = 1024.0 * 1024.0;

    fn state() -> SimState {
        let config = SimConfig::uniform(1, "2", "4Gi");
        let nodes = config.node_specs().unwrap();
        SimState::new(&config, &nodes)
    }

    fn leaky_pod() -> Pod {
        // 100Mi at start, +100Mi per second, limit 150Mi: over the limit one second after
        // every start.
        let usage = json!({"app": {"model": "leak", "cpu": 0.1, "memory": "100Mi", "bytesPerHour": 100.0 * MI * 3600.0}});
        serde_json::from_value(json!({
            "metadata": {"name": "leaky", "namespace": "ns", "uid": "u-1", "generation": 1,
                         "annotations": {USAGE_ANNOTATION: usage.to_string()}},
            "spec": {"nodeName": "sim", "containers": [{"name": "app", "image": "i",
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "150Mi"}}}]},
            "status": {"qosClass": "Burstable"},
        }))
        .unwrap()
    }

    fn app(s: &SimState) -> &ContainerSim {
        &s.pod("ns/leaky").unwrap().containers[0]
    }

    #[test]
    fn repeated_oom_kills_back_off_like_the_kubelet() {
        let mut s = state();
        s.observe_pod(&leaky_pod(), 0.0);
        s.tick(0.0);
        s.tick(1.0);
        // First kill: restarted at once.
        assert_eq!(app(&s).restart_count, 1);
        assert_eq!(app(&s).waiting_until, None);
        assert_eq!(
            app(&s).last_terminated.as_ref().unwrap().reason,
            "OOMKilled"
        );
        s.tick(2.0);
        // Second kill: waits 10 s in CrashLoopBackOff, not ready.
        assert_eq!(app(&s).restart_count, 2);
        assert_eq!(app(&s).waiting_until, Some(12.0));
        s.tick(5.0);
        let status = s.status(s.pod("ns/leaky").unwrap());
        let c = &status["containerStatuses"][0];
        assert_eq!(c["state"]["waiting"]["reason"], "CrashLoopBackOff");
        assert_eq!(
            c["state"]["waiting"]["message"],
            "back-off 10s restarting failed container=app pod=leaky_ns(u-1)"
        );
        assert_eq!(c["ready"], false);
        let ready = status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .unwrap();
        assert_eq!(ready["status"], "False");
        assert_eq!(ready["message"], "containers with unready status: [app]");
        assert!(s.take_effects().iter().any(|e| matches!(
            e,
            Effect::Event {
                reason: "BackOff",
                ..
            }
        )));
        // Back-off over: runs again, and the next kill waits twice as long.
        s.tick(12.0);
        assert_eq!(app(&s).waiting_until, None);
        assert_eq!(app(&s).started_at, 12.0);
        s.tick(13.0);
        assert_eq!(app(&s).restart_count, 3);
        assert_eq!(app(&s).waiting_until, Some(33.0));
        // Ten quiet minutes forget the back-off.
        let mut s2 = state();
        s2.observe_pod(&leaky_pod(), 0.0);
        s2.tick(0.0);
        s2.tick(1.0);
        s2.tick(1.5);
        s2.tick(1000.0);
        assert_eq!(app(&s2).restart_count, 2);
        assert_eq!(
            app(&s2).waiting_until,
            None,
            "first kill after a quiet spell restarts at once"
        );
    }

    #[test]
    fn ready_changes_carry_their_own_transition_time_and_ready_time() {
        let mut s = state();
        let mut pod = holding_pod("64Mi", 1, "128Mi");
        pod.spec.as_mut().unwrap().containers[0].readiness_probe =
            Some(serde_json::from_value(json!({"initialDelaySeconds": 5})).unwrap());
        s.observe_pod(&pod, 100.0);
        s.tick(100.0);
        let condition = |s: &SimState, t: &str| {
            let status = s.status(s.pod("ns/leaky").unwrap());
            status["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["type"] == t)
                .unwrap()
                .clone()
        };
        let ready = condition(&s, "Ready");
        assert_eq!(ready["status"], "False");
        assert_eq!(ready["lastTransitionTime"], rfc3339(100.0));
        assert_eq!(s.pod("ns/leaky").unwrap().ready_since(), None);
        s.tick(106.0);
        for t in ["Ready", "ContainersReady"] {
            let c = condition(&s, t);
            assert_eq!(c["status"], "True", "{t}");
            assert_eq!(c["lastTransitionTime"], rfc3339(106.0), "{t}");
        }
        assert_eq!(
            condition(&s, "PodScheduled")["lastTransitionTime"],
            rfc3339(100.0)
        );
        assert_eq!(s.pod("ns/leaky").unwrap().ready_since(), Some(106.0));
        let mut out = String::new();
        crate::sim::metrics::kube_state(&s, &mut out);
        assert!(
            out.contains(
                "kube_pod_status_ready_time{namespace=\"ns\",pod=\"leaky\",uid=\"u-1\"} 106"
            ),
            "{out}"
        );
    }

    fn holding_pod(memory: &str, generation: i64, limit: &str) -> Pod {
        let usage = json!({"app": {"model": "constant", "cpu": 0.1, "memory": memory}});
        serde_json::from_value(json!({
            "metadata": {"name": "leaky", "namespace": "ns", "uid": "u-1", "generation": generation,
                         "annotations": {USAGE_ANNOTATION: usage.to_string()}},
            "spec": {"nodeName": "sim", "containers": [{"name": "app", "image": "i",
                "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": limit}}}]},
            "status": {"qosClass": "Burstable"},
        }))
        .unwrap()
    }

    fn resize_error(s: &SimState) -> (bool, Option<String>) {
        match &s.pod("ns/leaky").unwrap().resize {
            ResizeState::InProgress { error, .. } => (true, error.clone()),
            _ => (false, None),
        }
    }

    #[test]
    fn memory_limit_below_usage_reports_error_one_pod_sync_later_and_applies_when_usage_falls() {
        let mut s = state();
        s.observe_pod(&holding_pod("150Mi", 1, "256Mi"), 0.0);
        s.tick(0.0);
        s.tick(1.0);
        s.observe_pod(&holding_pod("150Mi", 2, "100Mi"), 1.0);
        s.take_effects();
        s.tick(2.5); // actuation: the check fails
        assert_eq!(resize_error(&s), (true, None), "no reason yet");
        let events = s.take_effects();
        assert!(
            events.iter().any(|e| matches!(
                e,
                Effect::Event {
                    reason: "ResizeError",
                    ..
                }
            )),
            "{events:?}"
        );
        s.tick(10.0);
        assert_eq!(
            resize_error(&s),
            (true, None),
            "still before the next pod sync"
        );
        s.tick(12.5);
        let (_, error) = resize_error(&s);
        assert!(
            error
                .as_deref()
                .is_some_and(|e| e.starts_with("cannot decrease memory limits: ")),
            "{error:?}"
        );
        assert_eq!(app(&s).actual.memory_limit, Some(256 << 20));
        // Usage falls (the annotation changes on the running pod): the next sync applies it.
        s.observe_pod(&holding_pod("20Mi", 2, "100Mi"), 13.0);
        s.tick(14.0);
        assert!(resize_error(&s).0, "not before the next pod sync");
        s.tick(22.5);
        assert_eq!(resize_error(&s), (false, None));
        assert_eq!(app(&s).actual.memory_limit, Some(100 << 20));
        assert_eq!(app(&s).restart_count, 0);
    }

    #[test]
    fn go_durations() {
        assert_eq!(go_duration(10.0), "10s");
        assert_eq!(go_duration(80.0), "1m20s");
        assert_eq!(go_duration(300.0), "5m0s");
    }

    #[test]
    fn formats_timestamps() {
        assert_eq!(chrono_like(0), "1970-01-01T00:00:00Z");
        assert_eq!(chrono_like(1_764_300_000), "2025-11-28T03:20:00Z");
        assert_eq!(chrono_like(951_782_400), "2000-02-29T00:00:00Z");
    }
}
