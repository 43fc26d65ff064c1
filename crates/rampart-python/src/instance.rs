//! One instance of a Python model: its worker, restarted with backoff when it crashes or hangs, and the
//! execution of requests on it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rampart_types::{
    Code, CorrelationId, EngineInstance, EngineRequest, Error, ModelSignature, Responder, Result,
    Tensor,
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
/// How often a decoupled request checks whether its caller went away.
const CANCEL_POLL: Duration = Duration::from_millis(100);

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
}

impl PythonInstance {
    /// Starts a worker and runs `initialize()`; the load error carries the worker's traceback.
    pub(crate) fn start(&self) -> Result<Worker> {
        let (worker, reply) = Worker::start(
            &self.setup,
            self.label.clone(),
            &self.load,
            self.timeouts.load,
            &self.policy,
            &self.model_dir,
            self.calls.clone(),
        )?;
        match reply["op"].as_str() {
            Some("ready") => Ok(worker),
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
    fn lost(&mut self, why: &str) -> Error {
        if let Some(mut w) = self.worker.take() {
            w.kill();
        }
        self.back_off();
        tracing::warn!("{}: {why}; the worker will be restarted", self.label);
        Error::unavailable(format!("{}: {why}; the worker is being restarted", self.label))
    }

    /// Waits for the next message about the current execution; an error when the worker is lost.
    fn next(&mut self, timeout: Duration) -> Result<Wait> {
        let exec = self.exec;
        let worker = self.worker.as_mut().expect("a running worker");
        match worker.next(timeout) {
            Next::Message(m) if m.header["exec"].as_u64() == Some(exec) => Ok(Wait::Got(m)),
            Next::Message(_) => Ok(Wait::Stale),
            Next::Closed(why) => {
                Err(self.lost(&format!("its worker process ended while executing ({why})")))
            }
            Next::TimedOut => Ok(Wait::Quiet),
        }
    }

    /// Sends the requests of one execution, their tensors in one sealed memfd.
    fn send(&mut self, requests: &[EngineRequest], decoupled: bool) -> Result<()> {
        self.exec += 1;
        let depth = requests.iter().map(|r| r.info.depth).max().unwrap_or(0);
        self.calls.depth.store(depth, std::sync::atomic::Ordering::SeqCst);
        let mut parts: Vec<&[u8]> = Vec::new();
        for r in requests {
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
                    "inputs": inputs,
                    "outputs": r.outputs,
                })
            })
            .collect();
        let header = json!({"op": "execute", "exec": self.exec, "decoupled": decoupled, "requests": described});
        let sent = self.worker.as_ref().expect("a running worker").send(&header, &parts);
        sent.map_err(|e| self.lost(&format!("sending the request failed ({})", e.message())))
    }

    /// The requested outputs of one response body, in the order asked for.
    fn outputs(&self, body: &Value, data: &bytes::Bytes, wanted: &[String]) -> Result<Vec<Tensor>> {
        if let Some(e) = body.get("error").filter(|e| !e.is_null()) {
            return Err(ipc::error(e));
        }
        let sent = body["outputs"].as_array().map(Vec::as_slice).unwrap_or_default();
        let model = self.label.as_str();
        wanted
            .iter()
            .map(|name| {
                let desc = sent.iter().find(|d| d["name"] == name.as_str()).ok_or_else(|| {
                    let names: Vec<&str> = sent.iter().filter_map(|d| d["name"].as_str()).collect();
                    Error::internal(format!(
                        "{model}: the response has no output '{name}' (it has: {})",
                        names.join(", ")
                    ))
                })?;
                ipc::tensor(desc, data, model)
            })
            .collect()
    }

    fn hung(&mut self) -> Error {
        let secs = self.timeouts.execute.as_secs_f64();
        self.lost(&format!("its worker did not answer within {secs} s and was killed"))
    }
}

/// What waiting for the worker gave.
enum Wait {
    Got(Message),
    /// A message about an earlier execution (a decoupled model's thread that kept sending).
    Stale,
    /// Nothing within the time given.
    Quiet,
}

impl EngineInstance for PythonInstance {
    fn signature(&self) -> &ModelSignature {
        &self.signature
    }

    fn execute(&mut self, inputs: &[Tensor], outputs: &[String]) -> Result<Vec<Tensor>> {
        let request = EngineRequest::new(inputs.to_vec(), outputs.to_vec());
        self.execute_requests(std::slice::from_ref(&request)).pop().expect("one result")
    }

    fn execute_requests(&mut self, requests: &[EngineRequest]) -> Vec<Result<Vec<Tensor>>> {
        let all = |e: Error| vec![Err(e); requests.len()];
        if let Err(e) = self.ready().and_then(|()| self.send(requests, false)) {
            return all(e);
        }
        let Message { header, data } = loop {
            match self.next(self.timeouts.execute) {
                Ok(Wait::Got(m)) if m.header["op"] == "responses" => break m,
                Ok(Wait::Got(_) | Wait::Stale) => continue,
                Ok(Wait::Quiet) => return all(self.hung()),
                Err(e) => return all(e),
            }
        };
        let bodies = header["responses"].as_array().map(Vec::as_slice).unwrap_or_default();
        if bodies.len() != requests.len() {
            return all(Error::internal(format!("{}: wrong number of responses", self.label)));
        }
        let results: Vec<_> =
            bodies.iter().zip(requests).map(|(b, r)| self.outputs(b, &data, &r.outputs)).collect();
        if results.iter().any(Result::is_ok) {
            self.failures = 0;
        }
        results
    }

    fn execute_decoupled(
        &mut self,
        request: &EngineRequest,
        responder: &dyn Responder,
    ) -> Result<()> {
        self.ready()?;
        self.send(std::slice::from_ref(request), true)?;
        let mut cancelled = false;
        let mut quiet_since = Instant::now();
        loop {
            if !cancelled && responder.is_cancelled() {
                cancelled = true;
                self.cancel();
            }
            let Message { header, data } = match self.next(CANCEL_POLL)? {
                Wait::Got(m) => m,
                Wait::Stale => continue,
                Wait::Quiet if quiet_since.elapsed() >= self.timeouts.execute => {
                    return Err(self.hung());
                }
                Wait::Quiet => continue,
            };
            quiet_since = Instant::now();
            match header["op"].as_str() {
                Some("response") => {
                    let body = &header["response"];
                    if !body.is_null() {
                        let outputs = self.outputs(body, &data, &request.outputs)?;
                        if !cancelled && responder.send(outputs).is_err() {
                            cancelled = true;
                            self.cancel();
                        }
                    }
                    if header["flags"].as_u64().unwrap_or(0) & 1 == 1 {
                        self.failures = 0;
                        return if cancelled { Err(cancelled_error()) } else { Ok(()) };
                    }
                }
                Some("executed") if !header["error"].is_null() => {
                    return Err(ipc::error(&header["error"]));
                }
                _ => {}
            }
        }
    }
}

impl PythonInstance {
    /// Tells the model that the caller of the current request went away (`request.is_cancelled()`).
    fn cancel(&mut self) {
        if let Some(w) = &self.worker {
            let _ = w.send_event(&json!({"op": "cancel", "exec": self.exec, "request": 0}));
        }
    }
}

fn cancelled_error() -> Error {
    Error::new(Code::Cancelled, "request cancelled: the client went away")
}

impl Drop for PythonInstance {
    fn drop(&mut self) {
        if let Some(w) = self.worker.take() {
            w.finalize(self.timeouts.finalize);
        }
    }
}
