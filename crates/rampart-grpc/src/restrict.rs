//! Restricted-protocol enforcement for the gRPC front end: a tower layer in front of every service that maps
//! the method to its category (docs/protocol.md, "gRPC service") and asks the core's check on the
//! request metadata before the method runs (streams included: they are refused before the first
//! message).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rampart_core::access::{Category, Protocol, Restrictions};
use rampart_core::audit::AuditLog;
use rampart_core::authorize::{Caller, Gate};
use rampart_tls::Peer;

/// The category of a gRPC method path (`/package.Service/Method`).
pub fn category(path: &str) -> Option<Category> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    match service {
        "grpc.health.v1.Health" => Some(Category::Health),
        "inference.GRPCInferenceService" => Some(match method {
            "ServerLive" | "ServerReady" | "ModelReady" => Category::Health,
            "ServerMetadata" | "ModelMetadata" => Category::Metadata,
            "ModelInfer" | "ModelStreamInfer" => Category::Inference,
            "ModelConfig" => Category::ModelConfig,
            "ModelStatistics" => Category::Statistics,
            "RepositoryIndex" | "RepositoryModelLoad" | "RepositoryModelUnload" => {
                Category::ModelRepository
            }
            "SystemSharedMemoryStatus"
            | "SystemSharedMemoryRegister"
            | "SystemSharedMemoryUnregister"
            | "CudaSharedMemoryStatus"
            | "CudaSharedMemoryRegister"
            | "CudaSharedMemoryUnregister" => Category::SharedMemory,
            "TraceSetting" => Category::Trace,
            "LogSettings" => Category::Logging,
            _ => return None,
        }),
        _ => None,
    }
}

/// `tower::Layer` applying `--grpc-restricted-protocol` and recording admin calls and refusals.
#[derive(Clone)]
pub struct RestrictLayer {
    gate: Gate,
}

impl RestrictLayer {
    pub fn new(rules: Arc<Restrictions>, audit: Option<Arc<AuditLog>>) -> Self {
        RestrictLayer { gate: Gate::new(rules, Default::default(), audit) }
    }
}

impl<S> tower::Layer<S> for RestrictLayer {
    type Service = Restrict<S>;
    fn layer(&self, inner: S) -> Restrict<S> {
        Restrict { inner, gate: self.gate.clone() }
    }
}

#[derive(Clone)]
pub struct Restrict<S> {
    inner: S,
    gate: Gate,
}

/// The core's view of the caller of a gRPC call to `method`.
pub(crate) fn caller<'a>(
    headers: &'a http::HeaderMap,
    peer: Option<&'a Peer>,
    method: &'a str,
) -> Caller<'a> {
    let identity = peer.and_then(|p| p.identity.as_deref());
    Caller::new(Protocol::Grpc, headers, identity, peer.map(|p| p.addr), method)
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for Restrict<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<S::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if let Some(cat) = category(req.uri().path()) {
            let peer = req.extensions().get::<Peer>();
            let caller = caller(req.headers(), peer, req.uri().path());
            match self.gate.authorize(cat, &caller) {
                Ok(()) => self.gate.audit_admin(cat, &caller, "allowed".into()),
                Err(e) => {
                    let status = tonic::Status::from(e);
                    return Box::pin(std::future::ready(Ok(status.into_http())));
                }
            }
        }
        Box::pin(self.inner.call(req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rpc_has_its_category() {
        assert_eq!(
            category("/inference.GRPCInferenceService/ModelStreamInfer"),
            Some(Category::Inference)
        );
        assert_eq!(category("/inference.GRPCInferenceService/ModelReady"), Some(Category::Health));
        assert_eq!(
            category("/inference.GRPCInferenceService/CudaSharedMemoryStatus"),
            Some(Category::SharedMemory)
        );
        assert_eq!(
            category("/inference.GRPCInferenceService/LogSettings"),
            Some(Category::Logging)
        );
        assert_eq!(category("/grpc.health.v1.Health/Check"), Some(Category::Health));
        assert_eq!(category("/inference.GRPCInferenceService/Nope"), None);
        assert_eq!(category("garbage"), None);
    }
}
