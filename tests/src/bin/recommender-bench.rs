//! `recommender-bench`: the recommender at scale on a real Prometheus and API server.
//!
//! Backfills Prometheus with `--days` of history of `--workloads` Deployments, each with
//! `--rollouts` pods in sequence (one container each), creates one VerticalAutoscaler per
//! workload, runs the `tailor-recommender run` binary as a separate process, and prints for the
//! first pass, a steady-state pass, a pass while Prometheus is down (a proxy refuses
//! connections), the first pass once it is back, and the first pass after a restart: wall time,
//! Prometheus queries, samples read, the recommender's and Prometheus's peak RSS. Run it through
//! `hack/bench-recommender.sh` (release build).

use std::io::Write as _;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use futures::StreamExt;
use kube::api::{Api, PostParams};
use serde_json::json;
use tailor_e2e::prometheus::{Prometheus, PrometheusOptions};
use tailor_e2e::sim::history::{
    HistoryContainer, Inventory, ReplicaSetOwner, Window, write_openmetrics,
};
use tailor_e2e::sim::scrape;
use tailor_e2e::sim::usage::{PodUsage, container_seed};
use tailor_e2e::{ControlPlane, free_port};

/// Recommender benchmark.
#[derive(Debug, Parser)]
struct Args {
    /// Workloads (Deployments with a VerticalAutoscaler each).
    #[arg(long, default_value_t = 2000)]
    workloads: usize,
    /// Pods per workload over the window (successive rollouts).
    #[arg(long, default_value_t = 2)]
    rollouts: usize,
    /// Days of history (the default window, `historyWindow: 14d`).
    #[arg(long, default_value_t = 14)]
    days: i64,
    /// Resolution of the backfilled history and of the recommender's queries, seconds.
    #[arg(long, default_value_t = 600)]
    step: i64,
    /// The recommender's refresh interval, seconds (the steady-state pass starts after it).
    #[arg(long, default_value_t = 60)]
    refresh: u64,
    /// The recommender's concurrency.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
}

fn vm_hwm_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<f64>().ok())
            })
        })
        .unwrap_or(0.0)
        / 1024.0
}

/// The sum of a metric family's samples in an exposition.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.starts_with(name)
                && (l[name.len()..].starts_with(' ') || l[name.len()..].starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

struct Pass {
    seconds: f64,
    queries: f64,
    samples: f64,
    recommender_mib: f64,
    prometheus_mib: f64,
}

async fn scrape(admin: &str) -> String {
    match reqwest::get(format!("{admin}/metrics")).await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Waits until the recommender has finished `passes` passes since it started.
async fn wait_pass(
    admin: &str,
    reconciles: f64,
    since: f64,
    timeout: Duration,
) -> Result<String, String> {
    let deadline = Instant::now() + timeout;
    loop {
        let text = scrape(admin).await;
        if metric(&text, "tailor_recommender_reconciles_total") >= reconciles
            && metric(&text, "tailor_recommender_last_pass_timestamp_seconds") > since
        {
            return Ok(text);
        }
        if Instant::now() > deadline {
            return Err(format!("no pass after {timeout:?}; last metrics:\n{text}"));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let cp = ControlPlane::start().await?;
    let client = cp.client();

    // History: workload i has pods w-i-0 .. w-i-(rollouts-1), one after the other.
    let end = (now() as i64) / args.step * args.step;
    let start = end - args.days * 86_400;
    let slice = (end - start) / args.rollouts as i64;
    let model = PodUsage::parse(r#"{"*": {"model": "daily", "cpu": {"min": 0.05, "max": 0.4}, "memory": {"min": "200Mi", "max": "400Mi"}, "noise": 0.1}}"#)?
        .model("app")
        .cloned()
        .ok_or("model")?;
    let mut containers = Vec::new();
    let mut replicasets = Vec::new();
    for w in 0..args.workloads {
        for r in 0..args.rollouts {
            let rs = format!("w-{w}-{r}");
            let pod = format!("{rs}-x");
            replicasets.push(ReplicaSetOwner {
                namespace: "bench".into(),
                replicaset: rs.clone(),
                owner_kind: "Deployment".into(),
                owner_name: format!("w-{w}"),
            });
            let from = start + r as i64 * slice;
            containers.push(HistoryContainer {
                namespace: "bench".into(),
                pod: pod.clone(),
                uid: String::new(),
                pod_ip: String::new(),
                container: "app".into(),
                image: "example/app:1".into(),
                node: format!("node-{}", w % 100),
                host_ip: scrape::node_ip(w % 100),
                model: model.clone(),
                seed: container_seed(1, "bench", &pod, "app"),
                trace: None,
                cpu: (None, None),
                memory: (None, None),
                owner: Some(("ReplicaSet".into(), rs)),
                lifetime: Some((from, (from + slice - args.step).min(end))),
                oom_kills: vec![],
            });
        }
    }
    let dir = tempfile::tempdir()?;
    let om = dir.path().join("history.om");
    let t = Instant::now();
    {
        let mut file = std::io::BufWriter::new(std::fs::File::create(&om)?);
        let inventory = Inventory {
            containers: &containers,
            replicasets: &replicasets,
            nodes: &[],
        };
        write_openmetrics(&inventory, Window::new(start, end, args.step), &mut file)?;
        file.flush()?;
    }
    let size = std::fs::metadata(&om)?.len();
    eprintln!(
        "wrote {:.0} MiB of OpenMetrics in {:.0} s",
        size as f64 / 1048576.0,
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let prom = Prometheus::start(PrometheusOptions {
        backfill_file: Some(om.clone()),
        ..Default::default()
    })
    .await?;
    eprintln!(
        "backfilled and started Prometheus in {:.0} s",
        t.elapsed().as_secs_f64()
    );
    std::fs::remove_file(&om)?;

    // One VerticalAutoscaler per workload.
    let ns: k8s_openapi::api::core::v1::Namespace =
        serde_json::from_value(json!({"metadata": {"name": "bench"}}))?;
    Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await?;
    let vas = Api::<tailor_crds::VerticalAutoscaler>::namespaced(client.clone(), "bench");
    let failed = futures::stream::iter(0..args.workloads)
        .map(|w| {
            let vas = vas.clone();
            async move {
                let va: tailor_crds::VerticalAutoscaler = serde_json::from_value(json!({
                    "apiVersion": "tailor.dev/v1alpha1", "kind": "VerticalAutoscaler",
                    "metadata": {"name": format!("w-{w}")},
                    "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": format!("w-{w}")}},
                }))
                .map_err(|e| e.to_string())?;
                vas.create(&PostParams::default(), &va).await.map(|_| ()).map_err(|e| e.to_string())
            }
        })
        .buffer_unordered(32)
        .filter(|r| futures::future::ready(r.is_err()))
        .count()
        .await;
    if failed > 0 {
        return Err(format!("{failed} VerticalAutoscalers not created").into());
    }

    // The recommender reads Prometheus through a proxy the bench takes down for a pass.
    let proxy =
        tailor_e2e::fault::FaultProxy::start(prom.url().trim_start_matches("http://")).await?;
    let prom_url = format!("http://{}", proxy.address());
    let bin = std::env::current_exe()?.with_file_name("tailor-recommender");
    let port = free_port()?;
    let admin = format!("http://127.0.0.1:{port}");
    let spawn = || {
        std::process::Command::new(&bin)
            .args([
                "run",
                "--prometheus-url",
                &prom_url,
                "--admin-addr",
                &format!("127.0.0.1:{port}"),
                "--leader-election",
                "false",
                "--refresh-seconds",
                &args.refresh.to_string(),
                "--history-step-seconds",
                &args.step.to_string(),
                "--concurrency",
                &args.concurrency.to_string(),
                "--log",
                "warn",
            ])
            .env("KUBECONFIG", cp.kubeconfig())
            .spawn()
    };
    let n = args.workloads as f64;
    let timeout = Duration::from_secs(1800);
    let measure = |text: &str, base: &str, pid: u32| Pass {
        seconds: metric(text, "tailor_recommender_last_pass_duration_seconds"),
        queries: metric(text, "tailor_recommender_prometheus_queries_total")
            - metric(base, "tailor_recommender_prometheus_queries_total"),
        samples: metric(text, "tailor_recommender_prometheus_samples_total")
            - metric(base, "tailor_recommender_prometheus_samples_total"),
        recommender_mib: vm_hwm_mib(pid),
        prometheus_mib: vm_hwm_mib(prom.pid()),
    };

    let mut child = spawn()?;
    let t0 = now();
    let first_text = wait_pass(&admin, n, t0, timeout).await?;
    let first = measure(&first_text, "", child.id());
    let steady_text = wait_pass(
        &admin,
        2.0 * n,
        metric(
            &first_text,
            "tailor_recommender_last_pass_timestamp_seconds",
        ),
        timeout,
    )
    .await?;
    let steady = measure(&steady_text, &first_text, child.id());
    // Prometheus down for a pass, then back: the pass after it reads each object's gap.
    let last = |text: &str| metric(text, "tailor_recommender_last_pass_timestamp_seconds");
    proxy.set(tailor_e2e::fault::Mode::Down);
    let down_text = wait_pass(&admin, 3.0 * n, last(&steady_text), timeout).await?;
    let down = measure(&down_text, &steady_text, child.id());
    proxy.set(tailor_e2e::fault::Mode::Pass);
    let back_text = wait_pass(&admin, 4.0 * n, last(&down_text), timeout).await?;
    let back = measure(&back_text, &down_text, child.id());
    let _ = child.kill();
    let _ = child.wait();
    let mut child = spawn()?;
    let t1 = now();
    let restart_text = wait_pass(&admin, n, t1, timeout).await?;
    let restart = measure(&restart_text, "", child.id());
    let _ = child.kill();
    let _ = child.wait();

    let containers_n = args.workloads * args.rollouts;
    println!(
        "workloads {} ({} pods over the window, {} container series of history), {} days at {} s",
        args.workloads,
        containers_n,
        containers_n * 4,
        args.days,
        args.step
    );
    println!(
        "{:<22} {:>10} {:>10} {:>14} {:>18} {:>18}",
        "pass", "wall s", "queries", "samples read", "recommender MiB", "prometheus MiB"
    );
    for (name, p) in [
        ("first", &first),
        ("steady state", &steady),
        ("Prometheus down", &down),
        ("first after the outage", &back),
        ("first after restart", &restart),
    ] {
        println!(
            "{:<22} {:>10.1} {:>10.0} {:>14.0} {:>18.1} {:>18.1}",
            name, p.seconds, p.queries, p.samples, p.recommender_mib, p.prometheus_mib
        );
    }
    Ok(())
}
