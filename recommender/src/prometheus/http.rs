//! The HTTP transport: `POST` forms, retries with back-off, auth, and decoding of the API's
//! answers.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use serde::Deserialize;

use super::{Auth, HistoryError, Prometheus, Series};

#[derive(Deserialize)]
pub(super) struct ApiResponse {
    status: String,
    data: Option<ApiData>,
    #[serde(rename = "errorType")]
    error_type: Option<String>,
    error: Option<String>,
    /// What the server could not read (a remote-read store, a Thanos store, a Mimir
    /// querier): the data may be partial.
    #[serde(default)]
    warnings: Vec<String>,
}

#[derive(Deserialize)]
pub(super) struct ApiData {
    #[serde(rename = "resultType")]
    result_type: String,
    result: Vec<RawSeries>,
}

#[derive(Deserialize)]
pub(super) struct RawSeries {
    metric: BTreeMap<String, String>,
    #[serde(default)]
    values: Vec<(f64, String)>,
    #[serde(default)]
    value: Option<(f64, String)>,
}

/// `url` without its user name, password, query string and fragment.
pub(super) fn redacted(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => "the Prometheus URL".to_owned(),
    }
}

/// A failed attempt that may be retried: what went wrong, and how long the server asked to
/// wait (`Retry-After` on a 429 or 503).
struct Retry {
    error: String,
    after: Option<std::time::Duration>,
    /// No answer at all (no connection, a timeout): Prometheus is unreachable, not busy.
    unreachable: bool,
}

/// The longest `Retry-After` honoured; a server asking for more is retried after this.
const MAX_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

/// `Retry-After` in seconds (the HTTP-date form is not used by Prometheus and its proxies).
fn retry_after(resp: &reqwest::Response) -> Option<std::time::Duration> {
    let seconds: u64 = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(std::time::Duration::from_secs(seconds).min(MAX_RETRY_AFTER))
}

impl Prometheus {
    pub(super) async fn post(
        &self,
        endpoint: &str,
        form: &[(&str, String)],
    ) -> Result<ApiData, HistoryError> {
        let target = format!(
            "{}/api/v1/{endpoint}",
            self.config.url.trim_end_matches('/')
        );
        // Errors name the endpoint without credentials or a query string: they are written
        // into status conditions and Events, which many can read.
        let url = redacted(&target);
        // Thanos answers a query some of whose stores failed with partial data and a warning
        // unless asked not to (`partial_response`); VictoriaMetrics cluster likewise
        // (`deny_partial_response`). Prometheus and Mimir ignore both.
        let mut form = form.to_vec();
        form.push(("partial_response", "false".to_owned()));
        form.push(("deny_partial_response", "1".to_owned()));
        let form = form.as_slice();
        if let Some(error) = self.broken() {
            return Err(HistoryError::Unavailable(error));
        }
        let mut delay = self.config.backoff;
        let mut attempt = 0;
        loop {
            let retry = match self.attempt(&target, &url, form).await {
                Ok(answer) => {
                    self.set_broken(None);
                    return answer;
                }
                Err(retry) => retry,
            };
            if attempt >= self.config.retries {
                let error = format!("{} (after {} attempts)", retry.error, attempt + 1);
                // Only an unreachable server stops the other queries: one that answers 5xx or
                // 429 is reachable, and each query keeps its own retries (and Retry-After).
                if retry.unreachable {
                    self.set_broken(Some(&error));
                }
                return Err(HistoryError::Unavailable(error));
            }
            attempt += 1;
            tracing::debug!(%url, attempt, error = %retry.error, "Prometheus query failed; retrying");
            tokio::time::sleep(retry.after.unwrap_or(delay)).await;
            delay *= 2;
        }
    }

    /// Why a query fails at once: a query found Prometheus unreachable (no connection, no
    /// answer) through every retry less than [`super::BREAKER_COOLDOWN`] ago. During an outage
    /// the objects of a pass do not each wait through their retries; after the cooldown the
    /// next queries try again, and any answer ends it.
    fn broken(&self) -> Option<String> {
        let breaker = self
            .breaker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (since, error) = breaker.as_ref()?;
        let ago = since.elapsed();
        (ago < super::BREAKER_COOLDOWN).then(|| {
            self.stats.short_circuited.fetch_add(1, Ordering::Relaxed);
            format!(
                "{error}; not tried again for {}s after that",
                super::BREAKER_COOLDOWN.as_secs()
            )
        })
    }

    /// Records that Prometheus stayed unavailable with `error` (now), or answered (`None`).
    fn set_broken(&self, error: Option<&str>) {
        let mut breaker = self
            .breaker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *breaker = error.map(|e| (std::time::Instant::now(), e.to_owned()));
    }

    /// One request: the answer (decoded, or an error not worth retrying), or a [`Retry`]
    /// (no connection, a 5xx or 429, the answer cut off).
    async fn attempt(
        &self,
        target: &str,
        url: &str,
        form: &[(&str, String)],
    ) -> Result<Result<ApiData, HistoryError>, Retry> {
        self.stats.queries.fetch_add(1, Ordering::Relaxed);
        let mut req = self.http.post(target).form(form);
        req = match &self.config.auth {
            Auth::None => req,
            Auth::Bearer(t) => req.bearer_auth(t),
            Auth::Basic { user, password } => req.basic_auth(user, Some(password)),
        };
        let resp = req.send().await.map_err(|e| Retry {
            error: format!("{url}: {}", e.without_url()),
            after: None,
            unreachable: true,
        })?;
        let status = resp.status();
        let after = retry_after(&resp);
        let body = match self.read_body(resp, url).await {
            Ok(body) => body,
            Err(HistoryError::Unavailable(error)) => {
                return Err(Retry {
                    error,
                    after: None,
                    unreachable: false,
                });
            }
            Err(e) => return Ok(Err(e)),
        };
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            return Err(Retry {
                error: format!(
                    "{url}: HTTP {status}: {}",
                    String::from_utf8_lossy(&body[..body.len().min(200)])
                ),
                after,
                unreachable: false,
            });
        }
        Ok(self.decode(url, status, &body))
    }

    /// The answer's body, at most `max_body_bytes` of it: a larger one is refused (a query
    /// that asks for too much), not held in memory.
    async fn read_body(
        &self,
        mut resp: reqwest::Response,
        url: &str,
    ) -> Result<Vec<u8>, HistoryError> {
        let max = self.config.max_body_bytes;
        let mut body = Vec::new();
        loop {
            let chunk = resp.chunk().await.map_err(|e| {
                HistoryError::Unavailable(format!("{url}: reading the answer: {}", e.without_url()))
            })?;
            let Some(chunk) = chunk else {
                return Ok(body);
            };
            if body.len() + chunk.len() > max {
                return Err(HistoryError::Rejected(format!(
                    "{url}: the answer is larger than {max} bytes; read a coarser step (--history-step-seconds)"
                )));
            }
            body.extend_from_slice(&chunk);
        }
    }

    fn decode(
        &self,
        url: &str,
        status: reqwest::StatusCode,
        body: &[u8],
    ) -> Result<ApiData, HistoryError> {
        let parsed: ApiResponse = serde_json::from_slice(body).map_err(|e| {
            HistoryError::Malformed(format!(
                "{url}: HTTP {status}: {e}: {:?}",
                String::from_utf8_lossy(&body[..body.len().min(120)])
            ))
        })?;
        if parsed.status != "success" {
            return Err(HistoryError::Rejected(format!(
                "{url}: {}: {}",
                parsed.error_type.unwrap_or_default(),
                parsed.error.unwrap_or_else(|| parsed.status.clone())
            )));
        }
        if !status.is_success() {
            return Err(HistoryError::Rejected(format!("{url}: HTTP {status}")));
        }
        if !parsed.warnings.is_empty() {
            self.stats
                .warnings
                .fetch_add(parsed.warnings.len() as u64, Ordering::Relaxed);
            tracing::warn!(%url, warnings = ?parsed.warnings, "Prometheus answered with warnings: the data may be partial");
            super::warnings::record(parsed.warnings);
        }
        parsed
            .data
            .ok_or_else(|| HistoryError::Malformed(format!("{url}: success without data")))
    }

    pub(super) fn series(&self, data: ApiData, want: &str) -> Result<Vec<Series>, HistoryError> {
        if data.result_type != want {
            return Err(HistoryError::Malformed(format!(
                "expected a {want} result, got {:?}",
                data.result_type
            )));
        }
        let mut out = Vec::with_capacity(data.result.len());
        for raw in data.result {
            let pairs = if want == "matrix" {
                raw.values
            } else {
                raw.value.into_iter().collect()
            };
            let mut samples = Vec::with_capacity(pairs.len());
            for (t, v) in pairs {
                // Prometheus writes NaN and infinities as strings; the model rejects them.
                let v: f64 = v.parse().map_err(|_| {
                    HistoryError::Malformed(format!("sample value {v:?} is not a number"))
                })?;
                samples.push((t, v));
            }
            self.stats
                .samples
                .fetch_add(samples.len() as u64, Ordering::Relaxed);
            out.push(Series {
                labels: raw.metric,
                samples,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::redacted;

    #[test]
    fn credentials_and_query_strings_are_not_shown() {
        assert_eq!(
            redacted("https://alice:s3cret@prom.example:9090/prefix/api/v1/query?token=abc#x"),
            "https://prom.example:9090/prefix/api/v1/query"
        );
        assert_eq!(
            redacted("http://prometheus:9090/api/v1/query_range"),
            "http://prometheus:9090/api/v1/query_range"
        );
        assert_eq!(redacted("not a url"), "the Prometheus URL");
    }
}
