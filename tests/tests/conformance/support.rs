//! What a scenario needs from a node, the same for the simulator and the real kubelet.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ContainerStatus, Event, Node, Pod, PodCondition};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};
use tailor_e2e::real_node::{IMAGE, RealNode};

/// Which kubelet runs the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `tailor-sim`.
    Sim,
    /// containerd + runc + kubelet v1.35.
    Real,
}

/// One scenario's view of the node: a namespace of its own on it.
pub struct Target<'a> {
    pub kind: Kind,
    pub client: kube::Client,
    pub ns: String,
    pub node: String,
    pub real: Option<&'a RealNode>,
}

/// A container: requests and limits (`cpu`, `memory`), its memory resize policy, and the load
/// its workload starts with (millicores, bytes).
pub struct Ctr {
    pub name: &'static str,
    pub requests: (&'static str, &'static str),
    pub limits: (&'static str, &'static str),
    pub restart_on_memory: bool,
    pub load: (i64, i64),
}

pub const MI: i64 = 1 << 20;

impl Ctr {
    pub fn new(
        requests: (&'static str, &'static str),
        limits: (&'static str, &'static str),
    ) -> Self {
        Self {
            name: "c1",
            requests,
            limits,
            restart_on_memory: false,
            load: (10, 16 * MI),
        }
    }

    pub fn load(mut self, memory: i64) -> Self {
        self.load.1 = memory;
        self
    }

    pub fn restart_on_memory(mut self) -> Self {
        self.restart_on_memory = true;
        self
    }
}

fn sim_usage(milli_cpu: i64, memory: i64) -> Value {
    json!({"model": "constant", "cpu": milli_cpu as f64 / 1000.0, "memory": memory})
}

impl Target<'_> {
    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// The node's allocatable (millicores, bytes).
    pub async fn allocatable(&self) -> (i64, i64) {
        let node = Api::<Node>::all(self.client.clone())
            .get(&self.node)
            .await
            .unwrap();
        let a = node.status.unwrap().allocatable.unwrap();
        (milli(&a["cpu"].0), bytes(&a["memory"].0))
    }

    /// The node's capacity (millicores, bytes).
    pub async fn capacity(&self) -> (i64, i64) {
        let node = Api::<Node>::all(self.client.clone())
            .get(&self.node)
            .await
            .unwrap();
        let a = node.status.unwrap().capacity.unwrap();
        (milli(&a["cpu"].0), bytes(&a["memory"].0))
    }

    /// Creates the pod on the node and waits until every container runs.
    pub async fn run_pod(&self, name: &str, containers: &[Ctr]) -> Pod {
        let mut specs = Vec::new();
        let mut usage = serde_json::Map::new();
        let mut volumes = Vec::new();
        for c in containers {
            let mut policy = vec![json!({"resourceName": "cpu", "restartPolicy": "NotRequired"})];
            policy.push(json!({"resourceName": "memory", "restartPolicy":
                if c.restart_on_memory { "RestartContainer" } else { "NotRequired" }}));
            specs.push(json!({
                "name": c.name, "image": IMAGE, "imagePullPolicy": "Never",
                "resources": {
                    "requests": {"cpu": c.requests.0, "memory": c.requests.1},
                    "limits": {"cpu": c.limits.0, "memory": c.limits.1},
                },
                "resizePolicy": policy,
                "volumeMounts": [{"name": format!("ctl-{}", c.name), "mountPath": "/ctl"}],
            }));
            usage.insert(c.name.into(), sim_usage(c.load.0, c.load.1));
            let path = match self.real {
                Some(r) => {
                    r.set_load(&self.ns, name, c.name, c.load.0, c.load.1)
                        .unwrap();
                    r.ctl_dir(&self.ns, name, c.name).display().to_string()
                }
                None => format!("/nonexistent/{name}/{}", c.name),
            };
            volumes.push(json!({"name": format!("ctl-{}", c.name), "hostPath": {"path": path, "type": "Directory"}}));
        }
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "annotations": {
                "sim.tailor.dev/usage": Value::Object(usage).to_string()}},
            "spec": {
                "nodeName": self.node, "hostNetwork": true, "automountServiceAccountToken": false,
                "terminationGracePeriodSeconds": 2,
                "containers": specs, "volumes": volumes,
            },
        }))
        .unwrap();
        self.pods()
            .create(&PostParams::default(), &pod)
            .await
            .unwrap();
        self.wait_for(name, "running", Duration::from_secs(90), |p| {
            let s = p.status.as_ref();
            s.and_then(|s| s.phase.as_deref()) == Some("Running")
                && s.and_then(|s| s.container_statuses.as_ref())
                    .is_some_and(|cs| {
                        cs.len() == containers.len()
                            && cs
                                .iter()
                                .all(|c| c.state.as_ref().is_some_and(|st| st.running.is_some()))
                    })
        })
        .await
    }

    /// Sets what a container uses from now on.
    pub async fn set_load(&self, pod: &str, container: &str, milli_cpu: i64, memory: i64) {
        match self.real {
            Some(r) => r
                .set_load(&self.ns, pod, container, milli_cpu, memory)
                .unwrap(),
            None => {
                let usage = json!({container: sim_usage(milli_cpu, memory)}).to_string();
                self.pods()
                    .patch(
                        pod,
                        &PatchParams::default(),
                        &Patch::Merge(
                            json!({"metadata": {"annotations": {"sim.tailor.dev/usage": usage}}}),
                        ),
                    )
                    .await
                    .unwrap();
            }
        }
    }

    /// Resizes one container through the `resize` subresource.
    pub async fn resize(&self, pod: &str, container: &str, resources: Value) -> Pod {
        self.pods()
            .patch_resize(
                pod,
                &PatchParams::default(),
                &Patch::Strategic(
                    json!({"spec": {"containers": [{"name": container, "resources": resources}]}}),
                ),
            )
            .await
            .unwrap()
    }

    pub async fn delete(&self, pod: &str) {
        self.pods()
            .delete(pod, &DeleteParams::default().grace_period(0))
            .await
            .unwrap();
    }

    pub async fn wait_for(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        check: impl Fn(&Pod) -> bool,
    ) -> Pod {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(p) = self.pods().get(name).await
                && check(&p)
            {
                return p;
            }
            if Instant::now() > deadline {
                let p = self.pods().get(name).await.ok();
                panic!(
                    "{:?} {}/{name}: not {what} after {timeout:?}: {:#?}",
                    self.kind,
                    self.ns,
                    p.and_then(|p| p.status)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Records every version of the pod from now on.
    /// Records every version of the pod from now on; returns once the watch has delivered the
    /// current one, so no later write can be missed.
    pub async fn record(&self, name: &str) -> Recorder {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let out = seen.clone();
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let stream = watcher(self.pods(), config).applied_objects();
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(Ok(p)) = stream.next().await {
                out.lock().unwrap().push((Instant::now(), p));
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        while seen.lock().unwrap().is_empty() {
            assert!(Instant::now() < deadline, "no watch event for pod {name}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Recorder { seen, task }
    }

    /// The pod's events: `(reason, type, message)`, oldest first.
    pub async fn events(&self, pod: &str) -> Vec<(String, String, String)> {
        let mut list = Api::<Event>::namespaced(self.client.clone(), &self.ns)
            .list(&ListParams::default().fields(&format!("involvedObject.name={pod}")))
            .await
            .unwrap()
            .items;
        list.sort_by_key(|e| {
            e.first_timestamp
                .as_ref()
                .map(|t| t.0)
                .or_else(|| e.event_time.as_ref().map(|t| t.0))
        });
        list.into_iter()
            .map(|e| {
                (
                    e.reason.unwrap_or_default(),
                    e.type_.unwrap_or_default(),
                    e.message.unwrap_or_default(),
                )
            })
            .collect()
    }

    /// Waits for an Event `reason` on the pod and returns its messages.
    pub async fn wait_event(&self, pod: &str, reason: &str, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let found: Vec<String> = self
                .events(pod)
                .await
                .into_iter()
                .filter(|e| e.0 == reason)
                .map(|e| e.2)
                .collect();
            if !found.is_empty() {
                return found;
            }
            if Instant::now() > deadline {
                panic!(
                    "{:?} {}/{pod}: no {reason} event after {timeout:?}: {:#?}",
                    self.kind,
                    self.ns,
                    self.events(pod).await
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Every version of one pod seen by a watch.
pub struct Recorder {
    seen: Arc<Mutex<Vec<(Instant, Pod)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Recorder {
    /// Every version seen, through `last` (a version read with GET): the watch may deliver a
    /// write after a GET already returned it, so this waits until it has.
    pub async fn versions(&self, last: &Pod) -> Vec<(Instant, Pod)> {
        let want = resource_version(last);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let seen = self.seen.lock().unwrap().clone();
            if seen.iter().any(|(_, p)| resource_version(p) >= want) {
                return seen;
            }
            assert!(
                Instant::now() < deadline,
                "the watch did not deliver resourceVersion {want} within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The resourceVersion as a number: opaque to clients in general, etcd's revision in fact
/// (a test of this API server may rely on it).
fn resource_version(p: &Pod) -> u64 {
    p.metadata
        .resource_version
        .as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn condition<'a>(p: &'a Pod, type_: &str) -> Option<&'a PodCondition> {
    p.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

/// The resize conditions: `(type, reason)`.
pub fn resize_conditions(p: &Pod) -> Vec<(String, Option<String>)> {
    ["PodResizePending", "PodResizeInProgress"]
        .into_iter()
        .filter_map(|t| condition(p, t).map(|c| (t.to_owned(), c.reason.clone())))
        .collect()
}

pub fn observed_generation(p: &Pod) -> Option<i64> {
    p.status.as_ref()?.observed_generation
}

pub fn cstatus<'a>(p: &'a Pod, name: &str) -> &'a ContainerStatus {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.name == name))
        .unwrap_or_else(|| panic!("no status for container {name}: {:#?}", p.status))
}

/// Requests and limits as numbers: `[req cpu, req memory, lim cpu, lim memory]`, absent: -1.
pub type Amounts = [i64; 4];

fn amounts(
    requests: Option<
        &std::collections::BTreeMap<
            String,
            k8s_openapi::apimachinery::pkg::api::resource::Quantity,
        >,
    >,
    limits: Option<
        &std::collections::BTreeMap<
            String,
            k8s_openapi::apimachinery::pkg::api::resource::Quantity,
        >,
    >,
) -> Amounts {
    let get = |m: Option<
        &std::collections::BTreeMap<
            String,
            k8s_openapi::apimachinery::pkg::api::resource::Quantity,
        >,
    >,
               k: &str| {
        m.and_then(|m| m.get(k))
            .map_or(-1, |q| if k == "cpu" { milli(&q.0) } else { bytes(&q.0) })
    };
    [
        get(requests, "cpu"),
        get(requests, "memory"),
        get(limits, "cpu"),
        get(limits, "memory"),
    ]
}

/// `status.containerStatuses[].resources`.
pub fn applied(p: &Pod, c: &str) -> Amounts {
    let r = cstatus(p, c).resources.as_ref();
    amounts(
        r.and_then(|r| r.requests.as_ref()),
        r.and_then(|r| r.limits.as_ref()),
    )
}

/// `status.containerStatuses[].allocatedResources` (requests and, if any, limits).
pub fn allocated(p: &Pod, c: &str) -> Amounts {
    amounts(cstatus(p, c).allocated_resources.as_ref(), None)
}

/// Parses `amounts` written as `["100m", "64Mi", "200m", "128Mi"]`.
pub fn parse(a: [&str; 4]) -> Amounts {
    [milli(a[0]), bytes(a[1]), milli(a[2]), bytes(a[3])]
}

pub fn milli(q: &str) -> i64 {
    match q.strip_suffix('m') {
        Some(m) => m.parse().unwrap(),
        None => (q.parse::<f64>().unwrap() * 1000.0).round() as i64,
    }
}

pub fn bytes(q: &str) -> i64 {
    for (suffix, mult) in [
        ("Ki", 1i64 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("k", 1000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
    ] {
        if let Some(n) = q.strip_suffix(suffix) {
            return n.parse::<i64>().unwrap() * mult;
        }
    }
    q.parse().unwrap()
}

/// `message` matches `pattern` (anchored).
pub fn assert_matches(what: &str, pattern: &str, message: &str) {
    let re = regex::Regex::new(&format!("^(?:{pattern})$")).unwrap();
    assert!(
        re.is_match(message),
        "{what}: {message:?} does not match {pattern:?}"
    );
}

/// `allocatedResources` of requests only.
pub fn requests_only(cpu: &str, memory: &str) -> Amounts {
    [milli(cpu), bytes(memory), -1, -1]
}
