//! Prometheus (backfilled, scraping the nodes and tailor) and the two tailor binaries.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tailor_e2e::process::ServerProcess;
use tailor_e2e::prometheus::{Prometheus, PrometheusOptions, ScrapeTarget};
use tailor_e2e::{ControlPlane, free_port};

use crate::history::History;
use crate::workloads::Workload;
use crate::{Error, INTERVAL, STEP, root, setup};

/// The directory of the tailor binaries: `TAILOR_BIN_DIR`, else next to this one.
pub fn binary(name: &str) -> Result<PathBuf, Error> {
    let dir = match std::env::var_os("TAILOR_BIN_DIR") {
        Some(d) => PathBuf::from(d),
        None => std::env::current_exe()?
            .parent()
            .map(Path::to_path_buf)
            .ok_or("no directory for the binaries")?,
    };
    let path = dir.join(name);
    if !path.is_file() {
        return Err(format!(
            "{} not found: build it with `cargo build -p {name}` (same profile as tailor-demo) or set TAILOR_BIN_DIR",
            path.display()
        )
        .into());
    }
    Ok(path)
}

/// A scrape target at `address` + `path`, labelled `job`.
pub fn target(job: &str, address: String, path: &str) -> ScrapeTarget {
    ScrapeTarget {
        job: job.into(),
        address,
        metrics_path: path.into(),
        ..Default::default()
    }
}

/// The tailor binaries' admin ports, chosen before Prometheus starts so it scrapes them.
pub struct Ports {
    pub recommender: u16,
    pub updater: u16,
}

impl Ports {
    pub fn free() -> Result<Self, Error> {
        Ok(Self {
            recommender: free_port()?,
            updater: free_port()?,
        })
    }
}

/// Starts Prometheus on `history` (its first part written into `dir` and deleted once read,
/// its second part right before the server starts), scraping `targets` and the tailor
/// binaries every 5 s, with the alert rules loaded.
pub async fn prometheus(
    history: Arc<History>,
    dir: &Path,
    mut targets: Vec<ScrapeTarget>,
    ports: &Ports,
) -> Result<Prometheus, Error> {
    targets.push(target(
        "tailor-recommender",
        format!("127.0.0.1:{}", ports.recommender),
        "/metrics",
    ));
    targets.push(target(
        "tailor-updater",
        format!("127.0.0.1:{}", ports.updater),
        "/metrics",
    ));
    let started = std::time::Instant::now();
    let backfill = history.write(dir)?;
    let size = std::fs::metadata(&backfill)?.len();
    crate::step(&format!(
        "history written: {:.0} MiB of OpenMetrics, {:.0} days every {INTERVAL} s, in {:.1} s; backfilling Prometheus",
        size as f64 / 1_048_576.0,
        (history.end - history.start) as f64 / 86_400.0,
        started.elapsed().as_secs_f64()
    ));
    let prom = Prometheus::start(PrometheusOptions {
        backfill_file: Some(backfill.clone()),
        backfill_until_start: Some(history.clone().until_start()),
        scrape_targets: targets,
        scrape_interval: Duration::from_secs(5),
        rule_files: vec![root().join("deploy/prometheus/tailor.rules.yaml")],
        ..Default::default()
    })
    .await?;
    std::fs::remove_file(&backfill)?;
    crate::step(&format!(
        "Prometheus backfilled and started in {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    Ok(prom)
}

/// Prometheus, the VerticalAutoscalers, the recommender and the updater.
pub struct Stack {
    pub prom: Prometheus,
    /// The first sample of the backfilled history.
    pub history_start: i64,
    /// When Prometheus started, unix seconds: the live scrape begins.
    pub live_from: f64,
    pub ports: Ports,
    pub tailor: Tailor,
}

impl Stack {
    /// Starts Prometheus on `history` scraping `targets`, creates the VerticalAutoscalers of
    /// `list`, then starts the recommender and the updater (history and logs in `dir`).
    pub async fn start(
        cp: &ControlPlane,
        list: &[Workload],
        (history, targets): (History, Vec<ScrapeTarget>),
        dir: &Path,
    ) -> Result<Self, Error> {
        let ports = Ports::free()?;
        let history_start = history.start;
        let prom = prometheus(Arc::new(history), dir, targets, &ports).await?;
        let live_from = crate::now();
        setup::verticalautoscalers(&cp.client(), list).await?;
        let tailor = Tailor::start(cp, &prom, &ports, dir)?;
        crate::step("recommender and updater started; waiting for them to act");
        Ok(Self {
            prom,
            history_start,
            live_from,
            ports,
            tailor,
        })
    }
}

/// The running recommender and updater.
pub struct Tailor {
    pub recommender: ServerProcess,
    pub updater: ServerProcess,
}

impl Tailor {
    /// Starts both against the control plane, logging into `dir`.
    pub fn start(
        cp: &ControlPlane,
        prom: &Prometheus,
        ports: &Ports,
        dir: &Path,
    ) -> Result<Self, Error> {
        let env = vec![(
            "KUBECONFIG".to_owned(),
            cp.kubeconfig().display().to_string(),
        )];
        let strings = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let recommender = ServerProcess::spawn_with_env(
            "tailor-recommender",
            &binary("tailor-recommender")?,
            &strings(&[
                "run",
                "--prometheus-url",
                prom.url(),
                "--admin-addr",
                &format!("127.0.0.1:{}", ports.recommender),
                "--leader-election",
                "false",
                "--refresh-seconds",
                "30",
                "--history-step-seconds",
                &STEP.to_string(),
            ]),
            &env,
            &dir.join("recommender.log"),
        )?;
        let updater = ServerProcess::spawn_with_env(
            "tailor-updater",
            &binary("tailor-updater")?,
            &strings(&[
                "run",
                "--prometheus-url",
                prom.url(),
                "--admin-addr",
                &format!("127.0.0.1:{}", ports.updater),
                "--leader-election",
                "false",
                "--resync-seconds",
                "10",
            ]),
            &env,
            &dir.join("updater.log"),
        )?;
        Ok(Self {
            recommender,
            updater,
        })
    }

    pub fn log_tails(&self) -> String {
        format!(
            "recommender log:\n{}\nupdater log:\n{}",
            self.recommender.log_tail(20),
            self.updater.log_tail(20)
        )
    }
}

/// How to look around, printed once the system has acted.
pub fn look_around(
    cp: &ControlPlane,
    prom: &Prometheus,
    ports: &Ports,
    ready_after: f64,
) -> String {
    let ns = crate::NS;
    format!(
        "\nLook around (ready after {ready_after:.0} s):\n  export KUBECONFIG={}\n  kubectl -n {ns} get verticalautoscalers\n  kubectl -n {ns} get verticalautoscaler web-api -o yaml\n  kubectl -n {ns} get events --sort-by=.lastTimestamp\n  Prometheus: {}  (alerts: {}/alerts)\n  recommender metrics: http://127.0.0.1:{}/metrics\n  updater metrics: http://127.0.0.1:{}/metrics",
        cp.kubeconfig().display(),
        prom.url(),
        prom.url(),
        ports.recommender,
        ports.updater,
    )
}
