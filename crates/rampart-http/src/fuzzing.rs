//! Entry points for the cargo-fuzz targets in `fuzz/` (hidden; not a stable API). They drive the crate-private
//! codec exactly as the infer route does, and panic — a fuzzer finding — when a decoded request breaks one of
//! the codec's own promises:
//!
//! * the fast decoder of well-formed headers (`decode.rs`) either declines a body or decodes it exactly
//!   as the general decoder does;
//! * an input given as JSON `data` holds exactly the bytes its datatype and shape call for;
//! * echoing the decoded inputs back as outputs encodes, in binary form, to a body that decodes again to the
//!   very same tensors (the JSON header / binary tail splitter and `binary_data_size` both ways);
//! * echoing them in JSON form works for every JSON-decoded input and decodes again to the same values.

use std::collections::HashMap;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use axum::body::{Body, Bytes};
use axum::response::Response;
use http_body_util::BodyExt;
use rampart_core::{InferResponse, InputTensor, Parameters};
use rampart_types::tensor::{element_count, fixed_byte_size, split_bytes_elements};
use rampart_types::{DataType, Tensor};
use serde_json::Value;

use crate::codec::{BinaryOutputs, HEADER_LENGTH};

/// Decodes `body` as an HTTP inference request, the first `header_len` bytes being the JSON header and the rest
/// the binary tensor data (`None`: no `Inference-Header-Content-Length`, the whole body is JSON). A header
/// length past the body is refused, and 0 is left out (the route hands both to other code). Then re-encodes
/// whatever decoded. Returns whether the request decoded.
#[doc(hidden)]
pub fn decode_infer_request(body: &[u8], header_len: Option<usize>) -> bool {
    if matches!(header_len, Some(n) if n == 0 || n > body.len()) {
        return false;
    }
    // The fast decoder of well-formed headers declines or agrees with the general one.
    let tail_from = header_len.unwrap_or(body.len());
    crate::decode::took_and_agreed(&Bytes::copy_from_slice(body), tail_from);
    let Ok(decoded) = crate::decode::decode_request(
        "fuzz",
        Some(1),
        Bytes::copy_from_slice(body),
        header_len.unwrap_or(usize::MAX),
    ) else {
        return false;
    };
    let inputs = &decoded.request.inputs;

    // Which inputs came from JSON `data` (the others from the binary tail): read the header again.
    let header = &body[..header_len.unwrap_or(body.len())];
    let root: Value = serde_json::from_slice(header).expect("the header parsed once already");
    let from_json: Vec<bool> = root["inputs"]
        .as_array()
        .expect("decoded requests have an inputs array")
        .iter()
        .map(|i| i.get("data").is_some())
        .collect();
    assert_eq!(from_json.len(), inputs.len(), "one decoded tensor per JSON input");
    for (t, &json_data) in inputs.iter().zip(&from_json) {
        if json_data {
            assert!(
                consistent(t),
                "JSON input '{}' ({} {:?}) decoded to {} inconsistent bytes",
                t.name,
                t.datatype,
                t.shape,
                t.data.len()
            );
        }
    }

    let echo = InferResponse {
        model_name: "fuzz".into(),
        model_version: 1,
        id: decoded.request.id.clone(),
        parameters: Parameters::new(),
        outputs: inputs
            .iter()
            .map(|t| Tensor::new(t.name.clone(), t.datatype, t.shape.clone(), t.data.clone()))
            .collect(),
        shm_outputs: Default::default(),
    };

    // As the route answers (the request's binary_data_output / binary_data choices): must not panic.
    if let Ok(r) = crate::encode::encode_response(&echo, &decoded.binary_outputs) {
        let _ = body_bytes(r);
    }

    // All outputs binary: always encodes, and decodes back to identical tensors.
    let r = crate::encode::encode_response(&echo, &BinaryOutputs::All)
        .expect("binary responses always encode");
    // (no binary tail at all when there is no output: then the whole body is JSON)
    let hl: Option<usize> =
        r.headers().get(HEADER_LENGTH).map(|v| v.to_str().unwrap().parse().unwrap());
    let resp = body_bytes(r);
    let hl = hl.unwrap_or(resp.len());
    let back =
        redecode(&resp, hl).unwrap_or_else(|e| panic!("binary echo does not decode again: {e}"));
    assert_eq!(back.len(), inputs.len());
    for (a, b) in inputs.iter().zip(&back) {
        assert_eq!(
            (&a.name, a.datatype, &a.shape),
            (&b.name, b.datatype, &b.shape),
            "binary echo changed a tensor"
        );
        assert_eq!(a.data, b.data, "binary echo changed the data of '{}'", a.name);
    }

    // All outputs JSON: encodes when every tensor came from JSON, and decodes back to the very same bytes (the
    // one exception: an FP32 value that overflowed to ±inf renders as null and cannot come back).
    let json_only = BinaryOutputs::Some { default: false, per_output: HashMap::new() };
    let r = crate::encode::encode_response(&echo, &json_only);
    if from_json.iter().all(|&j| j) {
        let resp =
            body_bytes(r.unwrap_or_else(|e| {
                panic!("JSON-decoded inputs do not encode as JSON outputs: {e}")
            }));
        match redecode(&resp, resp.len()) {
            Ok(back) => {
                assert_eq!(back.len(), inputs.len());
                for (a, b) in inputs.iter().zip(&back) {
                    assert_eq!(
                        (&a.name, a.datatype, &a.shape),
                        (&b.name, b.datatype, &b.shape),
                        "JSON echo changed a tensor"
                    );
                    assert_eq!(
                        a.data, b.data,
                        "JSON echo changed the data of '{}' ({})",
                        a.name, a.datatype
                    );
                }
            }
            Err(e) => {
                assert!(inputs.iter().any(has_non_finite), "JSON echo does not decode again: {e}")
            }
        }
    }
    true
}

/// Data length agrees with datatype and shape.
fn consistent(t: &InputTensor) -> bool {
    let Ok(n) = element_count(&t.shape, &t.name, None) else { return false };
    match fixed_byte_size(t.datatype, n, &t.name, None) {
        Ok(Some(bytes)) => t.data.len() as u64 == bytes,
        Ok(None) => split_bytes_elements(&t.data, n, "fuzz").is_ok(),
        Err(_) => false,
    }
}

fn floats(t: &InputTensor) -> Option<Vec<f64>> {
    match t.datatype {
        DataType::Fp32 => Some(
            t.data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
                .collect(),
        ),
        DataType::Fp64 => Some(
            t.data.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect(),
        ),
        _ => None,
    }
}

fn has_non_finite(t: &InputTensor) -> bool {
    floats(t).is_some_and(|v| v.iter().any(|x| !x.is_finite()))
}

/// Turns an encoded response (JSON header of `header_len` bytes + binary tail) into a request with its outputs
/// as inputs, and decodes that. Done on the text (the response's one `"outputs":` key becomes `"inputs":`; the
/// decoder ignores `model_name` and `model_version`) so the numbers are parsed exactly once, as a client's are.
fn redecode(resp: &[u8], header_len: usize) -> rampart_types::Result<Vec<InputTensor>> {
    const FROM: &[u8] = b"\"outputs\":";
    let header = &resp[..header_len];
    // Inside a JSON string every quote is escaped, so the key cannot match anywhere else.
    let at: Vec<usize> = header
        .windows(FROM.len())
        .enumerate()
        .filter(|(_, w)| *w == FROM)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(at.len(), 1, "a response header has exactly one outputs key");
    let mut body = Vec::with_capacity(resp.len());
    body.extend_from_slice(&header[..at[0]]);
    body.extend_from_slice(b"\"inputs\":");
    body.extend_from_slice(&header[at[0] + FROM.len()..]);
    let new_header_len = body.len();
    body.extend_from_slice(&resp[header_len..]);
    crate::decode::decode_request("fuzz", Some(1), Bytes::from(body), new_header_len)
        .map(|d| d.request.inputs)
}

/// The body of a response the codec built (always a full, in-memory body: ready at the first poll).
fn body_bytes(r: Response) -> Bytes {
    let body: Body = r.into_body();
    let mut fut = pin!(body.collect());
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..16 {
        if let Poll::Ready(res) = fut.as_mut().poll(&mut cx) {
            return res.expect("in-memory bodies cannot fail").to_bytes();
        }
    }
    panic!("an in-memory response body was not ready");
}
