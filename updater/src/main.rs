//! `tailor-updater`.

use std::sync::Arc;
use std::time::Duration;

use clap::{Args as ClapArgs, Parser, Subcommand};
use tailor_recommender::prometheus::{Access, Config, MetricNames, Prometheus};
use tailor_runtime::lease::{self, LeaseConfig, TimingArgs};
use tailor_updater::controller::{self, Options, UsageSource};
use tailor_updater::metrics::Metrics;

/// Applies VerticalAutoscaler recommendations to running pods through the resize subresource.
#[derive(Debug, Parser)]
#[command(name = "tailor-updater", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log filter (tracing EnvFilter syntax).
    #[arg(long, global = true, env = "RUST_LOG", default_value = "info")]
    log: String,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Watch VerticalAutoscalers with `updateMode: InPlace` and resize their pods.
    Run(RunArgs),
}

#[derive(Debug, ClapArgs)]
struct RunArgs {
    /// Log and record (Events, metrics) what would be resized; change nothing.
    #[arg(long, env = "TAILOR_DRY_RUN", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    dry_run: bool,
    /// Resize patches per second, over all objects.
    #[arg(long, env = "TAILOR_MAX_RESIZES_PER_SECOND", default_value_t = 100.0)]
    max_resizes_per_second: f64,
    /// Resize patches allowed at once before the rate applies.
    #[arg(long, env = "TAILOR_RESIZE_BURST", default_value_t = 100)]
    resize_burst: u32,
    /// VerticalAutoscalers reconciled at the same time.
    #[arg(long, env = "TAILOR_CONCURRENCY", default_value_t = 16)]
    concurrency: usize,
    /// Every VerticalAutoscaler is reconciled at least this often (seconds), besides on changes.
    #[arg(long, env = "TAILOR_RESYNC_SECONDS", default_value_t = 30)]
    resync_seconds: u64,
    /// The first back-off after a refused or failed resize (seconds; doubles up to 30 min).
    #[arg(long, env = "TAILOR_BACKOFF_SECONDS", default_value_t = 30)]
    backoff_seconds: u64,
    /// Where /metrics, /healthz and /readyz are served.
    #[arg(long, env = "TAILOR_ADMIN_ADDR", default_value = "0.0.0.0:8080")]
    admin_addr: std::net::SocketAddr,
    /// Elect a leader through a Lease so only one replica writes. Disable only for a single
    /// replica.
    #[arg(long, env = "TAILOR_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,
    /// The Lease's name.
    #[arg(long, env = "TAILOR_LEASE_NAME", default_value = "tailor-updater")]
    lease_name: String,
    /// The Lease's namespace (the pod's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "tailor-system")]
    lease_namespace: String,
    #[command(flatten)]
    lease_timing: TimingArgs,
    /// This replica's identity (the pod name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    #[command(flatten, next_help_heading = "Usage now (Prometheus)")]
    usage: UsageArgs,
}

/// Where the updater reads a container's working set right before a memory decrease that
/// restarts it (the same Prometheus as the recommender's). Without it such decreases are held.
#[derive(Debug, ClapArgs)]
struct UsageArgs {
    /// Prometheus (or Thanos, Mimir, VictoriaMetrics) base URL.
    #[arg(long, env = "TAILOR_PROMETHEUS_URL")]
    prometheus_url: Option<String>,
    #[command(flatten)]
    access: Access,
    /// cAdvisor working set.
    #[arg(
        long,
        env = "TAILOR_METRIC_MEMORY",
        default_value = "container_memory_working_set_bytes"
    )]
    metric_memory: String,
    /// The highest working set over this many seconds before a restart cut counts as the
    /// usage now (a few scrape intervals).
    #[arg(long, env = "TAILOR_USAGE_WINDOW_SECONDS", default_value_t = 120)]
    usage_window_seconds: u64,
}

impl UsageArgs {
    fn source(&self) -> Result<Option<UsageSource>, String> {
        let Some(url) = &self.prometheus_url else {
            tracing::warn!(
                "no --prometheus-url: memory decreases that restart a container are held, since usage cannot be checked"
            );
            return Ok(None);
        };
        let prometheus = Prometheus::new(Config {
            url: url.clone(),
            auth: self.access.auth()?,
            ca_file: self.access.prometheus_ca_file.clone(),
            insecure_skip_verify: self.access.prometheus_insecure_skip_verify,
            timeout: Duration::from_secs(10),
            retries: 1,
            names: MetricNames {
                memory: self.metric_memory.clone(),
                extra_matchers: self.access.prometheus_extra_matchers.clone(),
                ..MetricNames::default()
            },
            ..Config::default()
        })
        .map_err(|e| e.to_string())?;
        Ok(Some(UsageSource {
            prometheus: Arc::new(prometheus),
            window: Duration::from_secs(self.usage_window_seconds.max(1)),
        }))
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Run(args) => {
            if args.max_resizes_per_second.is_nan() || args.max_resizes_per_second <= 0.0 {
                return Err(format!(
                    "--max-resizes-per-second must be positive, got {}",
                    args.max_resizes_per_second
                ));
            }
            let timing = args.lease_timing.timing()?;
            let client = kube::Client::try_default()
                .await
                .map_err(|e| format!("cannot reach the Kubernetes API: {e}"))?;
            let identity = args
                .identity
                .clone()
                .unwrap_or_else(|| tailor_runtime::default_identity("tailor-updater"));
            let options = Options {
                dry_run: args.dry_run,
                resizes_per_second: args.max_resizes_per_second,
                burst: args.resize_burst,
                concurrency: args.concurrency.max(1),
                resync: Duration::from_secs(args.resync_seconds.max(1)),
                backoff: Duration::from_secs(args.backoff_seconds.max(1)),
                identity: identity.clone(),
                fence: lease::Fence::always(),
                usage: args.usage.source()?,
            };
            if options.dry_run {
                tracing::info!("dry run: nothing will be resized or written");
            }
            let metrics = Arc::new(Metrics::new());
            let listener = tokio::net::TcpListener::bind(args.admin_addr)
                .await
                .map_err(|e| format!("admin address {}: {e}", args.admin_addr))?;
            let admin = tokio::spawn(tailor_runtime::admin::serve(listener, metrics.clone()));
            let work = {
                let (client, metrics, options) = (client.clone(), metrics.clone(), options.clone());
                move |fence| {
                    let options = Options {
                        fence,
                        ..options.clone()
                    };
                    controller::run(client.clone(), options, metrics.clone())
                }
            };
            let config = args.leader_election.then(|| LeaseConfig {
                name: args.lease_name.clone(),
                namespace: args.lease_namespace.clone(),
                identity,
                timing,
            });
            let gauge = metrics.clone();
            let shutdown = tailor_runtime::shutdown_signal();
            let result = lease::lead(client, config, move |l| gauge.set_leader(l), shutdown, work)
                .await
                .unwrap_or(Ok(()));
            tracing::info!("shutting down");
            admin.abort();
            result
        }
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tailor_runtime::init_logging(&cli.log);
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tailor-updater: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
