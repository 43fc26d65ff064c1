//! Rampart core: the model repository, model life cycle, request validation, scheduling and statistics,
//! behind one API (`Server`) that every front end calls. Front ends translate wire formats to the types in
//! [`infer`] and render [`rampart_types::Error`] through the one error-code table; no model logic lives in
//! them.
//!
//! # Embedding
//!
//! The same API serves an application that runs models in process, without any network front end (the
//! counterpart of Triton's in-process C API). `examples/embedding` is a complete program; CI runs it.
//!
//! - open a repository: [`Server::start`] with [`ServerOptions`] (`model_repositories`, `backends`,
//!   `model_control_mode`, …; every field has Triton's default);
//! - list models: [`Server::repository_index`]; readiness: [`Server::is_ready`], [`Server::model_ready`];
//! - metadata and configuration: [`Server::model_metadata`], [`Server::model_config`];
//! - infer: [`Server::infer`] (async) with an [`InferRequest`] of [`InputTensor`]s in Triton's wire layout
//!   (little-endian, row-major; BYTES elements length-prefixed); the [`InferResponse`] holds the outputs;
//! - statistics: [`Server::statistics`]; model control: [`Server::load_model`], [`Server::unload_model`];
//! - shut down: [`Server::shutdown`] refuses new requests and waits for in-flight ones.
//!
//! Errors are [`rampart_types::Error`] with Triton's codes. Cargo features choose what is compiled in:
//! `shm`, `tracing`, `cloud`. The core runs no engine of its own: [`ServerOptions::backends`] holds the
//! engines the application registered (`rampart_types::Backends`).
#![forbid(unsafe_code)]

pub mod access;
pub mod agents;
pub mod audit;
pub mod authorize;
mod batch;
mod bls;
pub mod cache;
pub mod classify;
mod config;
pub mod control;
mod custom_metrics;
mod engines;
mod ensemble;
mod executor;
mod extensions;
pub mod features;
pub mod infer;
mod lifecycle;
mod load;
pub mod logging;
pub mod metrics;
mod model;
mod options;
#[cfg(feature = "cloud")]
pub mod remote;
#[cfg(not(feature = "cloud"))]
#[path = "remote_disabled.rs"]
pub mod remote;
mod repository;
mod sequence;
mod server;
pub mod shm;
mod signatures;
pub mod stats;
mod table;
pub mod trace;
mod warmup;

pub use config::AUTOCOMPLETE_DEFAULT_MAX_BATCH_SIZE;
pub use control::{LoadRequest, ModelControlMode, validate_model_name};
pub use infer::{
    InferRequest, InferResponse, InputTensor, ParamValue, Parameters, RequestLimits,
    RequestedOutput, ShmRef,
};
pub use model::{ModelState, ModelVersion, ResponseStream, StreamedResponse};
pub use options::{SignatureMode, SignaturePolicy};
pub use rampart_model_config::{ModelConfig, parameter_suggestion, to_json as config_to_json};
pub use server::{
    EXTENSIONS, IndexEntry, ModelMetadata, SequenceLimits, Server, ServerMetadata, ServerOptions,
    StartupError, TensorMetadata, parse_version,
};
