//! Triton's resource flags: repository agents, the response cache, the rate limiter, memory and device
//! pools, and client shared memory (headings "Repository Agent" to "Shared Memory"). Most size internals
//! Rampart does not have: accepted, and reported at startup when set (`Cli::validate`).

use std::path::PathBuf;

use clap::{ArgAction, Args};

use super::{CliError, parse_bool};

#[derive(Args, Debug)]
pub struct ResourceFlags {
    // ---- Repository agent
    #[arg(long, help_heading = "Repository Agent")]
    pub repoagent_directory: Option<PathBuf>,

    // ---- Response cache
    #[arg(long, help_heading = "Response Cache")]
    pub cache_config: Vec<String>,
    #[arg(long, help_heading = "Response Cache")]
    pub cache_directory: Option<PathBuf>,

    // ---- Rate limiter
    #[arg(long, default_value = "off", help_heading = "Rate Limiter")]
    pub rate_limit: String,
    #[arg(long, help_heading = "Rate Limiter")]
    pub rate_limit_resource: Vec<String>,

    // ---- Memory / device
    #[arg(long, help_heading = "Memory/Device Management")]
    pub pinned_memory_pool_byte_size: Option<u64>,
    #[arg(long, help_heading = "Memory/Device Management")]
    pub cuda_memory_pool_byte_size: Vec<String>,
    #[arg(long, help_heading = "Memory/Device Management")]
    pub cuda_virtual_address_size: Vec<String>,
    #[arg(long, help_heading = "Memory/Device Management")]
    pub min_supported_compute_capability: Option<f64>,
    #[arg(long, help_heading = "Memory/Device Management")]
    pub buffer_manager_thread_count: Option<u32>,
    #[arg(long, help_heading = "Memory/Device Management")]
    pub host_policy: Vec<String>,
    #[arg(long, help_heading = "Memory/Device Management")]
    pub model_load_gpu_limit: Vec<String>,

    // ---- Shared memory
    #[arg(long, default_value = "false", value_parser = parse_bool, action = ArgAction::Set, help_heading = "Shared Memory")]
    pub allow_client_shm: bool,
}

impl ResourceFlags {
    /// Refuses the rate limiter and host policies (not built yet).
    pub(super) fn validate(&self) -> Result<(), CliError> {
        if self.rate_limit != "off" {
            return Err(CliError::not_yet("rate-limit", &self.rate_limit, "the rate limiter"));
        }
        if let Some(v) = self.rate_limit_resource.first() {
            return Err(CliError::not_yet("rate-limit-resource", v, "the rate limiter"));
        }
        if let Some(v) = self.host_policy.first() {
            return Err(CliError::not_yet("host-policy", v, "host policies"));
        }
        Ok(())
    }

    /// The response cache size from `--cache-config local,size=N` (repeatable; the last size wins) or the
    /// deprecated `--response-cache-byte-size=N` (`deprecated`), which cannot be combined.
    pub(super) fn response_cache_bytes(
        &self,
        deprecated: &Option<String>,
    ) -> Result<Option<u64>, CliError> {
        if deprecated.is_some() && !self.cache_config.is_empty() {
            return Err(CliError::Cache("Incompatible flags --response-cache-byte-size and --cache-config both provided. Please provide one or the other.".into()));
        }
        let size = |flag: &str, v: &str| {
            v.parse::<u64>().map_err(|_| {
                CliError::Cache(format!(
                    "{flag}: the cache size must be a number of bytes, got '{v}'"
                ))
            })
        };
        if let Some(v) = deprecated {
            return Ok(Some(size("--response-cache-byte-size", v)?).filter(|&n| n > 0));
        }
        let mut bytes = None;
        for spec in &self.cache_config {
            let (cache, setting) = spec.split_once(',').ok_or_else(|| {
                CliError::Cache(format!(
                    "--cache-config option format is '<cache name>,<setting>=<value>'. Got {spec}"
                ))
            })?;
            if cache != "local" {
                return Err(CliError::Cache(format!(
                    "--cache-config: only the 'local' response cache is built into Rampart, got '{cache}'"
                )));
            }
            match setting.split_once('=') {
                Some(("size", v)) => bytes = Some(size("--cache-config local,size", v)?),
                _ => {
                    return Err(CliError::Cache(format!(
                        "--cache-config: the local cache takes only 'size=<bytes>', got '{setting}'"
                    )));
                }
            }
        }
        Ok(bytes.filter(|&n| n > 0))
    }
}
