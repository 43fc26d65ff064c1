//! Routes (docs/protocol.md, "HTTP endpoints") and their handlers.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rampart_core::Server;
use rampart_types::Error;
use serde_json::json;

use crate::admin::*;
use crate::common::*;
use crate::generate;
use crate::infer_route::*;

/// The KServe v2 router over a core server.
pub fn router(server: Server, options: HttpOptions) -> Router {
    let guard = options.gate();
    let state = AppState { gate: guard.clone(), server, options };
    Router::new()
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .route("/v2", get(server_metadata))
        .route("/v2/models/stats", get(all_stats))
        .route("/v2/models/{model}", get(model_metadata))
        .route("/v2/models/{model}/versions/{version}", get(model_metadata_v))
        .route("/v2/models/{model}/ready", get(model_ready))
        .route("/v2/models/{model}/versions/{version}/ready", get(model_ready_v))
        .route("/v2/models/{model}/config", get(model_config))
        .route("/v2/models/{model}/versions/{version}/config", get(model_config_v))
        .route("/v2/models/{model}/stats", get(model_stats))
        .route("/v2/models/{model}/versions/{version}/stats", get(model_stats_v))
        .route("/v2/models/{model}/infer", post(infer))
        .route("/v2/models/{model}/versions/{version}/infer", post(infer_v))
        .route("/v2/models/{model}/generate", post(generate::generate))
        .route("/v2/models/{model}/generate_stream", post(generate::generate_stream))
        .route("/v2/models/{model}/versions/{version}/generate", post(generate::generate_v))
        .route(
            "/v2/models/{model}/versions/{version}/generate_stream",
            post(generate::generate_stream_v),
        )
        .route(
            "/v2/models/{model}/trace/setting",
            get(model_trace_settings).post(update_model_trace_settings),
        )
        .route("/v2/trace/setting", get(trace_settings).post(update_trace_settings))
        .route("/v2/logging", get(log_settings).post(update_log_settings))
        .route("/v2/repository/index", post(repository_index))
        .route("/v2/repository/{repo}/index", post(repository_index_named))
        .route("/v2/repository/models/{model}/load", post(load))
        .route("/v2/repository/models/{model}/unload", post(unload))
        .route("/v2/repository/{repo}/models/{model}/load", post(load_named))
        .route("/v2/repository/{repo}/models/{model}/unload", post(unload_named))
        .route("/v2/systemsharedmemory/status", get(shm_status))
        .route("/v2/systemsharedmemory/region/{region}/status", get(shm_region_status))
        .route("/v2/systemsharedmemory/region/{region}/register", post(shm_register))
        .route("/v2/systemsharedmemory/unregister", post(shm_unregister_all))
        .route("/v2/systemsharedmemory/region/{region}/unregister", post(shm_unregister))
        .route("/v2/cudasharedmemory/status", get(cuda_status))
        .route("/v2/cudasharedmemory/region/{region}/status", get(cuda_region_status))
        .route("/v2/cudasharedmemory/region/{region}/register", post(cuda_shm))
        .route("/v2/cudasharedmemory/unregister", post(cuda_unregister_all))
        .route("/v2/cudasharedmemory/region/{region}/unregister", post(cuda_unregister))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        // Outermost: the restriction check runs before routing and method checks.
        .layer(axum::middleware::from_fn_with_state(guard, crate::restrict::enforce))
}

async fn not_found() -> Response {
    not_found_response()
}

/// A health answer: `{"live": …}` or `{"ready": …}` (the Open Inference Protocol SDKs read the body); "no" has
/// the table's not-ready status, as tritonclient expects.
fn health(key: &str, result: rampart_types::Result<bool>) -> Response {
    let ok = match result {
        Ok(ok) => ok,
        Err(e) => return err(e),
    };
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::from_u16(rampart_types::Code::NOT_READY_HTTP_STATUS)
            .unwrap_or(StatusCode::BAD_REQUEST)
    };
    (status, json_response(&json!({ key: ok }))).into_response()
}

async fn live(State(s): State<AppState>) -> Response {
    health("live", s.server.is_live())
}

async fn ready(State(s): State<AppState>) -> Response {
    health("ready", s.server.is_ready())
}

async fn server_metadata(State(s): State<AppState>) -> Response {
    let m = s.server.metadata();
    json_response(&json!({ "name": m.name, "version": m.version, "extensions": m.extensions }))
}

fn metadata(s: &AppState, model: &str, version: Option<i64>) -> HResult {
    let m = s.server.model_metadata(model, version)?;
    let t = |v: &[rampart_core::TensorMetadata]| {
        v.iter()
            .map(|t| json!({ "name": t.name, "datatype": t.datatype.as_str(), "shape": t.shape }))
            .collect::<Vec<_>>()
    };
    Ok(json_response(&json!({
        "name": m.name, "versions": m.versions, "platform": m.platform,
        "inputs": t(&m.inputs), "outputs": t(&m.outputs),
    })))
}

async fn model_metadata(State(s): State<AppState>, Path(model): Path<String>) -> HResult {
    metadata(&s, &model, None)
}

async fn model_metadata_v(
    State(s): State<AppState>,
    Path((model, v)): Path<(String, String)>,
) -> HResult {
    metadata(&s, &model, version_segment(&v)?)
}

async fn ready_answer(s: &AppState, model: &str, version: Option<i64>) -> HResult {
    match s.server.model_ready(model, version).await? {
        true => Ok(StatusCode::OK.into_response()),
        false => Err(err(Error::invalid_arg("Model version not ready"))),
    }
}

async fn model_ready(State(s): State<AppState>, Path(model): Path<String>) -> HResult {
    ready_answer(&s, &model, None).await
}

async fn model_ready_v(
    State(s): State<AppState>,
    Path((model, v)): Path<(String, String)>,
) -> HResult {
    ready_answer(&s, &model, version_segment(&v)?).await
}

fn config_answer(s: &AppState, model: &str, version: Option<i64>) -> HResult {
    let c = s.server.model_config(model, version)?;
    Ok(json_response(&rampart_core::config_to_json(&c)))
}

async fn model_config(State(s): State<AppState>, Path(model): Path<String>) -> HResult {
    config_answer(&s, &model, None)
}

async fn model_config_v(
    State(s): State<AppState>,
    Path((model, v)): Path<(String, String)>,
) -> HResult {
    config_answer(&s, &model, version_segment(&v)?)
}

fn stats_answer(s: &AppState, model: Option<&str>, version: Option<i64>) -> HResult {
    let stats = s.server.statistics(model, version)?;
    Ok(json_response(&crate::stats::stats_json(&stats)))
}

async fn all_stats(State(s): State<AppState>) -> HResult {
    stats_answer(&s, None, None)
}

async fn model_stats(State(s): State<AppState>, Path(model): Path<String>) -> HResult {
    stats_answer(&s, Some(&model), None)
}

async fn model_stats_v(
    State(s): State<AppState>,
    Path((model, v)): Path<(String, String)>,
) -> HResult {
    stats_answer(&s, Some(&model), version_segment(&v)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn decompression_is_capped() {
        let plain = vec![b'a'; 10_000];
        let z = gzip(&plain);
        let json = "request JSON size";
        assert_eq!(decompress(Encoding::Gzip, &z, 10_000, json).unwrap().len(), 10_000);
        let e = decompress(Encoding::Gzip, &z, 9_999, json).unwrap_err();
        assert_eq!(
            e.message(),
            "decompressed request JSON size of more than 9999 bytes exceeds the maximum allowed input size of 9999 bytes. Use --http-max-input-size to increase the limit."
        );
        let e = decompress(Encoding::Deflate, b"not zlib", 100, json).unwrap_err();
        assert!(e.message().contains("failed to decompress the deflate"), "{e}");
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(b"{}").unwrap();
        assert_eq!(
            &decompress(Encoding::Deflate, &z.finish().unwrap(), 10, json).unwrap()[..],
            b"{}"
        );
    }
}
