//! Range queries: cut into chunks of at most `max_points` steps, and a chunk the server
//! refuses as too large (Prometheus's `--query.max-samples`, "too many samples"; the 11,000
//! points limit; Mimir's and Thanos's sample limits) cut in two and asked again, down to a
//! single step. Every chunk starts on the grid `start + k * step`, so the points are the ones
//! a single query would have returned, and each series' samples come back in time order.

use std::collections::BTreeMap;

use super::{HistoryError, Prometheus, Series};

/// Phrases of the answers that refuse a query for its size, lower-cased.
const TOO_LARGE: &[&str] = &[
    "too many samples",
    "exceeded maximum resolution",
    "maximum number of samples",
    "max samples",
    "too many points",
];

/// Whether `e` refuses a query for its size (so a smaller one may pass).
pub fn too_large(e: &HistoryError) -> bool {
    match e {
        HistoryError::Rejected(m) => {
            let m = m.to_lowercase();
            TOO_LARGE.iter().any(|p| m.contains(p))
        }
        _ => false,
    }
}

/// The two halves of `[from, to]` on the grid of `step`, or `None` for a single point.
fn halves((from, to): (f64, f64), step: f64) -> Option<((f64, f64), (f64, f64))> {
    let points = ((to - from) / step).round() as i64 + 1;
    if points < 2 {
        return None;
    }
    let mid = from + ((points / 2 - 1) as f64) * step;
    Some(((from, mid), (mid + step, to)))
}

impl Prometheus {
    /// A range query at `step` over `[start, end]`, cut into chunks of at most `max_points`
    /// steps, each cut in two again while the server refuses it as too large.
    pub async fn query_range(
        &self,
        query: &str,
        start: f64,
        end: f64,
        step: f64,
    ) -> Result<Vec<Series>, HistoryError> {
        let step = step.max(1.0);
        let chunk = step * (self.config.max_points.max(2) - 1) as f64;
        // Ranges still to read, the earliest last.
        let mut todo = Vec::new();
        let mut from = start;
        while from <= end {
            let to = (from + chunk).min(end);
            todo.push((from, to));
            from = to + step;
        }
        todo.reverse();
        let mut merged: BTreeMap<BTreeMap<String, String>, Vec<(f64, f64)>> = BTreeMap::new();
        while let Some(range) = todo.pop() {
            let data = match self.range_once(query, range, step).await {
                Ok(data) => data,
                Err(e) if too_large(&e) => {
                    let Some((first, second)) = halves(range, step) else {
                        return Err(e);
                    };
                    self.stats
                        .splits
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::debug!(error = %e, from = range.0, to = range.1, "range query too large; asking for each half");
                    todo.push(second);
                    todo.push(first);
                    continue;
                }
                Err(e) => return Err(e),
            };
            for s in self.series(data, "matrix")? {
                merged.entry(s.labels).or_default().extend(s.samples);
            }
        }
        Ok(merged
            .into_iter()
            .map(|(labels, samples)| Series { labels, samples })
            .collect())
    }

    async fn range_once(
        &self,
        query: &str,
        (from, to): (f64, f64),
        step: f64,
    ) -> Result<super::http::ApiData, HistoryError> {
        self.post(
            "query_range",
            &[
                ("query", query.to_owned()),
                ("start", from.to_string()),
                ("end", to.to_string()),
                ("step", step.to_string()),
            ],
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::{HistoryError, halves, too_large};

    #[test]
    fn ranges_are_halved_on_the_grid_down_to_one_point() {
        assert_eq!(
            halves((0.0, 540.0), 60.0),
            Some(((0.0, 240.0), (300.0, 540.0)))
        );
        assert_eq!(halves((0.0, 60.0), 60.0), Some(((0.0, 0.0), (60.0, 60.0))));
        assert_eq!(halves((120.0, 120.0), 60.0), None);
        // Odd point counts: every point in exactly one half.
        let ((a, b), (c, d)) = halves((0.0, 120.0), 60.0).unwrap_or_default();
        assert_eq!((a, b, c, d), (0.0, 0.0, 60.0, 120.0));
    }

    #[test]
    fn only_size_refusals_are_split() {
        for m in [
            "execution: query processing would load too many samples into memory in query execution",
            "bad_data: exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)",
            "execution: the query exceeded the maximum number of samples (limit: 1000)",
        ] {
            assert!(too_large(&HistoryError::Rejected(m.into())), "{m}");
        }
        assert!(!too_large(&HistoryError::Rejected(
            "bad_data: parse error".into()
        )));
        assert!(!too_large(&HistoryError::Unavailable(
            "too many samples".into()
        )));
    }
}
