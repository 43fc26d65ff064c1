//! tritonserver's command line (spec §9): the same flag names, defaults and value syntax. Flags whose feature
//! Rampart does not have yet are recognised; a value that keeps the feature off is accepted, any other value
//! is refused at startup with "not supported yet", never ignored.

use std::path::PathBuf;

use clap::{ArgAction, Parser};

fn parse_bool(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "1" | "on" | "yes" => Ok(true),
        "false" | "0" | "off" | "no" => Ok(false),
        _ => Err(format!("invalid boolean '{s}': use true/false or 1/0")),
    }
}

#[derive(Parser, Debug)]
#[command(
    name = "rampart",
    version,
    about = "Rampart: a secure, Triton-compatible inference server for ONNX models",
    override_usage = "rampart [options] --model-repository=<path>",
    disable_help_subcommand = true
)]
pub struct Cli {
    // ---- Server
    /// Identifier for this server (reported by server metadata).
    #[arg(long, default_value = "triton", help_heading = "Server")]
    pub id: String,
    /// Seconds to wait for in-flight requests at shutdown.
    #[arg(long, default_value_t = 30, help_heading = "Server")]
    pub exit_timeout_secs: u64,

    // ---- Logging
    /// Verbose logging level (0 = off).
    #[arg(long, default_value_t = 0, help_heading = "Logging")]
    pub log_verbose: u32,
    #[arg(long, default_value = "true", value_parser = parse_bool, action = ArgAction::Set, help_heading = "Logging")]
    pub log_info: bool,
    #[arg(long, default_value = "true", value_parser = parse_bool, action = ArgAction::Set, help_heading = "Logging")]
    pub log_warning: bool,
    #[arg(long, default_value = "true", value_parser = parse_bool, action = ArgAction::Set, help_heading = "Logging")]
    pub log_error: bool,
    /// Log line format: default, ISO8601 or json.
    #[arg(long, default_value = "default", help_heading = "Logging")]
    pub log_format: String,
    /// Append logs to this file instead of stderr (startup only; the logging API cannot change it).
    #[arg(long, help_heading = "Logging")]
    pub log_file: Option<String>,

    // ---- Model repository
    /// Model repository path; repeatable.
    #[arg(
        long = "model-repository",
        visible_alias = "model-store",
        help_heading = "Model Repository"
    )]
    pub model_repository: Vec<PathBuf>,
    /// Exit at startup if any model fails to load.
    #[arg(long, default_value = "true", value_parser = parse_bool, action = ArgAction::Set, help_heading = "Model Repository")]
    pub exit_on_error: bool,
    /// Disable auto-completion of model configs from the model files (implies --strict-model-config).
    #[arg(long, action = ArgAction::SetTrue, help_heading = "Model Repository")]
    pub disable_auto_complete_config: bool,
    /// Ready only when every model is ready.
    #[arg(long, default_value = "true", value_parser = parse_bool, action = ArgAction::Set, help_heading = "Model Repository")]
    pub strict_readiness: bool,
    /// none (load everything at startup), poll (follow the repository) or explicit (repository API).
    #[arg(long, default_value = "none", help_heading = "Model Repository")]
    pub model_control_mode: String,
    /// Seconds between repository polls in poll mode (0: never poll).
    #[arg(long, default_value_t = 15, help_heading = "Model Repository")]
    pub repository_poll_secs: u64,
    /// Model to load at startup (explicit mode); repeatable; `*` alone loads every model.
    #[arg(long, help_heading = "Model Repository")]
    pub load_model: Vec<String>,
    /// Let load requests carry model files (`file:` parameters). Off by default: it is remote code upload.
    #[arg(long, default_value = "false", value_parser = parse_bool, action = ArgAction::Set, help_heading = "Model Repository")]
    pub allow_model_file_override: bool,
    /// Start in poll or explicit mode even though the model-repository API answers without credentials on a
    /// non-loopback listener (Rampart refuses that by default).
    #[arg(long, default_value = "false", value_parser = parse_bool, action = ArgAction::Set, help_heading = "Model Repository")]
    pub allow_unauthenticated_model_control: bool,
    #[arg(long, help_heading = "Model Repository")]
    pub model_config_name: Option<String>,
    #[arg(long, default_value_t = 4, help_heading = "Model Repository")]
    pub model_load_thread_count: u32,
    #[arg(long, default_value_t = 0, help_heading = "Model Repository")]
    pub model_load_retry_count: u32,
    /// Requests that may wait per model version; more are answered 503 / UNAVAILABLE (Rampart's own).
    #[arg(long, default_value_t = 4096, help_heading = "Model Repository")]
    pub max_queued_requests: usize,
    /// Most inputs one inference request may carry (Rampart's own).
    #[arg(long, default_value_t = 1024, help_heading = "Model Repository")]
    pub max_request_inputs: usize,
    /// Most requested outputs one inference request may carry (Rampart's own).
    #[arg(long, default_value_t = 1024, help_heading = "Model Repository")]
    pub max_request_outputs: usize,
    /// Most request-level parameters one inference request may carry (Rampart's own).
    #[arg(long, default_value_t = 64, help_heading = "Model Repository")]
    pub max_request_parameters: usize,
    /// Most BYTES (string) elements over all inputs of one inference request (Rampart's own).
    #[arg(long, default_value_t = 1 << 20, help_heading = "Model Repository")]
    pub max_request_bytes_elements: u64,
    #[arg(long, default_value = "false", value_parser = parse_bool, action = ArgAction::Set, help_heading = "Model Repository")]
    pub model_namespacing: bool,
    #[arg(long, default_value = "true", value_parser = parse_bool, action = ArgAction::Set, help_heading = "Model Repository")]
    pub enable_peer_access: bool,

    // ---- HTTP
    /// Default: true, unless AIP_MODE=PREDICTION (Vertex AI) turns the main listeners off.
    #[arg(long, default_value_t = !aip_prediction_mode(), value_parser = parse_bool, action = ArgAction::Set, help_heading = "HTTP")]
    pub allow_http: bool,
    #[arg(long, default_value = "0.0.0.0", help_heading = "HTTP")]
    pub http_address: String,
    #[arg(long, default_value_t = 8000, help_heading = "HTTP")]
    pub http_port: u16,
    #[arg(long, default_value = "false", value_parser = parse_bool, action = ArgAction::Set, help_heading = "HTTP")]
    pub reuse_http_port: bool,
    #[arg(long, help_heading = "HTTP")]
    pub http_header_forward_pattern: Option<String>,
    #[arg(long, default_value_t = 8, help_heading = "HTTP")]
    pub http_thread_count: u32,
    /// Largest request body accepted, in bytes (enforced while reading).
    #[arg(long, default_value_t = 64 << 20, help_heading = "HTTP")]
    pub http_max_input_size: i64,
    /// `<categories>:<header>=<value>`: the categories answer only requests with that header value. The value
    /// may be `@/path/to/file` or `env:NAME` so it stays off the command line. Repeatable.
    #[arg(long, help_heading = "HTTP")]
    pub http_restricted_api: Vec<String>,
    /// Serve HTTPS (Rampart's own; Triton has no TLS on HTTP).
    #[arg(long, default_value = "false", value_parser = parse_bool, action = ArgAction::Set, help_heading = "HTTP")]
    pub http_use_ssl: bool,
    /// Require client certificates signed by --http-root-cert (implies --http-use-ssl).
    #[arg(long, default_value = "false", value_parser = parse_bool, action = ArgAction::Set, help_heading = "HTTP")]
    pub http_use_ssl_mutual: bool,
    /// PEM certificate chain of the HTTP listener.
    #[arg(long, help_heading = "HTTP")]
    pub http_server_cert: Option<PathBuf>,
    /// PEM private key of the HTTP listener.
    #[arg(long, help_heading = "HTTP")]
    pub http_server_key: Option<PathBuf>,
    /// PEM CA certificate(s) that sign accepted client certificates.
    #[arg(long, help_heading = "HTTP")]
    pub http_root_cert: Option<PathBuf>,
    /// Request headers must arrive within this many seconds (slow-client protection; Rampart's own).
    #[arg(long, default_value_t = 30, help_heading = "HTTP")]
    pub http_header_read_timeout_secs: u64,
    /// A request body must arrive within this many seconds (Rampart's own).
    #[arg(long, default_value_t = 60, help_heading = "HTTP")]
    pub http_body_read_timeout_secs: u64,
    /// Largest request head / HTTP/2 header list in bytes (Rampart's own).
    #[arg(long, default_value_t = 64 << 10, help_heading = "HTTP")]
    pub http_max_header_size: usize,
    /// Nesting limit of an input's JSON `data` arrays, 1 to 100 (Triton's fixed limit is 100).
    #[arg(long, default_value_t = 100, help_heading = "HTTP")]
    pub http_max_json_depth: usize,
    /// Most values (numbers, strings, arrays, objects) in one JSON request document, counted before parsing
    /// (Rampart's own).
    #[arg(long, default_value_t = 4 << 20, help_heading = "HTTP")]
    pub http_max_json_values: usize,
    /// Concurrent streams per HTTP/2 connection on the HTTP listener (Rampart's own).
    #[arg(long, default_value_t = 256, help_heading = "HTTP")]
    pub http2_max_concurrent_streams: u32,
    /// Append audit events (admin calls, refused credentials, startup, shutdown) as JSON lines to this file
    /// instead of stderr (Rampart's own; fixed at startup).
    #[arg(long, help_heading = "Logging")]
    pub audit_log_file: Option<PathBuf>,
    /// How often TLS certificate, key and root files are checked for changes (seconds).
    #[arg(long, default_value_t = 5, help_heading = "HTTP")]
    pub tls_reload_interval_secs: u64,

    // ---- GRPC
    /// Default: true, unless AIP_MODE=PREDICTION (Vertex AI) turns the main listeners off.
    #[arg(long, default_value_t = !aip_prediction_mode(), value_parser = parse_bool, action = ArgAction::Set, help_heading = "GRPC")]
    pub allow_grpc: bool,
    #[arg(long, default_value = "0.0.0.0", help_heading = "GRPC")]
    pub grpc_address: String,
    #[arg(long, default_value_t = 8001, help_heading = "GRPC")]
    pub grpc_port: u16,
    #[arg(long, default_value = "false", value_parser = parse_bool, action = ArgAction::Set, help_heading = "GRPC")]
    pub reuse_grpc_port: bool,
    #[arg(long, help_heading = "GRPC")]
    pub grpc_header_forward_pattern: Option<String>,
    /// Accepted for compatibility (2–128); Rampart's gRPC front end runs on the shared async runtime.
    #[arg(long, default_value_t = 2, help_heading = "GRPC")]
    pub grpc_infer_thread_count: u32,
    #[arg(long, default_value_t = 8, help_heading = "GRPC")]
    pub grpc_infer_allocation_pool_size: u32,
    /// Responses of one ModelStreamInfer stream that may wait to be written (decoupled models). Triton's
    /// default is unbounded; Rampart's is 64 and at most 65536 are kept.
    #[arg(long, default_value_t = i32::MAX as u32, help_heading = "GRPC")]
    pub grpc_max_response_pool_size: u32,
    #[arg(long, default_value = "false", value_parser = parse_bool, action = ArgAction::Set, help_heading = "GRPC")]
    pub grpc_use_ssl: bool,
    #[arg(long, default_value = "false", value_parser = parse_bool, action = ArgAction::Set, help_heading = "GRPC")]
    pub grpc_use_ssl_mutual: bool,
    #[arg(long, help_heading = "GRPC")]
    pub grpc_server_cert: Option<PathBuf>,
    #[arg(long, help_heading = "GRPC")]
    pub grpc_server_key: Option<PathBuf>,
    #[arg(long, help_heading = "GRPC")]
    pub grpc_root_cert: Option<PathBuf>,
    /// none, low, medium or high (gzip for infer responses when the client accepts it).
    #[arg(long, default_value = "none", help_heading = "GRPC")]
    pub grpc_infer_response_compression_level: String,
    /// HTTP/2 keepalive ping interval, milliseconds.
    #[arg(long, default_value_t = 7_200_000, help_heading = "GRPC")]
    pub grpc_keepalive_time: u64,
    /// HTTP/2 keepalive ping timeout, milliseconds.
    #[arg(long, default_value_t = 20_000, help_heading = "GRPC")]
    pub grpc_keepalive_timeout: u64,
    #[arg(long, default_value = "false", value_parser = parse_bool, action = ArgAction::Set, help_heading = "GRPC")]
    pub grpc_keepalive_permit_without_calls: bool,
    #[arg(long, default_value_t = 2, help_heading = "GRPC")]
    pub grpc_http2_max_pings_without_data: u32,
    #[arg(long, default_value_t = 300_000, help_heading = "GRPC")]
    pub grpc_http2_min_recv_ping_interval_without_data: u64,
    #[arg(long, default_value_t = 2, help_heading = "GRPC")]
    pub grpc_http2_max_ping_strikes: u32,
    /// Close connections older than this, milliseconds (0 = never).
    #[arg(long, default_value_t = 0, help_heading = "GRPC")]
    pub grpc_max_connection_age: u64,
    /// Grace period after --grpc-max-connection-age, milliseconds.
    #[arg(long, default_value_t = 0, help_heading = "GRPC")]
    pub grpc_max_connection_age_grace: u64,
    /// `<categories>:<key>=<value>`: the categories need metadata `triton-grpc-protocol-<key>: <value>`. The
    /// value may be `@/path/to/file` or `env:NAME`. Repeatable.
    #[arg(long, help_heading = "GRPC")]
    pub grpc_restricted_protocol: Vec<String>,
    /// Largest gRPC message received or sent, bytes (Rampart's own; Triton allows 2 GiB).
    #[arg(long, default_value_t = 64 << 20, help_heading = "GRPC")]
    pub grpc_max_message_size: u64,
    /// Concurrent HTTP/2 streams (calls) per gRPC connection (Rampart's own).
    #[arg(long, default_value_t = 256, help_heading = "GRPC")]
    pub grpc_max_concurrent_streams: u32,

    // ---- Access (Rampart's own, both listeners)
    /// `<model globs>:<key>=<value>` or `<model globs>:client-cert=<kind>:<name>`: inference on the models
    /// the globs name (`*`, `?`) also needs this key (header `<key>` on HTTP, metadata
    /// `triton-grpc-protocol-<key>` on gRPC) or client certificate. The value may be `@/path` or `env:NAME`.
    /// Repeatable; a model named by several rules needs one of them.
    #[arg(long, help_heading = "Access")]
    pub model_access: Vec<String>,
    /// `<categories>:<kind>:<name>` (kind: cn, dns, uri, email, ip): a verified mutual-TLS client certificate
    /// with that name may call the categories, in place of their restricted-API key. Repeatable.
    #[arg(long, help_heading = "Access")]
    pub client_cert_access: Vec<String>,

    // ---- Sagemaker
    #[arg(long, default_value = "false", value_parser = parse_bool, action = ArgAction::Set, help_heading = "Sagemaker")]
    pub allow_sagemaker: bool,
    /// Port of the SageMaker front end (on --http-address).
    #[arg(long, default_value_t = 8080, help_heading = "Sagemaker")]
    pub sagemaker_port: u16,
    /// Rampart: the directory SageMaker multi-model loads may come from (`<root>/<name>/model[/<dir>]`).
    #[arg(long, default_value = "/opt/ml/models", help_heading = "Sagemaker")]
    pub sagemaker_multi_model_root: PathBuf,
    #[arg(long, help_heading = "Sagemaker")]
    pub sagemaker_safe_port_range: Option<String>,
    #[arg(long, help_heading = "Sagemaker")]
    pub sagemaker_thread_count: Option<String>,

    // ---- Vertex
    /// Default: true when AIP_MODE=PREDICTION.
    #[arg(long, value_parser = parse_bool, action = ArgAction::Set, help_heading = "Vertex")]
    pub allow_vertex_ai: Option<bool>,
    /// Port of the Vertex AI front end (on --http-address). Default: $AIP_HTTP_PORT, else 8080.
    #[arg(long, help_heading = "Vertex")]
    pub vertex_ai_port: Option<u16>,
    #[arg(long, help_heading = "Vertex")]
    pub vertex_ai_thread_count: Option<String>,
    #[arg(long, help_heading = "Vertex")]
    pub vertex_ai_default_model: Option<String>,

    // ---- Metrics
    /// Serve Prometheus metrics on --metrics-address:--metrics-port (only `/metrics`, no credentials).
    #[arg(long, default_value = "true", value_parser = parse_bool, action = ArgAction::Set, help_heading = "Metrics")]
    pub allow_metrics: bool,
    /// GPU metrics (this build has no GPU support: accepted, nothing to report).
    #[arg(long, value_parser = parse_bool, action = ArgAction::Set, help_heading = "Metrics")]
    pub allow_gpu_metrics: Option<bool>,
    /// nv_cpu_utilization, nv_cpu_memory_total_bytes, nv_cpu_memory_used_bytes (default true).
    #[arg(long, value_parser = parse_bool, action = ArgAction::Set, help_heading = "Metrics")]
    pub allow_cpu_metrics: Option<bool>,
    /// Defaults to --http-address.
    #[arg(long, help_heading = "Metrics")]
    pub metrics_address: Option<String>,
    #[arg(long, default_value_t = 8002, help_heading = "Metrics")]
    pub metrics_port: u16,
    /// How often CPU and memory are sampled.
    #[arg(long, default_value_t = 2000, help_heading = "Metrics")]
    pub metrics_interval_ms: u64,
    /// `counter_latencies=true|false` (repeatable).
    #[arg(long, help_heading = "Metrics")]
    pub metrics_config: Vec<String>,

    // ---- Tracing
    /// `rate=N`, `count=N`, `level=OFF|TIMESTAMPS`, `mode=triton`, `triton,file=PATH`, `triton,log-frequency=N`
    /// (repeatable). The trace file is chosen here only; the trace API cannot move it.
    #[arg(long, help_heading = "Tracing")]
    pub trace_config: Vec<String>,

    // ---- Backend
    /// Where the ONNX Runtime library (libonnxruntime.so) is looked for.
    #[arg(long, default_value = "/opt/tritonserver/backends", help_heading = "Backend")]
    pub backend_directory: PathBuf,
    /// `<backend>,<key>=<value>` or `<key>=<value>`. Supported: `onnxruntime,engine=onnxruntime|tract`,
    /// `onnxruntime,intra_op_thread_count=<n>` (default 1), `onnxruntime,inter_op_thread_count=<n>` (default 1),
    /// `onnxruntime,enable-global-threadpool=0|1`, `default-max-batch-size=<n>`.
    #[arg(long, help_heading = "Backend")]
    pub backend_config: Vec<String>,

    // ---- Repository agent
    #[arg(long, help_heading = "Repository Agent")]
    pub repoagent_directory: Option<PathBuf>,

    // ---- Response cache
    #[arg(long, help_heading = "Response Cache")]
    pub cache_config: Vec<String>,
    #[arg(long, help_heading = "Response Cache")]
    pub cache_directory: Option<PathBuf>,

    // ---- Rate limiter
    #[arg(long, default_value = "off", help_heading = "Rate Limiter")]
    pub rate_limit: String,
    #[arg(long, help_heading = "Rate Limiter")]
    pub rate_limit_resource: Vec<String>,

    // ---- Memory / device
    #[arg(long, help_heading = "Memory/Device Management")]
    pub pinned_memory_pool_byte_size: Option<u64>,
    #[arg(long, help_heading = "Memory/Device Management")]
    pub cuda_memory_pool_byte_size: Vec<String>,
    #[arg(long, help_heading = "Memory/Device Management")]
    pub cuda_virtual_address_size: Vec<String>,
    #[arg(long, help_heading = "Memory/Device Management")]
    pub min_supported_compute_capability: Option<f64>,
    #[arg(long, help_heading = "Memory/Device Management")]
    pub buffer_manager_thread_count: Option<u32>,
    #[arg(long, help_heading = "Memory/Device Management")]
    pub host_policy: Vec<String>,
    #[arg(long, help_heading = "Memory/Device Management")]
    pub model_load_gpu_limit: Vec<String>,

    // ---- Shared memory
    #[arg(long, default_value = "false", value_parser = parse_bool, action = ArgAction::Set, help_heading = "Shared Memory")]
    pub allow_client_shm: bool,

    // ---- Deprecated
    #[arg(long, value_parser = parse_bool, action = ArgAction::Set, help_heading = "Deprecated")]
    pub strict_model_config: Option<bool>,
    #[arg(long, help_heading = "Deprecated")]
    pub response_cache_byte_size: Option<String>,
    #[arg(long, help_heading = "Deprecated")]
    pub trace_file: Option<String>,
    #[arg(long, help_heading = "Deprecated")]
    pub trace_level: Vec<String>,
    #[arg(long, help_heading = "Deprecated")]
    pub trace_rate: Option<String>,
    #[arg(long, help_heading = "Deprecated")]
    pub trace_count: Option<String>,
    #[arg(long, help_heading = "Deprecated")]
    pub trace_log_frequency: Option<String>,
}

/// Settings derived from the flags after validation.
#[derive(Debug)]
#[cfg_attr(not(all(feature = "http", feature = "otel")), allow(dead_code))]
pub struct Validated {
    pub http_restrictions: rampart_core::access::Restrictions,
    pub grpc_restrictions: rampart_core::access::Restrictions,
    pub model_access: rampart_core::access::ModelAccess,
    pub request_limits: rampart_core::RequestLimits,
    /// `--cache-config local,size=N` / `--response-cache-byte-size=N`.
    pub response_cache_bytes: Option<u64>,
    pub http_tls: Option<rampart_tls::TlsFiles>,
    pub grpc_tls: Option<rampart_tls::TlsFiles>,
    pub engine: crate::backends::EngineChoice,
    /// `--backend-config=onnxruntime,<key>=<value>` engine settings.
    pub onnxruntime: crate::backends::OrtOptions,
    pub autocomplete: bool,
    pub model_control_mode: rampart_core::ModelControlMode,
    pub metrics: rampart_core::metrics::MetricsOptions,
    pub log_format: rampart_core::logging::LogFormat,
    pub trace: rampart_core::trace::TraceConfig,
    /// `--trace-config mode=opentelemetry`: where and how to export.
    pub otel: Option<OtelSettings>,
    /// Flags accepted without effect because their feature is off (logged at startup).
    pub inert: Vec<String>,
    /// `--allow-sagemaker=true`.
    pub sagemaker: Option<SageMakerOptions>,
    /// The Vertex AI front end and its port.
    pub vertex: Option<(VertexOptions, u16)>,
}

#[cfg(feature = "sagemaker")]
pub use rampart_http::SageMakerOptions;
/// A build without the SageMaker front end never has its options.
#[cfg(not(feature = "sagemaker"))]
#[derive(Debug, Clone)]
pub enum SageMakerOptions {}

#[cfg(feature = "vertex")]
pub use rampart_http::VertexOptions;
/// A build without the Vertex AI front end never has its options.
#[cfg(not(feature = "vertex"))]
#[derive(Debug, Clone)]
pub enum VertexOptions {}

/// The refusal of a flag whose feature is not in this build.
fn not_built(what: &str, feature: &str) -> String {
    format!(
        "{what}: this rampart build has no {feature} support (cargo feature '{feature}'); Rampart refuses it rather than ignoring it"
    )
}

/// `--trace-config opentelemetry,…` settings (Triton's names and defaults).
#[derive(Debug, Clone)]
pub struct OtelSettings {
    pub url: String,
    pub resources: Vec<(String, String)>,
    pub max_queue_size: usize,
    pub schedule_delay_ms: u64,
    pub max_export_batch_size: usize,
}

impl Default for OtelSettings {
    fn default() -> Self {
        OtelSettings {
            url: "http://localhost:4318/v1/traces".into(),
            resources: vec![],
            max_queue_size: 2048,
            schedule_delay_ms: 5000,
            max_export_batch_size: 512,
        }
    }
}

/// A restricted-API value: `@/path` (file contents, one trailing newline removed), `env:NAME`, or the
/// literal. Errors name the file or variable, never the value.
fn resolve_secret(v: &str) -> Result<String, String> {
    if let Some(path) = v.strip_prefix('@') {
        let mut s = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read restricted-API value file '{path}': {e}"))?;
        if s.ends_with('\n') {
            s.pop();
            if s.ends_with('\r') {
                s.pop();
            }
        }
        return Ok(s);
    }
    if let Some(name) = v.strip_prefix("env:") {
        return std::env::var(name).map_err(|_| {
            format!("restricted-API value: environment variable '{name}' is not set")
        });
    }
    Ok(v.to_string())
}

/// A listener's TLS files from its flags; `None` when TLS is off. Mutual implies TLS.
fn tls_files(
    listener: &'static str,
    ssl: bool,
    mutual: bool,
    cert: &Option<PathBuf>,
    key: &Option<PathBuf>,
    root: &Option<PathBuf>,
) -> Result<Option<rampart_tls::TlsFiles>, String> {
    if !(ssl || mutual) {
        return Ok(None);
    }
    let need = |v: &Option<PathBuf>, flag: &str| {
        v.clone().ok_or_else(|| format!("--{listener}-use-ssl needs --{listener}-{flag}"))
    };
    let files = rampart_tls::TlsFiles {
        listener,
        cert: need(cert, "server-cert")?,
        key: need(key, "server-key")?,
        root: root.clone(),
        mutual,
    };
    if mutual && root.is_none() {
        return Err(format!(
            "--{listener}-use-ssl-mutual needs --{listener}-root-cert (the CA that signs client certificates)"
        ));
    }
    Ok(Some(files))
}

/// `AIP_MODE=PREDICTION`: running as a Vertex AI prediction container.
fn aip_prediction_mode() -> bool {
    std::env::var("AIP_MODE").is_ok_and(|m| m == "PREDICTION")
}

fn not_yet(flag: &str, value: &str, issue: &str) -> String {
    format!(
        "--{flag}={value} is not supported yet ({issue}); Rampart refuses it rather than ignoring it"
    )
}

impl Cli {
    /// Checks flag combinations and refuses values that need features this build lacks.
    pub fn validate(&self) -> Result<Validated, String> {
        let mut inert = Vec::new();
        if self.model_repository.is_empty() {
            return Err("--model-repository must be specified".into());
        }
        if self.http_max_input_size <= 0 {
            return Err(format!(
                "--http-max-input-size must be greater than 0, got {}",
                self.http_max_input_size
            ));
        }
        if self.http_header_read_timeout_secs == 0 || self.http_body_read_timeout_secs == 0 {
            return Err("--http-header-read-timeout-secs and --http-body-read-timeout-secs must be greater than 0".into());
        }
        if self.http_max_header_size < 1024 || self.http2_max_concurrent_streams == 0 {
            return Err("--http-max-header-size must be at least 1024 and --http2-max-concurrent-streams greater than 0".into());
        }
        #[cfg(feature = "http")]
        if !(1..=rampart_http::MAX_DATA_DEPTH).contains(&self.http_max_json_depth) {
            return Err(format!(
                "--http-max-json-depth must be between 1 and {}, got {}",
                rampart_http::MAX_DATA_DEPTH,
                self.http_max_json_depth
            ));
        }
        self.check_built(&mut inert)?;
        if self.http_max_json_values == 0 {
            return Err("--http-max-json-values must be greater than 0".into());
        }
        if self.tls_reload_interval_secs == 0 {
            return Err("--tls-reload-interval-secs must be greater than 0".into());
        }
        if let Some(p) = &self.grpc_header_forward_pattern {
            return Err(not_yet("grpc-header-forward-pattern", p, "header forwarding"));
        }
        if !(2..=128).contains(&self.grpc_infer_thread_count) {
            return Err(format!(
                "--grpc-infer-thread-count must be in 2..128, got {}",
                self.grpc_infer_thread_count
            ));
        }
        if self.grpc_max_response_pool_size == 0 || self.grpc_infer_allocation_pool_size == 0 {
            return Err("--grpc-max-response-pool-size and --grpc-infer-allocation-pool-size must be greater than 0".into());
        }
        if !matches!(
            self.grpc_infer_response_compression_level.as_str(),
            "none" | "low" | "medium" | "high"
        ) {
            return Err(format!(
                "unexpected value for --grpc-infer-response-compression-level: '{}' (expected none, low, medium or high)",
                self.grpc_infer_response_compression_level
            ));
        }
        if self.grpc_max_message_size == 0 || self.grpc_max_message_size > i32::MAX as u64 {
            return Err(format!(
                "--grpc-max-message-size must be in 1..{}, got {}",
                i32::MAX,
                self.grpc_max_message_size
            ));
        }
        if self.grpc_keepalive_time == 0 || self.grpc_keepalive_timeout == 0 {
            return Err(
                "--grpc-keepalive-time and --grpc-keepalive-timeout must be greater than 0".into(),
            );
        }
        if self.allow_grpc
            && self.allow_http
            && self.grpc_port != 0
            && self.grpc_port == self.http_port
        {
            return Err(format!(
                "The server cannot listen to GRPC requests and HTTP requests at the same port {}",
                self.grpc_port
            ));
        }
        if self.allow_grpc {
            let defaults = self.grpc_keepalive_permit_without_calls
                || self.grpc_http2_max_pings_without_data != 2
                || self.grpc_http2_min_recv_ping_interval_without_data != 300_000
                || self.grpc_http2_max_ping_strikes != 2;
            if defaults {
                inert.push("--grpc-keepalive-permit-without-calls and --grpc-http2-* ping policing are accepted but not enforced: the HTTP/2 stack answers pings without strike counting".into());
            }
        }
        let metrics = self.metrics_options()?;
        if self.allow_metrics
            && self.allow_http
            && self.metrics_port != 0
            && self.metrics_port == self.http_port
        {
            return Err(format!(
                "The server cannot listen to metrics requests and HTTP requests at the same port {}",
                self.metrics_port
            ));
        }
        if self.allow_metrics
            && self.allow_grpc
            && self.metrics_port != 0
            && self.metrics_port == self.grpc_port
        {
            return Err(format!(
                "The server cannot listen to metrics requests and GRPC requests at the same port {}",
                self.metrics_port
            ));
        }
        if self.metrics_interval_ms == 0 {
            return Err("--metrics-interval-ms must be greater than 0".into());
        }
        let Some(model_control_mode) =
            rampart_core::ModelControlMode::parse(&self.model_control_mode)
        else {
            return Err(format!(
                "unexpected value for --model-control-mode: '{}' (expected none, poll or explicit)",
                self.model_control_mode
            ));
        };
        if !self.load_model.is_empty()
            && model_control_mode != rampart_core::ModelControlMode::Explicit
        {
            return Err("Error: Use of '--load-model' requires setting '--model-control-mode=explicit' as well.".into());
        }
        if self.load_model.len() > 1 && self.load_model.iter().any(|m| m == "*") {
            return Err(
                "Wildcard model name '*' must be the ONLY startup model if specified at all."
                    .into(),
            );
        }
        for m in self.load_model.iter().filter(|m| *m != "*") {
            rampart_core::validate_model_name(m)
                .map_err(|e| format!("--load-model: {}", e.message()))?;
        }
        if self.allow_model_file_override
            && model_control_mode != rampart_core::ModelControlMode::Explicit
        {
            inert.push("--allow-model-file-override has no effect: load requests need --model-control-mode=explicit".into());
        }
        let sagemaker = self.sagemaker_options(model_control_mode)?;
        let vertex = self.vertex_options()?;
        for (name, port, on) in [
            ("sagemaker", self.sagemaker_port, sagemaker.is_some()),
            ("vertex-ai", vertex.as_ref().map_or(0, |v| v.1), vertex.is_some()),
        ] {
            let taken = [
                ("http", self.http_port, self.allow_http),
                ("grpc", self.grpc_port, self.allow_grpc),
                ("metrics", self.metrics_port, self.allow_metrics),
            ];
            if let Some((other, ..)) =
                taken.iter().find(|(_, p, used)| on && *used && port != 0 && *p == port)
            {
                return Err(format!("--{name}-port {port} is already the {other} port"));
            }
        }
        if let (Some(_), Some((_, vport))) = (&sagemaker, &vertex) {
            if *vport != 0 && *vport == self.sagemaker_port {
                return Err(format!("--sagemaker-port and --vertex-ai-port are both {vport}"));
            }
        }
        if let Some(n) = &self.model_config_name {
            return Err(not_yet("model-config-name", n, "custom config names"));
        }
        if self.model_load_retry_count > 0 {
            return Err(not_yet(
                "model-load-retry-count",
                &self.model_load_retry_count.to_string(),
                "load retries",
            ));
        }
        if self.max_queued_requests == 0 {
            return Err("--max-queued-requests must be greater than 0".into());
        }
        for (flag, v) in [
            ("--max-request-inputs", self.max_request_inputs),
            ("--max-request-outputs", self.max_request_outputs),
            ("--max-request-parameters", self.max_request_parameters),
            ("--max-request-bytes-elements", self.max_request_bytes_elements as usize),
            ("--grpc-max-concurrent-streams", self.grpc_max_concurrent_streams as usize),
        ] {
            if v == 0 {
                return Err(format!("{flag} must be greater than 0"));
            }
        }
        if self.model_load_thread_count == 0 {
            return Err("--model-load-thread-count must be greater than 0".into());
        }
        if self.model_namespacing {
            return Err(not_yet("model-namespacing", "true", "model namespacing"));
        }
        if let Some(p) = &self.http_header_forward_pattern {
            return Err(not_yet("http-header-forward-pattern", p, "header forwarding"));
        }
        let Some(log_format) = rampart_core::logging::LogFormat::parse(&self.log_format) else {
            return Err(format!(
                "invalid argument for --log-format, got: {} (expected default, ISO8601 or json)",
                self.log_format
            ));
        };
        if self.log_verbose > rampart_core::logging::MAX_VERBOSE_LEVEL {
            return Err(format!(
                "--log-verbose must be at most {}",
                rampart_core::logging::MAX_VERBOSE_LEVEL
            ));
        }
        let (trace, otel) = self.trace_config()?;
        if self.rate_limit != "off" {
            return Err(not_yet("rate-limit", &self.rate_limit, "the rate limiter"));
        }
        if let Some(v) = self.rate_limit_resource.first() {
            return Err(not_yet("rate-limit-resource", v, "the rate limiter"));
        }
        if let Some(v) = self.host_policy.first() {
            return Err(not_yet("host-policy", v, "host policies"));
        }
        // Settings of listeners that are off: accepted, reported at startup as having no effect.
        let extra = [
            (
                "sagemaker-*",
                !self.allow_sagemaker
                    && (self.sagemaker_port != 8080
                        || self.sagemaker_safe_port_range.is_some()
                        || self.sagemaker_thread_count.is_some()),
            ),
            (
                "vertex-ai-*",
                !self.allow_vertex_ai.unwrap_or(aip_prediction_mode())
                    && (self.vertex_ai_port.is_some()
                        || self.vertex_ai_thread_count.is_some()
                        || self.vertex_ai_default_model.is_some()),
            ),
            (
                "metrics-*",
                !self.allow_metrics
                    && (self.metrics_address.is_some()
                        || self.metrics_port != 8002
                        || self.metrics_interval_ms != 2000
                        || !self.metrics_config.is_empty()
                        || self.allow_gpu_metrics.is_some()
                        || self.allow_cpu_metrics.is_some()),
            ),
        ];
        for (flag, given) in extra {
            if given {
                inert.push(format!("--{flag} has no effect: that listener is disabled"));
            }
        }
        // Sizing knobs of Triton's internals that Rampart does not have (thread pools, GPU memory pools, …):
        // accepted so command lines keep working, and reported when set to anything but the default.
        let knobs = [
            ("http-thread-count", self.http_thread_count != 8),
            ("grpc-infer-thread-count", self.grpc_infer_thread_count != 2),
            ("grpc-infer-allocation-pool-size", self.grpc_infer_allocation_pool_size != 8),
            ("model-load-thread-count", self.model_load_thread_count != 4),
            ("enable-peer-access", !self.enable_peer_access),
            ("repoagent-directory", self.repoagent_directory.is_some()),
            ("cache-directory", self.cache_directory.is_some()),
            ("pinned-memory-pool-byte-size", self.pinned_memory_pool_byte_size.is_some()),
            ("cuda-memory-pool-byte-size", !self.cuda_memory_pool_byte_size.is_empty()),
            ("cuda-virtual-address-size", !self.cuda_virtual_address_size.is_empty()),
            ("min-supported-compute-capability", self.min_supported_compute_capability.is_some()),
            ("buffer-manager-thread-count", self.buffer_manager_thread_count.is_some()),
            ("model-load-gpu-limit", !self.model_load_gpu_limit.is_empty()),
        ];
        let set: Vec<&str> = knobs.iter().filter(|(_, set)| *set).map(|(f, _)| *f).collect();
        if !set.is_empty() {
            inert.push(format!(
                "accepted without effect (Rampart has no such internal pool, GPU or polling to size): --{}",
                set.join(", --")
            ));
        }
        // ONNX Runtime unless this build lacks it.
        let mut engine = if crate::backends::HAS_ONNXRUNTIME {
            crate::backends::EngineChoice::OnnxRuntime
        } else {
            crate::backends::EngineChoice::Tract
        };
        let mut onnxruntime = crate::backends::OrtOptions::default();
        for bc in &self.backend_config {
            let (backend, kv) = match bc.split_once(',') {
                Some((b, kv)) => (Some(b), kv),
                None => (None, bc.as_str()),
            };
            let Some((k, v)) = kv.split_once('=') else {
                return Err(format!(
                    "--backend-config={bc}: expected <backend>,<key>=<value> or <key>=<value>"
                ));
            };
            match (backend, k) {
                (Some("onnxruntime"), "engine") => {
                    engine = crate::backends::EngineChoice::parse(v).ok_or_else(|| {
                        format!("--backend-config={bc}: engine must be 'onnxruntime' or 'tract'")
                    })?;
                }
                (Some("onnxruntime"), k)
                    if onnxruntime
                        .set(k, v)
                        .map_err(|e| format!("--backend-config={bc}: {e}"))? => {}
                (None, "default-max-batch-size")
                    if v == rampart_core::AUTOCOMPLETE_DEFAULT_MAX_BATCH_SIZE.to_string() => {}
                _ => {
                    return Err(not_yet(
                        "backend-config",
                        bc,
                        "supported: onnxruntime,engine=onnxruntime|tract, onnxruntime,intra_op_thread_count=N, \
                         onnxruntime,inter_op_thread_count=N, onnxruntime,enable-global-threadpool=0|1",
                    ));
                }
            }
        }
        let strict = self.disable_auto_complete_config || self.strict_model_config.unwrap_or(false);
        let http_tls = tls_files(
            "http",
            self.http_use_ssl,
            self.http_use_ssl_mutual,
            &self.http_server_cert,
            &self.http_server_key,
            &self.http_root_cert,
        )?;
        let grpc_tls = tls_files(
            "grpc",
            self.grpc_use_ssl,
            self.grpc_use_ssl_mutual,
            &self.grpc_server_cert,
            &self.grpc_server_key,
            &self.grpc_root_cert,
        )?;
        use rampart_core::access::{Protocol, Restrictions};
        let mut http_restrictions =
            Restrictions::parse(Protocol::Http, &self.http_restricted_api, &resolve_secret)?;
        let mut grpc_restrictions =
            Restrictions::parse(Protocol::Grpc, &self.grpc_restricted_protocol, &resolve_secret)?;
        http_restrictions.add_client_certs(&self.client_cert_access)?;
        grpc_restrictions.add_client_certs(&self.client_cert_access)?;
        let model_access =
            rampart_core::access::ModelAccess::parse(&self.model_access, &resolve_secret)?;
        let mutual = http_tls.as_ref().is_some_and(|t| t.mutual)
            || grpc_tls.as_ref().is_some_and(|t| t.mutual);
        let wants_certs = !self.client_cert_access.is_empty()
            || self.model_access.iter().any(|m| m.contains(":client-cert="));
        if wants_certs && !mutual {
            return Err(
                "client-certificate rules (--client-cert-access, --model-access ...:client-cert=...) need mutual TLS on a listener: \
                 set --http-use-ssl-mutual or --grpc-use-ssl-mutual"
                    .into(),
            );
        }
        if model_control_mode != rampart_core::ModelControlMode::None
            && !self.allow_unauthenticated_model_control
        {
            self.check_model_control_exposure(
                model_control_mode,
                &http_restrictions,
                &grpc_restrictions,
            )?;
        }
        let request_limits = rampart_core::RequestLimits {
            max_inputs: self.max_request_inputs,
            max_outputs: self.max_request_outputs,
            max_parameters: self.max_request_parameters,
            max_bytes_elements: self.max_request_bytes_elements,
        };
        let response_cache_bytes = self.response_cache_bytes()?;
        Ok(Validated {
            response_cache_bytes,
            http_restrictions,
            grpc_restrictions,
            model_access,
            request_limits,
            http_tls,
            grpc_tls,
            engine,
            onnxruntime,
            autocomplete: !strict,
            model_control_mode,
            metrics,
            log_format,
            trace,
            otel,
            inert,
            sagemaker,
            vertex,
        })
    }

    /// Vertex AI serves the repository named by `AIP_STORAGE_URI` when no `--model-repository` is given.
    pub fn apply_environment(&mut self) {
        if self.model_repository.is_empty() && self.allow_vertex_ai.unwrap_or(aip_prediction_mode())
        {
            if let Ok(uri) = std::env::var("AIP_STORAGE_URI") {
                self.model_repository.push(PathBuf::from(uri));
            }
        }
    }

    /// Flags of front ends and features left out of this build: a listener that is on by default is reported
    /// as absent; anything asked for explicitly is refused.
    fn check_built(&self, inert: &mut Vec<String>) -> Result<(), String> {
        let absent = [
            ("--allow-http", self.allow_http, cfg!(feature = "http"), "http"),
            ("--allow-grpc", self.allow_grpc, cfg!(feature = "grpc"), "grpc"),
            ("--allow-metrics", self.allow_metrics, cfg!(feature = "metrics"), "metrics"),
        ];
        for (flag, on, built, feature) in absent {
            if on && !built {
                inert.push(format!("{flag} has no effect: this build has no {feature} front end (cargo feature '{feature}')"));
            }
        }
        if self.allow_client_shm && !cfg!(feature = "shm") {
            return Err(not_built("--allow-client-shm=true", "shm"));
        }
        let traced = !self.trace_config.is_empty()
            || self.trace_file.is_some()
            || !self.trace_level.is_empty()
            || self.trace_rate.is_some()
            || self.trace_count.is_some()
            || self.trace_log_frequency.is_some();
        if traced && !cfg!(feature = "tracing") {
            return Err(not_built("--trace-config / --trace-*", "tracing"));
        }
        if !cfg!(feature = "onnxruntime") && !cfg!(feature = "tract") {
            return Err("this rampart build has no engine (cargo features 'onnxruntime' and 'tract' are both off)".into());
        }
        Ok(())
    }

    /// `--allow-sagemaker=true` and the `SAGEMAKER_*` environment (spec §1.10).
    #[cfg(not(feature = "sagemaker"))]
    fn sagemaker_options(
        &self,
        _: rampart_core::ModelControlMode,
    ) -> Result<Option<SageMakerOptions>, String> {
        if self.allow_sagemaker {
            return Err(not_built("--allow-sagemaker=true", "sagemaker"));
        }
        Ok(None)
    }

    /// `--allow-vertex-ai` (default on when `AIP_MODE=PREDICTION`).
    #[cfg(not(feature = "vertex"))]
    fn vertex_options(&self) -> Result<Option<(VertexOptions, u16)>, String> {
        if self.allow_vertex_ai.unwrap_or(aip_prediction_mode()) {
            return Err(not_built("--allow-vertex-ai (or AIP_MODE=PREDICTION)", "vertex"));
        }
        Ok(None)
    }

    /// `--allow-sagemaker=true` and the `SAGEMAKER_*` environment (spec §1.10).
    #[cfg(feature = "sagemaker")]
    fn sagemaker_options(
        &self,
        mode: rampart_core::ModelControlMode,
    ) -> Result<Option<SageMakerOptions>, String> {
        if !self.allow_sagemaker {
            return Ok(None);
        }
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        match env("SAGEMAKER_TRITON_INFERENCE_TYPE").as_deref() {
            None | Some("infer") => {}
            Some(t @ ("generate" | "generate_stream")) => {
                return Err(format!(
                    "SAGEMAKER_TRITON_INFERENCE_TYPE={t} is not supported yet (the generate extension is not built); use 'infer'"
                ));
            }
            Some(t) => {
                return Err(format!(
                    "unexpected SAGEMAKER_TRITON_INFERENCE_TYPE '{t}' (expected infer, generate or generate_stream)"
                ));
            }
        }
        let ping_live = match env("SAGEMAKER_TRITON_PING_MODE").as_deref() {
            None | Some("ready") => false,
            Some("live") => true,
            Some(m) => {
                return Err(format!(
                    "unexpected SAGEMAKER_TRITON_PING_MODE '{m}' (expected ready or live)"
                ));
            }
        };
        if let Some(r) = &self.sagemaker_safe_port_range {
            return Err(not_yet(
                "sagemaker-safe-port-range",
                r,
                "port-range checks of the other listeners",
            ));
        }
        let multi_model =
            env("SAGEMAKER_MULTI_MODEL").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        if multi_model && mode != rampart_core::ModelControlMode::Explicit {
            return Err("SAGEMAKER_MULTI_MODEL=true loads and unloads models: it needs --model-control-mode=explicit".into());
        }
        Ok(Some(SageMakerOptions {
            default_model: env("SAGEMAKER_TRITON_DEFAULT_MODEL_NAME")
                .unwrap_or_else(|| "unspecified_SAGEMAKER_TRITON_DEFAULT_MODEL_NAME".into()),
            ping_live,
            multi_model,
            multi_model_root: self.sagemaker_multi_model_root.clone(),
        }))
    }

    /// `--allow-vertex-ai` (default on when `AIP_MODE=PREDICTION`) and the `AIP_*` environment (spec §1.11):
    /// the options and the port.
    #[cfg(feature = "vertex")]
    fn vertex_options(&self) -> Result<Option<(VertexOptions, u16)>, String> {
        if !self.allow_vertex_ai.unwrap_or(aip_prediction_mode()) {
            return Ok(None);
        }
        let route = |var: &str| {
            let r = std::env::var(var)
                .map_err(|_| format!("the Vertex AI front end needs {var} (both AIP_PREDICT_ROUTE and AIP_HEALTH_ROUTE must be set)"))?;
            if rampart_http::valid_vertex_route(&r) {
                Ok(r)
            } else {
                Err(format!("{var} '{}' is not a plain absolute URL path", r.escape_debug()))
            }
        };
        let (predict_route, health_route) =
            (route("AIP_PREDICT_ROUTE")?, route("AIP_HEALTH_ROUTE")?);
        if predict_route == health_route {
            return Err("AIP_PREDICT_ROUTE and AIP_HEALTH_ROUTE must differ".into());
        }
        let port = match self.vertex_ai_port {
            Some(p) => p,
            None => match std::env::var("AIP_HTTP_PORT") {
                Ok(p) => p.parse().map_err(|_| {
                    format!("AIP_HTTP_PORT '{}' is not a port number", p.escape_debug())
                })?,
                Err(_) => 8080,
            },
        };
        let default_model = self.vertex_ai_default_model.clone().filter(|m| !m.is_empty());
        Ok(Some((VertexOptions { predict_route, health_route, default_model }, port)))
    }

    /// `--trace-config [<mode>,]<setting>=<value>` (repeatable) and the deprecated `--trace-*` flags.
    fn trace_config(
        &self,
    ) -> Result<(rampart_core::trace::TraceConfig, Option<OtelSettings>), String> {
        let mut config = rampart_core::trace::TraceConfig::default();
        let mut levels: Vec<String> = Vec::new();
        let mut otel_mode = false;
        let mut otel = OtelSettings::default();
        let number = |flag: &str, v: &str| -> Result<i64, String> {
            v.trim().parse::<i64>().map_err(|_| format!("--{flag}: expected an integer, got '{v}'"))
        };
        let mut set = |mode: Option<&str>,
                       key: &str,
                       value: &str,
                       config: &mut rampart_core::trace::TraceConfig|
         -> Result<(), String> {
            match (mode, key) {
                (None, "rate") => config.rate = u32::try_from(number("trace-config rate", value)?).ok().filter(|r| *r > 0).ok_or("--trace-config rate must be in 1..=4294967295")?,
                (None, "count") => {
                    config.count = i32::try_from(number("trace-config count", value)?).ok().filter(|c| *c >= -1).ok_or("--trace-config count must be in -1..=2147483647 (-1: unlimited)")?
                }
                (None, "level") => levels.push(value.to_string()),
                (None, "mode") if value == "triton" => otel_mode = false,
                (None, "mode") if value == "opentelemetry" => otel_mode = true,
                (None, "mode") => return Err(format!("--trace-config mode must be triton or opentelemetry, got '{value}'")),
                (Some("triton"), "file") => config.file = Some(std::path::PathBuf::from(value)),
                (Some("triton"), "log-frequency") => {
                    config.log_frequency = u32::try_from(number("trace-config triton,log-frequency", value)?).map_err(|_| "--trace-config triton,log-frequency must be 0 or more")?
                }
                (Some("opentelemetry"), "url") => {
                    if !(value.starts_with("http://") || value.starts_with("https://")) {
                        return Err(format!("--trace-config opentelemetry,url must be an http:// or https:// URL, got '{value}'"));
                    }
                    otel.url = value.to_string();
                }
                (Some("opentelemetry"), "resource") => {
                    let (k, v) = value.split_once('=').ok_or_else(|| format!("--trace-config opentelemetry,resource expects <key>=<value>, got '{value}'"))?;
                    otel.resources.push((k.to_string(), v.to_string()));
                }
                (Some("opentelemetry"), "bsp_max_queue_size") => {
                    otel.max_queue_size = usize::try_from(number("trace-config opentelemetry,bsp_max_queue_size", value)?).ok().filter(|n| (1..=1 << 20).contains(n)).ok_or("--trace-config opentelemetry,bsp_max_queue_size must be in 1..=1048576")?
                }
                (Some("opentelemetry"), "bsp_schedule_delay") => {
                    otel.schedule_delay_ms = u64::try_from(number("trace-config opentelemetry,bsp_schedule_delay", value)?).map_err(|_| "--trace-config opentelemetry,bsp_schedule_delay must be 0 or more")?
                }
                (Some("opentelemetry"), "bsp_max_export_batch_size") => {
                    otel.max_export_batch_size = usize::try_from(number("trace-config opentelemetry,bsp_max_export_batch_size", value)?).ok().filter(|n| (1..=1 << 20).contains(n)).ok_or("--trace-config opentelemetry,bsp_max_export_batch_size must be in 1..=1048576")?
                }
                (m, k) => {
                    return Err(format!(
                        "--trace-config: unknown setting '{}{k}' (expected rate, count, level, mode, triton,file or triton,log-frequency)",
                        m.map(|m| format!("{m},")).unwrap_or_default()
                    ));
                }
            }
            Ok(())
        };
        for tc in &self.trace_config {
            let (mode, setting) = match tc.split_once(',') {
                Some((m, rest)) if !m.contains('=') => (Some(m), rest),
                _ => (None, tc.as_str()),
            };
            let (key, value) = setting.split_once('=').ok_or_else(|| {
                format!("--trace-config option format is '[<mode>,]<setting>=<value>'. Got {tc}")
            })?;
            set(mode, key, value, &mut config)?;
        }
        // Deprecated spellings.
        if let Some(f) = &self.trace_file {
            set(Some("triton"), "file", f, &mut config)?;
        }
        for l in &self.trace_level {
            set(None, "level", l, &mut config)?;
        }
        if let Some(v) = &self.trace_rate {
            set(None, "rate", v, &mut config)?;
        }
        if let Some(v) = &self.trace_count {
            set(None, "count", v, &mut config)?;
        }
        if let Some(v) = &self.trace_log_frequency {
            set(Some("triton"), "log-frequency", v, &mut config)?;
        }
        let canonical: Vec<String> = levels
            .iter()
            .map(|l| match l.to_ascii_lowercase().as_str() {
                "false" | "off" => "OFF".to_string(),
                "true" | "on" | "min" | "timestamps" => "TIMESTAMPS".to_string(),
                "max" | "tensors" => "TENSORS".to_string(),
                other => other.to_ascii_uppercase(),
            })
            .collect();
        if let Some(bad) =
            canonical.iter().find(|l| !matches!(l.as_str(), "OFF" | "TIMESTAMPS" | "TENSORS"))
        {
            return Err(format!(
                "--trace-config level: unknown trace level '{bad}' (expected OFF, TIMESTAMPS or TENSORS)"
            ));
        }
        config.timestamps = rampart_core::trace::parse_level(&canonical)
            .map_err(|e| format!("--trace-config level: {}", e.message()))?;
        if otel_mode {
            if !cfg!(feature = "otel") {
                return Err(not_yet(
                    "trace-config",
                    "mode=opentelemetry",
                    "OpenTelemetry export in this build (cargo feature 'otel')",
                ));
            }
            if otel.max_export_batch_size > otel.max_queue_size {
                return Err("--trace-config opentelemetry,bsp_max_export_batch_size must not exceed bsp_max_queue_size".into());
            }
            // The trace file belongs to mode triton; in mode opentelemetry traces are exported.
            config.file = None;
            return Ok((config, Some(otel)));
        }
        if config.timestamps && config.file.is_none() {
            return Err("--trace-config level=TIMESTAMPS needs a trace file: --trace-config triton,file=<path>".into());
        }
        if let Some(f) = config.file.as_ref().filter(|f| f.is_dir()) {
            return Err(format!("--trace-config triton,file: '{}' is a directory", f.display()));
        }
        if let Some(dir) =
            config.file.as_ref().and_then(|f| f.parent()).filter(|d| !d.as_os_str().is_empty())
        {
            if !dir.is_dir() {
                return Err(format!(
                    "--trace-config triton,file: directory '{}' does not exist",
                    dir.display()
                ));
            }
        }
        Ok((config, None))
    }

    /// `--metrics-config <key>=<value>` settings.
    fn metrics_options(&self) -> Result<rampart_core::metrics::MetricsOptions, String> {
        let mut options = rampart_core::metrics::MetricsOptions::default();
        let mut summaries = false;
        let mut summary = rampart_core::stats::SummaryConfig::default();
        for setting in &self.metrics_config {
            let Some((key, value)) = setting.split_once('=') else {
                return Err(format!(
                    "--metrics-config option format is '<setting>=<value>'. Got {setting}"
                ));
            };
            let flag = |v: &str| parse_bool(v).map_err(|e| format!("--metrics-config {key}: {e}"));
            match key {
                "counter_latencies" => options.counter_latencies = flag(value)?,
                "summary_latencies" => summaries = flag(value)?,
                "histogram_latencies" => options.histograms = flag(value)?,
                "summary_quantiles" => {
                    let mut quantiles = Vec::new();
                    for pair in value.split(',') {
                        let parsed = pair.split_once(':').and_then(|(q, e)| {
                            Some((q.trim().parse::<f64>().ok()?, e.trim().parse::<f64>().ok()?))
                        });
                        match parsed {
                            Some((q, e))
                                if (0.0..=1.0).contains(&q) && (0.0..=1.0).contains(&e) =>
                            {
                                quantiles.push((q, e))
                            }
                            _ => {
                                return Err(format!(
                                    "--metrics-config summary_quantiles: expected <quantile>:<error>,… with values in 0..1, got '{value}'"
                                ));
                            }
                        }
                    }
                    if quantiles.is_empty() || quantiles.len() > 32 {
                        return Err("--metrics-config summary_quantiles: 1 to 32 quantiles".into());
                    }
                    summary.quantiles = quantiles;
                }
                "summary_max_age" => {
                    let secs = value.parse::<u64>().ok().filter(|s| (1..=86_400).contains(s));
                    summary.max_age = std::time::Duration::from_secs(secs.ok_or_else(|| {
                        format!(
                            "--metrics-config summary_max_age: seconds in 1..=86400, got '{value}'"
                        )
                    })?);
                }
                // The window is kept exactly (bounded in samples), so there are no age buckets to size.
                "summary_age_buckets" => {}
                _ => {
                    return Err(format!(
                        "--metrics-config: unknown setting '{key}' (expected counter_latencies, summary_latencies, summary_quantiles, summary_max_age or histogram_latencies)"
                    ));
                }
            }
        }
        options.summaries = summaries.then_some(summary);
        Ok(options)
    }

    /// Secure default beyond Triton: model control (which decides what code runs) is refused when anyone who
    /// can reach a non-loopback listener may use the repository API without a credential.
    fn check_model_control_exposure(
        &self,
        mode: rampart_core::ModelControlMode,
        http: &rampart_core::access::Restrictions,
        grpc: &rampart_core::access::Restrictions,
    ) -> Result<(), String> {
        use rampart_core::access::Category;
        let loopback = |address: &str| {
            let host = address
                .strip_prefix("ipv6:")
                .unwrap_or(address)
                .trim_start_matches('[')
                .trim_end_matches(']');
            host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
        };
        let open = |rules: &rampart_core::access::Restrictions| {
            rules.open_categories().contains(&Category::ModelRepository)
        };
        let mut exposed = Vec::new();
        if self.allow_http && open(http) && !loopback(&self.http_address) {
            exposed.push(format!("HTTP on {}:{}", self.http_address, self.http_port));
        }
        if self.allow_grpc && open(grpc) && !loopback(&self.grpc_address) {
            exposed.push(format!("gRPC on {}:{}", self.grpc_address, self.grpc_port));
        }
        // The SageMaker multi-model routes load and unload models too (same category, HTTP's rules).
        let multi_model =
            std::env::var("SAGEMAKER_MULTI_MODEL").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
        if cfg!(feature = "sagemaker")
            && self.allow_sagemaker
            && multi_model
            && open(http)
            && !loopback(&self.http_address)
        {
            exposed.push(format!("SageMaker on {}:{}", self.http_address, self.sagemaker_port));
        }
        if exposed.is_empty() {
            return Ok(());
        }
        Err(format!(
            "--model-control-mode={} refused: the model-repository API answers without credentials on {}, so any client \
             could change which models run. Fix one of: restrict the category (--http-restricted-api=model-repository:<header>=<value> \
             and --grpc-restricted-protocol=model-repository:<header>=<value>, or --client-cert-access=model-repository:<kind>:<name> \
             with mutual TLS); bind the listener to loopback (--http-address=127.0.0.1, --grpc-address=127.0.0.1); \
             or accept the exposure with --allow-unauthenticated-model-control=true",
            mode.as_str(),
            exposed.join(" and ")
        ))
    }
}

impl Cli {
    /// The response cache size from `--cache-config local,size=N` (repeatable; the last size wins) or the
    /// deprecated `--response-cache-byte-size=N`, which cannot be combined.
    fn response_cache_bytes(&self) -> Result<Option<u64>, String> {
        if self.response_cache_byte_size.is_some() && !self.cache_config.is_empty() {
            return Err("Incompatible flags --response-cache-byte-size and --cache-config both provided. Please provide one or the other.".into());
        }
        let size = |flag: &str, v: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("{flag}: the cache size must be a number of bytes, got '{v}'"))
        };
        if let Some(v) = &self.response_cache_byte_size {
            return Ok(Some(size("--response-cache-byte-size", v)?).filter(|&n| n > 0));
        }
        let mut bytes = None;
        for spec in &self.cache_config {
            let (cache, setting) = spec.split_once(',').ok_or_else(|| {
                format!(
                    "--cache-config option format is '<cache name>,<setting>=<value>'. Got {spec}"
                )
            })?;
            if cache != "local" {
                return Err(format!(
                    "--cache-config: only the 'local' response cache is built into Rampart, got '{cache}'"
                ));
            }
            match setting.split_once('=') {
                Some(("size", v)) => bytes = Some(size("--cache-config local,size", v)?),
                _ => {
                    return Err(format!(
                        "--cache-config: the local cache takes only 'size=<bytes>', got '{setting}'"
                    ));
                }
            }
        }
        Ok(bytes.filter(|&n| n > 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("rampart").chain(args.iter().copied()))
    }

    #[test]
    fn both_value_syntaxes_and_bools() {
        let c = parse(&[
            "--model-repository",
            "/a",
            "--model-store=/b",
            "--allow-grpc=0",
            "--allow-metrics",
            "false",
            "--strict-readiness=1",
        ])
        .unwrap();
        assert_eq!(c.model_repository, vec![PathBuf::from("/a"), PathBuf::from("/b")]);
        assert!(!c.allow_grpc && !c.allow_metrics && c.strict_readiness);
        assert!(c.validate().is_ok());
        assert!(parse(&["--allow-grpc=maybe"]).is_err());
        assert!(parse(&["--no-such-flag"]).is_err());
    }

    #[test]
    fn model_control_needs_credentials_or_loopback() {
        let base = ["--model-repository=/m", "--allow-metrics=false"];
        let run = |extra: &[&str]| {
            let args: Vec<&str> = base.iter().chain(extra).copied().collect();
            parse(&args).unwrap().validate().map(|v| v.model_control_mode)
        };
        for mode in ["--model-control-mode=explicit", "--model-control-mode=poll"] {
            let e = run(&[mode]).unwrap_err();
            assert!(
                e.contains("HTTP on 0.0.0.0:8000") && e.contains("gRPC on 0.0.0.0:8001"),
                "{e}"
            );
            assert!(
                e.contains("--allow-unauthenticated-model-control=true")
                    && e.contains("--http-address=127.0.0.1"),
                "{e}"
            );
            // Only the listener that is still exposed is named.
            let e = run(&[mode, "--http-address=127.0.0.1"]).unwrap_err();
            assert!(!e.contains("HTTP on") && e.contains("gRPC on"), "{e}");
            let e =
                run(&[mode, "--allow-grpc=false", "--http-restricted-api=health:k=v"]).unwrap_err();
            assert!(e.contains("HTTP on"), "restricting another category does not count: {e}");
            assert!(run(&[mode, "--http-address=127.0.0.1", "--grpc-address=ipv6:[::1]"]).is_ok());
            assert!(
                run(&[
                    mode,
                    "--allow-grpc=false",
                    "--http-restricted-api=model-repository:admin-key=s3cret"
                ])
                .is_ok()
            );
            assert!(
                run(&[
                    mode,
                    "--allow-http=false",
                    "--grpc-restricted-protocol=model-repository,health:admin-key=s3cret"
                ])
                .is_ok()
            );
            assert!(run(&[mode, "--allow-unauthenticated-model-control=true"]).is_ok());
        }
        assert_eq!(
            run(&[]).unwrap(),
            rampart_core::ModelControlMode::None,
            "mode none needs nothing"
        );
        let e = run(&[
            "--model-control-mode=explicit",
            "--allow-unauthenticated-model-control=true",
            "--load-model=*",
            "--load-model=a",
        ])
        .unwrap_err();
        assert!(e.contains("Wildcard model name '*' must be the ONLY startup model"), "{e}");
        let e = run(&[
            "--model-control-mode=explicit",
            "--allow-unauthenticated-model-control=true",
            "--load-model=../x",
        ])
        .unwrap_err();
        assert!(e.contains("path traversal"), "{e}");
    }

    #[test]
    fn missing_features_refused() {
        let c = parse(&["--model-repository=/m"]).unwrap();
        assert!(
            c.validate().unwrap().metrics.counter_latencies,
            "metrics on by default, Triton's defaults"
        );
        let c =
            parse(&["--model-repository=/m", "--metrics-config=counter_latencies=false"]).unwrap();
        assert!(!c.validate().unwrap().metrics.counter_latencies);
        let c = parse(&[
            "--model-repository=/m",
            "--metrics-config=summary_latencies=true",
            "--metrics-config=summary_quantiles=0.5:0.1,0.99:0.001",
        ])
        .unwrap();
        let s = c.validate().unwrap().metrics.summaries.unwrap();
        assert_eq!(s.quantiles, vec![(0.5, 0.1), (0.99, 0.001)]);
        let c =
            parse(&["--model-repository=/m", "--metrics-config=summary_quantiles=2:0.1"]).unwrap();
        assert!(c.validate().unwrap_err().contains("values in 0..1"));
        let c = parse(&["--model-repository=/m", "--metrics-config=bogus=1"]).unwrap();
        assert!(c.validate().unwrap_err().contains("unknown setting 'bogus'"));
        let c = parse(&["--model-repository=/m", "--metrics-port=8000"]).unwrap();
        assert!(
            c.validate()
                .unwrap_err()
                .contains("metrics requests and HTTP requests at the same port 8000")
        );
        let c = parse(&[
            "--model-repository=/m",
            "--allow-grpc=false",
            "--allow-metrics=false",
            "--model-control-mode=sometimes",
        ])
        .unwrap();
        assert!(c.validate().unwrap_err().contains("expected none, poll or explicit"));
        let c = parse(&[
            "--model-repository=/m",
            "--allow-grpc=false",
            "--allow-metrics=false",
            "--load-model=x",
        ])
        .unwrap();
        assert!(
            c.validate().unwrap_err().contains("requires setting '--model-control-mode=explicit'")
        );
        let c =
            parse(&["--model-repository=/m", "--allow-metrics=false", "--metrics-port=9"]).unwrap();
        assert_eq!(c.validate().unwrap().inert.len(), 1);
        let c = parse(&[
            "--model-repository=/m",
            "--allow-metrics=false",
            "--http-thread-count=4",
            "--cache-directory=/x",
        ])
        .unwrap();
        let inert = c.validate().unwrap().inert;
        assert!(
            inert.iter().any(|n| n.contains("--http-thread-count, --cache-directory")),
            "{inert:?}"
        );
        let c =
            parse(&["--model-repository=/m", "--allow-metrics=false", "--grpc-port=8000"]).unwrap();
        assert!(c.validate().unwrap_err().contains("same port"));
        let c = parse(&["--model-repository=/m", "--allow-metrics=false", "--grpc-use-ssl=true"])
            .unwrap();
        assert!(c.validate().unwrap_err().contains("--grpc-use-ssl needs --grpc-server-cert"));
        let c = parse(&[
            "--model-repository=/m",
            "--allow-metrics=false",
            "--http-use-ssl-mutual=1",
            "--http-server-cert=c",
            "--http-server-key=k",
        ])
        .unwrap();
        assert!(c.validate().unwrap_err().contains("--http-root-cert"));
        let c = parse(&[
            "--model-repository=/m",
            "--allow-metrics=false",
            "--http-use-ssl=1",
            "--http-server-cert=c",
            "--http-server-key=k",
        ])
        .unwrap();
        assert!(c.validate().unwrap().http_tls.is_some());
        let c = parse(&[
            "--model-repository=/m",
            "--allow-grpc=false",
            "--allow-metrics=false",
            "--backend-config=onnxruntime,engine=tract",
        ])
        .unwrap();
        assert_eq!(c.validate().unwrap().engine, crate::backends::EngineChoice::Tract);
        let c = parse(&[
            "--model-repository=/m",
            "--allow-grpc=false",
            "--allow-metrics=false",
            "--disable-auto-complete-config",
        ])
        .unwrap();
        assert!(!c.validate().unwrap().autocomplete);
    }
}
