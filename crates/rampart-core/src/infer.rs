//! Inference requests and responses as the core sees them, and their validation against a model config.
//! Every front end builds an [`InferRequest`] and receives an [`InferResponse`]; all checks live here.

use std::collections::BTreeMap;

use bytes::Bytes;
use rampart_model_config::ModelConfig;
use rampart_types::tensor::{element_count, fixed_byte_size, shape_str, split_bytes_elements};
use rampart_types::{DataType, Error, Result, Tensor};

/// A tensor's place in a region, from its `shared_memory_*` parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShmRef {
    pub region: String,
    /// Relative to the registered region (the registration offset is applied once, inside the manager).
    pub offset: u64,
    pub byte_size: u64,
}

impl ShmRef {
    /// The reference described by tensor parameters, `None` when they name no region. `what` names the
    /// tensor in errors ("input 'X'").
    pub fn from_parameters(params: &Parameters, what: &str) -> Result<Option<ShmRef>> {
        let number = |key: &str| -> Result<Option<u64>> {
            match params.get(key) {
                None => Ok(None),
                Some(ParamValue::Uint(n)) => Ok(Some(*n)),
                // gRPC carries sizes as int64_param; a negative value becomes a huge size, refused by the
                // bounds checks like in Triton.
                Some(ParamValue::Int(n)) => Ok(Some(*n as u64)),
                Some(_) => Err(Error::invalid_arg(format!(
                    "Unable to parse '{key}' of {what}: expected an unsigned integer"
                ))),
            }
        };
        let offset = number("shared_memory_offset")?;
        let byte_size = number("shared_memory_byte_size")?;
        let region = match params.get("shared_memory_region") {
            None => {
                if offset.is_some() || byte_size.is_some() {
                    return Err(Error::invalid_arg(format!(
                        "{what}: 'shared_memory_offset' and 'shared_memory_byte_size' need 'shared_memory_region'"
                    )));
                }
                return Ok(None);
            }
            Some(ParamValue::String(s)) => s.clone(),
            Some(_) => {
                return Err(Error::invalid_arg(format!(
                    "Unable to parse 'shared_memory_region' of {what}: expected a string"
                )));
            }
        };
        let byte_size = byte_size.ok_or_else(|| {
            Error::invalid_arg(format!(
                "{what}: 'shared_memory_byte_size' is required with 'shared_memory_region'"
            ))
        })?;
        Ok(Some(ShmRef { region, offset: offset.unwrap_or(0), byte_size }))
    }
}

/// A request or tensor parameter value.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamValue {
    Bool(bool),
    Int(i64),
    Uint(u64),
    Double(f64),
    String(String),
}

pub type Parameters = BTreeMap<String, ParamValue>;

#[derive(Debug, Clone)]
pub struct InputTensor {
    pub name: String,
    pub datatype: DataType,
    pub shape: Vec<i64>,
    /// Wire layout bytes (BYTES elements length-prefixed). Empty while `shm` is set: the server reads the
    /// region into it before validation.
    pub data: Bytes,
    /// The data is in a registered shared-memory region (`shared_memory_*` parameters).
    pub shm: Option<ShmRef>,
}

impl InputTensor {
    pub fn new(name: impl Into<String>, datatype: DataType, shape: Vec<i64>, data: Bytes) -> Self {
        InputTensor { name: name.into(), datatype, shape, data, shm: None }
    }
}

#[derive(Debug, Clone, Default)]
pub struct RequestedOutput {
    pub name: String,
    /// The classification extension: answer the top `k` entries instead of the tensor.
    pub classification: Option<u64>,
    /// Write the output into a registered shared-memory region instead of the response.
    pub shm: Option<ShmRef>,
}

impl RequestedOutput {
    pub fn new(name: impl Into<String>) -> Self {
        RequestedOutput { name: name.into(), ..Default::default() }
    }
}

#[derive(Debug, Clone, Default)]
pub struct InferRequest {
    pub model_name: String,
    /// `None`: the latest READY version.
    pub model_version: Option<i64>,
    pub id: String,
    pub parameters: Parameters,
    pub inputs: Vec<InputTensor>,
    /// Empty: every output of the model, in config order.
    pub outputs: Vec<RequestedOutput>,
    /// A raw binary body (HTTP `Inference-Header-Content-Length: 0`): the data of the model's single input,
    /// whose shape the server deduces from the config; `inputs` is then empty.
    pub raw_input: Option<Bytes>,
    /// Set when this request is traced ([`crate::Server::start_trace`]).
    pub trace: Option<std::sync::Arc<crate::trace::Trace>>,
    /// Who sent it, as far as the server verified (`authorize::Gate::principal`): a sequence started by
    /// one principal refuses requests from another.
    pub principal: Option<String>,
    /// How many model-code calls (BLS) led to this request: 0 for a client's.
    pub call_depth: u32,
    /// Set by a caller that cancels the request but still reads what the model sends (Triton's
    /// `ResponseIterator.cancel()`): the model sees the request cancelled, a queued request is not executed.
    /// A caller that drops the response stream cancels without it.
    pub cancelled: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

#[derive(Debug, Clone)]
pub struct InferResponse {
    pub model_name: String,
    pub model_version: i64,
    pub id: String,
    pub parameters: Parameters,
    /// Outputs placed in shared memory have empty `data` and an entry in `shm_outputs`.
    pub outputs: Vec<Tensor>,
    /// Output name → where its bytes were written (`byte_size` is the output's size).
    pub shm_outputs: BTreeMap<String, ShmRef>,
}

/// Counts a client controls in one request, bounded before any model work (`--max-request-inputs`,
/// `--max-request-outputs`, `--max-request-parameters`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    pub max_inputs: usize,
    pub max_outputs: usize,
    pub max_parameters: usize,
    /// BYTES elements over all inputs: each costs an engine string however short it is on the wire.
    pub max_bytes_elements: u64,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            max_inputs: 1024,
            max_outputs: 1024,
            max_parameters: 64,
            max_bytes_elements: 1 << 20,
        }
    }
}

impl RequestLimits {
    /// Also refuses a negative dimension, whatever protocol carried it (HTTP's JSON syntax cannot).
    pub fn check(&self, req: &InferRequest) -> Result<()> {
        for input in &req.inputs {
            if let Some(d) = input.shape.iter().find(|&&d| d < 0) {
                return Err(Error::invalid_arg(format!(
                    "invalid shape for input '{}': dimension {d} is negative",
                    input.name
                )));
            }
        }
        let over = |what: &str, n: usize, max: usize, flag: &str| {
            Error::invalid_arg(format!(
                "request has {n} {what}, more than the maximum of {max} ({flag})"
            ))
        };
        if req.inputs.len() > self.max_inputs {
            return Err(over("inputs", req.inputs.len(), self.max_inputs, "--max-request-inputs"));
        }
        if req.outputs.len() > self.max_outputs {
            return Err(over(
                "outputs",
                req.outputs.len(),
                self.max_outputs,
                "--max-request-outputs",
            ));
        }
        if req.parameters.len() > self.max_parameters {
            return Err(over(
                "parameters",
                req.parameters.len(),
                self.max_parameters,
                "--max-request-parameters",
            ));
        }
        let mut strings = 0u64;
        for input in req.inputs.iter().filter(|i| i.datatype == DataType::Bytes) {
            let n = input.shape.iter().map(|&d| d.max(0) as u64).fold(1u64, u64::saturating_mul);
            strings = strings.saturating_add(n);
            if strings > self.max_bytes_elements {
                return Err(Error::invalid_arg(format!(
                    "input '{}': the request's BYTES inputs have more than {} elements (--max-request-bytes-elements)",
                    input.name, self.max_bytes_elements
                )));
            }
        }
        Ok(())
    }
}

/// A validated request, ready for an engine: full shapes (reshape applied), outputs resolved.
pub(crate) struct Prepared {
    pub inputs: Vec<Tensor>,
    pub outputs: Vec<String>,
    pub batch_size: u64,
}

/// Request-level parameters the core understands; everything else is passed on as a custom parameter.
fn check_parameters(params: &Parameters) -> Result<()> {
    for (k, v) in params {
        if k.starts_with("triton_") {
            return Err(Error::invalid_arg(format!(
                "parameter keys starting with 'triton_' are reserved for Triton usage and should not be specified. Got '{k}'"
            )));
        }
        let ok = match k.as_str() {
            "priority" | "timeout" => {
                matches!(v, ParamValue::Uint(_)) || matches!(v, ParamValue::Int(i) if *i >= 0)
            }
            "sequence_id" => {
                matches!(v, ParamValue::Uint(_) | ParamValue::String(_))
                    || matches!(v, ParamValue::Int(i) if *i >= 0)
            }
            "sequence_start" | "sequence_end" | "binary_data_output" => {
                matches!(v, ParamValue::Bool(_))
            }
            _ => true,
        };
        if !ok {
            let want = match k.as_str() {
                "priority" | "timeout" => "an unsigned integer",
                "sequence_id" => "an unsigned integer or a string",
                _ => "a boolean",
            };
            return Err(Error::invalid_arg(format!(
                "invalid value type for '{k}' parameter, expected {want}"
            )));
        }
    }
    Ok(())
}

/// What the loaded engine instance accepts, beyond the config.
#[derive(Clone)]
pub(crate) struct EngineInputs {
    pub engine: &'static str,
    /// Input names the model file takes as inputs (optional inputs folded into constants are missing).
    pub names: Vec<String>,
}

/// Triton's prefix for messages about one request: `[request id: <id>] `, `<id_unknown>` without an id.
/// Parameters the server itself consumes; model code does not see them among the request's parameters.
const SERVER_PARAMETERS: [&str; 6] =
    ["sequence_id", "sequence_start", "sequence_end", "priority", "timeout", "binary_data_output"];

/// What an engine that sees requests is told about `req` besides its tensors: id, parameters (JSON),
/// correlation ID and sequence flags.
pub(crate) fn request_info(req: &InferRequest) -> rampart_types::RequestInfo {
    use rampart_types::{CorrelationId, RequestInfo};
    let p = &req.parameters;
    let json =
        parameters_to_json(p.iter().filter(|(k, _)| !SERVER_PARAMETERS.contains(&k.as_str())));
    let correlation_id = match p.get("sequence_id") {
        Some(ParamValue::Uint(u)) if *u != 0 => Some(CorrelationId::Uint(*u)),
        Some(ParamValue::Int(i)) if *i > 0 => Some(CorrelationId::Uint(*i as u64)),
        Some(ParamValue::String(s)) if !s.is_empty() => Some(CorrelationId::String(s.clone())),
        _ => None,
    };
    let flag = |key, bit| match p.get(key) {
        Some(ParamValue::Bool(true)) => bit,
        _ => 0,
    };
    RequestInfo {
        id: req.id.clone(),
        parameters_json: json,
        correlation_id,
        flags: flag("sequence_start", RequestInfo::SEQUENCE_START)
            | flag("sequence_end", RequestInfo::SEQUENCE_END),
        depth: req.call_depth,
        timeout_us: match p.get("timeout") {
            Some(ParamValue::Uint(u)) => *u,
            Some(ParamValue::Int(i)) => u64::try_from(*i).unwrap_or(0),
            _ => 0,
        },
    }
}

/// Parameters as one JSON object, as model code reads them.
pub(crate) fn parameters_to_json<'a>(
    parameters: impl Iterator<Item = (&'a String, &'a ParamValue)>,
) -> String {
    let json: serde_json::Map<String, serde_json::Value> = parameters
        .map(|(k, v)| {
            let v = match v {
                ParamValue::Bool(b) => serde_json::Value::from(*b),
                ParamValue::Int(i) => serde_json::Value::from(*i),
                ParamValue::Uint(u) => serde_json::Value::from(*u),
                ParamValue::Double(d) => serde_json::Value::from(*d),
                ParamValue::String(s) => serde_json::Value::from(s.as_str()),
            };
            (k.clone(), v)
        })
        .collect();
    serde_json::Value::Object(json).to_string()
}

/// Parameters given as one JSON object by model code (a call's, a response's): bools, numbers and strings.
pub(crate) fn parameters_from_json(json: &str, whose: &str) -> Result<Parameters> {
    let bad = |what: &str| Error::invalid_arg(format!("{whose}: {what}"));
    if json.is_empty() {
        return Ok(Parameters::new());
    }
    let value: serde_json::Value = serde_json::from_str(json).map_err(|e| bad(&e.to_string()))?;
    let object = value.as_object().ok_or_else(|| bad("not a JSON object"))?;
    object
        .iter()
        .map(|(k, v)| {
            let p = match v {
                serde_json::Value::Bool(b) => ParamValue::Bool(*b),
                serde_json::Value::String(s) => ParamValue::String(s.clone()),
                // Integers are int64 (Triton's), unsigned only above its range.
                serde_json::Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
                    (Some(i), _, _) => ParamValue::Int(i),
                    (_, Some(u), _) => ParamValue::Uint(u),
                    (_, _, Some(f)) => ParamValue::Double(f),
                    _ => return Err(bad(&format!("'{k}' is not a number Rampart can hold"))),
                },
                _ => return Err(bad(&format!("'{k}' must be a bool, number or string"))),
            };
            Ok((k.clone(), p))
        })
        .collect()
}

pub(crate) fn request_label(id: &str) -> String {
    format!("[request id: {}] ", if id.is_empty() { "<id_unknown>" } else { id })
}

/// An input whose bytes do not match its shape (Triton's text).
pub(crate) fn byte_size_mismatch(input: &str, model: &str, expected: u64, got: u64) -> Error {
    Error::invalid_arg(format!(
        "input byte size mismatch for input '{input}' for model '{model}'. Expected {expected}, got {got}"
    ))
}

pub(crate) fn prepare(
    config: &ModelConfig,
    engine: &EngineInputs,
    req: &InferRequest,
) -> Result<Prepared> {
    let model = &config.name;
    check_parameters(&req.parameters)?;
    let batching = config.max_batch_size > 0;
    let mut batch_size: Option<i64> = None;
    let mut inputs = Vec::with_capacity(req.inputs.len());
    // A scan of the earlier inputs costs less than a set: each of them matched a distinct config input
    // (an unknown name fails below), so a scan is never longer than the config's input list.
    for (i, input) in req.inputs.iter().enumerate() {
        if req.inputs[..i].iter().any(|earlier| earlier.name == input.name) {
            return Err(Error::invalid_arg(format!(
                "input '{}' already exists in request",
                input.name
            )));
        }
        let cfg = config.input.iter().find(|i| i.name == input.name).ok_or_else(|| {
            Error::invalid_arg(format!(
                "unexpected inference input '{}' for model '{model}'",
                input.name
            ))
        })?;
        if !engine.names.iter().any(|n| n == &input.name) {
            return Err(Error::invalid_arg(format!(
                "optional input '{}' of model '{model}' cannot be supplied: the {} engine always uses the value stored in the model file; omit it, or serve the model with the onnxruntime engine",
                input.name, engine.engine
            )));
        }
        let want = DataType::from_config_enum(cfg.data_type).expect("validated at load");
        if input.datatype != want {
            return Err(Error::invalid_arg(format!(
                "inference input '{}' data-type is '{}', but model '{model}' expects '{}'",
                input.name, input.datatype, want
            )));
        }
        let count = element_count(&input.shape, &input.name, Some(model))?;
        let dims: &[i64] = if batching {
            let Some((&b, rest)) = input.shape.split_first() else {
                return Err(Error::invalid_arg(format!(
                    "unexpected shape for input '{}' for model '{model}'. Expected [-1,{}], got []. NOTE: Setting a non-zero max_batch_size in the model config requires a batch dimension to be prepended to each input shape.",
                    input.name,
                    cfg.dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(",")
                )));
            };
            match batch_size {
                None => batch_size = Some(b),
                Some(prev) if prev != b => {
                    return Err(Error::invalid_arg(format!(
                        "input '{}' batch size does not match other inputs for '{model}': {b} vs {prev}",
                        input.name
                    )));
                }
                _ => {}
            }
            rest
        } else {
            &input.shape
        };
        let matches = dims.len() == cfg.dims.len()
            && dims.iter().zip(&cfg.dims).all(|(&d, &c)| c == -1 || c == d);
        if !matches {
            let mut expected = cfg.dims.clone();
            if batching {
                expected.insert(0, -1);
            }
            return Err(Error::invalid_arg(format!(
                "unexpected shape for input '{}' for model '{model}'. Expected {}, got {}",
                input.name,
                shape_str(&expected),
                shape_str(&input.shape)
            )));
        }
        match fixed_byte_size(input.datatype, count, &input.name, Some(model))? {
            Some(expected) => {
                if input.data.len() as u64 != expected {
                    return Err(byte_size_mismatch(
                        &input.name,
                        model,
                        expected,
                        input.data.len() as u64,
                    ));
                }
            }
            None => {
                split_bytes_elements(
                    &input.data,
                    count,
                    &format!("input '{}' for model '{model}'", input.name),
                )?;
            }
        }
        let shape = match &cfg.reshape {
            Some(r) => {
                let mut s = resolve_reshape(
                    &r.shape,
                    if batching { count / (batch_size.unwrap_or(1).max(1) as u64) } else { count },
                );
                if batching {
                    s.insert(0, batch_size.unwrap_or(1));
                }
                s
            }
            None => input.shape.clone(),
        };
        inputs.push(Tensor::new(input.name.clone(), input.datatype, shape, input.data.clone()));
    }
    let missing: Vec<&str> = config
        .input
        .iter()
        .filter(|i| !i.optional && !req.inputs.iter().any(|r| r.name == i.name))
        .map(|i| i.name.as_str())
        .collect();
    if !missing.is_empty() {
        let got: Vec<String> = req.inputs.iter().map(|i| format!("'{}'", i.name)).collect();
        let miss: Vec<String> = missing.iter().map(|n| format!("'{n}'")).collect();
        return Err(Error::invalid_arg(format!(
            "expected {} inputs but got {} inputs for model '{model}'. Got input(s) [{}], but missing required input(s) [{}]. Please provide all required input(s).",
            config.input.iter().filter(|i| !i.optional).count(),
            req.inputs.len(),
            got.join(","),
            miss.join(",")
        )));
    }
    let batch = if batching { batch_size.unwrap_or(1) } else { 1 };
    if batching && (batch < 1 || batch > config.max_batch_size as i64) {
        return Err(Error::invalid_arg(format!(
            "inference request batch-size must be <= {} for '{model}'",
            config.max_batch_size
        )));
    }
    let mut outputs = Vec::new();
    if req.outputs.is_empty() {
        outputs.extend(config.output.iter().map(|o| o.name.clone()));
    } else {
        for o in &req.outputs {
            if !config.output.iter().any(|c| c.name == o.name) {
                return Err(Error::invalid_arg(format!(
                    "unexpected inference output '{}' for model '{model}'",
                    o.name
                )));
            }
            if outputs.contains(&o.name) {
                return Err(Error::invalid_arg(format!(
                    "output '{}' already exists in request",
                    o.name
                )));
            }
            outputs.push(o.name.clone());
        }
    }
    Ok(Prepared { inputs, outputs, batch_size: batch as u64 })
}

/// A reshape target with its one `-1` (if any) resolved from the element count.
fn resolve_reshape(shape: &[i64], count: u64) -> Vec<i64> {
    let known: i64 = shape.iter().filter(|&&d| d > 0).product();
    shape.iter().map(|&d| if d == -1 && known > 0 { (count as i64) / known } else { d }).collect()
}

/// Output tensors from the engine, shaped as the config declares when the output has a `reshape`.
pub(crate) fn finish_outputs(
    config: &ModelConfig,
    mut outputs: Vec<Tensor>,
    batch: u64,
) -> Vec<Tensor> {
    for t in &mut outputs {
        if let Some(cfg) = config.output.iter().find(|o| o.name == t.name)
            && cfg.reshape.is_some()
        {
            let count = t.element_count();
            let per = if config.max_batch_size > 0 { count / batch.max(1) } else { count };
            let mut s = resolve_reshape(&cfg.dims, per);
            if config.max_batch_size > 0 {
                s.insert(0, batch as i64);
            }
            t.shape = s;
        }
    }
    outputs
}
