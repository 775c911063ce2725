//! OOM kills against a real Prometheus holding kube-prometheus-like series, with
//! kube-state-metrics scraped every 15 s, 60 s and 120 s (cAdvisor every 15 s): each kill is
//! found once, at the scrape that first showed it, with the limit it hit, whatever the query
//! step; a later crash (reason `Error`) is not taken for another OOM kill.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

#[path = "support/ksm.rs"]
mod ksm;

use ksm::{LIMIT, MI, client, cluster};
use tailor_e2e::Prometheus as PromServer;
use tailor_e2e::sim::history::openmetrics;
use tailor_recommender::model::estimator::{
    Current, MemoryReason, Policy, Settings, Verdict, estimate,
};
use tailor_recommender::model::history::ContainerHistory;

/// How many OOM kills the history holds.
fn kill_count(h: &ContainerHistory) -> usize {
    format!("{h:?}").matches("OomKill {").count()
}

async fn one_kill_at_every_step(ksm_interval: i64) {
    let c = cluster("shop", "web-7d9f", "web-7d9f-x2k4p", ksm_interval);
    let server = PromServer::backfilled(&openmetrics(&c.series))
        .await
        .unwrap();
    let pods = ["web-7d9f-x2k4p".to_owned()];
    for step in [15, 60, 120] {
        let prom = client(server.url(), step);
        let history = prom
            .history("shop", &pods, c.start as f64, c.end as f64)
            .await
            .unwrap();
        let app = &history["app"];
        let oom = app
            .last_oom()
            .unwrap_or_else(|| panic!("scrape {ksm_interval}s, step {step}s: kill missed"));
        assert_eq!(
            kill_count(app),
            1,
            "scrape {ksm_interval}s, step {step}s: {app:?}"
        );
        // The first scrape after the kill; not the crash three hours later.
        let (kill, crash) = (c.kill as f64, c.crash as f64);
        assert!(
            oom.time >= kill && oom.time < kill + ksm_interval as f64,
            "scrape {ksm_interval}s, step {step}s: kill at {kill}, found at {} (crash at {crash})",
            oom.time
        );
        assert_eq!(oom.limit, LIMIT, "the limit it hit");
        let e = match estimate(
            app,
            &Policy::default(),
            None,
            &Current::default(),
            &Settings::default(),
        ) {
            Verdict::Estimate(e) => e,
            Verdict::NotEnoughHistory(m) => panic!("{m}"),
        };
        assert_eq!(
            e.reason,
            MemoryReason::Oom,
            "scrape {ksm_interval}s, step {step}s"
        );
        let bumped = (LIMIT * 1.2).max(LIMIT + 100.0 * MI);
        assert!(
            (e.floor as f64) >= bumped && (e.floor as f64) < bumped + 2.0 * MI,
            "floor {} MiB",
            e.floor as f64 / MI
        );

        // The running recommender reads in passes: the second starts a step after the first
        // ended, shortly after the kill was scraped. The kill is still counted once.
        let mut passes = std::collections::BTreeMap::new();
        let mid = (c.kill + ksm_interval + 1) as f64;
        for (from, to) in [(c.start as f64, mid), (mid + step as f64, c.end as f64)] {
            prom.extend_history(&mut passes, "shop", &pods, from, to)
                .await
                .unwrap();
        }
        let app = &passes["app"];
        assert_eq!(kill_count(app), 1, "two passes, step {step}s");
        assert_eq!(app.last_oom(), Some(oom));
    }
}

#[tokio::test]
async fn oom_kill_found_once_with_kube_state_metrics_scraped_every_15s() {
    one_kill_at_every_step(15).await;
}

#[tokio::test]
async fn oom_kill_found_once_with_kube_state_metrics_scraped_every_60s() {
    one_kill_at_every_step(60).await;
}

#[tokio::test]
async fn oom_kill_found_once_with_kube_state_metrics_scraped_every_120s() {
    one_kill_at_every_step(120).await;
}
