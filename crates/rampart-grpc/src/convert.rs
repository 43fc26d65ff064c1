//! Message conversions between the gRPC wire types and the core's types. Only decoding lives here: every
//! check on tensors, shapes and parameters is the core's.

use bytes::Bytes;
use rampart_core::stats::{DurationSnapshot, VersionStats};
use rampart_core::{
    InferRequest, InferResponse, InputTensor, ParamValue, Parameters, RequestedOutput,
};
use rampart_types::tensor::encode_bytes_elements;
use rampart_types::wire::WireElement;
use rampart_types::{DataType, Error, Result};

use crate::pb::{self, infer_parameter::ParameterChoice};

pub(crate) fn param_value(key: &str, p: &pb::InferParameter) -> Result<ParamValue> {
    match &p.parameter_choice {
        Some(ParameterChoice::BoolParam(b)) => Ok(ParamValue::Bool(*b)),
        Some(ParameterChoice::Int64Param(i)) => Ok(ParamValue::Int(*i)),
        Some(ParameterChoice::Uint64Param(u)) => Ok(ParamValue::Uint(*u)),
        Some(ParameterChoice::DoubleParam(d)) => Ok(ParamValue::Double(*d)),
        Some(ParameterChoice::StringParam(s)) => Ok(ParamValue::String(s.clone())),
        None => Err(Error::invalid_arg(format!("parameter '{key}' has no value"))),
    }
}

/// gRPC's typing of the reserved request parameters (docs/protocol.md, "gRPC parameters"): a
/// protocol rule, checked while decoding.
fn check_reserved_type(key: &str, p: &pb::InferParameter) -> Result<()> {
    use ParameterChoice::*;
    let (ok, want) = match key {
        "priority" => (
            matches!(p.parameter_choice, Some(Int64Param(_) | Uint64Param(_))),
            "int64_param or uint64_param",
        ),
        "timeout" => (matches!(p.parameter_choice, Some(Int64Param(_))), "int64_param"),
        "sequence_id" => (
            matches!(p.parameter_choice, Some(Int64Param(_) | StringParam(_))),
            "int64_param or string_param",
        ),
        "sequence_start" | "sequence_end" => {
            (matches!(p.parameter_choice, Some(BoolParam(_))), "bool_param")
        }
        _ => (true, ""),
    };
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_arg(format!(
            "invalid value type for '{key}' parameter, expected {want}."
        )))
    }
}

fn params(map: &std::collections::HashMap<String, pb::InferParameter>) -> Result<Parameters> {
    map.iter()
        .map(|(k, v)| {
            check_reserved_type(k, v)?;
            Ok((k.clone(), param_value(k, v)?))
        })
        .collect()
}

/// gRPC's only allowed `triton_` request parameter (it asks decoupled models for an empty final response).
pub(crate) const EMPTY_FINAL_RESPONSE: &str = "triton_enable_empty_final_response";

/// A tensor's shared-memory parameters: gRPC carries the sizes as `int64_param` only
/// (docs/protocol.md, "gRPC parameters").
fn shm_ref(
    map: &std::collections::HashMap<String, pb::InferParameter>,
    what: &str,
) -> Result<Option<rampart_core::ShmRef>> {
    for key in ["shared_memory_byte_size", "shared_memory_offset"] {
        if let Some(p) = map.get(key)
            && !matches!(p.parameter_choice, Some(ParameterChoice::Int64Param(_)))
        {
            return Err(Error::invalid_arg(format!(
                "Unable to parse '{key}' of {what}: expected int64_param."
            )));
        }
    }
    let mut params = Parameters::new();
    for key in ["shared_memory_region", "shared_memory_byte_size", "shared_memory_offset"] {
        if let Some(p) = map.get(key) {
            params.insert(key.to_string(), param_value(key, p)?);
        }
    }
    rampart_core::ShmRef::from_parameters(&params, what)
}

pub(crate) fn infer_request(mut req: pb::ModelInferRequest) -> Result<InferRequest> {
    let version = rampart_core::parse_version(&req.model_version)?;
    let mut parameters = params(&req.parameters)?;
    parameters.remove(EMPTY_FINAL_RESPONSE);
    let model = req.model_name.clone();
    let first_typed = req.inputs.iter().find(|i| i.contents.is_some());
    if let Some(typed) = first_typed
        && !req.raw_input_contents.is_empty()
    {
        return Err(Error::invalid_arg(format!(
            "contents field must not be specified when using raw_input_contents for '{}' for model '{model}'",
            typed.name
        )));
    }
    let mut raw = std::mem::take(&mut req.raw_input_contents).into_iter();
    let mut inputs = Vec::with_capacity(req.inputs.len());
    for input in req.inputs {
        let datatype = DataType::from_protocol(&input.datatype).ok_or_else(|| {
            Error::invalid_arg(format!(
                "invalid datatype for input {}: '{}' is not a Triton data type",
                input.name, input.datatype
            ))
        })?;
        let shm = shm_ref(&input.parameters, &format!("input '{}'", input.name))?;
        let data = match &input.contents {
            _ if shm.is_some() => Bytes::new(),
            Some(c) => typed_contents(c, datatype, &input.name)?,
            None => raw.next().ok_or_else(|| {
                Error::invalid_arg(format!(
                    "unable to find data for input tensor '{}' for model '{model}' in request. Give it typed contents or a raw_input_contents entry.",
                    input.name
                ))
            })?,
        };
        // Negative dimensions are the core's to refuse (`RequestLimits::check`).
        inputs.push(InputTensor { name: input.name, datatype, shape: input.shape, data, shm });
    }
    if raw.next().is_some() {
        return Err(Error::invalid_arg(format!(
            "unexpected additional input data for model '{model}': more raw_input_contents entries than inputs"
        )));
    }
    let mut outputs = Vec::with_capacity(req.outputs.len());
    for o in req.outputs {
        let shm = shm_ref(&o.parameters, &format!("output '{}'", o.name))?;
        let classification = match o.parameters.get("classification").map(|p| &p.parameter_choice) {
            None | Some(Some(ParameterChoice::Int64Param(0))) => None,
            Some(Some(ParameterChoice::Int64Param(n))) if *n > 0 => Some(*n as u64),
            Some(_) => {
                return Err(Error::invalid_arg(format!(
                    "invalid value for 'classification' of output '{}': expected a positive int64_param.",
                    o.name
                )));
            }
        };
        outputs.push(RequestedOutput { name: o.name, classification, shm });
    }
    Ok(InferRequest {
        principal: None,
        call_depth: 0,
        cancelled: None,
        model_name: req.model_name,
        model_version: version,
        id: req.id,
        parameters,
        inputs,
        outputs,
        trace: None,
        raw_input: None,
    })
}

fn narrow<S: Copy + std::fmt::Display, T: WireElement + TryFrom<S>>(
    values: &[S],
    name: &str,
) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(values.len() * T::SIZE);
    for (i, &v) in values.iter().enumerate() {
        let x = T::try_from(v).map_err(|_| {
            Error::invalid_arg(format!(
                "input '{name}': element {i} ({v}) is out of range for {}",
                T::DATATYPE
            ))
        })?;
        x.write(&mut out);
    }
    Ok(out)
}

fn plain<T: WireElement>(values: &[T]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * T::SIZE);
    for &v in values {
        v.write(&mut out);
    }
    out
}

/// Typed `contents` → wire bytes. Exactly the field that matches the data type may hold values.
fn typed_contents(c: &pb::InferTensorContents, dt: DataType, name: &str) -> Result<Bytes> {
    let fields: [(&str, usize); 8] = [
        ("bool_contents", c.bool_contents.len()),
        ("int_contents", c.int_contents.len()),
        ("int64_contents", c.int64_contents.len()),
        ("uint_contents", c.uint_contents.len()),
        ("uint64_contents", c.uint64_contents.len()),
        ("fp32_contents", c.fp32_contents.len()),
        ("fp64_contents", c.fp64_contents.len()),
        ("bytes_contents", c.bytes_contents.len()),
    ];
    let expected = match dt {
        DataType::Bool => "bool_contents",
        DataType::Int8 | DataType::Int16 | DataType::Int32 => "int_contents",
        DataType::Int64 => "int64_contents",
        DataType::Uint8 | DataType::Uint16 | DataType::Uint32 => "uint_contents",
        DataType::Uint64 => "uint64_contents",
        DataType::Fp32 => "fp32_contents",
        DataType::Fp64 => "fp64_contents",
        DataType::Bytes => "bytes_contents",
        DataType::Fp16 | DataType::Bf16 => {
            return Err(Error::invalid_arg(format!(
                "input '{name}': {dt} data cannot be given in typed contents; use raw_input_contents"
            )));
        }
    };
    if let Some((other, _)) = fields.iter().find(|(f, n)| *n > 0 && *f != expected) {
        return Err(Error::invalid_arg(format!(
            "input '{name}' has datatype {dt}, whose typed data goes in '{expected}', but '{other}' was given"
        )));
    }
    let bytes = match dt {
        DataType::Bool => plain(&c.bool_contents),
        DataType::Int8 => narrow::<i32, i8>(&c.int_contents, name)?,
        DataType::Int16 => narrow::<i32, i16>(&c.int_contents, name)?,
        DataType::Int32 => plain(&c.int_contents),
        DataType::Int64 => plain(&c.int64_contents),
        DataType::Uint8 => narrow::<u32, u8>(&c.uint_contents, name)?,
        DataType::Uint16 => narrow::<u32, u16>(&c.uint_contents, name)?,
        DataType::Uint32 => plain(&c.uint_contents),
        DataType::Uint64 => plain(&c.uint64_contents),
        DataType::Fp32 => plain(&c.fp32_contents),
        DataType::Fp64 => plain(&c.fp64_contents),
        DataType::Bytes => encode_bytes_elements(&c.bytes_contents),
        DataType::Fp16 | DataType::Bf16 => unreachable!("refused above"),
    };
    Ok(Bytes::from(bytes))
}

/// A core parameter value as gRPC carries it.
fn parameter(v: ParamValue) -> pb::InferParameter {
    let choice = match v {
        ParamValue::Bool(b) => ParameterChoice::BoolParam(b),
        ParamValue::Int(i) => ParameterChoice::Int64Param(i),
        ParamValue::Uint(u) => ParameterChoice::Uint64Param(u),
        ParamValue::Double(d) => ParameterChoice::DoubleParam(d),
        ParamValue::String(s) => ParameterChoice::StringParam(s),
    };
    pb::InferParameter { parameter_choice: Some(choice) }
}

pub(crate) fn infer_response(r: InferResponse) -> pb::ModelInferResponse {
    let parameters = r.parameters.into_iter().map(|(k, v)| (k, parameter(v))).collect();
    let mut outputs = Vec::with_capacity(r.outputs.len());
    let mut raw = Vec::with_capacity(r.outputs.len());
    for t in r.outputs {
        let mut parameters = std::collections::HashMap::new();
        if let Some(place) = r.shm_outputs.get(&t.name) {
            let p = |c| pb::InferParameter { parameter_choice: Some(c) };
            parameters.insert(
                "shared_memory_region".to_string(),
                p(ParameterChoice::StringParam(place.region.clone())),
            );
            parameters.insert(
                "shared_memory_byte_size".to_string(),
                p(ParameterChoice::Int64Param(place.byte_size as i64)),
            );
            if place.offset != 0 {
                parameters.insert(
                    "shared_memory_offset".to_string(),
                    p(ParameterChoice::Int64Param(place.offset as i64)),
                );
            }
        }
        outputs.push(pb::model_infer_response::InferOutputTensor {
            name: t.name,
            datatype: t.datatype.as_str().to_string(),
            shape: t.shape,
            parameters,
            contents: None,
        });
        // An output in shared memory keeps its (empty) place, so raw_output_contents stays aligned with outputs.
        raw.push(t.data);
    }
    pb::ModelInferResponse {
        model_name: r.model_name,
        model_version: r.model_version.to_string(),
        id: r.id,
        parameters,
        outputs,
        raw_output_contents: raw,
    }
}

fn dur(d: &DurationSnapshot) -> Option<pb::StatisticDuration> {
    Some(pb::StatisticDuration { count: d.count, ns: d.ns })
}

pub(crate) fn statistics(stats: Vec<VersionStats>) -> pb::ModelStatisticsResponse {
    let model_stats = stats
        .into_iter()
        .map(|v| {
            let s = v.stats;
            pb::ModelStatistics {
                name: v.name,
                version: v.version,
                last_inference: s.last_inference_ms,
                inference_count: s.inference_count,
                execution_count: s.execution_count,
                inference_stats: Some(pb::InferStatistics {
                    success: dur(&s.success),
                    fail: dur(&s.fail),
                    queue: dur(&s.queue),
                    compute_input: dur(&s.compute_input),
                    compute_infer: dur(&s.compute_infer),
                    compute_output: dur(&s.compute_output),
                    cache_hit: dur(&s.cache_hit),
                    cache_miss: dur(&s.cache_miss),
                }),
                batch_stats: s
                    .batch
                    .iter()
                    .map(|(size, d)| pb::InferBatchStatistics {
                        batch_size: *size,
                        compute_input: dur(&d[0]),
                        compute_infer: dur(&d[1]),
                        compute_output: dur(&d[2]),
                    })
                    .collect(),
                response_stats: s
                    .responses
                    .iter()
                    .map(|(index, r)| {
                        let stats = pb::InferResponseStatistics {
                            compute_infer: dur(&r.compute_infer),
                            compute_output: dur(&r.compute_output),
                            success: dur(&r.success),
                            fail: dur(&r.fail),
                            empty_response: dur(&r.empty_response),
                            cancel: dur(&r.cancel),
                        };
                        (index.to_string(), stats)
                    })
                    .collect(),
                ..Default::default()
            }
        })
        .collect();
    pb::ModelStatisticsResponse { model_stats }
}

type RepositoryParameters = std::collections::HashMap<String, pb::ModelRepositoryParameter>;

/// `config` (string) and `file:<path>` (bytes) load parameters.
pub(crate) fn load_request(
    params: RepositoryParameters,
) -> rampart_types::Result<rampart_core::LoadRequest> {
    use pb::model_repository_parameter::ParameterChoice;
    let mut request = rampart_core::LoadRequest::default();
    for (key, value) in params {
        match (key.as_str(), value.parameter_choice) {
            ("config", Some(ParameterChoice::StringParam(s))) => request.config = Some(s),
            ("config", _) => {
                return Err(Error::invalid_arg("load parameter 'config' must be a string_param"));
            }
            (k, Some(ParameterChoice::BytesParam(b))) if k.starts_with("file:") => {
                request.files.push((k["file:".len()..].to_string(), b.to_vec()))
            }
            (k, _) if k.starts_with("file:") => {
                return Err(Error::invalid_arg(format!(
                    "load parameter '{k}' must be a bytes_param"
                )));
            }
            (k, _) => {
                return Err(Error::invalid_arg(format!(
                    "unexpected load parameter '{k}': expected 'config' or 'file:<path>'"
                )));
            }
        }
    }
    Ok(request)
}

pub(crate) fn unload_dependents(params: &RepositoryParameters) -> rampart_types::Result<bool> {
    use pb::model_repository_parameter::ParameterChoice;
    if let Some(k) = params.keys().find(|k| *k != "unload_dependents") {
        return Err(Error::invalid_arg(format!(
            "unexpected unload parameter '{k}': expected 'unload_dependents'"
        )));
    }
    match params.get("unload_dependents").map(|p| &p.parameter_choice) {
        None => Ok(false),
        Some(Some(ParameterChoice::BoolParam(b))) => Ok(*b),
        Some(_) => {
            Err(Error::invalid_arg("Unable to parse 'unload_dependents': expected a bool_param"))
        }
    }
}

/// LogSettings request values: `log_file` (refused), `log_info|warning|error` (bool_param),
/// `log_verbose_level` (uint32_param), `log_format` (string_param).
pub(crate) fn log_update(
    settings: std::collections::HashMap<String, pb::log_settings_request::SettingValue>,
) -> Result<rampart_core::logging::LogUpdate> {
    use pb::log_settings_request::setting_value::ParameterChoice as P;
    let mut u = rampart_core::logging::LogUpdate::default();
    for (key, value) in settings {
        let wrong =
            |kind: &str| Error::invalid_arg(format!("log setting '{key}' must be a {kind}"));
        match (key.as_str(), value.parameter_choice) {
            ("log_file", _) => u.file = Some(String::new()),
            ("log_info", Some(P::BoolParam(b))) => u.info = Some(b),
            ("log_warning", Some(P::BoolParam(b))) => u.warning = Some(b),
            ("log_error", Some(P::BoolParam(b))) => u.error = Some(b),
            ("log_info" | "log_warning" | "log_error", _) => return Err(wrong("bool_param")),
            ("log_verbose_level", Some(P::Uint32Param(v))) => u.verbose_level = Some(v),
            ("log_verbose_level", _) => return Err(wrong("uint32_param")),
            ("log_format", Some(P::StringParam(f))) => u.format = Some(f),
            ("log_format", _) => return Err(wrong("string_param")),
            _ => return Err(Error::invalid_arg(format!("unexpected log setting '{key}'"))),
        }
    }
    Ok(u)
}

pub(crate) fn log_settings(l: &rampart_core::logging::LogSettings) -> pb::LogSettingsResponse {
    use pb::log_settings_response::{SettingValue, setting_value::ParameterChoice as P};
    let v = |p: P| SettingValue { parameter_choice: Some(p) };
    let settings = [
        ("log_file", v(P::StringParam(l.file.clone()))),
        ("log_info", v(P::BoolParam(l.info))),
        ("log_warning", v(P::BoolParam(l.warning))),
        ("log_error", v(P::BoolParam(l.error))),
        ("log_verbose_level", v(P::Uint32Param(l.verbose_level))),
        ("log_format", v(P::StringParam(l.format.as_str().to_string()))),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    pb::LogSettingsResponse { settings }
}

/// TraceSetting request values: every setting a list of strings; an empty list clears (per model).
pub(crate) fn trace_update(
    settings: &std::collections::HashMap<String, pb::trace_setting_request::SettingValue>,
) -> Result<rampart_core::trace::TraceUpdate> {
    let mut u = rampart_core::trace::TraceUpdate::default();
    for (key, value) in settings {
        let values = &value.value;
        let single = || -> Result<Option<String>> {
            match values.as_slice() {
                [] => Ok(None),
                [v] => Ok(Some(v.clone())),
                _ => Err(Error::invalid_arg(format!(
                    "trace setting '{key}' takes one value, got {}",
                    values.len()
                ))),
            }
        };
        match key.as_str() {
            "trace_file" => u.file = true,
            "trace_level" => u.level = Some((!values.is_empty()).then(|| values.clone())),
            "trace_rate" => u.rate = Some(single()?),
            "trace_count" => u.count = Some(single()?),
            "log_frequency" => u.log_frequency = Some(single()?),
            _ => return Err(Error::invalid_arg(format!("unexpected trace setting '{key}'"))),
        }
    }
    Ok(u)
}

pub(crate) fn trace_settings(t: &rampart_core::trace::TraceSettings) -> pb::TraceSettingResponse {
    use pb::trace_setting_response::SettingValue;
    let one = |v: String| SettingValue { value: vec![v] };
    let settings = [
        ("trace_level", one(if t.timestamps { "TIMESTAMPS" } else { "OFF" }.to_string())),
        ("trace_rate", one(t.rate.to_string())),
        ("trace_count", one(t.count.to_string())),
        ("log_frequency", one(t.log_frequency.to_string())),
        ("trace_file", one(t.file.clone())),
        ("trace_mode", one(t.mode.to_string())),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    pb::TraceSettingResponse { settings }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_contents_checked() {
        let c = pb::InferTensorContents { int_contents: vec![1, 300], ..Default::default() };
        assert!(typed_contents(&c, DataType::Uint8, "x").is_err(), "wrong field");
        assert!(
            typed_contents(&c, DataType::Int8, "x").unwrap_err().message().contains("out of range")
        );
        assert_eq!(typed_contents(&c, DataType::Int32, "x").unwrap().len(), 8);
        let c = pb::InferTensorContents {
            bytes_contents: vec![Bytes::from_static(b"ab")],
            ..Default::default()
        };
        assert_eq!(
            &typed_contents(&c, DataType::Bytes, "x").unwrap()[..],
            &[2, 0, 0, 0, b'a', b'b']
        );
        assert!(typed_contents(&pb::InferTensorContents::default(), DataType::Fp16, "x").is_err());
    }

    #[test]
    fn missing_or_mixed_data_and_bad_versions_use_tritons_text() {
        let input = |name: &str, typed: bool| pb::model_infer_request::InferInputTensor {
            name: name.into(),
            datatype: "INT32".into(),
            shape: vec![1],
            contents: typed
                .then(|| pb::InferTensorContents { int_contents: vec![1], ..Default::default() }),
            ..Default::default()
        };
        let req = |inputs, raw: usize, version: &str| pb::ModelInferRequest {
            model_name: "m".into(),
            model_version: version.into(),
            inputs,
            raw_input_contents: vec![Bytes::from_static(&[0; 4]); raw],
            ..Default::default()
        };
        let msg = |r| infer_request(r).unwrap_err().message().to_string();
        assert_eq!(
            msg(req(vec![input("A", false), input("B", true), input("C", true)], 1, "")),
            "contents field must not be specified when using raw_input_contents for 'B' for model 'm'"
        );
        assert_eq!(
            msg(req(vec![input("A", false), input("B", false)], 1, "")),
            "unable to find data for input tensor 'B' for model 'm' in request. Give it typed contents or a raw_input_contents entry."
        );
        let rule =
            "version should be an integral value > 0 (expected a non-negative 64-bit integer)";
        assert_eq!(
            msg(req(vec![], 0, "abc")),
            format!("failed to get model version from specified version string 'abc', {rule}")
        );
        assert_eq!(
            msg(req(vec![], 0, "-1")),
            format!("invalid model version specified '-1' , {rule}")
        );
    }
}
