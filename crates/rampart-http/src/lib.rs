//! KServe v2 / Triton HTTP/REST front end. It only decodes the wire format into core types, calls
//! [`rampart_core::Server`], and encodes the answer; errors are rendered through the one error-code table.
#![forbid(unsafe_code)]
// Handlers answer early with a ready `Response` as their error (it is already rendered through the error
// table); it is the cold path, so its size does not matter.
#![allow(clippy::result_large_err)]

mod admin;
#[cfg(any(feature = "sagemaker", feature = "vertex"))]
mod cloud;
mod codec;
mod common;
mod decode;
mod encode;
/// The wire decoders exposed to `fuzz/` (cargo feature `fuzzing`; not in the binary).
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod generate;
mod infer_route;
mod metrics;
pub mod restrict;
mod routes;
mod serve;
mod stats;

#[cfg(feature = "sagemaker")]
pub use cloud::{SageMakerOptions, sagemaker_router};
#[cfg(feature = "vertex")]
pub use cloud::{VertexOptions, valid_vertex_route, vertex_router};
pub use codec::{JsonLimits, MAX_DATA_DEPTH};
pub use common::HttpOptions;
pub use metrics::metrics_router;
pub use routes::router;
pub use serve::{ConnectionLimits, serve};
