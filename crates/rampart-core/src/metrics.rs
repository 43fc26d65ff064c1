//! Prometheus metrics (docs/protocol.md, "Metrics") in the text exposition format, with Triton's
//! metric names, types and labels.
//!
//! Rendered by hand from the statistics snapshots rather than through a metrics registry: Triton's counters
//! have no `_total` suffix, which OpenMetrics encoders (prometheus-client) add, and dashboards written for
//! Triton query the bare names.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::model::ModelVersion;
use crate::stats::{DurationSnapshot, FailureReason, StatsSnapshot};

/// A metric family read from a snapshot: name, help text, and the value it reports.
type Family<T> = (&'static str, &'static str, fn(&StatsSnapshot) -> T);

/// What `/metrics` reports (`--metrics-config`, `--allow-cpu-metrics`).
#[derive(Debug, Clone)]
pub struct MetricsOptions {
    /// `counter_latencies` (default true): the cumulative `*_duration_us` counters.
    pub counter_latencies: bool,
    /// `summary_latencies=true`: `nv_inference_*_summary_us` with these quantiles and window.
    pub summaries: Option<crate::stats::SummaryConfig>,
    /// `histogram_latencies=true`: `nv_inference_first_response_histogram_ms`.
    pub histograms: bool,
}

impl Default for MetricsOptions {
    fn default() -> Self {
        MetricsOptions { counter_latencies: true, summaries: None, histograms: false }
    }
}

/// Host CPU and memory, sampled every `--metrics-interval-ms` (Triton's `nv_cpu_*` gauges).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuSample {
    /// Busy share of all CPUs over the last interval, 0.0–1.0.
    pub utilization: f64,
    pub memory_total_bytes: u64,
    pub memory_used_bytes: u64,
}

/// Samples `/proc/stat` and `/proc/meminfo` on a thread of its own.
#[derive(Clone, Default)]
pub struct CpuMetrics {
    latest: Arc<Mutex<Option<CpuSample>>>,
}

/// `(busy, total)` jiffies from the `cpu` line of /proc/stat.
fn cpu_times(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    if v.len() < 4 {
        return None;
    }
    // user nice system idle iowait irq softirq steal (guest time is already in user/nice).
    let idle = v[3] + v.get(4).copied().unwrap_or(0);
    let total: u64 = v.iter().take(8).sum();
    Some((total - idle, total))
}

/// `(total, used)` bytes from /proc/meminfo: used = total − available.
fn memory(meminfo: &str) -> Option<(u64, u64)> {
    let field = |name: &str| {
        meminfo.lines().find_map(|l| {
            l.strip_prefix(name)?.trim().strip_suffix("kB")?.trim().parse::<u64>().ok()
        })
    };
    let total = field("MemTotal:")? * 1024;
    let available = field("MemAvailable:")? * 1024;
    Some((total, total.saturating_sub(available)))
}

impl CpuMetrics {
    /// Starts sampling every `interval` (the first sample after one interval).
    pub fn start(interval: Duration) -> CpuMetrics {
        let metrics = CpuMetrics::default();
        let latest = Arc::downgrade(&metrics.latest);
        let spawned =
            std::thread::Builder::new().name("rampart-cpu-metrics".into()).spawn(move || {
                let mut last =
                    std::fs::read_to_string("/proc/stat").ok().as_deref().and_then(cpu_times);
                loop {
                    std::thread::sleep(interval);
                    let Some(latest) = latest.upgrade() else { return };
                    let now =
                        std::fs::read_to_string("/proc/stat").ok().as_deref().and_then(cpu_times);
                    let mem =
                        std::fs::read_to_string("/proc/meminfo").ok().as_deref().and_then(memory);
                    let utilization = match (last, now) {
                        (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => {
                            (b1.saturating_sub(b0)) as f64 / (t1 - t0) as f64
                        }
                        _ => 0.0,
                    };
                    last = now;
                    let (memory_total_bytes, memory_used_bytes) = mem.unwrap_or_default();
                    *latest.lock().unwrap_or_else(|e| e.into_inner()) = Some(CpuSample {
                        utilization: utilization.clamp(0.0, 1.0),
                        memory_total_bytes,
                        memory_used_bytes,
                    });
                }
            });
        if let Err(e) = spawned {
            tracing::error!("cannot start the CPU metrics sampler: {e}");
        }
        metrics
    }

    pub fn latest(&self) -> Option<CpuSample> {
        *self.latest.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A label value in the exposition format: backslash, double quote and newline escaped.
fn label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn micros(d: DurationSnapshot) -> u64 {
    d.ns / 1000
}

/// One model version's row: its label set, statistics and the version itself.
struct Row<'a> {
    labels: String,
    stats: StatsSnapshot,
    model: &'a ModelVersion,
}

/// Writes one metric family: HELP, TYPE, then a sample per row.
fn family<'a>(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    rows: impl Iterator<Item = &'a Row<'a>>,
    value: impl Fn(&Row) -> String,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for r in rows {
        let _ = writeln!(out, "{name}{{{}}} {}", r.labels, value(r));
    }
}

/// The `/metrics` page for the served `versions`.
pub(crate) fn render(
    versions: &[std::sync::Arc<ModelVersion>],
    options: &MetricsOptions,
    cpu: Option<CpuSample>,
) -> String {
    let rows: Vec<Row> = versions
        .iter()
        .map(|m| Row {
            labels: format!("model=\"{}\",version=\"{}\"", label(&m.name), m.version),
            stats: m.stats.snapshot(),
            model: m,
        })
        .collect();
    let mut out = String::with_capacity(4096 + rows.len() * 2048);
    let o = &mut out;
    family(
        o,
        "nv_inference_request_success",
        "counter",
        "Successful inference requests, all batch sizes",
        rows.iter(),
        |r| r.stats.success.count.to_string(),
    );
    let _ = writeln!(
        o,
        "# HELP nv_inference_request_failure Failed inference requests, all batch sizes, by reason"
    );
    let _ = writeln!(o, "# TYPE nv_inference_request_failure counter");
    for r in &rows {
        for reason in FailureReason::ALL {
            let _ = writeln!(
                o,
                // Labels in name order, as Triton (prometheus-cpp) writes them.
                "nv_inference_request_failure{{model=\"{}\",reason=\"{}\",version=\"{}\"}} {}",
                label(&r.model.name),
                reason.label(),
                r.model.version,
                r.stats.failures[reason as usize]
            );
        }
    }
    family(
        o,
        "nv_inference_count",
        "counter",
        "Inferences performed, a batch of n counting n (cache hits excluded)",
        rows.iter(),
        |r| r.stats.inference_count.to_string(),
    );
    family(
        o,
        "nv_inference_exec_count",
        "counter",
        "Model executions performed (cache hits excluded)",
        rows.iter(),
        |r| r.stats.execution_count.to_string(),
    );
    family(
        o,
        "nv_inference_pending_request_count",
        "gauge",
        "Requests accepted and waiting for an execution (queued or held by the batcher)",
        rows.iter(),
        |r| r.model.pending().to_string(),
    );
    if options.counter_latencies {
        let durations: [Family<DurationSnapshot>; 5] = [
            (
                "nv_inference_request_duration_us",
                "Cumulative end-to-end duration of successful requests in microseconds (cache hits included)",
                |s| s.success,
            ),
            (
                "nv_inference_queue_duration_us",
                "Cumulative queue duration in microseconds (cache hits included)",
                |s| s.queue,
            ),
            (
                "nv_inference_compute_input_duration_us",
                "Cumulative compute input duration in microseconds (cache hits excluded)",
                |s| s.compute_input,
            ),
            (
                "nv_inference_compute_infer_duration_us",
                "Cumulative compute infer duration in microseconds (cache hits excluded)",
                |s| s.compute_infer,
            ),
            (
                "nv_inference_compute_output_duration_us",
                "Cumulative compute output duration in microseconds (cache hits excluded)",
                |s| s.compute_output,
            ),
        ];
        for (name, help, stat) in durations {
            family(o, name, "counter", help, rows.iter(), |r| micros(stat(&r.stats)).to_string());
        }
    }
    if options.histograms {
        let name = "nv_inference_first_response_histogram_ms";
        let _ = writeln!(
            o,
            "# HELP {name} Duration from request to first response in milliseconds\n# TYPE {name} histogram"
        );
        for r in &rows {
            let Some(h) = &r.model.stats.first_response else { continue };
            let (buckets, sum, count) = h.snapshot();
            for (bound, n) in crate::stats::FIRST_RESPONSE_BUCKETS_MS.iter().zip(&buckets) {
                let _ = writeln!(o, "{name}_bucket{{{},le=\"{bound}\"}} {n}", r.labels);
            }
            let _ = writeln!(
                o,
                "{name}_bucket{{{},le=\"+Inf\"}} {count}\n{name}_sum{{{}}} {sum}\n{name}_count{{{}}} {count}",
                r.labels, r.labels, r.labels
            );
        }
    }
    if options.summaries.is_some() {
        let kinds: [Family<DurationSnapshot>; crate::stats::SUMMARY_KINDS] = [
            (
                "nv_inference_request_summary_us",
                "Summary of end-to-end durations of successful requests in microseconds",
                |s| s.success,
            ),
            ("nv_inference_queue_summary_us", "Summary of queue durations in microseconds", |s| {
                s.queue
            }),
            (
                "nv_inference_compute_input_summary_us",
                "Summary of compute input durations in microseconds",
                |s| s.compute_input,
            ),
            (
                "nv_inference_compute_infer_summary_us",
                "Summary of compute infer durations in microseconds",
                |s| s.compute_infer,
            ),
            (
                "nv_inference_compute_output_summary_us",
                "Summary of compute output durations in microseconds",
                |s| s.compute_output,
            ),
        ];
        for (kind, (name, help, total)) in kinds.into_iter().enumerate() {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} summary");
            for r in &rows {
                let Some(w) = &r.model.stats.summaries else { continue };
                for (q, v) in w.quantiles(kind) {
                    let value = v.map_or("NaN".to_string(), |v| v.to_string());
                    let _ = writeln!(o, "{name}{{{},quantile=\"{q}\"}} {value}", r.labels);
                }
                let t = total(&r.stats);
                let _ = writeln!(
                    o,
                    "{name}_sum{{{}}} {}\n{name}_count{{{}}} {}",
                    r.labels,
                    micros(t),
                    r.labels,
                    t.count
                );
            }
        }
    }
    family(
        o,
        "nv_model_load_duration_secs",
        "gauge",
        "Time the model version took to load, in seconds",
        rows.iter(),
        |r| r.model.load_duration.as_secs_f64().to_string(),
    );
    // Under a signature policy (Rampart's): whether each version loaded from verified bytes.
    let signed = || rows.iter().filter(|r| r.model.signature_verified.is_some());
    if signed().next().is_some() {
        family(
            o,
            "rampart_model_signature_verified",
            "gauge",
            "1 when the version loaded from bytes its model.sig verified, 0 when it loaded unverified (warn)",
            signed(),
            |r| u8::from(r.model.signature_verified == Some(true)).to_string(),
        );
    }
    // Sequence families (Rampart's) only for stateful versions.
    let stateful = || rows.iter().filter(|r| r.model.sequences.is_some());
    if stateful().next().is_some() {
        let held = |r: &Row| r.model.sequences.as_ref().map(|h| h.states.clone());
        family(
            o,
            "rampart_sequences_open",
            "gauge",
            "Open sequences (holding a batch slot or waiting for one)",
            stateful(),
            |r| r.model.open_sequences().to_string(),
        );
        family(
            o,
            "rampart_sequences_idle_released_total",
            "counter",
            "Sequences released because no request came for max_sequence_idle_microseconds",
            stateful(),
            |r| {
                held(r)
                    .map_or(0, |s| s.idle_released.load(std::sync::atomic::Ordering::Relaxed))
                    .to_string()
            },
        );
    }
    // Cache families only for versions that use the cache, as in Triton.
    let cached = || rows.iter().filter(|r| r.model.uses_cache());
    if cached().next().is_some() {
        let counts: [Family<u64>; 4] = [
            ("nv_cache_num_hits_per_model", "Response cache hits per model", |s| s.cache_hit.count),
            ("nv_cache_num_misses_per_model", "Response cache misses per model", |s| {
                s.cache_miss.count
            }),
            (
                "nv_cache_hit_duration_per_model",
                "Cumulative response cache hit (lookup) duration per model in microseconds",
                |s| micros(s.cache_hit),
            ),
            (
                "nv_cache_miss_duration_per_model",
                "Cumulative response cache miss (lookup and insert) duration per model in microseconds",
                |s| micros(s.cache_miss),
            ),
        ];
        for (name, help, value) in counts {
            family(o, name, "counter", help, cached(), |r| value(&r.stats).to_string());
        }
    }
    if let Some(cpu) = cpu {
        let gauges = [
            ("nv_cpu_utilization", "CPU utilization rate [0.0 - 1.0]", cpu.utilization.to_string()),
            (
                "nv_cpu_memory_total_bytes",
                "CPU total memory (RAM) in bytes",
                cpu.memory_total_bytes.to_string(),
            ),
            (
                "nv_cpu_memory_used_bytes",
                "CPU used memory (RAM) in bytes",
                cpu.memory_used_bytes.to_string(),
            ),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_parsing() {
        let stat = "cpu  100 5 50 800 20 0 5 0 0 0\ncpu0 1 2 3 4\n";
        assert_eq!(cpu_times(stat), Some((160, 980)));
        assert_eq!(cpu_times("intr 1 2"), None);
        let meminfo = "MemTotal:       1000 kB\nMemFree:         100 kB\nMemAvailable:    250 kB\n";
        assert_eq!(memory(meminfo), Some((1_024_000, 768_000)));
        assert_eq!(memory("MemTotal: 1 kB\n"), None);
        // The real files parse on this machine.
        assert!(cpu_times(&std::fs::read_to_string("/proc/stat").unwrap()).is_some());
        assert!(memory(&std::fs::read_to_string("/proc/meminfo").unwrap()).is_some());
    }

    #[test]
    fn label_escaping() {
        assert_eq!(label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(label("x\ny"), "x\\ny");
    }
}
