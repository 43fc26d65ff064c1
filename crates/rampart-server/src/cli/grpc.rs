//! The gRPC listener's flags (heading "GRPC"): address and port, Triton's thread and pool sizes, response
//! compression, HTTP/2 keepalive and connection age, restricted protocols, TLS and message limits.

use clap::{ArgAction, Args};

use super::tls::GrpcTlsFlags;
use super::{CliError, aip_prediction_mode, parse_bool};

#[derive(Args, Debug)]
pub struct GrpcFlags {
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
    #[command(flatten)]
    pub tls: GrpcTlsFlags,
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
}

impl GrpcFlags {
    /// Refuses sizes and keywords out of range and header forwarding (not built yet). The listener reads
    /// the flags themselves; TLS is checked by [`GrpcTlsFlags`].
    pub(super) fn validate(&self) -> Result<(), CliError> {
        if let Some(p) = &self.grpc_header_forward_pattern {
            return Err(CliError::not_yet("grpc-header-forward-pattern", p, "header forwarding"));
        }
        if !(2..=128).contains(&self.grpc_infer_thread_count) {
            return Err(CliError::GrpcInferThreadCount(self.grpc_infer_thread_count));
        }
        if self.grpc_max_response_pool_size == 0 || self.grpc_infer_allocation_pool_size == 0 {
            return Err(CliError::NotPositive(
                "--grpc-max-response-pool-size and --grpc-infer-allocation-pool-size",
            ));
        }
        if !matches!(
            self.grpc_infer_response_compression_level.as_str(),
            "none" | "low" | "medium" | "high"
        ) {
            return Err(CliError::UnexpectedValue {
                flag: "grpc-infer-response-compression-level",
                value: self.grpc_infer_response_compression_level.clone(),
                expected: "none, low, medium or high",
            });
        }
        if self.grpc_max_message_size == 0 || self.grpc_max_message_size > i32::MAX as u64 {
            return Err(CliError::GrpcMaxMessageSize(self.grpc_max_message_size));
        }
        if self.grpc_keepalive_time == 0 || self.grpc_keepalive_timeout == 0 {
            return Err(CliError::NotPositive(
                "--grpc-keepalive-time and --grpc-keepalive-timeout",
            ));
        }
        if self.grpc_max_concurrent_streams == 0 {
            return Err(CliError::NotPositive("--grpc-max-concurrent-streams"));
        }
        Ok(())
    }

    /// Ping policing set to anything but Triton's defaults (accepted, not enforced).
    pub(super) fn ping_policing_set(&self) -> bool {
        self.grpc_keepalive_permit_without_calls
            || self.grpc_http2_max_pings_without_data != 2
            || self.grpc_http2_min_recv_ping_interval_without_data != 300_000
            || self.grpc_http2_max_ping_strikes != 2
    }
}
