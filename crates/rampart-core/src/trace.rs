//! Request tracing in Triton's `triton` mode (docs/protocol.md, "Tracing"): sampled requests record
//! named timestamps from the front end down to the engine, and the records are written as a JSON
//! array to the file chosen at startup (`--trace-config triton,file=…`). Settings are global with
//! per-model overrides, changed through the trace-settings API; the file location never is.

/// Whether this build traces requests (cargo feature `tracing`). Without it no request is traced and the
/// trace-settings APIs answer that tracing is not in this build.
pub const BUILT: bool = cfg!(feature = "tracing");

pub(crate) fn check_built() -> rampart_types::Result<()> {
    if BUILT {
        Ok(())
    } else {
        Err(rampart_types::Error::unsupported(
            "tracing is not supported in this build (cargo feature 'tracing')",
        ))
    }
}

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use rampart_types::{Error, Result};
use serde_json::{Value, json};

/// Traces kept in memory before they are written out even with `log_frequency` 0 (bounded memory).
pub const MAX_BUFFERED_TRACES: usize = 10_000;

/// The trace settings of one scope (global, or a model's overrides where `Some`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceOverrides {
    /// `trace_level`: `true` = TIMESTAMPS, `false` = OFF.
    pub timestamps: Option<bool>,
    pub rate: Option<u32>,
    /// Traces left (-1: unlimited).
    pub count: Option<i32>,
    pub log_frequency: Option<u32>,
}

/// Effective settings, as the API reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceSettings {
    pub timestamps: bool,
    pub rate: u32,
    pub count: i32,
    pub log_frequency: u32,
    pub file: String,
    pub mode: &'static str,
}

/// One finished trace, handed to an exporter.
pub struct TraceRecord<'a> {
    pub id: u64,
    pub model: &'a str,
    pub version: i64,
    /// Names and wall-clock ns since the Unix epoch, in the order they happened.
    pub stamps: &'a [(&'static str, u64)],
    /// The W3C `traceparent` the client sent, if any.
    pub traceparent: Option<&'a str>,
    /// The trace this one belongs to: an ensemble step's trace names the ensemble request's.
    pub parent_id: Option<u64>,
}

/// Where traces go instead of the trace file (`--trace-config mode=opentelemetry`): the binary installs an
/// OTLP exporter; the core knows nothing about OpenTelemetry.
pub trait TraceExporter: Send + Sync {
    fn export(&self, record: &TraceRecord<'_>);
    /// Sends what is queued (at shutdown). Blocking.
    fn flush(&self);
    /// The `trace_mode` the settings API reports.
    fn mode(&self) -> &'static str;
}

/// Startup configuration (`--trace-config`).
#[derive(Clone)]
pub struct TraceConfig {
    pub timestamps: bool,
    pub rate: u32,
    pub count: i32,
    pub log_frequency: u32,
    pub file: Option<PathBuf>,
    /// Mode `opentelemetry`: the exporter that receives every trace (no file then).
    pub exporter: Option<Arc<dyn TraceExporter>>,
}

impl std::fmt::Debug for TraceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TraceConfig")
            .field("timestamps", &self.timestamps)
            .field("rate", &self.rate)
            .field("count", &self.count)
            .field("log_frequency", &self.log_frequency)
            .field("file", &self.file)
            .field("exporter", &self.exporter.as_ref().map(|e| e.mode()))
            .finish()
    }
}

impl Default for TraceConfig {
    fn default() -> Self {
        TraceConfig {
            timestamps: false,
            rate: 1000,
            count: -1,
            log_frequency: 0,
            file: None,
            exporter: None,
        }
    }
}

/// An API update: each key absent (`None`), cleared (`Some(None)`, per-model only) or set.
#[derive(Debug, Clone, Default)]
pub struct TraceUpdate {
    pub level: Option<Option<Vec<String>>>,
    pub rate: Option<Option<String>>,
    pub count: Option<Option<String>>,
    pub log_frequency: Option<Option<String>>,
    /// Present at all: refused.
    pub file: bool,
}

struct State {
    global: TraceOverrides,
    models: HashMap<String, TraceOverrides>,
    /// Requests seen per scope (model name, or "" for the global scope), for `rate`.
    seen: HashMap<String, u64>,
    next_id: u64,
    buffer: Vec<Value>,
    buffered_traces: usize,
    flushes: u32,
}

pub struct Tracer {
    /// Traces handed out and not yet recorded (a front end may still hold one when shutdown flushes).
    outstanding: std::sync::atomic::AtomicUsize,
    file: Option<PathBuf>,
    exporter: Option<Arc<dyn TraceExporter>>,
    /// False while no scope traces anything: requests then pay one atomic load.
    active: AtomicBool,
    state: Mutex<State>,
}

/// Nanoseconds since the Unix epoch of an `Instant` (one wall-clock reading anchors the monotonic clock).
pub fn clock_ns(at: Instant) -> u64 {
    static ANCHOR: OnceLock<(Instant, u64)> = OnceLock::new();
    let (base, base_ns) = *ANCHOR.get_or_init(|| {
        (
            Instant::now(),
            SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0),
        )
    });
    match at.checked_duration_since(base) {
        Some(d) => base_ns + d.as_nanos() as u64,
        None => base_ns.saturating_sub(base.duration_since(at).as_nanos() as u64),
    }
}

fn parse_number<T: std::str::FromStr>(key: &str, v: &str) -> Result<T> {
    v.trim()
        .parse::<T>()
        .map_err(|_| Error::invalid_arg(format!("Unable to parse '{key}', got: {v}")))
}

/// Applies one key of an update to `slot`: absent leaves it, a value is parsed into it, null / an empty list
/// clears it — per model only (the global settings have nothing to fall back to).
fn apply<V, T>(
    slot: &mut Option<T>,
    update: &Option<Option<V>>,
    key: &str,
    global: bool,
    parse: impl FnOnce(&V) -> Result<T>,
) -> Result<()> {
    match update {
        None => {}
        Some(Some(v)) => *slot = Some(parse(v)?),
        Some(None) if global => {
            return Err(Error::invalid_arg(format!(
                "the global '{key}' cannot be cleared; give a value (only per-model settings clear to the global one)"
            )));
        }
        Some(None) => *slot = None,
    }
    Ok(())
}

/// `trace_level` values: `OFF` alone, or `TIMESTAMPS`. `TENSORS` is not built.
pub fn parse_level(values: &[String]) -> Result<bool> {
    let upper: Vec<String> = values.iter().map(|v| v.to_ascii_uppercase()).collect();
    if upper.iter().any(|v| v == "OFF") {
        if upper.len() > 1 {
            return Err(Error::invalid_arg("Expect only one trace level 'OFF' is specified"));
        }
        return Ok(false);
    }
    if upper.iter().any(|v| v == "TENSORS") {
        return Err(crate::features::not_yet("trace level TENSORS"));
    }
    Ok(upper.iter().any(|v| v == "TIMESTAMPS"))
}

impl Tracer {
    pub fn new(config: TraceConfig) -> Tracer {
        let global = TraceOverrides {
            timestamps: Some(config.timestamps),
            rate: Some(config.rate.max(1)),
            count: Some(config.count),
            log_frequency: Some(config.log_frequency),
        };
        let tracer = Tracer {
            outstanding: Default::default(),
            file: config.file,
            exporter: config.exporter,
            active: AtomicBool::new(false),
            state: Mutex::new(State {
                global,
                models: HashMap::new(),
                seen: HashMap::new(),
                next_id: 1,
                buffer: Vec::new(),
                buffered_traces: 0,
                flushes: 0,
            }),
        };
        tracer.refresh_active(&tracer.lock());
        tracer
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn effective(state: &State, model: Option<&str>) -> TraceOverrides {
        let o = model.and_then(|m| state.models.get(m)).cloned().unwrap_or_default();
        TraceOverrides {
            timestamps: o.timestamps.or(state.global.timestamps),
            rate: o.rate.or(state.global.rate),
            count: o.count.or(state.global.count),
            log_frequency: o.log_frequency.or(state.global.log_frequency),
        }
    }

    fn refresh_active(&self, state: &State) {
        // With an exporter, a request carrying a trace context is traced even when the count is used up.
        let on = |o: &TraceOverrides| {
            o.timestamps == Some(true) && (o.count != Some(0) || self.exporter.is_some())
        };
        let active = (self.file.is_some() || self.exporter.is_some())
            && (on(&Self::effective(state, None))
                || state.models.keys().any(|m| on(&Self::effective(state, Some(m)))));
        self.active.store(active, Ordering::Release);
    }

    /// Whether any scope traces at all.
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    pub fn settings(&self, model: Option<&str>) -> TraceSettings {
        let state = self.lock();
        let e = Self::effective(&state, model);
        TraceSettings {
            timestamps: e.timestamps.unwrap_or(false),
            rate: e.rate.unwrap_or(1000),
            count: e.count.unwrap_or(-1),
            log_frequency: e.log_frequency.unwrap_or(0),
            file: self.file.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
            mode: self.exporter.as_ref().map_or("triton", |e| e.mode()),
        }
    }

    /// Applies an API update to the global settings or to a model's overrides (checked in full first).
    pub fn update(&self, model: Option<&str>, u: &TraceUpdate) -> Result<TraceSettings> {
        if u.file {
            return Err(Error::unsupported(
                "trace file location can not be updated through network protocol",
            ));
        }
        let mut next = {
            let state = self.lock();
            match model {
                Some(m) => state.models.get(m).cloned().unwrap_or_default(),
                None => state.global.clone(),
            }
        };
        let global = model.is_none();
        apply(&mut next.timestamps, &u.level, "trace_level", global, |values| parse_level(values))?;
        apply(&mut next.rate, &u.rate, "trace_rate", global, |v| {
            let r: u32 = parse_number("trace_rate", v)?;
            if r == 0 {
                return Err(Error::invalid_arg("trace_rate must be at least 1"));
            }
            Ok(r)
        })?;
        apply(&mut next.count, &u.count, "trace_count", global, |v| {
            let c: i32 = parse_number("trace_count", v)?;
            if c < -1 {
                return Err(Error::invalid_arg(format!(
                    "trace_count must be -1 (unlimited) or more, got {c}"
                )));
            }
            Ok(c)
        })?;
        apply(&mut next.log_frequency, &u.log_frequency, "log_frequency", global, |v| {
            parse_number("log_frequency", v)
        })?;
        if next.timestamps == Some(true) && self.file.is_none() && self.exporter.is_none() {
            return Err(Error::unsupported(
                "tracing needs a trace file, chosen at startup only: --trace-config triton,file=<path>",
            ));
        }
        {
            let mut state = self.lock();
            match model {
                Some(m) if next == TraceOverrides::default() => {
                    state.models.remove(m);
                }
                Some(m) => {
                    state.models.insert(m.to_string(), next);
                }
                None => state.global = next,
            }
            self.refresh_active(&state);
        }
        Ok(self.settings(model))
    }

    /// Forgets a model's overrides (it was unloaded).
    pub fn forget(&self, model: &str) {
        let mut state = self.lock();
        state.models.remove(model);
        state.seen.remove(model);
        self.refresh_active(&state);
    }

    /// A trace for this request of `model`, if the settings sample it. A request that carries a W3C
    /// `traceparent` is always traced in OpenTelemetry mode (while the level is on), as in Triton.
    pub fn sample(self: &Arc<Self>, model: &str, traceparent: Option<&str>) -> Option<Arc<Trace>> {
        if !self.active.load(Ordering::Acquire) {
            return None;
        }
        let mut state = self.lock();
        let e = Self::effective(&state, Some(model));
        if e.timestamps != Some(true) {
            return None;
        }
        let traceparent =
            traceparent.filter(|_| self.exporter.is_some()).filter(|t| t.len() <= 256);
        if let Some(parent) = traceparent {
            let id = state.next_id;
            state.next_id += 1;
            return Some(self.new_trace(id, model, Some(parent.to_string()), None));
        }
        if e.count == Some(0) {
            return None;
        }
        let scoped = state.models.get(model).is_some_and(|o| o.rate.is_some() || o.count.is_some());
        let scope = if scoped { model.to_string() } else { String::new() };
        let seen = state.seen.entry(scope).or_insert(0);
        let n = *seen;
        *seen += 1;
        if !n.is_multiple_of(u64::from(e.rate.unwrap_or(1).max(1))) {
            return None;
        }
        let count_slot = match state.models.get_mut(model) {
            Some(o) if o.count.is_some() => &mut o.count,
            _ => &mut state.global.count,
        };
        if let Some(c) = count_slot.as_mut().filter(|c| **c > 0) {
            *c -= 1;
        }
        let id = state.next_id;
        state.next_id += 1;
        self.refresh_active(&state);
        Some(self.new_trace(id, model, None, None))
    }

    fn new_trace(
        self: &Arc<Self>,
        id: u64,
        model: &str,
        traceparent: Option<String>,
        parent_id: Option<u64>,
    ) -> Arc<Trace> {
        self.outstanding.fetch_add(1, Ordering::AcqRel);
        Arc::new(Trace {
            id,
            parent_id,
            model: model.to_string(),
            version: AtomicI64::new(0),
            stamps: Mutex::new(Vec::with_capacity(12)),
            traceparent,
            tracer: Arc::downgrade(self),
        })
    }

    fn record(&self, trace: &Trace) {
        if let Some(exporter) = &self.exporter {
            let stamps = trace.stamps.lock().unwrap_or_else(|e| e.into_inner());
            exporter.export(&TraceRecord {
                id: trace.id,
                model: &trace.model,
                version: trace.version.load(Ordering::Relaxed),
                stamps: &stamps,
                traceparent: trace.traceparent.as_deref(),
                parent_id: trace.parent_id,
            });
            return;
        }
        let stamps: Vec<Value> = trace
            .stamps
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(name, ns)| json!({"name": name, "ns": ns}))
            .collect();
        let mut state = self.lock();
        let mut head = json!({"id": trace.id, "model_name": trace.model, "model_version": trace.version.load(Ordering::Relaxed)});
        if let Some(parent) = trace.parent_id {
            head["parent_id"] = json!(parent);
        }
        state.buffer.push(head);
        state.buffer.push(json!({"id": trace.id, "timestamps": stamps}));
        state.buffered_traces += 1;
        let freq = Self::effective(&state, Some(&trace.model)).log_frequency.unwrap_or(0) as usize;
        if (freq > 0 && state.buffered_traces >= freq)
            || state.buffered_traces >= MAX_BUFFERED_TRACES
        {
            self.write(&mut state, true);
        }
    }

    /// Writes the buffered records: to `<file>.<n>` for periodic flushes, to `<file>` at shutdown.
    fn write(&self, state: &mut State, periodic: bool) {
        let Some(file) = &self.file else { return };
        if state.buffer.is_empty() {
            return;
        }
        let path = if periodic {
            let p = PathBuf::from(format!("{}.{}", file.display(), state.flushes));
            state.flushes += 1;
            p
        } else {
            file.clone()
        };
        let records = std::mem::take(&mut state.buffer);
        state.buffered_traces = 0;
        let text = Value::Array(records).to_string();
        use std::os::unix::fs::OpenOptionsExt;
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut f| {
                // A file that existed keeps its old mode otherwise.
                use std::os::unix::fs::PermissionsExt;
                f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
                std::io::Write::write_all(&mut f, text.as_bytes())
            });
        if let Err(e) = written {
            tracing::error!("cannot write trace file '{}': {e}", path.display());
        }
    }

    /// Writes what is buffered, or has the exporter send it (at shutdown), once the traces still held by
    /// front ends (answered requests whose responses are being written) are recorded, for up to 2 s.
    /// Blocking.
    pub fn flush(&self) {
        let deadline = Instant::now() + std::time::Duration::from_secs(2);
        while self.outstanding.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        if let Some(exporter) = &self.exporter {
            exporter.flush();
            return;
        }
        let mut state = self.lock();
        // What is left goes to the next `<file>.<n>` while the global log_frequency is set, else to `<file>`.
        let periodic = state.global.log_frequency.unwrap_or(0) > 0;
        self.write(&mut state, periodic);
    }
}

/// One sampled request: named timestamps, written to the trace file when the last holder drops it.
pub struct Trace {
    id: u64,
    parent_id: Option<u64>,
    model: String,
    version: AtomicI64,
    stamps: Mutex<Vec<(&'static str, u64)>>,
    traceparent: Option<String>,
    tracer: Weak<Tracer>,
}

impl Trace {
    pub fn stamp(&self, name: &'static str) {
        self.stamp_at(name, Instant::now());
    }

    pub fn stamp_at(&self, name: &'static str, at: Instant) {
        self.stamps.lock().unwrap_or_else(|e| e.into_inner()).push((name, clock_ns(at)));
    }

    pub fn set_version(&self, v: i64) {
        self.version.store(v, Ordering::Relaxed);
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    /// The trace of a request this one makes on its behalf (an ensemble step): always taken when the parent
    /// is, with the parent's id and W3C context.
    pub fn child(&self, model: &str) -> Option<Arc<Trace>> {
        let tracer = self.tracer.upgrade()?;
        let id = {
            let mut state = tracer.lock();
            let id = state.next_id;
            state.next_id += 1;
            id
        };
        Some(tracer.new_trace(id, model, self.traceparent.clone(), Some(self.id)))
    }
}

impl Drop for Trace {
    fn drop(&mut self) {
        if let Some(tracer) = self.tracer.upgrade() {
            tracer.record(self);
            tracer.outstanding.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl std::fmt::Debug for Trace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Trace({})", self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracer(dir: &std::path::Path, rate: u32, count: i32, freq: u32) -> Arc<Tracer> {
        Arc::new(Tracer::new(TraceConfig {
            timestamps: true,
            rate,
            count,
            log_frequency: freq,
            file: Some(dir.join("t.json")),
            exporter: None,
        }))
    }

    #[test]
    fn rate_and_count() {
        let dir = tempfile::tempdir().unwrap();
        let t = tracer(dir.path(), 3, -1, 0);
        let sampled: Vec<bool> = (0..9).map(|_| t.sample("m", None).is_some()).collect();
        assert_eq!(sampled, [true, false, false, true, false, false, true, false, false]);
        let t = tracer(dir.path(), 1, 2, 0);
        assert_eq!(
            (0..4).map(|_| t.sample("m", None).is_some()).collect::<Vec<_>>(),
            [true, true, false, false]
        );
        assert_eq!(t.settings(None).count, 0);
        // Without a file nothing is sampled.
        let off =
            Arc::new(Tracer::new(TraceConfig { timestamps: true, rate: 1, ..Default::default() }));
        assert!(off.sample("m", None).is_none());
    }

    #[test]
    fn per_model_overrides_and_clearing() {
        let dir = tempfile::tempdir().unwrap();
        let t = Arc::new(Tracer::new(TraceConfig {
            file: Some(dir.path().join("t.json")),
            ..Default::default()
        }));
        assert!(t.sample("a", None).is_none(), "global level OFF");
        let on = TraceUpdate {
            level: Some(Some(vec!["TIMESTAMPS".into()])),
            rate: Some(Some("1".into())),
            ..Default::default()
        };
        let s = t.update(Some("a"), &on).unwrap();
        assert!(s.timestamps && s.rate == 1);
        assert!(t.sample("a", None).is_some() && t.sample("b", None).is_none());
        assert!(!t.settings(Some("b")).timestamps && t.settings(None).rate == 1000);
        let clear = TraceUpdate { level: Some(None), rate: Some(None), ..Default::default() };
        assert!(!t.update(Some("a"), &clear).unwrap().timestamps);
        assert!(t.sample("a", None).is_none());
        assert!(t.update(None, &clear).unwrap_err().message().contains("cannot be cleared"));
        let bad = |u: TraceUpdate| t.update(None, &u).unwrap_err().message().to_string();
        assert!(
            bad(TraceUpdate { rate: Some(Some("x".into())), ..Default::default() })
                .contains("Unable to parse 'trace_rate', got: x")
        );
        assert!(
            bad(TraceUpdate { count: Some(Some("-2".into())), ..Default::default() })
                .contains("-1 (unlimited)")
        );
        assert!(
            bad(TraceUpdate {
                level: Some(Some(vec!["OFF".into(), "TIMESTAMPS".into()])),
                ..Default::default()
            })
            .contains("only one trace level 'OFF'")
        );
        assert!(
            bad(TraceUpdate { file: true, ..Default::default() }).contains("can not be updated")
        );
    }

    #[test]
    fn records_are_written_as_a_json_array() {
        let dir = tempfile::tempdir().unwrap();
        let t = tracer(dir.path(), 1, -1, 2);
        for v in [1, 2, 3] {
            let tr = t.sample("m", None).unwrap();
            tr.set_version(v);
            tr.stamp("REQUEST_START");
            tr.stamp("REQUEST_END");
        }
        // Two traces filled the first periodic file; the third waits for the flush.
        let first: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("t.json.0")).unwrap())
                .unwrap();
        let first = first.as_array().unwrap();
        assert_eq!(first.len(), 4);
        assert_eq!(first[0], json!({"id": 1, "model_name": "m", "model_version": 1}));
        let stamps = first[1]["timestamps"].as_array().unwrap();
        assert_eq!(stamps[0]["name"], "REQUEST_START");
        assert!(stamps[1]["ns"].as_u64().unwrap() >= stamps[0]["ns"].as_u64().unwrap());
        t.flush();
        let second: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("t.json.1")).unwrap())
                .unwrap();
        assert_eq!(second[0]["id"], 3);
    }
}
