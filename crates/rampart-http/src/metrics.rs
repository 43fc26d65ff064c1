//! The metrics listener (`--metrics-port`, default 8002): `GET /metrics` (or `/metrics/`) and nothing else.
//! It has no credentials, as in Triton; docs/operations.md says how to keep it private.

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rampart_core::Server;
use rampart_core::metrics::{CpuMetrics, MetricsOptions};

#[derive(Clone)]
struct MetricsState {
    server: Server,
    options: MetricsOptions,
    cpu: Option<CpuMetrics>,
}

/// The router of the metrics listener. `cpu`: the host sampler, when CPU metrics are on.
pub fn metrics_router(server: Server, options: MetricsOptions, cpu: Option<CpuMetrics>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/metrics/", get(metrics))
        .fallback(|| async { crate::common::not_found_response() })
        .method_not_allowed_fallback(crate::common::method_not_allowed)
        .with_state(MetricsState { server, options, cpu })
}

async fn metrics(State(s): State<MetricsState>) -> Response {
    let cpu = s.cpu.as_ref().and_then(CpuMetrics::latest);
    let text = s.server.metrics(&s.options, cpu);
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()
}
