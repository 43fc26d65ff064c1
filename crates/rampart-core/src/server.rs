//! The core API every front end (and an embedding application) calls.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use std::time::{Duration, Instant};

use rampart_model_config::ModelConfig;
use rampart_types::{DataType, Error, InstanceSpec, Result};
use tokio::sync::Notify;

use crate::config;
use crate::control::{self, LoadRequest, ModelControlMode};
use crate::executor::Instance;
use crate::infer::{InferRequest, InferResponse};
use crate::model::{ModelState, ModelVersion, ResponseStream};
use crate::repository;
use crate::stats::{ModelStats, VersionStats};

/// Extensions reported by server metadata: only what this build implements.
pub const EXTENSIONS: &[&str] = &[
    "classification",
    "model_repository",
    "model_repository(unload_dependents)",
    "schedule_policy",
    "model_configuration",
    "system_shared_memory",
    "binary_tensor_data",
    "parameters",
    "statistics",
    "trace",
    "logging",
];

/// Everything the core needs to start; built by the binary from flags, or directly by tests and embedders.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub id: String,
    pub version: String,
    pub model_repositories: Vec<PathBuf>,
    /// Fill missing inputs/outputs/max_batch_size from the model file (`--disable-auto-complete-config` off).
    pub autocomplete: bool,
    pub strict_readiness: bool,
    pub exit_on_error: bool,
    /// The engines models run on, by backend name: the binary registers what it was built with.
    pub backends: Arc<rampart_types::Backends>,
    /// The backend that runs ONNX models (`platform: "onnxruntime_onnx"`, `backend: "onnxruntime"`) unless
    /// a model's `engine` parameter names another: `onnxruntime` or `tract`.
    pub default_onnx_backend: String,
    /// Requests that may wait per model version (`--max-queued-requests`); more are answered UNAVAILABLE.
    pub max_queued_requests: usize,
    /// How many inputs, outputs and parameters one request may carry.
    pub request_limits: crate::infer::RequestLimits,
    /// Bytes of the response cache (`--cache-config local,size=N`); `None`: no cache.
    pub response_cache_bytes: Option<u64>,
    /// `--model-control-mode`.
    pub model_control_mode: ModelControlMode,
    /// Models loaded at startup in explicit mode (`--load-model`); `*` alone loads every model.
    pub startup_models: Vec<String>,
    /// `--allow-model-file-override`: load requests may carry `file:` model files.
    pub allow_model_file_override: bool,
    /// How long an unload waits for the model's in-flight requests before it returns.
    pub unload_timeout: Duration,
    /// The live log settings, when the process's log subscriber consults them (the logging API changes
    /// them); `None`: the logging API answers that logging is managed elsewhere.
    pub log_control: Option<Arc<crate::logging::LogControl>>,
    /// `--trace-config` (mode `triton`).
    pub trace: crate::trace::TraceConfig,
    /// `--metrics-config`: which latency summaries and histograms the versions keep.
    pub metrics: crate::metrics::MetricsOptions,
    /// `--allow-client-shm`: clients may register system shared-memory regions and use them for tensors.
    pub allow_client_shm: bool,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            id: "triton".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            model_repositories: vec![],
            autocomplete: true,
            strict_readiness: true,
            exit_on_error: true,
            backends: Default::default(),
            default_onnx_backend: "onnxruntime".into(),
            max_queued_requests: rampart_scheduler::DEFAULT_QUEUE_CAPACITY,
            request_limits: Default::default(),
            response_cache_bytes: None,
            model_control_mode: ModelControlMode::None,
            startup_models: vec![],
            allow_model_file_override: false,
            unload_timeout: Duration::from_secs(30),
            log_control: None,
            trace: Default::default(),
            metrics: Default::default(),
            allow_client_shm: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartupError(pub String);

#[derive(Clone)]
struct VersionEntry {
    state: ModelState,
    reason: String,
    served: Option<Arc<ModelVersion>>,
}

/// One model as the server knows it. Entries are immutable: a load, reload or unload builds a new one and
/// swaps the whole table, so a request sees either the old model or the new one, never a mix.
#[derive(Clone)]
struct ModelEntry {
    versions: BTreeMap<i64, VersionEntry>,
    /// Set when the model failed before any version could be considered (bad config, duplicate name, …), or
    /// while its first load runs.
    error: Option<String>,
    loading: bool,
    /// The files this entry was built from, for polling to tell what changed.
    fingerprint: Option<control::Fingerprint>,
    /// Files that failed to load over this entry (which kept serving): polling retries only once they change.
    failed_fingerprint: Option<control::Fingerprint>,
    /// Built from a `config` or `file:` override: a later load reloads it even if the repository is unchanged.
    overridden: bool,
    /// The directory of a `file:` override, removed once no table refers to this entry.
    _files: Option<Arc<tempfile::TempDir>>,
}

impl ModelEntry {
    fn failed(reason: String) -> Self {
        ModelEntry { error: Some(reason), ..Self::empty() }
    }

    fn empty() -> Self {
        ModelEntry {
            versions: BTreeMap::new(),
            error: None,
            loading: false,
            fingerprint: None,
            failed_fingerprint: None,
            overridden: false,
            _files: None,
        }
    }

    fn served(&self) -> impl Iterator<Item = &Arc<ModelVersion>> {
        self.versions.values().filter_map(|v| v.served.as_ref())
    }

    /// The first failure of this entry, if any.
    fn failure(&self) -> Option<String> {
        self.error.clone().or_else(|| {
            self.versions.values().find(|v| v.state != ModelState::Ready).map(|v| v.reason.clone())
        })
    }

    /// Every version of `from` marked `state`, none served.
    fn retired(from: &ModelEntry, state: ModelState, reason: &str) -> ModelEntry {
        let versions = from
            .versions
            .keys()
            .map(|&v| (v, VersionEntry { state, reason: reason.to_string(), served: None }))
            .collect();
        ModelEntry { versions, ..Self::empty() }
    }
}

/// The reason an unloaded version reports (Triton's wording; strict readiness accepts it).
const UNLOADED: &str = "unloaded";

type Models = BTreeMap<String, Arc<ModelEntry>>;

struct Inner {
    options: ServerOptions,
    cache: Option<crate::cache::ResponseCache>,
    models: ArcSwap<Models>,
    /// Serialises loads, unloads and polls (requests never take it).
    control: Mutex<()>,
    reaper: control::Reaper,
    tracer: Arc<crate::trace::Tracer>,
    /// Cloud repositories, mirrored again before each poll.
    remotes: Vec<Arc<crate::remote::RemoteRepository>>,
    shm: crate::shm::SharedMemory,
    exiting: AtomicBool,
    in_flight: AtomicUsize,
    idle: Notify,
}

/// A running Rampart core. Cheap to clone.
#[derive(Clone)]
pub struct Server {
    inner: Arc<Inner>,
}

#[derive(Debug, Clone)]
pub struct ServerMetadata {
    pub name: String,
    pub version: String,
    pub extensions: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct TensorMetadata {
    pub name: String,
    pub datatype: DataType,
    pub shape: Vec<i64>,
}

#[derive(Debug, Clone)]
pub struct ModelMetadata {
    pub name: String,
    pub versions: Vec<String>,
    pub platform: String,
    pub inputs: Vec<TensorMetadata>,
    pub outputs: Vec<TensorMetadata>,
}

#[derive(Debug, Clone)]
pub struct IndexEntry {
    pub name: String,
    /// Empty when the model failed before a version was chosen.
    pub version: String,
    /// `None` for a model in the repository that was never loaded.
    pub state: Option<ModelState>,
    pub reason: String,
}

/// Parses a version string from a request: empty means "latest ready".
pub fn parse_version(v: &str) -> Result<Option<i64>> {
    if v.is_empty() {
        return Ok(None);
    }
    match v.parse::<i64>() {
        Ok(n) if n >= 0 => Ok(Some(n)),
        _ => Err(Error::invalid_arg(format!(
            "failed to parse model version '{v}': expected a non-negative integer"
        ))),
    }
}

/// Counts a request as in flight until dropped, so shutdown can wait for it.
struct InFlight(Arc<Inner>);

impl InFlight {
    fn new(inner: &Arc<Inner>) -> Result<Self> {
        if inner.exiting.load(Ordering::Acquire) {
            return Err(Error::unavailable("Server exiting"));
        }
        inner.in_flight.fetch_add(1, Ordering::AcqRel);
        Ok(InFlight(inner.clone()))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Server {
    /// Loads the startup models: every model of every repository, or in explicit mode the `startup_models`.
    /// Blocking: call it before serving, or from a blocking thread.
    pub fn start(mut options: ServerOptions) -> std::result::Result<Server, StartupError> {
        if options.model_repositories.is_empty() {
            return Err(StartupError("at least one --model-repository is required".into()));
        }
        // Cloud repositories are mirrored locally first; from then on they are local repositories.
        let (mut local, remotes) = crate::remote::open_all(&options.model_repositories)
            .map_err(|e| StartupError(e.message().to_string()))?;
        for r in &remotes {
            r.sync().map_err(|e| StartupError(e.message().to_string()))?;
            tracing::info!(
                "model repository '{}' mirrored to '{}'",
                r.location(),
                r.local_path().display()
            );
            local.push(r.local_path().to_path_buf());
        }
        options.model_repositories = local;
        let found = repository::scan(&options.model_repositories)
            .map_err(|e| StartupError(e.to_string()))?;
        let cache = options.response_cache_bytes.map(crate::cache::ResponseCache::new);
        let wanted: Vec<(String, Vec<PathBuf>)> = match options.model_control_mode {
            ModelControlMode::Explicit if options.startup_models.iter().any(|m| m != "*") => {
                let mut out = Vec::new();
                for name in &options.startup_models {
                    control::validate_model_name(name)
                        .map_err(|e| StartupError(e.message().to_string()))?;
                    out.push((name.clone(), found.get(name).cloned().unwrap_or_default()));
                }
                out
            }
            ModelControlMode::Explicit if options.startup_models.is_empty() => vec![],
            _ => found.into_iter().collect(),
        };
        let tracer = Arc::new(crate::trace::Tracer::new(options.trace.clone()));
        let server = Server {
            inner: Arc::new(Inner {
                tracer,
                remotes,
                shm: crate::shm::SharedMemory::new(options.allow_client_shm),
                options,
                cache,
                models: ArcSwap::from_pointee(Models::new()),
                control: Mutex::new(()),
                reaper: control::Reaper::new(),
                exiting: AtomicBool::new(false),
                in_flight: AtomicUsize::new(0),
                idle: Notify::new(),
            }),
        };
        let mut models = Models::new();
        for (name, dirs) in wanted {
            let entry = match dirs.as_slice() {
                [] => ModelEntry::failed(format!(
                    "failed to load '{name}': there is no model directory '{name}' in the model repository"
                )),
                [dir] => server.build_entry(&name, dir, None, None, None),
                _ => ModelEntry::failed(repository::duplicate_message(&name, &dirs)),
            };
            if server.inner.options.exit_on_error {
                if let Some(reason) = entry.failure() {
                    return Err(StartupError(format!("failed to load '{name}': {reason}")));
                }
            }
            log_outcome(&name, &entry);
            models.insert(name, Arc::new(entry));
        }
        server.inner.models.store(Arc::new(models));
        Ok(server)
    }

    /// Follows the repository every `every` (poll mode) on a thread of its own, until the server is dropped
    /// or shut down.
    pub fn start_polling(&self, every: Duration) {
        let weak = Arc::downgrade(&self.inner);
        let spawned = std::thread::Builder::new().name("rampart-poll".into()).spawn(move || {
            loop {
                std::thread::sleep(every);
                let Some(inner) = weak.upgrade() else { return };
                if inner.exiting.load(Ordering::Acquire) {
                    return;
                }
                if let Err(e) = (Server { inner }).poll_repository() {
                    tracing::error!("failed to poll the model repository: {}", e.message());
                }
            }
        });
        if let Err(e) = spawned {
            tracing::error!("cannot start the repository poller: {e}");
        }
    }

    pub fn options(&self) -> &ServerOptions {
        &self.inner.options
    }

    /// Triton's startup model table.
    pub fn model_status_table(&self) -> String {
        let rows: Vec<(String, String, String)> = self
            .repository_index(false)
            .into_iter()
            .filter_map(|e| {
                let status = match e.state? {
                    ModelState::Ready => "READY".to_string(),
                    s => format!("{}: {}", s.as_str(), e.reason),
                };
                Some((e.name, e.version, status))
            })
            .collect();
        let w0 = rows.iter().map(|r| r.0.len()).max().unwrap_or(0).max(5);
        let w1 = rows.iter().map(|r| r.1.len()).max().unwrap_or(0).max(7);
        let w2 = rows.iter().map(|r| r.2.len()).max().unwrap_or(0).max(6);
        let line = format!("+-{}-+-{}-+-{}-+\n", "-".repeat(w0), "-".repeat(w1), "-".repeat(w2));
        let mut out = String::new();
        out.push_str(&line);
        out.push_str(&format!("| {:w0$} | {:w1$} | {:w2$} |\n", "Model", "Version", "Status"));
        out.push_str(&line);
        for (m, v, s) in rows {
            out.push_str(&format!("| {m:w0$} | {v:w1$} | {s:w2$} |\n"));
        }
        out.push_str(&line);
        out
    }

    pub fn is_live(&self) -> Result<bool> {
        if self.inner.exiting.load(Ordering::Acquire) {
            return Err(Error::unavailable("Server exiting"));
        }
        Ok(true)
    }

    pub fn is_ready(&self) -> Result<bool> {
        self.is_live()?;
        if !self.inner.options.strict_readiness {
            return Ok(true);
        }
        // Every model the server knows has versions, all READY or unloaded (Triton's rule).
        Ok(self.inner.models.load().values().all(|m| {
            m.error.is_none()
                && !m.loading
                && !m.versions.is_empty()
                && m.versions.values().all(|v| {
                    v.state == ModelState::Ready
                        || (v.state == ModelState::Unavailable && v.reason == UNLOADED)
                })
        }))
    }

    pub fn metadata(&self) -> ServerMetadata {
        ServerMetadata {
            name: self.inner.options.id.clone(),
            version: self.inner.options.version.clone(),
            extensions: EXTENSIONS
                .iter()
                .filter(|e| match **e {
                    "system_shared_memory" => crate::shm::BUILT,
                    "trace" => crate::trace::BUILT,
                    _ => true,
                })
                .map(|s| s.to_string())
                .collect(),
        }
    }

    fn entry(&self, name: &str) -> Result<Arc<ModelEntry>> {
        match self.inner.models.load().get(name) {
            Some(e) => Ok(e.clone()),
            None => {
                control::validate_model_name(name)?;
                Err(Error::not_found(format!("Request for unknown model: '{name}' is not found")))
            }
        }
    }

    /// The served version `version` (or the latest READY one).
    pub fn model(&self, name: &str, version: Option<i64>) -> Result<Arc<ModelVersion>> {
        let models = self.inner.models.load();
        let Some(entry) = models.get(name) else {
            control::validate_model_name(name)?;
            return Err(Error::not_found(format!(
                "Request for unknown model: '{name}' is not found"
            )));
        };
        match version {
            Some(v) => {
                let ve = entry.versions.get(&v).ok_or_else(|| {
                    Error::not_found(format!(
                        "Request for unknown model: '{name}' version {v} is not found"
                    ))
                })?;
                ve.served.clone().ok_or_else(|| {
                    Error::unavailable(format!(
                        "Request for unknown model: '{name}' version {v} is not at ready state"
                    ))
                })
            }
            None => entry.versions.values().rev().find_map(|v| v.served.clone()).ok_or_else(|| {
                Error::not_found(format!(
                    "Request for unknown model: '{name}' has no available versions"
                ))
            }),
        }
    }

    pub fn model_ready(&self, name: &str, version: Option<i64>) -> Result<bool> {
        match self.model(name, version) {
            Ok(_) => Ok(true),
            Err(e) if e.code() == rampart_types::Code::Unavailable => Ok(false),
            Err(e) => {
                // A known model with no ready version is "not ready", not "unknown".
                if version.is_none() && self.inner.models.load().contains_key(name) {
                    Ok(false)
                } else {
                    Err(e)
                }
            }
        }
    }

    pub fn model_config(&self, name: &str, version: Option<i64>) -> Result<Arc<ModelConfig>> {
        Ok(self.model(name, version)?.config.clone())
    }

    pub fn model_metadata(&self, name: &str, version: Option<i64>) -> Result<ModelMetadata> {
        let served = self.model(name, version)?;
        let versions = match version {
            Some(v) => vec![v.to_string()],
            None => self.entry(name)?.served().map(|m| m.version.to_string()).collect(),
        };
        let c = &served.config;
        let batch: &[i64] = if c.max_batch_size > 0 { &[-1] } else { &[] };
        let tm = |name: &str, dt: i32, dims: &[i64]| TensorMetadata {
            name: name.to_string(),
            datatype: DataType::from_config_enum(dt).expect("validated at load"),
            shape: batch.iter().chain(dims).copied().collect(),
        };
        Ok(ModelMetadata {
            name: name.to_string(),
            versions,
            platform: if c.platform.is_empty() { c.backend.clone() } else { c.platform.clone() },
            inputs: c.input.iter().map(|i| tm(&i.name, i.data_type, &i.dims)).collect(),
            outputs: c.output.iter().map(|o| tm(&o.name, o.data_type, &o.dims)).collect(),
        })
    }

    /// One request, one response. A decoupled model is refused: use [`Server::infer_stream`].
    pub async fn infer(&self, req: InferRequest) -> Result<InferResponse> {
        self.infer_unary(req, "infer").await
    }

    /// [`Server::infer`] for a front end whose endpoint answers one response per request: a decoupled
    /// model is refused as UNSUPPORTED "`endpoint` doesn't support models with decoupled transaction
    /// policy" (Triton's words, with "HTTP end point" or "ModelInfer RPC").
    pub async fn infer_unary(&self, req: InferRequest, endpoint: &str) -> Result<InferResponse> {
        let _guard = InFlight::new(&self.inner)?;
        self.inner.options.request_limits.check(&req)?;
        let model = self.model(&req.model_name, req.model_version)?;
        if model.decoupled {
            return Err(Error::unsupported(format!(
                "{endpoint} doesn't support models with decoupled transaction policy"
            )));
        }
        self.infer_on(model, req).await
    }

    /// A request whose responses are streamed: one for most models, zero or more for a decoupled one
    /// (`model_transaction_policy { decoupled: true }`), the last flagged. Errors before the request
    /// reaches the model are returned at once.
    pub async fn infer_stream(&self, mut req: InferRequest) -> Result<ResponseStream> {
        let guard = InFlight::new(&self.inner)?;
        self.inner.options.request_limits.check(&req)?;
        let model = self.model(&req.model_name, req.model_version)?;
        if !model.decoupled {
            return Ok(ResponseStream::one(self.infer_on(model, req).await?));
        }
        if req.outputs.iter().any(|o| o.classification.is_some() || o.shm.is_some()) {
            return Err(Error::invalid_arg(format!(
                "model '{}' is decoupled: its outputs cannot use classification or shared memory",
                req.model_name
            )));
        }
        self.take_extensions(&mut req)?;
        Ok(ResponseStream::many(model.infer_decoupled(req)?, Box::new(guard)))
    }

    async fn infer_on(
        &self,
        model: Arc<ModelVersion>,
        mut req: InferRequest,
    ) -> Result<InferResponse> {
        let extensions = self.take_extensions(&mut req)?;
        let response = model.infer(req).await?;
        if extensions.is_empty() {
            return Ok(response);
        }
        finish_extensions(&model, response, extensions)
    }

    /// The registered system shared-memory regions (the shared-memory APIs of every front end).
    pub fn shared_memory(&self) -> &crate::shm::SharedMemory {
        &self.inner.shm
    }

    /// Reads inputs held in shared memory into the request, and checks the outputs' extensions before the
    /// model runs: regions are leased (bounds checked, held open) now, so an unregister during the
    /// inference cannot take them away.
    fn take_extensions(&self, req: &mut InferRequest) -> Result<Vec<OutputExtension>> {
        // Inputs are copied out of their regions, so what one request may read is bounded, and a fixed-size
        // tensor's byte size is checked against its shape (after the region's own checks) before anything is read.
        let mut total: u64 = 0;
        for input in req.inputs.iter_mut() {
            let Some(r) = &input.shm else { continue };
            let lease = self.inner.shm.lease(r)?;
            let count = rampart_types::tensor::element_count(&input.shape)?;
            if let Some(expected) = rampart_types::tensor::fixed_byte_size(input.datatype, count)? {
                if r.byte_size != expected {
                    return Err(crate::infer::byte_size_mismatch(
                        &input.name,
                        &req.model_name,
                        expected,
                        r.byte_size,
                    ));
                }
            }
            total = total.saturating_add(r.byte_size);
            if total > crate::shm::MAX_REQUEST_INPUT_BYTES {
                return Err(Error::invalid_arg(format!(
                    "the shared-memory inputs of one request exceed {} bytes",
                    crate::shm::MAX_REQUEST_INPUT_BYTES
                )));
            }
            input.data = lease.read()?;
        }
        let mut out = Vec::new();
        for o in req.outputs.iter().filter(|o| o.classification.is_some() || o.shm.is_some()) {
            if o.classification.is_some() && o.shm.is_some() {
                return Err(Error::invalid_arg(format!(
                    "output '{}' cannot combine 'shared_memory_region' with 'classification'",
                    o.name
                )));
            }
            let shm = match &o.shm {
                Some(r) => Some((r.clone(), self.inner.shm.lease(r)?)),
                None => None,
            };
            out.push(OutputExtension {
                name: o.name.clone(),
                classification: o.classification,
                shm,
            });
        }
        Ok(out)
    }

    /// Builds the request for a raw binary body (`Inference-Header-Content-Length: 0`): the body is the model's
    /// single input, batch 1, its shape deduced from the config.
    pub fn raw_request(
        &self,
        name: &str,
        version: Option<i64>,
        data: bytes::Bytes,
    ) -> Result<InferRequest> {
        let m = self.model(name, version)?;
        let c = &m.config;
        if c.input.len() != 1 {
            return Err(Error::invalid_arg(format!(
                "Raw request must only have 1 input (found 1) to be deduced but got {} inputs in '{name}' model configuration",
                c.input.len()
            )));
        }
        let input = &c.input[0];
        let datatype = DataType::from_config_enum(input.data_type).expect("validated at load");
        let mut shape = input.dims.clone();
        match datatype.element_size() {
            None => {
                if shape != [1] {
                    return Err(Error::invalid_arg(format!(
                        "For BYTE datatype raw input '{}', the model must have input shape [1]",
                        input.name
                    )));
                }
            }
            Some(size) => {
                let variable = shape.iter().filter(|&&d| d == -1).count();
                if variable > 1 {
                    return Err(Error::invalid_arg(format!(
                        "The shape of the raw input '{}' can not be deduced because there are more than one variable-sized dimension",
                        input.name
                    )));
                }
                let known: u64 = shape.iter().filter(|&&d| d > 0).map(|&d| d as u64).product();
                let elements = data.len() as u64 / size as u64;
                if variable == 1 {
                    if data.len() % size != 0 || known == 0 || elements % known != 0 {
                        return Err(Error::invalid_arg(format!(
                            "unexpected raw input size {} for input '{}' of model '{name}': not a whole number of {datatype} elements of shape {:?}",
                            data.len(),
                            input.name,
                            input.dims
                        )));
                    }
                    let fill = (elements / known) as i64;
                    shape.iter_mut().filter(|d| **d == -1).for_each(|d| *d = fill);
                }
            }
        }
        if c.max_batch_size > 0 {
            shape.insert(0, 1);
        }
        Ok(InferRequest {
            model_name: name.to_string(),
            model_version: version,
            inputs: vec![crate::infer::InputTensor::new(input.name.clone(), datatype, shape, data)],
            ..Default::default()
        })
    }

    /// Loads or reloads model `name` (explicit mode; `repository` is the optional repository name of the
    /// request). The old versions serve until the new ones are READY; if the new ones fail, the old ones keep
    /// serving and the error is returned. Blocking: call it from a blocking thread.
    pub fn load_model(&self, repository: &str, name: &str, request: LoadRequest) -> Result<()> {
        self.check_model_control(repository)?;
        control::validate_model_name(name)?;
        let options = &self.inner.options;
        if !request.files.is_empty() {
            if !options.allow_model_file_override {
                return Err(Error::new(
                    rampart_types::Code::PermissionDenied,
                    format!(
                        "load of '{name}' refused: 'file:' parameters upload model files, which this server does not allow (start it with --allow-model-file-override=true to permit it)"
                    ),
                ));
            }
            if request.config.is_none() {
                return Err(Error::invalid_arg(
                    "Load parameter 'config' must be specified for model file override",
                ));
            }
        }
        let _control = self.inner.control.lock().unwrap_or_else(|e| e.into_inner());
        let (dir, files) = if request.files.is_empty() {
            (repository::locate(&options.model_repositories, name)?, None)
        } else {
            let tmp = control::write_override(&request.files)?;
            (tmp.path().to_path_buf(), Some(Arc::new(tmp)))
        };
        self.load_locked(name, &dir, request.config.as_deref(), files)
    }

    /// Loads or reloads model `name` from `dir`, a model directory outside the repositories: the SageMaker
    /// multi-model load, whose front end decides which directories are acceptable. Explicit mode only.
    /// Blocking.
    /// The model is served as `name`; its config may name it after its directory instead. A failed first load
    /// leaves nothing behind (no UNAVAILABLE entry to turn readiness false).
    pub fn load_model_from(&self, name: &str, dir: &Path) -> Result<()> {
        self.check_model_control("")?;
        control::validate_model_name(name)?;
        let _control = self.inner.control.lock().unwrap_or_else(|e| e.into_inner());
        let known = self.inner.models.load().contains_key(name);
        let result = self.load_locked(name, dir, None, None);
        if result.is_err() && !known {
            self.inner.models.rcu(|models| {
                let mut next = Models::clone(models);
                next.remove(name);
                next
            });
        }
        result
    }

    /// The common end of a load; the caller holds the control lock.
    fn load_locked(
        &self,
        name: &str,
        dir: &Path,
        config: Option<&str>,
        files: Option<Arc<tempfile::TempDir>>,
    ) -> Result<()> {
        let previous = self.inner.models.load().get(name).cloned();
        if previous.as_ref().is_none_or(|p| p.served().next().is_none()) {
            self.set_entry(name, ModelEntry { loading: true, ..ModelEntry::empty() });
        }
        let entry = self.build_entry(name, dir, config, files, previous.as_deref());
        self.install(name, entry, previous)
    }

    /// Unloads model `name` (explicit mode): new requests for it are refused at once, and the call returns once
    /// its in-flight requests are answered (or after `unload_timeout`; they still finish). Unloading a model
    /// that is not loaded succeeds. Blocking.
    pub fn unload_model(
        &self,
        repository: &str,
        name: &str,
        _unload_dependents: bool,
    ) -> Result<()> {
        // `unload_dependents` concerns models loaded because of this one (ensembles); Rampart has none.
        self.check_model_control(repository)?;
        control::validate_model_name(name)?;
        let _control = self.inner.control.lock().unwrap_or_else(|e| e.into_inner());
        let Some(previous) = self.inner.models.load().get(name).cloned() else {
            return match repository::locate(&self.inner.options.model_repositories, name) {
                Ok(_) => Ok(()),
                Err(_) => Err(Error::not_found(format!(
                    "failed to unload '{name}': no model of that name is loaded or in the model repository"
                ))),
            };
        };
        self.unload_locked(name, &previous, self.inner.options.unload_timeout);
        Ok(())
    }

    /// Marks the versions of `previous` UNLOADING, waits up to `patience` for their requests, then records
    /// them as unloaded. The caller holds the control lock.
    fn unload_locked(&self, name: &str, previous: &Arc<ModelEntry>, patience: Duration) {
        let served: Vec<Arc<ModelVersion>> = previous.served().cloned().collect();
        self.set_entry(name, ModelEntry::retired(previous, ModelState::Unloading, "unloading"));
        let drained = control::drain(served, patience, &self.inner.reaper);
        if !drained {
            tracing::warn!(
                "model '{name}' unloaded with requests still running; they finish in the background"
            );
        }
        self.set_entry(name, ModelEntry::retired(previous, ModelState::Unavailable, UNLOADED));
        tracing::info!("successfully unloaded '{name}'");
    }

    /// Brings the served models in line with the repository (poll mode): new models load, removed ones
    /// unload, changed ones reload — each only if its files changed since the last look. Blocking.
    pub fn poll_repository(&self) -> Result<()> {
        let options = &self.inner.options;
        let _control = self.inner.control.lock().unwrap_or_else(|e| e.into_inner());
        // An unreachable store changes nothing (rather than unloading everything it holds).
        for r in &self.inner.remotes {
            r.sync()?;
        }
        let found = repository::scan(&options.model_repositories)?;
        let current = self.inner.models.load_full();
        for (name, entry) in current.iter() {
            let unloaded = entry
                .versions
                .values()
                .all(|v| v.state == ModelState::Unavailable && v.reason == UNLOADED)
                && entry.error.is_none();
            if !found.contains_key(name) && !unloaded {
                self.unload_locked(name, entry, Duration::ZERO);
            }
        }
        for (name, dirs) in found {
            let previous = current.get(&name).cloned();
            if let [dir] = dirs.as_slice() {
                let unchanged = previous.as_ref().is_some_and(|p| {
                    let now = Some(control::fingerprint(dir));
                    !p.overridden && (p.fingerprint == now || p.failed_fingerprint == now)
                });
                if unchanged {
                    continue;
                }
                tracing::info!(
                    "model '{name}' {} in the repository: loading",
                    if previous.is_some() { "changed" } else { "appeared" }
                );
                let entry = self.build_entry(&name, dir, None, None, previous.as_deref());
                if let Err(e) = self.install(&name, entry, previous) {
                    tracing::error!("{}", e.message());
                }
            } else if previous.as_ref().is_none_or(|p| p.error.is_none()) {
                let message = repository::duplicate_message(&name, &dirs);
                tracing::error!("{message}");
                if previous.as_ref().is_none_or(|p| p.served().next().is_none()) {
                    self.set_entry(&name, ModelEntry::failed(message));
                }
            }
        }
        Ok(())
    }

    /// Puts a newly built entry in the table. A failed build never replaces served versions: the old ones
    /// stay and the error is returned.
    fn install(
        &self,
        name: &str,
        entry: ModelEntry,
        previous: Option<Arc<ModelEntry>>,
    ) -> Result<()> {
        log_outcome(name, &entry);
        let failure = entry.failure();
        let keep_old =
            failure.is_some() && previous.as_ref().is_some_and(|p| p.served().next().is_some());
        if keep_old {
            let reason = failure.unwrap_or_default();
            tracing::warn!(
                "model '{name}': the new files failed to load; the previous versions keep serving"
            );
            if let Some(previous) = previous {
                let failed_fingerprint = entry.fingerprint.clone();
                self.set_entry(
                    name,
                    ModelEntry { failed_fingerprint, ..ModelEntry::clone(&previous) },
                );
            }
            return Err(Error::invalid_arg(format!("failed to load '{name}': {reason}")));
        }
        let entry = Arc::new(entry);
        self.set_entry(name, entry.clone());
        if let Some(previous) = previous {
            // Versions the new entry did not take over finish their requests, then go.
            for old in previous.served() {
                if !entry.served().any(|new| Arc::ptr_eq(new, old)) {
                    self.inner.reaper.retire(old.clone());
                }
            }
        }
        match failure {
            Some(reason) => Err(Error::invalid_arg(format!("failed to load '{name}': {reason}"))),
            None => Ok(()),
        }
    }

    fn set_entry(&self, name: &str, entry: impl Into<Arc<ModelEntry>>) {
        let entry = entry.into();
        self.inner.models.rcu(|models| {
            let mut next = Models::clone(models);
            next.insert(name.to_string(), entry.clone());
            next
        });
    }

    /// Errors for load and unload requests the server does not take: a repository name, or a mode other than
    /// explicit. Front ends call it before they parse a request's parameters.
    pub fn check_model_control(&self, repository: &str) -> Result<()> {
        if !repository.is_empty() {
            return Err(Error::unsupported("'repository_name' specification is not supported"));
        }
        if self.inner.options.model_control_mode != ModelControlMode::Explicit {
            return Err(Error::unavailable(
                "explicit model load / unload is not allowed if polling is enabled",
            ));
        }
        Ok(())
    }

    /// Registered CUDA shared-memory regions: none can be registered in this build, so a named region is
    /// always unknown (a system region of that name is not a CUDA one).
    pub fn cuda_shared_memory_status(&self, region: Option<&str>) -> Result<Vec<String>> {
        match region {
            Some(r) if !r.is_empty() => {
                Err(Error::not_found(format!("Unable to find cuda shared memory region: '{r}'")))
            }
            _ => Ok(vec![]),
        }
    }

    /// Every model the server knows, and (as in Triton) every model directory in the repositories that is
    /// not loaded, without a state.
    pub fn repository_index(&self, ready_only: bool) -> Vec<IndexEntry> {
        let models = self.inner.models.load();
        let mut out = Vec::new();
        let on_disk = repository::scan(&self.inner.options.model_repositories).unwrap_or_default();
        let mut names: Vec<&String> =
            models.keys().chain(on_disk.keys().filter(|n| !models.contains_key(*n))).collect();
        names.sort();
        for name in names {
            let Some(m) = models.get(name) else {
                if !ready_only {
                    out.push(IndexEntry {
                        name: name.clone(),
                        version: String::new(),
                        state: None,
                        reason: String::new(),
                    });
                }
                continue;
            };
            if m.error.is_some() || m.loading {
                if !ready_only {
                    let (state, reason) = match &m.error {
                        Some(e) => (ModelState::Unavailable, e.clone()),
                        None => (ModelState::Loading, String::new()),
                    };
                    out.push(IndexEntry {
                        name: name.clone(),
                        version: String::new(),
                        state: Some(state),
                        reason,
                    });
                }
                continue;
            }
            for (v, ve) in &m.versions {
                if ready_only && ve.state != ModelState::Ready {
                    continue;
                }
                out.push(IndexEntry {
                    name: name.clone(),
                    version: v.to_string(),
                    state: Some(ve.state),
                    reason: ve.reason.clone(),
                });
            }
        }
        out
    }

    fn log_control(&self) -> Result<&crate::logging::LogControl> {
        self.inner.options.log_control.as_deref().ok_or_else(|| {
            Error::unsupported("logging settings are managed by the application embedding Rampart")
        })
    }

    /// The logging API's settings.
    pub fn log_settings(&self) -> Result<crate::logging::LogSettings> {
        Ok(self.log_control()?.settings())
    }

    /// Changes the log settings (all fields checked before any applies).
    pub fn update_log_settings(
        &self,
        update: &crate::logging::LogUpdate,
    ) -> Result<crate::logging::LogSettings> {
        let settings = self.log_control()?.update(update)?;
        tracing::info!("log settings changed: {settings:?}");
        Ok(settings)
    }

    /// Every served version, by model name then version.
    pub(crate) fn served_versions(&self) -> Vec<Arc<ModelVersion>> {
        self.inner.models.load().values().flat_map(|m| m.served().cloned()).collect()
    }

    /// Statistics of every ready version of `name` (or of every model), or of one version.
    pub fn statistics(
        &self,
        name: Option<&str>,
        version: Option<i64>,
    ) -> Result<Vec<VersionStats>> {
        let snap = |m: &ModelVersion| VersionStats {
            name: m.name.clone(),
            version: m.version.to_string(),
            stats: m.stats.snapshot(),
        };
        match (name, version) {
            (None, _) => Ok(self
                .inner
                .models
                .load()
                .values()
                .flat_map(|m| m.served().map(|v| snap(v)))
                .collect()),
            (Some(n), Some(v)) => Ok(vec![snap(&*self.model(n, Some(v))?)]),
            (Some(n), None) => {
                self.model(n, None)?;
                Ok(self.entry(n)?.served().map(|v| snap(v)).collect())
            }
        }
    }

    /// A trace for one request of `model` when the trace settings sample it; front ends stamp it and put it
    /// in the request.
    /// `traceparent`: the request's W3C trace context header, if any.
    pub fn start_trace(
        &self,
        model: &str,
        traceparent: Option<&str>,
    ) -> Option<Arc<crate::trace::Trace>> {
        // Requests for models the server does not serve are not traced (nor counted against trace_count).
        // The tracer's own check comes first: with tracing off, a request pays one atomic load.
        if !crate::trace::BUILT
            || !self.inner.tracer.is_active()
            || !self.inner.models.load().get(model).is_some_and(|m| m.served().next().is_some())
        {
            return None;
        }
        self.inner.tracer.sample(model, traceparent)
    }

    /// The trace settings, global or of a model (which must be loaded).
    pub fn trace_settings(&self, model: Option<&str>) -> Result<crate::trace::TraceSettings> {
        crate::trace::check_built()?;
        if let Some(m) = model {
            self.model(m, None)?;
        }
        Ok(self.inner.tracer.settings(model))
    }

    pub fn update_trace_settings(
        &self,
        model: Option<&str>,
        update: &crate::trace::TraceUpdate,
    ) -> Result<crate::trace::TraceSettings> {
        crate::trace::check_built()?;
        if let Some(m) = model {
            self.model(m, None)?;
        }
        let settings = self.inner.tracer.update(model, update)?;
        tracing::info!(
            "trace settings of {} changed: {settings:?}",
            model.map_or("the server".to_string(), |m| format!("model '{m}'"))
        );
        Ok(settings)
    }

    /// Stops admitting inferences and waits up to `timeout` for in-flight ones. Returns how many were left.
    /// Buffered traces are written out.
    pub async fn shutdown(&self, timeout: Duration) -> usize {
        let left = self.drain(timeout).await;
        let tracer = self.inner.tracer.clone();
        let _ = tokio::task::spawn_blocking(move || tracer.flush()).await;
        left
    }

    async fn drain(&self, timeout: Duration) -> usize {
        self.inner.exiting.store(true, Ordering::Release);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.inner.idle.notified();
            let n = self.inner.in_flight.load(Ordering::Acquire);
            if n == 0 {
                return 0;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.inner.in_flight.load(Ordering::Acquire);
            }
        }
    }
}

/// Logs how a load went, version by version.
fn log_outcome(name: &str, entry: &ModelEntry) {
    if let Some(e) = &entry.error {
        tracing::error!("failed to load '{name}': {e}");
    }
    for (v, ve) in &entry.versions {
        match ve.state {
            ModelState::Ready => tracing::info!("successfully loaded '{name}' version {v}"),
            _ => tracing::error!("failed to load '{name}' version {v}: {}", ve.reason),
        }
    }
}

impl Server {
    /// Loads one model directory: config (or the `config` override), versions per policy, instances per
    /// `instance_group`. Versions of `previous` whose files did not change are taken over, not reloaded.
    fn build_entry(
        &self,
        name: &str,
        dir: &std::path::Path,
        config_override: Option<&str>,
        files: Option<Arc<tempfile::TempDir>>,
        previous: Option<&ModelEntry>,
    ) -> ModelEntry {
        let options = &self.inner.options;
        let cache = self.inner.cache.as_ref();
        let overridden = config_override.is_some() || files.is_some();
        let fingerprint = control::fingerprint(dir);
        let origin = |mut e: ModelEntry| {
            e.fingerprint = Some(fingerprint.clone());
            e.overridden = overridden;
            e._files = files.clone();
            e
        };
        // Versions that can be taken over as they are: same model files and config, same version folder.
        let reusable = |v: i64| -> Option<Arc<ModelVersion>> {
            let p = previous?;
            let pf = p.fingerprint.as_ref()?;
            if overridden
                || p.overridden
                || pf.model != fingerprint.model
                || pf.versions.get(&v) != fingerprint.versions.get(&v)
            {
                return None;
            }
            p.versions.get(&v)?.served.clone()
        };
        let raw = match config_override {
            Some(json) => config::from_json(json, dir, name),
            None => config::read(dir, name, options.autocomplete),
        };
        let raw = match raw {
            Ok(r) => r,
            Err(e) => return origin(ModelEntry::failed(e.message().to_string())),
        };
        let selected = match repository::select_versions(&raw.config, &repository::versions(dir)) {
            Ok(v) => v,
            Err(e) => return origin(ModelEntry::failed(e.message().to_string())),
        };
        let chosen = crate::engines::backend_name(&raw.config, &options.default_onnx_backend)
            .and_then(|backend| options.backends.get(backend));
        let engine = match chosen {
            Ok(e) => e,
            Err(e) => {
                return origin(ModelEntry::failed(format!("model '{name}': {}", e.message())));
            }
        };
        let instance_count: usize =
            raw.config.instance_group.iter().map(|g| g.count.max(1) as usize).sum();
        let parameters: std::collections::HashMap<String, String> = raw
            .config
            .parameters
            .iter()
            .map(|(k, v)| (k.clone(), v.string_value.clone()))
            .collect();
        let declared = config::declared_signature(&raw.config);
        let graph_level =
            raw.config.optimization.as_ref().and_then(|o| o.graph.as_ref()).map_or(0, |g| g.level);
        let mut final_config: Option<Arc<ModelConfig>> = None;
        let mut labels: Option<Arc<crate::classify::Labels>> = None;
        let mut versions = BTreeMap::new();
        let mut raw = Some(raw);
        for v in selected {
            if let Some(kept) = reusable(v) {
                versions.insert(
                    v,
                    VersionEntry {
                        state: ModelState::Ready,
                        reason: String::new(),
                        served: Some(kept),
                    },
                );
                continue;
            }
            let started = Instant::now();
            let label = ModelVersion::label(name, v);
            let result = (|| -> Result<Arc<ModelVersion>> {
                let version_dir = dir.join(v.to_string());
                let model_file = if engine.needs_model_file() {
                    let file = version_dir.join(
                        final_config
                            .as_ref()
                            .map(|c| c.default_model_filename.clone())
                            .or_else(|| {
                                raw.as_ref().map(|r| r.config.default_model_filename.clone())
                            })
                            .unwrap_or_default(),
                    );
                    if !file.is_file() {
                        return Err(Error::invalid_arg(format!(
                            "model file '{}' not found",
                            file.display()
                        )));
                    }
                    file
                } else {
                    version_dir
                };
                let max_batch_size = final_config
                    .as_ref()
                    .map(|c| c.max_batch_size)
                    .or_else(|| raw.as_ref().map(|r| r.config.max_batch_size))
                    .unwrap_or_default();
                let mut spec = InstanceSpec {
                    model_name: name.to_string(),
                    version: v,
                    model_file,
                    parameters: parameters.clone(),
                    declared: declared.clone(),
                    max_batch_size: max_batch_size.max(0) as u64,
                    graph_optimization_level: graph_level,
                    instance_index: 0,
                };
                let mut instances = Vec::with_capacity(instance_count);
                instances.push(engine.load(&spec)?);
                let cfg = match &final_config {
                    Some(c) => c.clone(),
                    None => {
                        let c = Arc::new(config::complete_and_validate(
                            raw.take().expect("raw config consumed once"),
                            instances[0].signature(),
                            options.autocomplete,
                        )?);
                        final_config = Some(c.clone());
                        c
                    }
                };
                // The completed config too (auto-complete may add types the engine cannot run).
                let types = cfg.input.iter().map(|i| i.data_type);
                let types = types.chain(cfg.output.iter().map(|o| o.data_type));
                if let Some(t) =
                    types.filter_map(DataType::from_config_enum).find(|&t| !engine.supports(t))
                {
                    return Err(Error::unsupported(format!(
                        "the {} engine does not support data type {}",
                        engine.name(),
                        t.as_str()
                    )));
                }
                let engine_inputs = crate::infer::EngineInputs {
                    engine: engine.name(),
                    names: instances[0].signature().inputs.iter().map(|s| s.name.clone()).collect(),
                };
                for i in 1..instance_count {
                    spec.instance_index = i;
                    instances.push(engine.load(&spec)?);
                }
                let decoupled = cfg.model_transaction_policy.as_ref().is_some_and(|p| p.decoupled);
                let mut stats = ModelStats::with_latency_metrics(
                    options.metrics.summaries.clone().map(crate::stats::LatencyWindows::new),
                    options.metrics.histograms.then(Default::default),
                );
                if decoupled {
                    stats = stats.with_response_stats();
                }
                let stats = Arc::new(stats);
                let batching = batch_policy(&cfg)?;
                let executors: Vec<Instance> = instances
                    .into_iter()
                    .map(|engine| Instance { engine, stats: stats.clone() })
                    .collect();
                let pool = crate::model::Scheduler::start(
                    format!("{name}-{v}"),
                    executors,
                    options.max_queued_requests,
                    batching,
                )?;
                let wants_cache = cfg.response_cache.as_ref().is_some_and(|c| c.enable);
                if wants_cache && cache.is_none() {
                    tracing::warn!(
                        "model '{name}' enables response_cache but the server has no cache (--cache-config local,size=N)"
                    );
                }
                let cache = cache.filter(|_| wants_cache).cloned();
                let labels = match &labels {
                    Some(l) => Arc::clone(l),
                    None => {
                        labels.insert(Arc::new(crate::classify::load_labels(&cfg, dir)?)).clone()
                    }
                };
                let mut version =
                    ModelVersion::new(cfg, v, pool, stats, started.elapsed(), engine_inputs, cache);
                version.labels = labels;
                crate::warmup::run(&version, dir)?;
                version.load_duration = started.elapsed();
                Ok(Arc::new(version))
            })();
            let entry = match result {
                Ok(m) => VersionEntry {
                    state: ModelState::Ready,
                    reason: String::new(),
                    served: Some(m),
                },
                Err(e) => {
                    let msg = e.message();
                    let reason = if msg.starts_with("model '") {
                        msg.to_string()
                    } else {
                        format!("{label}: {msg}")
                    };
                    // A config that fails validation fails every version the same way: report it once.
                    if final_config.is_none() && raw.is_none() {
                        return origin(ModelEntry::failed(reason));
                    }
                    VersionEntry { state: ModelState::Unavailable, reason, served: None }
                }
            };
            versions.insert(v, entry);
        }
        origin(ModelEntry { versions, ..ModelEntry::empty() })
    }
}

/// The `dynamic_batching` settings of a config, checked as Triton checks them; `None` runs every request
/// alone (no `dynamic_batching`, or a model without a batch dimension).
fn batch_policy(cfg: &ModelConfig) -> Result<Option<rampart_scheduler::BatchPolicy>> {
    use rampart_model_config::pb::model_config::SchedulingChoice;
    let Some(SchedulingChoice::DynamicBatching(d)) = &cfg.scheduling_choice else {
        return Ok(None);
    };
    if cfg.max_batch_size <= 0 {
        tracing::warn!(
            "model '{}': dynamic_batching has no effect without max_batch_size > 0",
            cfg.name
        );
        return Ok(None);
    }
    let mut preferred = Vec::with_capacity(d.preferred_batch_size.len());
    for &p in &d.preferred_batch_size {
        if p <= 0 {
            return Err(Error::invalid_arg(format!(
                "dynamic batching preferred size must be positive for {}",
                cfg.name
            )));
        }
        if p > cfg.max_batch_size {
            return Err(Error::invalid_arg(format!(
                "dynamic batching preferred size must be <= max batch size for {}",
                cfg.name
            )));
        }
        preferred.push(p as u64);
    }
    preferred.sort_unstable();
    preferred.dedup();
    let name = &cfg.name;
    let levels = d.priority_levels;
    if levels > MAX_PRIORITY_LEVELS {
        return Err(Error::invalid_arg(format!(
            "dynamic batching priority_levels must be at most {MAX_PRIORITY_LEVELS} for {name}"
        )));
    }
    if levels != 0 {
        if d.default_priority_level == 0 || d.default_priority_level > levels {
            return Err(Error::invalid_arg(format!(
                "default priority level must be in range [1, {levels}] for {name}"
            )));
        }
        if d.priority_queue_policy.keys().any(|&l| l == 0 || l > levels) {
            return Err(Error::invalid_arg(format!(
                "priority queue policy must have priority level in range [1, {levels}] for {name}"
            )));
        }
    }
    use rampart_model_config::pb::model_queue_policy::TimeoutAction;
    let default = d.default_queue_policy.clone().unwrap_or_default();
    if d.preserve_ordering {
        if levels > 1 {
            return Err(Error::invalid_arg(format!(
                "Only one priority level is allowed when 'preserve_ordering' is true for {name}"
            )));
        }
        let delays = |p: &rampart_model_config::pb::ModelQueuePolicy| {
            p.default_timeout_microseconds != 0 && p.timeout_action == TimeoutAction::Delay as i32
        };
        if delays(&default) || d.priority_queue_policy.values().any(delays) {
            return Err(Error::invalid_arg(format!(
                "Queue policy can not have DELAY as timeout action when 'preserve_ordering' is true for {name}"
            )));
        }
    }
    let queue_policy =
        |p: &rampart_model_config::pb::ModelQueuePolicy| rampart_scheduler::QueuePolicy {
            timeout: (p.default_timeout_microseconds > 0)
                .then(|| std::time::Duration::from_micros(p.default_timeout_microseconds)),
            allow_timeout_override: p.allow_timeout_override,
            reject_on_timeout: p.timeout_action == TimeoutAction::Reject as i32,
            max_queue_size: p.max_queue_size as usize,
        };
    // Without priority levels there is one queue with the default policy (Triton ignores
    // `priority_queue_policy` then).
    let levels: Vec<rampart_scheduler::QueuePolicy> = if levels == 0 {
        vec![queue_policy(&default)]
    } else {
        (1..=levels)
            .map(|l| queue_policy(d.priority_queue_policy.get(&l).unwrap_or(&default)))
            .collect()
    };
    Ok(Some(rampart_scheduler::BatchPolicy {
        max_batch_size: cfg.max_batch_size as u64,
        preferred,
        max_delay: std::time::Duration::from_micros(d.max_queue_delay_microseconds),
        levels,
        default_level: (d.default_priority_level.max(1) - 1) as usize,
    }))
}

/// More priority levels than this are refused at load (each level is a queue).
const MAX_PRIORITY_LEVELS: u64 = 1 << 16;

/// An output with a protocol extension, checked before the inference and applied to its result.
struct OutputExtension {
    name: String,
    classification: Option<u64>,
    shm: Option<(crate::shm::ShmRef, crate::shm::Lease)>,
}

fn finish_extensions(
    model: &ModelVersion,
    mut response: InferResponse,
    extensions: Vec<OutputExtension>,
) -> Result<InferResponse> {
    let batching = model.config.max_batch_size > 0;
    for e in extensions {
        let Some(t) = response.outputs.iter_mut().find(|t| t.name == e.name) else { continue };
        if let Some(k) = e.classification {
            *t = crate::classify::classify(
                t,
                k,
                batching,
                model.labels.get(&e.name).map(Vec::as_slice),
            )?;
        }
        if let Some((mut place, lease)) = e.shm {
            let size = t.data.len() as u64;
            if size > lease.len() {
                return Err(Error::invalid_arg(format!(
                    "shared memory size specified with the request for output '{}' ({} bytes) should be at least {size} bytes to hold the results",
                    e.name,
                    lease.len()
                )));
            }
            lease.write(&t.data)?;
            place.byte_size = size;
            t.data = bytes::Bytes::new();
            response.shm_outputs.insert(e.name, place);
        }
    }
    Ok(response)
}
