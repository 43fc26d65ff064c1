//! The core API every front end (and an embedding application) calls.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use std::time::Duration;

use rampart_model_config::ModelConfig;
use rampart_types::{DataType, Error, Result};
use tokio::sync::Notify;

use crate::control::{self, ModelControlMode};
use crate::extensions;
use crate::infer::{InferRequest, InferResponse};
use crate::model::{ModelState, ModelVersion, ResponseStream};
use crate::repository;
use crate::stats::VersionStats;
use crate::table::{ModelEntry, Models, log_outcome};

pub use crate::options::{ServerOptions, StartupError};
pub use crate::sequence::SequenceLimits;

/// Extensions reported by server metadata: only what this build implements.
pub const EXTENSIONS: &[&str] = &[
    "classification",
    "sequence",
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

pub(crate) struct Inner {
    pub(crate) options: ServerOptions,
    pub(crate) cache: Option<crate::cache::ResponseCache>,
    pub(crate) models: ArcSwap<Models>,
    /// Serialises loads, unloads and polls (requests never take it).
    pub(crate) control: Mutex<()>,
    pub(crate) reaper: control::Reaper,
    pub(crate) tracer: Arc<crate::trace::Tracer>,
    /// Cloud repositories, mirrored again before each poll.
    pub(crate) remotes: Vec<Arc<crate::remote::RemoteRepository>>,
    pub(crate) shm: crate::shm::SharedMemory,
    pub(crate) exiting: AtomicBool,
    /// A shutdown began: readiness answers false while requests are still served (the grace period).
    pub(crate) stopping: AtomicBool,
    pub(crate) in_flight: AtomicUsize,
    pub(crate) idle: Notify,
    /// Raised when the drain begins (streams end themselves cleanly then).
    pub(crate) draining: tokio::sync::watch::Sender<bool>,
    /// Metrics model code defines (`pb_utils.MetricFamily`).
    pub(crate) custom_metrics: crate::custom_metrics::Registry,
}

/// A running Rampart core. Cheap to clone.
#[derive(Clone)]
pub struct Server {
    pub(crate) inner: Arc<Inner>,
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
    // Triton's two texts (GetModelVersionFromString, without its C++ "(details: stol)"), then Rampart's rule.
    match v.parse::<i64>() {
        Ok(n) if n >= 0 => Ok(Some(n)),
        Ok(_) => Err(Error::invalid_arg(format!(
            "invalid model version specified '{v}' , version should be an integral value > 0 (expected a non-negative 64-bit integer)"
        ))),
        Err(_) => Err(Error::invalid_arg(format!(
            "failed to get model version from specified version string '{v}', version should be an integral value > 0 (expected a non-negative 64-bit integer)"
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
                stopping: AtomicBool::new(false),
                in_flight: AtomicUsize::new(0),
                idle: Notify::new(),
                draining: tokio::sync::watch::Sender::new(false),
                custom_metrics: Default::default(),
            }),
        };
        // Entries go in the table one by one: an ensemble loads its composing models first (those not in
        // the table yet) and links to them there.
        for (name, dirs) in wanted {
            if let Some(loaded) = server.inner.models.load().get(&name) {
                // Loaded already as an ensemble's composing model; asked for by name too, so an
                // `unload_dependents` of that ensemble leaves it.
                if loaded.implicit {
                    let entry = ModelEntry { implicit: false, ..ModelEntry::clone(loaded) };
                    server.set_entry(&name, entry);
                }
                continue;
            }
            let entry = match dirs.as_slice() {
                [] => ModelEntry::failed(format!(
                    "failed to load '{name}': there is no model directory '{name}' in the model repository"
                )),
                [dir] => server.build_entry(&name, dir, None, None, None),
                _ => ModelEntry::failed(repository::duplicate_message(&name, &dirs)),
            };
            if server.inner.options.exit_on_error
                && let Some(reason) = entry.failure()
            {
                return Err(StartupError(format!("failed to load '{name}': {reason}")));
            }
            log_outcome(&name, &entry);
            server.set_entry(&name, entry);
        }
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

    pub fn is_live(&self) -> Result<bool> {
        if self.inner.exiting.load(Ordering::Acquire) {
            return Err(Error::unavailable("Server exiting"));
        }
        Ok(true)
    }

    pub fn is_ready(&self) -> Result<bool> {
        self.is_live()?;
        if self.inner.stopping.load(Ordering::Acquire) {
            return Ok(false);
        }
        if !self.inner.options.strict_readiness {
            return Ok(true);
        }
        // Every model the server knows has versions, all READY or unloaded (Triton's rule).
        Ok(self.inner.models.load().values().all(|m| {
            m.error.is_none()
                && !m.loading
                && !m.versions.is_empty()
                && m.versions.values().all(|v| v.state == ModelState::Ready || v.is_unloaded())
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

    pub(crate) fn entry(&self, name: &str) -> Result<Arc<ModelEntry>> {
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
    pub async fn infer_unary(
        &self,
        mut req: InferRequest,
        endpoint: &str,
    ) -> Result<InferResponse> {
        let (_guard, model) = self.admit(&mut req)?;
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
        let (guard, model) = self.admit(&mut req)?;
        if !model.decoupled {
            return Ok(ResponseStream::one(self.infer_on(model, req).await?));
        }
        if req.outputs.iter().any(|o| o.classification.is_some() || o.shm.is_some()) {
            return Err(Error::invalid_arg(format!(
                "model '{}' is decoupled: its outputs cannot use classification or shared memory",
                req.model_name
            )));
        }
        extensions::take(&self.inner.shm, &mut req)?;
        Ok(ResponseStream::many(model.infer_decoupled(req)?, Box::new(guard)))
    }

    /// What every inference goes through first: counted in flight (refused while exiting), its counts
    /// bounded, its model version found once, a raw body turned into the model's single input.
    fn admit(&self, req: &mut InferRequest) -> Result<(InFlight, Arc<ModelVersion>)> {
        let guard = InFlight::new(&self.inner)?;
        self.inner.options.request_limits.check(req)?;
        let model = self.model(&req.model_name, req.model_version)?;
        if let Some(data) = req.raw_input.take() {
            req.inputs = vec![extensions::raw_input(&model, data)?];
        }
        Ok((guard, model))
    }

    async fn infer_on(
        &self,
        model: Arc<ModelVersion>,
        mut req: InferRequest,
    ) -> Result<InferResponse> {
        let extensions = extensions::take(&self.inner.shm, &mut req)?;
        let response = model.infer(req).await?;
        if extensions.is_empty() {
            return Ok(response);
        }
        extensions::finish(&model, response, extensions)
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

    /// The `/metrics` page (Prometheus text format, Triton's metric names).
    pub fn metrics(
        &self,
        options: &crate::metrics::MetricsOptions,
        cpu: Option<crate::metrics::CpuSample>,
    ) -> String {
        let mut page = crate::metrics::render(&self.served_versions(), options, cpu);
        self.inner.custom_metrics.render(&mut page);
        page
    }

    /// The registered system shared-memory regions (the shared-memory APIs of every front end).
    pub fn shared_memory(&self) -> &crate::shm::SharedMemory {
        &self.inner.shm
    }

    /// Unregisters CUDA shared-memory regions (one, or all with `None`): none can be registered in this
    /// build, so there is nothing to remove and the call succeeds, as in Triton's CPU-only build (its
    /// example clients start by unregistering both kinds).
    pub fn cuda_shared_memory_unregister(&self, region: Option<&str>) -> Result<()> {
        let _ = region;
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
            || self.inner.models.load().get(model).is_none_or(|m| m.served().next().is_none())
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

    /// The first step of a shutdown: readiness turns false at once (every protocol's), so load balancers stop
    /// sending; liveness stays true and requests are still served until [`Server::shutdown`].
    pub fn begin_shutdown(&self) {
        self.inner.stopping.store(true, Ordering::Release);
    }

    /// Inference requests being served now.
    pub fn in_flight(&self) -> usize {
        self.inner.in_flight.load(Ordering::Acquire)
    }

    /// Stops admitting inferences and waits up to `timeout` for in-flight ones. Returns how many were left.
    /// Buffered traces are written out.
    pub async fn shutdown(&self, timeout: Duration) -> usize {
        let left = self.drain(timeout).await;
        let tracer = self.inner.tracer.clone();
        let _ = tokio::task::spawn_blocking(move || tracer.flush()).await;
        left
    }

    /// Completes when the drain begins: a long-lived stream stops taking requests then, answers the ones it
    /// has and ends with a status of its own instead of being cut when the connection closes.
    pub async fn draining(&self) {
        let mut rx = self.inner.draining.subscribe();
        let _ = rx.wait_for(|d| *d).await;
    }

    async fn drain(&self, timeout: Duration) -> usize {
        self.inner.exiting.store(true, Ordering::Release);
        self.inner.draining.send_replace(true);
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
