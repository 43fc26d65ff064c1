//! JSON and binary-tensor (docs/protocol.md, "JSON and binary tensor data") decoding and encoding
//! of inference requests and responses.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::http::HeaderMap;
use rampart_core::{InferRequest, InputTensor, ParamValue, Parameters, RequestedOutput, ShmRef};
use rampart_types::half;
use rampart_types::tensor::{element_count, encode_bytes_elements, fixed_byte_size};
use rampart_types::wire::WireElement;
use rampart_types::{DataType, Error, Result, with_element_type};
use serde_json::{Map, Value};

pub(crate) const HEADER_LENGTH: &str = "inference-header-content-length";
/// Tensor `data` nesting limit (Triton's).
/// Triton's nesting limit for `data` arrays; `--http-max-json-depth` may lower it.
pub const MAX_DATA_DEPTH: usize = 100;

/// Limits on one JSON document (`--http-max-json-depth`, `--http-max-json-values`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonLimits {
    /// Nesting of an input's `data` arrays (at most [`MAX_DATA_DEPTH`]).
    pub max_depth: usize,
    pub max_values: usize,
    pub max_objects: usize,
}

impl Default for JsonLimits {
    fn default() -> Self {
        JsonLimits {
            max_depth: MAX_DATA_DEPTH,
            max_values: MAX_JSON_VALUES,
            max_objects: MAX_JSON_OBJECTS,
        }
    }
}

/// Which outputs go back in binary form.
pub(crate) enum BinaryOutputs {
    All,
    /// Default for outputs not listed, then per-output overrides.
    Some {
        default: bool,
        per_output: HashMap<String, bool>,
    },
}

impl BinaryOutputs {
    pub(crate) fn is_binary(&self, name: &str) -> bool {
        match self {
            BinaryOutputs::All => true,
            BinaryOutputs::Some { default, per_output } => *per_output.get(name).unwrap_or(default),
        }
    }
}

pub(crate) struct Decoded {
    pub request: InferRequest,
    pub binary_outputs: BinaryOutputs,
}

/// `Inference-Header-Content-Length`: `None` when absent (the whole body is JSON).
pub(crate) fn header_length(headers: &HeaderMap, body_len: usize) -> Result<Option<usize>> {
    let Some(v) = headers.get(HEADER_LENGTH) else { return Ok(None) };
    let s = v.to_str().unwrap_or("");
    let t = s.trim();
    let n: i64 = t.parse::<i32>().map(i64::from).map_err(|_| {
        let digits = t.strip_prefix(['+', '-']).unwrap_or(t);
        let range = if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            format!("value is out of range [ {}, {} ], ", i32::MIN, i32::MAX)
        } else {
            String::new()
        };
        Error::invalid_arg(format!(
            "Unable to parse Inference-Header-Content-Length, {range}got: {s}"
        ))
    })?;
    if n < 0 || n as u64 > body_len as u64 {
        return Err(Error::invalid_arg(format!(
            "inference header size should be in range (0, {body_len}), got: {n}"
        )));
    }
    Ok(Some(n as usize))
}

pub(crate) fn bad(msg: impl Into<String>) -> Error {
    Error::invalid_arg(msg)
}

fn parse_param(key: &str, v: &Value) -> Result<ParamValue> {
    Ok(match v {
        Value::Bool(b) => ParamValue::Bool(*b),
        Value::String(s) => ParamValue::String(s.clone()),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                ParamValue::Uint(u)
            } else if let Some(i) = n.as_i64() {
                ParamValue::Int(i)
            } else {
                ParamValue::Double(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        _ => {
            return Err(bad(format!(
                "parameter '{key}' has invalid type. It should be either 'int', 'bool', 'double' or 'string'."
            )));
        }
    })
}

fn parse_params(v: Option<&Value>, what: &str) -> Result<Parameters> {
    match v {
        None => Ok(Parameters::new()),
        Some(Value::Object(m)) => {
            m.iter().map(|(k, v)| Ok((k.clone(), parse_param(k, v)?))).collect()
        }
        Some(_) => {
            Err(bad(format!("Unable to parse 'parameters' of {what}: expected a JSON object")))
        }
    }
}

fn str_field<'a>(o: &'a Map<String, Value>, key: &str, what: &str) -> Result<&'a str> {
    match o.get(key) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(bad(format!("Unable to parse '{key}' of {what}: expected a string"))),
        None => Err(bad(format!("{what} is missing required field '{key}'"))),
    }
}

/// Most JSON values (numbers, strings, arrays, objects, …) one request document may hold. A parsed value
/// takes 32 bytes or more however short its text (`1,` is two bytes), so this bounds the memory a document
/// can make the parser take, far below what the body cap alone would allow. Large tensors belong in the
/// binary extension.
pub const MAX_JSON_VALUES: usize = 4 << 20;
/// Most JSON objects in one document: each costs hundreds of bytes parsed, and a request needs a few per
/// input and output.
pub const MAX_JSON_OBJECTS: usize = 1 << 16;

/// Counts the values and objects of a JSON text in one pass (strings skipped, escapes honoured), and refuses
/// the document before it is parsed when either count is over its limit. Malformed text is left to the
/// parser's own error.
pub fn check_json_size(text: &[u8], limits: &JsonLimits) -> Result<()> {
    let (mut values, mut objects) = (1usize, 0usize);
    let mut in_string = false;
    let mut escaped = false;
    for &b in text {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b',' | b'[' => values += 1,
            b'{' => {
                values += 1;
                objects += 1;
            }
            _ => {}
        }
    }
    if values > limits.max_values || objects > limits.max_objects {
        return Err(bad(format!(
            "the request JSON has too many values (at most {} values and {} objects); send large tensors with the binary tensor extension",
            limits.max_values, limits.max_objects
        )));
    }
    Ok(())
}

/// The general decoder alone, after the size check (codec's own tests; the route goes through
/// `decode.rs`).
#[cfg(test)]
fn decode_request(
    model: &str,
    version: Option<i64>,
    body: Bytes,
    header_len: usize,
) -> Result<Decoded> {
    let header_len = header_len.min(body.len());
    check_json_size(&body[..header_len], &JsonLimits::default())?;
    decode_general(model, version, body, header_len, &JsonLimits::default())
}

/// The decoder of any header, well-formed or not, through a `serde_json::Value` tree: the owner of every
/// error message (`decode.rs` handles well-formed headers without the tree, and calls this for the rest).
pub(crate) fn decode_general(
    model: &str,
    version: Option<i64>,
    body: Bytes,
    header_len: usize,
    limits: &JsonLimits,
) -> Result<Decoded> {
    let header = &body[..header_len];
    let v: Value = serde_json::from_slice(header)
        .map_err(|e| bad(format!("failed to parse the request JSON buffer: {e}")))?;
    let Value::Object(root) = v else {
        return Err(bad(
            "failed to parse the request JSON buffer: the request must be a JSON object",
        ));
    };
    let id = match root.get("id") {
        None => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(bad("Unable to parse 'id': expected a string")),
    };
    let parameters = parse_params(root.get("parameters"), "the request")?;
    let default_binary = match parameters.get("binary_data_output") {
        None => false,
        Some(ParamValue::Bool(b)) => *b,
        Some(_) => return Err(bad("Unable to parse 'binary_data_output': expected a boolean")),
    };
    let Some(Value::Array(inputs_json)) = root.get("inputs") else {
        return Err(bad("Unable to parse 'inputs': the request must contain an 'inputs' array"));
    };
    let mut rest = body.slice(header_len..);
    let mut inputs = Vec::with_capacity(inputs_json.len());
    for (i, input) in inputs_json.iter().enumerate() {
        let Value::Object(o) = input else {
            return Err(bad(format!("Unable to parse 'inputs': element {i} is not a JSON object")));
        };
        let name = str_field(o, "name", &format!("input {i}"))?.to_string();
        let what = format!("input '{name}'");
        let dt_s = str_field(o, "datatype", &what)?;
        let datatype = DataType::from_protocol(dt_s).ok_or_else(|| {
            bad(format!("invalid datatype for input {name}: '{dt_s}' is not a Triton data type"))
        })?;
        let shape = parse_shape(o.get("shape"), &what)?;
        let params = parse_params(o.get("parameters"), &what)?;
        let binary_size = match params.get("binary_data_size") {
            None => None,
            Some(ParamValue::Uint(n)) => Some(*n),
            Some(_) => {
                return Err(bad(format!(
                    "Unable to parse 'binary_data_size' of {what}: expected an unsigned integer"
                )));
            }
        };
        let shm = ShmRef::from_parameters(&params, &what)?;
        let data = o.get("data");
        let set: Vec<&str> = [
            ("'data'", data.is_some()),
            ("'binary_data_size'", binary_size.is_some()),
            ("'shared_memory_region'", shm.is_some()),
        ]
        .into_iter()
        .filter_map(|(n, on)| on.then_some(n))
        .collect();
        if set.len() != 1 {
            let but = if set.is_empty() {
                "no field is set".to_string()
            } else {
                format!("set {}", set.join(" "))
            };
            return Err(bad(format!(
                "Input must set only one of the following fields: 'data', 'binary_data_size' in 'parameters', 'shared_memory_region' in 'parameters'. But {but} for input '{name}'"
            )));
        }
        let bytes = if shm.is_some() {
            Bytes::new()
        } else if let Some(n) = binary_size {
            if (rest.len() as u64) < n {
                return Err(bad(format!(
                    "unexpected size for input '{name}', expecting {} additional bytes for model '{model}'",
                    n - rest.len() as u64
                )));
            }
            rest.split_to(n as usize)
        } else {
            json_to_bytes(data.expect("checked above"), datatype, &shape, &name, limits.max_depth)?
        };
        inputs.push(InputTensor { name, datatype, shape, data: bytes, shm });
    }
    if !rest.is_empty() {
        return Err(bad(format!("unexpected additional input data for model '{model}'")));
    }
    let mut outputs = Vec::new();
    let mut per_output = HashMap::new();
    match root.get("outputs") {
        None => {}
        Some(Value::Array(list)) => {
            for (i, out) in list.iter().enumerate() {
                let Value::Object(o) = out else {
                    return Err(bad(format!(
                        "Unable to parse 'outputs': element {i} is not a JSON object"
                    )));
                };
                let name = str_field(o, "name", &format!("output {i}"))?.to_string();
                let what = format!("output '{name}'");
                let params = parse_params(o.get("parameters"), &what)?;
                let shm = ShmRef::from_parameters(&params, &what)?;
                match params.get("binary_data") {
                    None => {}
                    Some(ParamValue::Bool(b)) => {
                        if *b && shm.is_some() {
                            return Err(bad(format!(
                                "Output can't set both 'shared_memory_region' and 'binary_data' for {what}"
                            )));
                        }
                        per_output.insert(name.clone(), *b);
                    }
                    Some(_) => {
                        return Err(bad(format!(
                            "Unable to parse 'binary_data' of {what}: expected a boolean"
                        )));
                    }
                }
                let classification = match params.get("classification") {
                    None | Some(ParamValue::Uint(0)) => None,
                    Some(ParamValue::Uint(n)) => Some(*n),
                    Some(_) => {
                        return Err(bad(format!(
                            "Unable to parse 'classification' of {what}: expected an unsigned integer"
                        )));
                    }
                };
                outputs.push(RequestedOutput { name, classification, shm });
            }
        }
        Some(_) => return Err(bad("Unable to parse 'outputs': expected an array")),
    }
    Ok(Decoded {
        request: InferRequest {
            model_name: model.to_string(),
            model_version: version,
            id,
            parameters,
            inputs,
            outputs,
            ..InferRequest::default()
        },
        binary_outputs: BinaryOutputs::Some { default: default_binary, per_output },
    })
}

fn parse_shape(v: Option<&Value>, what: &str) -> Result<Vec<i64>> {
    let Some(Value::Array(dims)) = v else {
        return Err(bad(format!(
            "Unable to parse 'shape' of {what}: expected an array of non-negative integers"
        )));
    };
    dims.iter()
        .map(|d| {
            d.as_u64().filter(|&u| u <= i64::MAX as u64).map(|u| u as i64).ok_or_else(|| {
                bad(format!(
                    "Unable to parse 'shape' of {what}: dimension {d} is not a non-negative integer"
                ))
            })
        })
        .collect()
}

fn flatten<'a>(
    v: &'a Value,
    depth: usize,
    max_depth: usize,
    out: &mut Vec<&'a Value>,
    name: &str,
) -> Result<()> {
    if depth > max_depth {
        return Err(bad(format!(
            "Unable to parse 'data' of input '{name}': JSON nesting depth exceeds maximum allowed limit ({max_depth})"
        )));
    }
    match v {
        Value::Array(a) => a.iter().try_for_each(|x| flatten(x, depth + 1, max_depth, out, name)),
        x => {
            out.push(x);
            Ok(())
        }
    }
}

/// A JSON number as element type `T`, refusing values that do not fit (Triton truncates silently).
trait FromJson: WireElement {
    fn from_json(v: &Value) -> Option<Self>;
}

macro_rules! int_from_json {
    ($($t:ty),*) => {$(
        impl FromJson for $t {
            fn from_json(v: &Value) -> Option<Self> {
                if let Some(u) = v.as_u64() { return <$t>::try_from(u).ok(); }
                if let Some(i) = v.as_i64() { return <$t>::try_from(i).ok(); }
                None
            }
        }
    )*};
}
int_from_json!(u8, u16, u32, u64, i8, i16, i32, i64);

impl FromJson for f32 {
    fn from_json(v: &Value) -> Option<Self> {
        v.as_f64().map(|f| f as f32)
    }
}
impl FromJson for f64 {
    fn from_json(v: &Value) -> Option<Self> {
        v.as_f64()
    }
}
impl FromJson for bool {
    fn from_json(v: &Value) -> Option<Self> {
        v.as_bool()
    }
}
impl FromJson for half::f16 {
    fn from_json(_: &Value) -> Option<Self> {
        None
    }
}
impl FromJson for half::bf16 {
    fn from_json(_: &Value) -> Option<Self> {
        None
    }
}

fn encode_json<T: FromJson>(values: &[&Value], name: &str, dt: DataType) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(values.len() * T::SIZE);
    for (i, v) in values.iter().enumerate() {
        let x = T::from_json(v).ok_or_else(|| {
            bad(format!("Unable to parse 'data' of input '{name}': element {i} ({v}) is not a valid {dt} value"))
        })?;
        x.write(&mut out);
    }
    Ok(out)
}

pub(crate) fn json_to_bytes(
    data: &Value,
    dt: DataType,
    shape: &[i64],
    name: &str,
    max_depth: usize,
) -> Result<Bytes> {
    if matches!(dt, DataType::Fp16 | DataType::Bf16) {
        return Err(bad(format!(
            "receiving {dt} data via JSON is not supported. Please use the binary data format for input {name}"
        )));
    }
    let expected = element_count(shape, name, None)?;
    fixed_byte_size(dt, expected, name, None)?;
    let mut flat = Vec::new();
    flatten(data, 0, max_depth, &mut flat, name)?;
    if flat.len() as u64 != expected {
        return Err(bad(format!(
            "Unable to parse 'data' of input '{name}': shape does not match true shape of 'data' field (shape {shape:?} has {expected} elements, 'data' has {})",
            flat.len()
        )));
    }
    let bytes = with_element_type!(dt, T => encode_json::<T>(&flat, name, dt)?, bytes => {
        let mut els = Vec::with_capacity(flat.len());
        for (i, v) in flat.iter().enumerate() {
            let s = v.as_str().ok_or_else(|| bad(format!("Unable to parse 'data' of input '{name}': element {i} is not a string, as BYTES requires")))?;
            els.push(s.as_bytes());
        }
        encode_bytes_elements(&els)
    });
    Ok(Bytes::from(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use serde_json::json;

    fn hm(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(HEADER_LENGTH, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn header_length_errors() {
        assert_eq!(header_length(&HeaderMap::new(), 10).unwrap(), None);
        assert_eq!(header_length(&hm("5"), 10).unwrap(), Some(5));
        let msg = |v: &str| header_length(&hm(v), 10).unwrap_err().message().to_string();
        assert_eq!(msg("abc"), "Unable to parse Inference-Header-Content-Length, got: abc");
        assert_eq!(msg("+-1"), "Unable to parse Inference-Header-Content-Length, got: +-1");
        assert!(msg("-1").contains("range (0, 10)"));
        assert!(msg("11").contains("got: 11"));
        let range = "Unable to parse Inference-Header-Content-Length, value is out of range [ -2147483648, 2147483647 ], got:";
        assert_eq!(msg("99999999999"), format!("{range} 99999999999"));
        assert_eq!(msg("-2147483649"), format!("{range} -2147483649"));
    }

    #[test]
    fn json_data_range_checked() {
        let v = json!([1, 2, 300]);
        assert!(json_to_bytes(&v, DataType::Uint8, &[3], "x", MAX_DATA_DEPTH).is_err());
        let ok =
            json_to_bytes(&json!([[1, 2], [3, 4]]), DataType::Int16, &[2, 2], "x", MAX_DATA_DEPTH)
                .unwrap();
        assert_eq!(ok.len(), 8);
        assert!(json_to_bytes(&json!([1.5]), DataType::Int32, &[1], "x", MAX_DATA_DEPTH).is_err());
        assert!(
            json_to_bytes(&json!([1, 2]), DataType::Int32, &[3], "x", MAX_DATA_DEPTH)
                .unwrap_err()
                .message()
                .contains("shape does not match")
        );
        assert!(json_to_bytes(&json!([1]), DataType::Fp16, &[1], "x", MAX_DATA_DEPTH).is_err());
        let mut deep = json!(1);
        for _ in 0..101 {
            deep = json!([deep]);
        }
        assert!(
            json_to_bytes(&deep, DataType::Int32, &[1], "x", MAX_DATA_DEPTH)
                .unwrap_err()
                .message()
                .contains("nesting depth")
        );
    }

    #[test]
    fn binary_sizes_checked() {
        let header = br#"{"inputs":[{"name":"A","datatype":"INT32","shape":[1],"parameters":{"binary_data_size":4}}]}"#;
        let mut body = header.to_vec();
        body.extend_from_slice(&[1, 0, 0]);
        let e = decode_request("m", None, Bytes::from(body.clone()), header.len()).err().unwrap();
        assert!(e.message().contains("expecting 1 additional bytes"), "{e}");
        body.extend_from_slice(&[0, 9]);
        let e = decode_request("m", None, Bytes::from(body), header.len()).err().unwrap();
        assert!(e.message().contains("unexpected additional input data"), "{e}");
    }
    #[test]
    fn json_size_counted_before_parsing_at_the_boundary() {
        let l = JsonLimits { max_depth: 3, max_values: 10, max_objects: 2 };
        // 1 + 9 separators/openers = 10 values.
        let ten = br#"{"a":[1,2,3,4,5,6],"b":{"c":"x,[{y\"{,"}}"#;
        assert!(check_json_size(ten, &l).is_ok());
        let eleven = br#"{"a":[1,2,3,4,5,6,7],"b":{"c":"x,[{y\"{,"}}"#;
        let e = check_json_size(eleven, &l).unwrap_err();
        assert_eq!(e.code().http_status(), 400);
        assert!(e.message().contains("at most 10 values and 2 objects"), "{}", e.message());
        assert!(check_json_size(br#"[{},{},{}]"#, &l).is_err(), "three objects");
        assert!(check_json_size(br#"[{},{}]"#, &l).is_ok());
        let deep = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
        let ok =
            json_to_bytes(&serde_json::from_str(&deep(3)).unwrap(), DataType::Int32, &[1], "x", 3);
        assert!(ok.is_ok());
        let e =
            json_to_bytes(&serde_json::from_str(&deep(4)).unwrap(), DataType::Int32, &[1], "x", 3)
                .unwrap_err();
        assert!(
            e.message().ends_with("JSON nesting depth exceeds maximum allowed limit (3)"),
            "{}",
            e.message()
        );
    }
}
