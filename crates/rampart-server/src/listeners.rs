//! Starting the network front ends, each behind its cargo feature (`http`, `grpc`, `metrics`, `sagemaker`,
//! `vertex`). A front end that is not built is absent: its flags are refused or reported at startup
//! (`cli/`), and nothing listens.

use std::time::Duration;

use rampart_core::Server;

use crate::cli;
use crate::{TlsConfig, bind, exposure, listen_addr, stopped, tls_note};

/// What every front end is started from.
pub struct Context<'a> {
    pub cli: &'a cli::Cli,
    pub validated: &'a cli::Validated,
    pub audit: &'a std::sync::Arc<rampart_core::audit::AuditLog>,
    pub server: &'a Server,
    pub model_access: &'a std::sync::Arc<rampart_core::access::ModelAccess>,
    pub stop: &'a tokio::sync::watch::Receiver<bool>,
}

pub type Task<T> = tokio::task::JoinHandle<T>;

/// Header, size and stream limits of the HTTP listeners (main, SageMaker, Vertex AI, metrics).
#[cfg(feature = "http")]
fn connection_limits(cli: &cli::Cli) -> rampart_http::ConnectionLimits {
    rampart_http::ConnectionLimits {
        header_read_timeout: Duration::from_secs(cli.http.http_header_read_timeout_secs),
        max_header_bytes: cli.http.http_max_header_size,
        http2_max_streams: cli.http.http2_max_concurrent_streams,
    }
}

/// The HTTP listeners: main (KServe v2), SageMaker, Vertex AI and metrics, those enabled and built.
#[cfg(feature = "http")]
pub fn start_http(ctx: &Context<'_>, http_tls: TlsConfig) -> Result<Vec<Task<()>>, String> {
    let (cli, validated, server) = (ctx.cli, ctx.validated, ctx.server);
    // The main router's settings: the SageMaker and Vertex AI front ends run their requests through it too.
    let http_options = rampart_http::HttpOptions {
        max_input_size: cli.http.http_max_input_size as usize,
        body_read_timeout: Duration::from_secs(cli.http.http_body_read_timeout_secs),
        restrictions: std::sync::Arc::new(validated.http_restrictions.clone()),
        audit: Some(ctx.audit.clone()),
        model_access: ctx.model_access.clone(),
        json_limits: rampart_http::JsonLimits {
            max_depth: cli.http.http_max_json_depth,
            max_values: cli.http.http_max_json_values,
            ..Default::default()
        },
    };
    let main_router = rampart_http::router(server.clone(), http_options.clone());
    let limits = connection_limits(cli);
    let mut listeners: Vec<(&str, u16, bool, axum::Router)> = Vec::new();
    if cli.http.allow_http {
        listeners.push((
            "HTTPService",
            cli.http.http_port,
            cli.http.reuse_http_port,
            main_router.clone(),
        ));
    }
    #[cfg(feature = "sagemaker")]
    if let Some(options) = validated.sagemaker.clone() {
        let app = rampart_http::sagemaker_router(
            main_router.clone(),
            server.clone(),
            http_options.clone(),
            options,
        );
        listeners.push(("Sagemaker HTTPService", cli.sagemaker.sagemaker_port, false, app));
    }
    #[cfg(feature = "vertex")]
    if let Some((options, port)) = validated.vertex.clone() {
        let metrics = (cfg!(feature = "metrics") && cli.metrics.allow_metrics)
            .then(|| rampart_http::metrics_router(server.clone(), validated.metrics.clone(), None));
        let app =
            rampart_http::vertex_router(main_router.clone(), metrics, server.clone(), options);
        listeners.push(("Vertex AI HTTPService", port, false, app));
    }
    let mut tasks = Vec::new();
    for (service, port, reuse, app) in listeners {
        let addr = listen_addr("http-address", &cli.http.http_address, port)?;
        let listener = bind(service, addr, reuse)?;
        let local = listener.local_addr().map_err(|e| e.to_string())?;
        let stop = stopped(ctx.stop.clone());
        tasks.push(match http_tls.clone() {
            Some(tls) => {
                let listener =
                    rampart_tls::TlsListener::new(listener, tls).map_err(|e| e.to_string())?;
                tokio::spawn(rampart_http::serve(listener, app, limits.clone(), stop))
            }
            None => tokio::spawn(rampart_http::serve(listener, app, limits.clone(), stop)),
        });
        tracing::info!("Started {service} at {local}{}", tls_note(validated.http_tls.as_ref()));
        exposure(service, local, &validated.http_restrictions);
    }
    #[cfg(feature = "metrics")]
    if cli.metrics.allow_metrics {
        let address = cli.metrics.metrics_address.as_deref().unwrap_or(&cli.http.http_address);
        let addr = listen_addr("metrics-address", address, cli.metrics.metrics_port)?;
        let listener = bind("metrics service", addr, false)?;
        let local = listener.local_addr().map_err(|e| e.to_string())?;
        let cpu = cli.metrics.allow_cpu_metrics.unwrap_or(true).then(|| {
            rampart_core::metrics::CpuMetrics::start(Duration::from_millis(
                cli.metrics.metrics_interval_ms,
            ))
        });
        let app = rampart_http::metrics_router(server.clone(), validated.metrics.clone(), cpu);
        tasks.push(tokio::spawn(rampart_http::serve(
            listener,
            app,
            limits,
            stopped(ctx.stop.clone()),
        )));
        tracing::info!("Started Metrics Service at {local}");
        if !local.ip().is_loopback() {
            tracing::info!(
                "the metrics endpoint has no credentials (as in Triton): it names every model; keep {local} on a private network"
            );
        }
    }
    Ok(tasks)
}

#[cfg(not(feature = "http"))]
pub fn start_http(_: &Context<'_>, _: TlsConfig) -> Result<Vec<Task<()>>, String> {
    Ok(Vec::new())
}

/// The gRPC listener, when enabled.
#[cfg(feature = "grpc")]
pub fn start_grpc(
    ctx: &Context<'_>,
    grpc_tls: TlsConfig,
) -> Result<Option<Task<Result<(), String>>>, String> {
    let (cli, validated) = (ctx.cli, ctx.validated);
    if !cli.grpc.allow_grpc {
        return Ok(None);
    }
    let addr = listen_addr("grpc-address", &cli.grpc.grpc_address, cli.grpc.grpc_port)?;
    let listener = bind("GRPC service", addr, cli.grpc.reuse_grpc_port)?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    let options = rampart_grpc::GrpcOptions {
        max_message_size: cli.grpc.grpc_max_message_size as usize,
        compress_responses: cli.grpc.grpc_infer_response_compression_level != "none",
        max_pending_responses: match cli.grpc.grpc_max_response_pool_size {
            n if n == i32::MAX as u32 => rampart_grpc::DEFAULT_PENDING_RESPONSES,
            n => (n as usize).min(rampart_grpc::MAX_PENDING_RESPONSES),
        },
        model_access: ctx.model_access.clone(),
        audit: Some(ctx.audit.clone()),
    };
    let (inference, health) = rampart_grpc::services(ctx.server.clone(), &options);
    let mut builder = tonic::transport::Server::builder()
        .layer(rampart_grpc::StatusLayer)
        .layer(rampart_grpc::CompressionLayer::new(options.compress_responses))
        .layer(rampart_grpc::RestrictLayer::new(
            std::sync::Arc::new(validated.grpc_restrictions.clone()),
            Some(ctx.audit.clone()),
        ))
        .max_concurrent_streams(Some(cli.grpc.grpc_max_concurrent_streams))
        .http2_keepalive_interval(Some(Duration::from_millis(cli.grpc.grpc_keepalive_time)))
        .http2_keepalive_timeout(Some(Duration::from_millis(cli.grpc.grpc_keepalive_timeout)));
    if cli.grpc.grpc_max_connection_age > 0 {
        builder = builder
            .max_connection_age(Duration::from_millis(cli.grpc.grpc_max_connection_age))
            .max_connection_age_grace(Duration::from_millis(
                cli.grpc.grpc_max_connection_age_grace,
            ));
    }
    let router = builder.add_service(inference).add_service(health);
    let stop = stopped(ctx.stop.clone());
    use tokio_stream::StreamExt;
    let task = match grpc_tls {
        Some(tls) => {
            let incoming =
                tokio_stream::wrappers::ReceiverStream::new(rampart_tls::accept_tls(listener, tls))
                    .map(|(conn, peer)| {
                        Ok::<_, std::io::Error>(rampart_grpc::GrpcConn::tls(conn, peer))
                    });
            tokio::spawn(async move {
                router.serve_with_incoming_shutdown(incoming, stop).await.map_err(|e| e.to_string())
            })
        }
        None => {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener)
                .map(|conn| conn.and_then(rampart_grpc::GrpcConn::plain));
            tokio::spawn(async move {
                router.serve_with_incoming_shutdown(incoming, stop).await.map_err(|e| e.to_string())
            })
        }
    };
    tracing::info!(
        "Started GRPCInferenceService at {local}{}",
        tls_note(validated.grpc_tls.as_ref())
    );
    exposure("GRPCInferenceService", local, &validated.grpc_restrictions);
    Ok(Some(task))
}

#[cfg(not(feature = "grpc"))]
pub fn start_grpc(
    _: &Context<'_>,
    _: TlsConfig,
) -> Result<Option<Task<Result<(), String>>>, String> {
    Ok(None)
}

/// The front ends this binary was built with, for the startup log and `--version`-like reports.
pub fn built() -> Vec<&'static str> {
    let features: [(&str, bool); 11] = [
        ("http", cfg!(feature = "http")),
        ("grpc", cfg!(feature = "grpc")),
        ("metrics", cfg!(feature = "metrics")),
        ("tracing", cfg!(feature = "tracing")),
        ("sagemaker", cfg!(feature = "sagemaker")),
        ("vertex", cfg!(feature = "vertex")),
        ("shm", cfg!(feature = "shm")),
        ("cloud", cfg!(feature = "cloud")),
        ("onnxruntime", cfg!(feature = "onnxruntime")),
        ("tract", cfg!(feature = "tract")),
        ("python", cfg!(feature = "python")),
    ];
    features.iter().filter(|(_, on)| *on).map(|(n, _)| *n).collect()
}
