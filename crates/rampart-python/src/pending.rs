//! The requests a worker holds, and the order their responses go out in.
//!
//! A request stays pending until its model ends it, which may be after `execute` returned: a response
//! sender used from the model's own thread, or a decoupled model's `async def execute` running on. The worker
//! numbers the messages about each request (`seq`), whichever thread sends them: what `execute` returned
//! arrives with the execution's `done` on the work socket, what a response sender sent arrives on the events
//! socket. Each request's messages go out in that order; a message that overtook an earlier one waits.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Condvar, Mutex};

use bytes::Bytes;
use rampart_types::{Answers, Code, Error, Responder, Result, Tensor};
use serde_json::Value;

use crate::ipc;

/// Messages of one request that may wait for an earlier one.
const MAX_HELD: usize = 1024;

/// The pending requests of one worker, by (execution, index within it).
pub(crate) struct Pending {
    label: String,
    slots: Mutex<HashMap<(u64, u64), Arc<Slot>>>,
    /// Signalled when a request ends (for a drain before the worker is finalized).
    ended: Condvar,
}

struct Slot {
    answers: Arc<dyn Answers>,
    /// The outputs the request asked for, in order.
    outputs: Vec<String>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The sequence number of the next message to deliver.
    next: u64,
    held: BTreeMap<u64, (Value, Bytes)>,
    ended: bool,
    /// The worker was told the request is cancelled.
    told: bool,
}

/// The final flag of a response message.
const FINAL: u64 = 1;

impl Pending {
    pub(crate) fn new(label: String) -> Arc<Pending> {
        Arc::new(Pending { label, slots: Mutex::default(), ended: Condvar::new() })
    }

    pub(crate) fn register(
        &self,
        exec: u64,
        index: u64,
        answers: Arc<dyn Answers>,
        outputs: Vec<String>,
    ) {
        let slot = Arc::new(Slot { answers, outputs, state: Mutex::default() });
        self.lock().insert((exec, index), slot);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(u64, u64), Arc<Slot>>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A message about a request (`{"request", "seq", "flags", "response"}`): delivered in its turn.
    /// Messages about a request that already ended are dropped.
    pub(crate) fn offer(&self, exec: u64, message: &Value, data: &Bytes) {
        let Some(index) = message["request"].as_u64() else { return };
        let seq = message["seq"].as_u64().unwrap_or(0);
        let Some(slot) = self.lock().get(&(exec, index)).cloned() else { return };
        let mut state = slot.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.ended || seq < state.next {
            return;
        }
        if seq > state.next {
            if state.held.len() < MAX_HELD {
                state.held.insert(seq, (message.clone(), data.clone()));
            } else {
                let e = Error::internal(format!("{}: too many responses out of order", self.label));
                self.end(&slot, &mut state, (exec, index), Err(e));
            }
            return;
        }
        let mut current = (message.clone(), data.clone());
        loop {
            state.next += 1;
            if let Some(result) = self.deliver(&slot, &current.0, &current.1) {
                return self.end(&slot, &mut state, (exec, index), result);
            }
            let next = state.next;
            match state.held.remove(&next) {
                Some(m) => current = m,
                None => return,
            }
        }
    }

    /// Hands one message to the request's answers; `Some` when it ends the request.
    fn deliver(&self, slot: &Slot, message: &Value, data: &Bytes) -> Option<Result<()>> {
        let last = message["flags"].as_u64().unwrap_or(0) & FINAL == FINAL;
        let body = &message["response"];
        if body.is_null() {
            return last.then_some(Ok(()));
        }
        let outputs = match outputs(body, data, &slot.outputs, &self.label) {
            Ok(o) => o,
            Err(e) => return Some(Err(e)),
        };
        // The final flag travels with the response (no empty response after it).
        let parameters = body["parameters"].as_str().unwrap_or_default();
        let sent = slot.answers.send_with_parameters(outputs, parameters, last);
        if last { Some(sent) } else { sent.err().map(Err) }
    }

    fn end(&self, slot: &Slot, state: &mut State, key: (u64, u64), result: Result<()>) {
        state.ended = true;
        state.held.clear();
        self.lock().remove(&key);
        slot.answers.finish(result);
        self.ended.notify_all();
    }

    /// Ends every pending request with `error` (the worker is gone).
    pub(crate) fn fail_all(&self, error: &Error) {
        let slots: Vec<_> = self.lock().drain().collect();
        for (_, slot) in slots {
            let mut state = slot.state.lock().unwrap_or_else(|p| p.into_inner());
            if !state.ended {
                state.ended = true;
                slot.answers.finish(Err(error.clone()));
            }
        }
        self.ended.notify_all();
    }

    /// Whether a pending request is cancelled (an ended or unknown one is not).
    pub(crate) fn is_cancelled(&self, key: (u64, u64)) -> bool {
        self.lock().get(&key).is_some_and(|s| s.answers.is_cancelled())
    }

    /// The requests cancelled since the last call, so the model can be told. Those whose callers went away
    /// end now; a caller that cancelled but still reads (BLS `cancel()`) gets what the model still sends.
    pub(crate) fn cancelled(&self) -> Vec<(u64, u64)> {
        let cancelled: Vec<_> = {
            let slots = self.lock();
            slots
                .iter()
                .filter(|(_, s)| s.answers.is_cancelled())
                .map(|(k, s)| (*k, s.clone()))
                .collect()
        };
        let mut news = Vec::new();
        for (key, slot) in &cancelled {
            let mut state = slot.state.lock().unwrap_or_else(|p| p.into_inner());
            if !std::mem::replace(&mut state.told, true) {
                news.push(*key);
            }
            if !state.ended && slot.answers.caller_gone() {
                let e = Error::new(Code::Cancelled, "request cancelled: the client went away");
                self.end(slot, &mut state, *key, Err(e));
            }
        }
        news
    }

    /// Waits at most `timeout` for every pending request to end; answers how many are left.
    pub(crate) fn drain(&self, timeout: std::time::Duration) -> usize {
        let deadline = std::time::Instant::now() + timeout;
        let mut slots = self.lock();
        while !slots.is_empty() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            slots = self.ended.wait_timeout(slots, left).unwrap_or_else(|p| p.into_inner()).0;
        }
        slots.len()
    }
}

/// The requested outputs of one response body, in the order asked for.
fn outputs(body: &Value, data: &Bytes, wanted: &[String], model: &str) -> Result<Vec<Tensor>> {
    if let Some(e) = body.get("error").filter(|e| !e.is_null()) {
        return Err(ipc::error(e));
    }
    let sent = body["outputs"].as_array().map(Vec::as_slice).unwrap_or_default();
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

/// The answer of a request run through [`rampart_types::EngineInstance::execute`] (a sequence batch):
/// waited for on the calling thread.
#[derive(Default)]
pub(crate) struct Wait {
    result: Mutex<Option<Result<Vec<Tensor>>>>,
    ready: Condvar,
}

impl Wait {
    /// The answer, or `None` when none came within `timeout`.
    pub(crate) fn get(&self, timeout: std::time::Duration) -> Option<Result<Vec<Tensor>>> {
        let deadline = std::time::Instant::now() + timeout;
        let mut result = self.result.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(r) = result.take() {
                return Some(r);
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return None;
            }
            result = self.ready.wait_timeout(result, left).unwrap_or_else(|p| p.into_inner()).0;
        }
    }

    fn set(&self, r: Result<Vec<Tensor>>) -> bool {
        let mut result = self.result.lock().unwrap_or_else(|p| p.into_inner());
        if result.is_some() {
            return false;
        }
        *result = Some(r);
        self.ready.notify_all();
        true
    }
}

impl Responder for Wait {
    fn send(&self, outputs: Vec<Tensor>) -> Result<()> {
        if self.set(Ok(outputs)) {
            Ok(())
        } else {
            Err(Error::invalid_arg("a model that is not decoupled sends one response per request"))
        }
    }

    fn is_cancelled(&self) -> bool {
        false
    }
}

impl Answers for Wait {
    fn finish(&self, result: Result<()>) {
        let e = result.err().unwrap_or_else(|| {
            Error::internal("the model ended the request without sending a response")
        });
        self.set(Err(e));
    }
}
