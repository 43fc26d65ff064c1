//! The cloud front ends: SageMaker and Vertex AI (docs/protocol.md, "SageMaker", "Vertex AI"), each
//! on a listener of its own.
//!
//! Their routes are rewritten into requests for the main KServe router and run through it, so restricted-API
//! categories, body limits, model access rules, tracing and error bodies are exactly those of the main HTTP
//! front end: Triton's front ends that skipped those checks are CVE-2026-24206/24207 and CVE-2026-47481. Only
//! the SageMaker multi-model routes have handlers of their own; they check the model-repository category with
//! the same function the main router uses.

// Built with either front end (cargo features `sagemaker`, `vertex`); with one only, some imports go unused.
#![cfg_attr(not(all(feature = "sagemaker", feature = "vertex")), allow(unused_imports, dead_code))]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use rampart_core::Server;
use rampart_core::access::Category;
use rampart_types::Error;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::codec::HEADER_LENGTH;
use crate::common::{HttpOptions, error_response, not_found_response};

#[cfg(feature = "sagemaker")]
const SAGEMAKER_BINARY: &str = "application/vnd.sagemaker-triton.binary+json";
#[cfg(feature = "vertex")]
const VERTEX_BINARY: &str = "application/vnd.vertex-ai-triton.binary+json";
/// Vertex AI's re-dispatch header.
#[cfg(feature = "vertex")]
pub const VERTEX_REDIRECT: &str = "x-vertex-ai-triton-redirect";

/// A path segment with everything but RFC 3986 unreserved characters percent-encoded.
fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `<vendor type>;json-header-size=<N>` becomes `Inference-Header-Content-Length: N`.
fn binary_header(headers: &mut HeaderMap, binary_type: &str) -> Result<(), Error> {
    let Some(ct) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return Ok(());
    };
    let mut params = ct.split(';').map(str::trim);
    if !params.next().is_some_and(|t| t.eq_ignore_ascii_case(binary_type)) {
        return Ok(());
    }
    let size = params.find_map(|p| p.strip_prefix("json-header-size=")).ok_or_else(|| {
        Error::invalid_arg(format!(
            "content type '{binary_type}' needs a 'json-header-size=<N>' parameter"
        ))
    })?;
    let n: u64 = size.trim().parse().map_err(|_| {
        Error::invalid_arg(format!("invalid json-header-size '{}'", size.escape_debug()))
    })?;
    headers.insert(HEADER_LENGTH, HeaderValue::from(n));
    Ok(())
}

/// A health answer of the main router (`{"ready": …}`) without its body: the SageMaker and Vertex AI
/// health routes answer with the status alone, as Triton's do. Errors keep theirs.
fn bare_health(response: Response) -> Response {
    let status = response.status();
    let not_ready = rampart_types::Code::NOT_READY_HTTP_STATUS;
    if status != StatusCode::OK && status.as_u16() != not_ready {
        return response;
    }
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(header::CONTENT_TYPE);
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::empty())
}

/// Runs the request through `main` as `method path`; a binary answer is labelled with the vendor content type.
async fn forward(
    main: Router,
    mut parts: Parts,
    body: Body,
    method: Method,
    path: &str,
    binary_type: &'static str,
) -> Response {
    if let Err(e) = binary_header(&mut parts.headers, binary_type) {
        return error_response(&e);
    }
    // Only the connection's client goes along: the outer router's path parameters must not reach the inner one.
    let peer = crate::restrict::peer_of(&parts.extensions);
    parts.extensions = Default::default();
    if let Some(p) = peer {
        parts.extensions.insert(p);
    }
    parts.method = method;
    parts.uri = match path.parse() {
        Ok(u) => u,
        Err(_) => return not_found_response(),
    };
    let mut response = match main.oneshot(Request::from_parts(parts, body)).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    let len =
        response.headers().get(HEADER_LENGTH).and_then(|v| v.to_str().ok()).map(str::to_string);
    if let Some(v) = len.and_then(|len| {
        HeaderValue::from_str(&format!("{binary_type};json-header-size={len}")).ok()
    }) {
        response.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    response
}

// ---------------------------------------------------------------------------------------------------------
// SageMaker
// ---------------------------------------------------------------------------------------------------------

/// SageMaker settings (from `SAGEMAKER_*` environment variables and flags).
#[cfg(feature = "sagemaker")]
#[derive(Debug, Clone)]
pub struct SageMakerOptions {
    /// `SAGEMAKER_TRITON_DEFAULT_MODEL_NAME`: the model `/invocations` runs.
    pub default_model: String,
    /// `SAGEMAKER_TRITON_PING_MODE=live`: `/ping` reports liveness instead of readiness.
    pub ping_live: bool,
    /// `SAGEMAKER_TRITON_INFERENCE_TYPE`: the route `/invocations` takes (`infer`, `generate`,
    /// `generate_stream`).
    pub inference_type: &'static str,
    /// `SAGEMAKER_MULTI_MODEL=true`: the `/models` routes.
    pub multi_model: bool,
    /// `--sagemaker-multi-model-root`: where multi-model loads may come from (`<root>/<name>/model[/<dir>]`).
    pub multi_model_root: PathBuf,
}

#[cfg(feature = "sagemaker")]
#[derive(Clone)]
struct SageMaker {
    main: Router,
    server: Server,
    http: HttpOptions,
    options: Arc<SageMakerOptions>,
    /// Models loaded through `POST /models`: name → url.
    loaded: Arc<Mutex<BTreeMap<String, String>>>,
    /// Serialises multi-model loads and unloads (the name checks and the load are one step).
    control: Arc<tokio::sync::Mutex<()>>,
}

/// The SageMaker router. `main` is a KServe router ([`crate::router`]) built with `http`.
#[cfg(feature = "sagemaker")]
pub fn sagemaker_router(
    main: Router,
    server: Server,
    http: HttpOptions,
    options: SageMakerOptions,
) -> Router {
    let multi = options.multi_model;
    let state = SageMaker {
        main,
        server,
        http,
        options: Arc::new(options),
        loaded: Default::default(),
        control: Default::default(),
    };
    // /ping and /invocations keep the client's method: the main router checks the credential, then answers a
    // wrong method with 405, as Triton's handlers do.
    let mut r = Router::new().route("/ping", any(ping)).route("/invocations", any(invocations));
    if multi {
        r = r
            .route("/models", get(mme_list).post(mme_load))
            .route("/models/{name}", get(mme_get).delete(mme_unload))
            .route("/models/{name}/invoke", post(mme_invoke));
    }
    r.fallback(unsupported).method_not_allowed_fallback(unsupported).with_state(state)
}

/// SageMaker answers requests it does not serve with 400 (not 404).
#[cfg(feature = "sagemaker")]
async fn unsupported(request: Request) -> Response {
    let mut r = error_response(&Error::invalid_arg(format!(
        "SageMaker: unsupported request {} {}",
        request.method(),
        request.uri().path().escape_debug()
    )));
    r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

#[cfg(feature = "sagemaker")]
async fn ping(State(s): State<SageMaker>, request: Request) -> Response {
    let path = if s.options.ping_live { "/v2/health/live" } else { "/v2/health/ready" };
    let (parts, body) = request.into_parts();
    let method = parts.method.clone();
    bare_health(forward(s.main, parts, body, method, path, SAGEMAKER_BINARY).await)
}

#[cfg(feature = "sagemaker")]
async fn invocations(State(s): State<SageMaker>, request: Request) -> Response {
    let path =
        format!("/v2/models/{}/{}", segment(&s.options.default_model), s.options.inference_type);
    let (parts, body) = request.into_parts();
    let method = parts.method.clone();
    forward(s.main, parts, body, method, &path, SAGEMAKER_BINARY).await
}

#[cfg(feature = "sagemaker")]
async fn mme_invoke(
    State(s): State<SageMaker>,
    axum::extract::Path(name): axum::extract::Path<String>,
    request: Request,
) -> Response {
    if let Some(target) = request.headers().get("x-amzn-sagemaker-target-model") {
        tracing::debug!(target = %String::from_utf8_lossy(target.as_bytes()).escape_debug(), "SageMaker target model header");
    }
    let (parts, body) = request.into_parts();
    // The credential first: without it, a client must not learn which models are loaded.
    if let Err(r) = authorize(&s, &parts, Category::Inference) {
        return with_close(r);
    }
    if !loaded(&s).contains_key(&name) {
        return with_close(error_response(&Error::not_found(format!(
            "Model '{}' is not loaded",
            name.escape_debug()
        ))));
    }
    forward(
        s.main,
        parts,
        body,
        Method::POST,
        &format!("/v2/models/{}/infer", segment(&name)),
        SAGEMAKER_BINARY,
    )
    .await
}

/// A category, checked as the main router checks it.
#[cfg(feature = "sagemaker")]
fn authorize(s: &SageMaker, parts: &Parts, category: Category) -> Result<(), Response> {
    let peer = crate::restrict::peer_of(&parts.extensions);
    let caller = crate::restrict::caller(&parts.headers, peer.as_ref(), parts.uri.path());
    crate::restrict::authorize(&s.http.gate(), category, &caller)
}

#[cfg(feature = "sagemaker")]
fn authorize_repository(s: &SageMaker, parts: &Parts) -> Result<(), Response> {
    authorize(s, parts, Category::ModelRepository)
}

#[cfg(feature = "sagemaker")]
fn loaded(s: &SageMaker) -> std::sync::MutexGuard<'_, BTreeMap<String, String>> {
    s.loaded.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(feature = "sagemaker")]
fn model_json(name: &str, url: &str) -> Value {
    json!({"modelName": name, "modelUrl": url})
}

#[cfg(feature = "sagemaker")]
fn json_answer(status: StatusCode, v: Value) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

#[cfg(feature = "sagemaker")]
async fn mme_list(State(s): State<SageMaker>, request: Request) -> Response {
    let (parts, _) = request.into_parts();
    if let Err(r) = authorize_repository(&s, &parts) {
        return r;
    }
    let models: Vec<Value> = loaded(&s).iter().map(|(n, u)| model_json(n, u)).collect();
    json_answer(StatusCode::OK, json!({ "models": models }))
}

#[cfg(feature = "sagemaker")]
async fn mme_get(
    State(s): State<SageMaker>,
    axum::extract::Path(name): axum::extract::Path<String>,
    request: Request,
) -> Response {
    let (parts, _) = request.into_parts();
    if let Err(r) = authorize_repository(&s, &parts) {
        return r;
    }
    let url = loaded(&s).get(&name).cloned();
    match url {
        Some(url) => json_answer(StatusCode::OK, model_json(&name, &url)),
        None => error_response(&Error::not_found(format!(
            "Model '{}' is not loaded",
            name.escape_debug()
        ))),
    }
}

#[cfg(feature = "sagemaker")]
async fn mme_load(State(s): State<SageMaker>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    if let Err(r) = authorize_repository(&s, &parts) {
        return with_close(r);
    }
    let body = match crate::infer_route::read_body(&parts.headers, body, &s.http).await {
        Ok(b) => b,
        Err(e) => return with_close(error_response(&e)),
    };
    let (name, url) = match mme_request(&body, &s.http) {
        Ok(v) => v,
        Err(e) => return error_response(&e),
    };
    let dir = match mme_model_dir(&s.options.multi_model_root, &url) {
        Ok(d) => d,
        Err(e) => return error_response(&e),
    };
    let _control = s.control.lock().await;
    let conflict = if loaded(&s).contains_key(&name) {
        Some(format!("Model '{name}' is already loaded"))
    } else if s.server.repository_index(true).into_iter().any(|e| e.name == name) {
        // A model of that name served from the repository is not replaced by a multi-model load.
        Some(format!("model '{name}' is already loaded from the model repository"))
    } else {
        None
    };
    if let Some(message) = conflict {
        // SageMaker's contract: loading a loaded model is 409 Conflict.
        return error_response(&Error::new(rampart_types::Code::Conflict, message));
    }
    // Served under the SageMaker name; its config.pbtxt may name it after its directory.
    let server = s.server.clone();
    let task_name = name.clone();
    let done = tokio::task::spawn_blocking(move || server.load_model_from(&task_name, &dir))
        .await
        .unwrap_or_else(|e| Err(Error::internal(format!("model load task failed: {e}"))));
    match done {
        Ok(()) => {
            loaded(&s).insert(name.clone(), url.clone());
            json_answer(StatusCode::OK, model_json(&name, &url))
        }
        Err(e) => error_response(&e),
    }
}

#[cfg(feature = "sagemaker")]
async fn mme_unload(
    State(s): State<SageMaker>,
    axum::extract::Path(name): axum::extract::Path<String>,
    request: Request,
) -> Response {
    let (parts, _) = request.into_parts();
    if let Err(r) = authorize_repository(&s, &parts) {
        return r;
    }
    let _control = s.control.lock().await;
    if !loaded(&s).contains_key(&name) {
        return error_response(&Error::not_found(format!(
            "Model '{}' is not loaded",
            name.escape_debug()
        )));
    }
    let server = s.server.clone();
    let task_name = name.clone();
    let done = tokio::task::spawn_blocking(move || server.unload_model("", &task_name, false))
        .await
        .unwrap_or_else(|e| Err(Error::internal(format!("model unload task failed: {e}"))));
    match done {
        Ok(()) => {
            loaded(&s).remove(&name);
            StatusCode::OK.into_response()
        }
        Err(e) => error_response(&e),
    }
}

#[cfg(feature = "sagemaker")]
fn with_close(mut r: Response) -> Response {
    r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// `{"model_name": "<name>", "url": "<dir>"}`.
#[cfg(feature = "sagemaker")]
fn mme_request(body: &[u8], http: &HttpOptions) -> Result<(String, String), Error> {
    let v = crate::admin::json_object(body, &http.json_limits)?;
    let field = |k: &str| match v.get(k) {
        Some(Value::String(s)) => Ok(s.clone()),
        _ => Err(Error::invalid_arg(format!("the load request needs a string '{k}'"))),
    };
    let name = field("model_name")?;
    rampart_core::validate_model_name(&name)?;
    Ok((name, field("url")?))
}

/// The model directory behind a multi-model `url`: `<root>/<name>/model` or `<root>/<name>/model/<dir>`, `<name>`
/// alphanumeric, `<dir>` one plain name; the resolved path (symbolic links followed) must stay under `root` and
/// outside `/dev`, `/proc` and `/sys` (CVE-2026-24208/24209). The directory is the model itself when it holds a
/// `config.pbtxt`, else the one model directory inside it.
#[cfg(feature = "sagemaker")]
fn mme_model_dir(root: &Path, url: &str) -> Result<PathBuf, Error> {
    let bad = |why: &str| {
        Error::invalid_arg(format!("invalid model url '{}': {why}", url.escape_debug()))
    };
    let root_text = root
        .to_str()
        .ok_or_else(|| bad("the multi-model root is not UTF-8"))?
        .trim_end_matches('/');
    let rest = url
        .strip_prefix(root_text)
        .and_then(|r| r.strip_prefix('/'))
        .ok_or_else(|| bad(&format!("it must be {root_text}/<name>/model[/<directory>]")))?;
    let plain = |s: &str| {
        !s.is_empty() && s != "." && s != ".." && !s.chars().any(|c| c.is_control() || c == '\\')
    };
    match rest.split('/').collect::<Vec<_>>().as_slice() {
        [hash, "model"] | [hash, "model", _]
            if !hash.is_empty() && hash.bytes().all(|b| b.is_ascii_alphanumeric()) => {}
        _ => {
            return Err(bad(&format!(
                "it must be {root_text}/<alphanumeric name>/model[/<directory>]"
            )));
        }
    }
    if !rest.split('/').all(plain) {
        return Err(bad("path segments must be plain names"));
    }
    let real_root = root
        .canonicalize()
        .map_err(|e| bad(&format!("the multi-model root cannot be resolved: {e}")))?;
    let real =
        Path::new(url).canonicalize().map_err(|e| bad(&format!("cannot resolve it: {e}")))?;
    if !real.starts_with(&real_root)
        || ["/dev", "/proc", "/sys"].iter().any(|p| real.starts_with(p))
        || !real.is_dir()
    {
        return Err(bad("it must resolve to a directory inside the multi-model root"));
    }
    links_stay_inside(&real, &real_root).map_err(|why| bad(&why))?;
    if real.join("config.pbtxt").is_file() {
        return Ok(real);
    }
    let dirs: Vec<PathBuf> = std::fs::read_dir(&real)
        .map_err(|e| bad(&e.to_string()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .take(2)
        .collect();
    match dirs.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(bad("it must hold config.pbtxt or exactly one model directory")),
    }
}

/// Every symbolic link under `dir` (the files a load reads) must resolve inside `root`; the walk is bounded.
#[cfg(feature = "sagemaker")]
fn links_stay_inside(dir: &Path, root: &Path) -> Result<(), String> {
    const MAX_ENTRIES: usize = 10_000;
    const MAX_DEPTH: usize = 8;
    let mut stack = vec![(dir.to_path_buf(), 0usize)];
    let mut seen = 0usize;
    while let Some((d, depth)) = stack.pop() {
        for entry in std::fs::read_dir(&d).map_err(|e| e.to_string())? {
            let entry = entry.map_err(|e| e.to_string())?;
            seen += 1;
            if seen > MAX_ENTRIES {
                return Err(format!("it holds more than {MAX_ENTRIES} files"));
            }
            let path = entry.path();
            let kind = entry.file_type().map_err(|e| e.to_string())?;
            if kind.is_symlink() {
                let target = path.canonicalize().ok().filter(|t| t.starts_with(root));
                let Some(target) = target else {
                    return Err("a symbolic link in it leads outside the multi-model root".into());
                };
                // A linked directory is walked too (cycles end at the entry bound).
                if target.is_dir() && depth < MAX_DEPTH {
                    stack.push((target, depth + 1));
                }
            } else if kind.is_dir() {
                if depth + 1 > MAX_DEPTH {
                    return Err(format!("it is nested deeper than {MAX_DEPTH} directories"));
                }
                stack.push((path, depth + 1));
            }
        }
    }
    Ok(())
}

#[cfg(feature = "vertex")]
mod vertex;
#[cfg(feature = "vertex")]
pub use vertex::{VertexOptions, valid_vertex_route, vertex_router};

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "sagemaker")]
    #[test]
    fn vendor_content_type_becomes_header_length() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(
                "application/vnd.sagemaker-triton.binary+json; json-header-size=42",
            ),
        );
        binary_header(&mut h, SAGEMAKER_BINARY).unwrap();
        assert_eq!(h.get(HEADER_LENGTH).unwrap(), "42");
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/vnd.sagemaker-triton.binary+json"),
        );
        assert!(binary_header(&mut h, SAGEMAKER_BINARY).is_err());
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(
                "application/vnd.sagemaker-triton.binary+json;json-header-size=-1",
            ),
        );
        assert!(binary_header(&mut h, SAGEMAKER_BINARY).is_err());
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        binary_header(&mut h, SAGEMAKER_BINARY).unwrap();
        assert!(h.get(HEADER_LENGTH).is_none());
    }

    #[test]
    fn segments_encoded() {
        assert_eq!(segment("simple"), "simple");
        assert_eq!(segment("a/b c%"), "a%2Fb%20c%25");
    }

    #[cfg(feature = "sagemaker")]
    #[test]
    fn multi_model_urls() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let model = r.join("abc123").join("model");
        std::fs::create_dir_all(model.join("simple").join("1")).unwrap();
        std::fs::write(model.join("simple").join("config.pbtxt"), "").unwrap();
        let url = format!("{}/abc123/model", r.display());
        assert_eq!(mme_model_dir(r, &url).unwrap(), model.join("simple").canonicalize().unwrap());
        assert_eq!(
            mme_model_dir(r, &format!("{url}/simple")).unwrap(),
            model.join("simple").canonicalize().unwrap()
        );
        for bad in [
            format!("{}/abc123/other", r.display()),
            format!("{}/ab-c/model", r.display()),
            format!("{url}/.."),
            format!("{url}/a/b"),
            "/proc/self/model".to_string(),
            format!("{}/../x/model", r.display()),
        ] {
            assert!(mme_model_dir(r, &bad).is_err(), "{bad}");
        }
        std::os::unix::fs::symlink("/etc", r.join("abc123").join("model").join("escape")).unwrap();
        assert!(mme_model_dir(r, &format!("{url}/escape")).is_err());
    }

    #[cfg(feature = "vertex")]
    #[test]
    fn vertex_routes_checked() {
        assert!(valid_vertex_route("/v1/endpoints/1/deployedModels/2:predict"));
        for bad in ["", "/", "predict", "/a/{b}", "/a/*b", "/a//b", "/a b"] {
            assert!(!valid_vertex_route(bad), "{bad}");
        }
    }
}
