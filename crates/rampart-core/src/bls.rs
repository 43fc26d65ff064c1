//! Model code calling the server's models (Triton's BLS: `pb_utils.InferenceRequest(...).exec()`).
//!
//! A call is an ordinary request to the target model (the same validation, scheduler, statistics and
//! traces), made on the server's runtime. What bounds it: the depth of a chain of calls
//! ([`MAX_CALL_DEPTH`], so a model that calls itself cannot recurse without end), the engine's own bound on
//! calls in flight per instance, and `--model-access`: model code presents no credential, so it cannot call
//! a model that a rule names.

use std::sync::Weak;

use rampart_types::{
    CallEvent, CorrelationId, Error, MetricOp, ModelCall, ModelCaller, ModelControl, RequestInfo,
};

use crate::infer::{InferRequest, InputTensor, ParamValue, RequestedOutput};
use crate::model::StreamedResponse;
use crate::server::{Inner, Server};

/// The longest chain of model-code calls: a request of a client, then up to this many calls in a row.
pub const MAX_CALL_DEPTH: u32 = 8;

/// The [`ModelCaller`] each instance of a model that runs code gets (the server is held weakly: it owns
/// the instance).
pub(crate) struct ServerCaller {
    pub inner: Weak<Inner>,
    /// The calling model, for messages.
    pub caller: String,
}

impl ModelCaller for ServerCaller {
    fn call(&self, call: ModelCall, mut sink: Box<dyn FnMut(CallEvent) + Send>) {
        // The server's runtime, else the one the caller runs on.
        let runtime = self.inner.upgrade().and_then(|i| i.options.runtime.clone());
        let Some(runtime) = runtime.or_else(|| tokio::runtime::Handle::try_current().ok()) else {
            sink(CallEvent::Error(Error::unavailable("model calls need the server's runtime")));
            return;
        };
        let inner = self.inner.clone();
        let caller = self.caller.clone();
        runtime.spawn(async move {
            if let Err(e) = run(inner, &caller, call, &mut sink).await {
                sink(CallEvent::Error(e));
            }
        });
    }

    /// Model control from model code: the server's own calls, so its model-control mode (explicit, for
    /// loads and unloads) and `--allow-model-file-override` apply as for a client.
    fn control(&self, request: ModelControl) -> rampart_types::Result<bool> {
        let server = Server {
            inner: self.inner.upgrade().ok_or_else(|| Error::unavailable("Server exiting"))?,
        };
        match request {
            ModelControl::Load { name, config, files } => {
                let load = crate::control::LoadRequest { config, files };
                server.load_model("", &name, load).map(|()| true)
            }
            ModelControl::Unload { name, dependents } => {
                server.unload_model("", &name, dependents).map(|()| true)
            }
            // A model the server does not know is not ready (Triton's `is_model_ready` answers False).
            ModelControl::Ready { name, version } => {
                match server.model_ready_blocking(&name, version) {
                    Err(e) if e.code() == rampart_types::Code::NotFound => Ok(false),
                    other => other,
                }
            }
        }
    }

    /// Metrics of model code (`pb_utils.MetricFamily`), shown on `/metrics`.
    fn metric(&self, op: MetricOp) -> rampart_types::Result<f64> {
        let inner = self.inner.upgrade().ok_or_else(|| Error::unavailable("Server exiting"))?;
        inner.custom_metrics.apply(op)
    }
}

async fn run(
    inner: Weak<Inner>,
    caller: &str,
    call: ModelCall,
    sink: &mut Box<dyn FnMut(CallEvent) + Send>,
) -> rampart_types::Result<()> {
    if call.depth > MAX_CALL_DEPTH {
        return Err(Error::new(
            rampart_types::Code::ResourceExhausted,
            format!(
                "model '{caller}': a chain of model calls (BLS) may be at most {MAX_CALL_DEPTH} deep; \
                 this call to '{}' would be {}",
                call.model_name, call.depth
            ),
        ));
    }
    let server =
        Server { inner: inner.upgrade().ok_or_else(|| Error::unavailable("Server exiting"))? };
    if server.inner.options.model_access.covers(&call.model_name) {
        return Err(Error::new(
            rampart_types::Code::PermissionDenied,
            format!(
                "model '{caller}' cannot call model '{}': --model-access protects it, and model code \
                 presents no credential",
                call.model_name
            ),
        ));
    }
    let cancelled = call.cancelled.clone();
    // As in Triton, an error before the request is queued names the model this way.
    let name = call.model_name.clone();
    let refused = |e: Error| {
        let message = format!("Model {name} - Error when running inference: {}", e.message());
        Error::new(e.code(), message)
    };
    let mut request = request(call).map_err(refused)?;
    request.cancelled = Some(cancelled.clone());
    let model = server.model(&request.model_name, request.model_version).map_err(refused)?;
    if !model.decoupled {
        let answer = tokio::select! {
            answer = model.infer(request) => answer?,
            () = until(&cancelled) => return Err(crate::executor::cancelled()),
        };
        sink(CallEvent::Last(call_response(answer)));
        return Ok(());
    }
    // As in Triton, a cancelled call (`ResponseIterator.cancel()`) keeps delivering what the model still
    // sends: the model sees its request cancelled and decides (a queued request is not executed).
    let mut stream = model.infer_decoupled(request).map_err(refused)?;
    loop {
        let next = stream.next().await;
        let event = match next {
            None | Some(Ok(StreamedResponse { response: None, last: true })) => CallEvent::Final,
            Some(Ok(StreamedResponse { response: Some(r), last: true })) => {
                CallEvent::Last(call_response(r))
            }
            Some(Ok(StreamedResponse { response: Some(r), last: false })) => {
                sink(CallEvent::Response(call_response(r)));
                continue;
            }
            Some(Ok(StreamedResponse { response: None, last: false })) => continue,
            Some(Err(e)) => return Err(e),
        };
        sink(event);
        return Ok(());
    }
}

/// A response as model code receives it.
fn call_response(r: crate::infer::InferResponse) -> rampart_types::CallResponse {
    let parameters_json = crate::infer::parameters_to_json(r.parameters.iter());
    rampart_types::CallResponse { outputs: r.outputs, parameters_json }
}

/// Returns once `flag` is set (checked every 20 ms).
async fn until(flag: &std::sync::atomic::AtomicBool) {
    while !flag.load(std::sync::atomic::Ordering::Acquire) {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The request a call makes: its parameters from the JSON object model code gave, its sequence from the
/// correlation ID and flags, its `timeout`.
fn request(call: ModelCall) -> rampart_types::Result<InferRequest> {
    let ModelCall { model_name, model_version, request, timeout_us, depth, .. } = call;
    let mut parameters =
        crate::infer::parameters_from_json(&request.info.parameters_json, "model call parameters")?;
    match &request.info.correlation_id {
        Some(CorrelationId::Uint(u)) => {
            parameters.insert("sequence_id".into(), ParamValue::Uint(*u));
        }
        Some(CorrelationId::String(s)) => {
            parameters.insert("sequence_id".into(), ParamValue::String(s.clone()));
        }
        None => {}
    }
    for (flag, key) in [
        (RequestInfo::SEQUENCE_START, "sequence_start"),
        (RequestInfo::SEQUENCE_END, "sequence_end"),
    ] {
        if request.info.flags & flag != 0 {
            parameters.insert(key.into(), ParamValue::Bool(true));
        }
    }
    if timeout_us > 0 {
        parameters.insert("timeout".into(), ParamValue::Uint(timeout_us));
    }
    Ok(InferRequest {
        model_name,
        model_version,
        id: request.info.id,
        parameters,
        inputs: request
            .inputs
            .into_iter()
            .map(|t| InputTensor::new(t.name, t.datatype, t.shape, t.data))
            .collect(),
        outputs: request.outputs.into_iter().map(RequestedOutput::new).collect(),
        call_depth: depth,
        ..Default::default()
    })
}
