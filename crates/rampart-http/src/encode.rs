//! Encoding an inference response: JSON, or a JSON header followed by binary output tensors
//! (docs/protocol.md, "JSON and binary tensor data").

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use rampart_core::InferResponse;
use rampart_types::tensor::split_bytes_elements;
use rampart_types::wire::WireElement;
use rampart_types::{DataType, Error, Result};

use crate::codec::{BinaryOutputs, HEADER_LENGTH, bad};

/// An output's elements as a JSON array, written straight from the wire bytes (no intermediate values).
/// FP32 is written as the double it widens to, like Triton (0.1f32 → 0.10000000149011612); NaN and infinities
/// become `null` (JSON has no such numbers).
pub(crate) struct JsonData<'a>(pub(crate) &'a rampart_types::Tensor);

impl serde::Serialize for JsonData<'_> {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::{Error as _, SerializeSeq};
        let t = self.0;
        let d = &t.data[..];
        macro_rules! numbers {
            ($T:ty, $x:ident => $write:expr) => {{
                let mut seq = ser.serialize_seq(Some(d.len() / <$T as WireElement>::SIZE))?;
                for chunk in d.chunks_exact(<$T as WireElement>::SIZE) {
                    let $x = <$T as WireElement>::read(chunk)
                        .map_err(|e| S::Error::custom(e.message()))?;
                    seq.serialize_element(&$write)?;
                }
                seq.end()
            }};
        }
        match t.datatype {
            DataType::Bool => numbers!(bool, x => x),
            DataType::Uint8 => numbers!(u8, x => x),
            DataType::Uint16 => numbers!(u16, x => x),
            DataType::Uint32 => numbers!(u32, x => x),
            DataType::Uint64 => numbers!(u64, x => x),
            DataType::Int8 => numbers!(i8, x => x),
            DataType::Int16 => numbers!(i16, x => x),
            DataType::Int32 => numbers!(i32, x => x),
            DataType::Int64 => numbers!(i64, x => x),
            DataType::Fp32 => numbers!(f32, x => x as f64),
            DataType::Fp64 => numbers!(f64, x => x),
            DataType::Fp16 | DataType::Bf16 => Err(S::Error::custom("checked before serializing")),
            DataType::Bytes => {
                let els =
                    split_bytes_elements(d, t.element_count(), &format!("output '{}'", t.name))
                        .map_err(|e| S::Error::custom(e.message()))?;
                let mut seq = ser.serialize_seq(Some(els.len()))?;
                for e in els {
                    seq.serialize_element(&*String::from_utf8_lossy(e))?;
                }
                seq.end()
            }
        }
    }
}

#[derive(serde::Serialize)]
#[serde(untagged)]
enum OutputParameters<'a> {
    Binary {
        binary_data_size: usize,
    },
    SharedMemory {
        shared_memory_region: &'a str,
        shared_memory_byte_size: u64,
        #[serde(skip_serializing_if = "is_zero")]
        shared_memory_offset: u64,
    },
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(serde::Serialize)]
struct OutputHeader<'a> {
    name: &'a str,
    datatype: &'a str,
    shape: &'a [i64],
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<OutputParameters<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<JsonData<'a>>,
}

#[derive(serde::Serialize)]
struct ResponseHeader<'a> {
    model_name: &'a str,
    #[serde(serialize_with = "as_string")]
    model_version: i64,
    #[serde(skip_serializing_if = "str::is_empty")]
    id: &'a str,
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    parameters: serde_json::Map<String, serde_json::Value>,
    outputs: Vec<OutputHeader<'a>>,
}

/// A number written as a JSON string, without an intermediate `String`.
fn as_string<S: serde::Serializer>(n: &i64, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.collect_str(n)
}

/// A core parameter value as JSON.
pub(crate) fn parameter(v: &rampart_core::ParamValue) -> serde_json::Value {
    use rampart_core::ParamValue;
    match v {
        ParamValue::Bool(b) => (*b).into(),
        ParamValue::Int(i) => (*i).into(),
        ParamValue::Uint(u) => (*u).into(),
        ParamValue::Double(d) => (*d).into(),
        ParamValue::String(s) => s.clone().into(),
    }
}

pub(crate) fn encode_response(r: &InferResponse, binary: &BinaryOutputs) -> Result<Response> {
    let mut outputs = Vec::with_capacity(r.outputs.len());
    // Binary outputs follow the JSON header in order: those not placed in shared memory.
    let tail = || {
        r.outputs
            .iter()
            .filter(|t| !r.shm_outputs.contains_key(&t.name) && binary.is_binary(&t.name))
            .map(|t| &t.data)
    };
    for t in &r.outputs {
        if let Some(place) = r.shm_outputs.get(&t.name) {
            outputs.push(OutputHeader {
                name: &t.name,
                datatype: t.datatype.as_str(),
                shape: &t.shape,
                parameters: Some(OutputParameters::SharedMemory {
                    shared_memory_region: &place.region,
                    shared_memory_byte_size: place.byte_size,
                    shared_memory_offset: place.offset,
                }),
                data: None,
            });
            continue;
        }
        let as_binary = binary.is_binary(&t.name);
        if !as_binary && matches!(t.datatype, DataType::Fp16 | DataType::Bf16) {
            return Err(bad(format!(
                "output '{}' has datatype {}, which cannot be returned in JSON; request it with binary_data: true",
                t.name, t.datatype
            )));
        }
        outputs.push(OutputHeader {
            name: &t.name,
            datatype: t.datatype.as_str(),
            shape: &t.shape,
            parameters: as_binary
                .then(|| OutputParameters::Binary { binary_data_size: t.data.len() }),
            data: (!as_binary).then_some(JsonData(t)),
        });
    }
    let root = ResponseHeader {
        model_name: &r.model_name,
        model_version: r.model_version,
        id: &r.id,
        parameters: r.parameters.iter().map(|(k, v)| (k.clone(), parameter(v))).collect(),
        outputs,
    };
    let tail_len: usize = tail().map(|t| t.len()).sum();
    let mut body = Vec::with_capacity(256 + tail_len);
    serde_json::to_writer(&mut body, &root)
        .map_err(|e| Error::internal(format!("cannot encode response: {e}")))?;
    if tail().next().is_none() {
        return Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response());
    }
    let header_len = body.len();
    for t in tail() {
        body.extend_from_slice(t);
    }
    let mut resp = ([(header::CONTENT_TYPE, "application/octet-stream")], body).into_response();
    resp.headers_mut().insert(HEADER_LENGTH, decimal(header_len));
    Ok(resp)
}

/// A number as a header value, formatted on the stack (one allocation, the value's own).
fn decimal(n: usize) -> HeaderValue {
    use std::io::Write as _;
    let mut digits = [0u8; 20];
    let mut at = &mut digits[..];
    let _ = write!(at, "{n}");
    let len = 20 - at.len();
    HeaderValue::from_bytes(&digits[..len]).expect("digits are a valid header value")
}
