//! The `GRPCInferenceService` and `Health` implementations over the core `Server`.

use std::pin::Pin;
use std::sync::Arc;

use rampart_core::access::{ModelAccess, Protocol, Restrictions};
use rampart_core::audit::AuditLog;
use rampart_core::authorize::Gate;
use rampart_core::{Server, features, parse_version};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::convert;
use crate::inference::{Inference, status};

use crate::health_pb::{self, health_check_response::ServingStatus, health_server};
use crate::pb::{self, grpc_inference_service_server as gis};
use crate::stream::InferStream;

/// Front-end settings that come from flags.
#[derive(Debug, Clone)]
pub struct GrpcOptions {
    /// Largest message accepted or sent (Rampart's `--grpc-max-message-size`, default 64 MiB).
    pub max_message_size: usize,
    /// Compress every response the client accepts compressed (`--grpc-infer-response-compression-level`);
    /// otherwise only responses to compressed requests (see [`crate::CompressionLayer`]).
    pub compress_responses: bool,
    /// `--model-access`: per-model inference rules.
    pub model_access: Arc<ModelAccess>,
    /// Where refused model access is recorded.
    pub audit: Option<Arc<AuditLog>>,
    /// Responses of one `ModelStreamInfer` stream that may wait to be written
    /// (`--grpc-max-response-pool-size`).
    pub max_pending_responses: usize,
}

impl Default for GrpcOptions {
    fn default() -> Self {
        GrpcOptions {
            max_message_size: 64 << 20,
            compress_responses: false,
            model_access: Default::default(),
            audit: None,
            max_pending_responses: crate::stream::DEFAULT_PENDING_RESPONSES,
        }
    }
}

/// The W3C `traceparent` of a call, from its metadata.
fn traceparent<T>(r: &Request<T>) -> Option<String> {
    r.metadata().get("traceparent").and_then(|v| v.to_str().ok()).map(str::to_string)
}

#[tonic::async_trait]
impl gis::GrpcInferenceService for Inference {
    async fn server_live(
        &self,
        _: Request<pb::ServerLiveRequest>,
    ) -> Result<Response<pb::ServerLiveResponse>, Status> {
        let live = self.server.is_live()?;
        Ok(Response::new(pb::ServerLiveResponse { live }))
    }

    async fn server_ready(
        &self,
        _: Request<pb::ServerReadyRequest>,
    ) -> Result<Response<pb::ServerReadyResponse>, Status> {
        let ready = self.server.is_ready()?;
        Ok(Response::new(pb::ServerReadyResponse { ready }))
    }

    async fn model_ready(
        &self,
        r: Request<pb::ModelReadyRequest>,
    ) -> Result<Response<pb::ModelReadyResponse>, Status> {
        let r = r.into_inner();
        let version = parse_version(&r.version)?;
        let ready = self.server.model_ready(&r.name, version).await?;
        Ok(Response::new(pb::ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _: Request<pb::ServerMetadataRequest>,
    ) -> Result<Response<pb::ServerMetadataResponse>, Status> {
        let m = self.server.metadata();
        Ok(Response::new(pb::ServerMetadataResponse {
            name: m.name,
            version: m.version,
            extensions: m.extensions,
        }))
    }

    async fn model_metadata(
        &self,
        r: Request<pb::ModelMetadataRequest>,
    ) -> Result<Response<pb::ModelMetadataResponse>, Status> {
        let r = r.into_inner();
        let version = parse_version(&r.version)?;
        let m = self.server.model_metadata(&r.name, version)?;
        let t = |v: Vec<rampart_core::TensorMetadata>| {
            v.into_iter()
                .map(|t| pb::model_metadata_response::TensorMetadata {
                    name: t.name,
                    datatype: t.datatype.as_str().to_string(),
                    shape: t.shape,
                })
                .collect()
        };
        Ok(Response::new(pb::ModelMetadataResponse {
            name: m.name,
            versions: m.versions,
            platform: m.platform,
            inputs: t(m.inputs),
            outputs: t(m.outputs),
        }))
    }

    async fn model_infer(
        &self,
        r: Request<pb::ModelInferRequest>,
    ) -> Result<Response<pb::ModelInferResponse>, Status> {
        let caller = self.caller(&r, "/inference.GRPCInferenceService/ModelInfer");
        let traceparent = traceparent(&r);
        let req = r.into_inner();
        let principal = self.check_model(caller.as_deref(), &req.model_name)?;
        let resp = self.infer(req, traceparent.as_deref(), principal).await?;
        Ok(Response::new(resp))
    }

    type ModelStreamInferStream = InferStream;

    async fn model_stream_infer(
        &self,
        r: Request<Streaming<pb::ModelInferRequest>>,
    ) -> Result<Response<Self::ModelStreamInferStream>, Status> {
        // With `triton_grpc_error: true` the first error ends the stream with a real status; otherwise errors
        // travel in `error_message` and the stream stays open.
        let close_on_error = r
            .metadata()
            .get("triton_grpc_error")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let cx = crate::stream::StreamContext {
            inference: self.clone(),
            caller: self.caller(&r, "/inference.GRPCInferenceService/ModelStreamInfer"),
            traceparent: traceparent(&r).map(Arc::from),
            close_on_error,
        };
        let pending = self.max_pending_responses;
        Ok(Response::new(crate::stream::serve(cx, r.into_inner(), pending)))
    }

    async fn model_config(
        &self,
        r: Request<pb::ModelConfigRequest>,
    ) -> Result<Response<pb::ModelConfigResponse>, Status> {
        let r = r.into_inner();
        let version = parse_version(&r.version)?;
        let config = self.server.model_config(&r.name, version)?;
        Ok(Response::new(pb::ModelConfigResponse { config: Some((*config).clone()) }))
    }

    async fn model_statistics(
        &self,
        r: Request<pb::ModelStatisticsRequest>,
    ) -> Result<Response<pb::ModelStatisticsResponse>, Status> {
        let r = r.into_inner();
        let version = parse_version(&r.version)?;
        let name = (!r.name.is_empty()).then_some(r.name.as_str());
        let stats = self.server.statistics(name, version)?;
        Ok(Response::new(convert::statistics(stats)))
    }

    async fn repository_index(
        &self,
        r: Request<pb::RepositoryIndexRequest>,
    ) -> Result<Response<pb::RepositoryIndexResponse>, Status> {
        let r = r.into_inner();
        let models = self
            .server
            .repository_index(r.ready)
            .into_iter()
            .map(|e| pb::repository_index_response::ModelIndex {
                name: e.name,
                version: e.version,
                state: e.state.map(|s| s.as_str().to_string()).unwrap_or_default(),
                reason: e.reason,
            })
            .collect();
        Ok(Response::new(pb::RepositoryIndexResponse { models }))
    }

    async fn repository_model_load(
        &self,
        r: Request<pb::RepositoryModelLoadRequest>,
    ) -> Result<Response<pb::RepositoryModelLoadResponse>, Status> {
        let r = r.into_inner();
        self.server.check_model_control(&r.repository_name)?;
        let request = convert::load_request(r.parameters)?;
        let server = self.server.clone();
        blocking(move || server.load_model(&r.repository_name, &r.model_name, request)).await?;
        Ok(Response::new(pb::RepositoryModelLoadResponse {}))
    }

    async fn repository_model_unload(
        &self,
        r: Request<pb::RepositoryModelUnloadRequest>,
    ) -> Result<Response<pb::RepositoryModelUnloadResponse>, Status> {
        let r = r.into_inner();
        self.server.check_model_control(&r.repository_name)?;
        let dependents = convert::unload_dependents(&r.parameters)?;
        let server = self.server.clone();
        blocking(move || server.unload_model(&r.repository_name, &r.model_name, dependents))
            .await?;
        Ok(Response::new(pb::RepositoryModelUnloadResponse {}))
    }

    async fn system_shared_memory_status(
        &self,
        r: Request<pb::SystemSharedMemoryStatusRequest>,
    ) -> Result<Response<pb::SystemSharedMemoryStatusResponse>, Status> {
        let name = &r.get_ref().name;
        let regions =
            self.server.shared_memory().status((!name.is_empty()).then_some(name.as_str()))?;
        let regions = regions
            .into_iter()
            .map(|s| {
                let status = pb::system_shared_memory_status_response::RegionStatus {
                    name: s.name.clone(),
                    key: s.key,
                    offset: s.offset,
                    byte_size: s.byte_size,
                };
                (s.name, status)
            })
            .collect();
        Ok(Response::new(pb::SystemSharedMemoryStatusResponse { regions }))
    }

    async fn system_shared_memory_register(
        &self,
        r: Request<pb::SystemSharedMemoryRegisterRequest>,
    ) -> Result<Response<pb::SystemSharedMemoryRegisterResponse>, Status> {
        let r = r.into_inner();
        self.server.shared_memory().register(&r.name, &r.key, r.offset, r.byte_size)?;
        Ok(Response::new(pb::SystemSharedMemoryRegisterResponse {}))
    }

    async fn system_shared_memory_unregister(
        &self,
        r: Request<pb::SystemSharedMemoryUnregisterRequest>,
    ) -> Result<Response<pb::SystemSharedMemoryUnregisterResponse>, Status> {
        let name = &r.get_ref().name;
        self.server.shared_memory().unregister((!name.is_empty()).then_some(name.as_str()))?;
        Ok(Response::new(pb::SystemSharedMemoryUnregisterResponse {}))
    }

    async fn cuda_shared_memory_status(
        &self,
        r: Request<pb::CudaSharedMemoryStatusRequest>,
    ) -> Result<Response<pb::CudaSharedMemoryStatusResponse>, Status> {
        self.server.cuda_shared_memory_status(Some(&r.get_ref().name))?;
        Ok(Response::new(pb::CudaSharedMemoryStatusResponse::default()))
    }

    async fn cuda_shared_memory_register(
        &self,
        _: Request<pb::CudaSharedMemoryRegisterRequest>,
    ) -> Result<Response<pb::CudaSharedMemoryRegisterResponse>, Status> {
        Err(status(features::cuda_shm_unsupported()))
    }

    async fn cuda_shared_memory_unregister(
        &self,
        r: Request<pb::CudaSharedMemoryUnregisterRequest>,
    ) -> Result<Response<pb::CudaSharedMemoryUnregisterResponse>, Status> {
        let name = &r.get_ref().name;
        self.server.cuda_shared_memory_unregister((!name.is_empty()).then_some(name.as_str()))?;
        Ok(Response::new(pb::CudaSharedMemoryUnregisterResponse {}))
    }

    async fn trace_setting(
        &self,
        r: Request<pb::TraceSettingRequest>,
    ) -> Result<Response<pb::TraceSettingResponse>, Status> {
        let r = r.into_inner();
        let model = (!r.model_name.is_empty()).then_some(r.model_name.as_str());
        let settings = if r.settings.is_empty() {
            self.server.trace_settings(model)
        } else {
            convert::trace_update(&r.settings)
                .and_then(|u| self.server.update_trace_settings(model, &u))
        }?;
        Ok(Response::new(convert::trace_settings(&settings)))
    }

    async fn log_settings(
        &self,
        r: Request<pb::LogSettingsRequest>,
    ) -> Result<Response<pb::LogSettingsResponse>, Status> {
        let r = r.into_inner();
        let settings = if r.settings.is_empty() {
            self.server.log_settings()
        } else {
            convert::log_update(r.settings).and_then(|u| self.server.update_log_settings(&u))
        }?;
        Ok(Response::new(convert::log_settings(&settings)))
    }
}

struct Health {
    server: Server,
}

fn serving_status(server: &Server) -> i32 {
    match server.is_ready() {
        Ok(true) => ServingStatus::Serving as i32,
        _ => ServingStatus::NotServing as i32,
    }
}

type WatchStream =
    Pin<Box<dyn Stream<Item = Result<health_pb::HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl health_server::Health for Health {
    async fn check(
        &self,
        _: Request<health_pb::HealthCheckRequest>,
    ) -> Result<Response<health_pb::HealthCheckResponse>, Status> {
        Ok(Response::new(health_pb::HealthCheckResponse { status: serving_status(&self.server) }))
    }

    type WatchStream = WatchStream;

    /// Sends the readiness-derived status now and again whenever it changes (checked every second).
    async fn watch(
        &self,
        _: Request<health_pb::HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let server = self.server.clone();
        let mut last = None;
        let ticks = tokio_stream::wrappers::IntervalStream::new(tokio::time::interval(
            std::time::Duration::from_secs(1),
        ));
        let updates = ticks.filter_map(move |_| {
            let now = serving_status(&server);
            (last.replace(now) != Some(now))
                .then_some(Ok(health_pb::HealthCheckResponse { status: now }))
        });
        Ok(Response::new(Box::pin(updates)))
    }
}

/// The two gRPC services, ready to add to a tonic server.
pub fn services(
    server: Server,
    options: &GrpcOptions,
) -> (
    gis::GrpcInferenceServiceServer<impl gis::GrpcInferenceService>,
    health_server::HealthServer<impl health_server::Health>,
) {
    let inference = gis::GrpcInferenceServiceServer::new(Inference {
        server: server.clone(),
        gate: Gate::new(
            Arc::new(Restrictions::none(Protocol::Grpc)),
            options.model_access.clone(),
            options.audit.clone(),
        ),
        max_pending_responses: options.max_pending_responses,
    })
    .max_decoding_message_size(options.max_message_size)
    .max_encoding_message_size(options.max_message_size)
    .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
    .accept_compressed(tonic::codec::CompressionEncoding::Deflate)
    .send_compressed(tonic::codec::CompressionEncoding::Gzip)
    .send_compressed(tonic::codec::CompressionEncoding::Deflate);
    (inference, health_server::HealthServer::new(Health { server }))
}

/// Loads and unloads block (they build or drain engines): they run on the blocking pool.
async fn blocking(
    f: impl FnOnce() -> rampart_types::Result<()> + Send + 'static,
) -> Result<(), Status> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| {
            Err(rampart_types::Error::internal(format!("model control task failed: {e}")))
        })
        .map_err(status)
}
