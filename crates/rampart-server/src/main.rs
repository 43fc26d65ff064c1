//! The `rampart` binary: tritonserver's command line, the listeners, signals and graceful drain. Only this
//! crate reads the environment and binds sockets.

mod backends;
mod check;
mod cli;
mod listeners;
mod logs;
#[cfg(feature = "otel")]
mod otel;
mod probe;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use rampart_core::{Server, ServerOptions};

/// The log settings from the command line; opens `--log-file` (append, created 0600 if missing).
fn init_logging(
    cli: &cli::Cli,
    format: rampart_core::logging::LogFormat,
) -> Result<std::sync::Arc<rampart_core::logging::LogControl>, String> {
    let file = match &cli.logging.log_file {
        None => None,
        Some(path) => {
            use std::os::unix::fs::OpenOptionsExt;
            let f = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| format!("cannot open --log-file '{path}': {e}"))?;
            Some(f)
        }
    };
    let control = std::sync::Arc::new(rampart_core::logging::LogControl::new(
        rampart_core::logging::LogSettings {
            file: cli.logging.log_file.clone().unwrap_or_default(),
            info: cli.logging.log_info,
            warning: cli.logging.log_warning,
            error: cli.logging.log_error,
            verbose_level: cli.logging.log_verbose,
            format,
        },
    ));
    logs::install(control.clone(), file);
    Ok(control)
}

/// `0.0.0.0`, `127.0.0.1`, `::1`, or tritonserver's `ipv6:[::1]` form.
fn listen_addr(flag: &str, address: &str, port: u16) -> Result<SocketAddr, String> {
    let host = address.strip_prefix("ipv6:").unwrap_or(address);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip: std::net::IpAddr = host.parse().map_err(|_| format!("invalid --{flag} '{address}'"))?;
    Ok(SocketAddr::new(ip, port))
}

/// Binds a listener, with SO_REUSEPORT when asked (`--reuse-http-port`, `--reuse-grpc-port`).
fn bind(
    service: &str,
    addr: SocketAddr,
    reuse_port: bool,
) -> Result<tokio::net::TcpListener, String> {
    let fail = |e: std::io::Error| format!("failed to start {service} at {addr}: {e}");
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(fail)?;
    socket.set_reuseaddr(true).map_err(fail)?;
    if reuse_port {
        socket.set_reuseport(true).map_err(fail)?;
    }
    socket.bind(addr).map_err(fail)?;
    socket.listen(1024).map_err(fail)
}

/// SIGINT and SIGTERM, installed before any listener opens (so an early signal is never fatal).
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Signals, String> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            int: signal(SignalKind::interrupt())
                .map_err(|e| format!("cannot install the SIGINT handler: {e}"))?,
            term: signal(SignalKind::terminate())
                .map_err(|e| format!("cannot install the SIGTERM handler: {e}"))?,
        })
    }

    /// Completes on the next SIGINT or SIGTERM.
    async fn next(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
    }
}

/// How a shutdown went, for the audit log.
struct Shutdown {
    /// Inference requests in flight when the drain began that finished.
    drained: usize,
    /// Requests still in flight at exit (the exit timeout passed, or a second signal came).
    cut_off: usize,
    /// A second signal ended the grace period or the drain.
    forced: bool,
}

/// ONNX Runtime (1.32) otherwise keeps a usage database and a device id under
/// `$HOME/.cache/Microsoft/DeveloperTools/.onnxruntime/`, written on every start: files outside the model
/// repository that nobody asked for. An operator who wants them sets `ORT_DISABLE_TELEMETRY=0`.
#[allow(unsafe_code)] // the one unsafe call: see SAFETY below
fn keep_onnxruntime_out_of_home() {
    if std::env::var_os("ORT_DISABLE_TELEMETRY").is_none() {
        // SAFETY: called first thing in `main`, before any thread exists, so nothing reads the environment
        // concurrently.
        unsafe { std::env::set_var("ORT_DISABLE_TELEMETRY", "1") };
    }
}

fn main() -> ExitCode {
    if let Some(code) = probe::from_args(&std::env::args().collect::<Vec<_>>()) {
        return code;
    }
    keep_onnxruntime_out_of_home();
    if let Some(code) = check::from_args(&std::env::args().collect::<Vec<_>>()) {
        return code;
    }
    let mut cli = cli::Cli::parse();
    cli.apply_environment();
    let mut validated = match cli.validate() {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let log_control = match init_logging(&cli, validated.log_format) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    for note in &validated.inert {
        tracing::warn!("{note}");
    }
    least_privilege_warnings(&cli);
    tracing::info!(
        "rampart {} built with: {}",
        env!("CARGO_PKG_VERSION"),
        listeners::built().join(", ")
    );
    let audit = std::sync::Arc::new(match &cli.logging.audit_log_file {
        Some(path) => match rampart_core::audit::AuditLog::file(path) {
            Ok(log) => log,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        },
        None => rampart_core::audit::AuditLog::stderr(),
    });
    // TLS files are checked before any model loads, so a bad certificate fails fast.
    let tls = match (
        tls_config(validated.http_tls.as_ref(), &[b"h2", b"http/1.1"]),
        tls_config(validated.grpc_tls.as_ref(), &[b"h2"]),
    ) {
        (Ok(h), Ok(g)) => (h, g),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("rampart-io")
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let model_access = std::sync::Arc::new(std::mem::take(&mut validated.model_access));
    let options = match server_options(
        &cli,
        &validated,
        runtime.handle().clone(),
        model_access.clone(),
        Some(audit.clone()),
        Some(log_control),
    ) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let server = match Server::start(options) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: creating server: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprint!("{}", server.model_status_table());
    backends::python_sandbox_report(&server, &cli.backend.backend_directory);
    signature_report(&validated.signatures);
    if validated.model_control_mode == rampart_core::ModelControlMode::Poll
        && cli.repository.repository_poll_secs > 0
    {
        server.start_polling(Duration::from_secs(cli.repository.repository_poll_secs));
    }
    audit.record(&rampart_core::audit::AuditEvent {
        event: "startup",
        target: Some(format!("rampart {} (id '{}')", env!("CARGO_PKG_VERSION"), cli.id)),
        outcome: Some("ready".into()),
        ..Default::default()
    });
    let result = runtime.block_on(serve(cli, validated, tls, audit.clone(), server, model_access));
    let (outcome, target) = match &result {
        Ok(s) => (
            if s.forced {
                "forced"
            } else if s.cut_off > 0 {
                "timeout"
            } else {
                "clean"
            },
            Some(format!("drained {} in-flight requests, cut off {}", s.drained, s.cut_off)),
        ),
        Err(_) => ("error", None),
    };
    audit.record(&rampart_core::audit::AuditEvent {
        event: "shutdown",
        outcome: Some(outcome.into()),
        target,
        ..Default::default()
    });
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The startup exposure report's line on model signatures.
fn signature_report(policy: &rampart_core::SignaturePolicy) {
    match policy.mode {
        rampart_core::SignatureMode::Off => tracing::info!(
            "exposure: model signatures are not verified (--model-signature-policy=off): whoever can write the \
             model repository decides what runs"
        ),
        mode => tracing::info!(
            "exposure: model signatures: --model-signature-policy={}, {} trusted key(s): {}; {} trusted \
             root(s): {}",
            mode.as_str(),
            policy.trust.keys.len(),
            policy.trust.keys.iter().map(|k| k.fingerprint()).collect::<Vec<_>>().join(", "),
            policy.trust.roots.len(),
            policy.trust.roots.iter().map(|r| r.subject()).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// The core's options from the validated command line (serving, and `rampart check`).
fn server_options(
    cli: &cli::Cli,
    validated: &cli::Validated,
    runtime: tokio::runtime::Handle,
    model_access: std::sync::Arc<rampart_core::access::ModelAccess>,
    audit: Option<std::sync::Arc<rampart_core::audit::AuditLog>>,
    log_control: Option<std::sync::Arc<rampart_core::logging::LogControl>>,
) -> Result<ServerOptions, String> {
    Ok(ServerOptions {
        runtime: Some(runtime),
        model_access,
        id: cli.id.clone(),
        model_repositories: cli.repository.model_repository.clone(),
        autocomplete: validated.autocomplete,
        strict_readiness: cli.repository.strict_readiness,
        exit_on_error: cli.repository.exit_on_error,
        backends: std::sync::Arc::new(backends::registry(backends::OrtSetup {
            backend_directory: cli.backend.backend_directory.clone(),
            library: std::env::var_os("ORT_DYLIB_PATH").map(std::path::PathBuf::from),
            options: validated.onnxruntime.clone(),
            python: validated.python.clone(),
        })),
        default_onnx_backend: validated.engine.backend().to_string(),
        max_queued_requests: cli.repository.max_queued_requests,
        request_limits: validated.request_limits,
        response_cache_bytes: validated.response_cache_bytes,
        model_control_mode: validated.model_control_mode,
        startup_models: cli.repository.load_model.clone(),
        allow_model_file_override: cli.repository.allow_model_file_override,
        allow_client_shm: cli.resources.allow_client_shm,
        sequences: rampart_core::SequenceLimits {
            max_sequences: cli.repository.max_sequences,
            max_per_client: cli.repository.max_sequences_per_client,
            // Triton's test hook: its qa tests hold the sequence batcher until N requests wait.
            hold_until: env_count("TRITONSERVER_DELAY_SCHEDULER"),
            hold_backlog: env_count("TRITONSERVER_BACKLOG_DELAY_SCHEDULER"),
        },
        audit,
        unload_timeout: Duration::from_secs(cli.exit_timeout_secs),
        log_control,
        metrics: validated.metrics.clone(),
        trace: trace_exporter(validated)?,
        signatures: validated.signatures.clone(),
        ..ServerOptions::default()
    })
}

/// The trace configuration, with the OTLP exporter when `mode=opentelemetry` (built before the async
/// runtime: its HTTP client blocks).
fn trace_exporter(validated: &cli::Validated) -> Result<rampart_core::trace::TraceConfig, String> {
    #[cfg_attr(not(feature = "otel"), allow(unused_mut))]
    let mut config = validated.trace.clone();
    #[cfg(feature = "otel")]
    if let Some(otel) = &validated.otel {
        config.exporter = Some(std::sync::Arc::new(otel::OtlpExporter::new(otel)?));
        tracing::info!("traces are exported over OTLP/HTTP to {}", otel.url);
    }
    Ok(config)
}

type TlsConfig = Option<std::sync::Arc<rampart_tls::ReloadingConfig>>;

/// Loads a listener's TLS files; an unusable file is a startup error.
fn tls_config(files: Option<&rampart_tls::TlsFiles>, alpn: &[&[u8]]) -> Result<TlsConfig, String> {
    files.map(|f| rampart_tls::ReloadingConfig::load(f.clone(), alpn)).transpose()
}

/// Completes when the stop flag is raised (a signal arrived).
async fn stopped(mut rx: tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Warns about running as root and about directories other users can write to (code or models could be
/// swapped under the server).
fn least_privilege_warnings(cli: &cli::Cli) {
    use std::os::unix::fs::PermissionsExt;
    let uid = std::fs::read_to_string("/proc/self/status").ok().and_then(|s| {
        s.lines().find_map(|l| {
            l.strip_prefix("Uid:").and_then(|v| v.split_whitespace().nth(1)).map(str::to_string)
        })
    });
    if uid.as_deref() == Some("0") {
        tracing::warn!(
            "running as root: Rampart needs no privileges; run it as an unprivileged user"
        );
    }
    let dirs = cli
        .repository
        .model_repository
        .iter()
        .map(|p| ("model repository", p))
        .chain(std::iter::once(("--backend-directory", &cli.backend.backend_directory)));
    for (what, dir) in dirs {
        if let Ok(m) = std::fs::metadata(dir)
            && m.permissions().mode() & 0o002 != 0
        {
            tracing::warn!(
                "{what} '{}' is writable by other users: anyone on this host could change what is served",
                dir.display()
            );
        }
    }
}

/// Says which API categories answer without a credential, and warns when admin ones are reachable from
/// other hosts.
fn exposure(service: &str, addr: SocketAddr, rules: &rampart_core::access::Restrictions) {
    let open = rules.open_categories();
    let names: Vec<&str> = open.iter().map(|c| c.name()).collect();
    tracing::info!(
        "{service}: categories answering without credentials: {}",
        if names.is_empty() { "none".into() } else { names.join(", ") }
    );
    let admin: Vec<&str> = open.iter().filter(|c| c.is_admin()).map(|c| c.name()).collect();
    if !admin.is_empty() && !addr.ip().is_loopback() {
        tracing::warn!(
            "{service} on {addr} serves admin categories without credentials ({}): restrict them (see docs/security.md) or bind a loopback address",
            admin.join(", ")
        );
    }
}

fn tls_note(files: Option<&rampart_tls::TlsFiles>) -> &'static str {
    match files {
        None => "",
        Some(f) if f.mutual => " with mutual TLS",
        Some(_) => " with TLS",
    }
}

async fn serve(
    cli: cli::Cli,
    validated: cli::Validated,
    tls: (TlsConfig, TlsConfig),
    audit: std::sync::Arc<rampart_core::audit::AuditLog>,
    server: Server,
    model_access: std::sync::Arc<rampart_core::access::ModelAccess>,
) -> Result<Shutdown, String> {
    let exit_timeout = Duration::from_secs(cli.exit_timeout_secs);
    let mut signals = Signals::install()?;
    let (http_tls, grpc_tls) = tls;
    for config in http_tls.iter().chain(grpc_tls.iter()) {
        config.watch(Duration::from_secs(cli.http.tls_reload_interval_secs));
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    if !model_access.is_empty() {
        tracing::info!(
            "model access rules: inference on models matching {} needs their credential",
            model_access.globs().join(", ")
        );
    }
    let ctx = listeners::Context {
        cli: &cli,
        validated: &validated,
        audit: &audit,
        server: &server,
        model_access: &model_access,
        stop: &stop_rx,
    };
    let http_tasks = listeners::start_http(&ctx, http_tls)?;
    let grpc_task = listeners::start_grpc(&ctx, grpc_tls)?;
    if http_tasks.is_empty() && grpc_task.is_none() {
        tracing::warn!("no listener is enabled: the server only runs until it is signalled");
    }
    signals.next().await;
    // Readiness first: load balancers stop routing here while every listener keeps serving.
    server.begin_shutdown();
    let grace = Duration::from_secs(cli.shutdown_grace_secs);
    if !grace.is_zero() {
        tracing::info!(
            "signal received: reporting not ready, serving for {}s (--shutdown-grace-secs) before the drain",
            grace.as_secs()
        );
        tokio::select! {
            _ = tokio::time::sleep(grace) => {}
            _ = signals.next() => return Ok(cut_off(&server, 0)),
        }
    }
    tracing::info!(
        "{}stopping new connections, waiting up to {}s for in-flight requests",
        if grace.is_zero() { "signal received: " } else { "grace period over: " },
        exit_timeout.as_secs()
    );
    let draining = server.in_flight();
    let _ = stop_tx.send(true);
    let left = tokio::select! {
        left = server.shutdown(exit_timeout) => left,
        _ = signals.next() => return Ok(cut_off(&server, draining)),
    };
    if left > 0 {
        tracing::warn!(
            "{left} inference requests still in flight after --exit-timeout-secs; exiting anyway"
        );
    }
    let linger = Duration::from_secs(1).max(exit_timeout / 10);
    for t in http_tasks {
        if tokio::time::timeout(linger, t).await.is_err() {
            tracing::warn!("HTTP connections still open at exit");
        }
    }
    if let Some(t) = grpc_task {
        match tokio::time::timeout(linger, t).await {
            Ok(Ok(Err(e))) => tracing::error!("GRPC service error: {e}"),
            Ok(_) => {}
            Err(_) => tracing::warn!("GRPC streams still open at exit"),
        }
    }
    let drained = draining.saturating_sub(left);
    if draining > 0 {
        tracing::info!("{drained} in-flight requests drained");
    }
    tracing::info!("exiting");
    Ok(Shutdown { drained, cut_off: left, forced: false })
}

/// A second signal: exit now, saying what is cut off (`draining`: requests in flight when the drain began).
fn cut_off(server: &Server, draining: usize) -> Shutdown {
    let left = server.in_flight();
    tracing::warn!("second signal: exiting now; {left} inference requests in flight are cut off");
    Shutdown { drained: draining.saturating_sub(left), cut_off: left, forced: true }
}

/// A count from a test-hook environment variable (Triton's scheduler delays); 0 when unset or not a number.
fn env_count(name: &str) -> usize {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}
