//! The backend API: the small trait an engine implements. An engine loads one instance of a model version
//! (its own session, owned by one thread) and executes a batch. Engines know nothing about model configs,
//! front ends or scheduling.

use std::collections::HashMap;
use std::path::PathBuf;

use crate::{DataType, Result, Tensor};

/// One input or output as the model file declares it. `dims` uses -1 for dimensions the file leaves open.
#[derive(Debug, Clone, PartialEq)]
pub struct IoSpec {
    pub name: String,
    /// `None` when the model uses a type Triton cannot express (the string says which).
    pub datatype: std::result::Result<DataType, String>,
    pub dims: Vec<i64>,
    /// An input with a default stored in the model file (an ONNX initializer that may be overridden).
    pub optional: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelSignature {
    pub inputs: Vec<IoSpec>,
    pub outputs: Vec<IoSpec>,
}

/// What an engine needs to load one instance.
#[derive(Debug, Clone)]
pub struct InstanceSpec {
    pub model_name: String,
    pub version: i64,
    /// The model file (e.g. `<repo>/<model>/1/model.onnx`).
    pub model_file: PathBuf,
    /// Model config `parameters` (string values).
    pub parameters: HashMap<String, String>,
    /// Data types the config declares for each input/output, so the engine can refuse what it cannot run.
    pub declared_types: Vec<(String, DataType)>,
    /// Model config `optimization { graph { level } }` (0 when absent): ONNX Runtime's graph optimization
    /// level in Triton's numbering (-1 basic, 1 extended, 2 none, anything else all).
    pub graph_optimization_level: i32,
}

/// A loaded model instance. Owned by exactly one execution thread.
pub trait EngineInstance: Send {
    /// The model file's own signature.
    fn signature(&self) -> &ModelSignature;
    /// Runs one batch. `inputs` carry full shapes (batch dimension included when the model batches) and wire
    /// layout data; the result holds the requested outputs in the order asked for.
    fn execute(&mut self, inputs: &[Tensor], outputs: &[String]) -> Result<Vec<Tensor>>;
}

/// An execution engine (ONNX Runtime, tract, …).
pub trait Engine: Send + Sync {
    fn name(&self) -> &'static str;
    fn load(&self, spec: &InstanceSpec) -> Result<Box<dyn EngineInstance>>;
}
