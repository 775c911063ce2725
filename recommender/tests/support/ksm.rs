//! A kube-prometheus-like history with an OOM kill, shared by the tests that read it.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)] // tests may panic

use std::time::Duration;

use tailor_e2e::sim::history::{
    HistoryContainer, ReplicaSetOwner, Series, generate, replicaset_owners,
};
use tailor_e2e::sim::usage::PodUsage;
use tailor_recommender::prometheus::{Config, Prometheus};

pub const MI: f64 = 1024.0 * 1024.0;
pub const HOUR: i64 = 3600;
pub const CADVISOR_INTERVAL: i64 = 15;
pub const LIMIT: f64 = 512.0 * MI;

/// One pod's history as a kube-prometheus cluster stores it: cAdvisor scraped by the kubelet
/// job every 15 s, kube-state-metrics every `ksm_interval`; an OOM kill at `kill` and a crash
/// (reason `Error`) at `crash`.
pub struct Cluster {
    /// Window start, unix seconds.
    pub start: i64,
    /// Window end.
    pub end: i64,
    /// The OOM kill.
    pub kill: i64,
    /// The crash.
    pub crash: i64,
    /// The series.
    pub series: Vec<Series>,
}

/// `pod` of ReplicaSet `replicaset` in `namespace`, container `app` using a steady 400 MiB under
/// a 512 MiB limit, over the day before an hour ago.
pub fn cluster(namespace: &str, replicaset: &str, pod: &str, ksm_interval: i64) -> Cluster {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let end = (now - HOUR) / 600 * 600;
    let start = end - 24 * HOUR;
    // Neither on a scrape nor on a step.
    let kill = start + 10 * HOUR + 37;
    let crash = kill + 3 * HOUR + 11;
    let model = PodUsage::parse(
        r#"{"*": {"model": "constant", "cpu": 0.2, "memory": "400Mi", "noise": 0.02}}"#,
    )
    .unwrap();
    let c = HistoryContainer {
        cpu: (Some(0.25), Some(1.0)),
        memory: (Some(256.0 * MI), Some(LIMIT)),
        oom_kills: vec![kill],
        ..HistoryContainer::new(
            namespace,
            pod,
            "app",
            model.model("app").unwrap().clone(),
            ("ReplicaSet", replicaset),
        )
    };
    let uid = format!("3f1c6a2e-{pod}");
    let mut series: Vec<Series> = generate(std::slice::from_ref(&c), start, end, CADVISOR_INTERVAL)
        .into_iter()
        .filter(|s| s.metric.starts_with("container_"))
        .map(|mut s| {
            for (k, v) in [
                ("job", "kubelet"),
                ("service", "kubelet"),
                ("endpoint", "https-metrics"),
                ("metrics_path", "/metrics/cadvisor"),
                ("instance", "10.0.0.5:10250"),
            ] {
                s.labels.insert(k, v.into());
            }
            s.labels
                .insert("id", format!("/kubepods/burstable/pod{uid}/app"));
            s
        })
        .collect();
    let mut ksm: Vec<Series> = generate(std::slice::from_ref(&c), start, end, ksm_interval)
        .into_iter()
        .filter(|s| s.metric.starts_with("kube_"))
        .collect();
    ksm.extend(replicaset_owners(
        &[ReplicaSetOwner {
            namespace: namespace.into(),
            replicaset: replicaset.into(),
            owner_kind: "Deployment".into(),
            owner_name: replicaset.rsplit_once('-').unwrap().0.into(),
        }],
        start,
        end,
        ksm_interval,
    ));
    crash_after(&mut ksm, crash);
    for s in &mut ksm {
        for (k, v) in [
            ("job", "kube-state-metrics"),
            ("service", "kube-state-metrics"),
            ("endpoint", "http-metrics"),
            ("instance", "10.244.1.7:8080"),
        ] {
            s.labels.insert(k, v.into());
        }
        if s.metric.starts_with("kube_pod_") {
            s.labels.insert("uid", uid.clone());
        }
    }
    series.extend(ksm);
    Cluster {
        start,
        end,
        kill,
        crash,
        series,
    }
}

/// A crash at `t`: the restart counter grows by one more and the last terminated reason becomes
/// `Error` (kube-state-metrics stops exporting the `OOMKilled` series).
fn crash_after(ksm: &mut Vec<Series>, t: i64) {
    let mut error = None;
    for s in ksm.iter_mut() {
        match s.metric {
            "kube_pod_container_status_restarts_total" => {
                for (st, v) in &mut s.samples {
                    if *st >= t {
                        *v += 1.0;
                    }
                }
            }
            "kube_pod_container_status_last_terminated_reason" => {
                let mut e = s.clone();
                e.labels.insert("reason", "Error".into());
                e.samples.retain(|(st, _)| *st >= t);
                s.samples.retain(|(st, _)| *st < t);
                error = Some(e);
            }
            _ => {}
        }
    }
    ksm.extend(error);
}

/// A client reading at `step` seconds.
pub fn client(url: &str, step: u64) -> Prometheus {
    Prometheus::new(Config {
        url: url.into(),
        step: Duration::from_secs(step),
        timeout: Duration::from_secs(30),
        ..Config::default()
    })
    .unwrap()
}
