//! `updater-bench`: the updater at scale on a real API server and the node simulator.
//!
//! Starts a control plane and one `tailor-sim` process, creates `--workloads` StatefulSets with
//! `--pods-per-workload` running pods each and one `InPlace` VerticalAutoscaler per workload
//! (its recommendation equal to the pods' requests), runs the `tailor-updater run` binary as a
//! separate process, then changes every recommendation at once and prints the time until every
//! resize is issued (each pod's spec changed) and until every resize is complete (the simulated
//! kubelet applied it), the API requests the updater sent per resize, and its peak RSS. Run it
//! through `hack/bench-updater.sh` (release build).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use tailor_e2e::bench::{cpu_seconds, run_all, status_mib};
use tailor_e2e::{ControlPlane, free_port};

/// Updater benchmark.
#[derive(Debug, Parser)]
struct Args {
    /// Workloads (StatefulSets with a VerticalAutoscaler each).
    #[arg(long, default_value_t = 1000)]
    workloads: usize,
    /// Pods per workload.
    #[arg(long, default_value_t = 5)]
    pods_per_workload: usize,
    /// Simulated nodes (64 cores, 256 GiB, 250 pods each).
    #[arg(long, default_value_t = 100)]
    nodes: usize,
    /// Concurrent API requests of the driver.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Extra arguments for `tailor-updater run` (e.g. `--updater-arg=--max-resizes-per-second=200`).
    #[arg(long = "updater-arg", allow_hyphen_values = true)]
    updater_args: Vec<String>,
}

/// The sum of a metric family's samples in an exposition.
fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn scrape(admin: &str) -> String {
    match reqwest::get(format!("http://{admin}/metrics")).await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

fn cpu_request(p: &Pod, status: bool) -> Option<String> {
    let r = if status {
        p.status
            .as_ref()?
            .container_statuses
            .as_ref()?
            .first()?
            .resources
            .clone()?
    } else {
        p.spec.as_ref()?.containers.first()?.resources.clone()?
    };
    r.requests?.get("cpu").map(|q| q.0.clone())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let cp = ControlPlane::start().await?;
    let client = cp.client();
    let ns = "bench";
    Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}}))?,
        )
        .await?;

    let config = cp.dir().join("sim.yaml");
    std::fs::write(
        &config,
        format!(
            "tickSeconds: 1\nactuationDelaySeconds: 0.5\nnodes:\n  - {{name: bench, count: {}, cpu: '64', memory: 256Gi, pods: 250}}\n",
            args.nodes
        ),
    )?;
    let exe = std::env::current_exe()?;
    let mut sim = std::process::Command::new(exe.with_file_name("tailor-sim"))
        .args([
            "--config",
            &config.display().to_string(),
            "--metrics-addr",
            "127.0.0.1:0",
            "--log",
            "warn",
        ])
        .env("KUBECONFIG", cp.kubeconfig())
        .spawn()
        .map_err(|e| format!("start tailor-sim: {e}"))?;

    let total = args.workloads * args.pods_per_workload;
    let t = Instant::now();
    let sts_api = Api::<StatefulSet>::namespaced(client.clone(), ns);
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    let per = args.pods_per_workload;
    run_all(0..args.workloads, args.concurrency, |w| {
        let (sts_api, pods) = (sts_api.clone(), pods.clone());
        async move {
            let sts: StatefulSet = serde_json::from_value(json!({
                "metadata": {"name": format!("w-{w}")},
                "spec": {"selector": {"matchLabels": {"app": format!("w-{w}")}}, "serviceName": "w",
                         "template": {"metadata": {"labels": {"app": format!("w-{w}")}},
                                      "spec": {"containers": [{"name": "app", "image": "example/app:1"}]}}},
            }))
            .map_err(|e| e.to_string())?;
            let sts = sts_api.create(&PostParams::default(), &sts).await.map_err(|e| e.to_string())?;
            for i in 0..per {
                let pod: Pod = serde_json::from_value(json!({
                    "metadata": {"name": format!("w-{w}-{i}"),
                        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": format!("w-{w}"),
                                             "uid": sts.metadata.uid, "controller": true}]},
                    "spec": {"containers": [{"name": "app", "image": "example/app:1",
                        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "200m", "memory": "256Mi"}}}]},
                }))
                .map_err(|e| e.to_string())?;
                pods.create(&PostParams::default(), &pod).await.map_err(|e| e.to_string())?;
            }
            Ok(())
        }
    })
    .await?;
    loop {
        let running = pods
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .count();
        if running == total {
            break;
        }
        if t.elapsed() > Duration::from_secs(900) {
            return Err(format!("only {running} of {total} pods Running").into());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    eprintln!(
        "{total} pods of {} workloads Running in {:.0} s",
        args.workloads,
        t.elapsed().as_secs_f64()
    );

    let vas = Api::<tailor_crds::VerticalAutoscaler>::namespaced(client.clone(), ns);
    let recommend = |w: usize, cpu: &'static str, memory: &'static str| {
        let vas = vas.clone();
        async move {
            let patch = json!({
                "apiVersion": "tailor.dev/v1alpha1", "kind": "VerticalAutoscaler",
                // As the recommender writes it: bound to the spec (a new object is at
                // generation 1) and to the target it was computed for.
                "status": {"recommendation": {
                    "observedGeneration": 1,
                    "targetRef": {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": format!("w-{w}")},
                    "containerRecommendations": [
                    {"containerName": "app", "target": {"cpu": cpu, "memory": memory}}]}},
            });
            vas.patch_status(
                &format!("w-{w}"),
                &PatchParams::apply("tailor-recommender").force(),
                &Patch::Apply(patch),
            )
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
        }
    };
    run_all(0..args.workloads, args.concurrency, |w| {
        let vas = vas.clone();
        let recommend = &recommend;
        async move {
            let va: tailor_crds::VerticalAutoscaler = serde_json::from_value(json!({
                "apiVersion": "tailor.dev/v1alpha1", "kind": "VerticalAutoscaler",
                "metadata": {"name": format!("w-{w}")},
                "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": format!("w-{w}")},
                         "updatePolicy": {"updateMode": "InPlace"}},
            }))
            .map_err(|e| e.to_string())?;
            vas.create(&PostParams::default(), &va).await.map_err(|e| e.to_string())?;
            recommend(w, "100m", "128Mi").await
        }
    })
    .await?;

    let port = free_port()?;
    let admin = format!("127.0.0.1:{port}");
    let log = cp.dir().join("updater.log");
    let mut updater_args: Vec<String> = [
        "run",
        "--admin-addr",
        &admin,
        "--leader-election=false",
        "--log",
        "warn",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    updater_args.extend(args.updater_args.iter().cloned());
    let mut updater = std::process::Command::new(exe.with_file_name("tailor-updater"))
        .args(&updater_args)
        .env("KUBECONFIG", cp.kubeconfig())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .map_err(|e| format!("start tailor-updater: {e}"))?;
    let pid = updater.id();
    let t = Instant::now();
    loop {
        let ready = reqwest::get(format!("http://{admin}/readyz"))
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0);
        if ready == 200 {
            break;
        }
        if t.elapsed() > Duration::from_secs(300) {
            return Err("the updater did not get ready".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "updater ready (caches synced, first pass over {} objects) in {:.1} s",
        args.workloads,
        t.elapsed().as_secs_f64()
    );
    let ready_rss = status_mib(pid, "VmHWM:");
    let requests_before = metric(&scrape(&admin).await, "tailor_updater_api_requests_total");

    // Follow every pod: its spec (issued) and status (complete).
    let issued = std::sync::Arc::new(std::sync::Mutex::new(HashSet::new()));
    let complete = std::sync::Arc::new(std::sync::Mutex::new(HashSet::new()));
    let (i2, c2) = (issued.clone(), complete.clone());
    let follow = tokio::spawn(
        watcher(pods.clone(), watcher::Config::default())
            .applied_objects()
            .for_each(move |p| {
                if let Ok(p) = p {
                    let name = p.metadata.name.clone().unwrap_or_default();
                    if cpu_request(&p, false).as_deref() == Some("150m") {
                        i2.lock().map(|mut s| s.insert(name.clone())).ok();
                    }
                    if cpu_request(&p, true).as_deref() == Some("150m") {
                        c2.lock().map(|mut s| s.insert(name)).ok();
                    }
                }
                std::future::ready(())
            }),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Every recommendation changes at once.
    let cpu_before = cpu_seconds(pid);
    let t0 = Instant::now();
    run_all(0..args.workloads, args.concurrency, |w| {
        recommend(w, "150m", "160Mi")
    })
    .await?;
    let written = t0.elapsed();
    let count = |s: &std::sync::Arc<std::sync::Mutex<HashSet<String>>>| {
        s.lock().map(|s| s.len()).unwrap_or(0)
    };
    let mut all_issued = None;
    let all_complete;
    loop {
        if all_issued.is_none() && count(&issued) >= total {
            all_issued = Some(t0.elapsed());
        }
        if count(&complete) >= total {
            all_complete = t0.elapsed();
            all_issued.get_or_insert(all_complete);
            break;
        }
        if t0.elapsed() > Duration::from_secs(900) {
            return Err(format!(
                "after 900 s: {} of {total} resizes issued, {} complete; updater log: {}",
                count(&issued),
                count(&complete),
                log.display()
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    follow.abort();
    let cpu = cpu_seconds(pid) - cpu_before;
    let text = scrape(&admin).await;
    let requests = metric(&text, "tailor_updater_api_requests_total") - requests_before;
    let by_verb = |v: &str| {
        metric(
            &text,
            &format!("tailor_updater_api_requests_total{{verb=\"{v}\"}}"),
        )
    };
    let issued_total = metric(
        &text,
        "tailor_updater_resizes_total{outcome=\"issued\",resource=\"cpu\"}",
    );
    let rss = status_mib(pid, "VmHWM:");
    let _ = updater.kill();
    let _ = updater.wait();

    // The same number of resize patches sent straight from this driver (no updater), with its
    // concurrency: what the API server and the simulator allow on this machine.
    let t = Instant::now();
    run_all(0..total, args.concurrency, |i| {
        let pods = pods.clone();
        let w = i / per;
        let k = i % per;
        async move {
            let patch = json!({"spec": {"containers": [{"name": "app", "resources": {"requests": {"cpu": "200m"}, "limits": {"cpu": "400m"}}}]}});
            pods.patch_resize(&format!("w-{w}-{k}"), &PatchParams::default(), &Patch::Strategic(patch))
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    })
    .await?;
    let baseline = t.elapsed();
    let _ = sim.kill();
    let _ = sim.wait();

    println!("| measure | result |");
    println!("| --- | --- |");
    println!(
        "| VerticalAutoscalers / pods | {} / {total} |",
        args.workloads
    );
    println!(
        "| recommendations written (driver) | {:.1} s |",
        written.as_secs_f64()
    );
    println!(
        "| every resize issued | {:.1} s |",
        all_issued.unwrap_or_default().as_secs_f64()
    );
    println!(
        "| every resize complete | {:.1} s |",
        all_complete.as_secs_f64()
    );
    println!(
        "| baseline: {total} resize patches sent by the driver itself ({} at a time) | {:.1} s |",
        args.concurrency,
        baseline.as_secs_f64()
    );
    println!("| resize patches | {issued_total:.0} |");
    println!(
        "| updater API requests per resize | {:.2} (resize {:.0}, get {:.0}, status {:.0}, event {:.0}) |",
        requests / issued_total.max(1.0),
        by_verb("resize"),
        by_verb("get"),
        by_verb("status"),
        by_verb("event")
    );
    println!("| updater CPU until every resize completed | {cpu:.1} s |");
    println!("| updater peak RSS | {rss:.1} MiB (after the first pass: {ready_rss:.1} MiB) |");
    Ok(())
}
