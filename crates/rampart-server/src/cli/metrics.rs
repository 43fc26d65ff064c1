//! The metrics listener's flags (heading "Metrics") and `--metrics-config` into [`MetricsOptions`].

use clap::{ArgAction, Args};
use rampart_core::metrics::MetricsOptions;

use super::{CliError, parse_bool};

#[derive(Args, Debug)]
pub struct MetricsFlags {
    /// Serve Prometheus metrics on --metrics-address:--metrics-port (only `/metrics`, no credentials).
    #[arg(long, default_value = "true", value_parser = parse_bool, action = ArgAction::Set, help_heading = "Metrics")]
    pub allow_metrics: bool,
    /// GPU metrics (this build has no GPU support: accepted, nothing to report).
    #[arg(long, value_parser = parse_bool, action = ArgAction::Set, help_heading = "Metrics")]
    pub allow_gpu_metrics: Option<bool>,
    /// nv_cpu_utilization, nv_cpu_memory_total_bytes, nv_cpu_memory_used_bytes (default true).
    #[arg(long, value_parser = parse_bool, action = ArgAction::Set, help_heading = "Metrics")]
    pub allow_cpu_metrics: Option<bool>,
    /// Defaults to --http-address.
    #[arg(long, help_heading = "Metrics")]
    pub metrics_address: Option<String>,
    #[arg(long, default_value_t = 8002, help_heading = "Metrics")]
    pub metrics_port: u16,
    /// How often CPU and memory are sampled.
    #[arg(long, default_value_t = 2000, help_heading = "Metrics")]
    pub metrics_interval_ms: u64,
    /// `counter_latencies=true|false` (repeatable).
    #[arg(long, help_heading = "Metrics")]
    pub metrics_config: Vec<String>,
}

impl MetricsFlags {
    /// Settings given beyond the defaults (reported when the listener is off).
    pub(super) fn settings_given(&self) -> bool {
        self.metrics_address.is_some()
            || self.metrics_port != 8002
            || self.metrics_interval_ms != 2000
            || !self.metrics_config.is_empty()
            || self.allow_gpu_metrics.is_some()
            || self.allow_cpu_metrics.is_some()
    }
}

/// `--metrics-config <key>=<value>` settings.
impl TryFrom<&MetricsFlags> for MetricsOptions {
    type Error = CliError;

    fn try_from(flags: &MetricsFlags) -> Result<Self, CliError> {
        let mut options = MetricsOptions::default();
        let mut summaries = false;
        let mut summary = rampart_core::stats::SummaryConfig::default();
        for setting in &flags.metrics_config {
            let Some((key, value)) = setting.split_once('=') else {
                return Err(CliError::Metrics(format!(
                    "--metrics-config option format is '<setting>=<value>'. Got {setting}"
                )));
            };
            let flag = |v: &str| {
                parse_bool(v).map_err(|e| CliError::Metrics(format!("--metrics-config {key}: {e}")))
            };
            match key {
                "counter_latencies" => options.counter_latencies = flag(value)?,
                "summary_latencies" => summaries = flag(value)?,
                "histogram_latencies" => options.histograms = flag(value)?,
                "summary_quantiles" => summary.quantiles = quantiles(value)?,
                "summary_max_age" => {
                    let secs = value.parse::<u64>().ok().filter(|s| (1..=86_400).contains(s));
                    summary.max_age = std::time::Duration::from_secs(secs.ok_or_else(|| {
                        CliError::Metrics(format!(
                            "--metrics-config summary_max_age: seconds in 1..=86400, got '{value}'"
                        ))
                    })?);
                }
                // The window is kept exactly (bounded in samples), so there are no age buckets to size.
                "summary_age_buckets" => {}
                _ => {
                    return Err(CliError::Metrics(format!(
                        "--metrics-config: unknown setting '{key}' (expected counter_latencies, summary_latencies, summary_quantiles, summary_max_age or histogram_latencies)"
                    )));
                }
            }
        }
        options.summaries = summaries.then_some(summary);
        Ok(options)
    }
}

/// `summary_quantiles=<quantile>:<error>,…`: 1 to 32 pairs, each value in 0..1.
fn quantiles(value: &str) -> Result<Vec<(f64, f64)>, CliError> {
    let mut quantiles = Vec::new();
    for pair in value.split(',') {
        let parsed = pair.split_once(':').and_then(|(q, e)| {
            Some((q.trim().parse::<f64>().ok()?, e.trim().parse::<f64>().ok()?))
        });
        match parsed {
            Some((q, e)) if (0.0..=1.0).contains(&q) && (0.0..=1.0).contains(&e) => {
                quantiles.push((q, e))
            }
            _ => {
                return Err(CliError::Metrics(format!(
                    "--metrics-config summary_quantiles: expected <quantile>:<error>,… with values in 0..1, got '{value}'"
                )));
            }
        }
    }
    if quantiles.is_empty() || quantiles.len() > 32 {
        return Err(CliError::Metrics(
            "--metrics-config summary_quantiles: 1 to 32 quantiles".into(),
        ));
    }
    Ok(quantiles)
}
