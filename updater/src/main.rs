//! `tailor-updater`.

use std::sync::Arc;
use std::time::Duration;

use clap::{Args as ClapArgs, Parser, Subcommand};
use tailor_recommender::prometheus::{Access, Config, MetricNames, Prometheus};
use tailor_runtime::lease::{self, LeaseConfig, TimingArgs};
use tailor_runtime::{Scope, ScopeArgs};
use tailor_updater::admission;
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
    #[command(flatten, next_help_heading = "Admission webhook")]
    webhook: WebhookArgs,
    #[command(flatten, next_help_heading = "Namespaces")]
    scope: ScopeArgs,
    #[command(flatten, next_help_heading = "Health")]
    health: tailor_runtime::health::HealthArgs,
}

/// Where the serving certificate of the admission webhook comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum WebhookCerts {
    /// No webhook: new pods are not sized at creation, and the memory gate's approval check
    /// is not served.
    None,
    /// tailor makes its own CA and serving certificate in `--webhook-secret`, keeps the
    /// webhook configurations' caBundle current, and rotates both before they expire.
    SelfManaged,
    /// `tls.crt` and `tls.key` in `--webhook-cert-dir` (e.g. a cert-manager Certificate's
    /// Secret, mounted), re-read when they change.
    Files,
}

/// The admission webhook every replica serves (sizing pods at creation, the memory gate).
#[derive(Debug, ClapArgs)]
struct WebhookArgs {
    /// Serve the webhook, and where its certificate comes from.
    #[arg(long, env = "TAILOR_WEBHOOK_CERTS", value_enum, default_value_t = WebhookCerts::None)]
    webhook_certs: WebhookCerts,
    /// Where the webhook listens (HTTPS).
    #[arg(long, env = "TAILOR_WEBHOOK_ADDR", default_value = "0.0.0.0:9443")]
    webhook_addr: std::net::SocketAddr,
    /// With `files`: the directory holding tls.crt and tls.key.
    #[arg(long, env = "TAILOR_WEBHOOK_CERT_DIR", default_value = "/tls")]
    webhook_cert_dir: std::path::PathBuf,
    /// With `self-managed`: the Secret (in the updater's namespace) holding the CA and the
    /// serving certificate.
    #[arg(
        long,
        env = "TAILOR_WEBHOOK_SECRET",
        default_value = "tailor-webhook-tls"
    )]
    webhook_secret: String,
    /// With `self-managed`: the Mutating- and ValidatingWebhookConfigurations whose caBundle
    /// is kept current.
    #[arg(
        long,
        env = "TAILOR_WEBHOOK_CONFIGURATIONS",
        value_delimiter = ',',
        default_value = "tailor"
    )]
    webhook_configurations: Vec<String>,
    /// With `self-managed`: the serving certificate's names (DNS names or IP addresses).
    #[arg(
        long,
        env = "TAILOR_WEBHOOK_NAMES",
        value_delimiter = ',',
        default_value = "tailor-webhook.tailor-system.svc,tailor-webhook.tailor-system.svc.cluster.local"
    )]
    webhook_names: Vec<String>,
    /// With `self-managed`: the serving certificate's lifetime in seconds (renewed when a
    /// third is left); the CA lives ten times as long.
    #[arg(
        long,
        env = "TAILOR_WEBHOOK_CERT_VALIDITY_SECONDS",
        default_value_t = 31_536_000
    )]
    webhook_cert_validity_seconds: u64,
    /// With `self-managed`: how often the Secret and the caBundles are checked (seconds).
    #[arg(long, env = "TAILOR_WEBHOOK_CERT_CHECK_SECONDS", default_value_t = 60)]
    webhook_cert_check_seconds: u64,
    /// The user the updater's requests come as: its resizes pass the memory gate.
    #[arg(
        long,
        env = "TAILOR_UPDATER_USERNAME",
        default_value = "system:serviceaccount:tailor-system:tailor-updater"
    )]
    updater_username: String,
}

impl WebhookArgs {
    fn config(
        &self,
        namespace: &str,
        identity: &str,
        scope: &Scope,
    ) -> Result<Option<admission::Config>, String> {
        let certificates = match self.webhook_certs {
            WebhookCerts::None => return Ok(None),
            WebhookCerts::Files => admission::Certificates::Files(self.webhook_cert_dir.clone()),
            WebhookCerts::SelfManaged => {
                if self.webhook_names.iter().all(|n| n.trim().is_empty()) {
                    return Err("--webhook-names must name the webhook's Service".into());
                }
                if self.webhook_cert_validity_seconds < 60 {
                    return Err(format!(
                        "--webhook-cert-validity-seconds must be at least 60, got {}",
                        self.webhook_cert_validity_seconds
                    ));
                }
                admission::Certificates::SelfManaged(admission::certs::Settings {
                    namespace: namespace.to_owned(),
                    secret: self.webhook_secret.clone(),
                    configurations: self.webhook_configurations.clone(),
                    names: self.webhook_names.clone(),
                    validity: Duration::from_secs(self.webhook_cert_validity_seconds),
                    check: Duration::from_secs(self.webhook_cert_check_seconds.max(1)),
                })
            }
        };
        Ok(Some(admission::Config {
            addr: self.webhook_addr,
            certificates,
            updater_username: self.updater_username.clone(),
            identity: identity.to_owned(),
            scope: scope.clone(),
        }))
    }
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
    /// kube-state-metrics series prefix: the memory guard reads `<prefix>pod_container_resource_limits`.
    #[arg(long, env = "TAILOR_KSM_PREFIX", default_value = "kube_")]
    ksm_prefix: String,
    /// The highest working set over this many seconds before a restart cut counts as the
    /// usage now (a few scrape intervals).
    #[arg(long, env = "TAILOR_USAGE_WINDOW_SECONDS", default_value_t = 120)]
    usage_window_seconds: u64,
    /// How often the live memory guard reads every container's working set against its
    /// memory limit (seconds; about the scrape interval of cAdvisor's metrics). 0 turns the
    /// guard off for every VerticalAutoscaler.
    #[arg(
        long,
        env = "TAILOR_MEMORY_GUARD_INTERVAL_SECONDS",
        default_value_t = 15
    )]
    memory_guard_interval_seconds: u64,
}

impl UsageArgs {
    fn source(&self) -> Result<Option<UsageSource>, String> {
        let Some(url) = &self.prometheus_url else {
            tracing::warn!(
                "no --prometheus-url: memory decreases that restart a container are held, since usage cannot be checked, and the live memory guard is off"
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
                limits: format!("{}pod_container_resource_limits", self.ksm_prefix),
                extra_matchers: self.access.prometheus_extra_matchers.clone(),
                ..MetricNames::default()
            },
            ..Config::default()
        })
        .map_err(|e| e.to_string())?;
        Ok(Some(UsageSource {
            prometheus: Arc::new(prometheus),
            window: Duration::from_secs(self.usage_window_seconds.max(1)),
            guard_every: (self.memory_guard_interval_seconds > 0)
                .then(|| Duration::from_secs(self.memory_guard_interval_seconds)),
        }))
    }
}

/// The controller's options from the flags of `run`.
fn options(args: &RunArgs, identity: &str, scope: &Scope) -> Result<Options, String> {
    if args.max_resizes_per_second.is_nan() || args.max_resizes_per_second <= 0.0 {
        return Err(format!(
            "--max-resizes-per-second must be positive, got {}",
            args.max_resizes_per_second
        ));
    }
    Ok(Options {
        dry_run: args.dry_run,
        resizes_per_second: args.max_resizes_per_second,
        burst: args.resize_burst,
        concurrency: args.concurrency.max(1),
        resync: Duration::from_secs(args.resync_seconds.max(1)),
        backoff: Duration::from_secs(args.backoff_seconds.max(1)),
        identity: identity.to_owned(),
        fence: lease::Fence::always(),
        usage: args.usage.source()?,
        scope: scope.clone(),
    })
}

async fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Run(args) => {
            let timing = args.lease_timing.timing()?;
            let scope = args.scope.scope()?;
            args.health.apply();
            let client = kube::Client::try_default()
                .await
                .map_err(|e| format!("cannot reach the Kubernetes API: {e}"))?;
            let identity = args
                .identity
                .clone()
                .unwrap_or_else(|| tailor_runtime::default_identity("tailor-updater"));
            let options = options(&args, &identity, &scope)?;
            tracing::info!("watching {scope}");
            if options.dry_run {
                tracing::info!("dry run: nothing will be resized or written");
            }
            let metrics = Arc::new(Metrics::new());
            let listener = tokio::net::TcpListener::bind(args.admin_addr)
                .await
                .map_err(|e| format!("admin address {}: {e}", args.admin_addr))?;
            let admin = tokio::spawn(tailor_runtime::admin::serve(listener, metrics.clone()));
            let webhook = match args
                .webhook
                .config(&args.lease_namespace, &identity, &scope)?
            {
                Some(config) => {
                    let listener = admission::bind(&config, &metrics).await?;
                    let run = admission::run(client.clone(), config, listener, metrics.clone());
                    Some(tokio::spawn(run))
                }
                None => None,
            };
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
            if let Some(w) = webhook {
                w.abort();
            }
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
