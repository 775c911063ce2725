//! `admission-bench`: what the size webhook adds to a pod create, on a real API server.
//!
//! Starts a control plane and the `tailor-updater` binary serving its webhook on loopback
//! (self-managed certificates), registered for one namespace (`with`) and not for its twin
//! (`without`). Each namespace holds the same Deployment, ReplicaSet and VerticalAutoscaler
//! (with a current recommendation, so every pod in `with` is sized and patched). Then it
//! creates `--pods` pods owned by the ReplicaSet in each namespace, alternating between them so
//! both see the same load, `--concurrency` creates at a time, and prints the latency of a
//! create with and without the webhook (p50, p99), what the webhook adds, and the ratio of the
//! total create times. No controller or kubelet runs: the pods are only stored. Run it through
//! `hack/bench-admission.sh` (release build).

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
    /// Creates in flight at once (over both namespaces).
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
}

type Error = Box<dyn std::error::Error + Send + Sync>;

/// A Deployment `web`, its ReplicaSet and an `InPlace` VerticalAutoscaler with a current
/// recommendation in `ns`; returns the ReplicaSet's uid.
async fn workload(client: &kube::Client, ns: &str) -> Result<String, Error> {
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
    Ok(rs.metadata.uid.unwrap_or_default())
}

/// The size webhook for namespace `ns` at `port`.
async fn register(client: &kube::Client, ns: &str, port: u16) -> Result<(), Error> {
    let config = tailor_e2e::webhooks::size("tailor", port, ns);
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

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args = Args::parse();
    let cp = ControlPlane::start().await?;
    let client = cp.client();
    let with = cp.namespace("with").await?;
    let without = cp.namespace("without").await?;
    let rs_with = workload(&client, &with).await?;
    let rs_without = workload(&client, &without).await?;

    let port = free_port()?;
    let admin = free_port()?;
    let exe = std::env::current_exe()?;
    let log = cp.dir().join("updater.log");
    let mut updater = std::process::Command::new(exe.with_file_name("tailor-updater"))
        .args([
            "run",
            &format!("--admin-addr=127.0.0.1:{admin}"),
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
    register(&client, &with, port).await?;
    let pods_with = Api::<Pod>::namespaced(client.clone(), &with);
    let pods_without = Api::<Pod>::namespaced(client.clone(), &without);
    wait_sized(&pods_with, &rs_with).await?;

    // Alternate: pod i goes to `with` when i is even, to `without` when odd.
    let jobs = (0..2 * args.pods).map(|i| {
        let (api, uid, webhook) = if i % 2 == 0 {
            (pods_with.clone(), rs_with.clone(), true)
        } else {
            (pods_without.clone(), rs_without.clone(), false)
        };
        async move {
            let p = pod(i / 2 + 1, &uid)?;
            let t = Instant::now();
            let created = api.create(&PostParams::default(), &p).await?;
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            let sized = created
                .metadata
                .annotations
                .is_some_and(|a| a.contains_key("tailor.dev/sized-at-admission"));
            Ok::<_, Error>((webhook, ms, sized))
        }
    });
    let t = Instant::now();
    let results: Vec<Result<(bool, f64, bool), Error>> = futures::stream::iter(jobs)
        .buffer_unordered(args.concurrency.max(1))
        .collect()
        .await;
    let wall = t.elapsed().as_secs_f64();
    let (mut on, mut off, mut not_sized) = (Vec::new(), Vec::new(), 0);
    for r in results {
        let (webhook, ms, sized) = r?;
        if webhook {
            on.push(ms);
            not_sized += usize::from(!sized);
        } else {
            off.push(ms);
        }
    }
    if not_sized > 0 {
        let _ = updater.kill();
        return Err(format!("{not_sized} pods created through the webhook were not sized").into());
    }
    on.sort_by(f64::total_cmp);
    off.sort_by(f64::total_cmp);
    let (sum_on, sum_off): (f64, f64) = (on.iter().sum(), off.iter().sum());
    println!(
        "pod creates: {} with the webhook (all sized), {} without, {} at a time, {wall:.1} s in all",
        on.len(),
        off.len(),
        args.concurrency
    );
    for (name, p) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99)] {
        let (a, b) = (percentile(&on, p), percentile(&off, p));
        println!(
            "{name}: {a:.2} ms with, {b:.2} ms without, {:.2} ms added",
            a - b
        );
    }
    println!(
        "total create time: {sum_on:.0} ms with, {sum_off:.0} ms without, ratio {:.3}",
        sum_on / sum_off
    );
    let metrics = reqwest::get(format!("http://127.0.0.1:{admin}/metrics"))
        .await
        .ok();
    if let Some(m) = metrics {
        let text = m.text().await.unwrap_or_default();
        for line in text.lines().filter(|l| {
            l.starts_with("tailor_admission_duration_seconds_sum")
                || l.starts_with("tailor_admission_duration_seconds_count")
        }) {
            println!("{line}");
        }
    }
    let _ = updater.kill();
    Ok(())
}
