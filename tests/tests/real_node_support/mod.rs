//! What the real-kubelet updater tests share: workloads on the real node (their load set
//! through a file the container reads), VerticalAutoscalers with recommendations written as the
//! recommender does, waits, and the values the kubelet reports applied.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)] // tests may panic

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tailor_crds::resize_state::{ResizeState, ResizeStateSpec};
use tailor_crds::v1alpha1::VerticalAutoscaler;
use tailor_e2e::ControlPlane;
use tailor_e2e::process::ServerProcess;
use tailor_e2e::prometheus::Prometheus;
use tailor_e2e::real_node::{self, IMAGE, RealNode, Requirement};

pub const WAIT: Duration = Duration::from_secs(60);

/// What a real-kubelet test runs on: the tailor binaries (built), a control plane, and the
/// real node registered with it; `None` when the real node is switched off
/// (`TAILOR_REAL_NODE=skip`, said on stderr).
pub async fn start() -> Option<(
    std::collections::BTreeMap<String, std::path::PathBuf>,
    ControlPlane,
    RealNode,
)> {
    if real_node::requirement() == Requirement::Skip {
        eprintln!("real-node tests skipped ({}=skip)", real_node::SWITCH);
        return None;
    }
    let bins = tokio::task::spawn_blocking(tailor_e2e::cargo::build_tailor_binaries)
        .await
        .unwrap()
        .unwrap();
    let cp = ControlPlane::start().await.unwrap();
    let node = RealNode::start(&cp).await.unwrap_or_else(|e| panic!("{e}"));
    Some((bins, cp, node))
}

pub struct Env<'a> {
    pub cp: &'a ControlPlane,
    pub node: &'a RealNode,
    pub ns: String,
}

impl Env<'_> {
    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.cp.client(), &self.ns)
    }

    pub fn vas(&self) -> Api<VerticalAutoscaler> {
        Api::namespaced(self.cp.client(), &self.ns)
    }

    /// A StatefulSet (no controller runs it) and its `replicas` pods on the real node.
    pub async fn workload(&self, name: &str, replicas: usize, container: Value) -> Vec<String> {
        let sts: StatefulSet = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"selector": {"matchLabels": {"app": name}}, "serviceName": name,
                     "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [container]}}},
        }))
        .unwrap();
        let sts = Api::<StatefulSet>::namespaced(self.cp.client(), &self.ns)
            .create(&PostParams::default(), &sts)
            .await
            .unwrap();
        let mut names = Vec::new();
        for i in 0..replicas {
            let pod_name = format!("{name}-{i}");
            self.node
                .set_load(&self.ns, &pod_name, "app", 10, 16 << 20)
                .unwrap();
            let ctl = self.node.ctl_dir(&self.ns, &pod_name, "app");
            let mut c = container.clone();
            c["image"] = json!(IMAGE);
            c["imagePullPolicy"] = json!("Never");
            c["volumeMounts"] = json!([{"name": "ctl", "mountPath": "/ctl"}]);
            let pod: Pod = serde_json::from_value(json!({
                "metadata": {"name": pod_name, "labels": {"app": name},
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": name,
                                         "uid": sts.metadata.uid, "controller": true}]},
                "spec": {"nodeName": self.node.name(), "hostNetwork": true,
                         "automountServiceAccountToken": false, "terminationGracePeriodSeconds": 2,
                         "containers": [c],
                         "volumes": [{"name": "ctl", "hostPath": {"path": ctl, "type": "Directory"}}]},
            }))
            .unwrap();
            self.pods()
                .create(&PostParams::default(), &pod)
                .await
                .unwrap();
            names.push(pod_name);
        }
        for n in &names {
            self.wait_pod(n, "Ready", |p| {
                condition(p, "Ready").is_some_and(|c| c.status == "True")
            })
            .await;
        }
        names
    }

    pub async fn va(&self, name: &str, policy: Value) {
        let va: VerticalAutoscaler = serde_json::from_value(json!({
            "apiVersion": "tailor.dev/v1alpha1", "kind": "VerticalAutoscaler",
            "metadata": {"name": name},
            "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": name},
                     "updatePolicy": policy},
        }))
        .unwrap();
        self.vas()
            .create(&PostParams::default(), &va)
            .await
            .unwrap();
    }

    /// Writes the recommendation as the recommender does: bound to the object's generation
    /// and target.
    pub async fn recommend(&self, va: &str, cpu: &str, memory: &str) {
        let current = self.vas().get(va).await.unwrap();
        let patch = json!({
            "apiVersion": "tailor.dev/v1alpha1", "kind": "VerticalAutoscaler",
            "status": {"recommendation": {
                "observedGeneration": current.metadata.generation,
                "targetRef": current.spec.target_ref,
                "containerRecommendations": [
                {"containerName": "app", "target": {"cpu": cpu, "memory": memory}}]}},
        });
        self.vas()
            .patch_status(
                va,
                &PatchParams::apply("tailor-recommender").force(),
                &Patch::Apply(patch),
            )
            .await
            .unwrap();
    }

    pub async fn wait_pod(&self, name: &str, what: &str, check: impl Fn(&Pod) -> bool) -> Pod {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(p) = self.pods().get(name).await
                && check(&p)
            {
                return p;
            }
            if Instant::now() > deadline {
                let p = self.pods().get(name).await.ok();
                panic!(
                    "pod {name}: not {what} after {WAIT:?}: {:#?}",
                    p.map(|p| (p.spec.map(|s| s.containers), p.status))
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Waits until the updater's record of `name` (its ResizeState; no recommender runs here
    /// to mirror it into the status) satisfies `check`.
    pub async fn wait_state(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&ResizeStateSpec) -> bool,
    ) -> ResizeStateSpec {
        let states: Api<ResizeState> = Api::namespaced(self.cp.client(), &self.ns);
        let deadline = Instant::now() + WAIT;
        loop {
            let s = states.get_opt(name).await.unwrap().map(|s| s.spec);
            let s = s.unwrap_or_default();
            if check(&s) {
                return s;
            }
            assert!(Instant::now() < deadline, "{name}: not {what}: {s:#?}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    pub fn cgroup(&self, p: &Pod, controller: &str, file: &str) -> String {
        let id = status(p).container_id.clone().unwrap();
        self.node
            .cgroup_value(controller, &id, file)
            .unwrap_or_default()
    }
}

/// Waits until Prometheus holds a working set of at least `bytes` for `pod`'s container.
pub async fn working_set_at_least(prom: &Prometheus, ns: &str, pod: &str, bytes: u64) {
    let query = format!(
        "container_memory_working_set_bytes{{namespace=\"{ns}\",pod=\"{pod}\",container=\"app\"}} >= {bytes}"
    );
    let deadline = Instant::now() + WAIT;
    loop {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        if prom.query(&query, now).await.is_ok_and(|r| !r.is_empty()) {
            return;
        }
        assert!(Instant::now() < deadline, "Prometheus: no {query}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Waits for an Event `reason` about the VerticalAutoscaler `va` and returns its note.
pub async fn wait_event(env: &Env<'_>, va: &str, reason: &str) -> String {
    let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(env.cp.client(), &env.ns);
    let deadline = Instant::now() + WAIT;
    loop {
        let found = api
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .find(|e| {
                e.reason.as_deref() == Some(reason)
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(va)
            });
        if let Some(e) = found {
            return e.note.unwrap_or_default();
        }
        assert!(Instant::now() < deadline, "no {reason} Event on {va}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub fn condition<'a>(p: &'a Pod, t: &str) -> Option<&'a k8s_openapi::api::core::v1::PodCondition> {
    p.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == t)
}

pub fn status(p: &Pod) -> &k8s_openapi::api::core::v1::ContainerStatus {
    &p.status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0]
}

/// `(requests cpu, requests memory, limits cpu, limits memory)` as the kubelet reports them applied.
pub fn applied(p: &Pod) -> (String, String, String, String) {
    let r = status(p).resources.clone().unwrap_or_default();
    let get = |m: &Option<
        std::collections::BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    >,
               k: &str| {
        m.as_ref()
            .and_then(|m| m.get(k))
            .map(|q| q.0.clone())
            .unwrap_or_default()
    };
    (
        get(&r.requests, "cpu"),
        get(&r.requests, "memory"),
        get(&r.limits, "cpu"),
        get(&r.limits, "memory"),
    )
}

pub fn is(p: &Pod, want: (&str, &str, &str, &str)) -> bool {
    let a = applied(p);
    let same = |x: &str, y: &str, cpu: bool| !x.is_empty() && number(x, cpu) == number(y, cpu);
    same(&a.0, want.0, true)
        && same(&a.1, want.1, false)
        && same(&a.2, want.2, true)
        && same(&a.3, want.3, false)
        && condition(p, "PodResizeInProgress").is_none()
        && condition(p, "PodResizePending").is_none()
}

/// A quantity in millicores (`cpu`) or bytes.
pub fn number(q: &str, cpu: bool) -> i64 {
    if cpu {
        return match q.strip_suffix('m') {
            Some(m) => m.parse().unwrap(),
            None => (q.parse::<f64>().unwrap() * 1000.0).round() as i64,
        };
    }
    for (suffix, mult) in [("Ki", 1i64 << 10), ("Mi", 1 << 20), ("Gi", 1 << 30)] {
        if let Some(n) = q.strip_suffix(suffix) {
            return n.parse::<i64>().unwrap() * mult;
        }
    }
    q.parse().unwrap()
}

pub fn state_condition<'a>(state: &'a ResizeStateSpec, t: &str) -> Option<(&'a str, &'a str)> {
    state
        .conditions
        .iter()
        .find(|c| c.type_ == t)
        .map(|c| (c.status.as_str(), c.reason.as_str()))
}

pub fn container(requests: (&str, &str), limits: (&str, &str), restart_on_memory: bool) -> Value {
    json!({"name": "app", "image": IMAGE,
           "resources": {"requests": {"cpu": requests.0, "memory": requests.1},
                         "limits": {"cpu": limits.0, "memory": limits.1}},
           "resizePolicy": [{"resourceName": "cpu", "restartPolicy": "NotRequired"},
                            {"resourceName": "memory", "restartPolicy": if restart_on_memory { "RestartContainer" } else { "NotRequired" }}]})
}

pub fn updater(cp: &ControlPlane, exe: &std::path::Path, prometheus: &str) -> ServerProcess {
    updater_with(cp, exe, prometheus, &[])
}

/// `tailor-updater run` reading `prometheus`, with `extra` arguments.
pub fn updater_with(
    cp: &ControlPlane,
    exe: &std::path::Path,
    prometheus: &str,
    extra: &[&str],
) -> ServerProcess {
    let port = tailor_e2e::free_port().unwrap();
    let mut args = tailor_e2e::cargo::updater_test_args("real", port);
    // cAdvisor's figures can be some seconds old: a few scrapes of them.
    args.extend(
        [
            "--prometheus-url",
            prometheus,
            "--usage-window-seconds",
            "30",
        ]
        .map(str::to_owned),
    );
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    ServerProcess::spawn_with_env(
        "tailor-updater",
        exe,
        &args,
        &[("KUBECONFIG".into(), cp.kubeconfig().display().to_string())],
        &cp.dir().join("updater.log"),
    )
    .unwrap()
}
