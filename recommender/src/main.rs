//! `tailor-recommender`.

use std::path::PathBuf;
use std::time::Duration;

use std::sync::Arc;

use clap::{ArgGroup, Args as ClapArgs, Parser, Subcommand};
use tailor_crds::v1alpha1::RecommenderPolicy;
use tailor_recommender::controller::{self, Options};
use tailor_recommender::metrics::Metrics;
use tailor_recommender::model::backtest::{Guard, Options as BacktestOptions, PolicyKind};
use tailor_recommender::prometheus::{Access, Config, MetricNames, Prometheus};
use tailor_runtime::ScopeArgs;
use tailor_runtime::lease::{self, LeaseConfig, TimingArgs};

/// Computes CPU/memory recommendations for VerticalAutoscalers from Prometheus history.
#[derive(Debug, Parser)]
#[command(name = "tailor-recommender", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log filter (tracing EnvFilter syntax).
    #[arg(long, global = true, env = "RUST_LOG", default_value = "info")]
    log: String,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Watch VerticalAutoscalers and keep their status.recommendation current.
    Run(RunArgs),
    /// Print recommendations once: for the VerticalAutoscalers found, or for every workload
    /// of the namespaces that have none. Needs only Prometheus and read access.
    Recommend(RecommendArgs),
    /// Replay usage traces through the policies (tailor, vpa, krr, provisioned) and score
    /// them: would-be OOM kills, memory and CPU slack, CPU over-use, churn. The traces come
    /// from files (--trace) or from a live workload's own history in Prometheus
    /// (--prometheus-url with --namespace and --workload).
    Backtest(BacktestArgs),
}

#[derive(Debug, ClapArgs)]
#[command(group(ArgGroup::new("source").required(true).args(["trace", "prometheus_url"])))]
struct BacktestArgs {
    /// A trace file (CSV: timestamp,cpu_cores,memory_bytes[,cpu_limit_cores,memory_limit_bytes])
    /// or a folder of them.
    #[arg(long)]
    trace: Option<PathBuf>,
    /// Instead of trace files, backtest a live workload's own history read from this
    /// Prometheus (or Thanos, Mimir, VictoriaMetrics): one trace per container, at each step
    /// the highest use over the workload's pods, with their limits (or requests) as the
    /// provisioned sizes. Needs --namespace and --workload; the connection flags below apply.
    #[arg(long, requires_all = ["namespace", "workload"])]
    prometheus_url: Option<String>,
    /// The live workload's namespace (with --prometheus-url).
    #[arg(long, short = 'n', requires = "prometheus_url")]
    namespace: Option<String>,
    /// The live workload, KIND/NAME, KIND one of Deployment, StatefulSet, DaemonSet,
    /// ReplicaSet, Job, CronJob (e.g. Deployment/api). Its pods, earlier rollouts included,
    /// come from kube-state-metrics' kube_pod_owner (and kube_replicaset_owner,
    /// kube_job_owner) series.
    #[arg(long, requires = "prometheus_url")]
    workload: Option<String>,
    /// How much of the live workload's history to read, ending now (e.g. 14d, 36h, 2w).
    #[arg(long, default_value = "14d", requires = "prometheus_url")]
    window: String,
    /// Do not read the cluster (with --prometheus-url). By default the VerticalAutoscaler that
    /// targets the live workload is read through the usual kubeconfig (or in-cluster
    /// configuration), with the workload's current pods: tailor then replays with its
    /// recommenderPolicy (unless --tailor-policy is given) and each container's heap floor, as
    /// the recommender in the cluster computes them.
    #[arg(long, requires = "prometheus_url")]
    no_cluster: bool,
    /// Policies to score, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "tailor,vpa,krr,provisioned"
    )]
    policy: Vec<String>,
    /// Time between decisions.
    #[arg(long, default_value = "1h")]
    decision_interval: String,
    /// History seen before the first decision.
    #[arg(long, default_value = "24h")]
    warmup: String,
    /// The relative change below which the updater leaves a resource alone.
    #[arg(long, default_value_t = 0.1)]
    min_change: f64,
    /// tailor's policy, as a VerticalAutoscaler's `spec.recommenderPolicy` in JSON; fields left
    /// out take their defaults. E.g. '{"historyWindow": "8d", "memory": {"peakMargin": 0.2}}'
    /// or "$(kubectl get va api -o jsonpath='{.spec.recommenderPolicy}')".
    #[arg(long)]
    tailor_policy: Option<String>,
    /// Model tailor's live memory guard (as in InPlace mode on Kubernetes 1.35+): after a
    /// sample above --guard-threshold x the memory in force, the memory is raised to the use x
    /// (1 + --guard-step) from the next sample on. --memory-guard=false scores tailor without it.
    #[arg(
        long,
        default_value_t = true,
        num_args = 0..=1,
        default_missing_value = "true",
        action = clap::ArgAction::Set,
        help_heading = "Live memory guard (tailor)"
    )]
    memory_guard: bool,
    /// Raise when the use is above this share of the memory in force, above 0 and below 1.
    #[arg(
        long,
        default_value_t = Guard::default().threshold,
        allow_negative_numbers = true,
        help_heading = "Live memory guard (tailor)"
    )]
    guard_threshold: f64,
    /// Raise to the use x (1 + this), at least 0.
    #[arg(
        long,
        default_value_t = Guard::default().step,
        allow_negative_numbers = true,
        help_heading = "Live memory guard (tailor)"
    )]
    guard_step: f64,
    /// The least time between two raises of a container.
    #[arg(
        long,
        default_value = "60s",
        help_heading = "Live memory guard (tailor)"
    )]
    guard_min_interval: String,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    output: tailor_recommender::cli::Output,
    #[command(
        flatten,
        next_help_heading = "Prometheus connection (with --prometheus-url)"
    )]
    prometheus: PrometheusConnection,
}

#[derive(Debug, ClapArgs)]
struct RecommendArgs {
    #[command(flatten)]
    prometheus: PrometheusArgs,
    /// Namespaces to read (repeat the flag); all when none is given.
    #[arg(long = "namespace", short = 'n')]
    namespaces: Vec<String>,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    output: tailor_recommender::cli::Output,
}

#[derive(Debug, ClapArgs)]
struct PrometheusArgs {
    /// Prometheus (or Thanos, Mimir, VictoriaMetrics) base URL.
    #[arg(long, env = "TAILOR_PROMETHEUS_URL")]
    prometheus_url: String,
    #[command(flatten)]
    connection: PrometheusConnection,
}

/// How to reach and read Prometheus, its URL aside (required by `run` and `recommend`,
/// optional for `backtest`).
#[derive(Debug, ClapArgs)]
struct PrometheusConnection {
    #[command(flatten)]
    access: Access,
    /// Resolution of the history, seconds.
    #[arg(long, env = "TAILOR_HISTORY_STEP_SECONDS", default_value_t = 60)]
    history_step_seconds: u64,
    /// How far back the OOM-kill query looks at each step, seconds (at least four steps).
    #[arg(long, env = "TAILOR_OOM_WINDOW_SECONDS", default_value_t = 600)]
    oom_window_seconds: u64,
    /// The most memory a usage sample may show (a quantity); a sample above it is garbage
    /// (no node has that much) and is left out of the history, counted in
    /// tailor_recommender_prometheus_samples_rejected_total.
    #[arg(long, env = "TAILOR_MAX_MEMORY_SAMPLE", default_value = "16Ti")]
    max_memory_sample: String,
    /// The most CPU a usage sample may show (cores); likewise.
    #[arg(long, env = "TAILOR_MAX_CPU_SAMPLE", default_value_t = 4096.0)]
    max_cpu_sample: f64,
    /// How long one Prometheus request may take, seconds.
    #[arg(long, env = "TAILOR_PROMETHEUS_TIMEOUT_SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    prometheus_timeout_seconds: u64,
    /// Retries of a request that failed (no connection, a timeout, 5xx, 429), with exponential
    /// back-off from 0.5 s or after the time a 429/503 asks for (at most 60 s).
    #[arg(long, env = "TAILOR_PROMETHEUS_RETRIES", default_value_t = 3)]
    prometheus_retries: u32,
    /// Most pods named in one query.
    #[arg(long, env = "TAILOR_PROMETHEUS_POD_BATCH", default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=1000))]
    prometheus_pod_batch: u64,
    /// Most steps in one range query; longer ranges are cut (Prometheus refuses more than
    /// 11,000 points per series).
    #[arg(long, env = "TAILOR_PROMETHEUS_MAX_POINTS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(2..=11_000))]
    prometheus_max_points: u64,
    /// The largest answer read (a quantity); a larger one is refused rather than held in memory.
    #[arg(long, env = "TAILOR_PROMETHEUS_MAX_ANSWER", default_value = "256Mi")]
    prometheus_max_answer: String,
    /// cAdvisor CPU counter.
    #[arg(
        long,
        env = "TAILOR_METRIC_CPU",
        default_value = "container_cpu_usage_seconds_total"
    )]
    metric_cpu: String,
    /// cAdvisor working set.
    #[arg(
        long,
        env = "TAILOR_METRIC_MEMORY",
        default_value = "container_memory_working_set_bytes"
    )]
    metric_memory: String,
    /// kube-state-metrics series prefix (`kube_pod_owner`, `kube_replicaset_owner`, ... follow it).
    #[arg(long, env = "TAILOR_KSM_PREFIX", default_value = "kube_")]
    ksm_prefix: String,
    /// JVM heap ceiling gauges the applications expose, comma-separated; their `area="heap"`
    /// series are read as heap hints (Micrometer's per-pool series are summed).
    #[arg(
        long,
        env = "TAILOR_METRIC_JVM_HEAP_MAX",
        value_delimiter = ',',
        default_value = "jvm_memory_max_bytes,jvm_memory_bytes_max"
    )]
    metric_jvm_heap_max: Vec<String>,
    /// Read JVM heap metrics as heap hints.
    #[arg(long, env = "TAILOR_JVM_HEAP_METRICS", default_value_t = true, action = clap::ArgAction::Set)]
    jvm_heap_metrics: bool,
}

#[derive(Debug, ClapArgs)]
struct RunArgs {
    #[command(flatten)]
    prometheus: PrometheusArgs,
    /// How often every VerticalAutoscaler is recomputed, seconds.
    #[arg(long, env = "TAILOR_REFRESH_SECONDS", default_value_t = 300)]
    refresh_seconds: u64,
    /// VerticalAutoscalers computed at once.
    #[arg(long, env = "TAILOR_CONCURRENCY", default_value_t = 4)]
    concurrency: usize,
    /// How far back each pass reads again what the previous pass read, seconds: samples that
    /// reach Prometheus later than this after their time (remote-write lag) are missed.
    #[arg(long, env = "TAILOR_HISTORY_OVERLAP_SECONDS", default_value_t = 120)]
    history_overlap_seconds: u64,
    /// Where /metrics, /healthz and /readyz are served.
    #[arg(long, env = "TAILOR_ADMIN_ADDR", default_value = "0.0.0.0:8080")]
    admin_addr: std::net::SocketAddr,
    /// Elect a leader through a Lease so only one replica writes. Disable only for a single
    /// replica.
    #[arg(long, env = "TAILOR_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,
    /// The Lease's name.
    #[arg(long, env = "TAILOR_LEASE_NAME", default_value = "tailor-recommender")]
    lease_name: String,
    /// The Lease's namespace (the pod's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "tailor-system")]
    lease_namespace: String,
    #[command(flatten)]
    lease_timing: TimingArgs,
    /// This replica's identity (the pod name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    #[command(flatten, next_help_heading = "Namespaces")]
    scope: ScopeArgs,
    #[command(flatten, next_help_heading = "Health")]
    health: tailor_runtime::health::HealthArgs,
}

/// A positive byte quantity flag (`16Ti`, `256Mi`).
fn bytes_flag(flag: &str, text: &str, example: &str) -> Result<i64, String> {
    tailor_crds::quantity::memory_bytes(&k8s_openapi::apimachinery::pkg::api::resource::Quantity(
        text.to_owned(),
    ))
    .ok()
    .filter(|b| *b > 0)
    .ok_or_else(|| format!("--{flag} must be a positive quantity such as {example}, not {text:?}"))
}

fn prometheus(url: &str, args: &PrometheusConnection) -> Result<Prometheus, String> {
    let auth = args.access.auth()?;
    let max_memory = bytes_flag("max-memory-sample", &args.max_memory_sample, "16Ti")?;
    let max_answer = bytes_flag(
        "prometheus-max-answer",
        &args.prometheus_max_answer,
        "256Mi",
    )?;
    if !(args.max_cpu_sample.is_finite() && args.max_cpu_sample > 0.0) {
        return Err(format!(
            "--max-cpu-sample must be a positive number of cores, not {}",
            args.max_cpu_sample
        ));
    }
    Prometheus::new(Config {
        url: url.to_owned(),
        auth,
        ca_file: args.access.prometheus_ca_file.clone(),
        insecure_skip_verify: args.access.prometheus_insecure_skip_verify,
        step: Duration::from_secs(args.history_step_seconds.max(1)),
        oom_window: Duration::from_secs(args.oom_window_seconds),
        max_memory_bytes: max_memory as f64,
        max_cpu_cores: args.max_cpu_sample,
        timeout: Duration::from_secs(args.prometheus_timeout_seconds),
        retries: args.prometheus_retries,
        pod_batch: args.prometheus_pod_batch as usize,
        max_points: args.prometheus_max_points as usize,
        max_body_bytes: usize::try_from(max_answer).unwrap_or(usize::MAX),
        names: MetricNames {
            cpu: args.metric_cpu.clone(),
            memory: args.metric_memory.clone(),
            restarts: format!("{}pod_container_status_restarts_total", args.ksm_prefix),
            terminated_reason: format!(
                "{}pod_container_status_last_terminated_reason",
                args.ksm_prefix
            ),
            limits: format!("{}pod_container_resource_limits", args.ksm_prefix),
            requests: format!("{}pod_container_resource_requests", args.ksm_prefix),
            pod_owner: format!("{}pod_owner", args.ksm_prefix),
            replicaset_owner: format!("{}replicaset_owner", args.ksm_prefix),
            job_owner: format!("{}job_owner", args.ksm_prefix),
            ready_time: format!("{}pod_status_ready_time", args.ksm_prefix),
            memory_limit: MetricNames::default().memory_limit,
            memory_stalled: MetricNames::default().memory_stalled,
            jvm_heap_max: if args.jvm_heap_metrics {
                args.metric_jvm_heap_max
                    .iter()
                    .map(|n| n.trim().to_owned())
                    .filter(|n| !n.is_empty())
                    .collect()
            } else {
                Vec::new()
            },
            extra_matchers: args.access.prometheus_extra_matchers.clone(),
        },
        ..Config::default()
    })
    .map_err(|e| e.to_string())
}

async fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Recommend(args) => {
            let prom = prometheus(&args.prometheus.prometheus_url, &args.prometheus.connection)?;
            let client = kube::Client::try_default()
                .await
                .map_err(|e| format!("Kubernetes client: {e}"))?;
            let rows = tailor_recommender::cli::recommend(
                client,
                prom,
                &args.namespaces,
                &mut std::io::stderr(),
            )
            .await?;
            tailor_recommender::cli::render(&rows, args.output, &mut std::io::stdout().lock())
                .map_err(|e| e.to_string())
        }
        Command::Backtest(args) => backtest(&args).await,
        Command::Run(args) => {
            let timing = args.lease_timing.timing()?;
            let scope = args.scope.scope()?;
            args.health.apply();
            let prom = prometheus(&args.prometheus.prometheus_url, &args.prometheus.connection)?;
            let client = kube::Client::try_default()
                .await
                .map_err(|e| format!("Kubernetes client: {e}"))?;
            tracing::info!("watching {scope}");
            let options = Options {
                refresh: Duration::from_secs(args.refresh_seconds.max(1)),
                concurrency: args.concurrency.max(1),
                history_overlap: Duration::from_secs(args.history_overlap_seconds),
                scope,
                ..Options::default()
            };
            let metrics = Arc::new(Metrics::new());
            let listener = tokio::net::TcpListener::bind(args.admin_addr)
                .await
                .map_err(|e| format!("admin address {}: {e}", args.admin_addr))?;
            let admin = tokio::spawn(tailor_runtime::admin::serve(listener, metrics.clone()));
            let prom = Arc::new(prom);
            let work = {
                let (client, metrics, options, prom) = (
                    client.clone(),
                    metrics.clone(),
                    options.clone(),
                    prom.clone(),
                );
                move |fence| {
                    let (client, metrics, prom) = (client.clone(), metrics.clone(), prom.clone());
                    let options = Options {
                        fence,
                        ..options.clone()
                    };
                    async move { controller::run(client, prom, options, metrics).await }
                }
            };
            let config = args.leader_election.then(|| LeaseConfig {
                name: args.lease_name.clone(),
                namespace: args.lease_namespace.clone(),
                identity: args
                    .identity
                    .clone()
                    .unwrap_or_else(|| tailor_runtime::default_identity("tailor-recommender")),
                timing,
            });
            let gauge = metrics.clone();
            let shutdown = tailor_runtime::shutdown_signal();
            let result = lease::lead(client, config, move |l| gauge.set_leader(l), shutdown, work)
                .await
                .unwrap_or(Ok(()));
            admin.abort();
            result
        }
    }
}

/// A duration flag of `backtest` in seconds; positive, or >= 0 for --warmup and
/// --guard-min-interval.
fn seconds(what: &str, text: &str) -> Result<f64, String> {
    tailor_recommender::spec::parse_duration(text)
        .map_err(|e| format!("--{what}: {e}"))
        .and_then(|s| {
            if s > 0.0 || what == "warmup" || what == "guard-min-interval" {
                Ok(s)
            } else {
                Err(format!("--{what}: must be positive"))
            }
        })
}

/// The policies and options `backtest` runs with, every flag checked, and the policy given
/// with --tailor-policy.
fn backtest_options(
    args: &BacktestArgs,
) -> Result<(Vec<PolicyKind>, BacktestOptions, Option<RecommenderPolicy>), String> {
    let policies = args
        .policy
        .iter()
        .map(|p| {
            PolicyKind::parse(p.trim()).ok_or_else(|| {
                format!("unknown policy {p:?}: expected tailor, vpa, krr or provisioned")
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if !(0.0..1.0).contains(&args.min_change) {
        return Err("--min-change: must be in [0, 1)".into());
    }
    let guard = Guard {
        enabled: args.memory_guard,
        threshold: args.guard_threshold,
        step: args.guard_step,
        min_interval: seconds("guard-min-interval", &args.guard_min_interval)?,
    };
    guard.check().map_err(|e| format!("--guard-{e}"))?;
    // tailor runs with the given policy, or the defaults a VerticalAutoscaler gets.
    let given = args
        .tailor_policy
        .as_deref()
        .map(tailor_recommender::backtest::parse_policy)
        .transpose()
        .map_err(|e| format!("--tailor-policy: {e}"))?;
    let defaults = given.clone().unwrap_or_default();
    let options = BacktestOptions {
        decision_interval: seconds("decision-interval", &args.decision_interval)?,
        warmup: seconds("warmup", &args.warmup)?,
        min_change: args.min_change,
        tailor_window: tailor_recommender::spec::parse_duration(&defaults.history_window)
            .map_err(|e| format!("--tailor-policy: historyWindow: {e}"))?,
        tailor_policy: tailor_recommender::spec::recommender_policy(&defaults, None, None)
            .map_err(|e| format!("--tailor-policy: {e}"))?,
        guard,
        ..BacktestOptions::default()
    };
    Ok((policies, options, given))
}

/// Backtests a live workload's own history: its traces and recorded OOM kills from
/// Prometheus, tailor set up from the cluster unless --no-cluster.
async fn backtest_live(
    args: &BacktestArgs,
    url: &str,
    policies: &[PolicyKind],
    (options, given): (&BacktestOptions, Option<RecommenderPolicy>),
) -> Result<Vec<tailor_recommender::backtest::TraceResult>, String> {
    use tailor_recommender::backtest::{self, cluster};
    let workload = backtest::Workload::parse(
        args.namespace.as_deref().unwrap_or_default(),
        args.workload.as_deref().unwrap_or_default(),
    )?;
    let window = seconds("window", &args.window)?;
    let prom = Arc::new(prometheus(url, &args.prometheus)?);
    // The window ends now, on a whole step.
    let step = prom.config().step.as_secs_f64().max(1.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs_f64();
    let end = (now / step).floor() * step;
    let traces = backtest::live_traces(&prom, &workload, end, window).await?;
    for (_, t) in &traces {
        eprintln!(
            "{}: {} step(s) of {}s with usage, {} recorded OOM kill(s)",
            t.name,
            t.samples.len(),
            t.interval,
            t.ooms.len()
        );
    }
    let containers: Vec<String> = traces.iter().map(|(c, _)| c.clone()).collect();
    let setup = if args.no_cluster {
        cluster::Setup::NotRead {
            why: "--no-cluster".into(),
            policy_given: given.is_some(),
        }
    } else {
        cluster::read(prom.clone(), &workload, &containers, end, given.as_ref()).await?
    };
    let named: Vec<(String, String)> = (traces.iter())
        .map(|(c, t)| (t.name.clone(), c.clone()))
        .collect();
    for note in setup.notes(&named) {
        eprintln!("{note}");
    }
    Ok(traces
        .iter()
        .map(|(c, t)| backtest::score(t, policies, &setup.options(c, options)))
        .collect())
}

async fn backtest(args: &BacktestArgs) -> Result<(), String> {
    let (policies, options, given) = backtest_options(args)?;
    let (results, problems) = match (&args.prometheus_url, &args.trace) {
        (Some(url), _) => (
            backtest_live(args, url, &policies, (&options, given)).await?,
            Vec::new(),
        ),
        (None, Some(path)) => {
            let files = tailor_recommender::backtest::trace_files(path)?;
            tailor_recommender::backtest::run_files(&files, &policies, &options)
        }
        (None, None) => return Err("--trace or --prometheus-url is required".into()),
    };
    for p in &problems {
        eprintln!("skipped {p}");
    }
    if results.is_empty() {
        return Err(format!(
            "no trace could be read ({} problem(s) above)",
            problems.len()
        ));
    }
    tailor_recommender::backtest::render(
        &results,
        &policies,
        args.output,
        &mut std::io::stdout().lock(),
    )
    .map_err(|e| e.to_string())?;
    eprintln!(
        "{} trace(s) scored, {} skipped",
        results.len(),
        problems.len()
    );
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tailor_runtime::init_logging(&cli.log);
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tailor-recommender: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
