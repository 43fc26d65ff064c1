//! KServe v2 / Triton gRPC front end (`inference.GRPCInferenceService` and `grpc.health.v1.Health`). Like the
//! HTTP front end it only converts messages to core types and back; validation, inference and error texts
//! come from `rampart-core`, status codes from the one error-code table.
#![forbid(unsafe_code)]

mod compression;
pub mod conn;
mod convert;
mod inference;
pub mod restrict;
mod service;
mod status;
mod stream;

/// Generated message and service types (`package inference`).
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("inference");
}

/// Generated `grpc.health.v1` types.
pub mod health_pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("grpc.health.v1");
}

pub use compression::CompressionLayer;
pub use conn::GrpcConn;
pub use restrict::RestrictLayer;
pub use service::{GrpcOptions, services};
pub use status::StatusLayer;
pub use stream::{DEFAULT_PENDING_RESPONSES, MAX_PENDING_RESPONSES, STREAM_CONCURRENCY};
