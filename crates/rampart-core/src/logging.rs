//! Log settings (docs/protocol.md, "Logging"): what the logging API reads and changes. The core
//! keeps the settings; whoever installs the log subscriber (the binary, or an embedding
//! application) consults them on every event.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, Ordering::Relaxed};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rampart_types::{Error, Result};

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Triton's `LMMDD hh:mm:ss.uuuuuu pid file:line] message`.
    Default,
    /// `YYYY-MM-DDThh:mm:ssZ L pid file:line] message`.
    Iso8601,
    /// One JSON object per line (Rampart's own).
    Json,
}

impl LogFormat {
    pub fn parse(s: &str) -> Option<LogFormat> {
        match s {
            "default" => Some(LogFormat::Default),
            "ISO8601" => Some(LogFormat::Iso8601),
            "json" => Some(LogFormat::Json),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Default => "default",
            LogFormat::Iso8601 => "ISO8601",
            LogFormat::Json => "json",
        }
    }
}

/// The six settings of the logging API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    /// Where logs go ("" = stderr). Set at startup only.
    pub file: String,
    pub info: bool,
    pub warning: bool,
    pub error: bool,
    pub verbose_level: u32,
    pub format: LogFormat,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            file: String::new(),
            info: true,
            warning: true,
            error: true,
            verbose_level: 0,
            format: LogFormat::Default,
        }
    }
}

/// A logging-API update: every field optional. `file` is refused (it would let a client choose where the
/// server writes).
#[derive(Debug, Clone, Default)]
pub struct LogUpdate {
    pub file: Option<String>,
    pub info: Option<bool>,
    pub warning: Option<bool>,
    pub error: Option<bool>,
    pub verbose_level: Option<u32>,
    pub format: Option<String>,
}

/// Most verbose level accepted (Triton's levels are small integers; above 2 nothing changes).
pub const MAX_VERBOSE_LEVEL: u32 = 1000;

/// The live settings, read lock-free on every log event.
#[derive(Debug)]
pub struct LogControl {
    file: String,
    info: AtomicBool,
    warning: AtomicBool,
    error: AtomicBool,
    verbose_level: AtomicU32,
    format: AtomicU8,
}

/// Severity of one event, as the settings know them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
    Info,
    /// Verbose at this level (1 = `--log-verbose=1`, 2 = more).
    Verbose(u32),
}

impl LogControl {
    pub fn new(settings: LogSettings) -> LogControl {
        LogControl {
            file: settings.file,
            info: AtomicBool::new(settings.info),
            warning: AtomicBool::new(settings.warning),
            error: AtomicBool::new(settings.error),
            verbose_level: AtomicU32::new(settings.verbose_level),
            format: AtomicU8::new(settings.format as u8),
        }
    }

    pub fn enabled(&self, severity: Severity) -> bool {
        match severity {
            Severity::Error => self.error.load(Relaxed),
            Severity::Warning => self.warning.load(Relaxed),
            Severity::Info => self.info.load(Relaxed),
            Severity::Verbose(l) => self.verbose_level.load(Relaxed) >= l,
        }
    }

    pub fn format(&self) -> LogFormat {
        match self.format.load(Relaxed) {
            x if x == LogFormat::Iso8601 as u8 => LogFormat::Iso8601,
            x if x == LogFormat::Json as u8 => LogFormat::Json,
            _ => LogFormat::Default,
        }
    }

    pub fn settings(&self) -> LogSettings {
        LogSettings {
            file: self.file.clone(),
            info: self.info.load(Relaxed),
            warning: self.warning.load(Relaxed),
            error: self.error.load(Relaxed),
            verbose_level: self.verbose_level.load(Relaxed),
            format: self.format(),
        }
    }

    /// Checks the whole update first, then applies it (all or nothing).
    pub fn update(&self, u: &LogUpdate) -> Result<LogSettings> {
        if u.file.is_some() {
            return Err(Error::unsupported(
                "log file location can not be updated through network protocol",
            ));
        }
        let format = match &u.format {
            None => None,
            Some(f) => Some(LogFormat::parse(f).ok_or_else(|| {
                Error::invalid_arg(format!("invalid argument for --log_format, got: {f} (expected default, ISO8601 or json)"))
            })?),
        };
        if let Some(v) = u.verbose_level.filter(|&v| v > MAX_VERBOSE_LEVEL) {
            return Err(Error::invalid_arg(format!(
                "log_verbose_level must be at most {MAX_VERBOSE_LEVEL}, got {v}"
            )));
        }
        for (slot, v) in [(&self.info, u.info), (&self.warning, u.warning), (&self.error, u.error)]
        {
            if let Some(v) = v {
                slot.store(v, Relaxed);
            }
        }
        if let Some(v) = u.verbose_level {
            self.verbose_level.store(v, Relaxed);
        }
        if let Some(f) = format {
            self.format.store(f as u8, Relaxed);
        }
        Ok(self.settings())
    }
}

/// A UTC wall-clock instant split into its civil fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UtcTime {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub micros: u32,
}

impl UtcTime {
    pub fn now() -> UtcTime {
        UtcTime::from_unix(SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default())
    }

    pub fn from_unix(d: Duration) -> UtcTime {
        let secs = d.as_secs() as i64;
        let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + i64::from(month <= 2);
        UtcTime {
            year,
            month,
            day,
            hour: (rem / 3600) as u32,
            minute: (rem % 3600 / 60) as u32,
            second: (rem % 60) as u32,
            micros: d.subsec_micros(),
        }
    }

    /// `YYYY-MM-DDThh:mm:ss.mmmZ`.
    pub fn rfc3339_millis(&self) -> String {
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            self.year,
            self.month,
            self.day,
            self.hour,
            self.minute,
            self.second,
            self.micros / 1000
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_time() {
        let t = UtcTime::from_unix(Duration::from_micros(1_795_717_061_123_456));
        assert_eq!(
            (t.year, t.month, t.day, t.hour, t.minute, t.second, t.micros),
            (2026, 11, 26, 18, 17, 41, 123_456)
        );
        assert_eq!(t.rfc3339_millis(), "2026-11-26T18:17:41.123Z");
        let leap = UtcTime::from_unix(Duration::from_secs(951_782_400)); // 2000-02-29
        assert_eq!((leap.year, leap.month, leap.day), (2000, 2, 29));
    }

    #[test]
    fn updates_are_checked_then_applied() {
        let c = LogControl::new(LogSettings::default());
        assert!(c.enabled(Severity::Info) && !c.enabled(Severity::Verbose(1)));
        let s = c
            .update(&LogUpdate {
                info: Some(false),
                verbose_level: Some(2),
                format: Some("ISO8601".into()),
                ..Default::default()
            })
            .unwrap();
        assert_eq!((s.info, s.verbose_level, s.format), (false, 2, LogFormat::Iso8601));
        assert!(
            !c.enabled(Severity::Info)
                && c.enabled(Severity::Verbose(2))
                && !c.enabled(Severity::Verbose(3))
        );
        // One bad field: nothing changes.
        let e = c
            .update(&LogUpdate {
                error: Some(false),
                format: Some("xml".into()),
                ..Default::default()
            })
            .unwrap_err();
        assert!(e.message().contains("invalid argument for --log_format"));
        assert!(c.enabled(Severity::Error));
        let e =
            c.update(&LogUpdate { file: Some("/tmp/x".into()), ..Default::default() }).unwrap_err();
        assert_eq!(e.code(), rampart_types::Code::Unsupported);
        assert!(
            c.update(&LogUpdate {
                verbose_level: Some(MAX_VERBOSE_LEVEL + 1),
                ..Default::default()
            })
            .is_err()
        );
    }
}
