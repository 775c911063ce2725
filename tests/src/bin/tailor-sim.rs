//! `tailor-sim`: plays the kubelets of simulated nodes against a real API server.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use tailor_e2e::sim::config::SimConfig;

/// Simulated kubelets for a real kube-apiserver: nodes, pods, in-place resize, OOM kills and
/// cAdvisor/kube-state-metrics series.
#[derive(Debug, Parser)]
#[command(name = "tailor-sim", version, about)]
struct Args {
    /// The simulator config (YAML; see docs/simulator.md).
    #[arg(long, env = "TAILOR_SIM_CONFIG")]
    config: PathBuf,
    /// Where to serve /metrics/cadvisor, /metrics/kube-state and /metrics.
    #[arg(
        long,
        env = "TAILOR_SIM_METRICS_ADDR",
        default_value = "127.0.0.1:9101"
    )]
    metrics_addr: SocketAddr,
    /// Log filter (tracing EnvFilter syntax).
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    log: String,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tailor-sim: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&args.log))
        .init();
    let text = std::fs::read_to_string(&args.config)
        .map_err(|e| format!("cannot read {}: {e}", args.config.display()))?;
    let config =
        SimConfig::from_yaml(&text).map_err(|e| format!("{}: {e}", args.config.display()))?;
    let client = kube::Client::try_default().await?;
    let sim = tailor_e2e::sim::runtime::start(client, config, args.metrics_addr).await?;
    tracing::info!(metrics = %sim.metrics_addr(), "simulator running; Ctrl-C stops it");
    tokio::signal::ctrl_c().await?;
    sim.shutdown().await;
    Ok(())
}
