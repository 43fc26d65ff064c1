//! What the core is started with: [`ServerOptions`] (built by the binary from flags, or directly by tests
//! and embedders) and the error a start can fail with.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::control::ModelControlMode;

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
    /// Bounds of the sequence batcher (stateful models).
    pub sequences: crate::sequence::SequenceLimits,
    /// Where the core records what it refuses for security reasons (a request into another client's
    /// sequence); the front ends' gates write to the same log.
    pub audit: Option<Arc<crate::audit::AuditLog>>,
    /// `--model-access`: the front ends check it; model code (BLS) cannot call a model it names.
    pub model_access: Arc<crate::access::ModelAccess>,
    /// The runtime model code's calls (BLS) run on when they start outside one (the binary's).
    pub runtime: Option<tokio::runtime::Handle>,
    /// `--model-signature-policy` and its trusted keys.
    pub signatures: SignaturePolicy,
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
            sequences: Default::default(),
            audit: None,
            model_access: Default::default(),
            runtime: None,
            signatures: Default::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartupError(pub String);

/// What happens to a model whose signature does not verify.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SignatureMode {
    /// No verification (Triton's behaviour).
    #[default]
    Off,
    /// Verify; log a failure loudly and load anyway.
    Warn,
    /// Verify; refuse a model that does not verify.
    Enforce,
}

impl SignatureMode {
    /// `off`, `warn` or `enforce`.
    pub fn parse(s: &str) -> Option<SignatureMode> {
        [SignatureMode::Off, SignatureMode::Warn, SignatureMode::Enforce]
            .into_iter()
            .find(|m| m.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SignatureMode::Off => "off",
            SignatureMode::Warn => "warn",
            SignatureMode::Enforce => "enforce",
        }
    }
}

/// The policy, and the keys and root certificates models may be signed with.
#[derive(Debug, Clone, Default)]
pub struct SignaturePolicy {
    pub mode: SignatureMode,
    pub trust: rampart_signing::Trust,
}
