//! The Prometheus history source against a real Prometheus that misbehaves the ways production
//! ones do: answers with warnings (a remote-read store down: partial data), queries refused as
//! too large (`--query.max-samples`), and samples that arrive late (ingested seconds after
//! their timestamp, as with remote-write lag).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tailor_e2e::Prometheus as PromServer;
use tailor_e2e::prometheus::{PrometheusOptions, ScrapeTarget};
use tailor_e2e::sim::history::{HistoryContainer, generate, openmetrics};
use tailor_e2e::sim::usage::PodUsage;
use tailor_recommender::model::history::{ContainerHistory, Pass, Unsettled, UsageSink};
use tailor_recommender::prometheus::{Config, Prometheus, with_warnings};

const MI: f64 = 1024.0 * 1024.0;
const STEP: i64 = 60;

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn client(url: &str, configure: impl FnOnce(&mut Config)) -> Prometheus {
    let mut config = Config {
        url: url.into(),
        retries: 0,
        timeout: Duration::from_secs(20),
        ..Config::default()
    };
    configure(&mut config);
    Prometheus::new(config).unwrap()
}

/// Two days of a daily-cycle container, `shop/web-1/app`, ending an hour ago.
fn two_days() -> (String, f64, f64) {
    let end = (now() as i64 - 3600) / STEP * STEP;
    let start = end - 2 * 86_400;
    let models = PodUsage::parse(
        r#"{"*": {"model": "daily", "cpu": {"min": 0.1, "max": 0.6}, "memory": {"min": "300Mi", "max": "500Mi"}}}"#,
    )
    .unwrap();
    let c = HistoryContainer::new(
        "shop",
        "web-1",
        "app",
        models.model("app").unwrap().clone(),
        ("ReplicaSet", "web-aaa"),
    );
    let series = generate(&[c], start, end, STEP);
    (openmetrics(&series), start as f64, end as f64)
}

#[tokio::test]
async fn answers_with_warnings_are_collected_as_partial() {
    let (history, start, end) = two_days();
    let pods = vec!["web-1".to_owned()];
    // A remote-read store that is down: Prometheus answers from its own TSDB, with a warning.
    let partial = PromServer::start(PrometheusOptions {
        backfill: Some(history.clone()),
        remote_read: vec!["http://127.0.0.1:9/api/v1/read".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let healthy = PromServer::backfilled(&history).await.unwrap();

    let prom = client(partial.url(), |_| {});
    let (read, warnings) = with_warnings(prom.history("shop", &pods, start, end)).await;
    let read = read.unwrap();
    assert!(
        warnings.iter().any(|w| w.contains("remote_read")),
        "{warnings:?}"
    );
    assert!(prom.stats().warnings.load(Ordering::Relaxed) > 0);
    assert!(read["app"].memory_samples() > 2000);

    let prom = client(healthy.url(), |_| {});
    let (same, none) = with_warnings(prom.history("shop", &pods, start, end)).await;
    assert!(none.is_empty(), "{none:?}");
    assert_eq!(same.unwrap(), read, "the data itself is the same");
    assert_eq!(prom.stats().warnings.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn a_range_refused_as_too_large_is_split_and_read_whole() {
    let (history, start, end) = two_days();
    let pods = vec!["web-1".to_owned()];
    // 2,881 points per series: more than this server loads for one query.
    let limited = PromServer::start(PrometheusOptions {
        backfill: Some(history),
        extra_args: vec!["--query.max-samples=1000".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    // The server does refuse the whole range.
    let refused = limited
        .query_range(
            "container_memory_working_set_bytes",
            start,
            end,
            STEP as f64,
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("too many samples"), "{refused}");
    let prom = client(limited.url(), |_| {});
    let split = prom.history("shop", &pods, start, end).await.unwrap();
    assert!(prom.stats().splits.load(Ordering::Relaxed) >= 2);
    // Chunks small enough from the start: the same history, point for point.
    let small = client(limited.url(), |c| c.max_points = 200);
    let chunked = small.history("shop", &pods, start, end).await.unwrap();
    assert_eq!(small.stats().splits.load(Ordering::Relaxed), 0);
    assert_eq!(split["app"].memory_samples(), 2 * 1440 + 1);
    assert_eq!(split, chunked);
}

/// A scrape target that shows one container's working set `lag` seconds late (each sample
/// carries its own timestamp): 100 MiB, and 1 GiB for timestamps in `spike`. Once `frozen`, it
/// shows nothing more.
async fn lagging_target(lag: f64, spike: (f64, f64), frozen: Arc<AtomicBool>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let mut buf = vec![0u8; 65536];
            let _ = sock.read(&mut buf).await;
            let t = now() - lag;
            let v = if (spike.0..=spike.1).contains(&t) {
                1024.0 * MI
            } else {
                100.0 * MI
            };
            let body = if frozen.load(Ordering::SeqCst) {
                String::new()
            } else {
                format!(
                    "# TYPE container_memory_working_set_bytes gauge\ncontainer_memory_working_set_bytes{{namespace=\"shop\",pod=\"late-1\",container=\"app\"}} {v} {}\n",
                    (t * 1000.0) as i64
                )
            };
            let resp = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
        }
    });
    addr.to_string()
}

/// One pass over the late container as the controller makes it: histories settled up to the
/// plan's point, later samples aside.
async fn pass(
    prom: &Prometheus,
    state: &mut (BTreeMap<String, ContainerHistory>, Option<f64>),
    (start, end): (f64, f64),
    overlap: f64,
) -> BTreeMap<String, ContainerHistory> {
    let plan = Pass::plan(state.1, (start, end), overlap, 5.0);
    let mut unsettled = Unsettled::default();
    let mut sink = UsageSink {
        settled: plan.settled,
        histories: &mut state.0,
        unsettled: &mut unsettled,
    };
    let pods = vec!["late-1".to_owned()];
    let from = if state.1.is_some() {
        plan.known_from
    } else {
        plan.new_from
    };
    prom.read_usage(&mut sink, "shop", &pods, (from, end), &BTreeMap::new())
        .await
        .unwrap();
    state.1 = Some(plan.settled);
    let mut seen = state.0.clone();
    unsettled.apply_to(&mut seen);
    seen
}

#[tokio::test]
async fn samples_that_arrive_late_are_read_by_the_next_pass() {
    let (lag, overlap) = (12.0, 30.0);
    let t0 = now();
    let first = t0 + 30.0;
    // A spike 8 s before the first pass: Prometheus gets it 4 s after that pass.
    let spike = (first - 8.0, first - 5.0);
    let frozen = Arc::new(AtomicBool::new(false));
    let address = lagging_target(lag, spike, frozen.clone()).await;
    let server = PromServer::start(PrometheusOptions {
        scrape_targets: vec![ScrapeTarget {
            job: "kubelet".into(),
            address,
            metrics_path: "/metrics/cadvisor".into(),
            ..Default::default()
        }],
        ..Default::default()
    })
    .await
    .unwrap();
    let prom = client(server.url(), |c| c.step = Duration::from_secs(5));
    let start = t0 - 60.0;

    tokio::time::sleep(Duration::from_secs_f64((first - now()).max(0.0))).await;
    let mut with_overlap = (BTreeMap::new(), None);
    let mut without = (BTreeMap::new(), None);
    let seen = pass(&prom, &mut with_overlap, (start, first), overlap).await;
    assert!(
        seen["app"].memory_peak().unwrap() < 200.0 * MI,
        "the spike is not in yet"
    );
    pass(&prom, &mut without, (start, first), 0.0).await;

    let second = first + 16.0;
    tokio::time::sleep(Duration::from_secs_f64((second - 2.0 - now()).max(0.0))).await;
    frozen.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs_f64((second - now()).max(0.0))).await;
    let late = pass(&prom, &mut with_overlap, (start, second), overlap).await;
    let lost = pass(&prom, &mut without, (start, second), 0.0).await;
    // Everything at once, now that the data stopped coming.
    let whole = pass(
        &prom,
        &mut (BTreeMap::new(), None),
        (start, second),
        overlap,
    )
    .await;

    let peak = late["app"].memory_peak().unwrap();
    assert!(peak >= 1024.0 * MI, "the late spike is read again: {peak}");
    assert_eq!(
        late["app"].memory_samples(),
        whole["app"].memory_samples(),
        "no point counted twice or missed"
    );
    assert_eq!(late["app"].memory_peak(), whole["app"].memory_peak());
    // Without the overlap, the second pass starts after the first one's end: the spike and
    // the points that were not in yet are lost.
    assert!(lost["app"].memory_peak().unwrap() < 200.0 * MI);
    assert!(lost["app"].memory_samples() < whole["app"].memory_samples());
}

/// A server that counts connections and answers each 503 (`answer`) or closes it without a
/// word.
async fn failing(answer: bool) -> (String, Arc<std::sync::atomic::AtomicU64>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let mut buf = vec![0u8; 65536];
            let _ = sock.read(&mut buf).await;
            seen.fetch_add(1, Ordering::SeqCst);
            if answer {
                let body = "overloaded";
                let resp = format!(
                    "HTTP/1.1 503 Service Unavailable\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            }
        }
    });
    (format!("http://{addr}"), count)
}

#[tokio::test]
async fn during_an_outage_one_query_waits_through_the_retries_not_every_one() {
    let (url, requests) = failing(false).await;
    let prom = client(&url, |c| {
        c.retries = 2;
        c.backoff = Duration::from_millis(10);
    });
    let e = prom.query("up", 0.0).await.unwrap_err().to_string();
    assert!(e.contains("after 3 attempts"), "{e}");
    assert_eq!(requests.load(Ordering::SeqCst), 3);
    // Right after: every query fails at once, without a request, and says why.
    for _ in 0..20 {
        let e = prom.query("up", 0.0).await.unwrap_err().to_string();
        assert!(e.contains("not tried again"), "{e}");
    }
    assert_eq!(requests.load(Ordering::SeqCst), 3);
    assert_eq!(prom.stats().short_circuited.load(Ordering::SeqCst), 20);

    // A server that answers, if only 503, is reachable: each query keeps its own retries.
    let (url, requests) = failing(true).await;
    let prom = client(&url, |c| {
        c.retries = 1;
        c.backoff = Duration::from_millis(10);
    });
    for _ in 0..3 {
        let e = prom.query("up", 0.0).await.unwrap_err().to_string();
        assert!(e.contains("HTTP 503"), "{e}");
    }
    assert_eq!(requests.load(Ordering::SeqCst), 6);
    assert_eq!(prom.stats().short_circuited.load(Ordering::SeqCst), 0);
}
