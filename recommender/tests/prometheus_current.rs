//! The live memory guard's read (`Prometheus::hot_working_sets`) against a real Prometheus
//! backfilled with kube-prometheus series (cAdvisor's working set and PSI stall counter,
//! kube-state-metrics' limits), and against one that answers garbage.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

#[path = "support/client.rs"]
mod client;

use client::client;
use tailor_e2e::Prometheus as PromServer;
use tailor_recommender::prometheus::HistoryError;

const MI: f64 = 1024.0 * 1024.0;

/// A metric family: name, type, and each series' labels and value (per second for a counter).
type Family<'a> = (&'a str, &'a str, Vec<(String, f64)>);

/// Ten minutes of 15-second samples ending at `end`.
fn openmetrics(end: i64, families: &[Family<'_>]) -> String {
    let mut om = String::new();
    for (name, kind, series) in families {
        om.push_str(&format!("# TYPE {name} {kind}\n"));
        for (labels, per_second) in series {
            for i in 0..=40 {
                let t = end - 600 + i * 15;
                let v = if *kind == "counter" {
                    per_second * (i * 15) as f64
                } else {
                    *per_second
                };
                om.push_str(&format!("{name}{{{labels}}} {v} {t}\n"));
            }
        }
    }
    om.push_str("# EOF\n");
    om
}

/// An hour ago, on a 15-second boundary (backfilled blocks must not overlap the head).
fn an_hour_ago() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    (now - 3600) / 15 * 15
}

fn c(ns: &str, pod: &str, container: &str) -> String {
    format!(
        "namespace=\"{ns}\",pod=\"{pod}\",container=\"{container}\",image=\"x\",job=\"kubelet\""
    )
}

fn limit(ns: &str, pod: &str, container: &str) -> String {
    format!(
        "namespace=\"{ns}\",pod=\"{pod}\",uid=\"u-{pod}\",container=\"{container}\",node=\"n1\",resource=\"memory\",unit=\"byte\",job=\"kube-state-metrics\""
    )
}

#[tokio::test]
async fn hot_working_sets_reads_containers_near_their_limit_with_their_stall_share() {
    let end = an_hour_ago();
    let om = openmetrics(
        end,
        &[
            (
                "container_memory_working_set_bytes",
                "gauge",
                vec![
                    (c("shop", "near-0", "app"), 470.0 * MI),
                    (c("shop", "near-0", "sidecar"), 10.0 * MI),
                    (c("shop", "calm-0", "app"), 100.0 * MI),
                    (c("shop", "nolimit-0", "app"), 900.0 * MI),
                    (c("shop", "cgroup-0", "app"), 300.0 * MI),
                    // The pod-level cgroup: never a container.
                    (
                        "namespace=\"shop\",pod=\"near-0\",container=\"\",job=\"kubelet\"".into(),
                        480.0 * MI,
                    ),
                ],
            ),
            (
                "kube_pod_container_resource_limits",
                "gauge",
                vec![
                    (limit("shop", "near-0", "app"), 512.0 * MI),
                    (limit("shop", "near-0", "sidecar"), 64.0 * MI),
                    (limit("shop", "calm-0", "app"), 512.0 * MI),
                ],
            ),
            // cAdvisor's own limit: cgroup-0 has no kube-state-metrics series (as on a node
            // whose kube-state-metrics lags); near-0's agrees with kube-state-metrics.
            (
                "container_spec_memory_limit_bytes",
                "gauge",
                vec![
                    (c("shop", "cgroup-0", "app"), 320.0 * MI),
                    (c("shop", "near-0", "app"), 512.0 * MI),
                    (c("shop", "nolimit-0", "app"), 0.0),
                ],
            ),
            (
                "container_pressure_memory_stalled_seconds_total",
                "counter",
                vec![(c("shop", "near-0", "app"), 0.25)],
            ),
        ],
    );
    let server = PromServer::backfilled(&om).await.unwrap();
    let prom = client(server.url());
    let mut sets = prom.hot_working_sets(0.5, end as f64).await.unwrap();
    sets.sort_by(|a, b| (&a.pod, &a.container).cmp(&(&b.pod, &b.container)));
    let found: Vec<(&str, &str, f64)> = sets
        .iter()
        .map(|s| (s.pod.as_str(), s.container.as_str(), s.bytes / MI))
        .collect();
    // calm-0 is at a fifth of its limit, the sidecar at a sixth, nolimit-0 has no limit;
    // cgroup-0's limit is cAdvisor's.
    assert_eq!(
        found,
        vec![("cgroup-0", "app", 300.0), ("near-0", "app", 470.0)]
    );
    assert_eq!(sets[0].stalled, 0.0);
    let stall = sets[1].stalled;
    assert!((stall - 0.25).abs() < 0.01, "stall share {stall}");
    // Without PSI series (cgroup v1), the stall share is 0.
    let mut lower = prom.hot_working_sets(0.1, end as f64).await.unwrap();
    lower.sort_by(|a, b| (&a.pod, &a.container).cmp(&(&b.pod, &b.container)));
    let calm = lower.iter().find(|s| s.pod == "calm-0").unwrap();
    assert_eq!(calm.stalled, 0.0);
}

#[tokio::test]
async fn hot_working_sets_refuses_a_value_that_is_not_a_number() {
    let end = an_hour_ago();
    let om = openmetrics(
        end,
        &[
            (
                "container_memory_working_set_bytes",
                "gauge",
                vec![(c("shop", "near-0", "app"), f64::INFINITY)],
            ),
            (
                "kube_pod_container_resource_limits",
                "gauge",
                vec![(limit("shop", "near-0", "app"), 512.0 * MI)],
            ),
        ],
    );
    let server = PromServer::backfilled(&om).await.unwrap();
    let e = client(server.url())
        .hot_working_sets(0.5, end as f64)
        .await
        .unwrap_err();
    assert!(matches!(e, HistoryError::Malformed(_)), "{e}");
    assert!(e.to_string().contains("shop/near-0"), "{e}");
    // Prometheus down: an error, not an empty answer.
    drop(server);
    let down = client("http://127.0.0.1:9")
        .hot_working_sets(0.5, end as f64)
        .await;
    assert!(down.is_err());
}
