//! What the scheduler queues for a model version ([`Job`]) and how one instance runs it ([`Instance`]):
//! alone, as part of a dynamic batch, or as a decoupled request that answers with a stream of responses.
//! Engine panics are caught here and become INTERNAL errors.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rampart_types::{
    Answers, EngineInstance, EngineRequest, Error, RequestInfo, Result, Submitted, Tensor,
};
use tokio::sync::{mpsc, oneshot};

use crate::stats::{ExecutionTimes, ModelStats, Pending};
use crate::trace::Trace;
use answers::{Common, Execution, Stream, Unary};

mod answers;

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
    /// [`crate::infer::InferRequest::cancelled`].
    pub cancelled: Option<Arc<AtomicBool>>,
}

/// Where a job's answer goes.
pub(crate) enum Reply {
    /// One response (or error).
    Unary(oneshot::Sender<Result<Answer>>),
    /// A decoupled model's responses, then [`Streamed::Final`] or an error.
    Stream(mpsc::Sender<Streamed>),
}

/// One response of an engine: its outputs, and the parameters model code set on it (Triton's
/// `InferenceResponse(parameters=…)`), which the response carries to the client.
#[derive(Debug, Default)]
pub(crate) struct Answer {
    pub outputs: Vec<Tensor>,
    pub parameters: crate::infer::Parameters,
}

impl From<Vec<Tensor>> for Answer {
    fn from(outputs: Vec<Tensor>) -> Self {
        Answer { outputs, parameters: Default::default() }
    }
}

/// What a decoupled request's instance hands back, in order.
#[derive(Debug)]
pub(crate) enum Streamed {
    Response(Answer),
    /// The last response: the final flag came with it.
    Last(Answer),
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
        flagged(&self.cancelled)
            || match &self.reply {
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
        // A decoupled request goes through the engine's `submit`, whose default runs it at once.
        match job.reply {
            Reply::Unary(_) if !self.takes_requests => self.run_unary(job),
            _ => self.run_requests(vec![job]),
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
            let streamed = matches!((&a.reply, &b.reply), (Reply::Stream(_), Reply::Stream(_)));
            return unary || streamed;
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
        let _ = reply.send(result.map(Answer::from));
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
                    let _ = reply.send(Ok(outputs.into()));
                }
            }
            Err(e) => {
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }

    /// Hands jobs that arrived together to an engine that sees requests, each with where its answers go;
    /// they end on the engine's time (see `executor/answers.rs`).
    fn run_requests(&mut self, jobs: Vec<Job>) {
        submit_jobs(self.engine.as_mut(), &self.stats, jobs);
    }
}

/// Hands jobs to an engine that sees requests, each with where its answers go (an [`Instance`]'s batch, or
/// the requests of a sequence batch).
pub(crate) fn submit_jobs(
    engine: &mut dyn EngineInstance,
    stats: &Arc<ModelStats>,
    jobs: Vec<Job>,
) {
    let execution = Execution::new(stats.clone(), jobs.len());
    let submitted: Vec<Submitted> = jobs
        .into_iter()
        .map(|mut j| {
            j.pending.take();
            let common = Common {
                execution: execution.clone(),
                batch_size: j.batch_size,
                queue: execution.start().saturating_duration_since(j.enqueued),
                trace: j.trace.take(),
                cancelled: j.cancelled.take(),
            };
            let answers: Arc<dyn Answers> = match j.reply {
                Reply::Unary(tx) => Arc::new(Unary { common, tx: Mutex::new(Some(tx)) }),
                Reply::Stream(tx) => Arc::new(Stream::new(common, tx, stats.clone())),
            };
            let request = EngineRequest { info: j.info, inputs: j.inputs, outputs: j.outputs };
            Submitted { request, answers }
        })
        .collect();
    let held: Vec<Arc<dyn Answers>> = submitted.iter().map(|s| s.answers.clone()).collect();
    if let Err(e) = guarded(|| {
        engine.submit(submitted);
        Ok(())
    }) {
        // A panic ends the requests it had not ended (the others keep their answers).
        for answers in held {
            answers.finish(Err(e.clone()));
        }
    }
}

/// Whether a request's cancellation flag is set.
pub(crate) fn flagged(cancelled: &Option<Arc<AtomicBool>>) -> bool {
    cancelled.as_ref().is_some_and(|c| c.load(Ordering::Acquire))
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
pub(crate) fn stamp_compute<'a>(
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
