//! Which registered backend runs a model. The engines themselves are registered by the binary
//! (`rampart_types::Backends`); the core only maps a config to a backend name.

use rampart_model_config::ModelConfig;
use rampart_types::{Error, Result};

/// The backend name of a model: its `backend`; for an ONNX model (`platform: "onnxruntime_onnx"`,
/// `backend: "onnxruntime"`, or neither) the `engine` parameter when set, else `default_onnx`.
pub(crate) fn backend_name<'a>(config: &'a ModelConfig, default_onnx: &'a str) -> Result<&'a str> {
    let onnx_platform = matches!(config.platform.as_str(), "" | "onnxruntime_onnx");
    match config.backend.as_str() {
        "" if !onnx_platform => Err(Error::unsupported(format!(
            "platform '{}' is not supported: Rampart serves ONNX models (platform 'onnxruntime_onnx') and the \
             models of its built-in backends",
            config.platform
        ))),
        "" | "onnxruntime" => match config.parameters.get("engine") {
            Some(p) => match p.string_value.as_str() {
                e @ ("onnxruntime" | "tract") => Ok(e),
                other => Err(Error::invalid_arg(format!(
                    "parameter 'engine' must be 'onnxruntime' or 'tract', got '{other}'"
                ))),
            },
            None => Ok(default_onnx),
        },
        backend => Ok(backend),
    }
}

#[cfg(test)]
mod tests;
