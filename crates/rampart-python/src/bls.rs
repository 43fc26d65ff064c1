//! Calls from model code to the server's models (BLS), handled on the worker's reader thread so that a
//! call made from a model's own thread is served whether or not the instance is executing.
//!
//! A call's depth is one more than the deepest request the instance is executing (or last executed); at
//! most [`MAX_IN_FLIGHT`] calls of one worker run at once. Responses go back to the worker as they come,
//! on the same socket, their tensors in sealed memfds.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rampart_types::{
    CallEvent, CorrelationId, EngineRequest, Error, MetricKind, MetricOp, ModelCall, ModelCaller,
    ModelControl, RequestInfo, Result,
};
use serde_json::{Value, json};

use crate::ipc::{self, Message};

/// Calls one worker may have running at once.
pub(crate) const MAX_IN_FLIGHT: usize = 64;

/// What the reader thread needs to serve a worker's calls.
#[derive(Clone)]
pub(crate) struct Calls {
    pub caller: Option<Arc<dyn ModelCaller>>,
    /// The depth of the requests the instance executes (set by the instance thread).
    pub depth: Arc<AtomicU32>,
    pub in_flight: Arc<AtomicUsize>,
    pub label: String,
    /// Whether model code may load and unload models (`--backend-config=python,allow-model-control=true`).
    pub control_allowed: bool,
    /// The cancellation flag of each call in flight, by call id (`ResponseIterator.cancel()`).
    pub cancels: Arc<Mutex<HashMap<u64, Arc<AtomicBool>>>>,
    /// The model's `is_ready()` checks.
    pub readiness: Arc<crate::readiness::Readiness>,
}

impl Calls {
    /// Model code cancelled a call (`bls_cancel`).
    pub(crate) fn cancel(&self, m: &Message) {
        let key = m.header["call"].as_u64().unwrap_or(0);
        if let Some(flag) = self.cancels.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            flag.store(true, Ordering::Release);
        }
    }

    /// Starts the call a `bls` message asks for; its responses are written to `sock`.
    pub(crate) fn dispatch(&self, sock: &Arc<OwnedFd>, m: &Message) {
        let id = m.header["call"].clone();
        let send = {
            let sock = sock.clone();
            let id = id.clone();
            move |event: CallEvent| {
                let last = matches!(event, CallEvent::Last(_));
                let (header, tensors) = match event {
                    CallEvent::Response(r) | CallEvent::Last(r) => {
                        let header = json!({"op": "bls_response", "call": id, "final": last,
                            "response": true, "parameters": r.parameters_json});
                        (header, r.outputs)
                    }
                    CallEvent::Final => {
                        (json!({"op": "bls_response", "call": id, "final": true}), vec![])
                    }
                    CallEvent::Error(e) => (
                        json!({"op": "bls_response", "call": id, "final": true, "error": ipc::error_json(&e)}),
                        vec![],
                    ),
                };
                let mut header = header;
                let parts: Vec<&[u8]> = tensors.iter().map(|t| t.data.as_ref()).collect();
                let (places, _) = ipc::layout(&parts);
                let described: Vec<Value> =
                    tensors.iter().zip(places).map(|(t, (at, _))| ipc::describe(t, at)).collect();
                header["outputs"] = Value::Array(described);
                // The worker's reader always drains its socket; a worker that is gone drops the answer.
                let _ = ipc::send(&sock, &header, &parts);
            }
        };
        let call = match self.call(m) {
            Ok(c) => c,
            Err(e) => return send(CallEvent::Error(e)),
        };
        let Some(caller) = &self.caller else {
            return send(CallEvent::Error(Error::unsupported(
                "model calls are not available here",
            )));
        };
        if self.in_flight.fetch_add(1, Ordering::SeqCst) >= MAX_IN_FLIGHT {
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            return send(CallEvent::Error(Error::unavailable(format!(
                "{}: at most {MAX_IN_FLIGHT} model calls (BLS) may run at once per instance",
                self.label
            ))));
        }
        let in_flight = self.in_flight.clone();
        let key = id.as_u64().unwrap_or(0);
        self.cancels.lock().unwrap_or_else(|p| p.into_inner()).insert(key, call.cancelled.clone());
        let cancels = self.cancels.clone();
        caller.call(
            call,
            Box::new(move |event| {
                let last = !matches!(event, CallEvent::Response(_));
                send(event);
                if last {
                    cancels.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                }
            }),
        );
    }

    /// Runs the model-control request a `control` message asks for on a thread of its own (a load takes
    /// time; the reader keeps reading) and answers `control_response`.
    pub(crate) fn control(&self, sock: &Arc<OwnedFd>, m: &Message) {
        let id = m.header["call"].clone();
        let reply = {
            let sock = sock.clone();
            move |result: Result<bool>| {
                let mut header = json!({"op": "control_response", "call": id});
                match result {
                    Ok(b) => header["result"] = Value::Bool(b),
                    Err(e) => header["error"] = ipc::error_json(&e),
                }
                let _ = ipc::send(&sock, &header, &[]);
            }
        };
        if m.header["what"] == "metric" {
            // Quick (a mutex): answered here, in order with the worker's other messages.
            let result = self.metric_op(m).and_then(|op| match &self.caller {
                Some(c) => c.metric(op),
                None => Err(Error::unsupported("metrics are not available here")),
            });
            let mut header = json!({"op": "control_response", "call": m.header["call"].clone()});
            match result {
                Ok(v) => header["result"] = json!(v),
                Err(e) => header["error"] = ipc::error_json(&e),
            }
            let _ = ipc::send(sock, &header, &[]);
            return;
        }
        let request = match self.control_request(m) {
            Ok(r) => r,
            Err(e) => return reply(Err(e)),
        };
        let Some(caller) = self.caller.clone() else {
            return reply(Err(Error::unsupported("model control is not available here")));
        };
        let spawned = std::thread::Builder::new()
            .name("rampart-python-control".into())
            .spawn(move || reply(caller.control(request)));
        if let Err(e) = spawned {
            tracing::warn!("{}: cannot start a model-control thread: {e}", self.label);
        }
    }

    /// The metric operation a `control` message with `what: metric` asks for.
    fn metric_op(&self, m: &Message) -> Result<MetricOp> {
        let h = &m.header;
        let family = h["family"].as_str().unwrap_or_default().to_string();
        let labels = h["labels"]
            .as_object()
            .map(|o| {
                o.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default();
        let number = |k: &str| h[k].as_f64().unwrap_or(0.0);
        Ok(match h["metric_op"].as_str().unwrap_or_default() {
            "family" => MetricOp::Family {
                name: family,
                description: h["description"].as_str().unwrap_or_default().to_string(),
                kind: match h["kind"].as_u64() {
                    Some(0) => MetricKind::Counter,
                    Some(1) => MetricKind::Gauge,
                    Some(2) => MetricKind::Histogram,
                    _ => {
                        return Err(Error::invalid_arg(
                            "metric kind must be COUNTER, GAUGE or HISTOGRAM",
                        ));
                    }
                },
            },
            "metric" => MetricOp::Metric {
                family,
                labels,
                buckets: h["buckets"]
                    .as_array()
                    .map(|b| b.iter().filter_map(Value::as_f64).collect())
                    .unwrap_or_default(),
            },
            "increment" => MetricOp::Increment { family, labels, by: number("value") },
            "set" => MetricOp::Set { family, labels, value: number("value") },
            "observe" => MetricOp::Observe { family, labels, value: number("value") },
            "value" => MetricOp::Value { family, labels },
            other => return Err(Error::invalid_arg(format!("unknown metric operation '{other}'"))),
        })
    }

    fn control_request(&self, m: &Message) -> Result<ModelControl> {
        let h = &m.header;
        let name = h["model_name"].as_str().unwrap_or_default().to_string();
        let what = h["what"].as_str().unwrap_or_default();
        if what != "ready" && !self.control_allowed {
            return Err(Error::new(
                rampart_types::Code::PermissionDenied,
                format!(
                    "{}: model code may not load or unload models; the operator allows it with \
                     --backend-config=python,allow-model-control=true",
                    self.label
                ),
            ));
        }
        Ok(match what {
            "load" => {
                let files = h["files"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default()
                    .iter()
                    .map(|f| {
                        let at = f["at"].as_u64().unwrap_or(0);
                        let len = f["len"].as_u64().unwrap_or(0);
                        let data = if len == 0 {
                            Default::default()
                        } else {
                            ipc::slice(&m.data, at, len)?
                        };
                        Ok((f["name"].as_str().unwrap_or_default().to_string(), data.to_vec()))
                    })
                    .collect::<Result<Vec<_>>>()?;
                let config = h["config"].as_str().filter(|c| !c.is_empty()).map(str::to_string);
                ModelControl::Load { name, config, files }
            }
            "unload" => ModelControl::Unload {
                name,
                dependents: h["dependents"].as_bool().unwrap_or(false),
            },
            _ => ModelControl::Ready {
                name,
                version: h["model_version"]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .filter(|&v: &i64| v > 0),
            },
        })
    }

    /// The call a `bls` message describes.
    fn call(&self, m: &Message) -> Result<ModelCall> {
        let h = &m.header;
        let bad = |what: &str| Error::invalid_arg(format!("{}: model call: {what}", self.label));
        let model_name = h["model_name"]
            .as_str()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| bad("no model name"))?;
        let model_version = match h["model_version"].as_i64() {
            Some(v) if v > 0 => Some(v),
            _ => None,
        };
        let r = &h["request"];
        let inputs = r["inputs"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|d| ipc::tensor(d, &m.data, &self.label))
            .collect::<Result<Vec<_>>>()?;
        let outputs = r["outputs"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|o| {
                o.as_str().map(str::to_string).ok_or_else(|| bad("output names must be strings"))
            })
            .collect::<Result<Vec<_>>>()?;
        let correlation_id = match &r["correlation_id"] {
            Value::Number(n) if n.as_u64().is_some_and(|u| u > 0) => {
                n.as_u64().map(CorrelationId::Uint)
            }
            Value::String(s) if !s.is_empty() => Some(CorrelationId::String(s.clone())),
            _ => None,
        };
        let info = RequestInfo {
            id: r["id"].as_str().unwrap_or_default().to_string(),
            parameters_json: r["parameters"].as_str().unwrap_or("{}").to_string(),
            correlation_id,
            flags: r["flags"].as_u64().unwrap_or(0) as u32,
            ..Default::default()
        };
        Ok(ModelCall {
            model_name: model_name.to_string(),
            model_version,
            request: EngineRequest { info, inputs, outputs },
            timeout_us: h["timeout"].as_u64().unwrap_or(0),
            depth: self.depth.load(Ordering::SeqCst) + 1,
            cancelled: Default::default(),
        })
    }
}
