//! What the updater's end-to-end tests share: a real API server, the node simulator, workloads
//! whose pods the simulator runs, VerticalAutoscalers whose recommendation the test writes (as
//! the recommender would), the updater's records (its ResizeStates: no recommender runs here to
//! mirror them into the status), and the `tailor-updater` binary as a process.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)] // tests may panic

pub mod admission;

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tailor_crds::resize_state::{ResizeState, ResizeStateSpec};
use tailor_crds::v1alpha1::VerticalAutoscaler;
use tailor_e2e::ControlPlane;
use tailor_e2e::process::ServerProcess;
use tailor_e2e::prometheus::{Prometheus, PrometheusOptions};
use tailor_e2e::sim::config::SimConfig;
use tailor_e2e::sim::runtime::{self, SimHandle};

pub const WAIT: Duration = Duration::from_secs(40);

pub struct Env {
    pub cp: ControlPlane,
    pub sim: SimHandle,
    pub ns: String,
}

impl Env {
    /// A control plane with the CRDs, `nodes` simulated nodes and a namespace.
    pub async fn start(nodes: usize, cpu: &str, memory: &str, actuation: f64) -> Self {
        let cp = ControlPlane::start().await.expect("control plane starts");
        Self::on(cp, nodes, cpu, memory, actuation).await
    }

    /// [`Env::start`] on a control plane of the caller's.
    pub async fn on(
        cp: ControlPlane,
        nodes: usize,
        cpu: &str,
        memory: &str,
        actuation: f64,
    ) -> Self {
        let mut config = SimConfig::uniform(nodes, cpu, memory);
        config.tick_seconds = 0.2;
        config.actuation_delay_seconds = actuation;
        config.deferred_retry_seconds = 600.0;
        config.deferred_retry_period_seconds = 600.0;
        let sim = runtime::start(cp.client(), config, "127.0.0.1:0".parse().unwrap())
            .await
            .expect("simulator starts");
        let ns = cp.namespace("upd").await.unwrap();
        Self { cp, sim, ns }
    }

    /// A real Prometheus scraping the simulator every second as a kube-prometheus cluster's
    /// does (kubelet cAdvisor, kube-state-metrics): where the updater reads usage before a
    /// memory decrease that restarts a container. Returns once it has the first scrape.
    pub async fn prometheus(&self) -> Prometheus {
        let prom = Prometheus::start(PrometheusOptions {
            scrape_targets: self.sim.scrape_targets(),
            scrape_interval: Duration::from_secs(1),
            ..Default::default()
        })
        .await
        .expect("Prometheus starts");
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let up = prom
                .query("up{job=\"kubelet\"} == 1", unix_now())
                .await
                .is_ok_and(|r| !r.is_empty());
            if up {
                return prom;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "Prometheus did not scrape the simulator"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Waits until `prom` holds a working set of `pod`'s containers.
    pub async fn wait_scraped(&self, prom: &Prometheus, pod: &str) {
        let query = format!(
            "container_memory_working_set_bytes{{namespace=\"{}\",pod=\"{pod}\"}}",
            self.ns
        );
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if prom
                .query(&query, unix_now())
                .await
                .is_ok_and(|r| !r.is_empty())
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "Prometheus has no working set of pod {pod}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// A StatefulSet `name` of one pod whose container `app` has `memory` as request and limit
    /// and restarts to change it, using `usage` (constant); its VerticalAutoscaler lowers
    /// memory through restarts. Returns the pod's name.
    pub async fn restarting_workload(&self, name: &str, memory: &str, usage: &str) -> String {
        let mut c = container(
            "app",
            json!({"cpu": "250m", "memory": memory}),
            json!({"cpu": "250m", "memory": memory}),
        );
        c["resizePolicy"] =
            json!([{"resourceName": "memory", "restartPolicy": "RestartContainer"}]);
        let pods = self
            .workload_annotated(name, 1, json!([c]), usage_annotation(usage))
            .await;
        self.va(
            name,
            name,
            json!({"updatePolicy": {"memoryDecrease": "RestartContainer"}}),
        )
        .await;
        pods[0].clone()
    }

    /// The StatefulSet `w` of `replicas` pods with one container `app` requesting 500m CPU and
    /// 256Mi (no limits), and its VerticalAutoscaler `w` with the default policy.
    pub async fn plain_workload(&self, replicas: usize) -> Vec<String> {
        let c = container("app", json!({"cpu": "500m", "memory": "256Mi"}), json!({}));
        let pods = self.workload("w", replicas, json!([c])).await;
        self.va("w", "w", json!({})).await;
        pods
    }

    /// Sets the simulated usage of `pod`'s container `app` to a constant `memory`.
    pub async fn set_usage(&self, pod: &str, memory: &str) {
        self.pods()
            .patch(
                pod,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": usage_annotation(memory)}})),
            )
            .await
            .unwrap();
    }

    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.cp.client(), &self.ns)
    }

    pub fn vas(&self) -> Api<VerticalAutoscaler> {
        Api::namespaced(self.cp.client(), &self.ns)
    }

    /// A StatefulSet `name` with `replicas` pods `name-0..`, each with `containers`; waits until
    /// the simulator runs them all.
    pub async fn workload(&self, name: &str, replicas: usize, containers: Value) -> Vec<String> {
        self.workload_annotated(name, replicas, containers, json!({}))
            .await
    }

    /// As [`Env::workload`], the pods carrying `annotations` (e.g. the simulator's usage model).
    pub async fn workload_annotated(
        &self,
        name: &str,
        replicas: usize,
        containers: Value,
        annotations: Value,
    ) -> Vec<String> {
        let sts: StatefulSet = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"selector": {"matchLabels": {"app": name}}, "serviceName": name,
                     "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": containers}}},
        }))
        .unwrap();
        let sts = Api::<StatefulSet>::namespaced(self.cp.client(), &self.ns)
            .create(&PostParams::default(), &sts)
            .await
            .unwrap();
        let mut names = Vec::new();
        for i in 0..replicas {
            let pod_name = format!("{name}-{i}");
            let pod: Pod = serde_json::from_value(json!({
                "metadata": {"name": pod_name, "labels": {"app": name}, "annotations": annotations,
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": name,
                                         "uid": sts.metadata.uid, "controller": true}]},
                "spec": {"containers": containers},
            }))
            .unwrap();
            self.pods()
                .create(&PostParams::default(), &pod)
                .await
                .unwrap();
            names.push(pod_name);
        }
        for n in &names {
            self.wait_pod(n, "Running and Ready", ready).await;
        }
        names
    }

    /// A VerticalAutoscaler for the StatefulSet `target`, with `spec` merged in.
    pub async fn va(&self, name: &str, target: &str, spec: Value) -> VerticalAutoscaler {
        self.va_for(name, ("StatefulSet", target), spec).await
    }

    /// An `InPlace` VerticalAutoscaler for the apps/v1 workload `(kind, name)`, with `spec`
    /// merged in.
    pub async fn va_for(
        &self,
        name: &str,
        (kind, target): (&str, &str),
        spec: Value,
    ) -> VerticalAutoscaler {
        let mut s = json!({"targetRef": {"apiVersion": "apps/v1", "kind": kind, "name": target},
                           "updatePolicy": {"updateMode": "InPlace"}});
        merge(&mut s, spec);
        let va: VerticalAutoscaler = serde_json::from_value(json!({
            "apiVersion": "tailor.dev/v1alpha1", "kind": "VerticalAutoscaler",
            "metadata": {"name": name}, "spec": s,
        }))
        .unwrap();
        self.vas()
            .create(&PostParams::default(), &va)
            .await
            .unwrap()
    }

    /// Writes `status.recommendation` as the recommender does (its own field manager), bound
    /// to the object's current generation and target.
    pub async fn recommend(&self, va: &str, containers: Value) {
        let current = self.vas().get(va).await.unwrap();
        self.recommend_for(
            va,
            current.metadata.generation.unwrap(),
            serde_json::to_value(&current.spec.target_ref).unwrap(),
            containers,
        )
        .await;
    }

    /// Writes `status.recommendation` bound to `generation` and `target_ref` (which may be
    /// stale, as a recommender that could not recompute leaves them).
    pub async fn recommend_for(
        &self,
        va: &str,
        generation: i64,
        target_ref: Value,
        containers: Value,
    ) {
        let patch = json!({
            "apiVersion": "tailor.dev/v1alpha1", "kind": "VerticalAutoscaler",
            "status": {"recommendation": {"observedGeneration": generation, "targetRef": target_ref,
                                          "containerRecommendations": containers}},
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

    pub async fn annotate(&self, va: &str, key: &str, value: &str) {
        self.vas()
            .patch(
                va,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {key: value}}})),
            )
            .await
            .unwrap();
    }

    /// The updater's records (ResizeStates).
    pub fn states(&self) -> Api<ResizeState> {
        Api::namespaced(self.cp.client(), &self.ns)
    }

    /// The updater's record of `va` (its ResizeState, which must belong to the object of that
    /// name now), or an empty one when it has written none.
    pub async fn state(&self, va: &str) -> ResizeStateSpec {
        let Some(state) = self.states().get_opt(va).await.unwrap() else {
            return ResizeStateSpec::default();
        };
        let object = self.vas().get_opt(va).await.unwrap();
        if let Some(object) = object {
            assert_eq!(
                object.metadata.uid.as_deref(),
                Some(state.spec.vertical_autoscaler_uid.as_str()),
                "the ResizeState {va} belongs to another object"
            );
            let owner = &state.metadata.owner_references.as_ref().unwrap()[0];
            assert_eq!(
                (
                    owner.kind.as_str(),
                    Some(owner.uid.as_str()),
                    owner.controller
                ),
                (
                    "VerticalAutoscaler",
                    object.metadata.uid.as_deref(),
                    Some(true)
                ),
                "the ResizeState {va} is owned by its object"
            );
        }
        state.spec
    }

    /// Waits until the updater's record of `va` satisfies `check`.
    pub async fn wait_state(
        &self,
        va: &str,
        what: &str,
        check: impl Fn(&ResizeStateSpec) -> bool,
    ) -> ResizeStateSpec {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let s = self.state(va).await;
            if check(&s) {
                return s;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{va}: not {what}: {s:#?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn wait_pod(&self, name: &str, what: &str, check: impl Fn(&Pod) -> bool) -> Pod {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(p) = self.pods().get_opt(name).await.unwrap()
                && check(&p)
            {
                return p;
            }
            if tokio::time::Instant::now() > deadline {
                let p = self.pods().get_opt(name).await.unwrap();
                panic!(
                    "pod {name}: not {what} after {WAIT:?}: {:#?}",
                    p.map(|p| (p.spec.map(|s| s.containers), p.status))
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn wait_va(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&VerticalAutoscaler) -> bool,
    ) -> VerticalAutoscaler {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let v = self.vas().get(name).await.unwrap();
            if check(&v) {
                return v;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name}: not {what}: {:#?}",
                v.status
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Events about `kind`/`name` in the namespace: (reason, note, reporting instance).
    pub async fn events(&self, kind: &str, name: &str) -> Vec<(String, String, String)> {
        let api: Api<k8s_openapi::api::events::v1::Event> =
            Api::namespaced(self.cp.client(), &self.ns);
        api.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| {
                e.regarding.as_ref().is_some_and(|r| {
                    r.kind.as_deref() == Some(kind) && r.name.as_deref() == Some(name)
                })
            })
            .map(|e| {
                (
                    e.reason.unwrap_or_default(),
                    e.note.unwrap_or_default(),
                    e.reporting_instance.unwrap_or_default(),
                )
            })
            .collect()
    }

    pub async fn wait_event(&self, kind: &str, name: &str, reason: &str) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(e) = self
                .events(kind, name)
                .await
                .into_iter()
                .find(|e| e.0 == reason)
            {
                return e.1;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {reason} event on {kind} {name}: {:?}",
                self.events(kind, name).await
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Starts `tailor-updater run` with the admin kubeconfig and fast timers.
    pub fn updater(&self, identity: &str, extra: &[&str]) -> Updater {
        self.updater_via(identity, self.cp.kubeconfig(), extra)
    }

    /// [`Env::updater`] with another kubeconfig (a proxy's, a ServiceAccount's).
    pub fn updater_via(
        &self,
        identity: &str,
        kubeconfig: &std::path::Path,
        extra: &[&str],
    ) -> Updater {
        let port = tailor_e2e::free_port().unwrap();
        let mut args = tailor_e2e::cargo::updater_test_args(identity, port);
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let log = self.cp.dir().join(format!("updater-{identity}.log"));
        let process = ServerProcess::spawn_with_env(
            "tailor-updater",
            &PathBuf::from(env!("CARGO_BIN_EXE_tailor-updater")),
            &args,
            &[("KUBECONFIG".into(), kubeconfig.display().to_string())],
            &log,
        )
        .unwrap();
        Updater { process, port, log }
    }
}

pub struct Updater {
    pub process: ServerProcess,
    pub port: u16,
    pub log: PathBuf,
}

impl Updater {
    pub async fn metrics(&self) -> String {
        match reqwest::get(format!("http://127.0.0.1:{}/metrics", self.port)).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// The value of a metric line starting with `prefix` (summed over matches), or 0.
    pub async fn metric(&self, prefix: &str) -> f64 {
        self.metrics()
            .await
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    pub async fn wait_ready(&self) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let code = reqwest::get(format!("http://127.0.0.1:{}/readyz", self.port))
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0);
            if code == 200 && self.metrics().await.contains("tailor_updater_leader 1") {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "updater not ready:\n{}",
                self.process.log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub fn kill(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.process.pid() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        self.process.stop(Duration::from_secs(1));
    }
}

pub fn merge(a: &mut Value, b: Value) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

/// Seconds since the epoch, now.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// The simulator's usage annotation: container `app` at a constant `memory` (0.1 CPU).
pub fn usage_annotation(memory: &str) -> Value {
    let usage = json!({"app": {"model": "constant", "cpu": 0.1, "memory": memory}});
    json!({ (tailor_e2e::sim::usage::USAGE_ANNOTATION): usage.to_string() })
}

pub fn container(name: &str, requests: Value, limits: Value) -> Value {
    json!({"name": name, "image": format!("example/{name}:1"), "resources": {"requests": requests, "limits": limits}})
}

pub fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True")
}

/// `spec.containers[name].resources.{requests|limits}.{resource}`.
pub fn spec_value(p: &Pod, container: &str, kind: &str, resource: &str) -> Option<String> {
    let c = p
        .spec
        .as_ref()?
        .containers
        .iter()
        .find(|c| c.name == container)?;
    let r = c.resources.as_ref()?;
    let m = if kind == "requests" {
        r.requests.as_ref()
    } else {
        r.limits.as_ref()
    }?;
    m.get(resource).map(|q| q.0.clone())
}

/// `status.containerStatuses[name].resources.{requests|limits}.{resource}`.
pub fn actual(p: &Pod, container: &str, kind: &str, resource: &str) -> Option<String> {
    let s = p
        .status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|s| s.name == container)?;
    let r = s.resources.as_ref()?;
    let m = if kind == "requests" {
        r.requests.as_ref()
    } else {
        r.limits.as_ref()
    }?;
    m.get(resource).map(|q| q.0.clone())
}

pub fn restart_count(p: &Pod, container: &str) -> i32 {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|ss| ss.iter().find(|s| s.name == container))
        .map_or(0, |s| s.restart_count)
}

/// Whether `spec` and `status` agree on `value` for the resource, and the pod is done resizing.
pub fn applied(p: &Pod, container: &str, kind: &str, resource: &str, value: &str) -> bool {
    spec_value(p, container, kind, resource).as_deref() == Some(value)
        && actual(p, container, kind, resource).as_deref() == Some(value)
}

/// The updater's condition `type_` in its record: (status, reason, message).
pub fn condition<'a>(
    state: &'a ResizeStateSpec,
    type_: &str,
) -> Option<(&'a str, &'a str, &'a str)> {
    state
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.as_str(), c.reason.as_str(), c.message.as_str()))
}
