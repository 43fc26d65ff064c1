//! Prometheus metrics (spec §6) in the text exposition format, with Triton's metric names, types and labels.
//!
//! Rendered by hand from the statistics snapshots rather than through a metrics registry: Triton's counters
//! have no `_total` suffix, which OpenMetrics encoders (prometheus-client) add, and dashboards written for
//! Triton query the bare names.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::server::Server;
use crate::stats::{DurationSnapshot, FailureReason};

/// What `/metrics` reports (`--metrics-config`, `--allow-cpu-metrics`).
#[derive(Debug, Clone)]
pub struct MetricsOptions {
    /// `counter_latencies` (default true): the cumulative `*_duration_us` counters.
    pub counter_latencies: bool,
}

impl Default for MetricsOptions {
    fn default() -> Self {
        MetricsOptions { counter_latencies: true }
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
        meminfo.lines().find_map(|l| l.strip_prefix(name)?.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
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
        let spawned = std::thread::Builder::new().name("rampart-cpu-metrics".into()).spawn(move || {
            let mut last = std::fs::read_to_string("/proc/stat").ok().as_deref().and_then(cpu_times);
            loop {
                std::thread::sleep(interval);
                let Some(latest) = latest.upgrade() else { return };
                let now = std::fs::read_to_string("/proc/stat").ok().as_deref().and_then(cpu_times);
                let mem = std::fs::read_to_string("/proc/meminfo").ok().as_deref().and_then(memory);
                let utilization = match (last, now) {
                    (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => (b1.saturating_sub(b0)) as f64 / (t1 - t0) as f64,
                    _ => 0.0,
                };
                last = now;
                let (memory_total_bytes, memory_used_bytes) = mem.unwrap_or_default();
                *latest.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(CpuSample { utilization: utilization.clamp(0.0, 1.0), memory_total_bytes, memory_used_bytes });
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

struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    fn header(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }
}

fn micros(d: DurationSnapshot) -> u64 {
    d.ns / 1000
}

impl Server {
    /// The `/metrics` page.
    pub fn metrics(&self, options: &MetricsOptions, cpu: Option<CpuSample>) -> String {
        let versions = self.served_versions();
        let mut out = String::with_capacity(4096 + versions.len() * 2048);
        let rows: Vec<(String, crate::stats::StatsSnapshot, &crate::model::ModelVersion)> = versions
            .iter()
            .map(|m| (format!("model=\"{}\",version=\"{}\"", label(&m.name), m.version), m.stats.snapshot(), &**m))
            .collect();
        let mut f = Family { out: &mut out };
        type Value = fn(&crate::stats::StatsSnapshot, &crate::model::ModelVersion) -> String;
        let per_model = |f: &mut Family, name: &str, kind: &str, help: &str, value: Value| {
            f.header(name, kind, help);
            for (labels, snap, m) in &rows {
                let _ = writeln!(f.out, "{name}{{{labels}}} {}", value(snap, m));
            }
        };
        per_model(&mut f, "nv_inference_request_success", "counter", "Successful inference requests, all batch sizes", |s, _| {
            s.success.count.to_string()
        });
        f.header("nv_inference_request_failure", "counter", "Failed inference requests, all batch sizes, by reason");
        for (labels, snap, _) in &rows {
            for reason in FailureReason::ALL {
                let _ = writeln!(
                    f.out,
                    "nv_inference_request_failure{{{labels},reason=\"{}\"}} {}",
                    reason.label(),
                    snap.failures[reason as usize]
                );
            }
        }
        per_model(&mut f, "nv_inference_count", "counter", "Inferences performed, a batch of n counting n (cache hits excluded)", |s, _| {
            s.inference_count.to_string()
        });
        per_model(&mut f, "nv_inference_exec_count", "counter", "Model executions performed (cache hits excluded)", |s, _| {
            s.execution_count.to_string()
        });
        per_model(&mut f, "nv_inference_pending_request_count", "gauge", "Requests waiting for a model instance", |_, m| {
            m.pending().to_string()
        });
        if options.counter_latencies {
            per_model(&mut f, "nv_inference_request_duration_us", "counter", "Cumulative end-to-end duration of successful requests in microseconds (cache hits included)", |s, _| {
                micros(s.success).to_string()
            });
            per_model(&mut f, "nv_inference_queue_duration_us", "counter", "Cumulative queue duration in microseconds (cache hits included)", |s, _| {
                micros(s.queue).to_string()
            });
            per_model(&mut f, "nv_inference_compute_input_duration_us", "counter", "Cumulative compute input duration in microseconds (cache hits excluded)", |s, _| {
                micros(s.compute_input).to_string()
            });
            per_model(&mut f, "nv_inference_compute_infer_duration_us", "counter", "Cumulative compute infer duration in microseconds (cache hits excluded)", |s, _| {
                micros(s.compute_infer).to_string()
            });
            per_model(&mut f, "nv_inference_compute_output_duration_us", "counter", "Cumulative compute output duration in microseconds (cache hits excluded)", |s, _| {
                micros(s.compute_output).to_string()
            });
        }
        per_model(&mut f, "nv_model_load_duration_secs", "gauge", "Time the model version took to load, in seconds", |_, m| {
            format!("{}", m.load_duration.as_secs_f64())
        });
        if self.has_response_cache() {
            per_model(&mut f, "nv_cache_num_hits_per_model", "counter", "Response cache hits per model", |s, _| s.cache_hit.count.to_string());
            per_model(&mut f, "nv_cache_num_misses_per_model", "counter", "Response cache misses per model", |s, _| {
                s.cache_miss.count.to_string()
            });
            per_model(&mut f, "nv_cache_hit_duration_per_model", "counter", "Cumulative response cache hit (lookup) duration per model in microseconds", |s, _| {
                micros(s.cache_hit).to_string()
            });
            per_model(&mut f, "nv_cache_miss_duration_per_model", "counter", "Cumulative response cache miss (lookup and insert) duration per model in microseconds", |s, _| {
                micros(s.cache_miss).to_string()
            });
        }
        if let Some(cpu) = cpu {
            f.header("nv_cpu_utilization", "gauge", "CPU utilization rate [0.0 - 1.0]");
            let _ = writeln!(f.out, "nv_cpu_utilization {}", cpu.utilization);
            f.header("nv_cpu_memory_total_bytes", "gauge", "CPU total memory (RAM) in bytes");
            let _ = writeln!(f.out, "nv_cpu_memory_total_bytes {}", cpu.memory_total_bytes);
            f.header("nv_cpu_memory_used_bytes", "gauge", "CPU used memory (RAM) in bytes");
            let _ = writeln!(f.out, "nv_cpu_memory_used_bytes {}", cpu.memory_used_bytes);
        }
        out
    }
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
