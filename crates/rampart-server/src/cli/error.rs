//! [`CliError`]: why the command line was refused. `main` prints its Display after `error: ` and exits with
//! status 1 (clap's own usage errors exit with 2), so each message is part of the command-line contract
//! (docs/protocol.md, "Command line"): change none without changing the clients and tests that match them.

/// A refused flag, flag combination or environment setting.
///
/// Each variant's `#[error(...)]` string is its message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
// A few variants are only built by front ends that are cargo features (HTTP limits, SageMaker, Vertex AI).
#[cfg_attr(not(all(feature = "http", feature = "sagemaker", feature = "vertex")), allow(dead_code))]
pub enum CliError {
    /// Neither `--model-repository` nor (Vertex AI) `AIP_STORAGE_URI`.
    #[error("--model-repository must be specified")]
    NoModelRepository,
    /// A count, size or duration that must be positive; `flags` names the flag or flags.
    #[error("{0} must be greater than 0")]
    NotPositive(&'static str),
    /// `--http-max-input-size` zero or negative.
    #[error("--http-max-input-size must be greater than 0, got {0}")]
    HttpMaxInputSize(i64),
    /// `--http-max-header-size` under 1024 or `--http2-max-concurrent-streams` zero.
    #[error(
        "--http-max-header-size must be at least 1024 and --http2-max-concurrent-streams greater than 0"
    )]
    HttpHeaderLimits,
    /// `--http-max-json-depth` outside 1..=max.
    #[error("--http-max-json-depth must be between 1 and {max}, got {got}")]
    HttpJsonDepth { max: usize, got: usize },
    /// `--grpc-infer-thread-count` outside 2..=128.
    #[error("--grpc-infer-thread-count must be in 2..128, got {0}")]
    GrpcInferThreadCount(u32),
    /// `--grpc-max-message-size` outside 1..=i32::MAX.
    #[error("--grpc-max-message-size must be in 1..{max}, got {0}", max = i32::MAX)]
    GrpcMaxMessageSize(u64),
    /// A keyword flag with a value outside its keywords.
    #[error("unexpected value for --{flag}: '{value}' (expected {expected})")]
    UnexpectedValue { flag: &'static str, value: String, expected: &'static str },
    /// `--log-format` outside default, ISO8601, json.
    #[error("invalid argument for --log-format, got: {0} (expected default, ISO8601 or json)")]
    LogFormat(String),
    /// `--log-verbose` above the largest level.
    #[error("--log-verbose must be at most {max}")]
    LogVerbose { max: u32 },
    /// Two enabled main listeners (`first`, `second`: Triton's names) on one port.
    #[error(
        "The server cannot listen to {first} requests and {second} requests at the same port {port}"
    )]
    SamePort { first: &'static str, second: &'static str, port: u16 },
    /// A cloud front end's port is already another listener's.
    #[error("--{listener}-port {port} is already the {other} port")]
    PortTaken { listener: &'static str, port: u16, other: &'static str },
    /// The SageMaker and Vertex AI front ends on one port.
    #[error("--sagemaker-port and --vertex-ai-port are both {0}")]
    CloudSamePort(u16),
    /// A `--model-signature-key` that cannot be used, or a policy without keys.
    #[error("{0}")]
    SignatureKey(String),
    /// `--load-model` outside explicit mode.
    #[error(
        "Error: Use of '--load-model' requires setting '--model-control-mode=explicit' as well."
    )]
    LoadModelNeedsExplicit,
    /// `--load-model=*` together with other names.
    #[error("Wildcard model name '*' must be the ONLY startup model if specified at all.")]
    WildcardNotAlone,
    /// A `--load-model` name refused by the model-name rules.
    #[error("--load-model: {0}")]
    LoadModelName(String),
    /// A value that needs a feature Rampart does not have yet.
    #[error(
        "--{flag}={value} is not supported yet ({feature}); Rampart refuses it rather than ignoring it"
    )]
    NotYet { flag: &'static str, value: String, feature: &'static str },
    /// A flag whose feature this build was compiled without.
    #[error(
        "{what}: this rampart build has no {feature} support (cargo feature '{feature}'); Rampart refuses it rather than ignoring it"
    )]
    NotBuilt { what: &'static str, feature: &'static str },
    /// Neither engine feature is in this build.
    #[error(
        "this rampart build has no engine (cargo features 'onnxruntime' and 'tract' are both off)"
    )]
    NoEngine,
    /// `--<listener>-use-ssl` without a certificate or key flag.
    #[error("--{listener}-use-ssl needs --{listener}-{flag}")]
    TlsMissing { listener: &'static str, flag: &'static str },
    /// `--<listener>-use-ssl-mutual` without `--<listener>-root-cert`.
    #[error(
        "--{listener}-use-ssl-mutual needs --{listener}-root-cert (the CA that signs client certificates)"
    )]
    TlsMutualNeedsRoot { listener: &'static str },
    /// `--backend-config` without `=`.
    #[error("--backend-config={0}: expected <backend>,<key>=<value> or <key>=<value>")]
    BackendConfigFormat(String),
    /// `--backend-config=onnxruntime,engine=` something else than onnxruntime or tract.
    #[error("--backend-config={0}: engine must be 'onnxruntime' or 'tract'")]
    BackendConfigEngine(String),
    /// An ONNX Runtime setting refused by the engine options.
    #[error("--backend-config={spec}: {reason}")]
    BackendConfigValue { spec: String, reason: String },
    /// A `--http-restricted-api`, `--grpc-restricted-protocol`, `--client-cert-access` or `--model-access`
    /// rule refused (the message comes from `rampart_core::access` or names the secret's file or variable).
    #[error("{0}")]
    Access(String),
    /// Client-certificate rules without mutual TLS on any listener.
    #[error(
        "client-certificate rules (--client-cert-access, --model-access ...:client-cert=...) need mutual TLS on a listener: \
         set --http-use-ssl-mutual or --grpc-use-ssl-mutual"
    )]
    ClientCertsNeedMutualTls,
    /// Poll or explicit model control while the repository API is open on non-loopback listeners.
    #[error("--model-control-mode={mode} refused: the model-repository API answers without credentials on {}, so any client \
         could change which models run. Fix one of: restrict the category (--http-restricted-api=model-repository:<header>=<value> \
         and --grpc-restricted-protocol=model-repository:<header>=<value>, or --client-cert-access=model-repository:<kind>:<name> \
         with mutual TLS); bind the listener to loopback (--http-address=127.0.0.1, --grpc-address=127.0.0.1); \
         or accept the exposure with --allow-unauthenticated-model-control=true",
        .exposed.join(" and ")
    )]
    ModelControlExposed { mode: &'static str, exposed: Vec<String> },
    /// `--trace-config` and the deprecated `--trace-*` flags.
    #[error("{0}")]
    Trace(String),
    /// `--metrics-config`.
    #[error("{0}")]
    Metrics(String),
    /// `--cache-config` and `--response-cache-byte-size`.
    #[error("{0}")]
    Cache(String),
    /// `--allow-sagemaker` and the `SAGEMAKER_*` environment.
    #[error("{0}")]
    SageMaker(String),
    /// `--allow-vertex-ai` and the `AIP_*` environment.
    #[error("{0}")]
    Vertex(String),
}

impl CliError {
    /// A value whose feature Rampart does not have yet.
    pub(super) fn not_yet(flag: &'static str, value: &str, feature: &'static str) -> CliError {
        CliError::NotYet { flag, value: value.to_string(), feature }
    }
}
