//! Restricted-API enforcement for the HTTP front end: maps a path to its category (spec §1.1, following
//! Triton's dispatch order) and asks the core's check, before routing, so a wrong method on a restricted
//! endpoint is 403, not 405, as in Triton.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use rampart_core::access::{Category, Protocol, Restrictions};

use crate::routes::error_response;

/// The category of an HTTP path, or `None` for paths Triton does not serve (they answer 404 unrestricted).
pub fn category(path: &str) -> Option<Category> {
    let rest = path.strip_prefix("/v2")?;
    if rest.is_empty() {
        return Some(Category::Metadata);
    }
    let segs: Vec<&str> = rest.strip_prefix('/')?.split('/').collect();
    match segs.as_slice() {
        ["health", "live" | "ready"] => Some(Category::Health),
        ["models", "stats"] => Some(Category::Statistics),
        ["logging"] => Some(Category::Logging),
        ["trace", "setting"] => Some(Category::Trace),
        ["systemsharedmemory" | "cudasharedmemory", ..] => Some(Category::SharedMemory),
        ["repository", ..] => Some(Category::ModelRepository),
        ["models", model, tail @ ..] if !model.is_empty() => {
            let tail = match tail {
                ["versions", v, t @ ..] if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => t,
                t => t,
            };
            match tail {
                [] => Some(Category::Metadata),
                ["infer" | "generate" | "generate_stream"] => Some(Category::Inference),
                ["ready"] => Some(Category::Health),
                ["config"] => Some(Category::ModelConfig),
                ["stats"] => Some(Category::Statistics),
                ["trace", "setting"] => Some(Category::Trace),
                _ => None,
            }
        }
        _ => None,
    }
}

pub(crate) async fn enforce(State(rules): State<Arc<Restrictions>>, request: Request, next: Next) -> Response {
    if let Some(cat) = category(request.uri().path()) {
        let headers = request.headers();
        if let Err(denied) = rules.check(cat, |name| headers.get(name).map(|v| v.as_bytes())) {
            tracing::warn!(category = cat.name(), path = %request.uri().path().escape_debug(), "restricted API refused: missing or wrong credential");
            return error_response(&denied.to_error(Protocol::Http));
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_like_triton() {
        let cases = [
            ("/v2", Some(Category::Metadata)),
            ("/v2/health/live", Some(Category::Health)),
            ("/v2/models/m", Some(Category::Metadata)),
            ("/v2/models/m/versions/3", Some(Category::Metadata)),
            ("/v2/models/m/ready", Some(Category::Health)),
            ("/v2/models/m/versions/1/infer", Some(Category::Inference)),
            ("/v2/models/m/generate_stream", Some(Category::Inference)),
            ("/v2/models/m/config", Some(Category::ModelConfig)),
            ("/v2/models/stats", Some(Category::Statistics)),
            ("/v2/models/m/stats", Some(Category::Statistics)),
            ("/v2/models/m/trace/setting", Some(Category::Trace)),
            ("/v2/trace/setting", Some(Category::Trace)),
            ("/v2/logging", Some(Category::Logging)),
            ("/v2/repository/index", Some(Category::ModelRepository)),
            ("/v2/repository/models/m/load", Some(Category::ModelRepository)),
            ("/v2/systemsharedmemory/status", Some(Category::SharedMemory)),
            ("/v2/cudasharedmemory/region/r/register", Some(Category::SharedMemory)),
            ("/v2/nothing", None),
            ("/metrics", None),
            ("/v2/models/m/versions/x/infer", None),
        ];
        for (path, want) in cases {
            assert_eq!(category(path), want, "{path}");
        }
    }
}
