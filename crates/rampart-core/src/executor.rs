//! What the scheduler queues for a model version ([`Job`]) and how one instance runs it ([`Instance`]):
//! alone, as part of a dynamic batch, or as a decoupled request that answers with a stream of responses.
//! Engine panics are caught here and become INTERNAL errors.

use std::cell::Cell;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rampart_types::{EngineInstance, EngineRequest, Error, RequestInfo, Responder, Result, Tensor};
use tokio::sync::{mpsc, oneshot};

use crate::stats::{ExecutionTimes, ModelStats, Pending, ResponseOutcome};
use crate::trace::Trace;

/// One accepted request of a model version.
pub(crate) struct Job {
    pub inputs: Vec<Tensor>,
    pub outputs: Vec<String>,
    /// The request's id, parameters and sequence, for an engine that sees requests (empty otherwise).
    pub info: RequestInfo,
    pub batch_size: u64,
    pub enqueued: Instant,
    pub reply: Reply,
    /// Stamped with the compute timestamps when the request is traced.
    pub trace: Option<Arc<Trace>>,
    /// Counts the request as pending until an execution takes it (or it is dropped unexecuted).
    pub pending: Option<Pending>,
}

/// Where a job's answer goes.
pub(crate) enum Reply {
    /// One response (or error).
    Unary(oneshot::Sender<Result<Vec<Tensor>>>),
    /// A decoupled model's responses, then [`Streamed::Final`] or an error.
    Stream(mpsc::Sender<Streamed>),
}

/// What a decoupled request's instance hands back, in order.
#[derive(Debug)]
pub(crate) enum Streamed {
    Response(Vec<Tensor>),
    /// The request is complete (Triton's final flag without a response).
    Final,
    /// The request failed; nothing follows.
    Error(Error),
}

impl rampart_scheduler::Task for Job {
    fn batch_size(&self) -> u64 {
        self.batch_size
    }
    fn enqueued(&self) -> Instant {
        self.enqueued
    }
    fn is_cancelled(&self) -> bool {
        match &self.reply {
            Reply::Unary(tx) => tx.is_closed(),
            Reply::Stream(tx) => tx.is_closed(),
        }
    }
    fn reject(self, error: Error) {
        match self.reply {
            Reply::Unary(tx) => drop(tx.send(Err(error))),
            // Nothing was sent yet, so the channel has room.
            Reply::Stream(tx) => drop(tx.try_send(Streamed::Error(error))),
        }
    }
}

/// One model instance on its scheduler thread.
pub(crate) struct Instance {
    pub engine: Box<dyn EngineInstance>,
    pub stats: Arc<ModelStats>,
    /// The engine sees requests ([`rampart_types::Engine::takes_requests`]): a batch is handed over as a
    /// list of requests, not as concatenated tensors.
    pub takes_requests: bool,
}

impl rampart_scheduler::Executor<Job> for Instance {
    fn execute_one(&mut self, job: Job) {
        match job.reply {
            Reply::Unary(_) => self.run_unary(job),
            Reply::Stream(_) => self.run_decoupled(job),
        }
    }

    fn execute_batch(&mut self, jobs: Vec<Job>) {
        if self.takes_requests {
            self.run_requests(jobs);
        } else {
            self.run_batch(jobs);
        }
    }

    /// Requests that can execute together: one response each, the same inputs in the same order with the
    /// same datatypes and non-batch dims, and the same requested outputs.
    /// An engine that sees requests takes any requests with one response each.
    fn compatible(&self, a: &Job, b: &Job) -> bool {
        let unary = matches!((&a.reply, &b.reply), (Reply::Unary(_), Reply::Unary(_)));
        if self.takes_requests {
            return unary;
        }
        unary
            && a.outputs == b.outputs
            && a.inputs.len() == b.inputs.len()
            && a.inputs.iter().zip(&b.inputs).all(|(x, y)| {
                x.name == y.name
                    && x.datatype == y.datatype
                    && x.shape.len() == y.shape.len()
                    && x.shape.get(1..) == y.shape.get(1..)
            })
    }
}

impl Instance {
    /// The statistics of a request executed alone, which started at `start` after waiting `queue`.
    fn record_alone(&self, batch_size: u64, queue: Duration, start: Instant) {
        self.stats.record_execution(&ExecutionTimes {
            batch_size,
            queue,
            compute_input: Duration::ZERO,
            compute_infer: start.elapsed(),
            compute_output: Duration::ZERO,
        });
    }

    fn run_unary(&mut self, mut job: Job) {
        if self.takes_requests {
            return self.run_requests(vec![job]);
        }
        job.pending.take();
        let Reply::Unary(reply) = job.reply else { unreachable!("a unary job") };
        let start = Instant::now();
        let queue = start.duration_since(job.enqueued);
        let result = guarded(|| self.engine.execute(&job.inputs, &job.outputs));
        if let Some(t) = &job.trace {
            stamp_compute([t], start, start, Instant::now());
        }
        if result.is_ok() {
            self.record_alone(job.batch_size, queue, start);
        }
        let _ = reply.send(result);
    }

    /// Executes compatible jobs as one batch and answers each with its rows.
    fn run_batch(&mut self, mut jobs: Vec<Job>) {
        for j in &mut jobs {
            j.pending.take();
        }
        let start = Instant::now();
        let queues: Vec<Duration> = jobs.iter().map(|j| start.duration_since(j.enqueued)).collect();
        let rows: Vec<u64> = jobs.iter().map(|j| j.batch_size).collect();
        let size = rows.iter().sum();
        let inputs = crate::batch::gather(jobs.iter().map(|j| j.inputs.as_slice()), size);
        let gathered = start.elapsed();
        let result = guarded(|| self.engine.execute(&inputs, &jobs[0].outputs));
        let computed = start.elapsed();
        drop(inputs);
        stamp_compute(
            jobs.iter().filter_map(|j| j.trace.as_ref()),
            start,
            start + gathered,
            start + computed,
        );
        let replies = jobs.into_iter().map(|j| match j.reply {
            Reply::Unary(tx) => tx,
            Reply::Stream(_) => unreachable!("decoupled jobs are never batched"),
        });
        match result.and_then(|outputs| crate::batch::scatter(outputs, &rows)) {
            Ok(per_job) => {
                let times = ExecutionTimes {
                    batch_size: size,
                    queue: Duration::ZERO,
                    compute_input: gathered,
                    compute_infer: computed - gathered,
                    compute_output: start.elapsed() - computed,
                };
                self.stats.record_batch(&times, &queues);
                for (reply, outputs) in replies.zip(per_job) {
                    let _ = reply.send(Ok(outputs));
                }
            }
            Err(e) => {
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }

    /// Hands jobs that arrived together to an engine that sees requests, and answers each with its own
    /// result.
    fn run_requests(&mut self, mut jobs: Vec<Job>) {
        let start = Instant::now();
        let queues: Vec<Duration> = jobs.iter().map(|j| start.duration_since(j.enqueued)).collect();
        let sizes: Vec<u64> = jobs.iter().map(|j| j.batch_size).collect();
        let requests: Vec<EngineRequest> = jobs
            .iter_mut()
            .map(|j| {
                j.pending.take();
                EngineRequest {
                    info: std::mem::take(&mut j.info),
                    inputs: std::mem::take(&mut j.inputs),
                    outputs: std::mem::take(&mut j.outputs),
                }
            })
            .collect();
        let results = guarded(|| Ok(self.engine.execute_requests(&requests)));
        drop(requests);
        stamp_compute(jobs.iter().filter_map(|j| j.trace.as_ref()), start, start, Instant::now());
        let results = match results {
            Ok(r) if r.len() == jobs.len() => r,
            Ok(r) => {
                let e = Error::internal(format!(
                    "the engine answered {} of {} requests",
                    r.len(),
                    jobs.len()
                ));
                vec![Err(e); jobs.len()]
            }
            Err(e) => vec![Err(e); jobs.len()],
        };
        // Only the requests that succeeded count as inferences, as when a batch fails as a whole.
        let ok = |(i, r): (usize, &Result<Vec<Tensor>>)| r.is_ok().then_some(i);
        let done: Vec<usize> = results.iter().enumerate().filter_map(ok).collect();
        if !done.is_empty() {
            let queues: Vec<Duration> = done.iter().map(|&i| queues[i]).collect();
            let times = ExecutionTimes {
                batch_size: done.iter().map(|&i| sizes[i]).sum(),
                queue: Duration::ZERO,
                compute_input: Duration::ZERO,
                compute_infer: start.elapsed(),
                compute_output: Duration::ZERO,
            };
            self.stats.record_batch(&times, &queues);
        }
        for (job, result) in jobs.into_iter().zip(results) {
            if let Reply::Unary(tx) = job.reply {
                let _ = tx.send(result);
            }
        }
    }

    /// One request of a decoupled model: its responses go out as the instance sends them, then the final
    /// flag (or the error that ended it).
    fn run_decoupled(&mut self, mut job: Job) {
        job.pending.take();
        let Reply::Stream(tx) = job.reply else { unreachable!("a decoupled job") };
        let start = Instant::now();
        let queue = start.duration_since(job.enqueued);
        let sink =
            Sink { tx: &tx, stats: &self.stats, index: Cell::new(0), since: Cell::new(start) };
        let request = EngineRequest {
            info: std::mem::take(&mut job.info),
            inputs: std::mem::take(&mut job.inputs),
            outputs: std::mem::take(&mut job.outputs),
        };
        let result = guarded(|| self.engine.execute_decoupled(&request, &sink));
        drop(request);
        if let Some(t) = &job.trace {
            stamp_compute([t], start, start, Instant::now());
        }
        let end = match result {
            Ok(()) => {
                self.record_alone(job.batch_size, queue, start);
                Streamed::Final
            }
            Err(e) => {
                let outcome = if e.code() == rampart_types::Code::Cancelled {
                    ResponseOutcome::Cancel
                } else {
                    ResponseOutcome::Fail
                };
                let worked = sink.since.get().elapsed();
                self.stats.record_response(sink.index.get(), outcome, worked, Duration::ZERO);
                Streamed::Error(e)
            }
        };
        let _ = tx.blocking_send(end);
    }
}

/// The [`Responder`] of one decoupled request.
struct Sink<'a> {
    tx: &'a mpsc::Sender<Streamed>,
    stats: &'a ModelStats,
    /// The index of the next response within the request.
    index: Cell<u64>,
    /// When the instance started working on the next response.
    since: Cell<Instant>,
}

impl Responder for Sink<'_> {
    fn send(&self, outputs: Vec<Tensor>) -> Result<()> {
        let worked = self.since.get().elapsed();
        let handing = Instant::now();
        if self.tx.blocking_send(Streamed::Response(outputs)).is_err() {
            return Err(cancelled());
        }
        let index = self.index.get();
        self.stats.record_response(index, ResponseOutcome::Success, worked, handing.elapsed());
        self.index.set(index + 1);
        self.since.set(Instant::now());
        Ok(())
    }

    fn is_cancelled(&self) -> bool {
        self.tx.is_closed()
    }
}

/// The error a decoupled request ends with when its caller went away.
pub(crate) fn cancelled() -> Error {
    Error::new(rampart_types::Code::Cancelled, "request cancelled: the client went away")
}

/// Runs an engine call, turning a panic into an INTERNAL error.
pub(crate) fn guarded<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        Err(Error::internal(format!("engine panicked: {what}")))
    })
}

/// Stamps Triton's four compute timestamps on every traced job of an execution.
fn stamp_compute<'a>(
    traces: impl IntoIterator<Item = &'a Arc<Trace>>,
    start: Instant,
    input_end: Instant,
    output_start: Instant,
) {
    let end = Instant::now();
    for t in traces {
        t.stamp_at("COMPUTE_START", start);
        t.stamp_at("COMPUTE_INPUT_END", input_end);
        t.stamp_at("COMPUTE_OUTPUT_START", output_start);
        t.stamp_at("COMPUTE_END", end);
    }
}
