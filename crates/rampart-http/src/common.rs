//! What the HTTP handlers share: the front end's options, the router state, and rendering answers
//! through the error table.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use rampart_core::{Server, parse_version};
use rampart_types::Error;
use serde_json::Value;

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

impl HttpOptions {
    /// The access checks of this front end.
    pub(crate) fn gate(&self) -> rampart_core::authorize::Gate {
        let (rules, models) = (self.restrictions.clone(), self.model_access.clone());
        rampart_core::authorize::Gate::new(rules, models, self.audit.clone())
    }
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
pub(crate) struct AppState {
    pub(crate) server: Server,
    /// The access checks (restricted categories, `--model-access`) and their audit.
    pub(crate) gate: rampart_core::authorize::Gate,
    pub(crate) options: HttpOptions,
}

/// Renders a core error through the error table (`IntoResponse` for `rampart_types::Error`).
pub(crate) fn error_response(e: &Error) -> Response {
    e.clone().into_response()
}

pub(crate) fn json_response(v: &Value) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

pub(crate) type HResult = Result<Response, Response>;

pub(crate) fn err(e: Error) -> Response {
    error_response(&e)
}

/// An unknown URL (Triton's body).
pub(crate) fn not_found_response() -> Response {
    Error::not_found("Not Found").into_response()
}

pub(crate) async fn method_not_allowed() -> Response {
    Error::new(rampart_types::Code::MethodNotAllowed, "Method Not Allowed").into_response()
}

/// The version path segment only matches digits in Triton; anything else is an unknown URL.
pub(crate) fn version_segment(v: &str) -> Result<Option<i64>, Response> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err(Error::not_found("Not Found")));
    }
    parse_version(v).map_err(err)
}
