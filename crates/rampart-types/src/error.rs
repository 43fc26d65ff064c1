//! The one error-code table.
//!
//! Triton's eight status codes plus `Unauthenticated` and `PermissionDenied`, and the single place that maps
//! them to an HTTP status and a gRPC code. Front ends never choose a status themselves: they render
//! `Error::code()` through this table.

use std::fmt;

/// A Triton status code (`TRITONSERVER_Error_Code`) plus the two codes access control needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    Unknown,
    Internal,
    NotFound,
    InvalidArg,
    Unavailable,
    Unsupported,
    AlreadyExists,
    Cancelled,
    Unauthenticated,
    PermissionDenied,
    /// Rampart's: the request conflicts with the server's state (SageMaker's "model already loaded": 409).
    Conflict,
    /// Rampart's: an HTTP method the route does not take (405; on gRPC an unknown method is UNIMPLEMENTED).
    MethodNotAllowed,
    /// Rampart's: a message over a size limit of the transport (gRPC RESOURCE_EXHAUSTED, as gRPC's own
    /// servers answer).
    ResourceExhausted,
}

impl Code {
    /// HTTP status as Triton's HTTP front end answers it (docs/protocol.md, "Status codes").
    pub const fn http_status(self) -> u16 {
        match self {
            Code::Internal => 500,
            Code::NotFound => 404,
            Code::Unavailable => 503,
            Code::Unsupported => 501,
            Code::Unauthenticated => 401,
            Code::PermissionDenied => 403,
            Code::Conflict => 409,
            Code::MethodNotAllowed => 405,
            Code::Unknown
            | Code::InvalidArg
            | Code::AlreadyExists
            | Code::Cancelled
            | Code::ResourceExhausted => 400,
        }
    }

    /// HTTP status of a health check that answers "no" (`/v2/health/live`, `/v2/health/ready`): Triton
    /// answers 400 with no body; it is not an error of the request.
    pub const NOT_READY_HTTP_STATUS: u16 = 400;

    /// gRPC status code number (`google.rpc.Code`) as Triton's gRPC front end answers it
    /// (docs/protocol.md, "Status codes").
    pub const fn grpc_code(self) -> i32 {
        match self {
            Code::Cancelled => 1,
            Code::Unknown => 2,
            Code::InvalidArg => 3,
            Code::NotFound => 5,
            Code::AlreadyExists | Code::Conflict => 6,
            Code::ResourceExhausted => 8,
            Code::PermissionDenied => 7,
            Code::Unsupported | Code::MethodNotAllowed => 12,
            Code::Internal => 13,
            Code::Unavailable => 14,
            Code::Unauthenticated => 16,
        }
    }
}

/// An error with a Triton status code and a message meant for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    code: Code,
    message: String,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Error { code, message: message.into() }
    }
    pub fn invalid_arg(message: impl Into<String>) -> Self {
        Self::new(Code::InvalidArg, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(Code::NotFound, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Code::Internal, message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(Code::Unavailable, message)
    }
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(Code::Unsupported, message)
    }
    pub fn code(&self) -> Code {
        self.code
    }
    pub fn message(&self) -> &str {
        &self.message
    }
    /// Prefixes the message with context, keeping the code.
    pub fn context(self, prefix: impl fmt::Display) -> Self {
        Error { code: self.code, message: format!("{prefix}: {}", self.message) }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// An error as Triton's HTTP front end answers it: the status from the table, body `{"error": "…"}`.
#[cfg(feature = "axum")]
impl axum::response::IntoResponse for Error {
    fn into_response(self) -> axum::response::Response {
        use axum::http::{StatusCode, header};
        let status = StatusCode::from_u16(self.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::json!({ "error": self.message }).to_string();
        (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
    }
}

/// So an HTTP handler whose error is a ready response can use `?` on a core result.
#[cfg(feature = "axum")]
impl From<Error> for axum::response::Response {
    fn from(e: Error) -> Self {
        axum::response::IntoResponse::into_response(e)
    }
}

/// An error as Triton's gRPC front end answers it: the code from the table, the message as is.
#[cfg(feature = "tonic")]
impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        tonic::Status::new(tonic::Code::from(e.code.grpc_code()), e.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_matches_triton() {
        let cases = [
            (Code::Unknown, 400, 2),
            (Code::Internal, 500, 13),
            (Code::NotFound, 404, 5),
            (Code::InvalidArg, 400, 3),
            (Code::Unavailable, 503, 14),
            (Code::Unsupported, 501, 12),
            (Code::AlreadyExists, 400, 6),
            (Code::Cancelled, 400, 1),
            (Code::Unauthenticated, 401, 16),
            (Code::PermissionDenied, 403, 7),
            (Code::Conflict, 409, 6),
            (Code::MethodNotAllowed, 405, 12),
            (Code::ResourceExhausted, 400, 8),
        ];
        for (code, http, grpc) in cases {
            assert_eq!(code.http_status(), http, "{code:?}");
            assert_eq!(code.grpc_code(), grpc, "{code:?}");
        }
    }

    #[test]
    fn context_keeps_code() {
        let e = Error::invalid_arg("bad").context("model 'm'");
        assert_eq!(e.code(), Code::InvalidArg);
        assert_eq!(e.message(), "model 'm': bad");
    }
}
