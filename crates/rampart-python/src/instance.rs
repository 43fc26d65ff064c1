//! One instance of a Python model: its worker, restarted with backoff when it crashes or hangs, and the
//! execution of requests on it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rampart_types::{
    CorrelationId, EngineInstance, EngineRequest, Error, ModelSignature, Result, Submitted, Tensor,
};
use serde_json::{Value, json};

use crate::bls::Calls;
use crate::ipc::{self, Message};
use crate::sandbox::Policy;
use crate::worker::{Next, Setup, Worker};

/// How long the instance waits for its worker, from the model's parameters.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    /// `initialize()` (and `auto_complete_config`).
    pub load: Duration,
    /// Silence while executing (for a decoupled model: between two messages) before the worker counts as
    /// hung and is killed.
    pub execute: Duration,
    pub finalize: Duration,
}

/// The longest a restart waits after repeated failures.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

pub(crate) struct PythonInstance {
    pub setup: Arc<Setup>,
    pub label: String,
    /// The `load` message (model file, `initialize` args).
    pub load: Value,
    pub timeouts: Timeouts,
    pub signature: ModelSignature,
    pub policy: Policy,
    /// The model's directory (readable by the worker).
    pub model_dir: std::path::PathBuf,
    pub worker: Option<Worker>,
    /// Model calls (BLS) of its workers.
    pub calls: Calls,
    /// Failures in a row (crash, hang, failed restart); resets when a request succeeds.
    pub failures: u32,
    /// No restart before this.
    pub not_before: Instant,
    /// The number of the current execution; messages about an older one are stale.
    pub exec: u64,
    /// `model_transaction_policy { decoupled: true }`.
    pub decoupled: bool,
    /// The model defines `is_ready()` (its readiness checks go through `calls.readiness`).
    pub has_is_ready: bool,
}

impl PythonInstance {
    /// Starts a worker and runs `initialize()`; the load error carries the worker's traceback.
    pub(crate) fn start(&self) -> Result<Worker> {
        let (mut worker, reply) = Worker::start(
            &self.setup,
            self.label.clone(),
            &self.load,
            self.timeouts.load,
            &self.policy,
            &self.model_dir,
            self.calls.clone(),
        )?;
        match reply["op"].as_str() {
            Some("ready") => {
                self.calls.readiness.attach(worker.events.clone());
                worker.has_is_ready = reply["is_ready"] == true;
                Ok(worker)
            }
            Some("failed") => Err(Error::invalid_arg(format!(
                "{}: the model failed to load:\n{}",
                self.label,
                reply["message"].as_str().unwrap_or_default()
            ))),
            _ => Err(Error::internal(format!(
                "{}: unexpected first message from its worker",
                self.label
            ))),
        }
    }

    /// The running worker, restarted if it was lost and its backoff has passed.
    fn ready(&mut self) -> Result<()> {
        if let Some(status) = self.worker.as_mut().and_then(Worker::exited) {
            // It died while idle (or after its last execute returned): restart it for this request.
            self.lost(&format!("its worker process ended ({status})"));
        }
        if self.worker.is_some() {
            return Ok(());
        }
        let now = Instant::now();
        if now < self.not_before {
            return Err(Error::unavailable(format!(
                "{}: its worker is being restarted (next attempt in {:.1} s)",
                self.label,
                (self.not_before - now).as_secs_f64()
            )));
        }
        match self.start() {
            Ok(w) => {
                tracing::info!("{}: worker restarted", self.label);
                self.worker = Some(w);
                Ok(())
            }
            Err(e) => {
                self.back_off();
                Err(Error::unavailable(format!(
                    "{}: its worker could not be restarted: {}",
                    self.label,
                    e.message()
                )))
            }
        }
    }

    fn back_off(&mut self) {
        // The first restart is immediate (at the next request); then 1 s, 2 s, 4 s … up to 30 s.
        let wait = match self.failures {
            0 => Duration::ZERO,
            n => Duration::from_secs(1 << (n - 1).min(5)).min(MAX_BACKOFF),
        };
        self.failures += 1;
        self.not_before = Instant::now() + wait;
    }

    /// The worker is gone or useless: kill it, schedule the restart, and say so to the requests it held.
    fn lost(&mut self, why: &str) {
        let e = Error::unavailable(format!("{}: {why}; the worker is being restarted", self.label));
        if let Some(mut w) = self.worker.take() {
            // The requests learn why first (the reader thread would only see the channel close).
            w.pending.fail_all(&e);
            w.kill();
        }
        self.back_off();
        tracing::warn!("{}: {why}; the worker will be restarted", self.label);
    }

    /// Waits for the end of the current execution (`execute` returned) and hands what it returned to the
    /// requests; a worker that ends or stays silent too long is lost, with the requests it held.
    fn wait_done(&mut self) {
        let exec = self.exec;
        let worker = self.worker.as_mut().expect("a running worker");
        loop {
            match worker.next(self.timeouts.execute) {
                Next::Message(Message { header, data })
                    if header["exec"].as_u64() == Some(exec) && header["op"] == "done" =>
                {
                    for item in header["items"].as_array().map(Vec::as_slice).unwrap_or_default() {
                        worker.pending.offer(exec, item, &data);
                    }
                    if header["failed"] != true {
                        self.failures = 0;
                    }
                    return;
                }
                // A message about an earlier execution (one the worker answered after it was given up).
                Next::Message(_) => continue,
                Next::Closed(why) => {
                    return self.lost(&format!("its worker process ended while executing ({why})"));
                }
                Next::TimedOut => {
                    let secs = self.timeouts.execute.as_secs_f64();
                    return self.lost(&format!(
                        "its worker did not answer within {secs} s and was killed"
                    ));
                }
            }
        }
    }

    /// Sends the requests of one execution, their tensors in one sealed memfd.
    fn send(&mut self, requests: &[Submitted]) -> Result<()> {
        let decoupled = self.decoupled;
        let requests: Vec<&EngineRequest> = requests.iter().map(|s| &s.request).collect();
        let depth = requests.iter().map(|r| r.info.depth).max().unwrap_or(0);
        self.calls.depth.store(depth, std::sync::atomic::Ordering::SeqCst);
        let mut parts: Vec<&[u8]> = Vec::new();
        for r in &requests {
            parts.extend(r.inputs.iter().map(|t| t.data.as_ref()));
        }
        let (places, _) = ipc::layout(&parts);
        let mut place = places.into_iter();
        let described: Vec<Value> = requests
            .iter()
            .map(|r| {
                let inputs: Vec<Value> = r
                    .inputs
                    .iter()
                    .map(|t| ipc::describe(t, place.next().map_or(0, |p| p.0)))
                    .collect();
                let correlation_id = match &r.info.correlation_id {
                    Some(CorrelationId::Uint(u)) => json!(u),
                    Some(CorrelationId::String(s)) => json!(s),
                    None => json!(0),
                };
                json!({
                    "id": r.info.id,
                    "parameters": if r.info.parameters_json.is_empty() { "{}" } else { &r.info.parameters_json },
                    "correlation_id": correlation_id,
                    "flags": r.info.flags,
                    "timeout": r.info.timeout_us,
                    "inputs": inputs,
                    "outputs": r.outputs,
                })
            })
            .collect();
        let header = json!({"op": "execute", "exec": self.exec, "decoupled": decoupled, "requests": described});
        self.worker.as_ref().expect("a running worker").send(&header, &parts)
    }
}

impl EngineInstance for PythonInstance {
    fn signature(&self) -> &ModelSignature {
        &self.signature
    }

    fn readiness(&self) -> Option<Arc<dyn rampart_types::ReadinessCheck>> {
        self.has_is_ready
            .then(|| self.calls.readiness.clone() as Arc<dyn rampart_types::ReadinessCheck>)
    }

    /// A sequence batch: one request, waited for here.
    fn execute(&mut self, inputs: &[Tensor], outputs: &[String]) -> Result<Vec<Tensor>> {
        let wait = Arc::new(crate::pending::Wait::default());
        let request = EngineRequest::new(inputs.to_vec(), outputs.to_vec());
        self.submit(vec![Submitted { request, answers: wait.clone() }]);
        wait.get(self.timeouts.execute).unwrap_or_else(|| {
            let secs = self.timeouts.execute.as_secs_f64();
            Err(Error::unavailable(format!("{}: no response within {secs} s", self.label)))
        })
    }

    /// Sends the requests to the worker and returns once `execute` returned there; the requests end
    /// when the model answers them (see `pending.rs`).
    fn submit(&mut self, requests: Vec<Submitted>) {
        if let Err(e) = self.ready() {
            for s in requests {
                s.answers.finish(Err(e.clone()));
            }
            return;
        }
        self.exec += 1;
        let pending = self.worker.as_ref().expect("a running worker").pending.clone();
        for (i, s) in requests.iter().enumerate() {
            pending.register(self.exec, i as u64, s.answers.clone(), s.request.outputs.clone());
        }
        match self.send(&requests) {
            Ok(()) => self.wait_done(),
            Err(e) => self.lost(&format!("sending the request failed ({})", e.message())),
        }
    }
}

impl Drop for PythonInstance {
    fn drop(&mut self) {
        if let Some(w) = self.worker.take() {
            // Requests the model still answers on its own time get the finalize timeout to end.
            let left = w.pending.drain(self.timeouts.finalize);
            if left > 0 {
                tracing::warn!("{}: unloaded with {left} request(s) unanswered", self.label);
            }
            w.finalize(self.timeouts.finalize);
        }
    }
}
