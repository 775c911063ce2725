//! The admin server: `/metrics` (OpenMetrics text), `/healthz` (the process is alive: no work
//! loop wedged, see [`crate::health`]) and `/readyz` (the API server answers, and the binary
//! has done what makes it useful, e.g. its first pass).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

/// What the admin server asks of a binary.
pub trait Admin: Send + Sync + 'static {
    /// The metrics, as OpenMetrics text.
    fn encode(&self) -> String;
    /// `None` when ready; otherwise why not.
    fn not_ready(&self) -> Option<&'static str>;
}

async fn metrics(State(a): State<Arc<dyn Admin>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        a.encode(),
    )
}

async fn healthz() -> impl IntoResponse {
    match crate::health::global().wedged(std::time::Instant::now()) {
        None => (StatusCode::OK, "ok".to_owned()),
        Some(why) => (StatusCode::INTERNAL_SERVER_ERROR, why),
    }
}

async fn readyz(State(a): State<Arc<dyn Admin>>) -> impl IntoResponse {
    if let Some(why) = crate::health::global().unreachable(std::time::Instant::now()) {
        return (StatusCode::SERVICE_UNAVAILABLE, why);
    }
    match a.not_ready() {
        None => (StatusCode::OK, "ready".to_owned()),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, why.to_owned()),
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `listener` until dropped.
pub async fn serve(listener: tokio::net::TcpListener, admin: Arc<dyn Admin>) {
    let app = Router::new()
        .route("/metrics", get(self::metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(admin);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "admin server stopped");
    }
}

/// The OpenMetrics text of a registry (empty if encoding fails).
pub fn encode(registry: &prometheus_client::registry::Registry) -> String {
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, registry).is_err() {
        out.clear();
    }
    out
}
