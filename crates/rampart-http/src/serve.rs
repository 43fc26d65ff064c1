//! The HTTP connection loop: hyper with timeouts and header limits (axum's own `serve` sets none), over any
//! `axum::serve::Listener` (plain TCP or Rampart's TLS listener), with graceful shutdown.

use std::future::Future;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;

/// Per-connection limits against slow and oversized clients.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// A request's headers must arrive within this time (slowloris), including the first request of a new
    /// connection.
    pub header_read_timeout: Duration,
    /// Largest request head (request line + headers) for HTTP/1, header list for HTTP/2.
    pub max_header_bytes: usize,
    /// Concurrent streams per HTTP/2 connection.
    pub http2_max_streams: u32,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits { header_read_timeout: Duration::from_secs(30), max_header_bytes: 64 << 10, http2_max_streams: 256 }
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then waits for open connections to finish their
/// requests (the caller bounds that wait).
pub async fn serve<L>(mut listener: L, app: Router, limits: ConnectionLimits, shutdown: impl Future<Output = ()>)
where
    L: axum::serve::Listener,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // hyper refuses buffers under 8 KiB.
        .max_buf_size(limits.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(limits.http2_max_streams)
        .keep_alive_interval(Duration::from_secs(60))
        .keep_alive_timeout(Duration::from_secs(20));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            (io, _addr) = listener.accept() => {
                let service = TowerToHyperService::new(app.clone());
                let builder = builder.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
                    if let Err(e) = watcher.watch(conn).await {
                        tracing::debug!("HTTP connection ended: {e}");
                    }
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    graceful.shutdown().await;
}
