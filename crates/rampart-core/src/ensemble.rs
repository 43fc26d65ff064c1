//! Ensembles (`platform: "ensemble"`): a pipeline of steps, each an ordinary request to a composing model
//! (its own scheduler, batcher, cache and statistics). `config/ensemble.rs` checks a config on its own,
//! `link.rs` checks it against its composing models and builds the [`Plan`], `run.rs` runs a request
//! through a [`Composer`] (the server's models), and `load/ensemble.rs` loads an ensemble after its
//! composing models and keeps it in step with them.

mod link;
mod run;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use rampart_types::Result;
use tokio::sync::{Semaphore, mpsc};

pub(crate) use link::link;
pub(crate) use run::Boxed;
pub(crate) use run::{Call, Sink};

use crate::executor::Streamed;
use crate::infer::{InferRequest, ParamValue, Parameters, Prepared};
use crate::stats::{ExecutionTimes, ModelStats};

/// What an ensemble's steps call: the server's models (`load/ensemble.rs` gives every plan one).
pub(crate) trait Composer: Send + Sync {
    /// Starts a request of the composing model `request` names.
    fn call(&self, request: InferRequest) -> Boxed<'static, Result<Answer>>;
}

/// A composing model's answer to a step.
pub(crate) enum Answer {
    /// A model with one response per request.
    One(Vec<rampart_types::Tensor>),
    /// A decoupled model's responses, fetched one at a time.
    Many(Box<dyn Responses>),
}

/// The responses of a decoupled step.
pub(crate) trait Responses: Send {
    /// The next response's outputs; `None` after the last.
    fn next(&mut self) -> Boxed<'_, Option<Result<Vec<rampart_types::Tensor>>>>;
}

/// One step of a plan.
pub(crate) struct Step {
    pub model: String,
    /// `None`: the latest ready version (`model_version: -1`).
    pub version: Option<i64>,
    /// (the composing model's input, the ensemble tensor it reads), sorted by input name.
    pub inputs: Vec<(String, usize)>,
    /// (the composing model's output, the ensemble tensor it writes).
    pub outputs: Vec<(String, usize)>,
    /// The composing model answers with zero or more responses per request.
    pub decoupled: bool,
}

/// An ensemble linked to its composing models: tensors numbered, steps with their tensors.
pub(crate) struct Plan {
    pub name: String,
    tensors: Vec<String>,
    inputs: Vec<(String, usize)>,
    outputs: Vec<(String, usize)>,
    steps: Vec<Step>,
    /// Per tensor: the steps reading it, and the step writing it.
    consumers: Vec<Vec<usize>>,
    producer: Vec<Option<usize>>,
    /// Per step, `max_inflight_requests` slots shared by every request of this ensemble.
    limiters: Vec<Option<Arc<Semaphore>>>,
    /// Whether a step is decoupled, which makes the ensemble decoupled.
    pub decoupled: bool,
    /// What runs the steps; set when the plan is loaded.
    pub composer: Option<Arc<dyn Composer>>,
}

impl Plan {
    fn new(
        name: String,
        tensors: Vec<String>,
        inputs: Vec<(String, usize)>,
        outputs: Vec<(String, usize)>,
        steps: Vec<Step>,
        max_inflight: u32,
    ) -> Plan {
        let mut consumers = vec![Vec::new(); tensors.len()];
        let mut producer = vec![None; tensors.len()];
        for (i, s) in steps.iter().enumerate() {
            for (_, t) in &s.inputs {
                consumers[*t].push(i);
            }
            for (_, t) in &s.outputs {
                producer[*t] = Some(i);
            }
        }
        let limiters = steps
            .iter()
            .map(|_| (max_inflight > 0).then(|| Arc::new(Semaphore::new(max_inflight as usize))))
            .collect();
        let decoupled = steps.iter().any(|s| s.decoupled);
        Plan {
            name,
            tensors,
            inputs,
            outputs,
            steps,
            consumers,
            producer,
            limiters,
            decoupled,
            composer: None,
        }
    }
}

impl Call {
    pub(crate) fn new(req: &InferRequest, prepared: Prepared) -> Call {
        Call {
            id: req.id.clone(),
            parameters: req.parameters.clone(),
            trace: req.trace.clone(),
            inputs: prepared.inputs,
            wanted: prepared.outputs,
            principal: req.principal.clone(),
            call_depth: req.call_depth,
            cancelled: req.cancelled.clone(),
        }
    }
}

/// The sequence parameters of a request, which Triton echoes in an ensemble's responses.
pub(crate) fn sequence_parameters(parameters: &Parameters) -> Parameters {
    let mut out = Parameters::new();
    if let Some(id) = parameters.get("sequence_id") {
        out.insert("sequence_id".into(), id.clone());
        for flag in ["sequence_start", "sequence_end"] {
            let set = matches!(parameters.get(flag), Some(ParamValue::Bool(true)));
            out.insert(flag.into(), ParamValue::Bool(set));
        }
    }
    out
}

/// An ensemble request that succeeded counts as one execution whose compute time is its steps' summed
/// request time (Triton sums its steps' compute times); it waits in no queue of its own.
pub(crate) fn record_success(stats: &ModelStats, batch_size: u64, steps: Duration) {
    stats.record_execution(&ExecutionTimes {
        batch_size,
        queue: Duration::ZERO,
        compute_input: Duration::ZERO,
        compute_infer: steps,
        compute_output: Duration::ZERO,
    });
}

/// Runs a decoupled ensemble request on a task of its own; its responses, then the final flag or an
/// error, go to `tx`. Dropping the receiver ends the task and cancels the steps.
pub(crate) fn spawn_stream(
    plan: &Arc<Plan>,
    stats: &Arc<ModelStats>,
    req: &InferRequest,
    prepared: Prepared,
    tx: mpsc::Sender<Streamed>,
) {
    let plan = plan.clone();
    let stats = stats.clone();
    let batch_size = prepared.batch_size;
    let call = Call::new(req, prepared);
    tokio::spawn(async move {
        // A caller that goes away cancels the steps at once, not at the next response.
        let gone = tx.clone();
        let mut sink = Sink::Stream(tx);
        let outcome = tokio::select! {
            outcome = plan.run(call, &mut sink) => outcome,
            () = gone.closed() => return,
        };
        let Sink::Stream(tx) = sink else { return };
        let last = match outcome {
            Ok(took) => {
                record_success(&stats, batch_size, took);
                Streamed::Final
            }
            Err(e) => Streamed::Error(e),
        };
        let _ = tx.send(last).await;
    });
}
