//! Running one ensemble request: a data-flow walk where each step is an ordinary request to its composing
//! model, started as soon as its inputs exist. Values are keyed by iteration: a decoupled step's every
//! response starts a new iteration of its flow, which runs the steps downstream and becomes one response of
//! the ensemble.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rampart_types::{Error, Result, Tensor};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use super::{Answer, Composer, Plan};
use crate::executor::Streamed;
use crate::infer::{InferRequest, InputTensor, Parameters, RequestedOutput};

/// Where the ensemble's responses go.
pub(crate) enum Sink {
    /// The one response of an ensemble without decoupled steps.
    One(Option<Vec<Tensor>>),
    /// A decoupled ensemble's responses, as they are formed.
    Stream(mpsc::Sender<Streamed>),
}

/// What an ensemble request brings to each step.
pub(crate) struct Call {
    pub id: String,
    pub parameters: Parameters,
    pub trace: Option<Arc<crate::trace::Trace>>,
    /// The ensemble's inputs, validated, by ensemble input name.
    pub inputs: Vec<Tensor>,
    /// The ensemble outputs asked for.
    pub wanted: Vec<String>,
    /// The caller, for the steps' sequences.
    pub principal: Option<String>,
    /// How many model-code calls led to the ensemble's request.
    pub call_depth: u32,
    /// The request's cancellation flag, shared by its steps' requests.
    pub cancelled: Option<Arc<std::sync::atomic::AtomicBool>>,
}

/// Returned to a decoupled step once every step its response started has a slot, so it fetches its next
/// response only then: a full step (`max_inflight_requests`) holds back the decoupled steps feeding it.
struct Credit(Option<oneshot::Sender<()>>);

impl Drop for Credit {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

enum Event {
    /// One response of a step run for `iteration`.
    Response {
        step: usize,
        iteration: u64,
        outputs: Vec<Tensor>,
        credit: Option<Arc<Credit>>,
    },
    /// The step run finished (its last response was sent) after `took`.
    Done {
        took: Duration,
    },
    Failed(Error),
}

pub(crate) type Boxed<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

impl Plan {
    /// Runs one request; the summed time of its step requests on success. Boxed: an ensemble step may be
    /// an ensemble.
    pub(crate) fn run<'a>(&'a self, call: Call, sink: &'a mut Sink) -> Boxed<'a, Result<Duration>> {
        Box::pin(async move {
            self.walk(call, sink).await.map_err(|e| {
                Error::new(e.code(), format!("in ensemble '{}', {}", self.name, e.message()))
            })
        })
    }

    async fn walk(&self, call: Call, sink: &mut Sink) -> Result<Duration> {
        let composer = self
            .composer
            .clone()
            .ok_or_else(|| Error::internal(format!("ensemble '{}' is not linked", self.name)))?;
        let needed = self.needed(&call.wanted);
        let wanted: Vec<(String, usize)> = call
            .wanted
            .iter()
            .filter_map(|w| self.outputs.iter().find(|(n, _)| n == w).cloned())
            .collect();
        // How many times each tensor's value is still to be read: by the needed steps, and by the sink.
        let reads: Vec<usize> = (0..self.tensors.len())
            .map(|t| {
                self.consumers[t].iter().filter(|&&s| needed[s]).count()
                    + usize::from(wanted.iter().any(|(_, w)| *w == t))
            })
            .collect();
        let mut walk = Walk {
            plan: self,
            composer,
            call: &call,
            needed,
            wanted,
            reads,
            values: HashMap::new(),
            iterations: vec![0; self.steps.len()],
            tasks: JoinSet::new(),
            running: 0,
            took: Duration::ZERO,
        };
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut arrived = Vec::with_capacity(self.inputs.len());
        for (name, t) in &self.inputs {
            let value = call.inputs.iter().find(|i| &i.name == name).cloned();
            arrived.push(walk.store(*t, 0, value));
        }
        walk.advance(&arrived, 0, None, &tx, sink).await?;
        while walk.running > 0 {
            let event = tokio::select! {
                event = rx.recv() => event,
                // Finished tasks are reaped here; one that panicked sent nothing and fails the request.
                Some(joined) = walk.tasks.join_next() => match joined {
                    Err(e) if e.is_panic() => Some(Event::Failed(Error::internal(
                        "an ensemble step stopped unexpectedly",
                    ))),
                    _ => continue,
                },
            };
            let Some(event) = event else { break };
            match event {
                Event::Response { step, iteration, outputs, credit } => {
                    let s = &self.steps[step];
                    let iteration = if s.decoupled {
                        walk.iterations[step] += 1;
                        walk.iterations[step] - 1
                    } else {
                        iteration
                    };
                    let mut arrived = Vec::with_capacity(s.outputs.len());
                    for (name, t) in &s.outputs {
                        let value = outputs.iter().find(|o| &o.name == name).cloned();
                        arrived.push(walk.store(*t, iteration, value));
                    }
                    walk.advance(&arrived, iteration, credit, &tx, sink).await?;
                }
                Event::Done { took } => {
                    walk.running -= 1;
                    walk.took += took;
                }
                Event::Failed(e) => return Err(e),
            }
        }
        if let Sink::One(None) = sink {
            return Err(Error::internal(format!(
                "{}unexpected deadlock, at least one output is not set while no more ensemble steps can be made",
                crate::infer::request_label(&call.id)
            )));
        }
        Ok(walk.took)
    }

    /// Which steps feed an output asked for (the others do not run).
    pub(super) fn needed(&self, wanted: &[String]) -> Vec<bool> {
        let mut needed = vec![false; self.steps.len()];
        let mut stack: Vec<usize> = self
            .outputs
            .iter()
            .filter(|(n, _)| wanted.contains(n))
            .filter_map(|(_, t)| self.producer[*t])
            .collect();
        while let Some(s) = stack.pop() {
            if std::mem::replace(&mut needed[s], true) {
                continue;
            }
            stack.extend(self.steps[s].inputs.iter().filter_map(|(_, t)| self.producer[*t]));
        }
        needed
    }
}

/// The state of one ensemble request.
struct Walk<'a> {
    plan: &'a Plan,
    composer: Arc<dyn Composer>,
    call: &'a Call,
    needed: Vec<bool>,
    /// The ensemble outputs asked for, and their tensors.
    wanted: Vec<(String, usize)>,
    reads: Vec<usize>,
    /// (tensor, iteration) → value and the reads left; `None`: the producer did not send it. Each value
    /// arrives once, so a step starts (and a response forms) exactly when its last input arrives: nothing
    /// else needs remembering per iteration.
    values: HashMap<(usize, u64), (Option<Tensor>, usize)>,
    /// The next iteration of each decoupled step's flow.
    iterations: Vec<u64>,
    tasks: JoinSet<()>,
    running: usize,
    took: Duration,
}

impl Walk<'_> {
    /// Keeps a new value while something will read it; returns the tensor.
    fn store(&mut self, tensor: usize, iteration: u64, value: Option<Tensor>) -> usize {
        if self.reads[tensor] > 0 {
            self.values.insert((tensor, iteration), (value, self.reads[tensor]));
        }
        tensor
    }

    /// One read of a value; the last one frees it.
    fn read(&mut self, tensor: usize, iteration: u64) -> Option<Tensor> {
        let key = (tensor, iteration);
        let (value, left) = self.values.get_mut(&key)?;
        *left -= 1;
        if *left == 0 { self.values.remove(&key).and_then(|(v, _)| v) } else { value.clone() }
    }

    fn has(&self, tensor: usize, iteration: u64) -> bool {
        self.values.contains_key(&(tensor, iteration))
    }

    /// Starts the steps and forms the response that the values of `arrived` at `iteration` complete.
    async fn advance(
        &mut self,
        arrived: &[usize],
        iteration: u64,
        credit: Option<Arc<Credit>>,
        tx: &mpsc::UnboundedSender<Event>,
        sink: &mut Sink,
    ) -> Result<()> {
        let plan = self.plan;
        let mut ready: Vec<usize> = arrived
            .iter()
            .flat_map(|&t| plan.consumers[t].iter().copied())
            .filter(|&s| self.needed[s])
            .filter(|&s| plan.steps[s].inputs.iter().all(|(_, t)| self.has(*t, iteration)))
            .collect();
        ready.sort_unstable();
        ready.dedup();
        for s in ready {
            let inputs: Vec<InputTensor> = plan.steps[s]
                .inputs
                .iter()
                .filter_map(|(name, t)| {
                    let v = self.read(*t, iteration)?;
                    Some(InputTensor::new(name.clone(), v.datatype, v.shape, v.data))
                })
                .collect();
            self.launch(s, iteration, inputs, credit.clone(), tx.clone());
        }
        let complete = !self.wanted.is_empty()
            && arrived.iter().any(|t| self.wanted.iter().any(|(_, w)| w == t))
            && self.wanted.iter().all(|(_, t)| self.has(*t, iteration));
        if complete {
            let wanted = self.wanted.clone();
            let mut outputs = Vec::with_capacity(wanted.len());
            for (name, t) in wanted {
                if let Some(mut v) = self.read(t, iteration) {
                    v.name = name;
                    outputs.push(v);
                }
            }
            match sink {
                Sink::One(slot) => *slot = Some(outputs),
                Sink::Stream(out) => {
                    if out.send(Streamed::Response(outputs.into())).await.is_err() {
                        return Err(Error::new(
                            rampart_types::Code::Cancelled,
                            "the request was cancelled",
                        ));
                    }
                }
            }
        }
        drop(credit);
        Ok(())
    }

    /// Starts step `s` for `iteration` as a task of this request (aborted with it).
    fn launch(
        &mut self,
        s: usize,
        iteration: u64,
        inputs: Vec<InputTensor>,
        credit: Option<Arc<Credit>>,
        tx: mpsc::UnboundedSender<Event>,
    ) {
        let step = &self.plan.steps[s];
        let limiter = self.plan.limiters[s].clone();
        let model = step.model.clone();
        let request = InferRequest {
            model_name: step.model.clone(),
            model_version: step.version,
            id: self.call.id.clone(),
            parameters: self.call.parameters.clone(),
            inputs,
            outputs: step.outputs.iter().map(|(n, _)| RequestedOutput::new(n.clone())).collect(),
            raw_input: None,
            trace: self.call.trace.as_ref().and_then(|t| t.child(&step.model)),
            principal: self.call.principal.clone(),
            call_depth: self.call.call_depth,
            cancelled: self.call.cancelled.clone(),
        };
        let decoupled = step.decoupled;
        self.running += 1;
        // A step whose slot is free goes to its model now: the first poll queues it, so the steps of
        // requests sent in order reach a model in that order (a sequence model as a step).
        let free = match &limiter {
            None => Some(None),
            Some(l) => l.clone().try_acquire_owned().ok().map(Some),
        };
        let (started, waiting) = match free {
            Some(permit) => {
                let start = Instant::now();
                let mut call = self.composer.call(request);
                let polled = poll_once(&mut call);
                (Some((permit, start, call, polled)), None)
            }
            None => (None, Some(request)),
        };
        let composer = self.composer.clone();
        let task: Boxed<'static, ()> = Box::pin(async move {
            let (_permit, start, answer) = match started {
                Some((permit, start, call, polled)) => {
                    drop(credit);
                    let answer = match polled {
                        Some(answer) => answer,
                        None => call.await,
                    };
                    (permit, start, answer)
                }
                None => {
                    let permit = match limiter {
                        Some(l) => l.acquire_owned().await.ok(),
                        None => None,
                    };
                    drop(credit);
                    let start = Instant::now();
                    let request =
                        waiting.expect("a step that waits for its slot keeps its request");
                    (permit, start, composer.call(request).await)
                }
            };
            let outcome = deliver(answer, &model, decoupled, s, iteration, &tx).await;
            let _ = tx.send(match outcome {
                Ok(()) => Event::Done { took: start.elapsed() },
                Err(e) => Event::Failed(e),
            });
        });
        self.tasks.spawn(task);
    }
}

/// Polls a step's call once, with no waker: the call is queued by its model on the first poll (its
/// waker is registered again when the task awaits it).
fn poll_once<T>(call: &mut Boxed<'static, T>) -> Option<T> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match call.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => None,
    }
}

/// A step's answer, its responses sent to the ensemble as events.
async fn deliver(
    answer: Result<Answer>,
    model: &str,
    decoupled: bool,
    step: usize,
    iteration: u64,
    tx: &mpsc::UnboundedSender<Event>,
) -> Result<()> {
    let changed = || {
        Error::unavailable(format!(
            "model '{model}' changed its transaction policy since the ensemble was loaded"
        ))
    };
    match answer? {
        Answer::One(outputs) => {
            if decoupled {
                return Err(changed());
            }
            let _ = tx.send(Event::Response { step, iteration, outputs, credit: None });
        }
        Answer::Many(mut responses) => {
            if !decoupled {
                return Err(changed());
            }
            while let Some(outputs) = responses.next().await {
                let (back, wait) = oneshot::channel();
                let credit = Some(Arc::new(Credit(Some(back))));
                let event = Event::Response { step, iteration, outputs: outputs?, credit };
                if tx.send(event).is_err() {
                    return Err(Error::new(
                        rampart_types::Code::Cancelled,
                        "the ensemble request was cancelled",
                    ));
                }
                let _ = wait.await;
            }
        }
    }
    Ok(())
}
