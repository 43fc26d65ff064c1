//! The administrative routes: repository index, load and unload, trace and log settings, shared memory.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use rampart_core::{LoadRequest, features};
use rampart_types::Error;
use serde_json::{Value, json};

use crate::codec;
use crate::common::{AppState, HResult, err, json_response};
use crate::infer_route::{read_body, refuse_body};

pub(crate) async fn repository_index(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> HResult {
    let body = read_body(&headers, body, &s.options).await.map_err(refuse_body)?;
    let ready_only = if body.iter().all(u8::is_ascii_whitespace) {
        false
    } else {
        codec::check_json_size(&body, &s.options.json_limits)?;
        let v: Value = serde_json::from_slice(&body).map_err(|e| {
            err(Error::invalid_arg(format!("failed to parse the request JSON buffer: {e}")))
        })?;
        match v.get("ready") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return Err(err(Error::invalid_arg(
                    "Invalid value for 'ready': expected a boolean",
                )));
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

pub(crate) async fn repository_index_named(
    s: State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> HResult {
    repository_index(s, headers, body).await
}

pub(crate) fn trace_settings_json(t: &rampart_core::trace::TraceSettings) -> Response {
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
pub(crate) fn trace_update(
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

pub(crate) async fn trace_settings(State(s): State<AppState>) -> HResult {
    Ok(trace_settings_json(&s.server.trace_settings(None)?))
}

pub(crate) async fn model_trace_settings(
    State(s): State<AppState>,
    Path(model): Path<String>,
) -> HResult {
    Ok(trace_settings_json(&s.server.trace_settings(Some(&model))?))
}

pub(crate) async fn update_trace_in(
    s: AppState,
    model: Option<String>,
    headers: HeaderMap,
    body: Body,
) -> HResult {
    let body = read_body(&headers, body, &s.options).await.map_err(refuse_body)?;
    let update = trace_update(&body, &s.options.json_limits)?;
    Ok(trace_settings_json(&s.server.update_trace_settings(model.as_deref(), &update)?))
}

pub(crate) async fn update_trace_settings(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> HResult {
    update_trace_in(s, None, headers, body).await
}

pub(crate) async fn update_model_trace_settings(
    State(s): State<AppState>,
    Path(model): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> HResult {
    update_trace_in(s, Some(model), headers, body).await
}

pub(crate) fn log_settings_json(l: &rampart_core::logging::LogSettings) -> Response {
    json_response(&json!({
        "log_file": l.file,
        "log_info": l.info,
        "log_warning": l.warning,
        "log_error": l.error,
        "log_verbose_level": l.verbose_level,
        "log_format": l.format.as_str(),
    }))
}

pub(crate) async fn log_settings(State(s): State<AppState>) -> HResult {
    Ok(log_settings_json(&s.server.log_settings()?))
}

/// `{"log_info": bool, "log_warning": bool, "log_error": bool, "log_verbose_level": uint, "log_format": str}`;
/// a non-null `log_file` is refused.
pub(crate) fn log_update(
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

pub(crate) async fn update_log_settings(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> HResult {
    let body = read_body(&headers, body, &s.options).await.map_err(refuse_body)?;
    let update = log_update(&body, &s.options.json_limits)?;
    Ok(log_settings_json(&s.server.update_log_settings(&update)?))
}

/// The `parameters` object of a load or unload body (an empty body has none).
pub(crate) fn repository_parameters(
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
pub(crate) fn load_request(params: serde_json::Map<String, Value>) -> Result<LoadRequest, Error> {
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

pub(crate) fn unload_dependents(params: &serde_json::Map<String, Value>) -> Result<bool, Error> {
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
pub(crate) async fn blocking(
    f: impl FnOnce() -> rampart_types::Result<()> + Send + 'static,
) -> HResult {
    let done = tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(Error::internal(format!("model control task failed: {e}"))));
    done.map(|()| StatusCode::OK.into_response()).map_err(err)
}

pub(crate) async fn load_in(
    s: AppState,
    repo: String,
    model: String,
    headers: HeaderMap,
    body: Body,
) -> HResult {
    s.server.check_model_control(&repo).map_err(refuse_body)?;
    let body = read_body(&headers, body, &s.options).await.map_err(refuse_body)?;
    let request = repository_parameters(&s, &body).and_then(load_request)?;
    blocking(move || s.server.load_model(&repo, &model, request)).await
}

pub(crate) async fn unload_in(
    s: AppState,
    repo: String,
    model: String,
    headers: HeaderMap,
    body: Body,
) -> HResult {
    s.server.check_model_control(&repo).map_err(refuse_body)?;
    let body = read_body(&headers, body, &s.options).await.map_err(refuse_body)?;
    let dependents = repository_parameters(&s, &body).and_then(|p| unload_dependents(&p))?;
    blocking(move || s.server.unload_model(&repo, &model, dependents)).await
}

pub(crate) async fn load(
    State(s): State<AppState>,
    Path(model): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> HResult {
    load_in(s, String::new(), model, headers, body).await
}

pub(crate) async fn unload(
    State(s): State<AppState>,
    Path(model): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> HResult {
    unload_in(s, String::new(), model, headers, body).await
}

pub(crate) async fn load_named(
    State(s): State<AppState>,
    Path((repo, model)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> HResult {
    load_in(s, repo, model, headers, body).await
}

pub(crate) async fn unload_named(
    State(s): State<AppState>,
    Path((repo, model)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> HResult {
    unload_in(s, repo, model, headers, body).await
}

pub(crate) fn shm_status_answer(s: &AppState, region: Option<&str>) -> HResult {
    let regions = s.server.shared_memory().status(region)?;
    let list: Vec<Value> = regions
        .iter()
        .map(
            |r| json!({"name": r.name, "key": r.key, "offset": r.offset, "byte_size": r.byte_size}),
        )
        .collect();
    Ok(json_response(&Value::Array(list)))
}

pub(crate) async fn shm_status(State(s): State<AppState>) -> HResult {
    shm_status_answer(&s, None)
}

pub(crate) async fn shm_region_status(
    State(s): State<AppState>,
    Path(region): Path<String>,
) -> HResult {
    shm_status_answer(&s, Some(&region))
}

pub(crate) fn cuda_status_answer(s: &AppState, region: Option<&str>) -> HResult {
    let regions = s.server.cuda_shared_memory_status(region)?;
    Ok(json_response(&json!(regions)))
}

pub(crate) async fn cuda_status(State(s): State<AppState>) -> HResult {
    cuda_status_answer(&s, None)
}

pub(crate) async fn cuda_region_status(
    State(s): State<AppState>,
    Path(region): Path<String>,
) -> HResult {
    cuda_status_answer(&s, Some(&region))
}

/// `{"key":"/shm_key","offset":0,"byte_size":N}`; `key` and `byte_size` required.
pub(crate) async fn shm_register(
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
    let o = json_object(&body, &s.options.json_limits)?;
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
    shm.register(&region, key, offset, byte_size)?;
    Ok(StatusCode::OK.into_response())
}

pub(crate) async fn shm_unregister_all(State(s): State<AppState>) -> HResult {
    s.server.shared_memory().unregister(None).map_err(refuse_body)?;
    Ok(StatusCode::OK.into_response())
}

pub(crate) async fn shm_unregister(
    State(s): State<AppState>,
    Path(region): Path<String>,
) -> HResult {
    s.server.shared_memory().unregister(Some(&region)).map_err(refuse_body)?;
    Ok(StatusCode::OK.into_response())
}

pub(crate) async fn cuda_unregister_all(State(s): State<AppState>) -> HResult {
    s.server.cuda_shared_memory_unregister(None)?;
    Ok(StatusCode::OK.into_response())
}

pub(crate) async fn cuda_unregister(
    State(s): State<AppState>,
    Path(region): Path<String>,
) -> HResult {
    s.server.cuda_shared_memory_unregister(Some(&region))?;
    Ok(StatusCode::OK.into_response())
}

pub(crate) async fn cuda_shm() -> Response {
    err(features::cuda_shm_unsupported())
}
