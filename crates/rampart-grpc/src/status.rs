//! Statuses tonic decides before a handler runs, answered as Rampart's error table says:
//! - a message over `--grpc-max-message-size`: tonic says OUT_OF_RANGE, gRPC's own servers (and Triton, and
//!   clients) say RESOURCE_EXHAUSTED;
//! - bytes that are not a valid protobuf message: tonic says INTERNAL, but it is the client's mistake:
//!   INVALID_ARGUMENT, naming the RPC;
//! - an unknown method: UNIMPLEMENTED without a message, given one here.
//!
//! Unary calls carry these statuses in the response headers ([`StatusLayer`]); a stream meets them as an
//! error item of its request stream ([`request_error`]).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use rampart_types::{Code, Error};
use tonic::Status;

/// tonic's wording for a message over the decode limit.
fn too_large(message: &str) -> bool {
    message.contains("message length too large")
}

/// tonic's wording for bytes that are not a protobuf message.
fn undecodable(message: &str) -> bool {
    message.starts_with("failed to decode Protobuf message")
}

/// The status a client gets for a request message of `rpc` that tonic refused with `s`.
pub(crate) fn request_error(s: Status, rpc: &str) -> Status {
    let message = s.message();
    let error = if s.code() == tonic::Code::OutOfRange && too_large(message) {
        Error::new(Code::ResourceExhausted, message)
    } else if s.code() == tonic::Code::Internal && undecodable(message) {
        Error::invalid_arg(format!("{rpc}: the request is not a valid protobuf message: {message}"))
    } else {
        return s;
    };
    error.into()
}

/// The method name of a gRPC path (`/package.Service/Method`).
fn rpc_of(path: &str) -> String {
    path.rsplit('/').next().unwrap_or(path).to_string()
}

/// Rewrites the statuses tonic put in a unary response's headers.
fn fix_headers<B>(mut resp: http::Response<B>, rpc: &str) -> http::Response<B> {
    let h = resp.headers();
    let text = |name: &str| h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let (code, message) = (text("grpc-status"), text("grpc-message"));
    let Ok(code) = code.parse::<i32>() else { return resp };
    if code == Code::Unsupported.grpc_code() && message.is_empty() {
        let unknown = Status::unimplemented("unknown gRPC service or method");
        let _ = unknown.add_header(resp.headers_mut());
        return resp;
    }
    let decoded = percent_decode(&message);
    let original = Status::new(tonic::Code::from(code), decoded);
    let fixed = request_error(original.clone(), rpc);
    if fixed.code() != original.code() {
        let _ = fixed.add_header(resp.headers_mut());
    }
    resp
}

/// `grpc-message` is percent-encoded (gRPC's HTTP/2 mapping).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `tower::Layer` that answers tonic's own refusals of a call as the error table says (see the module
/// documentation). Put it outermost.
#[derive(Clone, Copy, Default)]
pub struct StatusLayer;

impl<S> tower::Layer<S> for StatusLayer {
    type Service = FixStatus<S>;
    fn layer(&self, inner: S) -> FixStatus<S> {
        FixStatus { inner }
    }
}

#[derive(Clone)]
pub struct FixStatus<S> {
    inner: S,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B, RB> tower::Service<http::Request<B>> for FixStatus<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    RB: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<S::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let rpc = rpc_of(req.uri().path());
        let answer = self.inner.call(req);
        Box::pin(async move { answer.await.map(|resp| fix_headers(resp, &rpc)) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn undecodable_requests_are_the_clients_mistake_and_name_the_rpc() {
        let s = Status::internal("failed to decode Protobuf message: invalid wire type value: 7");
        let fixed = request_error(s, "ModelInfer");
        assert_eq!(fixed.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            fixed.message(),
            "ModelInfer: the request is not a valid protobuf message: failed to decode Protobuf \
             message: invalid wire type value: 7"
        );
        let big = Status::out_of_range("decoded message length too large: found 9 bytes");
        assert_eq!(request_error(big, "ModelInfer").code(), tonic::Code::ResourceExhausted);
        let other = Status::internal("engine panicked");
        assert_eq!(request_error(other, "ModelInfer").code(), tonic::Code::Internal);
    }

    #[test]
    fn header_statuses_are_rewritten_with_the_method_name() {
        let mut resp = http::Response::new(());
        Status::internal("failed to decode Protobuf message: buffer underflow")
            .add_header(resp.headers_mut())
            .unwrap();
        let resp = fix_headers(resp, "ServerLive");
        assert_eq!(resp.headers()["grpc-status"], "3");
        let message = percent_decode(resp.headers()["grpc-message"].to_str().unwrap());
        assert!(
            message.starts_with("ServerLive: the request is not a valid protobuf message"),
            "{message}"
        );
        assert_eq!(percent_decode("a%20b%25c%2"), "a b%c%2");
    }
}
