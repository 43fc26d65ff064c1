//! The logging flags (heading "Logging"): levels, line format, log file, and the audit log (Rampart's own).

use std::path::PathBuf;

use clap::{ArgAction, Args};
use rampart_core::logging::{LogFormat, MAX_VERBOSE_LEVEL};

use super::{CliError, parse_bool};

#[derive(Args, Debug)]
pub struct LoggingFlags {
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
    /// Append audit events (admin calls, refused credentials, startup, shutdown) as JSON lines to this file
    /// instead of stderr (Rampart's own; fixed at startup).
    #[arg(long, help_heading = "Logging")]
    pub audit_log_file: Option<PathBuf>,
}

impl LoggingFlags {
    /// The log line format; also refuses a verbose level above the largest.
    pub(super) fn log_format(&self) -> Result<LogFormat, CliError> {
        let Some(format) = LogFormat::parse(&self.log_format) else {
            return Err(CliError::LogFormat(self.log_format.clone()));
        };
        if self.log_verbose > MAX_VERBOSE_LEVEL {
            return Err(CliError::LogVerbose { max: MAX_VERBOSE_LEVEL });
        }
        Ok(format)
    }
}
