//! [`CliError`]: why the command line was refused. `main` prints its Display after `error: ` and exits with
//! status 1 (clap's own usage errors exit with 2), so each message is part of the command-line contract
//! (docs/protocol.md, "Command line"): change none without changing the clients and tests that match them.

use std::fmt;

/// A refused flag, flag combination or environment setting.
///
/// Display is written out by hand (rampart-server does not depend on `thiserror`); each arm is the
/// `#[error(...)]` string it would carry.
#[derive(Debug, Clone, PartialEq, Eq)]
// A few variants are only built by front ends that are cargo features (HTTP limits, SageMaker, Vertex AI).
#[cfg_attr(not(all(feature = "http", feature = "sagemaker", feature = "vertex")), allow(dead_code))]
pub enum CliError {
    /// Neither `--model-repository` nor (Vertex AI) `AIP_STORAGE_URI`.
    NoModelRepository,
    /// A count, size or duration that must be positive; `flags` names the flag or flags.
    NotPositive(&'static str),
    /// `--http-max-input-size` zero or negative.
    HttpMaxInputSize(i64),
    /// `--http-max-header-size` under 1024 or `--http2-max-concurrent-streams` zero.
    HttpHeaderLimits,
    /// `--http-max-json-depth` outside 1..=max.
    HttpJsonDepth { max: usize, got: usize },
    /// `--grpc-infer-thread-count` outside 2..=128.
    GrpcInferThreadCount(u32),
    /// `--grpc-max-message-size` outside 1..=i32::MAX.
    GrpcMaxMessageSize(u64),
    /// A keyword flag with a value outside its keywords.
    UnexpectedValue { flag: &'static str, value: String, expected: &'static str },
    /// `--log-format` outside default, ISO8601, json.
    LogFormat(String),
    /// `--log-verbose` above the largest level.
    LogVerbose { max: u32 },
    /// Two enabled main listeners (`first`, `second`: Triton's names) on one port.
    SamePort { first: &'static str, second: &'static str, port: u16 },
    /// A cloud front end's port is already another listener's.
    PortTaken { listener: &'static str, port: u16, other: &'static str },
    /// The SageMaker and Vertex AI front ends on one port.
    CloudSamePort(u16),
    /// `--load-model` outside explicit mode.
    LoadModelNeedsExplicit,
    /// `--load-model=*` together with other names.
    WildcardNotAlone,
    /// A `--load-model` name refused by the model-name rules.
    LoadModelName(String),
    /// A value that needs a feature Rampart does not have yet.
    NotYet { flag: &'static str, value: String, feature: &'static str },
    /// A flag whose feature this build was compiled without.
    NotBuilt { what: &'static str, feature: &'static str },
    /// Neither engine feature is in this build.
    NoEngine,
    /// `--<listener>-use-ssl` without a certificate or key flag.
    TlsMissing { listener: &'static str, flag: &'static str },
    /// `--<listener>-use-ssl-mutual` without `--<listener>-root-cert`.
    TlsMutualNeedsRoot { listener: &'static str },
    /// `--backend-config` without `=`.
    BackendConfigFormat(String),
    /// `--backend-config=onnxruntime,engine=` something else than onnxruntime or tract.
    BackendConfigEngine(String),
    /// An ONNX Runtime setting refused by the engine options.
    BackendConfigValue { spec: String, reason: String },
    /// A `--http-restricted-api`, `--grpc-restricted-protocol`, `--client-cert-access` or `--model-access`
    /// rule refused (the message comes from `rampart_core::access` or names the secret's file or variable).
    Access(String),
    /// Client-certificate rules without mutual TLS on any listener.
    ClientCertsNeedMutualTls,
    /// Poll or explicit model control while the repository API is open on non-loopback listeners.
    ModelControlExposed { mode: &'static str, exposed: Vec<String> },
    /// `--trace-config` and the deprecated `--trace-*` flags.
    Trace(String),
    /// `--metrics-config`.
    Metrics(String),
    /// `--cache-config` and `--response-cache-byte-size`.
    Cache(String),
    /// `--allow-sagemaker` and the `SAGEMAKER_*` environment.
    SageMaker(String),
    /// `--allow-vertex-ai` and the `AIP_*` environment.
    Vertex(String),
}

impl CliError {
    /// A value whose feature Rampart does not have yet.
    pub(super) fn not_yet(flag: &'static str, value: &str, feature: &'static str) -> CliError {
        CliError::NotYet { flag, value: value.to_string(), feature }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::NoModelRepository => write!(f, "--model-repository must be specified"),
            CliError::NotPositive(flags) => write!(f, "{flags} must be greater than 0"),
            CliError::HttpMaxInputSize(got) => {
                write!(f, "--http-max-input-size must be greater than 0, got {got}")
            }
            CliError::HttpHeaderLimits => write!(
                f,
                "--http-max-header-size must be at least 1024 and --http2-max-concurrent-streams greater than 0"
            ),
            CliError::HttpJsonDepth { max, got } => {
                write!(f, "--http-max-json-depth must be between 1 and {max}, got {got}")
            }
            CliError::GrpcInferThreadCount(got) => {
                write!(f, "--grpc-infer-thread-count must be in 2..128, got {got}")
            }
            CliError::GrpcMaxMessageSize(got) => {
                write!(f, "--grpc-max-message-size must be in 1..{}, got {got}", i32::MAX)
            }
            CliError::UnexpectedValue { flag, value, expected } => {
                write!(f, "unexpected value for --{flag}: '{value}' (expected {expected})")
            }
            CliError::LogFormat(got) => write!(
                f,
                "invalid argument for --log-format, got: {got} (expected default, ISO8601 or json)"
            ),
            CliError::LogVerbose { max } => write!(f, "--log-verbose must be at most {max}"),
            CliError::SamePort { first, second, port } => write!(
                f,
                "The server cannot listen to {first} requests and {second} requests at the same port {port}"
            ),
            CliError::PortTaken { listener, port, other } => {
                write!(f, "--{listener}-port {port} is already the {other} port")
            }
            CliError::CloudSamePort(port) => {
                write!(f, "--sagemaker-port and --vertex-ai-port are both {port}")
            }
            CliError::LoadModelNeedsExplicit => write!(
                f,
                "Error: Use of '--load-model' requires setting '--model-control-mode=explicit' as well."
            ),
            CliError::WildcardNotAlone => write!(
                f,
                "Wildcard model name '*' must be the ONLY startup model if specified at all."
            ),
            CliError::LoadModelName(reason) => write!(f, "--load-model: {reason}"),
            CliError::NotYet { flag, value, feature } => write!(
                f,
                "--{flag}={value} is not supported yet ({feature}); Rampart refuses it rather than ignoring it"
            ),
            CliError::NotBuilt { what, feature } => write!(
                f,
                "{what}: this rampart build has no {feature} support (cargo feature '{feature}'); Rampart refuses it rather than ignoring it"
            ),
            CliError::NoEngine => write!(
                f,
                "this rampart build has no engine (cargo features 'onnxruntime' and 'tract' are both off)"
            ),
            CliError::TlsMissing { listener, flag } => {
                write!(f, "--{listener}-use-ssl needs --{listener}-{flag}")
            }
            CliError::TlsMutualNeedsRoot { listener } => write!(
                f,
                "--{listener}-use-ssl-mutual needs --{listener}-root-cert (the CA that signs client certificates)"
            ),
            CliError::BackendConfigFormat(spec) => write!(
                f,
                "--backend-config={spec}: expected <backend>,<key>=<value> or <key>=<value>"
            ),
            CliError::BackendConfigEngine(spec) => {
                write!(f, "--backend-config={spec}: engine must be 'onnxruntime' or 'tract'")
            }
            CliError::BackendConfigValue { spec, reason } => {
                write!(f, "--backend-config={spec}: {reason}")
            }
            CliError::ClientCertsNeedMutualTls => write!(
                f,
                "client-certificate rules (--client-cert-access, --model-access ...:client-cert=...) need mutual TLS on a listener: \
                 set --http-use-ssl-mutual or --grpc-use-ssl-mutual"
            ),
            CliError::ModelControlExposed { mode, exposed } => write!(
                f,
                "--model-control-mode={mode} refused: the model-repository API answers without credentials on {}, so any client \
                 could change which models run. Fix one of: restrict the category (--http-restricted-api=model-repository:<header>=<value> \
                 and --grpc-restricted-protocol=model-repository:<header>=<value>, or --client-cert-access=model-repository:<kind>:<name> \
                 with mutual TLS); bind the listener to loopback (--http-address=127.0.0.1, --grpc-address=127.0.0.1); \
                 or accept the exposure with --allow-unauthenticated-model-control=true",
                exposed.join(" and ")
            ),
            CliError::Access(message)
            | CliError::Trace(message)
            | CliError::Metrics(message)
            | CliError::Cache(message)
            | CliError::SageMaker(message)
            | CliError::Vertex(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for CliError {}
