//! The inference calls' shared part: the service state, converting and tracing a request, the
//! `--model-access` check of a caller, and the core call for unary and streamed requests.

use std::sync::Arc;

use rampart_core::Server;
use rampart_core::authorize::Gate;
use rampart_tls::Peer;
use rampart_types::Error;
use tonic::{Request, Status};

use crate::convert;
use crate::pb;

/// A sampled request's trace.
pub(crate) type Trace = Arc<rampart_core::trace::Trace>;

/// Renders a core error through the one error-code table (`From<Error> for Status`).
pub(crate) fn status(e: Error) -> Status {
    e.into()
}

#[derive(Clone)]
pub(crate) struct Inference {
    pub(crate) server: Server,
    /// `--model-access` (the category check runs in the restrict layer).
    pub(crate) gate: Gate,
    pub(crate) max_pending_responses: usize,
}

/// What the model-access check needs from a call, kept for the life of a stream.
pub(crate) struct Caller {
    headers: http::HeaderMap,
    peer: Option<Peer>,
    method: &'static str,
}

impl Inference {
    /// The caller of an inference call, when `--model-access` rules exist or the caller can be identified
    /// (a key the gate knows, a verified certificate); nothing is copied otherwise.
    pub(crate) fn caller<T>(&self, r: &Request<T>, method: &'static str) -> Option<Arc<Caller>> {
        let verified = r.extensions().get::<Peer>().is_some_and(|p| p.identity.is_some());
        self.gate.describes_callers(verified).then(|| {
            Arc::new(Caller {
                headers: r.metadata().clone().into_headers(),
                peer: r.extensions().get::<Peer>().cloned(),
                method,
            })
        })
    }

    /// `--model-access` for one request; the caller's principal on success.
    pub(crate) fn check_model(
        &self,
        caller: Option<&Caller>,
        model: &str,
    ) -> Result<Option<String>, Error> {
        let Some(c) = caller else { return Ok(None) };
        let caller = crate::restrict::caller(&c.headers, c.peer.as_ref(), c.method);
        self.gate.authorize_model(&self.server, model, &caller)
    }

    /// The core request of a call, traced when sampled. `traceparent`: the W3C trace context from the
    /// call's metadata, if any.
    fn request(
        &self,
        req: pb::ModelInferRequest,
        traceparent: Option<&str>,
        principal: Option<String>,
    ) -> Result<rampart_core::InferRequest, Error> {
        let trace = self.server.start_trace(&req.model_name, traceparent);
        if let Some(t) = &trace {
            t.stamp("GRPC_WAITREAD_START");
        }
        let mut req = convert::infer_request(req)?;
        req.principal = principal;
        if let Some(t) = trace {
            t.stamp("GRPC_WAITREAD_END");
            req.trace = Some(t);
        }
        Ok(req)
    }

    pub(crate) async fn infer(
        &self,
        req: pb::ModelInferRequest,
        traceparent: Option<&str>,
        principal: Option<String>,
    ) -> Result<pb::ModelInferResponse, Error> {
        let req = self.request(req, traceparent, principal)?;
        let trace = req.trace.clone();
        let resp = self.server.infer_unary(req, "ModelInfer RPC").await?;
        if let Some(t) = &trace {
            t.stamp("GRPC_SEND_START");
        }
        let resp = convert::infer_response(resp);
        if let Some(t) = &trace {
            t.stamp("GRPC_SEND_END");
        }
        Ok(resp)
    }

    pub(crate) async fn infer_stream(
        &self,
        req: pb::ModelInferRequest,
        traceparent: Option<&str>,
        principal: Option<String>,
    ) -> Result<(rampart_core::ResponseStream, Option<Trace>), Error> {
        let req = self.request(req, traceparent, principal)?;
        let trace = req.trace.clone();
        Ok((self.server.infer_stream(req).await?, trace))
    }
}
