//! A Prometheus client for tests: one retry, short back-off.

use std::time::Duration;

use tailor_recommender::prometheus::{Config, Prometheus};

/// A client of the Prometheus at `url`.
pub fn client(url: &str) -> Prometheus {
    Prometheus::new(Config {
        url: url.into(),
        retries: 1,
        backoff: Duration::from_millis(10),
        timeout: Duration::from_secs(10),
        ..Config::default()
    })
    .expect("a valid Prometheus configuration")
}
