//! `/healthz` (alive), `/readyz` (Redis reachable and not shutting down), `/metrics`.

use axum::{
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
};
use prometheus::{Encoder, TextEncoder};

use crate::app::HttpState;

/// Liveness: the process answers.
pub async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: 503 while Redis is unreachable or the node is shutting down.
pub async fn readyz(State(st): State<HttpState>) -> impl IntoResponse {
    let redis = if !st.app.cluster.has_redis() {
        "none"
    } else if st.app.cluster.is_ready() {
        "up"
    } else {
        "down"
    };
    let ready = st.app.is_ready();
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        axum::Json(serde_json::json!({"ready": ready, "redis": redis, "node": st.app.node_id})),
    )
}

/// Prometheus text exposition of every metric of the node.
pub async fn metrics(State(st): State<HttpState>) -> impl IntoResponse {
    let mut buf = Vec::new();
    let encoder = TextEncoder::new();
    st.app.metrics.process.refresh();
    if let Err(e) = encoder.encode(&st.app.registry.gather(), &mut buf) {
        // The encoder's text is internal: logged, and the scraper gets a fixed line.
        tracing::error!(error = %e, "encoding metrics failed");
        return (StatusCode::INTERNAL_SERVER_ERROR, "metrics encoding failed").into_response();
    }
    (
        [(header::CONTENT_TYPE, encoder.format_type().to_owned())],
        buf,
    )
        .into_response()
}
