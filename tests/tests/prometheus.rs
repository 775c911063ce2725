//! The real Prometheus, backfilled with `promtool tsdb create-blocks-from openmetrics`,
//! answers range queries with exactly the values written.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use tailor_e2e::Prometheus;

const STEP: i64 = 60;
const SAMPLES: i64 = 2 * 24 * 60; // two days at one sample a minute

fn working_set(i: i64) -> f64 {
    // Byte counts up to ~2^40, not multiples of anything convenient.
    (123_456_789 + i * 4_099 + (i % 17) * 1_000_003) as f64
        * if i % 500 == 0 { 8191.0 } else { 1.0 }
}

fn cpu_seconds(i: i64) -> f64 {
    // A counter with fractional increments whose decimal forms are long.
    i as f64 * 0.123_456_789 + (i % 7) as f64 / 3.0
}

#[tokio::test]
async fn backfilled_series_query_back_exactly() -> anyhow::Result<()> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() as i64;
    // Whole minutes, ending an hour ago (older than the head block, so all of it is in blocks).
    let start = (now - 3600 - SAMPLES * STEP) / STEP * STEP;

    let mut om = String::new();
    om.push_str("# HELP container_memory_working_set_bytes Current working set of the container in bytes.\n");
    om.push_str("# TYPE container_memory_working_set_bytes gauge\n");
    for i in 0..SAMPLES {
        writeln!(
            om,
            "container_memory_working_set_bytes{{namespace=\"shop\",pod=\"api-7d9f-x2\",container=\"app\"}} {} {}",
            working_set(i),
            start + i * STEP
        )?;
    }
    om.push_str(
        "# HELP container_cpu_usage_seconds_total Cumulative cpu time consumed in seconds.\n",
    );
    om.push_str("# TYPE container_cpu_usage_seconds_total counter\n");
    for i in 0..SAMPLES {
        writeln!(
            om,
            "container_cpu_usage_seconds_total{{namespace=\"shop\",pod=\"api-7d9f-x2\",container=\"app\"}} {} {}",
            cpu_seconds(i),
            start + i * STEP
        )?;
    }
    om.push_str("# EOF\n");

    let prom = Prometheus::backfilled(&om).await?;
    assert!(!prom.version().is_empty(), "Prometheus reports its version");

    for (metric, expected) in [
        (
            "container_memory_working_set_bytes",
            working_set as fn(i64) -> f64,
        ),
        ("container_cpu_usage_seconds_total", cpu_seconds),
    ] {
        let series = prom
            .query_range(
                &format!("{metric}{{namespace=\"shop\",container=\"app\"}}"),
                start as f64,
                (start + (SAMPLES - 1) * STEP) as f64,
                STEP as f64,
            )
            .await?;
        assert_eq!(series.len(), 1, "{metric}: one series");
        let s = &series[0];
        assert_eq!(s.metric["pod"], "api-7d9f-x2");
        assert_eq!(s.values.len() as i64, SAMPLES, "{metric}: every sample");
        for (i, (ts, value)) in s.values.iter().enumerate() {
            let i = i as i64;
            assert_eq!(*ts as i64, start + i * STEP, "{metric}: timestamp {i}");
            let got: f64 = value.parse()?;
            assert_eq!(
                got.to_bits(),
                expected(i).to_bits(),
                "{metric}: sample {i}: {value}"
            );
        }
    }
    // A series that was never written is absent, not zero.
    let none = prom
        .query_range(
            "container_memory_rss",
            start as f64,
            (start + 3600) as f64,
            STEP as f64,
        )
        .await?;
    assert!(none.is_empty());
    Ok(())
}
