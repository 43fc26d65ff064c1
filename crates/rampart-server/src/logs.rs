//! The process's log subscriber: Triton's line formats (`default`, `ISO8601`) plus JSON, levels read from
//! the live [`LogControl`] on every event (the logging API changes them), stderr or `--log-file`.

use std::fmt::Write as _;
use std::sync::Arc;

use rampart_core::logging::{LogControl, LogFormat, Severity, UtcTime};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Rampart's own crates log at every level the settings allow; the libraries underneath (hyper, h2,
/// tonic, rustls) never below INFO, or a client could make the server log one line per HTTP/2 frame.
const OWN_CRATES: &[&str] = &[
    "rampart",
    "rampart_core",
    "rampart_http",
    "rampart_grpc",
    "rampart_tls",
    "rampart_onnxruntime",
    "rampart_tract",
    "rampart_types",
    "rampart_model_config",
];

fn own(target: &str) -> bool {
    let krate = target.split("::").next().unwrap_or(target);
    OWN_CRATES.contains(&krate)
}

fn severity(level: &Level) -> Severity {
    match *level {
        Level::ERROR => Severity::Error,
        Level::WARN => Severity::Warning,
        Level::INFO => Severity::Info,
        Level::DEBUG => Severity::Verbose(1),
        Level::TRACE => Severity::Verbose(2),
    }
}

/// Installs the subscriber. `file`: the `--log-file` handle (else stderr).
pub fn install(control: Arc<LogControl>, file: Option<std::fs::File>) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = LevelGate(control.clone());
    let format = LineFormat { control, pid: std::process::id() };
    let layer = tracing_subscriber::fmt::layer().event_format(format).with_ansi(false);
    match file {
        Some(f) => {
            let layer = layer.with_writer(std::sync::Mutex::new(f));
            tracing_subscriber::registry().with(layer.with_filter(filter)).init();
        }
        None => {
            let layer = layer.with_writer(std::io::stderr);
            tracing_subscriber::registry().with(layer.with_filter(filter)).init();
        }
    }
}

use tracing_subscriber::Layer as _;

/// Decides per event from the live settings. Callsites are never cached as always-on or always-off
/// (`Interest::sometimes`), so a logging-API change applies to the very next event.
struct LevelGate(Arc<LogControl>);

impl<S> tracing_subscriber::layer::Filter<S> for LevelGate {
    fn enabled(
        &self,
        meta: &tracing::Metadata<'_>,
        _: &tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        let s = severity(meta.level());
        (own(meta.target()) || !matches!(s, Severity::Verbose(_))) && self.0.enabled(s)
    }

    fn callsite_enabled(
        &self,
        _: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        tracing::subscriber::Interest::sometimes()
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::TRACE)
    }
}

struct LineFormat {
    control: Arc<LogControl>,
    pid: u32,
}

/// Collects an event's message and fields, with control characters escaped so a logged value (a model
/// name, a header) cannot forge a log line.
#[derive(Default)]
struct Fields {
    message: String,
    extra: Vec<(String, String)>,
}

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.message = text;
        } else {
            self.extra.push((field.name().to_string(), text));
        }
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            self.extra.push((field.name().to_string(), value.to_string()));
        }
    }
}

/// Characters that end a line for some reader: control characters (C0 and C1) and the Unicode line and
/// paragraph separators.
fn breaks_lines(c: char) -> bool {
    c.is_control() || c == '\u{2028}' || c == '\u{2029}'
}

/// Line-breaking characters written as escapes (`\n`, `\u{1b}`, …).
fn escape(s: &str) -> String {
    if !s.chars().any(breaks_lines) {
        return s.to_string();
    }
    s.chars().fold(String::with_capacity(s.len() + 8), |mut out, c| {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if breaks_lines(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
        out
    })
}

impl<S, N> FormatEvent<S, N> for LineFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let meta = event.metadata();
        let mut fields = Fields::default();
        event.record(&mut fields);
        let t = UtcTime::now();
        let letter = match *meta.level() {
            Level::ERROR => 'E',
            Level::WARN => 'W',
            Level::INFO => 'I',
            _ => 'V',
        };
        let file = meta.file().map(|f| f.rsplit('/').next().unwrap_or(f)).unwrap_or(meta.target());
        let line = meta.line().unwrap_or(0);
        let format = self.control.format();
        if format == LogFormat::Json {
            let mut o = serde_json::Map::new();
            o.insert("time".into(), t.rfc3339_millis().into());
            o.insert("level".into(), meta.level().as_str().into());
            o.insert("pid".into(), self.pid.into());
            o.insert("source".into(), format!("{file}:{line}").into());
            o.insert("message".into(), fields.message.into());
            for (k, v) in fields.extra {
                o.insert(k, v.into());
            }
            // serde_json leaves U+2028/U+2029 (and C1 controls) raw; some readers split lines on them.
            let line = serde_json::Value::Object(o).to_string();
            let line = if line.chars().any(breaks_lines) {
                line.chars().fold(String::with_capacity(line.len() + 8), |mut out, c| {
                    if breaks_lines(c) {
                        let _ = write!(out, "\\u{:04x}", c as u32);
                    } else {
                        out.push(c);
                    }
                    out
                })
            } else {
                line
            };
            return writeln!(w, "{line}");
        }
        let mut message = escape(&fields.message);
        for (k, v) in &fields.extra {
            let _ = write!(message, " {k}={}", escape(v));
        }
        match format {
            LogFormat::Iso8601 => writeln!(
                w,
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z {letter} {} {file}:{line}] {message}",
                t.year, t.month, t.day, t.hour, t.minute, t.second, self.pid
            ),
            _ => writeln!(
                w,
                "{letter}{:02}{:02} {:02}:{:02}:{:02}.{:06} {} {file}:{line}] {message}",
                t.month, t.day, t.hour, t.minute, t.second, t.micros, self.pid
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_control_characters() {
        assert_eq!(escape("plain"), "plain");
        assert_eq!(escape("a\nI1126 forged"), "a\\nI1126 forged");
        assert_eq!(escape("\u{1b}[31m"), "\\u{1b}[31m");
        assert_eq!(escape("a\u{2028}b\u{85}"), "a\\u{2028}b\\u{85}");
    }

    #[test]
    fn library_targets_never_verbose() {
        assert!(own("rampart_core::server"));
        assert!(own("rampart"));
        assert!(!own("h2::codec"));
        assert!(!own("rampartx"));
    }
}
