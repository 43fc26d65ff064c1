//! Routes (docs/protocol.md, "HTTP endpoints") and their handlers.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rampart_core::{LoadRequest, Server, features, parse_version};
use rampart_types::Error;
use serde_json::{Value, json};

use crate::codec;

/// Front-end settings that come from flags.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// `--http-max-input-size`: the largest request body accepted, enforced while the body is read.
    pub max_input_size: usize,
    /// `--http-restricted-api`.
    pub restrictions: std::sync::Arc<rampart_core::access::Restrictions>,
    /// A request body must arrive completely within this time (slow uploads).
    pub body_read_timeout: std::time::Duration,
    /// Where admin calls and refused credentials are recorded.
    pub audit: Option<std::sync::Arc<rampart_core::audit::AuditLog>>,
    /// `--model-access`: per-model inference rules.
    pub model_access: std::sync::Arc<rampart_core::access::ModelAccess>,
    /// `--http-max-json-depth`, `--http-max-json-values`.
    pub json_limits: crate::codec::JsonLimits,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            max_input_size: 64 << 20,
            body_read_timeout: std::time::Duration::from_secs(60),
            audit: None,
            model_access: Default::default(),
            json_limits: Default::default(),
            restrictions: std::sync::Arc::new(rampart_core::access::Restrictions::none(
                rampart_core::access::Protocol::Http,
            )),
        }
    }
}

#[derive(Clone)]
struct AppState {
    server: Server,
    options: HttpOptions,
}

/// Renders a core error as Triton does: status from the code table, body `{"error": "..."}`.
pub(crate) fn error_response(e: &Error) -> Response {
    let status =
        StatusCode::from_u16(e.code().http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        json!({ "error": e.message() }).to_string(),
    )
        .into_response()
}

fn json_response(v: &Value) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

type HResult = Result<Response, Response>;

fn err(e: Error) -> Response {
    error_response(&e)
}

/// The KServe v2 router over a core server.
pub fn router(server: Server, options: HttpOptions) -> Router {
    let guard = crate::restrict::Guard {
        rules: options.restrictions.clone(),
        audit: options.audit.clone(),
    };
    let state = AppState { server, options };
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
        .route("/v2/models/{model}/generate", post(not_yet))
        .route("/v2/models/{model}/generate_stream", post(not_yet))
        .route("/v2/models/{model}/versions/{version}/generate", post(not_yet))
        .route("/v2/models/{model}/versions/{version}/generate_stream", post(not_yet))
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
        .route("/v2/cudasharedmemory/unregister", post(cuda_shm))
        .route("/v2/cudasharedmemory/region/{region}/unregister", post(cuda_shm))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        // Outermost: the restriction check runs before routing and method checks.
        .layer(axum::middleware::from_fn_with_state(guard, crate::restrict::enforce))
}

pub(crate) fn not_found_response() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"error":"Not Found"}"#,
    )
        .into_response()
}

async fn not_found() -> Response {
    not_found_response()
}

pub(crate) async fn method_not_allowed() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"error":"Method Not Allowed"}"#,
    )
        .into_response()
}

async fn not_yet() -> Response {
    err(features::not_yet("this endpoint"))
}

/// The version path segment only matches digits in Triton; anything else is an unknown URL.
fn version_segment(v: &str) -> Result<Option<i64>, Response> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err(Error::not_found("Not Found")));
    }
    parse_version(v).map_err(err)
}

async fn live(State(s): State<AppState>) -> Response {
    match s.server.is_live() {
        Ok(true) => StatusCode::OK.into_response(),
        Ok(false) => StatusCode::BAD_REQUEST.into_response(),
        Err(e) => err(e),
    }
}

async fn ready(State(s): State<AppState>) -> Response {
    match s.server.is_ready() {
        Ok(true) => StatusCode::OK.into_response(),
        Ok(false) => StatusCode::BAD_REQUEST.into_response(),
        Err(e) => err(e),
    }
}

async fn server_metadata(State(s): State<AppState>) -> Response {
    let m = s.server.metadata();
    json_response(&json!({ "name": m.name, "version": m.version, "extensions": m.extensions }))
}

fn metadata(s: &AppState, model: &str, version: Option<i64>) -> HResult {
    let m = s.server.model_metadata(model, version).map_err(err)?;
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

fn ready_answer(s: &AppState, model: &str, version: Option<i64>) -> HResult {
    match s.server.model_ready(model, version).map_err(err)? {
        true => Ok(StatusCode::OK.into_response()),
        false => Err(err(Error::invalid_arg("Model version not ready"))),
    }
}

async fn model_ready(State(s): State<AppState>, Path(model): Path<String>) -> HResult {
    ready_answer(&s, &model, None)
}

async fn model_ready_v(
    State(s): State<AppState>,
    Path((model, v)): Path<(String, String)>,
) -> HResult {
    ready_answer(&s, &model, version_segment(&v)?)
}

fn config_answer(s: &AppState, model: &str, version: Option<i64>) -> HResult {
    let c = s.server.model_config(model, version).map_err(err)?;
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
    let stats = s.server.statistics(model, version).map_err(err)?;
    Ok(json_response(&codec::stats_json(&stats)))
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

async fn infer(
    State(s): State<AppState>,
    Path(model): Path<String>,
    request: axum::extract::Request,
) -> HResult {
    run_infer(s, model, None, request).await
}

async fn infer_v(
    State(s): State<AppState>,
    Path((model, v)): Path<(String, String)>,
    request: axum::extract::Request,
) -> HResult {
    let version = version_segment(&v)?;
    run_infer(s, model, version, request).await
}

/// `--model-access`: refuses an inference request for a model that a rule names without that rule's
/// credential (the category check has already run in `restrict::enforce`).
fn check_model_access(
    s: &AppState,
    model: &str,
    parts: &axum::http::request::Parts,
) -> Result<(), Response> {
    if s.options.model_access.is_empty() {
        return Ok(());
    }
    let peer = crate::restrict::peer_of(&parts.extensions);
    let creds = rampart_core::access::HeaderCredentials {
        headers: &parts.headers,
        identity: peer.as_ref().and_then(|p| p.identity.as_deref()),
    };
    s.options.model_access.check(rampart_core::access::Protocol::Http, model, &creds).map_err(|denied| {
        tracing::warn!(model = %model.escape_debug(), "model access refused: missing or wrong credential");
        if let Some(log) = &s.options.audit {
            let client = peer.as_ref().map(|p| p.addr.to_string());
            log.denied(&crate::restrict::call(peer.as_ref(), &client, parts.uri.path()), &denied);
        }
        refuse_body(denied.to_error())
    })
}

/// A refused body is left unread: close the connection rather than let the server drain it.
fn refuse_body(e: Error) -> Response {
    let mut r = err(e);
    r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// Reads the whole body, refusing it as soon as it passes `limit` (Content-Length is checked before reading).
pub(crate) async fn read_body(
    headers: &HeaderMap,
    body: Body,
    options: &HttpOptions,
) -> Result<Bytes, Error> {
    let limit = options.max_input_size;
    match tokio::time::timeout(options.body_read_timeout, read_limited(headers, body, limit)).await
    {
        Ok(r) => r,
        Err(_) => Err(Error::invalid_arg(format!(
            "the request body did not arrive within {} s (--http-body-read-timeout-secs)",
            options.body_read_timeout.as_secs()
        ))),
    }
}

async fn read_limited(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, Error> {
    let too_big = |n: String| {
        Error::invalid_arg(format!(
            "request body of {n} bytes exceeds the maximum allowed size of {limit} bytes (--http-max-input-size)"
        ))
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(len) = declared {
        if len > limit as u64 {
            return Err(too_big(len.to_string()));
        }
    }
    let declared = declared.map(|l| l as usize);
    // Every frame (an HTTP/1.1 chunk, an HTTP/2 DATA frame) is copied into one buffer as it arrives, so the
    // memory a body takes is its size, however many pieces it comes in (Triton's CVE-2025-23310 class).
    use http_body_util::BodyExt;
    // A body that arrives in one frame is kept as is (no copy).
    let mut body = body;
    let mut first: Option<Bytes> = None;
    let mut buf = bytes::BytesMut::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame
            .map_err(|e| Error::invalid_arg(format!("failed to read the request body: {e}")))?;
        let Ok(data) = frame.into_data() else { continue };
        total += data.len();
        if total > limit {
            return Err(too_big(format!("more than {limit}")));
        }
        match first.take() {
            None if buf.is_empty() => first = Some(data),
            prev => {
                if let Some(prev) = prev {
                    buf.reserve(declared.unwrap_or(0).max(total).min(limit));
                    buf.extend_from_slice(&prev);
                }
                buf.extend_from_slice(&data);
            }
        }
    }
    Ok(first.unwrap_or_else(|| buf.freeze()))
}

/// `Content-Encoding` of a request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Identity,
    Gzip,
    Deflate,
}

fn content_encoding(headers: &HeaderMap) -> Result<Encoding, Response> {
    let Some(v) = headers.get(header::CONTENT_ENCODING) else { return Ok(Encoding::Identity) };
    let enc = v.to_str().unwrap_or("").trim();
    if enc.eq_ignore_ascii_case("identity") || enc.is_empty() {
        Ok(Encoding::Identity)
    } else if enc.eq_ignore_ascii_case("gzip") {
        Ok(Encoding::Gzip)
    } else if enc.eq_ignore_ascii_case("deflate") {
        Ok(Encoding::Deflate)
    } else {
        let mut r = err(Error::unsupported(format!(
            "Unsupported compression type '{}'",
            enc.escape_debug()
        )));
        r.headers_mut().insert(header::ACCEPT_ENCODING, HeaderValue::from_static("gzip, deflate"));
        Err(r)
    }
}

/// Inflates a gzip or deflate (zlib) body, refusing it as soon as the output passes `limit`.
fn decompress(encoding: Encoding, body: &[u8], limit: usize) -> Result<Bytes, Error> {
    use std::io::Read;
    let reader: Box<dyn Read + '_> = match encoding {
        Encoding::Gzip => Box::new(flate2::read::GzDecoder::new(body)),
        Encoding::Deflate => Box::new(flate2::read::ZlibDecoder::new(body)),
        Encoding::Identity => return Ok(Bytes::copy_from_slice(body)),
    };
    let mut out = Vec::new();
    reader.take(limit as u64 + 1).read_to_end(&mut out).map_err(|e| {
        let name = if encoding == Encoding::Gzip { "gzip" } else { "deflate" };
        Error::invalid_arg(format!("failed to decompress the {name} request body: {e}"))
    })?;
    if out.len() > limit {
        return Err(Error::invalid_arg(format!(
            "decompressed request body exceeds the maximum allowed size of {limit} bytes (--http-max-input-size)"
        )));
    }
    Ok(Bytes::from(out))
}

async fn run_infer(
    s: AppState,
    model: String,
    version: Option<i64>,
    request: axum::extract::Request,
) -> HResult {
    let received = std::time::Instant::now();
    let (parts, body) = request.into_parts();
    check_model_access(&s, &model, &parts)?;
    let traceparent = parts.headers.get("traceparent").and_then(|v| v.to_str().ok());
    let trace = s.server.start_trace(&model, traceparent);
    let headers = parts.headers;
    let encoding = content_encoding(&headers)?;
    let mut body = read_body(&headers, body, &s.options).await.map_err(refuse_body)?;
    if encoding != Encoding::Identity {
        let limit = s.options.max_input_size;
        body = tokio::task::spawn_blocking(move || decompress(encoding, &body, limit))
            .await
            .map_err(|e| err(Error::internal(format!("decompression task failed: {e}"))))?
            .map_err(err)?;
    }
    let header_len = codec::header_length(&headers, body.len()).map_err(err)?;
    let decoded = match header_len {
        Some(0) => {
            let req = s.server.raw_request(&model, version, body).map_err(err)?;
            codec::Decoded { request: req, binary_outputs: codec::BinaryOutputs::All }
        }
        len => codec::decode_request_with(
            &model,
            version,
            body,
            len.unwrap_or(usize::MAX),
            &s.options.json_limits,
        )
        .map_err(err)?,
    };
    let mut request = decoded.request;
    if let Some(t) = &trace {
        t.stamp_at("HTTP_RECV_START", received);
        t.stamp("HTTP_RECV_END");
        request.trace = Some(t.clone());
    }
    let response = s.server.infer_unary(request, "HTTP end point").await.map_err(err)?;
    // The response is encoded into one buffer here; the send stamps bracket that (hyper writes it after).
    if let Some(t) = &trace {
        t.stamp("HTTP_SEND_START");
    }
    let encoded = codec::encode_response(&response, &decoded.binary_outputs).map_err(err);
    if let Some(t) = &trace {
        t.stamp("HTTP_SEND_END");
    }
    encoded
}

async fn repository_index(State(s): State<AppState>, headers: HeaderMap, body: Body) -> HResult {
    let body = read_body(&headers, body, &s.options).await.map_err(refuse_body)?;
    let ready_only = if body.iter().all(u8::is_ascii_whitespace) {
        false
    } else {
        codec::check_json_size(&body, &s.options.json_limits).map_err(err)?;
        let v: Value = serde_json::from_slice(&body).map_err(|e| {
            err(Error::invalid_arg(format!("failed to parse the request JSON buffer: {e}")))
        })?;
        match v.get("ready") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return Err(err(Error::invalid_arg("Unable to parse 'ready': expected a boolean")));
            }
        }
    };
    let entries: Vec<Value> = s
        .server
        .repository_index(ready_only)
        .into_iter()
        .map(|e| {
            let mut o = json!({ "name": e.name });
            if let Some(state) = e.state {
                o["state"] = json!(state.as_str());
            }
            if !e.version.is_empty() {
                o["version"] = json!(e.version);
            }
            if !e.reason.is_empty() {
                o["reason"] = json!(e.reason);
            }
            o
        })
        .collect();
    Ok(json_response(&Value::Array(entries)))
}

async fn repository_index_named(s: State<AppState>, headers: HeaderMap, body: Body) -> HResult {
    repository_index(s, headers, body).await
}

fn trace_settings_json(t: &rampart_core::trace::TraceSettings) -> Response {
    json_response(&json!({
        "trace_level": [if t.timestamps { "TIMESTAMPS" } else { "OFF" }],
        "trace_rate": t.rate.to_string(),
        "trace_count": t.count.to_string(),
        "log_frequency": t.log_frequency.to_string(),
        "trace_file": t.file,
        "trace_mode": t.mode,
    }))
}

/// `{"trace_level": [..] | null, "trace_rate": "N" | null, "trace_count": "N" | null, "log_frequency": "N" | null}`;
/// `trace_file` is refused.
fn trace_update(
    body: &[u8],
    limits: &codec::JsonLimits,
) -> Result<rampart_core::trace::TraceUpdate, Error> {
    let mut update = rampart_core::trace::TraceUpdate::default();
    let o = json_object(body, limits)?;
    let text = |k: &str, v: &Value| match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        _ => Err(Error::invalid_arg(format!("'{k}' must be a string or null"))),
    };
    for (k, v) in &o {
        match k.as_str() {
            "trace_file" => update.file = true,
            "trace_level" => {
                update.level = Some(match v {
                    // null or [] clears (per model), as an empty list does over gRPC.
                    Value::Null => None,
                    Value::Array(items) if items.is_empty() => None,
                    Value::Array(items) => Some(
                        items
                            .iter()
                            .map(|i| {
                                i.as_str().map(str::to_string).ok_or_else(|| {
                                    Error::invalid_arg("'trace_level' must be an array of strings")
                                })
                            })
                            .collect::<Result<Vec<_>, _>>()?,
                    ),
                    _ => {
                        return Err(Error::invalid_arg(
                            "'trace_level' must be an array of strings or null",
                        ));
                    }
                })
            }
            "trace_rate" => update.rate = Some(text(k, v)?),
            "trace_count" => update.count = Some(text(k, v)?),
            "log_frequency" => update.log_frequency = Some(text(k, v)?),
            _ => return Err(Error::invalid_arg(format!("unexpected trace setting '{k}'"))),
        }
    }
    Ok(update)
}

async fn trace_settings(State(s): State<AppState>) -> HResult {
    Ok(trace_settings_json(&s.server.trace_settings(None).map_err(err)?))
}

async fn model_trace_settings(State(s): State<AppState>, Path(model): Path<String>) -> HResult {
    Ok(trace_settings_json(&s.server.trace_settings(Some(&model)).map_err(err)?))
}

async fn update_trace_in(
    s: AppState,
    model: Option<String>,
    headers: HeaderMap,
    body: Body,
) -> HResult {
    let body = read_body(&headers, body, &s.options).await.map_err(refuse_body)?;
    let update = trace_update(&body, &s.options.json_limits).map_err(err)?;
    Ok(trace_settings_json(
        &s.server.update_trace_settings(model.as_deref(), &update).map_err(err)?,
    ))
}

async fn update_trace_settings(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> HResult {
    update_trace_in(s, None, headers, body).await
}

async fn update_model_trace_settings(
    State(s): State<AppState>,
    Path(model): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> HResult {
    update_trace_in(s, Some(model), headers, body).await
}

fn log_settings_json(l: &rampart_core::logging::LogSettings) -> Response {
    json_response(&json!({
        "log_file": l.file,
        "log_info": l.info,
        "log_warning": l.warning,
        "log_error": l.error,
        "log_verbose_level": l.verbose_level,
        "log_format": l.format.as_str(),
    }))
}

async fn log_settings(State(s): State<AppState>) -> HResult {
    Ok(log_settings_json(&s.server.log_settings().map_err(err)?))
}

/// `{"log_info": bool, "log_warning": bool, "log_error": bool, "log_verbose_level": uint, "log_format": str}`;
/// a non-null `log_file` is refused.
fn log_update(
    body: &[u8],
    limits: &codec::JsonLimits,
) -> Result<rampart_core::logging::LogUpdate, Error> {
    let mut update = rampart_core::logging::LogUpdate::default();
    let o = json_object(body, limits)?;
    let boolean = |k: &str, v: &Value| {
        v.as_bool().ok_or_else(|| Error::invalid_arg(format!("'{k}' must be a boolean")))
    };
    for (k, v) in &o {
        match k.as_str() {
            "log_file" if v.is_null() => {}
            "log_file" => update.file = Some(v.as_str().unwrap_or_default().to_string()),
            "log_info" => update.info = Some(boolean(k, v)?),
            "log_warning" => update.warning = Some(boolean(k, v)?),
            "log_error" => update.error = Some(boolean(k, v)?),
            "log_verbose_level" => {
                let n = v.as_u64().and_then(|n| u32::try_from(n).ok());
                update.verbose_level = Some(n.ok_or_else(|| {
                    Error::invalid_arg("'log_verbose_level' must be an unsigned integer")
                })?);
            }
            "log_format" => {
                update.format = Some(
                    v.as_str()
                        .ok_or_else(|| Error::invalid_arg("'log_format' must be a string"))?
                        .to_string(),
                )
            }
            _ => return Err(Error::invalid_arg(format!("unexpected log setting '{k}'"))),
        }
    }
    Ok(update)
}

async fn update_log_settings(State(s): State<AppState>, headers: HeaderMap, body: Body) -> HResult {
    let body = read_body(&headers, body, &s.options).await.map_err(refuse_body)?;
    let update = log_update(&body, &s.options.json_limits).map_err(err)?;
    Ok(log_settings_json(&s.server.update_log_settings(&update).map_err(err)?))
}

/// The `parameters` object of a load or unload body (an empty body has none).
fn repository_parameters(
    s: &AppState,
    body: &[u8],
) -> Result<serde_json::Map<String, Value>, Error> {
    match json_object(body, &s.options.json_limits)?.remove("parameters") {
        None => Ok(Default::default()),
        Some(Value::Object(p)) => Ok(p),
        Some(_) => Err(Error::invalid_arg("'parameters' must be a JSON object")),
    }
}

/// The JSON object of an admin request body (size and depth checked first); an empty body is an empty
/// object.
pub(crate) fn json_object(
    body: &[u8],
    limits: &codec::JsonLimits,
) -> Result<serde_json::Map<String, Value>, Error> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Default::default());
    }
    codec::check_json_size(body, limits)?;
    match serde_json::from_slice(body) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err(Error::invalid_arg("the request body must be a JSON object")),
        Err(e) => Err(Error::invalid_arg(format!("failed to parse the request JSON buffer: {e}"))),
    }
}

/// `{"parameters":{"config":"<json>","file:<path>":"<base64>"}}`; every value is a string.
fn load_request(params: serde_json::Map<String, Value>) -> Result<LoadRequest, Error> {
    use base64::Engine as _;
    let mut request = LoadRequest::default();
    for (key, value) in params {
        let Value::String(text) = value else {
            return Err(Error::invalid_arg(format!(
                "load parameter '{key}' must be a JSON string"
            )));
        };
        if key == "config" {
            request.config = Some(text);
        } else if let Some(path) = key.strip_prefix("file:") {
            let data =
                base64::engine::general_purpose::STANDARD.decode(text.as_bytes()).map_err(|e| {
                    Error::invalid_arg(format!("load parameter '{key}' is not valid base64: {e}"))
                })?;
            request.files.push((path.to_string(), data));
        } else {
            return Err(Error::invalid_arg(format!(
                "unexpected load parameter '{key}': expected 'config' or 'file:<path>'"
            )));
        }
    }
    Ok(request)
}

fn unload_dependents(params: &serde_json::Map<String, Value>) -> Result<bool, Error> {
    if let Some(key) = params.keys().find(|k| *k != "unload_dependents") {
        return Err(Error::invalid_arg(format!(
            "unexpected unload parameter '{key}': expected 'unload_dependents'"
        )));
    }
    match params.get("unload_dependents") {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => {
            Err(Error::invalid_arg("Unable to parse 'unload_dependents': expected a boolean"))
        }
    }
}

/// Loads and unloads block (they build or drain engines): they run on the blocking pool.
async fn blocking(f: impl FnOnce() -> rampart_types::Result<()> + Send + 'static) -> HResult {
    let done = tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(Error::internal(format!("model control task failed: {e}"))));
    done.map(|()| StatusCode::OK.into_response()).map_err(err)
}

async fn load_in(
    s: AppState,
    repo: String,
    model: String,
    headers: HeaderMap,
    body: Body,
) -> HResult {
    s.server.check_model_control(&repo).map_err(refuse_body)?;
    let body = read_body(&headers, body, &s.options).await.map_err(refuse_body)?;
    let request = repository_parameters(&s, &body).and_then(load_request).map_err(err)?;
    blocking(move || s.server.load_model(&repo, &model, request)).await
}

async fn unload_in(
    s: AppState,
    repo: String,
    model: String,
    headers: HeaderMap,
    body: Body,
) -> HResult {
    s.server.check_model_control(&repo).map_err(refuse_body)?;
    let body = read_body(&headers, body, &s.options).await.map_err(refuse_body)?;
    let dependents =
        repository_parameters(&s, &body).and_then(|p| unload_dependents(&p)).map_err(err)?;
    blocking(move || s.server.unload_model(&repo, &model, dependents)).await
}

async fn load(
    State(s): State<AppState>,
    Path(model): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> HResult {
    load_in(s, String::new(), model, headers, body).await
}

async fn unload(
    State(s): State<AppState>,
    Path(model): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> HResult {
    unload_in(s, String::new(), model, headers, body).await
}

async fn load_named(
    State(s): State<AppState>,
    Path((repo, model)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> HResult {
    load_in(s, repo, model, headers, body).await
}

async fn unload_named(
    State(s): State<AppState>,
    Path((repo, model)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> HResult {
    unload_in(s, repo, model, headers, body).await
}

fn shm_status_answer(s: &AppState, region: Option<&str>) -> HResult {
    let regions = s.server.shared_memory().status(region).map_err(err)?;
    let list: Vec<Value> = regions
        .iter()
        .map(
            |r| json!({"name": r.name, "key": r.key, "offset": r.offset, "byte_size": r.byte_size}),
        )
        .collect();
    Ok(json_response(&Value::Array(list)))
}

async fn shm_status(State(s): State<AppState>) -> HResult {
    shm_status_answer(&s, None)
}

async fn shm_region_status(State(s): State<AppState>, Path(region): Path<String>) -> HResult {
    shm_status_answer(&s, Some(&region))
}

fn cuda_status_answer(s: &AppState, region: Option<&str>) -> HResult {
    let regions = s.server.cuda_shared_memory_status(region).map_err(err)?;
    Ok(json_response(&json!(regions)))
}

async fn cuda_status(State(s): State<AppState>) -> HResult {
    cuda_status_answer(&s, None)
}

async fn cuda_region_status(State(s): State<AppState>, Path(region): Path<String>) -> HResult {
    cuda_status_answer(&s, Some(&region))
}

/// `{"key":"/shm_key","offset":0,"byte_size":N}`; `key` and `byte_size` required.
async fn shm_register(
    State(s): State<AppState>,
    Path(region): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> HResult {
    let shm = s.server.shared_memory();
    if !shm.enabled() {
        return Err(refuse_body(features::client_shm_disabled()));
    }
    let body = read_body(&headers, body, &s.options).await.map_err(refuse_body)?;
    let o = json_object(&body, &s.options.json_limits).map_err(err)?;
    if let Some(k) = o.keys().find(|k| !matches!(k.as_str(), "key" | "offset" | "byte_size")) {
        return Err(err(Error::invalid_arg(format!(
            "unexpected field '{k}' in the register request: expected 'key', 'offset' and 'byte_size'"
        ))));
    }
    let key = match o.get("key") {
        Some(Value::String(k)) => k.as_str(),
        Some(_) => return Err(err(Error::invalid_arg("Unable to parse 'key': expected a string"))),
        None => {
            return Err(err(Error::invalid_arg(
                "Shared memory register request has no 'key' field",
            )));
        }
    };
    let number = |field: &str| match o.get(field) {
        None => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| {
            err(Error::invalid_arg(format!(
                "Unable to parse '{field}': expected an unsigned integer"
            )))
        }),
    };
    let offset = number("offset")?.unwrap_or(0);
    let byte_size = number("byte_size")?.ok_or_else(|| {
        err(Error::invalid_arg("Shared memory register request has no 'byte_size' field"))
    })?;
    shm.register(&region, key, offset, byte_size).map_err(err)?;
    Ok(StatusCode::OK.into_response())
}

async fn shm_unregister_all(State(s): State<AppState>) -> HResult {
    s.server.shared_memory().unregister(None).map_err(refuse_body)?;
    Ok(StatusCode::OK.into_response())
}

async fn shm_unregister(State(s): State<AppState>, Path(region): Path<String>) -> HResult {
    s.server.shared_memory().unregister(Some(&region)).map_err(refuse_body)?;
    Ok(StatusCode::OK.into_response())
}

async fn cuda_shm() -> Response {
    err(features::cuda_shm_unsupported())
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
        assert_eq!(decompress(Encoding::Gzip, &z, 10_000).unwrap().len(), 10_000);
        let e = decompress(Encoding::Gzip, &z, 9_999).unwrap_err();
        assert!(e.message().contains("--http-max-input-size"), "{e}");
        let e = decompress(Encoding::Deflate, b"not zlib", 100).unwrap_err();
        assert!(e.message().contains("failed to decompress the deflate"), "{e}");
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(b"{}").unwrap();
        assert_eq!(&decompress(Encoding::Deflate, &z.finish().unwrap(), 10).unwrap()[..], b"{}");
    }
}
