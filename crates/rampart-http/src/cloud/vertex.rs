//! The Vertex AI front end (docs/protocol.md, "Vertex AI"): its predict and health routes, rewritten into
//! requests for the main router.

use super::*;

/// Vertex AI settings (from `AIP_*` environment variables and flags).
#[derive(Debug, Clone)]
pub struct VertexOptions {
    /// `AIP_PREDICT_ROUTE`.
    pub predict_route: String,
    /// `AIP_HEALTH_ROUTE`.
    pub health_route: String,
    /// `--vertex-ai-default-model`; unset: the repository's only model.
    pub default_model: Option<String>,
}

/// Whether `route` can be an axum route (a plain absolute path, no captures or wildcards).
pub fn valid_vertex_route(route: &str) -> bool {
    route.starts_with('/')
        && route.len() > 1
        && !route.contains("//")
        && route.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~/:@!$&'()+,;=".contains(&b))
}

#[derive(Clone)]
struct Vertex {
    main: Router,
    metrics: Option<Router>,
    server: Server,
    options: Arc<VertexOptions>,
}

/// The Vertex AI router. `main` is a KServe router; `metrics` the metrics router when metrics are on.
/// Routes must pass [`valid_vertex_route`] and differ.
pub fn vertex_router(
    main: Router,
    metrics: Option<Router>,
    server: Server,
    options: VertexOptions,
) -> Router {
    let (predict, health) = (options.predict_route.clone(), options.health_route.clone());
    let state = Vertex { main, metrics, server, options: Arc::new(options) };
    Router::new()
        .route(&health, get(vertex_health))
        .route(&predict, any(predict_route))
        .fallback(|| async { not_found_response() })
        .method_not_allowed_fallback(crate::common::method_not_allowed)
        .with_state(state)
}

async fn vertex_health(State(v): State<Vertex>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    bare_health(forward(v.main, parts, body, Method::GET, "/v2/health/ready", VERTEX_BINARY).await)
}

fn default_model(v: &Vertex) -> Result<String, Error> {
    if let Some(m) = &v.options.default_model {
        return Ok(m.clone());
    }
    let mut names: Vec<String> =
        v.server.repository_index(false).into_iter().map(|e| e.name).collect();
    names.dedup();
    match names.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(Error::invalid_arg(format!(
            "the Vertex AI predict route needs --vertex-ai-default-model: the repository has {} models",
            names.len()
        ))),
    }
}

async fn predict_route(State(v): State<Vertex>, request: Request) -> Response {
    let redirect = request.headers().get(VERTEX_REDIRECT).map(|h| h.to_str().map(str::to_string));
    if request.method() != Method::POST {
        if redirect.is_some() {
            return crate::common::method_not_allowed().await;
        }
        // Through the main router with the client's method: the inference credential is checked before the
        // method, as on the main front end (the model in the path does not matter for a 405).
        let model = default_model(&v).unwrap_or_else(|_| "default".into());
        let (parts, body) = request.into_parts();
        let method = parts.method.clone();
        return forward(
            v.main,
            parts,
            body,
            method,
            &format!("/v2/models/{}/infer", segment(&model)),
            VERTEX_BINARY,
        )
        .await;
    }
    let (parts, body) = request.into_parts();
    match redirect {
        Some(Ok(target)) => vertex_redirect(v, parts, body, &target).await,
        Some(Err(_)) => error_response(&Error::invalid_arg(
            "the X-Vertex-Ai-Triton-Redirect header is not valid text",
        )),
        None => match default_model(&v) {
            Ok(model) => {
                let path = format!("/v2/models/{}/infer", segment(&model));
                forward(v.main, parts, body, Method::POST, &path, VERTEX_BINARY).await
            }
            Err(e) => error_response(&e),
        },
    }
}

/// What a redirect may reach: reads, inference, shm status and the repository index. Registration and
/// model load/unload are refused whatever the credentials (CVE-2026-24206/24207).
async fn vertex_redirect(v: Vertex, parts: Parts, body: Body, target: &str) -> Response {
    let path = format!("/{}", target.trim_start_matches('/'));
    let path_only = path.split('?').next().unwrap_or_default().to_string();
    if path_only == "/metrics" {
        return match v.metrics {
            // As in Triton, the redirected metrics page is not restricted (it has no credentials anywhere).
            Some(m) => forward(m, parts, body, Method::GET, "/metrics", VERTEX_BINARY).await,
            None => not_found_response(),
        };
    }
    let segs: Vec<&str> = path_only.split('/').collect();
    let refused = match segs.as_slice() {
        ["", "v2", "systemsharedmemory" | "cudasharedmemory", .., "register" | "unregister"] => {
            Some("shared-memory registration")
        }
        ["", "v2", "repository", .., "load" | "unload"] => Some("model load and unload"),
        ["", "v2", "trace", ..]
        | ["", "v2", "logging"]
        | ["", "v2", "models", .., "trace", "setting"] => Some("trace and log settings"),
        ["", "v2", "models", .., "generate" | "generate_stream"] => Some("generate"),
        _ => None,
    };
    if let Some(what) = refused {
        return error_response(&Error::new(
            rampart_types::Code::PermissionDenied,
            format!(
                "{what} is not available through the Vertex AI redirect ('{}')",
                path_only.escape_debug()
            ),
        ));
    }
    let method = match crate::restrict::category(&path_only) {
        None => return not_found_response(),
        Some(Category::ModelRepository) => Method::POST,
        Some(Category::Inference) => Method::POST,
        Some(_) => Method::GET,
    };
    forward(v.main, parts, body, method, &path, VERTEX_BINARY).await
}
