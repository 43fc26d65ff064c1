//! The backend API: what an engine (a backend, in Triton's words) implements, and the registry the binary
//! fills with them.
//!
//! An [`Engine`] loads one instance of a model version (its own session, owned by one scheduler thread);
//! the instance executes a batch ([`EngineInstance::execute`]) or, for a decoupled model, one request
//! whose zero or more responses it sends through a [`Responder`]. Engines know nothing about model
//! configs, front ends or scheduling: the core hands them an [`InstanceSpec`].
//!
//! The core depends on no engine. The binary (or an embedding application) registers the engines it was
//! built with in a [`Backends`] registry; a model's `backend` / `platform` picks one by name.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use crate::{DataType, Error, Result, Tensor};

/// One input or output as the model file declares it. `dims` uses -1 for dimensions the file leaves open.
#[derive(Debug, Clone, PartialEq)]
pub struct IoSpec {
    pub name: String,
    /// `None` when the model uses a type Triton cannot express (the string says which).
    pub datatype: std::result::Result<DataType, String>,
    pub dims: Vec<i64>,
    /// An input with a default stored in the model file (an ONNX initializer that may be overridden).
    pub optional: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelSignature {
    pub inputs: Vec<IoSpec>,
    pub outputs: Vec<IoSpec>,
}

impl ModelSignature {
    /// The signature without the tensors named in `names` (those the server itself supplies or keeps).
    pub fn without(&self, names: &[String]) -> ModelSignature {
        let keep = |s: &&IoSpec| !names.contains(&s.name);
        ModelSignature {
            inputs: self.inputs.iter().filter(keep).cloned().collect(),
            outputs: self.outputs.iter().filter(keep).cloned().collect(),
        }
    }
}

/// What an engine needs to load one instance.
#[derive(Clone, Default)]
pub struct InstanceSpec {
    pub model_name: String,
    pub version: i64,
    /// The model file (e.g. `<repo>/<model>/1/model.onnx`); for an engine that needs none
    /// ([`Engine::needs_model_file`]), the version directory.
    pub model_file: PathBuf,
    /// Model config `parameters` (string values).
    pub parameters: HashMap<String, String>,
    /// The inputs and outputs the config declares, with the batch dimension (-1) first when the model
    /// batches; empty while auto-complete has still to fill them from the model file.
    pub declared: ModelSignature,
    /// The config's `max_batch_size` (0: the model has no batch dimension).
    pub max_batch_size: u64,
    /// Model config `optimization { graph { level } }` (0 when absent): ONNX Runtime's graph optimization
    /// level in Triton's numbering (-1 basic, 1 extended, 2 none, anything else all).
    pub graph_optimization_level: i32,
    /// Which instance of the version this is (0-based).
    pub instance_index: usize,
    /// The completed model config as Triton's JSON, for an engine that hands it to model code
    /// ([`Engine::takes_requests`]); empty for the others.
    pub config_json: String,
    /// The model's directory (Triton's `model_repository` argument of a Python model).
    pub model_dir: PathBuf,
    /// How model code calls other models (Triton's BLS), for an engine that runs model code.
    pub caller: Option<Arc<dyn ModelCaller>>,
}

/// A request model code sends to another model (Triton's BLS, `InferenceRequest.exec()`).
#[derive(Debug, Clone, Default)]
pub struct ModelCall {
    pub model_name: String,
    /// `None`: the latest ready version.
    pub model_version: Option<i64>,
    /// Id, parameters (JSON object), correlation ID and flags, the inputs, and the outputs wanted (empty:
    /// all of them).
    pub request: EngineRequest,
    /// Triton's request `timeout` in microseconds (0: none).
    pub timeout_us: u64,
    /// How many model-code calls led to this one (1 for a call made while serving a client's request).
    pub depth: u32,
    /// Set by the caller to cancel the call (Triton's `ResponseIterator.cancel()`): the callee's request is
    /// cancelled and the call ends with CANCELLED.
    pub cancelled: Arc<std::sync::atomic::AtomicBool>,
}

/// One response to a model call: its outputs and its parameters (one JSON object).
#[derive(Debug)]
pub struct CallResponse {
    pub outputs: Vec<Tensor>,
    pub parameters_json: String,
}

/// What a [`ModelCaller`] reports about one call, in order: responses, then `Final` or an error.
#[derive(Debug)]
pub enum CallEvent {
    Response(CallResponse),
    /// The last response (Triton's final flag sent with a response; a model that is not decoupled answers
    /// only this).
    Last(CallResponse),
    Final,
    Error(Error),
}

/// A model-control request from model code (Triton's `pb_utils.load_model`, `unload_model`,
/// `is_model_ready`).
#[derive(Debug, Clone)]
pub enum ModelControl {
    /// Load (or reload) a model, with an optional config (JSON) and `file:` overrides.
    Load {
        name: String,
        config: Option<String>,
        files: Vec<(String, Vec<u8>)>,
    },
    Unload {
        name: String,
        dependents: bool,
    },
    Ready {
        name: String,
        version: Option<i64>,
    },
}

/// The kind of a metric family that model code defines (Triton's `pb_utils.MetricFamily`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

/// What model code does with its metrics. Labels are (name, value) pairs.
#[derive(Debug, Clone)]
pub enum MetricOp {
    /// Defines a family (again: the same kind answers the existing one).
    Family {
        name: String,
        description: String,
        kind: MetricKind,
    },
    /// Defines one metric of a family (a histogram with its bucket bounds).
    Metric {
        family: String,
        labels: Vec<(String, String)>,
        buckets: Vec<f64>,
    },
    Increment {
        family: String,
        labels: Vec<(String, String)>,
        by: f64,
    },
    Set {
        family: String,
        labels: Vec<(String, String)>,
        value: f64,
    },
    Observe {
        family: String,
        labels: Vec<(String, String)>,
        value: f64,
    },
    /// Answers the value (a histogram's sum).
    Value {
        family: String,
        labels: Vec<(String, String)>,
    },
}

/// Lets model code call the server's models. The core implements it; the answer arrives through `sink`
/// from another thread (a model that expects one response gets `Response` then `Final`).
pub trait ModelCaller: Send + Sync {
    fn call(&self, call: ModelCall, sink: Box<dyn FnMut(CallEvent) + Send>);
    /// Runs a model-control request (blocking until it is done); `Ready` answers the readiness, the others
    /// `true`.
    fn control(&self, request: ModelControl) -> Result<bool>;
    /// Defines or updates a metric of model code; answers the metric's value (0 when there is none).
    fn metric(&self, op: MetricOp) -> Result<f64>;
}

impl std::fmt::Debug for InstanceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstanceSpec")
            .field("model_name", &self.model_name)
            .field("version", &self.version)
            .field("model_file", &self.model_file)
            .field("instance_index", &self.instance_index)
            .finish_non_exhaustive()
    }
}

impl InstanceSpec {
    /// Every declared input and output with its data type.
    pub fn declared_types(&self) -> impl Iterator<Item = (&str, DataType)> {
        let all = self.declared.inputs.iter().chain(&self.declared.outputs);
        all.filter_map(|s| s.datatype.as_ref().ok().map(|&t| (s.name.as_str(), t)))
    }
}

/// A sequence's correlation ID as the client sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorrelationId {
    Uint(u64),
    String(String),
}

/// What an engine learns about one request besides its tensors. Filled only for engines that see
/// requests ([`Engine::takes_requests`]); the others get the default.
#[derive(Debug, Clone, Default)]
pub struct RequestInfo {
    pub id: String,
    /// The request's parameters as one JSON object (`{}` when it has none).
    pub parameters_json: String,
    /// The sequence the request belongs to.
    pub correlation_id: Option<CorrelationId>,
    /// [`RequestInfo::SEQUENCE_START`] and [`RequestInfo::SEQUENCE_END`] (Triton's request flags).
    pub flags: u32,
    /// How many model-code calls (BLS) led to this request (0: a client's).
    pub depth: u32,
    /// The request's `timeout` parameter in microseconds (0: none), as model code reads it.
    pub timeout_us: u64,
}

impl RequestInfo {
    pub const SEQUENCE_START: u32 = 1;
    pub const SEQUENCE_END: u32 = 2;
}

/// One request as an engine executes it: its tensors (wire layout, full shapes), the outputs asked for (in
/// order) and what else the client said.
#[derive(Debug, Clone, Default)]
pub struct EngineRequest {
    pub info: RequestInfo,
    pub inputs: Vec<Tensor>,
    pub outputs: Vec<String>,
}

impl EngineRequest {
    /// A request with no metadata.
    pub fn new(inputs: Vec<Tensor>, outputs: Vec<String>) -> Self {
        EngineRequest { info: RequestInfo::default(), inputs, outputs }
    }
}

/// Where a decoupled model's instance sends the responses of one request. The final flag is the core's:
/// it follows when [`EngineInstance::execute_decoupled`] returns.
pub trait Responder {
    /// Sends one response. Blocks while the caller's buffer of unwritten responses is full; fails with
    /// CANCELLED once the caller has gone away, and the instance should stop working on the request then.
    fn send(&self, outputs: Vec<Tensor>) -> Result<()>;
    /// Whether the request is cancelled: the caller has gone away, or asked for cancellation while still
    /// reading (Triton's BLS `ResponseIterator.cancel()`).
    fn is_cancelled(&self) -> bool;
    /// Whether nobody reads the responses any more: the request may end at once.
    fn caller_gone(&self) -> bool {
        self.is_cancelled()
    }
}

/// Where the responses of one request go when its instance may answer after [`EngineInstance::submit`]
/// returned, from any thread (Triton's Python models: a response sender used from the model's own thread,
/// or `async def execute` of a decoupled model). For a request of a model that is not decoupled, the first
/// response is the answer and ends it.
pub trait Answers: Responder + Send + Sync {
    /// Ends the request: `Ok` is the final flag, an error its last response. Only the first call counts;
    /// an `Answers` dropped unfinished ends its request with an INTERNAL error.
    fn finish(&self, result: Result<()>);
    /// Sends the last response and ends the request (Triton's final flag sent with a response).
    fn send_last(&self, outputs: Vec<Tensor>) -> Result<()> {
        let sent = self.send(outputs);
        self.finish(sent.clone());
        sent
    }
    /// Sends a response with the parameters model code set on it (Triton's
    /// `InferenceResponse(parameters=…)`: a JSON object of bools, numbers and strings; empty: none), the
    /// last one when `last`. The default drops the parameters.
    fn send_with_parameters(
        &self,
        outputs: Vec<Tensor>,
        parameters: &str,
        last: bool,
    ) -> Result<()> {
        let _ = parameters;
        if last { self.send_last(outputs) } else { self.send(outputs) }
    }
}

/// A model's own readiness check (Triton's `is_ready()` of a Python model), asked on every readiness request
/// for the model.
pub trait ReadinessCheck: Send + Sync {
    /// Whether the instance is ready; blocks at most a few seconds (a check that does not answer in time is
    /// "not ready").
    fn is_ready(&self) -> bool;
}

/// One request handed to [`EngineInstance::submit`] with where its responses go.
pub struct Submitted {
    pub request: EngineRequest,
    pub answers: Arc<dyn Answers>,
}

/// A loaded model instance. Owned by exactly one execution thread.
pub trait EngineInstance: Send {
    /// The model file's own signature (an engine without a file answers the declared one).
    fn signature(&self) -> &ModelSignature;
    /// Runs one batch. `inputs` carry full shapes (batch dimension included when the model batches) and wire
    /// layout data; the result holds the requested outputs in the order asked for.
    fn execute(&mut self, inputs: &[Tensor], outputs: &[String]) -> Result<Vec<Tensor>>;
    /// Hands over requests that arrived together, for an engine that sees requests
    /// ([`Engine::takes_requests`]). Returns when the instance can take more; each request ends when its
    /// [`Answers::finish`] is called, which may be later. The default runs each request at once through
    /// [`EngineInstance::execute_decoupled`].
    fn submit(&mut self, requests: Vec<Submitted>) {
        for Submitted { request, answers } in requests {
            let result = self.execute_decoupled(&request, &*answers);
            answers.finish(result);
        }
    }
    /// The instance's own readiness check, when its model has one.
    fn readiness(&self) -> Option<Arc<dyn ReadinessCheck>> {
        None
    }
    /// Runs one request of a decoupled model (`model_transaction_policy { decoupled: true }`), sending zero
    /// or more responses through `responder`. An error ends the request with that error as its last
    /// response. The default sends what [`EngineInstance::execute`] returns as the one response.
    fn execute_decoupled(
        &mut self,
        request: &EngineRequest,
        responder: &dyn Responder,
    ) -> Result<()> {
        let out = self.execute(&request.inputs, &request.outputs)?;
        responder.send(out)
    }
}

/// An execution engine (ONNX Runtime, tract, the built-in test backends, …).
pub trait Engine: Send + Sync {
    fn name(&self) -> &'static str;
    fn load(&self, spec: &InstanceSpec) -> Result<Box<dyn EngineInstance>>;
    /// Whether each version directory must hold the model file (`default_model_filename`). Backends that
    /// need only a `config.pbtxt` answer `false`.
    fn needs_model_file(&self) -> bool {
        true
    }
    /// Whether the engine runs model code that sees each request (Triton's Python backend): the core then
    /// fills [`RequestInfo`] and [`InstanceSpec::config_json`], completes the config before loading, and
    /// hands requests over, alone or as a dynamic batch, each with where its answers go
    /// ([`EngineInstance::submit`]) instead of concatenated tensors; decoupled requests are batched too.
    fn takes_requests(&self) -> bool {
        false
    }
    /// Lets model code complete the config before it is checked (Triton's `auto_complete_config`).
    /// `spec.config_json` holds the config as read; the answer is the config to use instead, or `None` to
    /// keep it. Called once per load, before any instance, and only while auto-complete is on.
    fn auto_complete(&self, spec: &InstanceSpec) -> Result<Option<String>> {
        let _ = spec;
        Ok(None)
    }
    /// Whether the engine can execute tensors of `datatype` (checked against the completed config).
    fn supports(&self, datatype: DataType) -> bool {
        let _ = datatype;
        true
    }
}

/// Builds an engine the first time a model asks for it (ONNX Runtime loads its shared library then).
pub type EngineFactory =
    Box<dyn Fn() -> std::result::Result<Arc<dyn Engine>, String> + Send + Sync>;

/// An engine, or the factory that builds it on first use.
enum Registered {
    Ready(Arc<dyn Engine>),
    Lazy { factory: EngineFactory, engine: OnceLock<std::result::Result<Arc<dyn Engine>, String>> },
}

/// The engines a server can run, by backend name. The binary fills it with what it was built with.
#[derive(Default)]
pub struct Backends {
    engines: BTreeMap<String, Registered>,
}

impl std::fmt::Debug for Backends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.engines.keys()).finish()
    }
}

impl Backends {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers an engine that exists already.
    pub fn register(&mut self, name: &str, engine: Arc<dyn Engine>) -> &mut Self {
        self.engines.insert(name.to_string(), Registered::Ready(engine));
        self
    }

    /// Registers an engine built on first use; a factory error is the load error of every model that
    /// asks for it.
    pub fn register_lazy(&mut self, name: &str, factory: EngineFactory) -> &mut Self {
        let lazy = Registered::Lazy { factory, engine: OnceLock::new() };
        self.engines.insert(name.to_string(), lazy);
        self
    }

    /// The registered names, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.engines.keys().map(String::as_str).collect()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.engines.contains_key(name)
    }

    /// The engine registered as `name`, built now if it is lazy. UNAVAILABLE when its factory failed;
    /// UNSUPPORTED, naming the built-in backends, when nothing has that name.
    pub fn get(&self, name: &str) -> Result<Arc<dyn Engine>> {
        let Some(r) = self.engines.get(name) else {
            return Err(Error::unsupported(format!(
                "backend '{name}' is not supported: this server has no backend of that name (the backends \
                 built in are: {})",
                self.names().join(", ")
            )));
        };
        match r {
            Registered::Ready(engine) => Ok(engine.clone()),
            Registered::Lazy { factory, engine } => {
                engine.get_or_init(factory).clone().map_err(Error::unavailable)
            }
        }
    }
}
