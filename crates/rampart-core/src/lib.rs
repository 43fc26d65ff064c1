//! Rampart core: the model repository, model life cycle, request validation, scheduling and statistics,
//! behind one API (`Server`) that every front end calls. Front ends translate wire formats to the types in
//! [`infer`] and render [`rampart_types::Error`] through the one error-code table; no model logic lives in
//! them.
#![forbid(unsafe_code)]

pub mod access;
pub mod audit;
pub mod cache;
pub mod classify;
mod config;
pub mod control;
mod engines;
pub mod features;
pub mod infer;
pub mod logging;
pub mod metrics;
#[cfg(feature = "cloud")]
pub mod remote;
#[cfg(not(feature = "cloud"))]
#[path = "remote_disabled.rs"]
pub mod remote;
mod model;
mod priority_queue;
mod repository;
mod scheduler;
mod server;
pub mod shm;
pub mod stats;
pub mod trace;
mod warmup;

pub use config::AUTOCOMPLETE_DEFAULT_MAX_BATCH_SIZE;
pub use control::{LoadRequest, ModelControlMode, validate_model_name};
pub use engines::{EngineChoice, HAS_ONNXRUNTIME, HAS_TRACT};
pub use engines::OrtOptions;
pub use infer::{InferRequest, InferResponse, InputTensor, ParamValue, Parameters, RequestLimits, RequestedOutput, ShmRef};
pub use model::{ModelState, ModelVersion};
pub use rampart_model_config::{ModelConfig, to_json as config_to_json};
pub use server::{
    IndexEntry, ModelMetadata, ServerMetadata, Server, ServerOptions, StartupError, TensorMetadata,
    parse_version, EXTENSIONS,
};
