//! The Prometheus history source against a real Prometheus backfilled by the simulator's
//! history generator, and against servers that are down or answer garbage.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

#[path = "support/client.rs"]
mod client;

use client::client;
use tailor_e2e::Prometheus as PromServer;
use tailor_e2e::sim::history::{
    HistoryContainer, JvmHeap, JvmHeapMetrics, ReplicaSetOwner, Series, generate, jvm_heap,
    openmetrics, replicaset_owners,
};
use tailor_e2e::sim::usage::PodUsage;
use tailor_recommender::prometheus::{
    Config, HistoryError, JVM_HEAP_RESOLUTION, MetricNames, Prometheus,
};

const MI: f64 = 1024.0 * 1024.0;
const GI: f64 = 1024.0 * MI;
const DAY: i64 = 86_400;
const STEP: i64 = 60;

fn container(
    pod: &str,
    owner: (&str, &str),
    model: &str,
    lifetime: Option<(i64, i64)>,
) -> HistoryContainer {
    let models = PodUsage::parse(&format!("{{\"*\": {model}}}")).unwrap();
    HistoryContainer {
        cpu: (Some(0.5), Some(2.0)),
        memory: (Some(512.0 * MI), Some(2048.0 * MI)),
        lifetime,
        ..HistoryContainer::new(
            "shop",
            pod,
            "app",
            models.model("app").unwrap().clone(),
            owner,
        )
    }
}

#[tokio::test]
async fn history_spans_rollouts_excludes_neighbours_and_reads_ooms() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let end = (now - 3600) / STEP * STEP;
    let start = end - 8 * DAY;
    let mid = start + 4 * DAY;
    // Deployment web: an earlier rollout (RS web-aaa) with a 900 MiB peak, then web-bbb.
    // Deployment web-api shares the prefix and uses 3 GiB: it must not count.
    let mut old = container(
        "web-aaa-1",
        ("ReplicaSet", "web-aaa"),
        r#"{"model": "spikes", "cpu": 0.2, "memory": "300Mi", "spikeMemory": "600Mi", "everySeconds": 86400, "durationSeconds": 600}"#,
        Some((start, mid)),
    );
    old.oom_kills = vec![start + DAY];
    old.memory.1 = Some(1024.0 * MI);
    let new = container(
        "web-bbb-1",
        ("ReplicaSet", "web-bbb"),
        r#"{"model": "constant", "cpu": 0.3, "memory": "350Mi", "noise": 0.05}"#,
        Some((mid + STEP, end)),
    );
    let neighbour = container(
        "web-api-ccc-1",
        ("ReplicaSet", "web-api-ccc"),
        r#"{"model": "constant", "cpu": 3, "memory": "3Gi"}"#,
        None,
    );
    let mut series = generate(&[old, new, neighbour], start, end, STEP);
    let rs = |name: &str, owner: &str| ReplicaSetOwner {
        namespace: "shop".into(),
        replicaset: name.into(),
        owner_kind: "Deployment".into(),
        owner_name: owner.into(),
    };
    series.extend(replicaset_owners(
        &[
            rs("web-aaa", "web"),
            rs("web-bbb", "web"),
            rs("web-api-ccc", "web-api"),
        ],
        start,
        end,
        STEP,
    ));
    let server = PromServer::backfilled(&openmetrics(&series)).await.unwrap();
    let prom = client(server.url());

    let pods = prom
        .workload_pods("shop", "Deployment", "web", end as f64, (8 * DAY) as f64)
        .await
        .unwrap();
    assert_eq!(pods, ["web-aaa-1", "web-bbb-1"]);
    let neighbour_pods = prom
        .workload_pods(
            "shop",
            "Deployment",
            "web-api",
            end as f64,
            (8 * DAY) as f64,
        )
        .await
        .unwrap();
    assert_eq!(neighbour_pods, ["web-api-ccc-1"]);

    let history = prom
        .history("shop", &pods, start as f64, end as f64)
        .await
        .unwrap();
    let app = &history["app"];
    // Both rollouts' samples: 8 days at one a minute, more than one range query can hold.
    let expected = (8 * DAY / STEP) as u64;
    assert!(
        app.memory_samples() + 10 >= expected && app.memory_samples() <= expected + 2,
        "{}",
        app.memory_samples()
    );
    assert!(
        prom.stats()
            .queries
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 4,
        "chunked range queries"
    );
    // The earlier rollout's spike is the peak; the neighbour's 3 GiB is not.
    assert_eq!(app.memory_peak(), Some(900.0 * MI));
    let cpu_p50 = app.cpu_percentile(0.5).unwrap();
    assert!((0.19..0.33).contains(&cpu_p50), "{cpu_p50}");
    // The OOM kill of the earlier rollout, with the limit it had.
    let oom = app.last_oom().expect("the OOM kill is found");
    assert_eq!(oom.limit, 1024.0 * MI);
    assert!(
        (oom.time - (start + DAY) as f64).abs() <= STEP as f64,
        "{}",
        oom.time
    );
}

#[tokio::test]
async fn nan_and_infinite_samples_are_ignored() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let end = (now - 3600) / STEP * STEP;
    let start = end - 6 * 3600;
    let mut om = String::from("# TYPE container_memory_working_set_bytes gauge\n");
    let mut t = start;
    let mut i = 0;
    while t <= end {
        let v = match i % 10 {
            3 => "NaN".to_owned(),
            7 => "+Inf".to_owned(),
            // One absurd sample (a broken exporter): not a floor of 888 PiB.
            5 if i == 15 => "1e18".to_owned(),
            _ => (100.0 * MI).to_string(),
        };
        om.push_str(&format!("container_memory_working_set_bytes{{namespace=\"ns\",pod=\"p\",container=\"app\"}} {v} {t}\n"));
        t += STEP;
        i += 1;
    }
    om.push_str("# EOF\n");
    let server = PromServer::backfilled(&om).await.unwrap();
    let prom = client(server.url());
    let h = prom
        .history("ns", &["p".into()], start as f64, end as f64)
        .await
        .unwrap();
    let app = &h["app"];
    assert!(app.rejected() > 0, "garbage samples counted");
    assert_eq!(app.memory_peak(), Some(100.0 * MI), "and ignored");
    // The step's max_over_time window may hold it at two steps.
    let rejected = prom
        .stats()
        .rejected
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        (1..=2).contains(&rejected),
        "the sample above the bound (16Ti) is left out and counted: {rejected}"
    );
}

#[tokio::test]
async fn jvm_heaps_sum_defined_pools_per_pod() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let end = (now - 3600) / STEP * STEP;
    let start = end - 2 * DAY;
    let heap = |pod: &str, container: Option<&str>, metrics, lifetime| JvmHeap {
        namespace: "shop".into(),
        pod: pod.into(),
        container: container.map(Into::into),
        metrics,
        lifetime,
    };
    let pools = |v: &[(&str, f64)]| {
        JvmHeapMetrics::Micrometer(v.iter().map(|(id, b)| (id.to_string(), *b)).collect())
    };
    let mut series = jvm_heap(
        &[
            // G1: eden and survivor have no ceiling of their own (-1).
            heap(
                "g1-1",
                None,
                pools(&[
                    ("G1 Eden Space", -1.0),
                    ("G1 Old Gen", 2.0 * GI),
                    ("G1 Survivor Space", -1.0),
                ]),
                None,
            ),
            // Parallel GC: the ceiling is spread over the pools.
            heap(
                "ps-1",
                None,
                pools(&[("PS Eden Space", GI), ("PS Old Gen", 2.0 * GI)]),
                None,
            ),
            // No pool has a ceiling: no heap, not a negative one.
            heap(
                "undefined-1",
                None,
                pools(&[("Eden", -1.0), ("Tenured", -1.0)]),
                None,
            ),
            // client_java, with a container label; gone after the first day.
            heap(
                "jmx-1",
                Some("app"),
                JvmHeapMetrics::ClientJava(GI),
                Some((start, start + DAY)),
            ),
            // Not asked for.
            heap("other-1", None, JvmHeapMetrics::ClientJava(8.0 * GI), None),
        ],
        start,
        end,
        STEP,
    );
    // A JVM that reports nothing but NaN.
    series.push(Series {
        metric: "jvm_memory_max_bytes",
        labels: [
            ("namespace", "shop".to_owned()),
            ("pod", "nan-1".to_owned()),
            ("area", "heap".to_owned()),
            ("id", "Old".to_owned()),
        ]
        .into(),
        samples: (0..)
            .map(|i| start + i * STEP)
            .take_while(|t| *t <= end)
            .map(|t| (t, f64::NAN))
            .collect(),
    });
    let server = PromServer::backfilled(&openmetrics(&series)).await.unwrap();
    let prom = client(server.url());
    let pods: Vec<String> = ["g1-1", "ps-1", "undefined-1", "jmx-1", "nan-1", "absent-1"]
        .map(Into::into)
        .to_vec();
    let heaps = prom
        .jvm_heaps("shop", &pods, start as f64, end as f64)
        .await
        .unwrap();
    let mut summary: Vec<(&str, &str, &str, Option<f64>)> = heaps
        .iter()
        .map(|h| {
            (
                h.pod.as_str(),
                h.container.as_str(),
                h.metric.as_str(),
                h.samples.iter().map(|(_, v)| *v).reduce(f64::max),
            )
        })
        .collect();
    summary.sort_by(|a, b| a.0.cmp(b.0));
    assert_eq!(
        summary,
        [
            ("g1-1", "", "jvm_memory_max_bytes", Some(2.0 * GI)),
            ("jmx-1", "app", "jvm_memory_bytes_max", Some(GI)),
            ("ps-1", "", "jvm_memory_max_bytes", Some(3.0 * GI)),
        ],
        "{heaps:#?}"
    );
    // One value per hour of the window, each covering the hour before it; the pod that went
    // away after a day has values for that day only.
    let by_pod = |pod: &str| heaps.iter().find(|h| h.pod == pod).unwrap();
    let g1 = by_pod("g1-1");
    assert_eq!(
        g1.samples.len(),
        (2 * DAY) as usize / JVM_HEAP_RESOLUTION as usize
    );
    assert_eq!(g1.samples.last().unwrap().0, end as f64);
    let jmx_last = by_pod("jmx-1").samples.last().unwrap().0;
    assert!(
        jmx_last >= (start + DAY) as f64 && jmx_last <= (start + DAY) as f64 + JVM_HEAP_RESOLUTION,
        "{jmx_last}"
    );

    // Since a recent time: one value covering it.
    let recent = prom
        .jvm_heaps("shop", &pods[..1], (end - 300) as f64, end as f64)
        .await
        .unwrap();
    assert_eq!(recent.len(), 1);
    assert_eq!(recent[0].samples, [(end as f64, 2.0 * GI)]);

    // Turned off: no query at all.
    let off = Prometheus::new(Config {
        url: server.url().into(),
        names: MetricNames {
            jvm_heap_max: vec![],
            ..MetricNames::default()
        },
        ..Config::default()
    })
    .unwrap();
    assert!(
        off.jvm_heaps("shop", &pods, start as f64, end as f64)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        off.stats()
            .queries
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

/// A one-request-at-a-time HTTP server that answers every request with `body`.
async fn fake_server(status: &'static str, body: &'static str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let mut buf = vec![0u8; 65536];
            let _ = sock.read(&mut buf).await;
            let resp = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
        }
    });
    format!("http://{addr}")
}

/// An HTTP server that gives the `n`th request the `n`th of `answers` (status line, extra
/// header lines, body), and the last one after that.
async fn answering(answers: Vec<(&'static str, &'static str, String)>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut n = 0;
        while let Ok((mut sock, _)) = listener.accept().await {
            let mut buf = vec![0u8; 65536];
            let _ = sock.read(&mut buf).await;
            let (status, headers, body) = &answers[n.min(answers.len() - 1)];
            n += 1;
            let resp = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\n{headers}content-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn a_busy_prometheus_is_retried_after_the_time_it_asks_for() {
    let ok = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#.to_owned();
    // 429 with Retry-After: 2, then an answer: retried after 2 s, not the test client's 10 ms.
    let url = answering(vec![
        (
            "429 Too Many Requests",
            "retry-after: 2\r\n",
            "slow down".into(),
        ),
        ("200 OK", "", ok.clone()),
    ])
    .await;
    let started = std::time::Instant::now();
    let answer = client(&url).query("up", 0.0).await.unwrap();
    assert!(answer.is_empty());
    let waited = started.elapsed();
    assert!(
        waited >= std::time::Duration::from_secs(2),
        "waited {waited:?}"
    );
    // 503 with Retry-After on every attempt: an error that says so once the retries are spent.
    let url = answering(vec![(
        "503 Service Unavailable",
        "retry-after: 1\r\n",
        "overloaded".into(),
    )])
    .await;
    let e = client(&url).query("up", 0.0).await.unwrap_err();
    assert!(
        matches!(&e, HistoryError::Unavailable(m) if m.contains("HTTP 503") && m.contains("after 2 attempts")),
        "{e}"
    );
}

#[tokio::test]
async fn an_answer_larger_than_the_limit_is_refused() {
    let big = format!(
        r#"{{"status":"success","data":{{"resultType":"vector","result":[]}},"padding":"{}"}}"#,
        "x".repeat(4096)
    );
    let url = answering(vec![("200 OK", "", big)]).await;
    let prom = Prometheus::new(Config {
        url,
        retries: 0,
        max_body_bytes: 1024,
        ..Config::default()
    })
    .unwrap();
    let e = prom.query("up", 0.0).await.unwrap_err();
    assert!(
        matches!(&e, HistoryError::Rejected(m) if m.contains("larger than 1024 bytes")),
        "{e}"
    );
}

#[tokio::test]
async fn down_or_garbage_prometheus_gives_clear_errors() {
    // Nothing listens on this port.
    let port = tailor_e2e::free_port().unwrap();
    let e = client(&format!("http://127.0.0.1:{port}"))
        .history("ns", &["p".into()], 0.0, 3600.0)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, HistoryError::Unavailable(m) if m.contains("after 2 attempts")),
        "{e}"
    );
    // Credentials and a query string in the URL never reach an error (errors go into status
    // conditions and Events).
    let e = client(&format!("http://alice:s3cret@127.0.0.1:{port}/?token=abc"))
        .history("ns", &["p".into()], 0.0, 3600.0)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        !e.contains("s3cret") && !e.contains("alice") && !e.contains("token"),
        "{e}"
    );
    assert!(e.contains(&format!("http://127.0.0.1:{port}/")), "{e}");

    let e = client(&fake_server("200 OK", "<html>not prometheus</html>").await)
        .query("up", 0.0)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, HistoryError::Malformed(m) if m.contains("not prometheus")),
        "{e}"
    );

    let e = client(&fake_server("200 OK", r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"lots"]}]}}"#).await)
        .query("up", 0.0)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, HistoryError::Malformed(m) if m.contains("\"lots\"")),
        "{e}"
    );

    let e = client(
        &fake_server(
            "400 Bad Request",
            r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#,
        )
        .await,
    )
    .query("up{", 0.0)
    .await
    .unwrap_err();
    assert!(
        matches!(&e, HistoryError::Rejected(m) if m.contains("bad_data: parse error")),
        "{e}"
    );

    let e = client(&fake_server("503 Service Unavailable", "overloaded").await)
        .query("up", 0.0)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, HistoryError::Unavailable(m) if m.contains("503") && m.contains("after 2 attempts")),
        "{e}"
    );

    let e = Prometheus::new(Config {
        url: "prometheus:9090".into(),
        ..Config::default()
    })
    .unwrap_err();
    assert!(matches!(e, HistoryError::Config(_)));
}

/// A pod that started busy (a JVM warming up, with a startup boost) and settled: with the
/// boost's window (Ready + duration) left out, the CPU history holds only the settled usage;
/// without a boost, or for a pod with no Ready time, it holds all of it.
#[tokio::test]
async fn a_startup_boost_window_is_left_out_of_the_cpu_history() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let end = (now - 3600) / STEP * STEP;
    let start = end - 3 * 3600;
    let mut om = String::from("# TYPE container_cpu_usage_seconds_total counter\n");
    for pod in ["p", "q"] {
        let mut counter = 0.0;
        let mut t = start;
        while t <= end {
            om.push_str(&format!(
                "container_cpu_usage_seconds_total{{namespace=\"ns\",pod=\"{pod}\",container=\"app\"}} {counter} {t}\n"
            ));
            // 2 cores for the first 15 minutes, then 0.1.
            counter += STEP as f64 * if t < start + 900 { 2.0 } else { 0.1 };
            t += STEP;
        }
    }
    // p became Ready after 5 minutes; q has no Ready time.
    om.push_str("# TYPE kube_pod_status_ready_time gauge\n");
    let mut t = start + 300;
    while t <= end {
        om.push_str(&format!(
            "kube_pod_status_ready_time{{namespace=\"ns\",pod=\"p\",uid=\"u\"}} {} {t}\n",
            start + 300
        ));
        t += STEP;
    }
    om.push_str("# EOF\n");
    let server = PromServer::backfilled(&om).await.unwrap();
    let prom = client(server.url());
    let read = |pod: &'static str, boosts: Vec<(&'static str, Option<f64>)>| {
        let prom = &prom;
        async move {
            let boosts = boosts.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            let mut out = std::collections::BTreeMap::new();
            prom.extend_history_boosted(
                &mut out,
                "ns",
                &[pod.to_owned()],
                (start as f64, end as f64),
                &boosts,
            )
            .await
            .unwrap();
            out.remove("app").unwrap()
        }
    };
    // Ready at +5 min, boost of 15 min: everything before +20 min is left out (the 5-minute
    // rate window has settled by then).
    let boosted = read("p", vec![("app", Some(900.0))]).await;
    let peak = boosted.cpu_peak().unwrap();
    assert!(peak < 0.2, "boost window left out: peak {peak}");
    // Through `*`, unless the container's own policy has no boost.
    assert!(
        read("p", vec![("*", Some(900.0))])
            .await
            .cpu_peak()
            .unwrap()
            < 0.2
    );
    let own = read("p", vec![("app", None), ("*", Some(900.0))]).await;
    assert!(own.cpu_peak().unwrap() > 1.5);
    // No boost: the warm-up is in the history.
    let plain = read("p", vec![]).await;
    assert!(plain.cpu_peak().unwrap() > 1.5);
    assert!(plain.cpu_samples() > boosted.cpu_samples());
    // No Ready time: nothing is left out.
    assert!(
        read("q", vec![("app", Some(900.0))])
            .await
            .cpu_peak()
            .unwrap()
            > 1.5
    );
}
