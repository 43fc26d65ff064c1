//! Restricted-API enforcement for the HTTP front end: maps a path to its category
//! (docs/protocol.md, "HTTP endpoints", following Triton's dispatch order) and asks the core's
//! check, before routing, so a wrong method on a restricted endpoint is 403, not 405, as in Triton.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use rampart_core::access::{Category, Protocol};
use rampart_core::authorize::{Caller, Gate};
use rampart_tls::Peer;

/// The connection's client (address and certificate identity) of a request, put there by the connection
/// loop; absent in in-process tests.
pub(crate) fn peer_of(extensions: &axum::http::Extensions) -> Option<Peer> {
    extensions.get::<Peer>().cloned()
}

/// The core's view of the caller of an HTTP request to `path`.
pub(crate) fn caller<'a>(
    headers: &'a axum::http::HeaderMap,
    peer: Option<&'a Peer>,
    path: &'a str,
) -> Caller<'a> {
    let identity = peer.and_then(|p| p.identity.as_deref());
    Caller::new(Protocol::Http, headers, identity, peer.map(|p| p.addr), path)
}

use crate::common::error_response;

/// The category of an HTTP path, or `None` for paths Triton does not serve (they answer 404 unrestricted).
pub fn category(path: &str) -> Option<Category> {
    let rest = path.strip_prefix("/v2")?;
    if rest.is_empty() {
        return Some(Category::Metadata);
    }
    // The longest path served has six segments after /v2; a longer one has no category.
    let mut buf = [""; 7];
    let mut n = 0;
    for seg in rest.strip_prefix('/')?.split('/') {
        *buf.get_mut(n)? = seg;
        n += 1;
    }
    match &buf[..n] {
        ["health", "live" | "ready"] => Some(Category::Health),
        ["models", "stats"] => Some(Category::Statistics),
        ["logging"] => Some(Category::Logging),
        ["trace", "setting"] => Some(Category::Trace),
        // Triton: /v2/(system|cuda)sharedmemory(/region/<r>)?/(status|register|unregister)
        ["systemsharedmemory" | "cudasharedmemory", "status" | "register" | "unregister"] => {
            Some(Category::SharedMemory)
        }
        [
            "systemsharedmemory" | "cudasharedmemory",
            "region",
            r,
            "status" | "register" | "unregister",
        ] if !r.is_empty() => Some(Category::SharedMemory),
        // Triton: /v2/repository(/<repo>)?/(index|models/<m>/(load|unload))
        ["repository", "index"] => Some(Category::ModelRepository),
        ["repository", r, "index"] if !r.is_empty() => Some(Category::ModelRepository),
        ["repository", "models", m, "load" | "unload"] if !m.is_empty() => {
            Some(Category::ModelRepository)
        }
        ["repository", r, "models", m, "load" | "unload"] if !r.is_empty() && !m.is_empty() => {
            Some(Category::ModelRepository)
        }
        ["models", model, tail @ ..] if !model.is_empty() => {
            // Any version segment counts here; `raw_version_ok` refuses non-digit ones before routing, since the
            // router sees the percent-decoded value.
            let tail = match tail {
                ["versions", v, t @ ..] if !v.is_empty() => t,
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

/// Triton matches the version segment as raw `[0-9]+`; the router decodes `%31` into `1`, so anything else is
/// refused here, on the raw path.
fn raw_version_ok(path: &str) -> bool {
    let mut segs = path.split('/');
    let head: [Option<&str>; 6] = std::array::from_fn(|_| segs.next());
    match head {
        [Some(""), Some("v2"), Some("models"), Some(_), Some("versions"), Some(v)] => {
            !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit())
        }
        _ => true,
    }
}

/// Checks category `cat` for a request to `path`; a refusal is logged, audited and answered.
pub(crate) fn authorize(gate: &Gate, cat: Category, caller: &Caller<'_>) -> Result<(), Response> {
    gate.authorize(cat, caller).map_err(|e| error_response(&e))
}

pub(crate) async fn enforce(State(gate): State<Gate>, request: Request, next: Next) -> Response {
    // The path outlives the request only for the audit log.
    let uri = request.uri().clone();
    let path = uri.path();
    let peer = peer_of(request.extensions());

    if !raw_version_ok(path) {
        return crate::common::not_found_response();
    }
    // A request with a body answered with an error may leave that body unread: close the connection so the
    // client does not reuse it (the answer carries `Connection: close`).
    let has_body = request.headers().contains_key(axum::http::header::TRANSFER_ENCODING)
        || request
            .headers()
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0");
    let cat = category(path);
    let response = match cat {
        Some(cat) => match authorize(&gate, cat, &caller(request.headers(), peer.as_ref(), path)) {
            Ok(()) => json_rejection(next.run(request).await).await,
            Err(r) => return finish(r, has_body),
        },
        None => next.run(request).await,
    };
    if let Some(cat) = cat
        && gate.audits()
    {
        // The audit record needs no credentials, and the request has gone to its handler.
        let none = axum::http::HeaderMap::new();
        let status = response.status().as_u16().to_string();
        gate.audit_admin(cat, &caller(&none, peer.as_ref(), path), status);
    }
    finish(response, has_body)
}

/// Requests the router refuses before a handler runs (a path segment that is not UTF-8, say) get axum's
/// plain-text answer; it is rewritten as Triton's `{"error": …}` body with the same status.
async fn json_rejection(response: Response) -> Response {
    let plain = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/plain"));
    if !plain || !response.status().is_client_error() {
        return response;
    }
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 64 << 10).await.unwrap_or_default();
    let mut r = error_response(&rampart_types::Error::invalid_arg(
        String::from_utf8_lossy(&body).trim().to_string(),
    ));
    *r.status_mut() = status;
    r
}

fn finish(mut response: Response, has_body: bool) -> Response {
    if has_body && (response.status().is_client_error() || response.status().is_server_error()) {
        response
            .headers_mut()
            .insert(axum::http::header::CONNECTION, axum::http::HeaderValue::from_static("close"));
    }
    response
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
            ("/v2/models/m/versions/%31/infer", Some(Category::Inference)),
            ("/v2/repository/foo", None),
            ("/v2/repository", None),
            ("/v2/repository/r/index", Some(Category::ModelRepository)),
            ("/v2/repository/r/models/m/unload", Some(Category::ModelRepository)),
            ("/v2/systemsharedmemory/foo", None),
            ("/v2/cudasharedmemory", None),
            ("/v2/systemsharedmemory/region/r/status", Some(Category::SharedMemory)),
        ];
        for (path, want) in cases {
            assert_eq!(category(path), want, "{path}");
        }
        assert!(raw_version_ok("/v2/models/m/versions/12/infer"));
        assert!(!raw_version_ok("/v2/models/m/versions/%31/infer"));
        assert!(!raw_version_ok("/v2/models/m/versions//infer"));
        assert!(raw_version_ok("/v2/models/m/infer"));
    }
}
