//! Per model-version statistics (docs/protocol.md, "Statistics"): counters updated lock-free on the
//! request path, read as a snapshot by the statistics API.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

#[derive(Default, Debug)]
pub struct DurationStat {
    count: AtomicU64,
    ns: AtomicU64,
}

impl DurationStat {
    pub fn record(&self, d: Duration) {
        self.count.fetch_add(1, Relaxed);
        self.ns.fetch_add(d.as_nanos().min(u64::MAX as u128) as u64, Relaxed);
    }
    pub fn snapshot(&self) -> DurationSnapshot {
        DurationSnapshot { count: self.count.load(Relaxed), ns: self.ns.load(Relaxed) }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DurationSnapshot {
    pub count: u64,
    pub ns: u64,
}

#[derive(Default, Debug)]
pub struct ModelStats {
    pub success: DurationStat,
    pub fail: DurationStat,
    pub queue: DurationStat,
    pub compute_input: DurationStat,
    pub compute_infer: DurationStat,
    pub compute_output: DurationStat,
    /// Response-cache lookups that answered, and lookups that missed (time to look up and store).
    pub cache_hit: DurationStat,
    pub cache_miss: DurationStat,
    /// Failed requests by reason (`FailureReason` order).
    failures: [AtomicU64; 4],
    inference_count: AtomicU64,
    execution_count: AtomicU64,
    /// Requests accepted and not yet taken by an execution (waiting in the queue or in a forming batch).
    pending: AtomicU64,
    /// Latency windows for summaries, when `--metrics-config summary_latencies=true`.
    pub summaries: Option<LatencyWindows>,
    /// First-response histogram, when `--metrics-config histogram_latencies=true`.
    pub first_response: Option<FirstResponseHistogram>,
    last_inference_ms: AtomicU64,
    batch: Mutex<BTreeMap<u64, [DurationSnapshot; 3]>>,
    /// A decoupled model's responses by index within their request (`None`: one response per request,
    /// reported as index 0 from the request counters).
    responses: Option<Mutex<BTreeMap<u64, ResponseStatsSnapshot>>>,
}

/// Response indexes counted one by one; later responses of a request are not counted (a client controls
/// how many responses a decoupled request makes).
pub const MAX_RESPONSE_INDEXES: u64 = 1024;

/// The statistics of the responses at one index (Triton's `InferResponseStatistics`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResponseStatsSnapshot {
    pub compute_infer: DurationSnapshot,
    pub compute_output: DurationSnapshot,
    pub success: DurationSnapshot,
    pub fail: DurationSnapshot,
    pub empty_response: DurationSnapshot,
    pub cancel: DurationSnapshot,
}

/// How one response of a decoupled request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseOutcome {
    Success,
    Fail,
    Cancel,
}

/// Why a request failed, as Triton's `nv_inference_request_failure{reason=…}` tells them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureReason {
    /// Refused by the scheduler: queue full, queue timeout, model unloading.
    Rejected,
    Canceled,
    /// The engine failed executing it.
    Backend,
    /// Anything else (invalid request, …).
    Other,
}

impl FailureReason {
    pub const ALL: [FailureReason; 4] = [
        FailureReason::Rejected,
        FailureReason::Canceled,
        FailureReason::Backend,
        FailureReason::Other,
    ];

    pub fn label(self) -> &'static str {
        match self {
            FailureReason::Rejected => "REJECTED",
            FailureReason::Canceled => "CANCELED",
            FailureReason::Backend => "BACKEND",
            FailureReason::Other => "OTHER",
        }
    }
}

/// One executed batch's timings.
#[derive(Debug, Clone, Copy)]
pub struct ExecutionTimes {
    pub batch_size: u64,
    pub queue: Duration,
    pub compute_input: Duration,
    pub compute_infer: Duration,
    pub compute_output: Duration,
}

/// One pending request of a model version; dropping it (execution started, or the request left the queue
/// unexecuted) takes it off the count.
pub struct Pending(std::sync::Arc<ModelStats>);

impl Pending {
    pub fn new(stats: std::sync::Arc<ModelStats>) -> Pending {
        stats.pending.fetch_add(1, Relaxed);
        Pending(stats)
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Relaxed);
    }
}

impl ModelStats {
    /// Statistics that also keep latency windows (summaries) and a first-response histogram.
    pub fn with_latency_metrics(
        summaries: Option<LatencyWindows>,
        first_response: Option<FirstResponseHistogram>,
    ) -> Self {
        ModelStats { summaries, first_response, ..Default::default() }
    }

    /// Counts responses one by one (a decoupled model) rather than one per request.
    pub fn with_response_stats(mut self) -> Self {
        self.responses = Some(Mutex::default());
        self
    }

    /// One response of a decoupled request: `index` within its request, the time the instance worked on it
    /// and the time it took to hand it over.
    pub fn record_response(
        &self,
        index: u64,
        outcome: ResponseOutcome,
        compute_infer: Duration,
        compute_output: Duration,
    ) {
        let Some(responses) = &self.responses else { return };
        if index >= MAX_RESPONSE_INDEXES {
            return;
        }
        let add = |d: &mut DurationSnapshot, t: Duration| {
            d.count += 1;
            d.ns = d.ns.saturating_add(t.as_nanos().min(u64::MAX as u128) as u64);
        };
        let mut map = responses.lock().unwrap_or_else(|p| p.into_inner());
        let r = map.entry(index).or_default();
        match outcome {
            ResponseOutcome::Success => {
                add(&mut r.compute_infer, compute_infer);
                add(&mut r.compute_output, compute_output);
                add(&mut r.success, compute_infer + compute_output);
            }
            ResponseOutcome::Fail => {
                add(&mut r.compute_infer, compute_infer);
                add(&mut r.fail, compute_infer);
            }
            ResponseOutcome::Cancel => add(&mut r.cancel, Duration::ZERO),
        }
    }

    /// Requests waiting for an execution.
    pub fn pending(&self) -> u64 {
        self.pending.load(Relaxed)
    }

    pub fn record_execution(&self, t: &ExecutionTimes) {
        self.record_batch(t, &[t.queue]);
    }

    /// One execution that served several requests (dynamic batching): as in Triton, each request counts
    /// its own queue time and the whole execution's compute times; the batch counts once, by its total size.
    pub fn record_batch(&self, t: &ExecutionTimes, queues: &[Duration]) {
        self.record_padded_batch(t, queues, t.batch_size);
    }

    /// [`ModelStats::record_batch`] of an execution with `rows` rows of which `t.batch_size` were requests
    /// (a sequence batch's null rows): the batch statistics count the rows, the inference count the
    /// requests, as in Triton.
    pub fn record_padded_batch(&self, t: &ExecutionTimes, queues: &[Duration], rows: u64) {
        for &q in queues {
            self.queue.record(q);
            self.compute_input.record(t.compute_input);
            self.compute_infer.record(t.compute_infer);
            self.compute_output.record(t.compute_output);
            if let Some(w) = &self.summaries {
                for (kind, d) in
                    [(1, q), (2, t.compute_input), (3, t.compute_infer), (4, t.compute_output)]
                {
                    w.record(kind, d);
                }
            }
        }
        self.inference_count.fetch_add(t.batch_size, Relaxed);
        self.execution_count.fetch_add(1, Relaxed);
        let mut b = self.batch.lock().unwrap_or_else(|p| p.into_inner());
        let e = b.entry(rows).or_default();
        for (slot, d) in e.iter_mut().zip([t.compute_input, t.compute_infer, t.compute_output]) {
            slot.count += 1;
            slot.ns = slot.ns.saturating_add(d.as_nanos() as u64);
        }
    }

    pub fn record_request(&self, outcome: Result<(), FailureReason>, total: Duration) {
        match outcome {
            Ok(()) => {
                self.success.record(total);
                if let Some(w) = &self.summaries {
                    w.record(0, total);
                }
                if let Some(h) = &self.first_response {
                    h.record(total);
                }
            }
            Err(reason) => {
                self.fail.record(total);
                self.failures[reason as usize].fetch_add(1, Relaxed);
                // As in Triton, `last_inference` moves only when an inference succeeds.
                return;
            }
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        self.last_inference_ms.store(now, Relaxed);
    }

    /// Back to zero (after a model's warmup).
    pub(crate) fn reset(&self) {
        for d in [
            &self.success,
            &self.fail,
            &self.queue,
            &self.compute_input,
            &self.compute_infer,
            &self.compute_output,
            &self.cache_hit,
            &self.cache_miss,
        ] {
            d.count.store(0, Relaxed);
            d.ns.store(0, Relaxed);
        }
        for c in self.failures.iter().chain([
            &self.inference_count,
            &self.execution_count,
            &self.last_inference_ms,
        ]) {
            c.store(0, Relaxed);
        }
        self.batch.lock().unwrap_or_else(|p| p.into_inner()).clear();
        if let Some(w) = &self.summaries {
            for win in &w.windows {
                win.lock().unwrap_or_else(|p| p.into_inner()).clear();
            }
        }
        if let Some(h) = &self.first_response {
            for c in h.buckets.iter().chain([&h.sum_us, &h.count]) {
                c.store(0, Relaxed);
            }
        }
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            last_inference_ms: self.last_inference_ms.load(Relaxed),
            inference_count: self.inference_count.load(Relaxed),
            execution_count: self.execution_count.load(Relaxed),
            success: self.success.snapshot(),
            fail: self.fail.snapshot(),
            failures: std::array::from_fn(|i| self.failures[i].load(Relaxed)),
            queue: self.queue.snapshot(),
            compute_input: self.compute_input.snapshot(),
            compute_infer: self.compute_infer.snapshot(),
            compute_output: self.compute_output.snapshot(),
            cache_hit: self.cache_hit.snapshot(),
            cache_miss: self.cache_miss.snapshot(),
            batch: self.batch.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            responses: self.response_snapshot(),
        }
    }

    /// Per-index response statistics. A model with one response per request reports index 0 from its
    /// request counters, once it has answered anything.
    fn response_snapshot(&self) -> BTreeMap<u64, ResponseStatsSnapshot> {
        if let Some(responses) = &self.responses {
            return responses.lock().unwrap_or_else(|p| p.into_inner()).clone();
        }
        let (success, fail) = (self.success.snapshot(), self.fail.snapshot());
        if success.count + fail.count == 0 {
            return BTreeMap::new();
        }
        let only = ResponseStatsSnapshot {
            compute_infer: self.compute_infer.snapshot(),
            compute_output: self.compute_output.snapshot(),
            success,
            fail,
            ..Default::default()
        };
        BTreeMap::from([(0, only)])
    }
}

#[derive(Debug, Clone, Default)]
pub struct StatsSnapshot {
    pub last_inference_ms: u64,
    pub inference_count: u64,
    pub execution_count: u64,
    pub success: DurationSnapshot,
    pub fail: DurationSnapshot,
    /// Failed requests by `FailureReason` (in `FailureReason::ALL` order).
    pub failures: [u64; 4],
    pub queue: DurationSnapshot,
    pub compute_input: DurationSnapshot,
    pub compute_infer: DurationSnapshot,
    pub compute_output: DurationSnapshot,
    pub cache_hit: DurationSnapshot,
    pub cache_miss: DurationSnapshot,
    /// batch size → [compute_input, compute_infer, compute_output]
    pub batch: BTreeMap<u64, [DurationSnapshot; 3]>,
    /// Response index → its statistics (Triton's `response_stats`).
    pub responses: BTreeMap<u64, ResponseStatsSnapshot>,
}

/// Statistics of one model version, as the statistics API reports them.
#[derive(Debug, Clone)]
pub struct VersionStats {
    pub name: String,
    pub version: String,
    pub stats: StatsSnapshot,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up() {
        let s = ModelStats::default();
        let t = ExecutionTimes {
            batch_size: 3,
            queue: Duration::from_micros(5),
            compute_input: Duration::from_micros(1),
            compute_infer: Duration::from_micros(2),
            compute_output: Duration::from_micros(3),
        };
        s.record_execution(&t);
        s.record_execution(&t);
        s.record_request(Ok(()), Duration::from_micros(10));
        s.record_request(Err(FailureReason::Backend), Duration::from_micros(10));
        let snap = s.snapshot();
        assert_eq!(snap.inference_count, 6);
        assert_eq!(snap.execution_count, 2);
        assert_eq!(snap.success, DurationSnapshot { count: 1, ns: 10_000 });
        assert_eq!(snap.fail.count, 1);
        assert_eq!(snap.failures, [0, 0, 1, 0]);
        assert_eq!(snap.batch[&3][1], DurationSnapshot { count: 2, ns: 4_000 });
        assert!(snap.last_inference_ms > 0);
    }
}

/// `--metrics-config summary_latencies=true`: recent latencies kept per metric for quantiles over a sliding
/// window (`summary_max_age`), bounded in samples.
#[derive(Debug, Clone, PartialEq)]
pub struct SummaryConfig {
    /// (quantile, allowed error) pairs, as Triton's `summary_quantiles`.
    pub quantiles: Vec<(f64, f64)>,
    pub max_age: Duration,
}

impl Default for SummaryConfig {
    fn default() -> Self {
        SummaryConfig {
            quantiles: vec![
                (0.5, 0.05),
                (0.9, 0.01),
                (0.95, 0.001),
                (0.99, 0.001),
                (0.999, 0.0001),
            ],
            max_age: Duration::from_secs(60),
        }
    }
}

/// Most samples a summary window holds (the oldest go first).
pub const MAX_SUMMARY_SAMPLES: usize = 4096;

/// Which latency a window tracks: request, queue, compute input / infer / output.
pub const SUMMARY_KINDS: usize = 5;

#[derive(Debug)]
pub struct LatencyWindows {
    config: SummaryConfig,
    windows: [Mutex<std::collections::VecDeque<(std::time::Instant, u64)>>; SUMMARY_KINDS],
}

impl LatencyWindows {
    pub fn new(config: SummaryConfig) -> Self {
        LatencyWindows { config, windows: Default::default() }
    }

    fn record(&self, kind: usize, d: Duration) {
        let now = std::time::Instant::now();
        let mut w = self.windows[kind].lock().unwrap_or_else(|p| p.into_inner());
        while w.front().is_some_and(|(t, _)| now.duration_since(*t) > self.config.max_age)
            || w.len() >= MAX_SUMMARY_SAMPLES
        {
            w.pop_front();
        }
        w.push_back((now, d.as_micros().min(u64::MAX as u128) as u64));
    }

    /// Quantiles (µs) of the window of `kind`, in `config.quantiles` order; `None` while it is empty.
    pub fn quantiles(&self, kind: usize) -> Vec<(f64, Option<u64>)> {
        let now = std::time::Instant::now();
        let mut values: Vec<u64> = {
            let w = self.windows[kind].lock().unwrap_or_else(|p| p.into_inner());
            w.iter()
                .filter(|(t, _)| now.duration_since(*t) <= self.config.max_age)
                .map(|(_, v)| *v)
                .collect()
        };
        values.sort_unstable();
        self.config
            .quantiles
            .iter()
            .map(|&(q, _)| {
                let v = (!values.is_empty()).then(|| {
                    values[((q * values.len() as f64).ceil() as usize).clamp(1, values.len()) - 1]
                });
                (q, v)
            })
            .collect()
    }
}

/// Bucket bounds (ms) of `nv_inference_first_response_histogram_ms`.
pub const FIRST_RESPONSE_BUCKETS_MS: [f64; 4] = [100.0, 500.0, 2000.0, 5000.0];

/// `--metrics-config histogram_latencies=true`: first-response latency counts per bucket, sum and count.
#[derive(Debug, Default)]
pub struct FirstResponseHistogram {
    buckets: [AtomicU64; FIRST_RESPONSE_BUCKETS_MS.len()],
    sum_us: AtomicU64,
    count: AtomicU64,
}

impl FirstResponseHistogram {
    fn record(&self, d: Duration) {
        let ms = d.as_secs_f64() * 1000.0;
        for (b, bound) in self.buckets.iter().zip(FIRST_RESPONSE_BUCKETS_MS) {
            if ms <= bound {
                b.fetch_add(1, Relaxed);
            }
        }
        self.sum_us.fetch_add(d.as_micros().min(u64::MAX as u128) as u64, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    /// Cumulative bucket counts, sum (ms) and count.
    pub fn snapshot(&self) -> (Vec<u64>, f64, u64) {
        (
            self.buckets.iter().map(|b| b.load(Relaxed)).collect(),
            self.sum_us.load(Relaxed) as f64 / 1000.0,
            self.count.load(Relaxed),
        )
    }
}
