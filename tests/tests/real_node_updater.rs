//! `tailor-updater` on a real kubelet: live CPU and memory changes keep the container and reach
//! its cgroup, a `ManualApproval` memory cut waits for its approval, `RestartContainer` cuts
//! restart one container at a time and never into less memory than the container uses (read
//! from a real Prometheus scraping the kubelet's cAdvisor), and an Infeasible resize is
//! surfaced.
//!
//! Needs the real node (root, `make test-deps`); `TAILOR_REAL_NODE=skip` skips it.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tailor_crds::resize_state::{ResizeState, ResizeStateSpec};
use tailor_crds::v1alpha1::VerticalAutoscaler;
use tailor_e2e::ControlPlane;
use tailor_e2e::process::ServerProcess;
use tailor_e2e::prometheus::{Prometheus, PrometheusOptions};
use tailor_e2e::real_node::{self, IMAGE, RealNode, Requirement};

const WAIT: Duration = Duration::from_secs(60);

struct Env<'a> {
    cp: &'a ControlPlane,
    node: &'a RealNode,
    ns: String,
}

impl Env<'_> {
    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.cp.client(), &self.ns)
    }

    fn vas(&self) -> Api<VerticalAutoscaler> {
        Api::namespaced(self.cp.client(), &self.ns)
    }

    /// A StatefulSet (no controller runs it) and its `replicas` pods on the real node.
    async fn workload(&self, name: &str, replicas: usize, container: Value) -> Vec<String> {
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

    async fn va(&self, name: &str, policy: Value) {
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
    async fn recommend(&self, va: &str, cpu: &str, memory: &str) {
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

    async fn wait_pod(&self, name: &str, what: &str, check: impl Fn(&Pod) -> bool) -> Pod {
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
    async fn wait_state(
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

    fn cgroup(&self, p: &Pod, controller: &str, file: &str) -> String {
        let id = status(p).container_id.clone().unwrap();
        self.node
            .cgroup_value(controller, &id, file)
            .unwrap_or_default()
    }
}

/// Waits until Prometheus holds a working set of at least `bytes` for `pod`'s container.
async fn working_set_at_least(prom: &Prometheus, ns: &str, pod: &str, bytes: u64) {
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
async fn wait_event(env: &Env<'_>, va: &str, reason: &str) -> String {
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

fn condition<'a>(p: &'a Pod, t: &str) -> Option<&'a k8s_openapi::api::core::v1::PodCondition> {
    p.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == t)
}

fn status(p: &Pod) -> &k8s_openapi::api::core::v1::ContainerStatus {
    &p.status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0]
}

/// `(requests cpu, requests memory, limits cpu, limits memory)` as the kubelet reports them applied.
fn applied(p: &Pod) -> (String, String, String, String) {
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

fn is(p: &Pod, want: (&str, &str, &str, &str)) -> bool {
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
fn number(q: &str, cpu: bool) -> i64 {
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

fn state_condition<'a>(state: &'a ResizeStateSpec, t: &str) -> Option<(&'a str, &'a str)> {
    state
        .conditions
        .iter()
        .find(|c| c.type_ == t)
        .map(|c| (c.status.as_str(), c.reason.as_str()))
}

fn container(requests: (&str, &str), limits: (&str, &str), restart_on_memory: bool) -> Value {
    json!({"name": "app", "image": IMAGE,
           "resources": {"requests": {"cpu": requests.0, "memory": requests.1},
                         "limits": {"cpu": limits.0, "memory": limits.1}},
           "resizePolicy": [{"resourceName": "cpu", "restartPolicy": "NotRequired"},
                            {"resourceName": "memory", "restartPolicy": if restart_on_memory { "RestartContainer" } else { "NotRequired" }}]})
}

fn updater(cp: &ControlPlane, exe: &std::path::Path, prometheus: &str) -> ServerProcess {
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
    ServerProcess::spawn_with_env(
        "tailor-updater",
        exe,
        &args,
        &[("KUBECONFIG".into(), cp.kubeconfig().display().to_string())],
        &cp.dir().join("updater.log"),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn updater_resizes_pods_of_a_real_kubelet() {
    if real_node::requirement() == Requirement::Skip {
        eprintln!("real-node tests skipped ({}=skip)", real_node::SWITCH);
        return;
    }
    let bins = tokio::task::spawn_blocking(tailor_e2e::cargo::build_tailor_binaries)
        .await
        .unwrap()
        .unwrap();
    let cp = ControlPlane::start().await.unwrap();
    let node = RealNode::start(&cp).await.unwrap_or_else(|e| panic!("{e}"));
    let env = Env {
        cp: &cp,
        node: &node,
        ns: cp.namespace("updater").await.unwrap(),
    };

    let web = env
        .workload(
            "web",
            1,
            container(("100m", "64Mi"), ("200m", "128Mi"), false),
        )
        .await;
    let db = env
        .workload(
            "db",
            1,
            container(("100m", "128Mi"), ("100m", "128Mi"), false),
        )
        .await;
    let jvm = env
        .workload(
            "jvm",
            2,
            container(("100m", "128Mi"), ("200m", "256Mi"), true),
        )
        .await;
    let tight = env
        .workload(
            "tight",
            1,
            container(("100m", "128Mi"), ("100m", "128Mi"), false),
        )
        .await;
    let big = env
        .workload(
            "big",
            1,
            container(("100m", "64Mi"), ("200m", "128Mi"), false),
        )
        .await;
    env.va("web", json!({"updateMode": "InPlace"})).await;
    env.va("db", json!({"updateMode": "InPlace"})).await;
    env.va(
        "jvm",
        json!({"updateMode": "InPlace", "memoryDecrease": "RestartContainer"}),
    )
    .await;
    env.va("big", json!({"updateMode": "InPlace"})).await;
    let ids = |p: &Pod| (status(p).container_id.clone(), status(p).restart_count);
    let web0 = env.pods().get(&web[0]).await.unwrap();
    let db0 = env.pods().get(&db[0]).await.unwrap();
    // The updater reads working sets before a memory decrease that restarts a container: a
    // Prometheus scraping the kubelet's cAdvisor endpoint, as in a kube-prometheus cluster.
    let prom = Prometheus::start(PrometheusOptions {
        scrape_targets: vec![node.scrape_target()],
        scrape_interval: Duration::from_secs(2),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut updater = updater(&cp, &bins["tailor-updater"], prom.url());

    // CPU and memory up, then CPU down: live, same container, the cgroup follows.
    env.recommend("web", "300m", "96Mi").await;
    let p = env
        .wait_pod(&web[0], "resized up", |p| {
            is(p, ("300m", "96Mi", "600m", "192Mi"))
        })
        .await;
    assert_eq!(ids(&p), ids(&web0), "same container, no restart");
    assert_eq!(env.cgroup(&p, "cpu", "cpu.cfs_quota_us"), "60000");
    assert_eq!(
        env.cgroup(&p, "memory", "memory.limit_in_bytes"),
        (192u64 << 20).to_string()
    );
    env.recommend("web", "50m", "96Mi").await;
    let p = env
        .wait_pod(&web[0], "CPU lowered", |p| {
            is(p, ("50m", "96Mi", "100m", "192Mi"))
        })
        .await;
    assert_eq!(ids(&p), ids(&web0));
    assert_eq!(env.cgroup(&p, "cpu", "cpu.cfs_quota_us"), "10000");

    // ManualApproval: the cut waits, then the approved one applies live.
    env.recommend("db", "100m", "64Mi").await;
    let state = env
        .wait_state("db", "holding the cut", |s| !s.pending_approvals.is_empty())
        .await;
    assert_eq!(
        state_condition(&state, "AwaitingApproval").map(|c| c.0),
        Some("True")
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        is(
            &env.pods().get(&db[0]).await.unwrap(),
            ("100m", "128Mi", "100m", "128Mi")
        ),
        "held"
    );
    let id = state.pending_approvals[0].id.clone();
    env.vas()
        .patch(
            "db",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"tailor.dev/approve-memory-decrease": id}}}),
            ),
        )
        .await
        .unwrap();
    let p = env
        .wait_pod(&db[0], "lowered after approval", |p| {
            is(p, ("100m", "64Mi", "100m", "64Mi"))
        })
        .await;
    assert_eq!(ids(&p), ids(&db0), "live");
    assert_eq!(
        env.cgroup(&p, "memory", "memory.limit_in_bytes"),
        (64u64 << 20).to_string()
    );

    // RestartContainer: each pod's container restarts into the new limit, one at a time.
    for n in &jvm {
        working_set_at_least(&prom, &env.ns, n, 1).await;
    }
    env.recommend("jvm", "100m", "64Mi").await;
    let mut restarted = Vec::new();
    for n in &jvm {
        let p = env
            .wait_pod(n, "restarted into 64Mi", |p| {
                is(p, ("100m", "64Mi", "200m", "128Mi")) && status(p).ready
            })
            .await;
        assert_eq!(status(&p).restart_count, 1);
        let s = status(&p);
        let ended = s
            .last_state
            .as_ref()
            .and_then(|l| l.terminated.as_ref())
            .and_then(|t| t.finished_at.clone())
            .unwrap()
            .0;
        let started = s
            .state
            .as_ref()
            .and_then(|st| st.running.as_ref())
            .and_then(|r| r.started_at.clone())
            .unwrap()
            .0;
        restarted.push((ended, started));
    }
    restarted.sort();
    assert!(
        restarted[1].0 >= restarted[0].1,
        "one at a time: {restarted:?}"
    );

    // A restart into less memory than the container uses now is held; it goes once usage
    // falls below the new limit.
    node.set_load(&env.ns, &jvm[0], "app", 10, 110 << 20)
        .unwrap();
    working_set_at_least(&prom, &env.ns, &jvm[0], 100 << 20).await;
    env.recommend("jvm", "100m", "48Mi").await;
    let note = wait_event(&env, "jvm", "MemoryDecreaseHeld").await;
    assert!(
        note.contains(&format!("pod {}:", jvm[0]))
            && note.contains("more than its new memory 96Mi"),
        "{note}"
    );
    let p = env.pods().get(&jvm[0]).await.unwrap();
    assert!(
        is(&p, ("100m", "64Mi", "200m", "128Mi")),
        "{:?}",
        applied(&p)
    );
    assert_eq!(status(&p).restart_count, 1, "not restarted");
    node.set_load(&env.ns, &jvm[0], "app", 10, 16 << 20)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(150);
    loop {
        let p = env.pods().get(&jvm[0]).await.unwrap();
        if is(&p, ("100m", "48Mi", "200m", "96Mi")) && status(&p).ready {
            assert_eq!(status(&p).restart_count, 2);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not restarted into 96Mi: {:?}",
            applied(&p)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // A cut below what the process uses: the kubelet refuses it (reason Error, one sync
    // later) and would apply it whenever usage drops. The updater takes it back at once.
    node.set_load(&env.ns, &tight[0], "app", 10, 100 << 20)
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    env.va("tight", json!({"updateMode": "InPlace"})).await;
    env.recommend("tight", "100m", "48Mi").await;
    let state = env
        .wait_state("tight", "holding the cut", |s| {
            !s.pending_approvals.is_empty()
        })
        .await;
    let id = state.pending_approvals[0].id.clone();
    env.vas()
        .patch(
            "tight",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"tailor.dev/approve-memory-decrease": id}}}),
            ),
        )
        .await
        .unwrap();
    let status = env
        .wait_state("tight", "the refused cut Reverted", |s| {
            s.last_resizes
                .first()
                .is_some_and(|r| r.outcome == tailor_crds::v1alpha1::ResizeOutcome::Reverted)
        })
        .await;
    // (The usage the kubelet names in its message can trail the process: it has named 0, and
    // less than the refused limit, while the process was still growing. It is kept when
    // positive; the simulator's test checks the value.)
    // The used approval approves nothing more: the same cut needs a new one.
    assert!(
        status
            .pending_approvals
            .iter()
            .all(|p| p.id != id && p.approved != Some(true)),
        "{:?}",
        status.pending_approvals
    );
    let tight0 = env
        .wait_pod(&tight[0], "back at 128Mi", |p| {
            is(p, ("100m", "128Mi", "100m", "128Mi"))
        })
        .await;
    // Usage drops: the kubelet has nothing left to apply, so the cut never happens.
    node.set_load(&env.ns, &tight[0], "app", 10, 16 << 20)
        .unwrap();
    let until = Instant::now() + Duration::from_secs(20);
    while Instant::now() < until {
        let p = env.pods().get(&tight[0]).await.unwrap();
        assert!(
            is(&p, ("100m", "128Mi", "100m", "128Mi")),
            "{:?}",
            applied(&p)
        );
        assert_eq!(
            env.cgroup(&p, "memory", "memory.limit_in_bytes"),
            (128u64 << 20).to_string()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(ids(&env.pods().get(&tight[0]).await.unwrap()), ids(&tight0));

    // Infeasible: surfaced on the VerticalAutoscaler, the pod untouched.
    env.recommend("big", "64", "64Mi").await;
    env.wait_state("big", "ResizeInfeasible", |s| {
        state_condition(s, "ResizeInfeasible").is_some_and(|c| c.0 == "True")
    })
    .await;
    let p = env.pods().get(&big[0]).await.unwrap();
    assert_eq!(number(&applied(&p).0, true), 100);
    updater.stop(Duration::from_secs(5));
}
