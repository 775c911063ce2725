//! `admission-bench`: what the size webhook adds to a pod create, on a real API server.
//!
//! Starts a control plane and the `tailor-updater` binary serving its webhook on loopback
//! (self-managed certificates). Four namespaces hold the same Deployment and ReplicaSet:
//! `sized` also has a VerticalAutoscaler with a current recommendation and tailor's webhook
//! registered (every pod is sized and patched); `passthrough` has tailor's webhook registered
//! but no VerticalAutoscaler (every pod is answered "allowed, unchanged"); `floor` has the
//! minimal Go webhook of `hack/bench/floor-webhook` registered instead (the least any webhook
//! call costs); `without` has no webhook. It creates `--pods` pods owned by the ReplicaSet in
//! each, alternating so all see the same load, `--concurrency` creates at a time, and prints
//! the latency of a create in the first three against `without` (p50, p90, p99), what the
//! webhook adds, and the ratio of the total create times. No controller or kubelet runs: the
//! pods are only stored. Run it through `hack/bench-admission.sh` (release build).

use std::time::{Duration, Instant};

use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use tailor_e2e::{ControlPlane, free_port};

/// Admission benchmark.
#[derive(Debug, Parser)]
struct Args {
    /// Pods created in each namespace.
    #[arg(long, default_value_t = 1000)]
    pods: usize,
    /// Creates in flight at once (over all namespaces).
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// The minimal Go webhook (hack/bench/floor-webhook) measured as the `floor` group.
    #[arg(long)]
    floor_webhook: std::path::PathBuf,
}

type Error = Box<dyn std::error::Error + Send + Sync>;

/// A Deployment `web` and its ReplicaSet in `ns`, with (`autoscaled`) an `InPlace`
/// VerticalAutoscaler with a current recommendation; returns the ReplicaSet's uid.
async fn workload(client: &kube::Client, ns: &str, autoscaled: bool) -> Result<String, Error> {
    let pp = PostParams::default();
    let template = json!({"metadata": {"labels": {"app": "web"}},
        "spec": {"containers": [{"name": "app", "image": "example/app:1",
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}}}]}});
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": template},
    }))?;
    let d = Api::<Deployment>::namespaced(client.clone(), ns)
        .create(&pp, &d)
        .await?;
    let rs: ReplicaSet = serde_json::from_value(json!({
        "metadata": {"name": "web-1", "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
            "name": "web", "uid": d.metadata.uid, "controller": true}]},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "web"}}, "template": template},
    }))?;
    let rs = Api::<ReplicaSet>::namespaced(client.clone(), ns)
        .create(&pp, &rs)
        .await?;
    let uid = rs.metadata.uid.unwrap_or_default();
    if !autoscaled {
        return Ok(uid);
    }
    let vas = Api::<tailor_crds::VerticalAutoscaler>::namespaced(client.clone(), ns);
    let va: tailor_crds::VerticalAutoscaler = serde_json::from_value(json!({
        "apiVersion": "tailor.dev/v1alpha1", "kind": "VerticalAutoscaler", "metadata": {"name": "web"},
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                 "updatePolicy": {"updateMode": "InPlace"}},
    }))?;
    vas.create(&pp, &va).await?;
    let status = json!({
        "apiVersion": "tailor.dev/v1alpha1", "kind": "VerticalAutoscaler",
        "status": {"recommendation": {"observedGeneration": 1,
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "containerRecommendations": [{"containerName": "app", "target": {"cpu": "250m", "memory": "200Mi"},
                "memoryFloor": {"value": "150Mi", "reason": "Peak"}}]}},
    });
    vas.patch_status(
        "web",
        &PatchParams::apply("tailor-recommender").force(),
        &Patch::Apply(status),
    )
    .await?;
    Ok(uid)
}

/// The size webhook configuration `name` for `namespaces` at `port`, with `ca_bundle` (else
/// set by the updater).
async fn register(
    client: &kube::Client,
    name: &str,
    namespaces: &[&str],
    port: u16,
    ca_bundle: Option<&[u8]>,
) -> Result<(), Error> {
    let mut config = tailor_e2e::webhooks::size(name, port, namespaces);
    if let Some(ca) = ca_bundle {
        for w in config.webhooks.iter_mut().flatten() {
            w.client_config.ca_bundle = Some(k8s_openapi::ByteString(ca.to_vec()));
        }
    }
    Api::<k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration>::all(
        client.clone(),
    )
    .create(&PostParams::default(), &config)
    .await?;
    Ok(())
}

fn pod(i: usize, rs_uid: &str) -> Result<Pod, Error> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": format!("web-{i}"), "labels": {"app": "web"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-1",
                                 "uid": rs_uid, "controller": true}]},
        "spec": {"containers": [{"name": "app", "image": "example/app:1",
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}}}]},
    }))?)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Waits until a create in `ns` comes back sized (the webhook serves and the API server calls
/// it).
async fn wait_sized(pods: &Api<Pod>, rs_uid: &str) -> Result<(), Error> {
    let started = Instant::now();
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    loop {
        if let Ok(p) = pods.create(&dry, &pod(0, rs_uid)?).await
            && p.metadata
                .annotations
                .is_some_and(|a| a.contains_key("tailor.dev/sized-at-admission"))
        {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(60) {
            return Err("the webhook never sized a pod within 60 s".into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The groups of creates, alternated: through tailor's webhook with a VerticalAutoscaler
/// (sized), through it without one (answered unchanged), through the minimal Go webhook
/// (floor), and without a webhook.
const GROUPS: [&str; 4] = ["sized", "passthrough", "floor", "without"];
const WITHOUT: usize = 3;

/// Starts the updater serving its webhook on loopback; returns it and its admin address.
fn start_updater(cp: &ControlPlane, port: u16) -> Result<(std::process::Child, String), Error> {
    let admin = format!("127.0.0.1:{}", free_port()?);
    let exe = std::env::current_exe()?;
    let log = cp.dir().join("updater.log");
    let updater = std::process::Command::new(exe.with_file_name("tailor-updater"))
        .args([
            "run",
            &format!("--admin-addr={admin}"),
            "--leader-election=false",
            "--webhook-certs=self-managed",
            &format!("--webhook-addr=127.0.0.1:{port}"),
            "--webhook-names=127.0.0.1",
            "--webhook-configurations=tailor",
            "--webhook-secret=tailor-webhook-tls",
            "--lease-namespace=default",
            "--log=warn",
        ])
        .env("KUBECONFIG", cp.kubeconfig())
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    Ok((updater, admin))
}

/// Starts the minimal Go webhook on loopback; returns it, its port and its certificate (PEM),
/// once it accepts connections.
async fn start_floor(
    cp: &ControlPlane,
    exe: &std::path::Path,
) -> Result<(std::process::Child, u16, Vec<u8>), Error> {
    let port = free_port()?;
    let ca = cp.dir().join("floor-webhook.crt");
    let child = std::process::Command::new(exe)
        .arg(format!("-addr=127.0.0.1:{port}"))
        .arg(format!("-ca-file={}", ca.display()))
        .stderr(std::fs::File::create(cp.dir().join("floor-webhook.log"))?)
        .spawn()
        .map_err(|e| {
            format!(
                "{}: {e} (build it with hack/bench-admission.sh)",
                exe.display()
            )
        })?;
    let started = Instant::now();
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
            && let Ok(pem) = std::fs::read(&ca)
        {
            return Ok((child, port, pem));
        }
        if started.elapsed() > Duration::from_secs(10) {
            return Err("the floor webhook did not listen within 10 s".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Creates `per_group` pods in each group's namespace, alternating; returns each group's
/// create latencies (ms), the wall time, and how many pods of the first group came back
/// unsized.
async fn create_all(
    targets: &[(Api<Pod>, String)],
    per_group: usize,
    concurrency: usize,
) -> Result<(Vec<Vec<f64>>, f64, usize), Error> {
    let jobs = (0..targets.len() * per_group).map(|i| {
        let g = i % targets.len();
        let (api, uid) = targets[g].clone();
        async move {
            let p = pod(i / targets.len() + 1, &uid)?;
            let t = Instant::now();
            let created = api.create(&PostParams::default(), &p).await?;
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            let sized = created
                .metadata
                .annotations
                .is_some_and(|a| a.contains_key("tailor.dev/sized-at-admission"));
            Ok::<_, Error>((g, ms, sized))
        }
    });
    let t = Instant::now();
    let results: Vec<Result<(usize, f64, bool), Error>> = futures::stream::iter(jobs)
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let wall = t.elapsed().as_secs_f64();
    let mut latencies = vec![Vec::new(); targets.len()];
    let mut not_sized = 0;
    for r in results {
        let (g, ms, sized) = r?;
        latencies[g].push(ms);
        not_sized += usize::from(g == 0 && !sized);
    }
    for l in &mut latencies {
        l.sort_by(f64::total_cmp);
    }
    Ok((latencies, wall, not_sized))
}

fn report(latencies: &[Vec<f64>], wall: f64, concurrency: usize) {
    let without = &latencies[WITHOUT];
    println!(
        "pod creates: {} per group ({}), {concurrency} at a time, {wall:.1} s in all",
        without.len(),
        GROUPS.join(", ")
    );
    let total_without: f64 = without.iter().sum();
    for (g, name) in GROUPS.iter().enumerate().take(WITHOUT) {
        let with = &latencies[g];
        for (label, p) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99)] {
            let (a, b) = (percentile(with, p), percentile(without, p));
            println!(
                "{name} {label}: {a:.2} ms, without the webhook {b:.2} ms, {:.2} ms added",
                a - b
            );
        }
        let total: f64 = with.iter().sum();
        println!(
            "{name} total create time: {total:.0} ms, without the webhook {total_without:.0} ms, ratio {:.3}",
            total / total_without
        );
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args = Args::parse();
    let cp = ControlPlane::start().await?;
    let client = cp.client();
    let mut targets = Vec::new();
    for (g, name) in GROUPS.iter().enumerate() {
        let ns = cp.namespace(name).await?;
        let uid = workload(&client, &ns, g == 0).await?;
        targets.push((Api::<Pod>::namespaced(client.clone(), &ns), uid, ns));
    }
    let port = free_port()?;
    let (mut updater, admin) = start_updater(&cp, port)?;
    let webhooked = [targets[0].2.as_str(), targets[1].2.as_str()];
    register(&client, "tailor", &webhooked, port, None).await?;
    let (mut floor, floor_port, ca) = start_floor(&cp, &args.floor_webhook).await?;
    register(&client, "floor", &[&targets[2].2], floor_port, Some(&ca)).await?;
    wait_sized(&targets[0].0, &targets[0].1).await?;
    let apis: Vec<(Api<Pod>, String)> = targets
        .iter()
        .map(|(a, u, _)| (a.clone(), u.clone()))
        .collect();
    let (latencies, wall, not_sized) = create_all(&apis, args.pods, args.concurrency).await?;
    let metrics = reqwest::get(format!("http://{admin}/metrics")).await;
    let _ = updater.kill();
    let _ = floor.kill();
    if not_sized > 0 {
        return Err(format!("{not_sized} pods created through the webhook were not sized").into());
    }
    report(&latencies, wall, args.concurrency);
    if let Ok(m) = metrics {
        let text = m.text().await.unwrap_or_default();
        for line in text.lines().filter(|l| {
            l.starts_with("tailor_admission_duration_seconds_sum")
                || l.starts_with("tailor_admission_duration_seconds_count")
        }) {
            println!("{line}");
        }
    }
    Ok(())
}
