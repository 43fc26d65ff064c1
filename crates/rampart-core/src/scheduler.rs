//! The scheduler: one bounded queue per model version, drained by one dedicated OS thread per model
//! instance. Engines never run on the async runtime's workers.
//!
//! Without `dynamic_batching` each request executes alone. With it (spec §5.2), an instance thread that takes
//! a request gathers compatible requests behind it — same inputs, datatypes and non-batch dims, same
//! outputs — until the batch reaches `max_batch_size` or a `preferred_batch_size`, or the first request has
//! waited `max_queue_delay_microseconds`; inputs are concatenated along the batch dimension, executed once,
//! and every output is split back by rows (zero-copy slices of the engine's output). Requests stay in FIFO
//! order; one that does not fit waits at the head of the next batch.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use crossbeam_channel::{Sender, TrySendError};
use rampart_types::{EngineInstance, Error, Result, Tensor};
use tokio::sync::oneshot;

use crate::priority_queue::{Pop, PriorityQueue, PushError};
use crate::stats::{ExecutionTimes, ModelStats};

pub(crate) struct Job {
    pub inputs: Vec<Tensor>,
    pub outputs: Vec<String>,
    pub batch_size: u64,
    pub enqueued: Instant,
    /// Priority level, 0-based (level 1 of the config is 0); see [`BatchPolicy::level`].
    pub level: usize,
    /// The request's queue timeout: still waiting at this instant, it is answered "Request timeout expired"
    /// (queue policy `REJECT`), or moved behind the requests of its level that have not timed out (`DELAY`).
    pub deadline: Option<Instant>,
    /// `DELAY` rather than `REJECT` when `deadline` passes.
    pub delay_on_timeout: bool,
    pub reply: oneshot::Sender<Result<Vec<Tensor>>>,
    /// Stamped with the compute timestamps when the request is traced.
    pub trace: Option<std::sync::Arc<crate::trace::Trace>>,
    /// Counts the request as pending until an execution takes it (or it is dropped unexecuted).
    pub pending: Option<crate::stats::Pending>,
}

/// Stamps Triton's four compute timestamps on every traced job of an execution.
fn stamp_compute(jobs: &[Job], start: Instant, input_end: Instant, output_start: Instant) {
    let end = Instant::now();
    for t in jobs.iter().filter_map(|j| j.trace.as_ref()) {
        t.stamp_at("COMPUTE_START", start);
        t.stamp_at("COMPUTE_INPUT_END", input_end);
        t.stamp_at("COMPUTE_OUTPUT_START", output_start);
        t.stamp_at("COMPUTE_END", end);
    }
}

pub(crate) struct InstancePool {
    queue: Queue,
    threads: Vec<JoinHandle<()>>,
    label: String,
    capacity: usize,
    policy: Option<BatchPolicy>,
}

/// Without dynamic batching requests wait in one lock-free FIFO; with it, in per-priority FIFOs.
enum Queue {
    Fifo(Option<Sender<Job>>),
    Priority(Arc<PriorityQueue>),
}

/// Default for requests waiting per model version before new ones are answered UNAVAILABLE
/// (`--max-queued-requests`).
pub const DEFAULT_QUEUE_CAPACITY: usize = 4096;

/// One priority level's queue policy (`default_queue_policy`, or its `priority_queue_policy` entry).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct QueuePolicy {
    /// The timeout every request gets (`None`: no timeout).
    pub timeout: Option<Duration>,
    /// Whether a request's `timeout` parameter may shorten it.
    pub allow_timeout_override: bool,
    /// An expired request is rejected (REJECT) rather than still run (DELAY).
    pub reject_on_timeout: bool,
    /// Requests that may wait in this level (0: no limit beyond `--max-queued-requests`).
    pub max_queue_size: usize,
}

impl QueuePolicy {
    /// The queue deadline of a request that arrives at `now` with an optional `timeout` parameter (µs): the
    /// level's default, or the request's own when the policy allows overrides and it is shorter.
    pub fn deadline(&self, now: Instant, requested_us: Option<u64>) -> Option<Instant> {
        let requested = requested_us
            .filter(|&us| us > 0 && self.allow_timeout_override)
            .map(Duration::from_micros);
        let timeout = match (self.timeout, requested) {
            (Some(d), Some(r)) => Some(d.min(r)),
            (d, r) => d.or(r),
        };
        timeout.and_then(|t| now.checked_add(t))
    }
}

/// A model's `dynamic_batching` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BatchPolicy {
    /// The model's `max_batch_size` (> 0).
    pub max_batch_size: u64,
    /// `preferred_batch_size`, ascending; empty: prefer `max_batch_size`.
    pub preferred: Vec<u64>,
    pub max_delay: Duration,
    /// The queue policy of each priority level (one entry when `priority_levels` is 0).
    pub levels: Vec<QueuePolicy>,
    /// The level (0-based) of requests without a `priority` or with one outside 1..=levels.
    pub default_level: usize,
}

impl BatchPolicy {
    /// The 0-based level of a request's `priority` parameter: 1 is the highest; 0, none or a value above
    /// `priority_levels` mean the default level (Triton's rule).
    pub fn level(&self, priority: Option<u64>) -> usize {
        match priority {
            Some(p) if p >= 1 && p <= self.levels.len() as u64 => (p - 1) as usize,
            _ => self.default_level,
        }
    }

    fn done(&self, size: u64) -> bool {
        size >= self.max_batch_size || self.preferred.contains(&size)
    }
}

impl InstancePool {
    /// Starts one thread per instance; at most `capacity` requests wait (requests being executed do not count).
    pub fn start(
        label: String,
        instances: Vec<Box<dyn EngineInstance>>,
        stats: Arc<ModelStats>,
        capacity: usize,
        batching: Option<BatchPolicy>,
    ) -> Result<Self> {
        let capacity = capacity.max(1);
        let mut threads = Vec::with_capacity(instances.len());
        let queue = match &batching {
            None => {
                let (tx, rx) = crossbeam_channel::bounded::<Job>(capacity);
                for (i, mut instance) in instances.into_iter().enumerate() {
                    let (rx, stats) = (rx.clone(), stats.clone());
                    threads.push(spawn(&label, i, move || {
                        while let Ok(job) = rx.recv() {
                            run_job(instance.as_mut(), job, &stats);
                        }
                    })?);
                }
                Queue::Fifo(Some(tx))
            }
            Some(policy) => {
                let queue = Arc::new(PriorityQueue::new(
                    policy.levels.iter().map(|l| l.max_queue_size).collect(),
                    capacity,
                ));
                for (i, mut instance) in instances.into_iter().enumerate() {
                    let (queue, stats, policy) = (queue.clone(), stats.clone(), policy.clone());
                    threads.push(spawn(&label, i, move || {
                        run_batches(instance.as_mut(), &queue, &policy, &stats)
                    })?);
                }
                Queue::Priority(queue)
            }
        };
        Ok(InstancePool { queue, threads, label, capacity, policy: batching })
    }

    /// The level, queue deadline and timeout action (`true`: DELAY) of a request arriving now with the
    /// `priority` and `timeout` parameters.
    pub fn schedule(
        &self,
        priority: Option<u64>,
        timeout_us: Option<u64>,
    ) -> (usize, Option<Instant>, bool) {
        match &self.policy {
            None => (0, None, false),
            Some(p) => {
                let level = p.level(priority);
                let policy = &p.levels[level];
                (level, policy.deadline(Instant::now(), timeout_us), !policy.reject_on_timeout)
            }
        }
    }

    pub fn submit(&self, job: Job) -> Result<()> {
        let full = || {
            Error::unavailable(format!(
                "inference queue of {} is full ({} requests waiting; --max-queued-requests)",
                self.label, self.capacity
            ))
        };
        let unloading = || Error::unavailable(format!("{} is unloading", self.label));
        match &self.queue {
            Queue::Fifo(tx) => {
                tx.as_ref().ok_or_else(unloading)?.try_send(job).map_err(|e| match e {
                    TrySendError::Full(_) => full(),
                    TrySendError::Disconnected(_) => unloading(),
                })
            }
            Queue::Priority(q) => q.push(job).map_err(|e| match e {
                PushError::LevelFull => Error::unavailable("Exceeds maximum queue size"),
                PushError::Full => full(),
                PushError::Closed => unloading(),
            }),
        }
    }
}

fn spawn(label: &str, i: usize, body: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("rampart-{label}-{i}"))
        .spawn(body)
        .map_err(|e| Error::internal(format!("cannot start instance thread for {label}: {e}")))
}

fn run_job(instance: &mut dyn EngineInstance, mut job: Job, stats: &ModelStats) {
    job.pending.take();
    if job.reply.is_closed() {
        return; // the client went away while the request waited
    }
    let start = Instant::now();
    let queue = start.duration_since(job.enqueued);
    let result =
        std::panic::catch_unwind(AssertUnwindSafe(|| instance.execute(&job.inputs, &job.outputs)))
            .unwrap_or_else(|panic| Err(panic_error(panic)));
    if job.trace.is_some() {
        let done = Instant::now();
        stamp_compute(std::slice::from_ref(&job), start, start, done);
    }
    if result.is_ok() {
        stats.record_execution(&ExecutionTimes {
            batch_size: job.batch_size,
            queue,
            compute_input: Duration::ZERO,
            compute_infer: start.elapsed(),
            compute_output: Duration::ZERO,
        });
    }
    let _ = job.reply.send(result);
}

/// The dynamic batcher of one instance thread: runs until the queue is closed and drained.
fn run_batches(
    instance: &mut dyn EngineInstance,
    queue: &PriorityQueue,
    policy: &BatchPolicy,
    stats: &ModelStats,
) {
    loop {
        let first = match queue.pop(None, |_| true) {
            Pop::Job(job) => job,
            Pop::Closed => return,
            Pop::Blocked | Pop::TimedOut => continue,
        };
        if first.batch_size == 0 || first.batch_size >= policy.max_batch_size {
            run_job(instance, first, stats);
            continue;
        }
        let deadline = first.enqueued + policy.max_delay;
        let mut size = first.batch_size;
        let mut batch = vec![first];
        while !policy.done(size) {
            let fits = |next: &Job| {
                size + next.batch_size <= policy.max_batch_size && compatible(&batch[0], next)
            };
            match queue.pop(Some(deadline), fits) {
                Pop::Job(next) => {
                    size += next.batch_size;
                    batch.push(next);
                }
                Pop::Blocked | Pop::TimedOut | Pop::Closed => break,
            }
        }
        if batch.len() == 1 {
            run_job(instance, batch.pop().expect("one job"), stats);
        } else {
            run_batch(instance, batch, size, stats);
        }
    }
}

/// Requests that can execute together: the same inputs in the same order with the same datatypes and
/// non-batch dims, and the same requested outputs.
fn compatible(a: &Job, b: &Job) -> bool {
    b.batch_size > 0
        && a.outputs == b.outputs
        && a.inputs.len() == b.inputs.len()
        && a.inputs.iter().zip(&b.inputs).all(|(x, y)| {
            x.name == y.name
                && x.datatype == y.datatype
                && x.shape.len() == y.shape.len()
                && x.shape.get(1..) == y.shape.get(1..)
        })
}

/// Executes compatible jobs as one batch of `size` rows and answers each with its rows.
fn run_batch(instance: &mut dyn EngineInstance, mut jobs: Vec<Job>, size: u64, stats: &ModelStats) {
    for j in &mut jobs {
        j.pending.take();
    }
    let start = Instant::now();
    let queues: Vec<Duration> = jobs.iter().map(|j| start.duration_since(j.enqueued)).collect();
    let inputs: Vec<Tensor> = (0..jobs[0].inputs.len())
        .map(|i| {
            let first = &jobs[0].inputs[i];
            let mut data =
                BytesMut::with_capacity(jobs.iter().map(|j| j.inputs[i].data.len()).sum());
            for j in &jobs {
                data.extend_from_slice(&j.inputs[i].data);
            }
            let mut shape = first.shape.clone();
            shape[0] = size as i64;
            Tensor::new(first.name.clone(), first.datatype, shape, data.freeze())
        })
        .collect();
    let gathered = start.elapsed();
    let result =
        std::panic::catch_unwind(AssertUnwindSafe(|| instance.execute(&inputs, &jobs[0].outputs)))
            .unwrap_or_else(|panic| Err(panic_error(panic)));
    let computed = start.elapsed();
    drop(inputs);
    if jobs.iter().any(|j| j.trace.is_some()) {
        stamp_compute(&jobs, start, start + gathered, start + computed);
    }
    let rows: Vec<u64> = jobs.iter().map(|j| j.batch_size).collect();
    match result.and_then(|outputs| scatter(outputs, &rows)) {
        Ok(per_job) => {
            stats.record_batch(
                &ExecutionTimes {
                    batch_size: size,
                    queue: Duration::ZERO,
                    compute_input: gathered,
                    compute_infer: computed - gathered,
                    compute_output: start.elapsed() - computed,
                },
                &queues,
            );
            for (job, outputs) in jobs.into_iter().zip(per_job) {
                let _ = job.reply.send(Ok(outputs));
            }
        }
        Err(e) => {
            for job in jobs {
                let _ = job.reply.send(Err(e.clone()));
            }
        }
    }
}

/// Splits each output of a batch by rows: `rows[k]` rows for job `k`, in order.
fn scatter(outputs: Vec<Tensor>, rows: &[u64]) -> Result<Vec<Vec<Tensor>>> {
    let total: u64 = rows.iter().sum();
    let mut per_job: Vec<Vec<Tensor>> =
        rows.iter().map(|_| Vec::with_capacity(outputs.len())).collect();
    for out in outputs {
        if out.shape.first().copied() != Some(total as i64) {
            return Err(Error::internal(format!(
                "output '{}' of a batch of {total} has shape {:?}: its first dimension must be the batch",
                out.name, out.shape
            )));
        }
        let offsets = row_offsets(&out, total)?;
        let mut row = 0usize;
        for (k, &n) in rows.iter().enumerate() {
            let (from, to) = (offsets[row], offsets[row + n as usize]);
            let mut shape = out.shape.clone();
            shape[0] = n as i64;
            per_job[k].push(Tensor::new(
                out.name.clone(),
                out.datatype,
                shape,
                out.data.slice(from..to),
            ));
            row += n as usize;
        }
    }
    Ok(per_job)
}

/// Byte offset of each row boundary (`total + 1` entries) of a tensor in wire layout.
fn row_offsets(t: &Tensor, total: u64) -> Result<Vec<usize>> {
    let bad = || Error::internal(format!("output '{}' does not hold {total} rows", t.name));
    let per_row: u64 = t.shape[1..].iter().map(|&d| d.max(0) as u64).product();
    match t.datatype.element_size() {
        Some(size) => {
            let row_bytes = (per_row as usize).checked_mul(size).ok_or_else(bad)?;
            if row_bytes.checked_mul(total as usize) != Some(t.data.len()) {
                return Err(bad());
            }
            Ok((0..=total as usize).map(|r| r * row_bytes).collect())
        }
        None => {
            // BYTES: walk the length prefixes, noting where each row of `per_row` elements ends.
            let data: &Bytes = &t.data;
            let mut offsets = Vec::with_capacity(total as usize + 1);
            offsets.push(0);
            let mut at = 0usize;
            for _ in 0..total {
                for _ in 0..per_row {
                    let len = data.get(at..at + 4).ok_or_else(bad)?;
                    let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
                    at = at.checked_add(4 + len).filter(|&e| e <= data.len()).ok_or_else(bad)?;
                }
                offsets.push(at);
            }
            if at != data.len() {
                return Err(bad());
            }
            Ok(offsets)
        }
    }
}

fn panic_error(panic: Box<dyn std::any::Any + Send>) -> Error {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    Error::internal(format!("engine panicked: {what}"))
}

impl Drop for InstancePool {
    fn drop(&mut self) {
        match &mut self.queue {
            Queue::Fifo(tx) => drop(tx.take()),
            Queue::Priority(q) => q.close(),
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rampart_types::{Code, ModelSignature};

    /// A fake engine that blocks each execution until the test lets it go (scheduler unit test only).
    struct Gate {
        started: crossbeam_channel::Sender<()>,
        release: crossbeam_channel::Receiver<()>,
        sig: ModelSignature,
    }

    impl EngineInstance for Gate {
        fn signature(&self) -> &ModelSignature {
            &self.sig
        }
        fn execute(&mut self, _: &[Tensor], _: &[String]) -> Result<Vec<Tensor>> {
            self.started.send(()).unwrap();
            self.release.recv().unwrap();
            Ok(vec![])
        }
    }

    fn job() -> (Job, oneshot::Receiver<Result<Vec<Tensor>>>) {
        let (tx, rx) = oneshot::channel();
        (
            Job {
                inputs: vec![],
                outputs: vec![],
                batch_size: 1,
                enqueued: Instant::now(),
                level: 0,
                deadline: None,
                delay_on_timeout: false,
                reply: tx,
                trace: None,
                pending: None,
            },
            rx,
        )
    }

    #[test]
    fn full_queue_is_unavailable_and_every_accepted_job_is_answered() {
        let (started_tx, started) = crossbeam_channel::unbounded();
        let (release, release_rx) = crossbeam_channel::unbounded();
        let gate =
            Gate { started: started_tx, release: release_rx, sig: ModelSignature::default() };
        let pool = InstancePool::start(
            "m-1".into(),
            vec![Box::new(gate)],
            Arc::new(ModelStats::default()),
            2,
            None,
        )
        .unwrap();
        let (a, ra) = job();
        pool.submit(a).unwrap();
        started.recv().unwrap(); // A is executing: it no longer counts against the queue
        let (b, rb) = job();
        let (c, rc) = job();
        pool.submit(b).unwrap();
        pool.submit(c).unwrap();
        let (d, _rd) = job();
        let e = pool.submit(d).unwrap_err();
        assert_eq!(e.code(), Code::Unavailable);
        assert!(e.message().contains("2 requests waiting"), "{e}");
        for _ in 0..3 {
            release.send(()).unwrap();
        }
        for r in [ra, rb, rc] {
            assert!(r.blocking_recv().unwrap().is_ok());
        }
    }

    /// Identity engine that records the batch sizes it executed (scheduler unit tests only).
    struct Echo {
        sizes: Arc<std::sync::Mutex<Vec<i64>>>,
        sig: ModelSignature,
    }

    impl EngineInstance for Echo {
        fn signature(&self) -> &ModelSignature {
            &self.sig
        }
        fn execute(&mut self, inputs: &[Tensor], outputs: &[String]) -> Result<Vec<Tensor>> {
            self.sizes.lock().unwrap().push(inputs[0].shape[0]);
            std::thread::sleep(Duration::from_millis(1));
            Ok(outputs
                .iter()
                .map(|o| {
                    Tensor::new(
                        o.clone(),
                        inputs[0].datatype,
                        inputs[0].shape.clone(),
                        inputs[0].data.clone(),
                    )
                })
                .collect())
        }
    }

    fn echo_pool(
        instances: usize,
        policy: BatchPolicy,
    ) -> (InstancePool, Arc<std::sync::Mutex<Vec<i64>>>) {
        let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let engines: Vec<Box<dyn EngineInstance>> = (0..instances)
            .map(|_| {
                Box::new(Echo { sizes: sizes.clone(), sig: ModelSignature::default() })
                    as Box<dyn EngineInstance>
            })
            .collect();
        let pool = InstancePool::start(
            "echo-1".into(),
            engines,
            Arc::new(ModelStats::default()),
            4096,
            Some(policy),
        )
        .unwrap();
        (pool, sizes)
    }

    /// A job of `rows` rows of `[rows, 3]` INT32 (or BYTES) values derived from `tag`.
    fn tagged(
        tag: u32,
        rows: u64,
        bytes: bool,
    ) -> (Job, oneshot::Receiver<Result<Vec<Tensor>>>, Tensor) {
        if !bytes {
            return leveled(tag, rows, 3, 0);
        }
        let elems: Vec<String> = (0..rows * 3)
            .map(|k| "x".repeat(((tag as u64 + k) % 5) as usize) + &tag.to_string())
            .collect();
        queued_job(Tensor::from_bytes_elements("IN", vec![rows as i64, 3], &elems), rows, 0)
    }

    /// A job of `rows` rows of `input` at `level`, requesting output "OUT".
    fn queued_job(
        input: Tensor,
        rows: u64,
        level: usize,
    ) -> (Job, oneshot::Receiver<Result<Vec<Tensor>>>, Tensor) {
        let (tx, rx) = oneshot::channel();
        let job = Job {
            inputs: vec![input.clone()],
            outputs: vec!["OUT".into()],
            batch_size: rows,
            enqueued: Instant::now(),
            level,
            deadline: None,
            delay_on_timeout: false,
            reply: tx,
            trace: None,
            pending: None,
        };
        (job, rx, input)
    }

    /// Many requests of random sizes from several threads: every request is answered exactly once with its
    /// own rows, no batch exceeds max_batch_size, and requests were really combined.
    #[test]
    fn dynamic_batches_stay_within_limits_and_answer_every_request_with_its_rows() {
        for (seed, bytes, instances) in
            [(1u64, false, 1usize), (7, true, 1), (42, false, 2), (99, true, 2)]
        {
            let policy = BatchPolicy {
                max_batch_size: 8,
                preferred: vec![4, 8],
                max_delay: Duration::from_millis(5),
                ..no_queue_policy()
            };
            let (pool, sizes) = echo_pool(instances, policy);
            let pool = Arc::new(pool);
            let mut handles = Vec::new();
            for thread in 0..4u64 {
                let pool = pool.clone();
                handles.push(std::thread::spawn(move || {
                    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(thread);
                    let mut pending = Vec::new();
                    for n in 0..50u32 {
                        state = state
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        let rows = 1 + (state >> 33) % 8;
                        let (job, rx, input) = tagged(thread as u32 * 100 + n, rows, bytes);
                        pool.submit(job).unwrap();
                        pending.push((rx, input));
                    }
                    for (rx, input) in pending {
                        let out = rx.blocking_recv().expect("answered").expect("ok");
                        assert_eq!(out.len(), 1);
                        assert_eq!(out[0].name, "OUT");
                        assert_eq!(out[0].shape, input.shape);
                        assert_eq!(out[0].data, input.data, "rows of another request");
                    }
                }));
            }
            for h in handles {
                h.join().unwrap();
            }
            let sizes = sizes.lock().unwrap();
            let total: i64 = sizes.iter().sum();
            assert!(total > 200, "{total} rows executed");
            assert!(sizes.iter().all(|&s| (1..=8).contains(&s)), "{sizes:?}");
            assert!(sizes.len() < 200, "nothing was batched: {} executions", sizes.len());
        }
    }

    #[test]
    fn incompatible_requests_are_not_combined_and_keep_their_order() {
        let policy = BatchPolicy {
            max_batch_size: 16,
            preferred: vec![],
            max_delay: Duration::from_millis(20),
            ..no_queue_policy()
        };
        let (pool, sizes) = echo_pool(1, policy);
        let (a, ra, ia) = tagged(1, 2, false);
        let (b, rb, ib) = tagged(2, 3, true); // BYTES: cannot join the INT32 batch
        let (c, rc, ic) = tagged(3, 1, false);
        pool.submit(a).unwrap();
        pool.submit(b).unwrap();
        pool.submit(c).unwrap();
        for (rx, input) in [(ra, ia), (rb, ib), (rc, ic)] {
            assert_eq!(rx.blocking_recv().unwrap().unwrap()[0].data, input.data);
        }
        assert_eq!(*sizes.lock().unwrap(), vec![2, 3, 1]);
    }

    #[test]
    fn scatter_checks_the_batch_dimension() {
        let t = Tensor::new(
            "y",
            rampart_types::DataType::Int32,
            vec![3, 2],
            Bytes::from(vec![0u8; 24]),
        );
        let parts = scatter(vec![t.clone()], &[1, 2]).unwrap();
        assert_eq!(parts[0][0].shape, vec![1, 2]);
        assert_eq!(parts[1][0].data.len(), 16);
        assert!(scatter(vec![t.clone()], &[1, 1]).is_err());
        let short = Tensor::new(
            "y",
            rampart_types::DataType::Int32,
            vec![3, 2],
            Bytes::from(vec![0u8; 20]),
        );
        assert!(scatter(vec![short], &[1, 2]).is_err());
        let b = Tensor::from_bytes_elements("y", vec![2, 1], &["ab", "c"]);
        let parts = scatter(vec![b], &[1, 1]).unwrap();
        assert_eq!(&parts[1][0].data[..], &[1, 0, 0, 0, b'c']);
    }

    fn no_queue_policy() -> BatchPolicy {
        BatchPolicy {
            max_batch_size: 8,
            preferred: vec![],
            max_delay: Duration::ZERO,
            levels: vec![QueuePolicy { reject_on_timeout: true, ..Default::default() }],
            default_level: 0,
        }
    }

    #[test]
    fn queue_policy_deadlines() {
        let now = Instant::now();
        let ms = Duration::from_millis;
        let p = |timeout: Option<Duration>, allow: bool, reject: bool| QueuePolicy {
            timeout,
            allow_timeout_override: allow,
            reject_on_timeout: reject,
            max_queue_size: 0,
        };
        assert_eq!(p(None, false, true).deadline(now, Some(5_000)), None, "no override allowed");
        assert_eq!(p(None, true, true).deadline(now, Some(5_000)), Some(now + ms(5)));
        assert_eq!(p(Some(ms(10)), false, true).deadline(now, None), Some(now + ms(10)));
        assert_eq!(p(Some(ms(10)), true, true).deadline(now, Some(5_000)), Some(now + ms(5)));
        assert_eq!(
            p(Some(ms(10)), true, true).deadline(now, Some(50_000)),
            Some(now + ms(10)),
            "cannot lengthen"
        );
        assert_eq!(p(Some(ms(10)), true, true).deadline(now, Some(0)), Some(now + ms(10)));
        assert_eq!(
            p(Some(ms(10)), true, false).deadline(now, Some(5_000)),
            Some(now + ms(5)),
            "DELAY has the same deadline"
        );
    }

    #[test]
    fn priority_parameter_maps_to_levels_like_triton() {
        let policy = BatchPolicy {
            levels: vec![QueuePolicy::default(); 3],
            default_level: 1,
            ..no_queue_policy()
        };
        assert_eq!(policy.level(Some(1)), 0, "1 is the highest level");
        assert_eq!(policy.level(Some(3)), 2);
        assert_eq!(policy.level(None), 1, "no priority: the default level");
        assert_eq!(policy.level(Some(0)), 1, "0 means the default level");
        assert_eq!(policy.level(Some(4)), 1, "above priority_levels: the default level");
        assert_eq!(policy.level(Some(u64::MAX)), 1);
    }

    #[test]
    fn expired_requests_are_rejected_and_a_full_model_queue_uses_tritons_words() {
        let (started_tx, started) = crossbeam_channel::unbounded();
        let (release, release_rx) = crossbeam_channel::unbounded();
        let gate =
            Gate { started: started_tx, release: release_rx, sig: ModelSignature::default() };
        let policy = BatchPolicy {
            levels: vec![QueuePolicy {
                max_queue_size: 1,
                reject_on_timeout: true,
                ..Default::default()
            }],
            ..no_queue_policy()
        };
        let pool = InstancePool::start(
            "m-1".into(),
            vec![Box::new(gate)],
            Arc::new(ModelStats::default()),
            4096,
            Some(policy),
        )
        .unwrap();
        let (a, ra) = job();
        pool.submit(a).unwrap();
        started.recv().unwrap(); // A runs
        let (mut b, rb) = job();
        b.deadline = Some(Instant::now() + Duration::from_millis(1));
        pool.submit(b).unwrap();
        let (c, _rc) = job();
        assert_eq!(pool.submit(c).unwrap_err().message(), "Exceeds maximum queue size");
        std::thread::sleep(Duration::from_millis(20));
        release.send(()).unwrap();
        assert!(ra.blocking_recv().unwrap().is_ok());
        let e = rb.blocking_recv().unwrap().unwrap_err();
        assert_eq!((e.code(), e.message()), (Code::Unavailable, "Request timeout expired"));
        let (d, rd) = job();
        pool.submit(d).unwrap();
        started.recv().unwrap();
        release.send(()).unwrap();
        assert!(rd.blocking_recv().unwrap().is_ok(), "the queue serves again");
    }

    /// Records the row tags of every execution (`row value / 1000` of an INT32 `[rows, w]` input) and holds the
    /// first execution until the test releases it, so that everything submitted meanwhile waits in the queue.
    struct Latch {
        executions: Arc<std::sync::Mutex<Vec<Vec<u32>>>>,
        release: Option<crossbeam_channel::Receiver<()>>,
        sig: ModelSignature,
    }

    impl EngineInstance for Latch {
        fn signature(&self) -> &ModelSignature {
            &self.sig
        }
        fn execute(&mut self, inputs: &[Tensor], outputs: &[String]) -> Result<Vec<Tensor>> {
            if let Some(release) = self.release.take() {
                release.recv().unwrap();
            }
            let t = &inputs[0];
            let width = t.shape[1] as usize;
            let tags = t
                .data
                .chunks_exact(4 * width)
                .map(|row| u32::from_le_bytes(row[..4].try_into().unwrap()) / 1000)
                .collect();
            self.executions.lock().unwrap().push(tags);
            Ok(outputs
                .iter()
                .map(|o| Tensor::new(o.clone(), t.datatype, t.shape.clone(), t.data.clone()))
                .collect())
        }
    }

    /// A job of `rows` INT32 rows of width `width` whose values carry `tag`, at `level`.
    fn leveled(
        tag: u32,
        rows: u64,
        width: usize,
        level: usize,
    ) -> (Job, oneshot::Receiver<Result<Vec<Tensor>>>, Tensor) {
        let data: Vec<u8> = (0..rows as usize * width)
            .flat_map(|k| (tag * 1000 + k as u32).to_le_bytes())
            .collect();
        let input = Tensor::new(
            "IN",
            rampart_types::DataType::Int32,
            vec![rows as i64, width as i64],
            Bytes::from(data),
        );
        queued_job(input, rows, level)
    }

    /// A pool whose single instance holds its first execution until `release` is sent.
    fn latched_pool(
        policy: BatchPolicy,
    ) -> (InstancePool, Arc<std::sync::Mutex<Vec<Vec<u32>>>>, crossbeam_channel::Sender<()>) {
        let executions = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (release_tx, release_rx) = crossbeam_channel::unbounded();
        let latch = Latch {
            executions: executions.clone(),
            release: Some(release_rx),
            sig: ModelSignature::default(),
        };
        let pool = InstancePool::start(
            "latch-1".into(),
            vec![Box::new(latch)],
            Arc::new(ModelStats::default()),
            4096,
            Some(policy),
        )
        .unwrap();
        (pool, executions, release_tx)
    }

    #[test]
    fn higher_priority_levels_run_first_and_each_level_is_fifo() {
        let policy = BatchPolicy {
            max_batch_size: 1,
            levels: vec![QueuePolicy::default(); 3],
            default_level: 2,
            ..no_queue_policy()
        };
        let (pool, executions, release) = latched_pool(policy);
        let (first, r0, _) = leveled(0, 1, 2, 2);
        pool.submit(first).unwrap();
        while executions.lock().unwrap().is_empty() && pool_waiting(&pool) > 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut replies = vec![r0];
        for (tag, level) in [(1, 2), (2, 1), (3, 0), (4, 2), (5, 0), (6, 1)] {
            let (job, rx, _) = leveled(tag, 1, 2, level);
            pool.submit(job).unwrap();
            replies.push(rx);
        }
        release.send(()).unwrap();
        for rx in replies {
            assert!(rx.blocking_recv().unwrap().is_ok());
        }
        let order: Vec<u32> = executions.lock().unwrap().iter().flatten().copied().collect();
        assert_eq!(order, vec![0, 3, 5, 2, 6, 1, 4]);
    }

    fn pool_waiting(pool: &InstancePool) -> usize {
        match &pool.queue {
            Queue::Priority(q) => q.waiting(),
            Queue::Fifo(_) => 0,
        }
    }

    #[test]
    fn delayed_requests_run_after_the_requests_of_their_level_that_did_not_time_out() {
        let policy = BatchPolicy {
            max_batch_size: 1,
            levels: vec![QueuePolicy::default(); 2],
            default_level: 0,
            ..no_queue_policy()
        };
        let (pool, executions, release) = latched_pool(policy);
        let (first, r0, _) = leveled(0, 1, 2, 1);
        pool.submit(first).unwrap();
        while pool_waiting(&pool) > 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut replies = vec![r0];
        for (tag, level, late) in
            [(1, 0, true), (2, 0, false), (3, 1, false), (4, 0, true), (5, 0, false)]
        {
            let (mut job, rx, _) = leveled(tag, 1, 2, level);
            if late {
                job.deadline = Some(Instant::now() - Duration::from_millis(1));
                job.delay_on_timeout = true;
            }
            pool.submit(job).unwrap();
            replies.push(rx);
        }
        release.send(()).unwrap();
        for rx in replies {
            assert!(rx.blocking_recv().unwrap().is_ok(), "DELAY still runs the request");
        }
        let order: Vec<u32> = executions.lock().unwrap().iter().flatten().copied().collect();
        assert_eq!(order, vec![0, 2, 5, 1, 4, 3], "level 1 on time, level 1 delayed, then level 2");
    }

    #[test]
    fn each_level_has_its_own_max_queue_size() {
        let limited = QueuePolicy { max_queue_size: 1, ..Default::default() };
        let policy = BatchPolicy {
            max_batch_size: 1,
            levels: vec![limited, QueuePolicy::default()],
            default_level: 1,
            ..no_queue_policy()
        };
        let (pool, _executions, release) = latched_pool(policy);
        let (first, r0, _) = leveled(0, 1, 2, 1);
        pool.submit(first).unwrap();
        while pool_waiting(&pool) > 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let (a, ra, _) = leveled(1, 1, 2, 0);
        pool.submit(a).unwrap();
        let (b, _rb, _) = leveled(2, 1, 2, 0);
        assert_eq!(pool.submit(b).unwrap_err().message(), "Exceeds maximum queue size");
        let mut others = Vec::new();
        for tag in 3..10 {
            let (job, rx, _) = leveled(tag, 1, 2, 1);
            pool.submit(job).expect("level 2 has no limit of its own");
            others.push(rx);
        }
        release.send(()).unwrap();
        for rx in [r0, ra].into_iter().chain(others) {
            assert!(rx.blocking_recv().unwrap().is_ok());
        }
    }

    /// One queued request of the property test: tag = index, its level, rows, width (2 or 3: requests of
    /// different widths cannot share a batch) and whether its queue deadline has already passed, with REJECT or
    /// with DELAY.
    #[derive(Debug, Clone)]
    struct Queued {
        level: usize,
        rows: u64,
        width: usize,
        expired: bool,
        delayed: bool,
    }

    fn queued(levels: usize, max_batch: u64) -> impl proptest::strategy::Strategy<Value = Queued> {
        use proptest::prelude::*;
        let expiry = prop_oneof![6 => Just((false, false)), 1 => Just((true, false)), 1 => Just((false, true))];
        (0..levels, 1..=max_batch, prop_oneof![Just(2usize), Just(3usize)], expiry).prop_map(
            |(level, rows, width, (expired, delayed))| Queued {
                level,
                rows,
                width,
                expired,
                delayed,
            },
        )
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 48, ..Default::default() })]

        /// Whatever the mix of levels, sizes, shapes and expired deadlines queued behind a busy instance:
        /// no batch exceeds max_batch_size, levels are served highest first and FIFO within a level, every
        /// live request is answered exactly once with its own rows, every expired REJECT one is rejected with
        /// Triton's words and never executed, and every expired DELAY one runs after the requests of its level
        /// that have not timed out.
        #[test]
        fn batching_properties(
            levels in 1usize..4,
            max_batch in 1u64..9,
            preferred in proptest::collection::vec(1u64..9, 0..3),
            jobs in proptest::collection::vec(queued(3, 8), 1..40),
        ) {
            use proptest::prelude::*;
            let max_levels = jobs.iter().map(|j| j.level + 1).max().unwrap_or(1).max(levels);
            let max_rows = jobs.iter().map(|j| j.rows).max().unwrap_or(1);
            let max_batch = max_batch.max(max_rows);
            let preferred: Vec<u64> = preferred.into_iter().filter(|&p| p <= max_batch).collect();
            let policy = BatchPolicy {
                max_batch_size: max_batch,
                preferred,
                max_delay: Duration::from_millis(1),
                levels: vec![QueuePolicy::default(); max_levels],
                default_level: 0,
            };
            let (pool, executions, release) = latched_pool(policy);
            let (blocker, rb, _) = leveled(9999, 1, 1, max_levels - 1);
            pool.submit(blocker).unwrap();
            while pool_waiting(&pool) > 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
            let mut pending = Vec::new();
            for (tag, q) in jobs.iter().enumerate() {
                let (mut job, rx, input) = leveled(tag as u32, q.rows, q.width, q.level);
                if q.expired || q.delayed {
                    job.deadline = Some(Instant::now() - Duration::from_millis(1));
                    job.delay_on_timeout = q.delayed;
                }
                pool.submit(job).unwrap();
                pending.push((rx, input));
            }
            release.send(()).unwrap();
            prop_assert!(rb.blocking_recv().unwrap().is_ok());
            for ((rx, input), q) in pending.into_iter().zip(&jobs) {
                let answer = rx.blocking_recv().expect("every request is answered");
                if q.expired {
                    let e = answer.expect_err("an expired request is rejected");
                    prop_assert_eq!((e.code(), e.message()), (Code::Unavailable, "Request timeout expired"));
                } else {
                    let out = answer.expect("a live request succeeds");
                    prop_assert_eq!(&out[0].shape, &input.shape);
                    prop_assert_eq!(&out[0].data, &input.data);
                }
            }
            drop(pool); // joins the instance thread: every execution is recorded
            let executions = executions.lock().unwrap();
            let mut seen: Vec<u32> = Vec::new();
            for rows in executions.iter().skip(1) {
                prop_assert!(rows.len() as u64 <= max_batch, "batch of {} > {}", rows.len(), max_batch);
                for &tag in rows {
                    if seen.last() != Some(&tag) {
                        seen.push(tag);
                    }
                }
            }
            let live: Vec<u32> = (0..jobs.len() as u32).filter(|&t| !jobs[t as usize].expired).collect();
            let mut sorted = seen.clone();
            sorted.sort_unstable();
            prop_assert_eq!(&sorted, &live, "each live request executed exactly once, no expired one");
            let served_levels: Vec<usize> = seen.iter().map(|&t| jobs[t as usize].level).collect();
            prop_assert!(served_levels.windows(2).all(|w| w[0] <= w[1]), "levels out of order: {:?}", served_levels);
            for level in 0..max_levels {
                let order: Vec<u32> = seen.iter().copied().filter(|&t| jobs[t as usize].level == level).collect();
                let delayed = |t: &u32| jobs[*t as usize].delayed;
                let (late, on_time): (Vec<u32>, Vec<u32>) = order.iter().partition(|t| delayed(t));
                prop_assert_eq!(order.clone(), [on_time.clone(), late.clone()].concat(), "level {}: DELAY requests must come last", level);
                prop_assert!(on_time.windows(2).all(|w| w[0] < w[1]), "level {} not FIFO: {:?}", level, on_time);
                prop_assert!(late.windows(2).all(|w| w[0] < w[1]), "level {} delayed not FIFO: {:?}", level, late);
            }
        }
    }
}
