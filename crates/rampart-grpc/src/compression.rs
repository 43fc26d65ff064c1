//! gRPC message compression. Requests may come compressed with `gzip` or `deflate` (tritonclient's
//! `compression_algorithm`); decompression keeps `--grpc-max-message-size`, so a compressed bomb is refused
//! while it inflates. A response is compressed, with the request's algorithm, when the request was
//! compressed, or always (with the first algorithm the client accepts) under
//! `--grpc-infer-response-compression-level` other than `none`.
//!
//! tonic compresses a response whenever the client's `grpc-accept-encoding` offers an enabled algorithm, and
//! gRPC clients offer them on every call; [`CompressionLayer`] narrows that offer to the request's own
//! encoding unless responses are always compressed.

use std::task::{Context, Poll};

use http::HeaderValue;

/// `tower::Layer` applying the response-compression policy above.
#[derive(Clone, Copy, Debug, Default)]
pub struct CompressionLayer {
    always: bool,
}

impl CompressionLayer {
    /// `always`: compress every response the client accepts compressed.
    pub fn new(always: bool) -> Self {
        CompressionLayer { always }
    }
}

impl<S> tower::Layer<S> for CompressionLayer {
    type Service = Compression<S>;
    fn layer(&self, inner: S) -> Compression<S> {
        Compression { inner, always: self.always }
    }
}

#[derive(Clone)]
pub struct Compression<S> {
    inner: S,
    always: bool,
}

impl<S, B> tower::Service<http::Request<B>> for Compression<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        if !self.always {
            narrow(req.headers_mut());
        }
        self.inner.call(req)
    }
}

/// Offers back only the request's own encoding (none for an uncompressed request).
fn narrow(headers: &mut http::HeaderMap) {
    let used = headers.get("grpc-encoding").and_then(|v| v.to_str().ok()).map(str::trim);
    match used {
        Some(e @ ("gzip" | "deflate")) => {
            let value = HeaderValue::from_static(if e == "gzip" { "gzip" } else { "deflate" });
            headers.insert("grpc-accept-encoding", value);
        }
        _ => {
            headers.remove("grpc-accept-encoding");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_is_compressed_only_like_its_request() {
        let mut h = http::HeaderMap::new();
        h.insert("grpc-accept-encoding", HeaderValue::from_static("identity,deflate,gzip"));
        narrow(&mut h);
        assert!(h.get("grpc-accept-encoding").is_none(), "an uncompressed request");
        h.insert("grpc-accept-encoding", HeaderValue::from_static("identity,deflate,gzip"));
        h.insert("grpc-encoding", HeaderValue::from_static("deflate"));
        narrow(&mut h);
        assert_eq!(h["grpc-accept-encoding"], "deflate");
    }
}
