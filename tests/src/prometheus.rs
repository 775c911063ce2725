//! The real Prometheus server, backfilled with `promtool` and optionally scraping targets.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tempfile::TempDir;

use crate::assets::prometheus_binary;
use crate::process::ServerProcess;
use crate::{HarnessError, Result, free_port};

const START_ATTEMPTS: usize = 3;
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A scrape target.
#[derive(Debug, Clone, Default)]
pub struct ScrapeTarget {
    /// The `job` label.
    pub job: String,
    /// `host:port`.
    pub address: String,
    /// Path of the metrics endpoint, e.g. `/metrics`.
    pub metrics_path: String,
    /// `https` instead of `http`, without verifying the server's certificate (a kubelet's
    /// self-signed one).
    pub https_insecure: bool,
    /// Labels added to every series of the target (`node`, `metrics_path`, ... as a
    /// kube-prometheus ServiceMonitor adds them; `instance` replaces the address); the series'
    /// own labels win.
    pub labels: Vec<(String, String)>,
    /// URL query parameters of the scrape (`params:`), e.g. `node=sim-0`.
    pub params: Vec<(String, String)>,
}

/// How to start Prometheus.
#[derive(Debug, Clone)]
pub struct PrometheusOptions {
    /// OpenMetrics text (ending in `# EOF`) to backfill the TSDB with before the server starts.
    pub backfill: Option<String>,
    /// A file of OpenMetrics text to backfill with (for histories too large for a string).
    pub backfill_file: Option<std::path::PathBuf>,
    /// Called once the backfills above are written, right before the server starts: more
    /// OpenMetrics text to backfill, the history from where the others end up to now, so that
    /// the history ends where the scrapes begin however long the first backfill took.
    pub backfill_until_start: Option<BackfillUntilStart>,
    /// Targets to scrape.
    pub scrape_targets: Vec<ScrapeTarget>,
    /// The scrape interval.
    pub scrape_interval: Duration,
    /// Rule files to load (`rule_files:`).
    pub rule_files: Vec<std::path::PathBuf>,
    /// Remote-read endpoints (`read_recent: true`); one that fails makes every answer carry a
    /// warning, as a Thanos store or a Mimir querier that fails does.
    pub remote_read: Vec<String>,
    /// More flags for the server (`--query.max-samples=1000`).
    pub extra_args: Vec<String>,
}

impl Default for PrometheusOptions {
    fn default() -> Self {
        Self {
            backfill: None,
            backfill_file: None,
            backfill_until_start: None,
            scrape_targets: Vec::new(),
            scrape_interval: Duration::from_secs(1),
            rule_files: Vec::new(),
            remote_read: Vec::new(),
            extra_args: Vec::new(),
        }
    }
}

/// Makes the OpenMetrics text of the history still missing when Prometheus is about to start
/// (see [`PrometheusOptions::backfill_until_start`]).
#[derive(Clone)]
pub struct BackfillUntilStart(
    pub Arc<dyn Fn() -> std::result::Result<String, String> + Send + Sync>,
);

impl std::fmt::Debug for BackfillUntilStart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BackfillUntilStart(..)")
    }
}

/// A running Prometheus. Dropping it stops the server and deletes its TSDB.
#[derive(Debug)]
pub struct Prometheus {
    process: ServerProcess,
    url: String,
    version: String,
    http: reqwest::Client,
    dir: TempDir,
}

/// One series of a range query: its labels and `(unix seconds, value as Prometheus printed it)`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RangeSeries {
    /// The series' labels, `__name__` included.
    pub metric: BTreeMap<String, String>,
    /// The samples.
    pub values: Vec<(f64, String)>,
}

/// One series of an instant query.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct InstantSample {
    /// The series' labels.
    pub metric: BTreeMap<String, String>,
    /// `(unix seconds, value)`.
    pub value: (f64, String),
}

#[derive(Deserialize)]
struct ApiResponse<T> {
    status: String,
    data: Option<ApiData<T>>,
    error: Option<String>,
}

#[derive(Deserialize)]
struct ApiData<T> {
    result: Vec<T>,
}

impl Prometheus {
    /// A Prometheus whose TSDB holds exactly the samples of `openmetrics`.
    pub async fn backfilled(openmetrics: &str) -> Result<Self> {
        Self::start(PrometheusOptions {
            backfill: Some(openmetrics.to_owned()),
            ..Default::default()
        })
        .await
    }

    /// Backfills (if asked), starts the server on a free port and waits until it is ready.
    pub async fn start(options: PrometheusOptions) -> Result<Self> {
        let prometheus = prometheus_binary("prometheus")?;
        let dir = tempfile::Builder::new()
            .prefix("tailor-prom-")
            .tempdir()
            .map_err(HarnessError::io("create Prometheus dir"))?;
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).map_err(HarnessError::io("create TSDB dir"))?;
        if let Some(text) = &options.backfill {
            let input = dir.path().join("backfill.om");
            std::fs::write(&input, text)
                .map_err(HarnessError::io(format!("write {}", input.display())))?;
            backfill(&input, &data)?;
        }
        if let Some(input) = &options.backfill_file {
            backfill(input, &data)?;
        }
        if let Some(more) = &options.backfill_until_start {
            let text = (more.0)().map_err(HarnessError::Other)?;
            let input = dir.path().join("backfill-until-start.om");
            std::fs::write(&input, text)
                .map_err(HarnessError::io(format!("write {}", input.display())))?;
            promtool_backfill(&input, &data)?;
            let _ = std::fs::remove_file(&input);
        }
        let config = dir.path().join("prometheus.yml");
        std::fs::write(&config, config_yaml(&options))
            .map_err(HarnessError::io(format!("write {}", config.display())))?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| HarnessError::Other(format!("http client: {e}")))?;

        let mut last = None;
        for attempt in 0..START_ATTEMPTS {
            let port = free_port()?;
            let mut args = vec![
                format!("--config.file={}", config.display()),
                format!("--storage.tsdb.path={}", data.display()),
                format!("--web.listen-address=127.0.0.1:{port}"),
                // Backfilled history may be weeks old; keep all of it.
                "--storage.tsdb.retention.time=3650d".into(),
                "--log.level=warn".into(),
            ];
            args.extend(options.extra_args.iter().cloned());
            let log = dir.path().join(format!("prometheus-{attempt}.log"));
            let mut process = ServerProcess::spawn("prometheus", &prometheus, &args, &log)?;
            let url = format!("http://127.0.0.1:{port}");
            match wait_ready(&mut process, &http, &url).await {
                Ok(()) => {
                    let version = build_version(&http, &url).await.unwrap_or_default();
                    eprintln!("tailor-e2e: prometheus {version} ready at {url}");
                    return Ok(Self {
                        process,
                        url,
                        version,
                        http,
                        dir,
                    });
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| HarnessError::Other("prometheus did not start".into())))
    }

    /// The server's base URL (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The server's version.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The server's directory (config, TSDB, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `GET /api/v1/query_range`.
    pub async fn query_range(
        &self,
        query: &str,
        start: f64,
        end: f64,
        step: f64,
    ) -> Result<Vec<RangeSeries>> {
        self.api(
            "query_range",
            &[
                ("query", query.to_owned()),
                ("start", start.to_string()),
                ("end", end.to_string()),
                ("step", step.to_string()),
            ],
        )
        .await
    }

    /// `GET /api/v1/series`: the label sets (`__name__` included) of the series matching any of
    /// `matches` with samples between `start` and `end` (unix seconds).
    pub async fn series(
        &self,
        matches: &[&str],
        start: f64,
        end: f64,
    ) -> Result<Vec<BTreeMap<String, String>>> {
        #[derive(Deserialize)]
        struct SeriesResponse {
            status: String,
            data: Option<Vec<BTreeMap<String, String>>>,
            error: Option<String>,
        }
        let url = format!("{}/api/v1/series", self.url);
        let mut params: Vec<(&str, String)> = matches
            .iter()
            .map(|m| ("match[]", (*m).to_owned()))
            .collect();
        params.push(("start", start.to_string()));
        params.push(("end", end.to_string()));
        let body: SeriesResponse = self
            .http
            .get(&url)
            .query(&params)
            .send()
            .await
            .map_err(|e| HarnessError::Other(format!("GET {url}: {e}")))?
            .json()
            .await
            .map_err(|e| HarnessError::Other(format!("decode {url}: {e}")))?;
        match (body.status.as_str(), body.data) {
            ("success", Some(data)) => Ok(data),
            _ => Err(HarnessError::Other(format!(
                "{url}: {}",
                body.error.unwrap_or(body.status)
            ))),
        }
    }

    /// `GET /api/v1/query` at `time` (unix seconds).
    pub async fn query(&self, query: &str, time: f64) -> Result<Vec<InstantSample>> {
        self.api(
            "query",
            &[("query", query.to_owned()), ("time", time.to_string())],
        )
        .await
    }

    async fn api<T: for<'de> Deserialize<'de>>(
        &self,
        endpoint: &str,
        params: &[(&str, String)],
    ) -> Result<Vec<T>> {
        let url = format!("{}/api/v1/{endpoint}", self.url);
        let resp = self
            .http
            .get(&url)
            .query(params)
            .send()
            .await
            .map_err(|e| HarnessError::Other(format!("GET {url}: {e}")))?;
        let body: ApiResponse<T> = resp
            .json()
            .await
            .map_err(|e| HarnessError::Other(format!("decode {url}: {e}")))?;
        match (body.status.as_str(), body.data) {
            ("success", Some(data)) => Ok(data.result),
            _ => Err(HarnessError::Other(format!(
                "{url}: {}",
                body.error.unwrap_or_else(|| body.status.clone())
            ))),
        }
    }
}

/// Backfills `data` from the OpenMetrics file `input`. promtool reads the whole input once for
/// every 2-hour block it writes, so a long history is split into one file per UTC day first
/// (day boundaries are block boundaries): 14 days of history take 14 times less reading.
fn backfill(input: &Path, data: &Path) -> Result<()> {
    let days = split_by_day(input)?;
    if days.is_empty() {
        return promtool_backfill(input, data);
    }
    let result = days.iter().try_for_each(|day| promtool_backfill(day, data));
    for day in &days {
        let _ = std::fs::remove_file(day);
    }
    result
}

/// Writes `input`'s samples into one OpenMetrics file per UTC day, next to it, each with the
/// metadata of the families it holds and its own `# EOF`. Nothing is written (and nothing is
/// returned) when the history is within one day or a sample has no timestamp.
fn split_by_day(input: &Path) -> Result<Vec<std::path::PathBuf>> {
    use std::io::{BufRead, BufWriter, Write};
    const DAY: f64 = 86_400.0;
    let open = || {
        std::fs::File::open(input)
            .map(std::io::BufReader::new)
            .map_err(HarnessError::io(format!("read {}", input.display())))
    };
    // First pass: the days, and whether every sample has a timestamp.
    let timestamp = |line: &str| -> Option<f64> {
        let after_labels = match line.rfind('}') {
            Some(i) => &line[i + 1..],
            None => line.split_once(' ').map_or("", |(_, rest)| rest),
        };
        let mut tokens = after_labels.split_whitespace();
        let (_value, ts) = (tokens.next()?, tokens.next()?);
        ts.parse::<f64>().ok().filter(|t| t.is_finite())
    };
    let mut days = std::collections::BTreeSet::new();
    for line in open()?.lines() {
        let line = line.map_err(HarnessError::io(format!("read {}", input.display())))?;
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        match timestamp(&line) {
            Some(t) => {
                days.insert((t / DAY).floor() as i64);
            }
            None => return Ok(Vec::new()),
        }
    }
    if days.len() < 2 {
        return Ok(Vec::new());
    }
    let mut files: BTreeMap<i64, (BufWriter<std::fs::File>, usize)> = BTreeMap::new();
    let mut paths = Vec::new();
    for day in &days {
        let path = input.with_extension(format!("day{day}.om"));
        let file = std::fs::File::create(&path)
            .map_err(HarnessError::io(format!("write {}", path.display())))?;
        files.insert(*day, (BufWriter::new(file), 0));
        paths.push(path);
    }
    let write_err = || HarnessError::io(format!("write the days of {}", input.display()));
    // The metadata lines of the current family, and its number (files remember the last family
    // whose metadata they received).
    let mut metadata: Vec<String> = Vec::new();
    let mut family = 0_usize;
    let mut in_metadata = false;
    for line in open()?.lines() {
        let line = line.map_err(HarnessError::io(format!("read {}", input.display())))?;
        if line.starts_with("# EOF") || line.trim().is_empty() {
            continue;
        }
        if line.starts_with('#') {
            if !in_metadata {
                metadata.clear();
                family += 1;
                in_metadata = true;
            }
            metadata.push(line);
            continue;
        }
        in_metadata = false;
        let Some(t) = timestamp(&line) else {
            continue;
        };
        let Some((out, seen)) = files.get_mut(&((t / DAY).floor() as i64)) else {
            continue;
        };
        if *seen != family {
            for m in &metadata {
                writeln!(out, "{m}").map_err(write_err())?;
            }
            *seen = family;
        }
        writeln!(out, "{line}").map_err(write_err())?;
    }
    for (out, _) in files.values_mut() {
        writeln!(out, "# EOF").map_err(write_err())?;
        out.flush().map_err(write_err())?;
    }
    Ok(paths)
}

fn promtool_backfill(input: &Path, data: &Path) -> Result<()> {
    let promtool = prometheus_binary("promtool")?;
    let out = std::process::Command::new(&promtool)
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(input)
        .arg(data)
        .output()
        .map_err(HarnessError::io(format!("run {}", promtool.display())))?;
    if !out.status.success() {
        return Err(HarnessError::Other(format!(
            "promtool tsdb create-blocks-from openmetrics {} failed ({}): {}{}",
            input.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(())
}

fn config_yaml(options: &PrometheusOptions) -> String {
    let interval = format!("{}ms", options.scrape_interval.as_millis().max(1));
    let mut yaml = format!(
        "global:\n  scrape_interval: {interval}\n  evaluation_interval: {interval}\nscrape_configs:\n"
    );
    if !options.rule_files.is_empty() {
        let files: Vec<String> = options
            .rule_files
            .iter()
            .map(|f| format!("{:?}", f.display().to_string()))
            .collect();
        yaml = yaml.replace(
            "scrape_configs:\n",
            &format!("rule_files: [{}]\nscrape_configs:\n", files.join(", ")),
        );
    }
    if !options.remote_read.is_empty() {
        let reads: String = options
            .remote_read
            .iter()
            .map(|url| format!("  - url: {url:?}\n    read_recent: true\n"))
            .collect();
        yaml = yaml.replace(
            "scrape_configs:\n",
            &format!("remote_read:\n{reads}scrape_configs:\n"),
        );
    }
    if options.scrape_targets.is_empty() {
        yaml.push_str("  []\n");
    }
    // Job names are unique in a configuration: a second target of a job (one per node) gets a
    // name of its own and its `job` label from the target labels.
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for t in &options.scrape_targets {
        let n = seen.entry(t.job.as_str()).or_default();
        let job_name = match *n {
            0 => t.job.clone(),
            n => format!("{}-{n}", t.job),
        };
        *n += 1;
        yaml.push_str(&scrape_config_yaml(t, &job_name));
    }
    yaml
}

/// One `scrape_configs` entry: `t`, named `job_name`, its series labelled `job="<t.job>"`.
fn scrape_config_yaml(t: &ScrapeTarget, job_name: &str) -> String {
    let mut yaml = format!(
        "  - job_name: {job_name:?}\n    metrics_path: {path:?}\n    honor_labels: true\n",
        path = t.metrics_path,
    );
    if t.https_insecure {
        yaml.push_str("    scheme: https\n    tls_config:\n      insecure_skip_verify: true\n");
    }
    if !t.params.is_empty() {
        yaml.push_str("    params:\n");
        for (k, v) in &t.params {
            yaml.push_str(&format!("      {k}: [{v:?}]\n"));
        }
    }
    yaml.push_str(&format!(
        "    static_configs:\n      - targets: [{addr:?}]\n",
        addr = t.address
    ));
    let mut labels: Vec<String> = t
        .labels
        .iter()
        .filter(|(k, _)| k != "job")
        .map(|(k, v)| format!("{k}: {v:?}"))
        .collect();
    if job_name != t.job {
        labels.push(format!("job: {:?}", t.job));
    }
    if !labels.is_empty() {
        yaml.push_str(&format!("        labels: {{{}}}\n", labels.join(", ")));
    }
    yaml
}

async fn wait_ready(process: &mut ServerProcess, http: &reqwest::Client, url: &str) -> Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(status) = process.exited() {
            return Err(process.startup_error(format!("exited with {status}")));
        }
        if let Ok(resp) = http.get(format!("{url}/-/ready")).send().await
            && resp.status().is_success()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(process.startup_error(format!("not ready after {READY_TIMEOUT:?}")));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn build_version(http: &reqwest::Client, url: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Build {
        data: BuildData,
    }
    #[derive(Deserialize)]
    struct BuildData {
        version: String,
    }
    let build: Build = http
        .get(format!("{url}/api/v1/status/buildinfo"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    Some(build.data.version)
}
