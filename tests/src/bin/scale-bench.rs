//! `scale-bench`: the memory of both controllers on a large cluster, through a forced relist
//! and a churn of pods.
//!
//! Starts a control plane, one `tailor-sim` process, an empty Prometheus, and creates
//! `--pods` running pods in Deployments of `--pods-per-workload` (each Deployment with a
//! ReplicaSet, as its controller would leave them), one `InPlace` VerticalAutoscaler per
//! Deployment with a recommendation equal to the pods' requests. Then it runs `tailor-recommender
//! run` and `tailor-updater run` as their own processes and prints, for each:
//!
//! 1. the resident and peak memory once both are ready (each listed every pod);
//! 2. the CPU each used over `--rest-seconds` at rest (every object reconciled on its resync);
//! 3. the peak memory after the API server restarts (every watch lists again);
//! 4. the resident memory after each of `--rounds` churn rounds: a round rolls out a share of
//!    the Deployments (a new ReplicaSet, new pods, the old ones deleted), `--churn` pods created
//!    and as many deleted over all rounds, the cluster staying at `--pods`.
//!
//! Run it through `hack/bench-scale.sh` (release build).

use std::time::{Duration, Instant};

use clap::Parser;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use tailor_e2e::bench::{cpu_seconds, run_all, status_mib};
use tailor_e2e::prometheus::{Prometheus, PrometheusOptions};
use tailor_e2e::{ControlPlane, free_port};

/// Scale benchmark.
#[derive(Debug, Parser)]
struct Args {
    /// Pods in the cluster.
    #[arg(long, default_value_t = 50_000)]
    pods: usize,
    /// Pods per Deployment.
    #[arg(long, default_value_t = 20)]
    pods_per_workload: usize,
    /// Simulated nodes (64 cores, 256 GiB, 250 pods each).
    #[arg(long, default_value_t = 250)]
    nodes: usize,
    /// Pods created (and as many deleted) by the churn, over all rounds.
    #[arg(long, default_value_t = 100_000)]
    churn: usize,
    /// Churn rounds (memory is read after each).
    #[arg(long, default_value_t = 10)]
    rounds: usize,
    /// Seconds at rest over which CPU is measured.
    #[arg(long, default_value_t = 60)]
    rest_seconds: u64,
    /// Concurrent API requests of the driver.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
}

const NS: &str = "bench";

/// (VmRSS, VmHWM) of a process in MiB.
fn memory_mib(pid: u32) -> (f64, f64) {
    (status_mib(pid, "VmRSS:"), status_mib(pid, "VmHWM:"))
}

fn object<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<T, String> {
    serde_json::from_value(v).map_err(|e| e.to_string())
}

/// The cluster's objects, as the driver creates and rolls them.
#[derive(Clone)]
struct Cluster {
    deployments: Api<Deployment>,
    replicasets: Api<ReplicaSet>,
    pods: Api<Pod>,
    per: usize,
}

impl Cluster {
    fn new(client: &kube::Client, per: usize) -> Self {
        Self {
            deployments: Api::namespaced(client.clone(), NS),
            replicasets: Api::namespaced(client.clone(), NS),
            pods: Api::namespaced(client.clone(), NS),
            per,
        }
    }

    /// Deployment `w-N` with its first ReplicaSet and pods.
    async fn create_workload(&self, w: usize) -> Result<(), String> {
        let name = format!("w-{w}");
        let d: Deployment = object(json!({
            "metadata": {"name": name},
            "spec": {"selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "app", "image": "example/app:1"}]}}},
        }))?;
        let d = self
            .deployments
            .create(&PostParams::default(), &d)
            .await
            .map_err(|e| e.to_string())?;
        self.roll_out(w, 0, d.metadata.uid.unwrap_or_default())
            .await
    }

    /// ReplicaSet `w-N-rR` owned by the Deployment, and its pods.
    async fn roll_out(&self, w: usize, round: usize, deployment_uid: String) -> Result<(), String> {
        let (name, rs_name) = (format!("w-{w}"), format!("w-{w}-r{round}"));
        let rs: ReplicaSet = object(json!({
            "metadata": {"name": rs_name, "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                         "name": name, "uid": deployment_uid, "controller": true}]},
            "spec": {"selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "app", "image": "example/app:1"}]}}},
        }))?;
        let rs = self
            .replicasets
            .create(&PostParams::default(), &rs)
            .await
            .map_err(|e| e.to_string())?;
        for i in 0..self.per {
            let pod: Pod = object(json!({
                "metadata": {"name": format!("{rs_name}-{i}"), "labels": {"app": name, "pod-template-hash": format!("r{round}")},
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs_name,
                                         "uid": rs.metadata.uid, "controller": true}]},
                "spec": {"containers": [{"name": "app", "image": "example/app:1",
                    "env": [{"name": "JAVA_TOOL_OPTIONS", "value": "-Xmx96m"}],
                    "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "200m", "memory": "256Mi"}}}]},
            }))?;
            self.pods
                .create(&PostParams::default(), &pod)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Rolls Deployment `w-N` from round `from` to `to`: the new ReplicaSet and pods first,
    /// then the old pods (at once, as a kubelet finishing them would) and ReplicaSet go.
    async fn roll(&self, w: usize, from: usize, to: usize) -> Result<(), String> {
        let d = self
            .deployments
            .get(&format!("w-{w}"))
            .await
            .map_err(|e| e.to_string())?;
        self.roll_out(w, to, d.metadata.uid.unwrap_or_default())
            .await?;
        let now = DeleteParams {
            grace_period_seconds: Some(0),
            ..DeleteParams::default()
        };
        for i in 0..self.per {
            self.pods
                .delete(&format!("w-{w}-r{from}-{i}"), &now)
                .await
                .map_err(|e| e.to_string())?;
        }
        self.replicasets
            .delete(&format!("w-{w}-r{from}"), &DeleteParams::default())
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Pods `Running`.
    async fn running(&self) -> Result<usize, kube::Error> {
        let lp = ListParams::default().fields("status.phase=Running");
        Ok(self.pods.list_metadata(&lp).await?.items.len())
    }
}

/// One VerticalAutoscaler per Deployment, its recommendation the pods' requests.
async fn autoscalers(client: &kube::Client, workloads: usize, c: usize) -> Result<(), String> {
    let vas = Api::<tailor_crds::VerticalAutoscaler>::namespaced(client.clone(), NS);
    run_all(0..workloads, c, |w| {
        let vas = vas.clone();
        async move {
            let name = format!("w-{w}");
            let va: tailor_crds::VerticalAutoscaler = object(json!({
                "apiVersion": "tailor.dev/v1alpha1", "kind": "VerticalAutoscaler",
                "metadata": {"name": name},
                "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                         "updatePolicy": {"updateMode": "InPlace"}},
            }))?;
            let va = vas
                .create(&PostParams::default(), &va)
                .await
                .map_err(|e| e.to_string())?;
            let status = json!({
                "apiVersion": "tailor.dev/v1alpha1", "kind": "VerticalAutoscaler",
                "status": {"recommendation": {
                    "observedGeneration": va.metadata.generation,
                    "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                    "containerRecommendations": [
                    {"containerName": "app", "target": {"cpu": "100m", "memory": "128Mi"}}]}},
            });
            vas.patch_status(
                &name,
                &PatchParams::apply("tailor-recommender").force(),
                &Patch::Apply(status),
            )
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
        }
    })
    .await
}

/// A controller binary running as its own process.
struct Controller {
    name: &'static str,
    child: std::process::Child,
    admin: String,
}

impl Controller {
    fn start(name: &'static str, cp: &ControlPlane, extra: &[&str]) -> Result<Self, String> {
        let port = free_port().map_err(|e| e.to_string())?;
        let admin = format!("127.0.0.1:{port}");
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let log = cp.dir().join(format!("{name}.log"));
        let child = std::process::Command::new(exe.with_file_name(name))
            .args(["run", "--admin-addr", &admin, "--leader-election=false"])
            .args(["--log", "warn"])
            .args(extra)
            .env("KUBECONFIG", cp.kubeconfig())
            .stderr(std::fs::File::create(&log).map_err(|e| e.to_string())?)
            .spawn()
            .map_err(|e| format!("start {name}: {e}"))?;
        Ok(Self { name, child, admin })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    async fn wait_ready(&self, timeout: Duration) -> Result<Duration, String> {
        let t = Instant::now();
        loop {
            let status = reqwest::get(format!("http://{}/readyz", self.admin))
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0);
            if status == 200 {
                return Ok(t.elapsed());
            }
            if t.elapsed() > timeout {
                return Err(format!("{} not ready after {timeout:?}", self.name));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the simulator with `nodes` nodes.
fn simulator(cp: &ControlPlane, nodes: usize) -> Result<std::process::Child, String> {
    let config = cp.dir().join("sim.yaml");
    std::fs::write(
        &config,
        format!(
            "tickSeconds: 1\nactuationDelaySeconds: 0.5\nnodes:\n  - {{name: bench, count: {nodes}, cpu: '64', memory: 256Gi, pods: 250}}\n"
        ),
    )
    .map_err(|e| e.to_string())?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    std::process::Command::new(exe.with_file_name("tailor-sim"))
        .args(["--config", &config.display().to_string()])
        .args(["--metrics-addr", "127.0.0.1:0", "--log", "warn"])
        .env("KUBECONFIG", cp.kubeconfig())
        .spawn()
        .map_err(|e| format!("start tailor-sim: {e}"))
}

/// Creates every workload and waits until all their pods run.
async fn populate(cluster: &Cluster, workloads: usize, c: usize) -> Result<(), String> {
    let t = Instant::now();
    run_all(0..workloads, c, |w| {
        let cluster = cluster.clone();
        async move { cluster.create_workload(w).await }
    })
    .await?;
    let total = workloads * cluster.per;
    eprintln!("{total} pods created in {:.0} s", t.elapsed().as_secs_f64());
    wait_running(cluster, total, t).await
}

async fn wait_running(cluster: &Cluster, total: usize, t: Instant) -> Result<(), String> {
    loop {
        let running = cluster.running().await.map_err(|e| e.to_string())?;
        if running >= total {
            eprintln!(
                "{total} pods Running {:.0} s after the first create",
                t.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        if t.elapsed() > Duration::from_secs(3600) {
            return Err(format!("only {running} of {total} pods Running"));
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

/// One line of the report: a measure and its value for each controller.
struct Row(String, String, String);

fn mib((rss, hwm): (f64, f64)) -> String {
    format!("{rss:.1} MiB (peak {hwm:.1} MiB)")
}

/// The churn: `rounds` rounds each rolling the next share of the Deployments.
async fn churn(
    args: &Args,
    cluster: &Cluster,
    controllers: &[Controller; 2],
    rows: &mut Vec<Row>,
) -> Result<(), String> {
    let workloads = args.pods / args.pods_per_workload;
    let per_round = (args.churn / args.rounds / args.pods_per_workload).max(1);
    let mut round_of = vec![0usize; workloads];
    let mut next = 0usize;
    for round in 1..=args.rounds {
        let t = Instant::now();
        let picked: Vec<usize> = (0..per_round).map(|k| (next + k) % workloads).collect();
        next = (next + per_round) % workloads;
        let from: Vec<usize> = picked.iter().map(|&w| round_of[w]).collect();
        for &w in &picked {
            round_of[w] = round;
        }
        run_all(0..picked.len(), args.concurrency, |k| {
            let cluster = cluster.clone();
            let (w, from) = (picked[k], from[k]);
            async move { cluster.roll(w, from, round).await }
        })
        .await?;
        wait_running(cluster, args.pods, t).await?;
        // Let the controllers see the round through before reading their memory.
        tokio::time::sleep(Duration::from_secs(10)).await;
        let churned = round * per_round * args.pods_per_workload;
        let row = Row(
            format!("after churn round {round} ({churned} pods created and deleted)"),
            mib(memory_mib(controllers[0].pid())),
            mib(memory_mib(controllers[1].pid())),
        );
        eprintln!("{}: {} | {}", row.0, row.1, row.2);
        rows.push(row);
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let mut cp = ControlPlane::start().await?;
    let client = cp.client();
    Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &object(json!({"metadata": {"name": NS}}))?,
        )
        .await?;
    let mut sim = simulator(&cp, args.nodes)?;
    let prom = Prometheus::start(PrometheusOptions::default()).await?;
    let workloads = args.pods / args.pods_per_workload;
    let cluster = Cluster::new(&client, args.pods_per_workload);
    populate(&cluster, workloads, args.concurrency).await?;
    autoscalers(&client, workloads, args.concurrency).await?;

    let recommender =
        Controller::start("tailor-recommender", &cp, &["--prometheus-url", prom.url()])?;
    let updater = Controller::start("tailor-updater", &cp, &[])?;
    let ready = Duration::from_secs(900);
    let (r_ready, u_ready) = (
        recommender.wait_ready(ready).await?,
        updater.wait_ready(ready).await?,
    );
    eprintln!(
        "ready: recommender {:.0} s, updater {:.0} s",
        r_ready.as_secs_f64(),
        u_ready.as_secs_f64()
    );
    let controllers = [recommender, updater];
    let mut rows = vec![Row(
        format!("ready, {} pods listed", args.pods),
        mib(memory_mib(controllers[0].pid())),
        mib(memory_mib(controllers[1].pid())),
    )];
    let cpu0 = controllers.each_ref().map(|c| cpu_seconds(c.pid()));
    tokio::time::sleep(Duration::from_secs(args.rest_seconds)).await;
    let cpu = |i: usize| format!("{:.1} s", cpu_seconds(controllers[i].pid()) - cpu0[i]);
    rows.push(Row(
        format!("CPU over {} s at rest", args.rest_seconds),
        cpu(0),
        cpu(1),
    ));
    rows.push(Row(
        "at rest".into(),
        mib(memory_mib(controllers[0].pid())),
        mib(memory_mib(controllers[1].pid())),
    ));

    // A forced relist: the API server restarts and every watch lists again.
    cp.restart_apiserver(Duration::from_secs(5)).await?;
    for c in &controllers {
        c.wait_ready(ready).await?;
    }
    tokio::time::sleep(Duration::from_secs(30)).await;
    rows.push(Row(
        "after an API server restart (every watch lists again)".into(),
        mib(memory_mib(controllers[0].pid())),
        mib(memory_mib(controllers[1].pid())),
    ));

    churn(&args, &cluster, &controllers, &mut rows).await?;
    drop(controllers);
    let _ = sim.kill();
    let _ = sim.wait();

    println!(
        "| {} pods, {workloads} VerticalAutoscalers | tailor-recommender | tailor-updater |",
        args.pods
    );
    println!("| --- | --- | --- |");
    for Row(what, r, u) in rows {
        println!("| {what} | {r} | {u} |");
    }
    Ok(())
}
