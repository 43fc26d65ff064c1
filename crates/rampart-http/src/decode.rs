//! Decoding an `/infer` body: after the size check, the JSON header is decoded straight into typed structs,
//! borrowing names from the body: the path of every well-formed request, without building a
//! `serde_json::Value` tree of the header (the general decoder in `codec.rs` does, at about a third of the
//! front end's allocations per request).
//!
//! It accepts only what the general decoder accepts, and answers `None` on anything else: a field it does
//! not model (shared memory, other parameter keys), a type it does not expect, or any error. The caller then
//! runs the general decoder, which owns every error message, so messages and their order do not depend on
//! which path ran. Nulls are refused where the general decoder refuses them (`deserialize_with = "present"`
//! below), since serde's `Option` would take them as absent; and every struct is read from a JSON object
//! only ([`Object`]), since serde would also read a struct from an array of its fields. Unknown fields are
//! declined too: serde skips them without checking their strings (UTF-8, escapes) as the general decoder
//! does.

use std::borrow::Cow;

use axum::body::Bytes;
use rampart_core::{InferRequest, InputTensor, ParamValue, Parameters, RequestedOutput};
use rampart_types::DataType;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::{Deserialize, de};
use serde_json::Value;

use rampart_types::Result;

use crate::codec::{
    BinaryOutputs, Decoded, JsonLimits, check_json_size, decode_general, json_to_bytes,
};

/// Decodes an `/infer` body whose first `header_len` bytes are the JSON header (the rest: binary tensor
/// data), under the operator's JSON limits.
pub(crate) fn decode_request_with(
    model: &str,
    version: Option<i64>,
    body: Bytes,
    header_len: usize,
    limits: &JsonLimits,
) -> Result<Decoded> {
    let header_len = header_len.min(body.len());
    check_json_size(&body[..header_len], limits)?;
    match decode(model, version, &body, header_len, limits) {
        Some(decoded) => Ok(decoded),
        None => decode_general(model, version, body, header_len, limits),
    }
}

/// [`decode_request_with`] with the default limits (the fuzz targets).
#[cfg(feature = "fuzzing")]
pub(crate) fn decode_request(
    model: &str,
    version: Option<i64>,
    body: Bytes,
    header_len: usize,
) -> Result<Decoded> {
    decode_request_with(model, version, body, header_len, &JsonLimits::default())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Header<'a> {
    #[serde(default, borrow)]
    id: Cow<'a, str>,
    #[serde(default)]
    parameters: RequestParameters,
    #[serde(borrow)]
    inputs: Vec<Object<Input<'a>>>,
    #[serde(default, borrow)]
    outputs: Vec<Object<Output<'a>>>,
}

/// A `T` read from a JSON object, never from an array.
#[derive(Default)]
struct Object<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Fields<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for Fields<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<T, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(m))
            }
        }
        d.deserialize_map(Fields(std::marker::PhantomData)).map(Object)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Input<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow)]
    datatype: Cow<'a, str>,
    shape: Shape,
    #[serde(default)]
    parameters: Object<InputParameters>,
    #[serde(default, deserialize_with = "present")]
    data: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct InputParameters {
    #[serde(default, deserialize_with = "present")]
    binary_data_size: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Output<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(default)]
    parameters: Object<OutputParameters>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct OutputParameters {
    #[serde(default, deserialize_with = "present")]
    binary_data: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    classification: Option<u64>,
}

/// A shape: non-negative integers that fit an `i64`, read straight into the vector the request keeps.
struct Shape(Vec<i64>);

impl<'de> Deserialize<'de> for Shape {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Dims;
        impl<'de> Visitor<'de> for Dims {
            type Value = Shape;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an array of non-negative integers")
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Shape, A::Error> {
                let mut dims = Vec::with_capacity(4);
                while let Some(d) = seq.next_element::<u64>()? {
                    dims.push(i64::try_from(d).map_err(de::Error::custom)?);
                }
                Ok(Shape(dims))
            }
        }
        d.deserialize_seq(Dims)
    }
}

/// A field that is present, even as `null` (which then fails to be a `T`, or is kept as `Value::Null`).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// The request's `parameters`, each value typed as the general decoder types it (a later duplicate key
/// wins, as in a `serde_json` map).
#[derive(Default)]
struct RequestParameters(Parameters);

impl<'de> Deserialize<'de> for RequestParameters {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Map;
        impl<'de> Visitor<'de> for Map {
            type Value = RequestParameters;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object of parameters")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
                let mut out = Parameters::new();
                while let Some(key) = m.next_key::<String>()? {
                    out.insert(key, m.next_value::<Param>()?.0);
                }
                Ok(RequestParameters(out))
            }
        }
        d.deserialize_map(Map)
    }
}

/// One parameter value: a boolean, a string, or a number (unsigned, then signed, then double).
struct Param(ParamValue);

impl<'de> Deserialize<'de> for Param {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Scalar;
        impl Visitor<'_> for Scalar {
            type Value = Param;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a boolean, a number or a string")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Param, E> {
                Ok(Param(ParamValue::Bool(v)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Param, E> {
                Ok(Param(ParamValue::Uint(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Param, E> {
                // serde_json calls this for negative integers only.
                Ok(Param(ParamValue::Int(v)))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Param, E> {
                Ok(Param(ParamValue::Double(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Param, E> {
                Ok(Param(ParamValue::String(v.to_string())))
            }
        }
        d.deserialize_any(Scalar)
    }
}

/// The decoded request, or `None` for the general decoder to decide (and word any error).
fn decode(
    model: &str,
    version: Option<i64>,
    body: &Bytes,
    header_len: usize,
    limits: &JsonLimits,
) -> Option<Decoded> {
    let Object(header): Object<Header<'_>> = serde_json::from_slice(&body[..header_len]).ok()?;
    let default_binary = match header.parameters.0.get("binary_data_output") {
        None => false,
        Some(ParamValue::Bool(b)) => *b,
        Some(_) => return None,
    };
    let mut rest = body.slice(header_len..);
    let mut inputs = Vec::with_capacity(header.inputs.len());
    for Object(input) in header.inputs {
        let datatype = DataType::from_protocol(&input.datatype)?;
        let shape = input.shape.0;
        let name = input.name.into_owned();
        let data = match (input.parameters.0.binary_data_size, &input.data) {
            (Some(n), None) => {
                let n = usize::try_from(n).ok().filter(|&n| n <= rest.len())?;
                rest.split_to(n)
            }
            (None, Some(data)) => {
                json_to_bytes(data, datatype, &shape, &name, limits.max_depth).ok()?
            }
            _ => return None,
        };
        inputs.push(InputTensor { name, datatype, shape, data, shm: None });
    }
    if !rest.is_empty() {
        return None;
    }
    let mut outputs = Vec::with_capacity(header.outputs.len());
    let mut per_output = std::collections::HashMap::new();
    for Object(output) in header.outputs {
        let name = output.name.into_owned();
        let parameters = output.parameters.0;
        if let Some(b) = parameters.binary_data {
            per_output.insert(name.clone(), b);
        }
        let classification = parameters.classification.filter(|&n| n > 0);
        outputs.push(RequestedOutput { name, classification, shm: None });
    }
    Some(Decoded {
        request: InferRequest {
            model_name: model.to_string(),
            model_version: version,
            id: header.id.into_owned(),
            parameters: header.parameters.0,
            inputs,
            outputs,
            ..InferRequest::default()
        },
        binary_outputs: BinaryOutputs::Some { default: default_binary, per_output },
    })
}

/// Both decoders on one body (tests and the fuzz targets): whether the fast one took it. Panics when it
/// took what the general decoder refuses, or decoded it differently.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn took_and_agreed(body: &Bytes, header_len: usize) -> bool {
    let limits = JsonLimits::default();
    let Some(fast) = decode("m", Some(1), body, header_len, &limits) else { return false };
    let general = decode_general("m", Some(1), body.clone(), header_len, &limits)
        .unwrap_or_else(|e| panic!("the fast decoder took what the general one refuses: {e}"));
    assert_eq!(format!("{:?}", fast.request), format!("{:?}", general.request));
    for output in &general.request.outputs {
        let name = output.name.as_str();
        assert_eq!(fast.binary_outputs.is_binary(name), general.binary_outputs.is_binary(name));
    }
    assert_eq!(fast.binary_outputs.is_binary(""), general.binary_outputs.is_binary(""));
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agree(header: &str, tail: &[u8]) -> bool {
        let mut body = header.as_bytes().to_vec();
        body.extend_from_slice(tail);
        took_and_agreed(&Bytes::from(body), header.len())
    }

    #[test]
    fn well_formed_requests_take_the_fast_path_with_the_same_result() {
        let binary = r#"{"inputs":[{"name":"IN","shape":[1,2],"datatype":"INT32","parameters":{"binary_data_size":8}}],"outputs":[{"name":"OUT","parameters":{"binary_data":true}}]}"#;
        assert!(agree(binary, &[1, 0, 0, 0, 2, 0, 0, 0]));
        let json = r#"{"id":"r\"1","parameters":{"sequence_id":5,"priority":-1,"timeout":1.5,"flag":true,"s":"x","binary_data_output":true},
            "inputs":[{"name":"IN","shape":[2],"datatype":"FP32","data":[1.5,2]},{"name":"B","shape":[1],"datatype":"BYTES","data":["hi"]}],
            "outputs":[{"name":"OUT","parameters":{"classification":2}},{"name":"OTHER"}]}"#;
        assert!(agree(json, b""));
        assert!(agree(
            r#"{"inputs":[{"name":"IN","shape":[1],"datatype":"INT64","data":[[7]]}],"parameters":{"k":1,"k":"later"}}"#,
            b""
        ));
        assert!(agree(r#"{"inputs":[]}"#, b""));
    }

    #[test]
    fn anything_unusual_is_left_to_the_general_decoder() {
        let declined = [
            // Not objects where objects belong (serde would read a struct from an array).
            r#"["", {}, []]"#,
            r#"{"inputs":[["IN","INT32",[1],{},[1]]]}"#,
            r#"{"inputs":[{"name":"IN","shape":[1],"datatype":"INT32","data":[1],"parameters":[]}]}"#,
            // Nulls the general decoder refuses.
            r#"{"id":null,"inputs":[]}"#,
            r#"{"parameters":null,"inputs":[]}"#,
            r#"{"inputs":[],"outputs":null}"#,
            r#"{"inputs":[{"name":"IN","shape":[1],"datatype":"INT32","data":null}]}"#,
            r#"{"inputs":[{"name":"IN","shape":[1],"datatype":"INT32","data":null,"parameters":{"binary_data_size":4}}]}"#,
            r#"{"inputs":[{"name":"IN","shape":[1],"datatype":"INT32","parameters":{"binary_data_size":null}}]}"#,
            r#"{"inputs":[],"outputs":[{"name":"OUT","parameters":{"binary_data":null}}]}"#,
            // Fields and values it does not model, and errors.
            r#"{"inputs":[],"unknown":1}"#,
            r#"{"inputs":[{"name":"IN","shape":[1],"datatype":"INT32","data":[1],"contents":{}}]}"#,
            r#"{"inputs":[],"outputs":[{"name":"OUT","parimeters":{"\ud800":1}}]}"#,
            r#"{"inputs":[{"name":"IN","shape":[1],"datatype":"INT32","parameters":{"shared_memory_region":"r","shared_memory_byte_size":4}}]}"#,
            r#"{"inputs":[],"outputs":[{"name":"OUT","parameters":{"shared_memory_region":"r"}}]}"#,
            r#"{"inputs":[],"parameters":{"nested":{"a":1}}}"#,
            r#"{"inputs":[],"parameters":{"binary_data_output":1}}"#,
            r#"{"id":1,"inputs":[]}"#,
            r#"{"inputs":[{"name":"IN","shape":[1.0],"datatype":"INT32","data":[1]}]}"#,
            r#"{"inputs":[{"name":"IN","shape":[-1],"datatype":"INT32","data":[1]}]}"#,
            r#"{"inputs":[{"name":"IN","shape":[9223372036854775808],"datatype":"INT32","data":[1]}]}"#,
            r#"{"inputs":[{"name":"IN","shape":[1],"datatype":"INT33","data":[1]}]}"#,
            r#"{"inputs":[{"name":"IN","shape":[2],"datatype":"INT32","data":[1]}]}"#,
            r#"{"inputs":[{"name":"IN","shape":[1],"datatype":"INT32"}]}"#,
            r#"{"inputs":[{"name":"IN","name":"IN2","shape":[1],"datatype":"INT32","data":[1]}]}"#,
            r#"{"inputs":[],"outputs":[{"name":"OUT","parameters":{"classification":-1}}]}"#,
            r#"{"inputs":[{"name":"IN","shape":[1],"datatype":"INT32","parameters":{"binary_data_size":8}}]}"#,
            r#"{"inputs":[{"name":"IN","shape":[1],"datatype":"INT32","parameters":{"binary_data_size":-4}}]}"#,
        ];
        for header in declined {
            assert!(!agree(header, &[0, 0, 0, 0]), "the fast path took {header}");
        }
        // Bytes left over after the inputs.
        assert!(!agree(
            r#"{"inputs":[{"name":"IN","shape":[1],"datatype":"INT32","data":[1]}]}"#,
            b"x"
        ));
    }
}
