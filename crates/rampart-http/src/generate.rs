//! Triton's generate extension (docs/protocol.md, "Generate"): `POST /v2/models/{m}[/versions/{v}]/generate`
//! answers one JSON object, `…/generate_stream` answers Server-Sent Events (`data: <json>\n\n`), for any
//! model, decoupled or not.
//!
//! The body is one JSON object read within the limits of `/infer`. A top-level key that names a model input
//! becomes that input (its shape from the model's metadata: fixed dimensions divide the element count, the
//! innermost -1 takes the rest, other -1 dimensions are 1); any other key becomes a request parameter, and
//! the members of `parameters` follow the same rule. A response becomes `{model_name, model_version, id,
//! <parameter>…, <output>…}` with keys in byte order; an output of one element is a bare value. Errors before
//! the model answers are ordinary JSON errors; on a stream, a later error is a `data: {"error": …}` event.
//! The request is cancelled when the client goes away (its response stream is dropped).

use std::collections::BTreeMap;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rampart_core::{InferRequest, InferResponse, InputTensor, ParamValue, ResponseStream};
use rampart_types::{DataType, Error, Result};
use serde_json::Value;

use crate::codec::{JsonLimits, bad, check_json_size};
use crate::common::{AppState, HResult, err, version_segment};
use crate::infer_route::{check_model_access, read_request_body};

pub(crate) async fn generate(
    State(s): State<AppState>,
    Path(model): Path<String>,
    request: axum::extract::Request,
) -> HResult {
    run(s, model, None, false, request).await
}

pub(crate) async fn generate_v(
    State(s): State<AppState>,
    Path((model, v)): Path<(String, String)>,
    request: axum::extract::Request,
) -> HResult {
    let version = version_segment(&v)?;
    run(s, model, version, false, request).await
}

pub(crate) async fn generate_stream(
    State(s): State<AppState>,
    Path(model): Path<String>,
    request: axum::extract::Request,
) -> HResult {
    run(s, model, None, true, request).await
}

pub(crate) async fn generate_stream_v(
    State(s): State<AppState>,
    Path((model, v)): Path<(String, String)>,
    request: axum::extract::Request,
) -> HResult {
    let version = version_segment(&v)?;
    run(s, model, version, true, request).await
}

const EVENT_STREAM: &str = "text/event-stream; charset=utf-8";

/// Runs a generate request: `stream` answers Server-Sent Events, else exactly one JSON object.
pub(crate) async fn run(
    s: AppState,
    model: String,
    version: Option<i64>,
    stream: bool,
    request: axum::extract::Request,
) -> HResult {
    let (parts, body) = request.into_parts();
    let principal = check_model_access(&s, &model, &parts)?;
    let traceparent = parts.headers.get("traceparent").and_then(|v| v.to_str().ok());
    let trace = s.server.start_trace(&model, traceparent);
    if let Some(t) = &trace {
        t.stamp("HTTP_RECV_START");
    }
    let body = read_request_body(&parts.headers, body, &s.options).await?;
    let metadata = s.server.model_metadata(&model, version)?;
    let mut req = decode(&model, version, &body, &metadata.inputs, &s.options.json_limits)?;
    req.principal = principal;
    if let Some(t) = &trace {
        t.stamp("HTTP_RECV_END");
        req.trace = Some(t.clone());
    }
    let responses = s.server.infer_stream(req).await?;
    if stream { Ok(events(responses).await) } else { one(responses).await }
}

/// `/generate`: the one response as JSON, or Triton's error when the model answers zero or several.
async fn one(mut responses: ResponseStream) -> HResult {
    let mut answers = Vec::new();
    while let Some(next) = responses.next().await {
        match next {
            Ok(r) => answers.extend(r.response),
            Err(e) => return Err(err(e)),
        }
    }
    if answers.len() != 1 {
        return Err(err(Error::internal(
            "generate expects model to produce exactly 1 response, use generate stream for model that \
             generates various number of responses",
        )));
    }
    let text = response_json(&answers[0]).map_err(err)?;
    Ok(([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], text)
        .into_response())
}

/// `/generate_stream`: each response as an event as soon as it comes. The status is the first response's.
async fn events(mut responses: ResponseStream) -> Response {
    let first = loop {
        match responses.next().await {
            Some(Ok(r)) if r.response.is_none() && !r.last => continue,
            other => break other,
        }
    };
    let status = match &first {
        Some(Err(e)) => {
            StatusCode::from_u16(e.code().http_status()).unwrap_or(StatusCode::BAD_REQUEST)
        }
        _ => StatusCode::OK,
    };
    let first_event = first.map(event);
    let done = first_event.is_none();
    let rest = futures_util::stream::unfold(
        (responses, first_event, done),
        |(mut responses, pending, done)| async move {
            if let Some(e) = pending {
                let stop = e.1;
                return Some((Ok::<Bytes, std::convert::Infallible>(e.0), (responses, None, stop)));
            }
            if done {
                return None;
            }
            loop {
                match responses.next().await {
                    Some(Ok(r)) if r.response.is_none() => {
                        if r.last {
                            return None;
                        }
                    }
                    Some(item) => {
                        let (bytes, stop) = event(item);
                        return Some((Ok(bytes), (responses, None, stop)));
                    }
                    None => return None,
                }
            }
        },
    );
    let mut r = Response::new(Body::from_stream(rest));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(EVENT_STREAM));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// One event (`data: <json>\n\n`) and whether the stream ends after it.
fn event(item: Result<rampart_core::StreamedResponse>) -> (Bytes, bool) {
    let (json, last) = match item {
        Ok(r) => {
            let json = match &r.response {
                Some(resp) => response_json(resp).unwrap_or_else(|e| error_json(&e)),
                None => String::new(),
            };
            (json, r.last)
        }
        Err(e) => (error_json(&e), true),
    };
    if json.is_empty() {
        return (Bytes::new(), last);
    }
    (Bytes::from(format!("data: {json}\n\n")), last)
}

fn error_json(e: &Error) -> String {
    serde_json::json!({ "error": e.message() }).to_string()
}

/// A response as the generate object: keys in byte order; on a name clash `id`, `model_name` and
/// `model_version` win over response parameters, which win over outputs.
fn response_json(r: &InferResponse) -> Result<String> {
    let mut object: BTreeMap<String, Value> = BTreeMap::new();
    if !r.id.is_empty() {
        object.insert("id".into(), r.id.clone().into());
    }
    object.insert("model_name".into(), r.model_name.clone().into());
    object.insert("model_version".into(), r.model_version.to_string().into());
    for (k, v) in &r.parameters {
        object.entry(k.clone()).or_insert_with(|| crate::encode::parameter(v));
    }
    for t in &r.outputs {
        if matches!(t.datatype, DataType::Fp16 | DataType::Bf16) {
            return Err(bad(format!(
                "sending {} data via JSON is not supported. Please use the binary data format for output",
                t.datatype
            )));
        }
        let values = serde_json::to_value(crate::encode::JsonData(t))
            .map_err(|e| Error::internal(format!("output '{}': {e}", t.name)))?;
        let value = match values {
            Value::Array(mut a) if a.len() == 1 => a.pop().unwrap_or(Value::Null),
            other => other,
        };
        object.entry(t.name.clone()).or_insert(value);
    }
    serde_json::to_string(&object).map_err(|e| Error::internal(e.to_string()))
}

/// The request a generate body describes.
fn decode(
    model: &str,
    version: Option<i64>,
    body: &[u8],
    inputs: &[rampart_core::TensorMetadata],
    limits: &JsonLimits,
) -> Result<InferRequest> {
    check_json_size(body, limits)?;
    let root: Ordered = serde_json::from_slice(body)
        .map_err(|e| Error::internal(format!("failed to parse the request JSON buffer: {e}")))?;
    let mut req =
        InferRequest { model_name: model.into(), model_version: version, ..Default::default() };
    match root.0.iter().find(|(k, _)| k == "id").map(|(_, v)| v) {
        None => {}
        Some(Node::Value(Value::String(id))) => req.id = id.clone(),
        Some(_) => {
            return Err(Error::internal(
                "Unable to parse 'id': attempt to access JSON non-string as string",
            ));
        }
    }
    // Keys in document order: the first bad one is reported, and a key given twice reaches the core twice.
    for (key, node) in &root.0 {
        match (key.as_str(), node) {
            ("parameters", _) if inputs.iter().any(|i| i.name == "parameters") => {
                return Err(bad(
                    "Keyword 'parameters' for nested schema also given as input tensor name",
                ));
            }
            ("parameters", Node::Object(members)) => {
                let map =
                    |(k, v): &(String, Node)| map_key(k, &v.to_value(), inputs, limits, &mut req);
                members.0.iter().try_for_each(map).map_err(|e| {
                    Error::new(
                        e.code(),
                        format!("Converting keyword: 'parameters': {}", e.message()),
                    )
                })?;
            }
            ("parameters", _) => {
                return Err(Error::internal(
                    "Expected JSON object for keyword: 'parameters': attempt to access JSON non-object as object",
                ));
            }
            (key, node) => map_key(key, &node.to_value(), inputs, limits, &mut req)?,
        }
    }
    Ok(req)
}

/// A key names an input (it becomes that tensor) or not (a parameter).
fn map_key(
    key: &str,
    value: &Value,
    inputs: &[rampart_core::TensorMetadata],
    limits: &JsonLimits,
    req: &mut InferRequest,
) -> Result<()> {
    let Some(input) = inputs.iter().find(|i| i.name == key) else {
        let p = match value {
            Value::String(s) => ParamValue::String(s.clone()),
            Value::Bool(b) => ParamValue::Bool(*b),
            Value::Number(n) => match (n.as_i64(), n.as_f64()) {
                (Some(i), _) => ParamValue::Int(i),
                (None, Some(f)) => ParamValue::Double(f),
                _ => {
                    return Err(bad(format!("parameter '{key}' is not a number Rampart can hold")));
                }
            },
            _ => {
                return Err(bad(format!(
                    "parameter '{key}' has invalid type. It should be either 'int', 'bool', or 'string'."
                )));
            }
        };
        req.parameters.insert(key.to_string(), p);
        return Ok(());
    };
    let elements = match value {
        Value::Array(a) => a.len() as u64,
        _ => 1,
    };
    let shape = infer_shape(&input.shape, elements).ok_or_else(|| {
        bad(format!("The schema can not convert input '{key}' to tensor with proper shape"))
    })?;
    let data = match value {
        Value::Array(_) => value.clone(),
        scalar => Value::Array(vec![scalar.clone()]),
    };
    let bytes = crate::codec::json_to_bytes(&data, input.datatype, &shape, key, limits.max_depth)?;
    req.inputs.push(InputTensor::new(key, input.datatype, shape, bytes));
    Ok(())
}

/// A JSON object's members in document order, duplicates kept.
struct Ordered(Vec<(String, Node)>);

/// A member's value: an object keeps its order (for `parameters`), anything else is a plain value.
enum Node {
    Object(Ordered),
    Value(Value),
}

impl Node {
    fn to_value(&self) -> Value {
        match self {
            Node::Value(v) => v.clone(),
            Node::Object(o) => {
                Value::Object(o.0.iter().map(|(k, v)| (k.clone(), v.to_value())).collect())
            }
        }
    }
}

impl<'de> serde::Deserialize<'de> for Ordered {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Ordered;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object (attempt to get members for non-object)")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Ordered, A::Error> {
                let mut members = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    let node = if key == "parameters" {
                        map.next_value::<Node>()?
                    } else {
                        Node::Value(map.next_value()?)
                    };
                    members.push((key, node));
                }
                Ok(Ordered(members))
            }
        }
        d.deserialize_map(Visit)
    }
}

/// `parameters`: an object keeps its members' order, anything else is read as a plain value.
impl<'de> serde::Deserialize<'de> for Node {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Node;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Node, A::Error> {
                let mut members = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Value>()? {
                    members.push((k, Node::Value(v)));
                }
                Ok(Node::Object(Ordered(members)))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<Node, A::Error> {
                let mut items = Vec::new();
                while let Some(v) = seq.next_element::<Value>()? {
                    items.push(v);
                }
                Ok(Node::Value(Value::Array(items)))
            }
            fn visit_bool<E>(self, v: bool) -> std::result::Result<Node, E> {
                Ok(Node::Value(v.into()))
            }
            fn visit_i64<E>(self, v: i64) -> std::result::Result<Node, E> {
                Ok(Node::Value(v.into()))
            }
            fn visit_u64<E>(self, v: u64) -> std::result::Result<Node, E> {
                Ok(Node::Value(v.into()))
            }
            fn visit_f64<E>(self, v: f64) -> std::result::Result<Node, E> {
                Ok(Node::Value(v.into()))
            }
            fn visit_str<E>(self, v: &str) -> std::result::Result<Node, E> {
                Ok(Node::Value(v.into()))
            }
            fn visit_unit<E>(self) -> std::result::Result<Node, E> {
                Ok(Node::Value(Value::Null))
            }
        }
        d.deserialize_any(Visit)
    }
}

/// The shape `elements` values take for metadata dims `dims`: each fixed dimension must divide the count;
/// the innermost -1 takes what remains and every other -1 is 1.
fn infer_shape(dims: &[i64], elements: u64) -> Option<Vec<i64>> {
    let mut left = elements;
    for &d in dims.iter().filter(|&&d| d >= 0) {
        let d = d as u64;
        if d == 0 {
            left = 0;
        } else if !left.is_multiple_of(d) {
            return None;
        } else {
            left /= d;
        }
    }
    let innermost = dims.iter().rposition(|&d| d < 0);
    let shape: Vec<i64> = dims
        .iter()
        .enumerate()
        .map(|(i, &d)| match (d < 0, Some(i) == innermost) {
            (false, _) => d,
            (true, true) => left as i64,
            (true, false) => 1,
        })
        .collect();
    (innermost.is_some() || left == 1 || elements == 0).then_some(shape)
}

#[cfg(test)]
mod tests {
    use super::infer_shape;

    #[test]
    fn shapes_follow_triton() {
        assert_eq!(infer_shape(&[1, 1], 1), Some(vec![1, 1]));
        assert_eq!(infer_shape(&[1, -1], 2), Some(vec![1, 2]));
        assert_eq!(infer_shape(&[-1, 1], 1), Some(vec![1, 1]));
        assert_eq!(infer_shape(&[-1, -1], 3), Some(vec![1, 3]));
        assert_eq!(infer_shape(&[1, 1], 2), None);
        assert_eq!(infer_shape(&[2, -1], 3), None);
        assert_eq!(infer_shape(&[4], 4), Some(vec![4]));
    }
}
