//! tritonserver's command line (docs/protocol.md, "Command line"): the same flag names, defaults and value
//! syntax. Flags whose feature Rampart does not have yet are recognised; a value that keeps the feature off is
//! accepted, any other value is refused at startup with "not supported yet", never ignored.
//!
//! Each flag group is a struct of its own (one module each), flattened into [`Cli`] in `--help` order; a
//! group checks its flags into typed settings, and [`Cli::validate`] composes those, plus the checks that span
//! groups (ports, listeners that are off, model-control exposure), into [`Validated`].

mod access;
mod backend;
mod error;
mod grpc;
mod http;
mod logging;
mod metrics;
mod repository;
mod resources;
mod sagemaker;
#[cfg(test)]
mod tests;
mod tls;
mod trace;
mod vertex;

use std::path::PathBuf;

use clap::{ArgAction, Args, Parser};

pub use access::AccessFlags;
pub use backend::BackendFlags;
pub use error::CliError;
pub use grpc::GrpcFlags;
pub use http::HttpFlags;
pub use logging::LoggingFlags;
pub use metrics::MetricsFlags;
pub use repository::RepositoryFlags;
pub use resources::ResourceFlags;
pub use sagemaker::{SageMakerFlags, SageMakerOptions};
pub use trace::{OtelSettings, TraceFlags};
pub use vertex::{VertexFlags, VertexOptions};

fn parse_bool(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "1" | "on" | "yes" => Ok(true),
        "false" | "0" | "off" | "no" => Ok(false),
        _ => Err(format!("invalid boolean '{s}': use true/false or 1/0")),
    }
}

/// `AIP_MODE=PREDICTION`: running as a Vertex AI prediction container.
fn aip_prediction_mode() -> bool {
    std::env::var("AIP_MODE").is_ok_and(|m| m == "PREDICTION")
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
    /// Seconds between a SIGTERM/SIGINT and the drain: readiness reports false at once while every listener
    /// keeps serving, so load balancers move away first (0: drain at once, Triton's behaviour; Rampart's own).
    #[arg(long, default_value_t = 0, help_heading = "Server")]
    pub shutdown_grace_secs: u64,
    #[command(flatten)]
    pub logging: LoggingFlags,
    #[command(flatten)]
    pub repository: RepositoryFlags,
    #[command(flatten)]
    pub http: HttpFlags,
    #[command(flatten)]
    pub grpc: GrpcFlags,
    #[command(flatten)]
    pub access: AccessFlags,
    #[command(flatten)]
    pub sagemaker: SageMakerFlags,
    #[command(flatten)]
    pub vertex: VertexFlags,
    #[command(flatten)]
    pub metrics: MetricsFlags,
    #[command(flatten)]
    pub tracing: TraceFlags,
    #[command(flatten)]
    pub backend: BackendFlags,
    #[command(flatten)]
    pub resources: ResourceFlags,
    #[command(flatten)]
    pub deprecated: DeprecatedFlags,
}

// Triton's deprecated spellings, still accepted: `--strict-model-config` (the inverse of auto-complete),
// `--response-cache-byte-size` (the cache size) and the `--trace-*` flags (settings of `--trace-config`).
#[derive(Args, Debug)]
pub struct DeprecatedFlags {
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
    /// `--backend-config=python,<key>=<value>` settings.
    pub python: crate::backends::PythonOptions,
    pub autocomplete: bool,
    pub model_control_mode: rampart_core::ModelControlMode,
    /// `--model-signature-policy` and `--model-signature-key`.
    pub signatures: rampart_core::SignaturePolicy,
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

impl Cli {
    /// Checks flag combinations and refuses values that need features this build lacks.
    pub fn validate(&self) -> Result<Validated, CliError> {
        let mut inert = Vec::new();
        if self.repository.model_repository.is_empty() {
            return Err(CliError::NoModelRepository);
        }
        self.http.validate()?;
        self.check_built(&mut inert)?;
        self.grpc.validate()?;
        let (http, grpc) = (&self.http, &self.grpc);
        if grpc.allow_grpc
            && http.allow_http
            && grpc.grpc_port != 0
            && grpc.grpc_port == http.http_port
        {
            return Err(CliError::SamePort { first: "GRPC", second: "HTTP", port: grpc.grpc_port });
        }
        if grpc.allow_grpc && grpc.ping_policing_set() {
            inert.push("--grpc-keepalive-permit-without-calls and --grpc-http2-* ping policing are accepted but not enforced: the HTTP/2 stack answers pings without strike counting".into());
        }
        let metrics = rampart_core::metrics::MetricsOptions::try_from(&self.metrics)?;
        let m = &self.metrics;
        if m.allow_metrics
            && http.allow_http
            && m.metrics_port != 0
            && m.metrics_port == http.http_port
        {
            return Err(CliError::SamePort {
                first: "metrics",
                second: "HTTP",
                port: m.metrics_port,
            });
        }
        if m.allow_metrics
            && grpc.allow_grpc
            && m.metrics_port != 0
            && m.metrics_port == grpc.grpc_port
        {
            return Err(CliError::SamePort {
                first: "metrics",
                second: "GRPC",
                port: m.metrics_port,
            });
        }
        if m.metrics_interval_ms == 0 {
            return Err(CliError::NotPositive("--metrics-interval-ms"));
        }
        let model_control_mode = self.repository.control_mode(&mut inert)?;
        let signatures = self.repository.signature_policy()?;
        let sagemaker = self.sagemaker.options(model_control_mode)?;
        let vertex = self.vertex.options()?;
        self.check_cloud_ports(sagemaker.is_some(), vertex.as_ref().map(|v| v.1))?;
        let request_limits = self.repository.request_limits()?;
        let log_format = self.logging.log_format()?;
        let (trace, otel) = trace::trace_config(&self.tracing, &self.deprecated)?;
        self.resources.validate()?;
        self.note_inert(&mut inert);
        let (engine, onnxruntime, python) = self.backend.engine()?;
        let strict = self.repository.disable_auto_complete_config
            || self.deprecated.strict_model_config.unwrap_or(false);
        let http_tls = Option::<rampart_tls::TlsFiles>::try_from(&self.http.tls)?;
        let grpc_tls = Option::<rampart_tls::TlsFiles>::try_from(&self.grpc.tls)?;
        let access = self.access.rules(&self.http, &self.grpc)?;
        let mutual = http_tls.as_ref().is_some_and(|t| t.mutual)
            || grpc_tls.as_ref().is_some_and(|t| t.mutual);
        if self.access.wants_client_certs() && !mutual {
            return Err(CliError::ClientCertsNeedMutualTls);
        }
        if model_control_mode != rampart_core::ModelControlMode::None
            && !self.repository.allow_unauthenticated_model_control
        {
            let exposed = access::exposed_model_control(self, &access);
            if !exposed.is_empty() {
                return Err(CliError::ModelControlExposed {
                    mode: model_control_mode.as_str(),
                    exposed,
                });
            }
        }
        let response_cache_bytes =
            self.resources.response_cache_bytes(&self.deprecated.response_cache_byte_size)?;
        Ok(Validated {
            response_cache_bytes,
            http_restrictions: access.http,
            grpc_restrictions: access.grpc,
            model_access: access.models,
            request_limits,
            http_tls,
            grpc_tls,
            engine,
            onnxruntime,
            python,
            autocomplete: !strict,
            model_control_mode,
            signatures,
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
        if self.repository.model_repository.is_empty()
            && self.vertex.enabled()
            && let Ok(uri) = std::env::var("AIP_STORAGE_URI")
        {
            self.repository.model_repository.push(PathBuf::from(uri));
        }
    }

    /// Flags of front ends and features left out of this build: a listener that is on by default is reported
    /// as absent; anything asked for explicitly is refused.
    fn check_built(&self, inert: &mut Vec<String>) -> Result<(), CliError> {
        let absent = [
            ("--allow-http", self.http.allow_http, cfg!(feature = "http"), "http"),
            ("--allow-grpc", self.grpc.allow_grpc, cfg!(feature = "grpc"), "grpc"),
            ("--allow-metrics", self.metrics.allow_metrics, cfg!(feature = "metrics"), "metrics"),
        ];
        for (flag, on, built, feature) in absent {
            if on && !built {
                inert.push(format!("{flag} has no effect: this build has no {feature} front end (cargo feature '{feature}')"));
            }
        }
        if self.resources.allow_client_shm && !cfg!(feature = "shm") {
            return Err(CliError::NotBuilt { what: "--allow-client-shm=true", feature: "shm" });
        }
        if trace::traced(&self.tracing, &self.deprecated) && !cfg!(feature = "tracing") {
            return Err(CliError::NotBuilt {
                what: "--trace-config / --trace-*",
                feature: "tracing",
            });
        }
        if !cfg!(feature = "onnxruntime") && !cfg!(feature = "tract") {
            return Err(CliError::NoEngine);
        }
        Ok(())
    }

    /// The SageMaker and Vertex AI front ends (when on) need ports of their own.
    fn check_cloud_ports(&self, sagemaker: bool, vertex: Option<u16>) -> Result<(), CliError> {
        let sagemaker_port = self.sagemaker.sagemaker_port;
        for (listener, port, on) in [
            ("sagemaker", sagemaker_port, sagemaker),
            ("vertex-ai", vertex.unwrap_or(0), vertex.is_some()),
        ] {
            let taken = [
                ("http", self.http.http_port, self.http.allow_http),
                ("grpc", self.grpc.grpc_port, self.grpc.allow_grpc),
                ("metrics", self.metrics.metrics_port, self.metrics.allow_metrics),
            ];
            if let Some((other, ..)) =
                taken.iter().find(|(_, p, used)| on && *used && port != 0 && *p == port)
            {
                return Err(CliError::PortTaken { listener, port, other });
            }
        }
        match vertex {
            Some(vport) if sagemaker && vport != 0 && vport == sagemaker_port => {
                Err(CliError::CloudSamePort(vport))
            }
            _ => Ok(()),
        }
    }

    /// Settings of listeners that are off, and sizing knobs of Triton's internals that Rampart does not have
    /// (thread pools, GPU memory pools, …): accepted so command lines keep working, and reported when set.
    fn note_inert(&self, inert: &mut Vec<String>) {
        let (sagemaker, vertex, metrics) = (&self.sagemaker, &self.vertex, &self.metrics);
        let extra = [
            ("sagemaker-*", !sagemaker.allow_sagemaker && sagemaker.settings_given()),
            ("vertex-ai-*", !vertex.enabled() && vertex.settings_given()),
            ("metrics-*", !metrics.allow_metrics && metrics.settings_given()),
        ];
        for (flag, given) in extra {
            if given {
                inert.push(format!("--{flag} has no effect: that listener is disabled"));
            }
        }
        let (repository, resources) = (&self.repository, &self.resources);
        let knobs = [
            ("http-thread-count", self.http.http_thread_count != 8),
            ("grpc-infer-thread-count", self.grpc.grpc_infer_thread_count != 2),
            ("grpc-infer-allocation-pool-size", self.grpc.grpc_infer_allocation_pool_size != 8),
            ("model-load-thread-count", repository.model_load_thread_count != 4),
            ("enable-peer-access", !repository.enable_peer_access),
            ("cache-directory", resources.cache_directory.is_some()),
            ("pinned-memory-pool-byte-size", resources.pinned_memory_pool_byte_size.is_some()),
            ("cuda-memory-pool-byte-size", !resources.cuda_memory_pool_byte_size.is_empty()),
            ("cuda-virtual-address-size", !resources.cuda_virtual_address_size.is_empty()),
            (
                "min-supported-compute-capability",
                resources.min_supported_compute_capability.is_some(),
            ),
            ("buffer-manager-thread-count", resources.buffer_manager_thread_count.is_some()),
            ("model-load-gpu-limit", !resources.model_load_gpu_limit.is_empty()),
        ];
        if resources.repoagent_directory.is_some() {
            inert.push(
                "--repoagent-directory has no effect: repository agents are built in (checksum); no shared \
                 library is ever loaded"
                    .into(),
            );
        }
        let set: Vec<&str> = knobs.iter().filter(|(_, set)| *set).map(|(f, _)| *f).collect();
        if !set.is_empty() {
            inert.push(format!(
                "accepted without effect (Rampart has no such internal pool, GPU or polling to size): --{}",
                set.join(", --")
            ));
        }
    }
}
