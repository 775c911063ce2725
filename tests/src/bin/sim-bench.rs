//! `sim-bench`: starts a real control plane and one `tailor-sim` process with N nodes, creates M
//! pods, resizes some of them, and prints pods started per second, resizes handled per second
//! and the simulator's peak RSS. Run it through `hack/bench-sim.sh` (release build).

use std::time::{Duration, Instant};

use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use tailor_e2e::ControlPlane;

/// Simulator benchmark.
#[derive(Debug, Parser)]
struct Args {
    /// Simulated nodes.
    #[arg(long, default_value_t = 100)]
    nodes: usize,
    /// Pods to create.
    #[arg(long, default_value_t = 5000)]
    pods: usize,
    /// Pods to resize after all are running.
    #[arg(long, default_value_t = 1000)]
    resizes: usize,
    /// Concurrent API requests of the driver.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
}

fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

async fn count(api: &Api<Pod>, check: impl Fn(&Pod) -> bool) -> Result<usize, kube::Error> {
    let mut n = 0;
    let mut lp = ListParams::default().limit(1000);
    loop {
        let page = api.list(&lp).await?;
        n += page.items.iter().filter(|p| check(p)).count();
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
            _ => return Ok(n),
        }
    }
}

async fn wait_until(
    api: &Api<Pod>,
    want: usize,
    what: &str,
    check: impl Fn(&Pod) -> bool + Copy,
) -> Result<Duration, Box<dyn std::error::Error>> {
    let start = Instant::now();
    loop {
        let n = count(api, check).await?;
        if n >= want {
            return Ok(start.elapsed());
        }
        if start.elapsed() > Duration::from_secs(600) {
            return Err(format!("only {n} of {want} pods {what} after 600 s").into());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let cp = ControlPlane::start().await?;
    let client = cp.client();
    let ns = cp.namespace("bench").await?;

    let config = cp.dir().join("sim.yaml");
    std::fs::write(
        &config,
        format!(
            "tickSeconds: 1\nactuationDelaySeconds: 0.5\nnodes:\n  - {{name: bench, count: {}, cpu: '64', memory: 256Gi, pods: 250}}\n",
            args.nodes
        ),
    )?;
    let sim_bin = std::env::current_exe()?.with_file_name("tailor-sim");
    let mut sim = std::process::Command::new(&sim_bin)
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
        .map_err(|e| format!("start {}: {e}", sim_bin.display()))?;
    let pid = sim.id();

    let api = Api::<Pod>::namespaced(client, &ns);
    let started = Instant::now();
    let usage = json!({"*": {"model": "daily", "cpu": {"min": 0.02, "max": 0.1}, "memory": {"min": "50Mi", "max": "80Mi"}, "noise": 0.05}}).to_string();
    let created = futures::stream::iter(0..args.pods)
        .map(|i| {
            let api = api.clone();
            let usage = usage.clone();
            async move {
                let pod: Pod = serde_json::from_value(json!({
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": format!("p-{i:05}"), "annotations": {"sim.tailor.dev/usage": usage}},
                    "spec": {"containers": [{"name": "app", "image": "example/app:1",
                        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "200m", "memory": "256Mi"}}}]},
                }))
                .map_err(|e| e.to_string())?;
                api.create(&PostParams::default(), &pod).await.map(|_| ()).map_err(|e| e.to_string())
            }
        })
        .buffer_unordered(args.concurrency)
        .filter(|r| futures::future::ready(r.is_err()))
        .collect::<Vec<_>>()
        .await;
    if let Some(Err(e)) = created.first() {
        return Err(format!("{} pods not created, first error: {e}", created.len()).into());
    }
    let create_time = started.elapsed();
    let running = |p: &Pod| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
    wait_until(&api, args.pods, "Running", running).await?;
    let run_time = started.elapsed();

    let resize_start = Instant::now();
    let errors = futures::stream::iter(0..args.resizes.min(args.pods))
        .map(|i| {
            let api = api.clone();
            async move {
                let patch = json!({"spec": {"containers": [{"name": "app", "resources": {"requests": {"cpu": "150m"}, "limits": {"cpu": "300m"}}}]}});
                api.patch_resize(&format!("p-{i:05}"), &PatchParams::default(), &Patch::Strategic(patch)).await.map(|_| ())
            }
        })
        .buffer_unordered(args.concurrency)
        .filter(|r| futures::future::ready(r.is_err()))
        .count()
        .await;
    if errors > 0 {
        return Err(format!("{errors} resize patches failed").into());
    }
    let resized = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|c| c.first())
            .and_then(|c| c.resources.as_ref())
            .and_then(|r| r.requests.as_ref())
            .is_some_and(|r| r.get("cpu").is_some_and(|q| q.0 == "150m"))
    };
    wait_until(&api, args.resizes.min(args.pods), "resized", resized).await?;
    let resize_time = resize_start.elapsed();
    let hwm = vm_hwm_kib(pid).unwrap_or(0);
    let _ = sim.kill();
    let _ = sim.wait();

    println!("nodes                       {}", args.nodes);
    println!("pods                        {}", args.pods);
    println!(
        "pods created in             {:.1} s",
        create_time.as_secs_f64()
    );
    println!(
        "pods Running in             {:.1} s",
        run_time.as_secs_f64()
    );
    println!(
        "pods started per second     {:.0}",
        args.pods as f64 / run_time.as_secs_f64()
    );
    println!(
        "resizes                     {}",
        args.resizes.min(args.pods)
    );
    println!(
        "resizes handled in          {:.1} s",
        resize_time.as_secs_f64()
    );
    println!(
        "resizes handled per second  {:.0}",
        args.resizes.min(args.pods) as f64 / resize_time.as_secs_f64()
    );
    println!("simulator peak RSS          {:.1} MiB", hwm as f64 / 1024.0);
    Ok(())
}
