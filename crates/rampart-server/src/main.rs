//! The `rampart` binary: tritonserver's command line, the listeners, signals and graceful drain. Only this
//! crate reads the environment and binds sockets.

mod cli;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use rampart_core::{Server, ServerOptions};
use tracing_subscriber::filter::LevelFilter;

fn init_logging(cli: &cli::Cli) {
    let level = if cli.log_verbose > 0 {
        LevelFilter::DEBUG
    } else if cli.log_info {
        LevelFilter::INFO
    } else if cli.log_warning {
        LevelFilter::WARN
    } else if cli.log_error {
        LevelFilter::ERROR
    } else {
        LevelFilter::OFF
    };
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(cli.log_verbose > 0)
        .with_ansi(false)
        .init();
}

/// `0.0.0.0`, `127.0.0.1`, `::1`, or tritonserver's `ipv6:[::1]` form.
fn listen_addr(address: &str, port: u16) -> Result<SocketAddr, String> {
    let host = address.strip_prefix("ipv6:").unwrap_or(address);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip: std::net::IpAddr = host.parse().map_err(|_| format!("invalid --http-address '{address}'"))?;
    Ok(SocketAddr::new(ip, port))
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot install SIGTERM handler: {e}");
            let _ = ctrl_c.await;
            return;
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let validated = match cli.validate() {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    init_logging(&cli);
    for note in &validated.inert {
        tracing::warn!("{note}");
    }
    let options = ServerOptions {
        id: cli.id.clone(),
        model_repositories: cli.model_repository.clone(),
        autocomplete: validated.autocomplete,
        strict_readiness: cli.strict_readiness,
        exit_on_error: cli.exit_on_error,
        backend_directory: cli.backend_directory.clone(),
        onnxruntime_library: std::env::var_os("ORT_DYLIB_PATH").map(std::path::PathBuf::from),
        default_engine: validated.engine,
        ..ServerOptions::default()
    };
    let server = match Server::start(options) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: creating server: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprint!("{}", server.model_status_table());
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("rampart-io").build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(cli, server)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(cli: cli::Cli, server: Server) -> Result<(), String> {
    let exit_timeout = Duration::from_secs(cli.exit_timeout_secs);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut http_task = None;
    if cli.allow_http {
        let addr = listen_addr(&cli.http_address, cli.http_port)?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("failed to start HTTP service at {addr}: {e}"))?;
        let local = listener.local_addr().map_err(|e| e.to_string())?;
        let options = rampart_http::HttpOptions { max_input_size: cli.http_max_input_size as usize };
        let app = rampart_http::router(server.clone(), options);
        let mut rx = stop_rx.clone();
        http_task = Some(tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.wait_for(|stop| *stop).await;
                })
                .await
        }));
        tracing::info!("Started HTTPService at {local}");
    } else {
        tracing::warn!("no listener is enabled (--allow-http=false): the server only runs until it is signalled");
    }
    shutdown_signal().await;
    tracing::info!("signal received: stopping new connections, waiting up to {}s for in-flight requests", exit_timeout.as_secs());
    let _ = stop_tx.send(true);
    let left = server.shutdown(exit_timeout).await;
    if left > 0 {
        tracing::warn!("{left} inference requests still in flight after --exit-timeout-secs; exiting anyway");
    }
    if let Some(t) = http_task {
        match tokio::time::timeout(Duration::from_secs(1).max(exit_timeout / 10), t).await {
            Ok(Ok(Err(e))) => tracing::error!("HTTP service error: {e}"),
            Ok(_) => {}
            Err(_) => tracing::warn!("HTTP connections still open at exit"),
        }
    }
    tracing::info!("exiting");
    Ok(())
}
