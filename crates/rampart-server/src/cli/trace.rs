//! The tracing flags (heading "Tracing"): `--trace-config [<mode>,]<setting>=<value>` and the deprecated
//! `--trace-*` spellings, into Triton-mode [`TraceConfig`] and, in mode opentelemetry, [`OtelSettings`].

use clap::Args;
use rampart_core::trace::TraceConfig;

use super::{CliError, DeprecatedFlags};

#[derive(Args, Debug)]
pub struct TraceFlags {
    /// `rate=N`, `count=N`, `level=OFF|TIMESTAMPS`, `mode=triton`, `triton,file=PATH`, `triton,log-frequency=N`
    /// (repeatable). The trace file is chosen here only; the trace API cannot move it.
    #[arg(long, help_heading = "Tracing")]
    pub trace_config: Vec<String>,
}

/// `--trace-config opentelemetry,…` settings (Triton's names and defaults).
#[derive(Debug, Clone)]
pub struct OtelSettings {
    pub url: String,
    pub resources: Vec<(String, String)>,
    pub max_queue_size: usize,
    pub schedule_delay_ms: u64,
    pub max_export_batch_size: usize,
}

impl Default for OtelSettings {
    fn default() -> Self {
        OtelSettings {
            url: "http://localhost:4318/v1/traces".into(),
            resources: vec![],
            max_queue_size: 2048,
            schedule_delay_ms: 5000,
            max_export_batch_size: 512,
        }
    }
}

/// Any tracing flag given, current or deprecated.
pub(super) fn traced(flags: &TraceFlags, old: &DeprecatedFlags) -> bool {
    !flags.trace_config.is_empty()
        || old.trace_file.is_some()
        || !old.trace_level.is_empty()
        || old.trace_rate.is_some()
        || old.trace_count.is_some()
        || old.trace_log_frequency.is_some()
}

/// `--trace-config [<mode>,]<setting>=<value>` (repeatable) and the deprecated `--trace-*` flags.
pub(super) fn trace_config(
    flags: &TraceFlags,
    old: &DeprecatedFlags,
) -> Result<(TraceConfig, Option<OtelSettings>), CliError> {
    let (config, otel) = settings(flags, old).map_err(CliError::Trace)?;
    let Some(otel) = otel else {
        return check_trace_file(config).map(|c| (c, None)).map_err(CliError::Trace);
    };
    if !cfg!(feature = "otel") {
        return Err(CliError::not_yet(
            "trace-config",
            "mode=opentelemetry",
            "OpenTelemetry export in this build (cargo feature 'otel')",
        ));
    }
    if otel.max_export_batch_size > otel.max_queue_size {
        return Err(CliError::Trace("--trace-config opentelemetry,bsp_max_export_batch_size must not exceed bsp_max_queue_size".into()));
    }
    // The trace file belongs to mode triton; in mode opentelemetry traces are exported.
    Ok((TraceConfig { file: None, ..config }, Some(otel)))
}

/// The settings as given: the trace config and, in mode opentelemetry, the export settings.
fn settings(
    flags: &TraceFlags,
    old: &DeprecatedFlags,
) -> Result<(TraceConfig, Option<OtelSettings>), String> {
    let mut config = TraceConfig::default();
    let mut levels: Vec<String> = Vec::new();
    let mut otel_mode = false;
    let mut otel = OtelSettings::default();
    let number = |flag: &str, v: &str| -> Result<i64, String> {
        v.trim().parse::<i64>().map_err(|_| format!("--{flag}: expected an integer, got '{v}'"))
    };
    let mut set = |mode: Option<&str>,
                   key: &str,
                   value: &str,
                   config: &mut TraceConfig|
     -> Result<(), String> {
        match (mode, key) {
            (None, "rate") => {
                config.rate = u32::try_from(number("trace-config rate", value)?)
                    .ok()
                    .filter(|r| *r > 0)
                    .ok_or("--trace-config rate must be in 1..=4294967295")?
            }
            (None, "count") => {
                config.count = i32::try_from(number("trace-config count", value)?)
                    .ok()
                    .filter(|c| *c >= -1)
                    .ok_or("--trace-config count must be in -1..=2147483647 (-1: unlimited)")?
            }
            (None, "level") => levels.push(value.to_string()),
            (None, "mode") if value == "triton" => otel_mode = false,
            (None, "mode") if value == "opentelemetry" => otel_mode = true,
            (None, "mode") => {
                return Err(format!(
                    "--trace-config mode must be triton or opentelemetry, got '{value}'"
                ));
            }
            (Some("triton"), "file") => config.file = Some(std::path::PathBuf::from(value)),
            (Some("triton"), "log-frequency") => {
                config.log_frequency =
                    u32::try_from(number("trace-config triton,log-frequency", value)?)
                        .map_err(|_| "--trace-config triton,log-frequency must be 0 or more")?
            }
            (Some("opentelemetry"), "url") => {
                if !(value.starts_with("http://") || value.starts_with("https://")) {
                    return Err(format!(
                        "--trace-config opentelemetry,url must be an http:// or https:// URL, got '{value}'"
                    ));
                }
                otel.url = value.to_string();
            }
            (Some("opentelemetry"), "resource") => {
                let (k, v) = value.split_once('=').ok_or_else(|| {
                    format!(
                        "--trace-config opentelemetry,resource expects <key>=<value>, got '{value}'"
                    )
                })?;
                otel.resources.push((k.to_string(), v.to_string()));
            }
            (Some("opentelemetry"), "bsp_max_queue_size") => {
                otel.max_queue_size = usize::try_from(number(
                    "trace-config opentelemetry,bsp_max_queue_size",
                    value,
                )?)
                .ok()
                .filter(|n| (1..=1 << 20).contains(n))
                .ok_or("--trace-config opentelemetry,bsp_max_queue_size must be in 1..=1048576")?
            }
            (Some("opentelemetry"), "bsp_schedule_delay") => {
                otel.schedule_delay_ms =
                    u64::try_from(number("trace-config opentelemetry,bsp_schedule_delay", value)?)
                        .map_err(
                        |_| "--trace-config opentelemetry,bsp_schedule_delay must be 0 or more",
                    )?
            }
            (Some("opentelemetry"), "bsp_max_export_batch_size") => {
                otel.max_export_batch_size = usize::try_from(number(
                    "trace-config opentelemetry,bsp_max_export_batch_size",
                    value,
                )?)
                .ok()
                .filter(|n| (1..=1 << 20).contains(n))
                .ok_or(
                    "--trace-config opentelemetry,bsp_max_export_batch_size must be in 1..=1048576",
                )?
            }
            (m, k) => {
                return Err(format!(
                    "--trace-config: unknown setting '{}{k}' (expected rate, count, level, mode, triton,file or triton,log-frequency)",
                    m.map(|m| format!("{m},")).unwrap_or_default()
                ));
            }
        }
        Ok(())
    };
    for tc in &flags.trace_config {
        let (mode, setting) = match tc.split_once(',') {
            Some((m, rest)) if !m.contains('=') => (Some(m), rest),
            _ => (None, tc.as_str()),
        };
        let (key, value) = setting.split_once('=').ok_or_else(|| {
            format!("--trace-config option format is '[<mode>,]<setting>=<value>'. Got {tc}")
        })?;
        set(mode, key, value, &mut config)?;
    }
    // Deprecated spellings.
    if let Some(f) = &old.trace_file {
        set(Some("triton"), "file", f, &mut config)?;
    }
    for l in &old.trace_level {
        set(None, "level", l, &mut config)?;
    }
    if let Some(v) = &old.trace_rate {
        set(None, "rate", v, &mut config)?;
    }
    if let Some(v) = &old.trace_count {
        set(None, "count", v, &mut config)?;
    }
    if let Some(v) = &old.trace_log_frequency {
        set(Some("triton"), "log-frequency", v, &mut config)?;
    }
    let canonical: Vec<String> = levels
        .iter()
        .map(|l| match l.to_ascii_lowercase().as_str() {
            "false" | "off" => "OFF".to_string(),
            "true" | "on" | "min" | "timestamps" => "TIMESTAMPS".to_string(),
            "max" | "tensors" => "TENSORS".to_string(),
            other => other.to_ascii_uppercase(),
        })
        .collect();
    if let Some(bad) =
        canonical.iter().find(|l| !matches!(l.as_str(), "OFF" | "TIMESTAMPS" | "TENSORS"))
    {
        return Err(format!(
            "--trace-config level: unknown trace level '{bad}' (expected OFF, TIMESTAMPS or TENSORS)"
        ));
    }
    config.timestamps = rampart_core::trace::parse_level(&canonical)
        .map_err(|e| format!("--trace-config level: {}", e.message()))?;
    Ok((config, otel_mode.then_some(otel)))
}

/// Mode triton: timestamps need a trace file, whose directory must exist.
fn check_trace_file(config: TraceConfig) -> Result<TraceConfig, String> {
    if config.timestamps && config.file.is_none() {
        return Err(
            "--trace-config level=TIMESTAMPS needs a trace file: --trace-config triton,file=<path>"
                .into(),
        );
    }
    if let Some(f) = config.file.as_ref().filter(|f| f.is_dir()) {
        return Err(format!("--trace-config triton,file: '{}' is a directory", f.display()));
    }
    if let Some(dir) =
        config.file.as_ref().and_then(|f| f.parent()).filter(|d| !d.as_os_str().is_empty())
        && !dir.is_dir()
    {
        return Err(format!(
            "--trace-config triton,file: directory '{}' does not exist",
            dir.display()
        ));
    }
    Ok(config)
}
