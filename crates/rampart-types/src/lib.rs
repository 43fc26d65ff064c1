//! Vocabulary shared by every Rampart layer: data types, tensors, the one error-code table and the
//! backend (engine) trait. This crate depends on nothing heavier than `bytes`, so engines, the core and the
//! front ends can all speak it.
#![forbid(unsafe_code)]

pub mod backend;
pub mod datatype;
pub mod error;
pub mod identity;
pub mod tensor;

pub use backend::{
    Answers, Backends, CallEvent, CallResponse, CorrelationId, Engine, EngineInstance,
    EngineRequest, InstanceSpec, IoSpec, MetricKind, MetricOp, ModelCall, ModelCaller,
    ModelControl, ModelSignature, ReadinessCheck, RequestInfo, Responder, Submitted,
};
pub use datatype::DataType;
pub use error::{Code, Error, Result};
pub use identity::ClientIdentity;
pub use tensor::Tensor;
pub mod wire;
pub use half;
