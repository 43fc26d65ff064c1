//! The HTTP/REST listener's flags (heading "HTTP"): address and port, request and connection limits,
//! restricted APIs, TLS (Rampart's own) and the TLS file reload interval both listeners use.

use clap::{ArgAction, Args};

use super::tls::HttpTlsFlags;
use super::{CliError, aip_prediction_mode, parse_bool};

#[derive(Args, Debug)]
pub struct HttpFlags {
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
    #[command(flatten)]
    pub tls: HttpTlsFlags,
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
    /// How often TLS certificate, key and root files are checked for changes (seconds).
    #[arg(long, default_value_t = 5, help_heading = "HTTP")]
    pub tls_reload_interval_secs: u64,
}

impl HttpFlags {
    /// Refuses limits out of range and header forwarding (not built yet). The listener reads the flags
    /// themselves; TLS is checked by [`HttpTlsFlags`].
    pub(super) fn validate(&self) -> Result<(), CliError> {
        if self.http_max_input_size <= 0 {
            return Err(CliError::HttpMaxInputSize(self.http_max_input_size));
        }
        if self.http_header_read_timeout_secs == 0 || self.http_body_read_timeout_secs == 0 {
            return Err(CliError::NotPositive(
                "--http-header-read-timeout-secs and --http-body-read-timeout-secs",
            ));
        }
        if self.http_max_header_size < 1024 || self.http2_max_concurrent_streams == 0 {
            return Err(CliError::HttpHeaderLimits);
        }
        #[cfg(feature = "http")]
        if !(1..=rampart_http::MAX_DATA_DEPTH).contains(&self.http_max_json_depth) {
            return Err(CliError::HttpJsonDepth {
                max: rampart_http::MAX_DATA_DEPTH,
                got: self.http_max_json_depth,
            });
        }
        if self.http_max_json_values == 0 {
            return Err(CliError::NotPositive("--http-max-json-values"));
        }
        if self.tls_reload_interval_secs == 0 {
            return Err(CliError::NotPositive("--tls-reload-interval-secs"));
        }
        if let Some(p) = &self.http_header_forward_pattern {
            return Err(CliError::not_yet("http-header-forward-pattern", p, "header forwarding"));
        }
        Ok(())
    }
}
