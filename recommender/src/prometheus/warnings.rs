//! The warnings Prometheus attaches to an answer whose data may be partial (a remote-read
//! store, a Thanos store or a Mimir querier that failed), collected per read.
//!
//! A read wrapped in [`with_warnings`] gets back, besides its result, every warning of every
//! answer it received, however deep in the client the queries were issued; answers outside
//! such a read are only logged and counted.

use std::cell::RefCell;
use std::future::Future;

tokio::task_local! {
    static WARNINGS: RefCell<Vec<String>>;
}

/// Runs `read`, returning its result and the warnings of the answers it received (each once,
/// in the order first seen).
pub async fn with_warnings<F: Future>(read: F) -> (F::Output, Vec<String>) {
    WARNINGS
        .scope(RefCell::new(Vec::new()), async {
            let out = read.await;
            let warnings = WARNINGS.try_with(RefCell::take).unwrap_or_default();
            (out, warnings)
        })
        .await
}

/// Adds `warnings` to those of the read in progress, if any.
pub(super) fn record(warnings: Vec<String>) {
    let _ = WARNINGS.try_with(|w| {
        let mut w = w.borrow_mut();
        for warning in warnings {
            if !w.contains(&warning) {
                w.push(warning);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::{record, with_warnings};

    #[tokio::test]
    async fn warnings_are_collected_within_a_read_only() {
        record(vec!["outside".into()]);
        let (out, warnings) = with_warnings(async {
            record(vec!["store down".into(), "store down".into()]);
            tokio::task::yield_now().await;
            record(vec!["second".into()]);
            7
        })
        .await;
        assert_eq!(out, 7);
        assert_eq!(warnings, vec!["store down".to_owned(), "second".to_owned()]);
        let (_, none) = with_warnings(async {}).await;
        assert!(none.is_empty());
    }
}
