//! `tailor-demo` (`make demo`): the whole system on one machine.
//!
//! Starts a real kube-apiserver and etcd, the node simulator with three nodes, five sample
//! workloads, a real Prometheus backfilled with a week of their history (the same usage models
//! the simulator runs, so history and live scrapes join up) and scraping them live, then the
//! `tailor-recommender` and `tailor-updater` binaries. It prints the recommendations with their
//! floor reasons, the resizes done and the memory decreases waiting for approval, and how to
//! look around; then stays up until Ctrl-C.
//!
//! `--real-node` (`make demo-real-node`) runs the same workloads on a real kubelet + containerd +
//! runc on this machine instead of the simulator, their CPU scaled down to fit it (see
//! [`real`]), and prints the containers' cgroup files before and after each resize.
//!
//! `--ci` runs the same setup without waiting for a person: it checks the expected outcome and
//! that every PromQL expression of the alert rules and dashboards evaluates against the demo's
//! Prometheus, and exits non-zero on any failure.
//!
//! Everything started is owned by the demo's future: an error ends it and Ctrl-C or SIGTERM
//! drops it, which stops the processes and tears the real node down.

mod continuity;
mod expected;
mod history;
mod queries;
mod real;
mod report;
mod services;
mod setup;
mod sim;
mod workloads;

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Runs tailor end to end on this machine.
#[derive(Debug, Parser)]
pub struct Args {
    /// Check the expected outcome and the dashboards' and alerts' queries, then exit.
    #[arg(long)]
    ci: bool,
    /// Days of backfilled history.
    #[arg(long, default_value_t = 7)]
    days: i64,
    /// How long to wait for the expected outcome, seconds.
    #[arg(long, default_value_t = 240)]
    timeout: u64,
    /// Run the workloads on a real kubelet + containerd + runc on this machine (root).
    #[arg(long)]
    real_node: bool,
    /// With --real-node: the factor applied to the workloads' CPU requests, limits and usage.
    #[arg(long, default_value_t = real::CPU_SCALE, requires = "real_node")]
    cpu_scale: f64,
}

const NS: &str = "demo";
const MI: f64 = 1024.0 * 1024.0;
/// Seconds between the samples of the backfilled history: the scrape interval of the
/// kubelet and kube-state-metrics in kube-prometheus.
const INTERVAL: i64 = 30;
/// The recommender's history step, seconds.
const STEP: i64 = 120;

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn step(msg: &str) {
    eprintln!("demo: {msg}");
}

/// Polls `check` every 2 s until it holds or `timeout` passes; the last answer.
async fn wait_for<F, Fut>(timeout: Duration, mut check: F) -> Result<(), Vec<String>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), Vec<String>>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(()) => return Ok(()),
            Err(missing) if Instant::now() > deadline => return Err(missing),
            Err(_) => tokio::time::sleep(Duration::from_secs(2)).await,
        }
    }
}

/// Prints what is missing, if anything.
fn print_missing(outcome: &Result<(), Vec<String>>, timeout: u64, logs: &str) {
    if let Err(missing) = outcome {
        eprintln!("\ndemo: NOT as expected after {timeout} s:");
        for m in missing {
            eprintln!("  - {m}");
        }
        eprintln!("{logs}");
    }
}

/// Prints the report (with `extra` after it) and how to look around; with `--ci` checks the
/// outcome and every query, else waits for ever (until Ctrl-C).
async fn finish(
    args: &Args,
    cp: &tailor_e2e::ControlPlane,
    list: &[workloads::Workload],
    stack: &services::Stack,
    (outcome, started, extra): (Result<(), Vec<String>>, Instant, String),
) -> Result<(), Error> {
    let text = report::report(&cp.client(), list).await?;
    println!("tailor demo: what happened{text}{extra}");
    print_missing(&outcome, args.timeout, &stack.tailor.log_tails());
    let ready_after = started.elapsed().as_secs_f64();
    println!(
        "{}",
        services::look_around(cp, &stack.prom, &stack.ports, ready_after)
    );
    if !args.ci {
        println!("\nPress Ctrl-C to stop.");
        return std::future::pending().await;
    }
    if let Err(missing) = outcome {
        return Err(format!("{} expectation(s) not met: {missing:?}", missing.len()).into());
    }
    queries::check_and_print(&stack.prom).await?;
    if !args.real_node {
        continuity::check_and_print(&stack.prom, stack.history_start, stack.live_from).await?;
    }
    println!(
        "demo: as expected ({:.0} s)",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM, naming it.
async fn stop_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return "Ctrl-C";
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "Ctrl-C",
        _ = term.recv() => "SIGTERM",
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args = Args::parse();
    // Fail before starting anything when a binary is missing.
    services::binary("tailor-recommender")?;
    services::binary("tailor-updater")?;
    let mut run = Box::pin(async {
        if args.real_node {
            real::run(&args).await
        } else {
            sim::run(&args).await
        }
    });
    let signal = tokio::select! {
        result = &mut run => return result,
        signal = stop_signal() => signal,
    };
    if args.real_node {
        step(&format!(
            "{signal}: stopping everything; tearing the real node down takes up to a minute"
        ));
    } else {
        step(&format!("{signal}: stopping everything"));
    }
    // Dropping the demo stops its processes and tears the real node down.
    drop(run);
    step("stopped");
    Ok(())
}
