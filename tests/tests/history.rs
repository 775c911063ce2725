//! The history generator against a real Prometheus: what it writes is read back exactly, and
//! backfilled under a live scrape of the simulator it joins the scraped series: the same label
//! sets (one series per container, pod and node from the history's start to now), no gap
//! where the two meet, and KRR's `rate(...[75s])` has data over the whole window.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use serde_json::json;
use tailor_e2e::ControlPlane;
use tailor_e2e::prometheus::{BackfillUntilStart, Prometheus, PrometheusOptions};
use tailor_e2e::sim::config::SimConfig;
use tailor_e2e::sim::history::{
    HistoryContainer, HistoryNode, Inventory, Window, write_openmetrics,
};
use tailor_e2e::sim::runtime;
use tailor_e2e::sim::usage::{PodUsage, container_seed};

const WAIT: Duration = Duration::from_secs(30);
/// The history's scrape interval.
const INTERVAL: i64 = 15;

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[tokio::test]
async fn history_generator_output_backfills_and_queries_back_exactly() {
    use tailor_e2e::sim::history::{HistoryContainer, generate, openmetrics};
    use tailor_e2e::sim::usage::{PodUsage, container_seed};
    let models = PodUsage::parse(
        &json!({
            "web": {"model": "daily", "cpu": {"min": 0.1, "max": 1.2}, "memory": {"min": "200Mi", "max": "350Mi"}, "noise": 0.1},
            "jvm": {"model": "jvm", "cpu": 0.4, "heapMax": "1Gi", "nonHeap": "300Mi", "growSeconds": 7200, "noise": 0.02},
        })
        .to_string(),
    )
    .unwrap();
    let containers: Vec<HistoryContainer> = ["web", "jvm"]
        .into_iter()
        .map(|name| HistoryContainer {
            namespace: "shop".into(),
            pod: format!("{name}-0"),
            uid: format!("uid-{name}"),
            pod_ip: "10.244.0.2".into(),
            container: name.into(),
            image: format!("example/{name}:1"),
            node: "sim-0".into(),
            host_ip: "10.0.0.2".into(),
            model: models.model(name).unwrap().clone(),
            seed: container_seed(1, "shop", &format!("{name}-0"), name),
            trace: None,
            cpu: (Some(0.5), Some(2.0)),
            memory: (Some(512.0 * 1048576.0), Some(2048.0 * 1048576.0)),
            owner: Some(("StatefulSet".into(), name.into())),
            lifetime: None,
            oom_kills: vec![],
        })
        .collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let step = 60;
    let end = (now - 3600) / step * step;
    let start = end - 2 * 86_400;
    let series = generate(&containers, start, end, step);
    let prom = tailor_e2e::Prometheus::backfilled(&openmetrics(&series))
        .await
        .unwrap();
    for s in &series {
        let selector = s
            .labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{v}\""))
            .collect::<Vec<_>>()
            .join(",");
        let got = prom
            .query_range(
                &format!("{}{{{selector}}}", s.metric),
                start as f64,
                end as f64,
                step as f64,
            )
            .await
            .unwrap();
        assert_eq!(got.len(), 1, "{} {selector}", s.metric);
        let values: Vec<(i64, f64)> = got[0]
            .values
            .iter()
            .map(|(t, v)| (*t as i64, v.parse().unwrap()))
            .collect();
        assert_eq!(values, s.samples, "{} {selector}", s.metric);
    }
}

/// The usage annotation of both test pods.
fn usage() -> String {
    json!({"*": {"model": "daily", "cpu": {"min": 0.1, "max": 0.3}, "memory": {"min": "100Mi", "max": "200Mi"}, "noise": 0.05}})
        .to_string()
}

/// Pod `name` on `node` (bound there, as a scheduler would), one container `app`, with a CPU
/// limit if `cpu_limit`; returns it once it runs.
async fn run_pod(api: &Api<Pod>, name: &str, node: &str, cpu_limit: bool) -> Pod {
    let limits = if cpu_limit {
        json!({"cpu": "1", "memory": "512Mi"})
    } else {
        json!({"memory": "512Mi"})
    };
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "annotations": {"sim.tailor.dev/usage": usage()}},
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": "example/app:1",
            "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": limits}}]},
    }))
    .unwrap();
    api.create(&PostParams::default(), &pod).await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let p = api.get(name).await.unwrap();
        if p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running") {
            return p;
        }
        assert!(tokio::time::Instant::now() < deadline, "{name} not running");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The history of a running pod, as the demo writes it: its UID, IPs and node from its status.
fn history_of(p: &Pod, ns: &str, cpu_limit: bool) -> HistoryContainer {
    let status = p.status.clone().unwrap();
    let model = PodUsage::parse(&usage())
        .unwrap()
        .model("app")
        .unwrap()
        .clone();
    let name = p.name_any();
    HistoryContainer {
        uid: p.uid().unwrap(),
        pod_ip: status.pod_ip.unwrap(),
        host_ip: status.host_ip.unwrap(),
        node: p.spec.as_ref().unwrap().node_name.clone().unwrap(),
        image: "example/app:1".into(),
        seed: container_seed(1, ns, &name, "app"),
        cpu: (Some(0.25), cpu_limit.then_some(1.0)),
        memory: (Some(256.0 * 1048576.0), Some(512.0 * 1048576.0)),
        owner: None,
        ..HistoryContainer::new(ns, &name, "app", model, ("", ""))
    }
}

/// Label sets (`__name__` included) of the series with samples in `range`.
async fn label_sets(prom: &Prometheus, ns: &str, range: (f64, f64)) -> BTreeSet<String> {
    let matches = [
        format!("{{__name__=~\"container_.+|kube_.+\",namespace=\"{ns}\"}}"),
        "{__name__=~\"kube_node_.+\"}".to_owned(),
    ];
    let matches: Vec<&str> = matches.iter().map(String::as_str).collect();
    let sets = prom.series(&matches, range.0, range.1).await.unwrap();
    sets.iter()
        .map(|l| {
            l.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect()
}

/// Waits until every target is up and both pods' working sets are scraped.
async fn wait_scraped(prom: &Prometheus, ns: &str, targets: usize) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let up = prom.query("sum(up)", now()).await.unwrap();
        let live = prom
            .query(
                &format!("count(timestamp(container_memory_working_set_bytes{{namespace=\"{ns}\"}}) > time() - 5)"),
                now(),
            )
            .await
            .unwrap();
        let value = |r: &[tailor_e2e::prometheus::InstantSample]| {
            r.first().map_or(0.0, |s| s.value.1.parse().unwrap())
        };
        if value(&up) == targets as f64 && value(&live) == 2.0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not scraped: up {up:?}, live {live:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Prometheus backfilled with two hours of `history` up to now, the last minutes written
/// right before it starts, scraping `targets` every second; returns it and when it started.
async fn backfilled_and_scraping(
    history: (Vec<HistoryContainer>, Vec<HistoryNode>),
    targets: Vec<tailor_e2e::prometheus::ScrapeTarget>,
    (start, end): (i64, i64),
) -> (Prometheus, f64) {
    let history = Arc::new(history);
    let render = move |window: Window| {
        let inventory = Inventory {
            containers: &history.0,
            replicasets: &[],
            nodes: &history.1,
        };
        let mut out = Vec::new();
        write_openmetrics(&inventory, window, &mut out).map_err(|e| e.to_string())?;
        String::from_utf8(out).map_err(|e| e.to_string())
    };
    let first = render(Window::new(start, end, INTERVAL)).unwrap();
    let prom = Prometheus::start(PrometheusOptions {
        backfill: Some(first),
        backfill_until_start: Some(BackfillUntilStart(Arc::new(move || {
            let until = now() as i64 / INTERVAL * INTERVAL;
            render(Window::new(start, until, INTERVAL).from(end + INTERVAL))
        }))),
        scrape_targets: targets,
        scrape_interval: Duration::from_secs(1),
        ..Default::default()
    })
    .await
    .unwrap();
    (prom, now())
}

/// The same label sets in the history and in the live scrape, and over the whole window: one
/// series each. Returns them.
async fn same_label_sets(
    prom: &Prometheus,
    ns: &str,
    (start, end, live_from): (i64, i64, f64),
) -> BTreeSet<String> {
    let t = now();
    let history = label_sets(prom, ns, (start as f64, end as f64)).await;
    let live = label_sets(prom, ns, (live_from + 1.0, t)).await;
    let all = label_sets(prom, ns, (start as f64, t)).await;
    let only_history: Vec<_> = history.difference(&live).collect();
    let only_live: Vec<_> = live.difference(&history).collect();
    assert!(
        only_history.is_empty() && only_live.is_empty(),
        "label sets differ:\nonly in the history: {only_history:#?}\nonly live: {only_live:#?}"
    );
    assert_eq!(all, live, "one series each over the whole window");
    let names: BTreeSet<&str> = live
        .iter()
        .filter_map(|l| l.split(',').find_map(|kv| kv.strip_prefix("__name__=")))
        .collect();
    for name in [
        "container_cpu_usage_seconds_total",
        "container_memory_working_set_bytes",
        "container_cpu_cfs_throttled_periods_total",
        "kube_pod_container_resource_limits",
        "kube_pod_owner",
        "kube_pod_info",
        "kube_pod_status_phase",
        "kube_pod_labels",
        "kube_pod_status_ready_time",
        "kube_node_status_capacity",
        "kube_node_status_allocatable",
    ] {
        assert!(names.contains(name), "{name} missing: {names:?}");
    }
    live
}

/// No gap where the history meets the live scrape; KRR's rate over 75 s at every minute.
async fn continuous(prom: &Prometheus, ns: &str, start: i64) {
    let t = now();
    let sel = format!("namespace=\"{ns}\"");
    let gaps = prom
        .query(
            &format!("max_over_time((time() - timestamp(container_memory_working_set_bytes{{{sel}}}))[{}s:1s])", t as i64 - start),
            t,
        )
        .await
        .unwrap();
    assert_eq!(gaps.len(), 2, "{gaps:?}");
    for g in &gaps {
        let gap: f64 = g.value.1.parse().unwrap();
        assert!(gap <= 2.0 * INTERVAL as f64, "a gap of {gap} s: {g:?}");
    }
    let rate = format!("rate(container_cpu_usage_seconds_total{{job=\"kubelet\",{sel}}}[75s])");
    let from = (start + 75) as f64;
    let r = prom.query_range(&rate, from, t, 60.0).await.unwrap();
    let steps = ((t - from) / 60.0).floor() as usize + 1;
    assert_eq!(r.len(), 2, "{rate}: {r:?}");
    for s in &r {
        assert_eq!(
            s.values.len(),
            steps,
            "{rate}: a point every minute: {:?}",
            s.metric
        );
    }
    let by_job: BTreeMap<String, usize> = prom
        .query(
            &format!("count by (job) ({{__name__=~\"container_.+|kube_.+\",{sel}}})"),
            t,
        )
        .await
        .unwrap()
        .into_iter()
        .map(|s| (s.metric["job"].clone(), s.value.1.parse().unwrap()))
        .collect();
    assert_eq!(
        by_job.keys().collect::<Vec<_>>(),
        ["kube-state-metrics", "kubelet"]
    );
}

#[tokio::test]
async fn backfilled_history_and_live_scrape_are_one_series_each() {
    let cp = ControlPlane::start().await.unwrap();
    let ns = cp.namespace("history").await.unwrap();
    let mut config = SimConfig::uniform(2, "4", "8Gi");
    config.tick_seconds = 0.2;
    let sim = runtime::start(cp.client(), config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let api = Api::<Pod>::namespaced(cp.client(), &ns);
    let a = run_pod(&api, "a", "sim-0", true).await;
    let b = run_pod(&api, "b", "sim-1", false).await;
    let containers = vec![history_of(&a, &ns, true), history_of(&b, &ns, false)];
    let nodes: Vec<HistoryNode> =
        sim.with_state(|s| s.nodes().map(|(n, _)| HistoryNode::from_spec(n)).collect());
    let end = now() as i64 / INTERVAL * INTERVAL;
    let start = end - 2 * 3600;
    let targets = sim.scrape_targets();
    assert_eq!(
        targets.len(),
        3,
        "a kubelet per node and kube-state-metrics"
    );
    let (prom, live_from) =
        backfilled_and_scraping((containers, nodes), targets, (start, end)).await;
    wait_scraped(&prom, &ns, 3).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let live = same_label_sets(&prom, &ns, (start, end, live_from)).await;
    let with = |part: &str| live.iter().filter(|l| l.contains(part)).count();
    assert_eq!(with("__name__=container_memory_working_set_bytes,"), 2);
    assert_eq!(
        with("instance=10.0.0.3:10250,job=kubelet"),
        4,
        "b's cAdvisor series on sim-1"
    );
    continuous(&prom, &ns, start).await;
}
