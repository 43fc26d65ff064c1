//! The inference route: the body read within its limits, decompressed and decoded, the model-access
//! check, the call into the core and the encoded answer.

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use rampart_types::Error;

use crate::codec;
use crate::common::{AppState, HResult, HttpOptions, err, version_segment};

pub(crate) async fn infer(
    State(s): State<AppState>,
    Path(model): Path<String>,
    request: axum::extract::Request,
) -> HResult {
    run_infer(s, model, None, request).await
}

pub(crate) async fn infer_v(
    State(s): State<AppState>,
    Path((model, v)): Path<(String, String)>,
    request: axum::extract::Request,
) -> HResult {
    let version = version_segment(&v)?;
    run_infer(s, model, version, request).await
}

/// `--model-access` for an inference request (the category check ran in the restrict layer); the caller's
/// principal on success.
pub(crate) fn check_model_access(
    s: &AppState,
    model: &str,
    parts: &axum::http::request::Parts,
) -> Result<Option<String>, Response> {
    let peer = crate::restrict::peer_of(&parts.extensions);
    let verified = peer.as_ref().is_some_and(|p| p.identity.is_some());
    if !s.gate.describes_callers(verified) {
        return Ok(None);
    }
    let caller = crate::restrict::caller(&parts.headers, peer.as_ref(), parts.uri.path());
    s.gate.authorize_model(&s.server, model, &caller).map_err(refuse_body)
}

/// A refused body is left unread: close the connection rather than let the server drain it.
pub(crate) fn refuse_body(e: Error) -> Response {
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

/// What Triton calls a body in its size error: `request JSON size`, or `request size` for a body of the
/// binary extension (Triton has no whole-body check there).
pub(crate) fn body_kind(headers: &HeaderMap) -> &'static str {
    if headers.contains_key(crate::codec::HEADER_LENGTH) {
        "request size"
    } else {
        "request JSON size"
    }
}

/// Triton's text for a body over `--http-max-input-size`; `n` is `more than {limit}` when the size is unknown.
fn too_large(kind: &str, n: &str, limit: usize) -> Error {
    Error::invalid_arg(format!(
        "{kind} of {n} bytes exceeds the maximum allowed input size of {limit} bytes. Use --http-max-input-size to increase the limit."
    ))
}

pub(crate) async fn read_limited(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Bytes, Error> {
    let too_big = |n: String| too_large(body_kind(headers), &n, limit);
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(len) = declared
        && len > limit as u64
    {
        return Err(too_big(len.to_string()));
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
pub(crate) enum Encoding {
    Identity,
    Gzip,
    Deflate,
}

pub(crate) fn content_encoding(headers: &HeaderMap) -> Result<Encoding, Response> {
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

/// Inflates a gzip or deflate (zlib) body, refusing it as soon as the output passes `limit` (`kind`: see
/// [`body_kind`]).
pub(crate) fn decompress(
    encoding: Encoding,
    body: &[u8],
    limit: usize,
    kind: &str,
) -> Result<Bytes, Error> {
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
        return Err(too_large(
            &format!("decompressed {kind}"),
            &format!("more than {limit}"),
            limit,
        ));
    }
    Ok(Bytes::from(out))
}

/// The body of an inference request: read within `--http-max-input-size` and its read timeout, then
/// inflated (gzip, deflate) within the same limit.
pub(crate) async fn read_request_body(
    headers: &HeaderMap,
    body: Body,
    options: &HttpOptions,
) -> Result<Bytes, Response> {
    let encoding = content_encoding(headers)?;
    let body = read_body(headers, body, options).await.map_err(refuse_body)?;
    if encoding == Encoding::Identity {
        return Ok(body);
    }
    let limit = options.max_input_size;
    let kind = body_kind(headers);
    tokio::task::spawn_blocking(move || decompress(encoding, &body, limit, kind))
        .await
        .map_err(|e| err(Error::internal(format!("decompression task failed: {e}"))))?
        .map_err(err)
}

pub(crate) async fn run_infer(
    s: AppState,
    model: String,
    version: Option<i64>,
    request: axum::extract::Request,
) -> HResult {
    let received = std::time::Instant::now();
    let (parts, body) = request.into_parts();
    let principal = check_model_access(&s, &model, &parts)?;
    let traceparent = parts.headers.get("traceparent").and_then(|v| v.to_str().ok());
    let trace = s.server.start_trace(&model, traceparent);
    let headers = parts.headers;
    let body = read_request_body(&headers, body, &s.options).await?;
    let header_len = codec::header_length(&headers, body.len())?;
    let decoded = match header_len {
        Some(0) => {
            let req = rampart_core::InferRequest {
                model_name: model.clone(),
                model_version: version,
                raw_input: Some(body),
                ..Default::default()
            };
            codec::Decoded { request: req, binary_outputs: codec::BinaryOutputs::All }
        }
        len => crate::decode::decode_request_with(
            &model,
            version,
            body,
            len.unwrap_or(usize::MAX),
            &s.options.json_limits,
        )?,
    };
    let mut request = decoded.request;
    request.principal = principal;
    if let Some(t) = &trace {
        t.stamp_at("HTTP_RECV_START", received);
        t.stamp("HTTP_RECV_END");
        request.trace = Some(t.clone());
    }
    let response = s.server.infer_unary(request, "HTTP end point").await?;
    // The response is encoded into one buffer here; the send stamps bracket that (hyper writes it after).
    if let Some(t) = &trace {
        t.stamp("HTTP_SEND_START");
    }
    let encoded = crate::encode::encode_response(&response, &decoded.binary_outputs).map_err(err);
    if let Some(t) = &trace {
        t.stamp("HTTP_SEND_END");
    }
    encoded
}
