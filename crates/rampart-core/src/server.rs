//! The core API every front end (and an embedding application) calls.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rampart_model_config::ModelConfig;
use rampart_types::{DataType, Error, InstanceSpec, Result};
use tokio::sync::Notify;

use crate::config;
use crate::engines::{EngineChoice, Engines};
use crate::infer::{InferRequest, InferResponse};
use crate::model::{ModelState, ModelVersion};
use crate::repository;
use crate::scheduler::InstancePool;
use crate::stats::{ModelStats, VersionStats};

/// Extensions reported by server metadata: only what this build implements.
pub const EXTENSIONS: &[&str] = &["model_configuration", "binary_tensor_data", "parameters", "statistics"];

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
    /// Where the ONNX Runtime library is looked for.
    pub backend_directory: PathBuf,
    /// An explicit ONNX Runtime library file (the binary takes it from `ORT_DYLIB_PATH`).
    pub onnxruntime_library: Option<PathBuf>,
    pub default_engine: EngineChoice,
    /// ONNX Runtime engine settings (`--backend-config=onnxruntime,...`).
    pub onnxruntime: rampart_onnxruntime::OrtOptions,
    /// Requests that may wait per model version (`--max-queued-requests`); more are answered UNAVAILABLE.
    pub max_queued_requests: usize,
    /// How many inputs, outputs and parameters one request may carry.
    pub request_limits: crate::infer::RequestLimits,
    /// Bytes of the response cache (`--cache-config local,size=N`); `None`: no cache.
    pub response_cache_bytes: Option<u64>,
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
            backend_directory: PathBuf::from("/opt/tritonserver/backends"),
            onnxruntime_library: None,
            default_engine: EngineChoice::OnnxRuntime,
            onnxruntime: Default::default(),
            max_queued_requests: crate::scheduler::DEFAULT_QUEUE_CAPACITY,
            request_limits: Default::default(),
            response_cache_bytes: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartupError(pub String);

struct VersionEntry {
    state: ModelState,
    reason: String,
    served: Option<Arc<ModelVersion>>,
}

struct ModelEntry {
    versions: BTreeMap<i64, VersionEntry>,
    /// Set when the model failed before any version could be considered (bad config, duplicate name, …).
    error: Option<String>,
}

impl ModelEntry {
    fn failed(reason: String) -> Self {
        ModelEntry { versions: BTreeMap::new(), error: Some(reason) }
    }
}

struct Inner {
    options: ServerOptions,
    models: BTreeMap<String, ModelEntry>,
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
    pub state: ModelState,
    pub reason: String,
}

/// Parses a version string from a request: empty means "latest ready".
pub fn parse_version(v: &str) -> Result<Option<i64>> {
    if v.is_empty() {
        return Ok(None);
    }
    match v.parse::<i64>() {
        Ok(n) if n >= 0 => Ok(Some(n)),
        _ => Err(Error::invalid_arg(format!("failed to parse model version '{v}': expected a non-negative integer"))),
    }
}

/// Counts a request as in flight until dropped, so shutdown can wait for it.
struct InFlight<'a>(&'a Inner);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Server {
    /// Loads every model of every repository (model-control mode `none`). Blocking: call it before serving,
    /// or from a blocking thread.
    pub fn start(options: ServerOptions) -> std::result::Result<Server, StartupError> {
        if options.model_repositories.is_empty() {
            return Err(StartupError("at least one --model-repository is required".into()));
        }
        let found = repository::scan(&options.model_repositories).map_err(|e| StartupError(e.to_string()))?;
        let engines = Engines::new(
            options.backend_directory.clone(),
            options.onnxruntime_library.clone(),
            options.onnxruntime.clone(),
            options.default_engine,
        );
        let cache = options.response_cache_bytes.map(crate::cache::ResponseCache::new);
        let mut models = BTreeMap::new();
        for (name, dirs) in found {
            let entry = if dirs.len() > 1 {
                let list: Vec<String> = dirs.iter().map(|d| format!("'{}'", d.display())).collect();
                ModelEntry::failed(format!(
                    "model '{name}' appears in more than one model repository ({})",
                    list.join(", ")
                ))
            } else {
                load_model(&name, &dirs[0], &options, &engines, cache.as_ref())
            };
            if options.exit_on_error {
                let reason = entry.error.clone().or_else(|| {
                    entry.versions.values().find(|v| v.state != ModelState::Ready).map(|v| v.reason.clone())
                });
                if let Some(reason) = reason {
                    return Err(StartupError(format!("failed to load '{name}': {reason}")));
                }
            }
            if let Some(e) = &entry.error {
                tracing::error!("failed to load '{name}': {e}");
            }
            for (v, ve) in &entry.versions {
                match ve.state {
                    ModelState::Ready => tracing::info!("successfully loaded '{name}' version {v}"),
                    _ => tracing::error!("failed to load '{name}' version {v}: {}", ve.reason),
                }
            }
            models.insert(name, entry);
        }
        Ok(Server {
            inner: Arc::new(Inner {
                options,
                models,
                exiting: AtomicBool::new(false),
                in_flight: AtomicUsize::new(0),
                idle: Notify::new(),
            }),
        })
    }

    pub fn options(&self) -> &ServerOptions {
        &self.inner.options
    }

    /// Triton's startup model table.
    pub fn model_status_table(&self) -> String {
        let rows: Vec<(String, String, String)> = self
            .repository_index(false)
            .into_iter()
            .map(|e| {
                let status = match e.state {
                    ModelState::Ready => "READY".to_string(),
                    s => format!("{}: {}", s.as_str(), e.reason),
                };
                (e.name, e.version, status)
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
        Ok(self.inner.models.values().all(|m| {
            m.error.is_none() && !m.versions.is_empty() && m.versions.values().all(|v| v.state == ModelState::Ready)
        }))
    }

    pub fn metadata(&self) -> ServerMetadata {
        ServerMetadata {
            name: self.inner.options.id.clone(),
            version: self.inner.options.version.clone(),
            extensions: EXTENSIONS.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn entry(&self, name: &str) -> Result<&ModelEntry> {
        self.inner
            .models
            .get(name)
            .ok_or_else(|| Error::not_found(format!("Request for unknown model: '{name}' is not found")))
    }

    /// The served version `version` (or the latest READY one).
    pub fn model(&self, name: &str, version: Option<i64>) -> Result<Arc<ModelVersion>> {
        let entry = self.entry(name)?;
        match version {
            Some(v) => {
                let ve = entry.versions.get(&v).ok_or_else(|| {
                    Error::not_found(format!("Request for unknown model: '{name}' version {v} is not found"))
                })?;
                ve.served.clone().ok_or_else(|| {
                    Error::unavailable(format!("Request for unknown model: '{name}' version {v} is not at ready state"))
                })
            }
            None => entry.versions.values().rev().find_map(|v| v.served.clone()).ok_or_else(|| {
                Error::not_found(format!("Request for unknown model: '{name}' has no available versions"))
            }),
        }
    }

    pub fn model_ready(&self, name: &str, version: Option<i64>) -> Result<bool> {
        match self.model(name, version) {
            Ok(_) => Ok(true),
            Err(e) if e.code() == rampart_types::Code::Unavailable => Ok(false),
            Err(e) => {
                // A known model with no ready version is "not ready", not "unknown".
                if version.is_none() && self.inner.models.contains_key(name) {
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
            None => self.entry(name)?.versions.iter().filter(|(_, v)| v.served.is_some()).map(|(k, _)| k.to_string()).collect(),
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

    pub async fn infer(&self, req: InferRequest) -> Result<InferResponse> {
        if self.inner.exiting.load(Ordering::Acquire) {
            return Err(Error::unavailable("Server exiting"));
        }
        self.inner.in_flight.fetch_add(1, Ordering::AcqRel);
        let _guard = InFlight(&self.inner);
        self.inner.options.request_limits.check(&req)?;
        let model = self.model(&req.model_name, req.model_version)?;
        model.infer(req).await
    }

    /// Builds the request for a raw binary body (`Inference-Header-Content-Length: 0`): the body is the model's
    /// single input, batch 1, its shape deduced from the config.
    pub fn raw_request(&self, name: &str, version: Option<i64>, data: bytes::Bytes) -> Result<InferRequest> {
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
            inputs: vec![crate::infer::InputTensor { name: input.name.clone(), datatype, shape, data }],
            ..Default::default()
        })
    }

    /// Model-repository load (`repository` is the optional repository name of the request). Model-control
    /// mode `none` allows neither.
    pub fn load_model(&self, repository: &str, _name: &str) -> Result<()> {
        Err(self.model_control_refusal(repository))
    }

    pub fn unload_model(&self, repository: &str, _name: &str) -> Result<()> {
        Err(self.model_control_refusal(repository))
    }

    fn model_control_refusal(&self, repository: &str) -> Error {
        if !repository.is_empty() {
            return Error::unsupported("'repository_name' specification is not supported");
        }
        Error::unavailable("explicit model load / unload is not allowed if polling is enabled")
    }

    /// Registered shared-memory regions (`cuda` selects the CUDA name space's wording). None can be
    /// registered in this build, so a named region is always unknown.
    pub fn shared_memory_status(&self, region: Option<&str>, cuda: bool) -> Result<Vec<String>> {
        match region {
            Some(r) if !r.is_empty() => Err(Error::not_found(format!(
                "Unable to find {} shared memory region: '{r}'",
                if cuda { "cuda" } else { "system" }
            ))),
            _ => Ok(vec![]),
        }
    }

    pub fn repository_index(&self, ready_only: bool) -> Vec<IndexEntry> {
        let mut out = Vec::new();
        for (name, m) in &self.inner.models {
            if let Some(e) = &m.error {
                if !ready_only {
                    out.push(IndexEntry { name: name.clone(), version: String::new(), state: ModelState::Unavailable, reason: e.clone() });
                }
                continue;
            }
            for (v, ve) in &m.versions {
                if ready_only && ve.state != ModelState::Ready {
                    continue;
                }
                out.push(IndexEntry { name: name.clone(), version: v.to_string(), state: ve.state, reason: ve.reason.clone() });
            }
        }
        out
    }

    /// Statistics of every ready version of `name` (or of every model), or of one version.
    pub fn statistics(&self, name: Option<&str>, version: Option<i64>) -> Result<Vec<VersionStats>> {
        let snap = |m: &ModelVersion| VersionStats { name: m.name.clone(), version: m.version.to_string(), stats: m.stats.snapshot() };
        match (name, version) {
            (None, _) => Ok(self
                .inner
                .models
                .values()
                .flat_map(|m| m.versions.values().filter_map(|v| v.served.as_deref().map(snap)))
                .collect()),
            (Some(n), Some(v)) => Ok(vec![snap(&*self.model(n, Some(v))?)]),
            (Some(n), None) => {
                self.model(n, None)?;
                Ok(self.entry(n)?.versions.values().filter_map(|v| v.served.as_deref().map(snap)).collect())
            }
        }
    }

    /// Stops admitting inferences and waits up to `timeout` for in-flight ones. Returns how many were left.
    pub async fn shutdown(&self, timeout: Duration) -> usize {
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

/// Loads one model directory: config, versions per policy, instances per `instance_group`.
fn load_model(
    name: &str,
    dir: &std::path::Path,
    options: &ServerOptions,
    engines: &Engines,
    cache: Option<&crate::cache::ResponseCache>,
) -> ModelEntry {
    let raw = match config::read(dir, name, options.autocomplete) {
        Ok(r) => r,
        Err(e) => return ModelEntry::failed(e.message().to_string()),
    };
    let selected = match repository::select_versions(&raw.config, &repository::versions(dir)) {
        Ok(v) => v,
        Err(e) => return ModelEntry::failed(e.message().to_string()),
    };
    let choice = match engines.choose(&raw.config) {
        Ok(c) => c,
        Err(e) => return ModelEntry::failed(format!("model '{name}': {}", e.message())),
    };
    let engine = match engines.get(choice) {
        Ok(e) => e,
        Err(e) => return ModelEntry::failed(format!("model '{name}': {}", e.message())),
    };
    let instance_count: usize = raw.config.instance_group.iter().map(|g| g.count.max(1) as usize).sum();
    let parameters: std::collections::HashMap<String, String> =
        raw.config.parameters.iter().map(|(k, v)| (k.clone(), v.string_value.clone())).collect();
    let declared_types = raw
        .config
        .input
        .iter()
        .map(|i| (i.name.clone(), i.data_type))
        .chain(raw.config.output.iter().map(|o| (o.name.clone(), o.data_type)))
        .filter_map(|(n, t)| DataType::from_config_enum(t).map(|t| (n, t)))
        .collect::<Vec<_>>();
    let graph_level = raw.config.optimization.as_ref().and_then(|o| o.graph.as_ref()).map_or(0, |g| g.level);
    let mut final_config: Option<Arc<ModelConfig>> = None;
    let mut versions = BTreeMap::new();
    let mut raw = Some(raw);
    for v in selected {
        let started = Instant::now();
        let label = ModelVersion::label(name, v);
        let result = (|| -> Result<Arc<ModelVersion>> {
            let model_file = dir.join(v.to_string()).join(
                final_config.as_ref().map(|c| c.default_model_filename.clone()).unwrap_or_else(|| {
                    raw.as_ref().map(|r| r.config.default_model_filename.clone()).unwrap_or_default()
                }),
            );
            if !model_file.is_file() {
                return Err(Error::invalid_arg(format!("model file '{}' not found", model_file.display())));
            }
            let spec = InstanceSpec {
                model_name: name.to_string(),
                version: v,
                model_file,
                parameters: parameters.clone(),
                declared_types: declared_types.clone(),
                graph_optimization_level: graph_level,
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
            // The tract engine can't run BF16; check the completed config too (auto-complete may add it).
            if engine.name() == "tract" && cfg.input.iter().map(|i| i.data_type).chain(cfg.output.iter().map(|o| o.data_type)).any(|t| t == DataType::Bf16.config_enum()) {
                return Err(Error::unsupported("the tract engine does not support data type BF16; use the onnxruntime engine"));
            }
            let engine_inputs = crate::infer::EngineInputs {
                engine: engine.name(),
                names: instances[0].signature().inputs.iter().map(|s| s.name.clone()).collect(),
            };
            for _ in 1..instance_count {
                instances.push(engine.load(&spec)?);
            }
            let stats = Arc::new(ModelStats::default());
            let batching = batch_policy(&cfg)?;
            let pool = InstancePool::start(format!("{name}-{v}"), instances, stats.clone(), options.max_queued_requests, batching)?;
            let wants_cache = cfg.response_cache.as_ref().is_some_and(|c| c.enable);
            if wants_cache && cache.is_none() {
                tracing::warn!("model '{name}' enables response_cache but the server has no cache (--cache-config local,size=N)");
            }
            let cache = cache.filter(|_| wants_cache).cloned();
            Ok(Arc::new(ModelVersion::new(cfg, v, pool, stats, started.elapsed(), engine_inputs, cache)))
        })();
        let entry = match result {
            Ok(m) => VersionEntry { state: ModelState::Ready, reason: String::new(), served: Some(m) },
            Err(e) => {
                let msg = e.message();
                let reason = if msg.starts_with("model '") { msg.to_string() } else { format!("{label}: {msg}") };
                // A config that fails validation fails every version the same way: report it once.
                if final_config.is_none() && raw.is_none() {
                    return ModelEntry::failed(reason);
                }
                VersionEntry { state: ModelState::Unavailable, reason, served: None }
            }
        };
        versions.insert(v, entry);
    }
    ModelEntry { versions, error: None }
}

/// The `dynamic_batching` settings of a config, checked as Triton checks them; `None` runs every request
/// alone (no `dynamic_batching`, or a model without a batch dimension).
fn batch_policy(cfg: &ModelConfig) -> Result<Option<crate::scheduler::BatchPolicy>> {
    use rampart_model_config::pb::model_config::SchedulingChoice;
    let Some(SchedulingChoice::DynamicBatching(d)) = &cfg.scheduling_choice else { return Ok(None) };
    if cfg.max_batch_size <= 0 {
        tracing::warn!("model '{}': dynamic_batching has no effect without max_batch_size > 0", cfg.name);
        return Ok(None);
    }
    let mut preferred = Vec::with_capacity(d.preferred_batch_size.len());
    for &p in &d.preferred_batch_size {
        if p <= 0 {
            return Err(Error::invalid_arg(format!("dynamic batching preferred size must be positive for {}", cfg.name)));
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
            return Err(Error::invalid_arg(format!("default priority level must be in range [1, {levels}] for {name}")));
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
            return Err(Error::invalid_arg(format!("Only one priority level is allowed when 'preserve_ordering' is true for {name}")));
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
    let queue_policy = |p: &rampart_model_config::pb::ModelQueuePolicy| crate::scheduler::QueuePolicy {
        timeout: (p.default_timeout_microseconds > 0).then(|| std::time::Duration::from_micros(p.default_timeout_microseconds)),
        allow_timeout_override: p.allow_timeout_override,
        reject_on_timeout: p.timeout_action == TimeoutAction::Reject as i32,
        max_queue_size: p.max_queue_size as usize,
    };
    // Without priority levels there is one queue with the default policy (Triton ignores
    // `priority_queue_policy` then).
    let levels: Vec<crate::scheduler::QueuePolicy> = if levels == 0 {
        vec![queue_policy(&default)]
    } else {
        (1..=levels).map(|l| queue_policy(d.priority_queue_policy.get(&l).unwrap_or(&default))).collect()
    };
    Ok(Some(crate::scheduler::BatchPolicy {
        max_batch_size: cfg.max_batch_size as u64,
        preferred,
        max_delay: std::time::Duration::from_micros(d.max_queue_delay_microseconds),
        levels,
        default_level: (d.default_priority_level.max(1) - 1) as usize,
    }))
}

/// More priority levels than this are refused at load (each level is a queue).
const MAX_PRIORITY_LEVELS: u64 = 1 << 16;
