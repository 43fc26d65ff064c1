//! Engine selection: which engine runs a model, and lazily initialised engine singletons.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use rampart_model_config::ModelConfig;
use rampart_types::{Engine, Error, Result};

/// Which engine runs ONNX models.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineChoice {
    OnnxRuntime,
    Tract,
}

impl EngineChoice {
    pub fn parse(s: &str) -> Option<EngineChoice> {
        match s {
            "onnxruntime" | "ort" => Some(EngineChoice::OnnxRuntime),
            "tract" => Some(EngineChoice::Tract),
            _ => None,
        }
    }
}

#[cfg(feature = "onnxruntime")]
pub use rampart_onnxruntime::OrtOptions;

/// The ONNX Runtime settings of a build without the engine: every setting is refused.
#[cfg(not(feature = "onnxruntime"))]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrtOptions;

#[cfg(not(feature = "onnxruntime"))]
impl OrtOptions {
    pub fn set(&mut self, key: &str, _value: &str) -> std::result::Result<bool, String> {
        Err(format!("'{key}': {NO_ORT}"))
    }
}

#[cfg(not(feature = "onnxruntime"))]
const NO_ORT: &str = "this rampart build has no ONNX Runtime engine (cargo feature 'onnxruntime'); use the tract engine";

/// Whether this build has the ONNX Runtime engine.
pub const HAS_ONNXRUNTIME: bool = cfg!(feature = "onnxruntime");
/// Whether this build has the tract engine.
pub const HAS_TRACT: bool = cfg!(feature = "tract");

pub(crate) struct Engines {
    #[cfg_attr(not(feature = "onnxruntime"), allow(dead_code))]
    backend_directory: PathBuf,
    #[cfg_attr(not(feature = "onnxruntime"), allow(dead_code))]
    onnxruntime_library: Option<PathBuf>,
    #[cfg_attr(not(feature = "onnxruntime"), allow(dead_code))]
    ort_options: OrtOptions,
    default: EngineChoice,
    ort: OnceLock<std::result::Result<Arc<dyn Engine>, String>>,
}

impl Engines {
    pub fn new(
        backend_directory: PathBuf,
        onnxruntime_library: Option<PathBuf>,
        ort_options: OrtOptions,
        default: EngineChoice,
    ) -> Self {
        Engines {
            backend_directory,
            onnxruntime_library,
            ort_options,
            default,
            ort: OnceLock::new(),
        }
    }

    /// The engine for a model: `backend: "tract"`, or a `parameters { key: "engine" }` entry, or the server
    /// default for `onnxruntime` / `onnxruntime_onnx` models.
    pub fn choose(&self, config: &ModelConfig) -> Result<EngineChoice> {
        let backend_ok = matches!(config.backend.as_str(), "" | "onnxruntime" | "tract");
        let platform_ok = matches!(config.platform.as_str(), "" | "onnxruntime_onnx");
        if !backend_ok || !platform_ok {
            let what = if !backend_ok {
                format!("backend '{}'", config.backend)
            } else {
                format!("platform '{}'", config.platform)
            };
            return Err(Error::unsupported(format!(
                "{what} is not supported: Rampart serves ONNX models (platform 'onnxruntime_onnx', backend 'onnxruntime' or 'tract')"
            )));
        }
        if config.backend == "tract" {
            return Ok(EngineChoice::Tract);
        }
        match config.parameters.get("engine") {
            Some(p) => EngineChoice::parse(&p.string_value).ok_or_else(|| {
                Error::invalid_arg(format!(
                    "parameter 'engine' must be 'onnxruntime' or 'tract', got '{}'",
                    p.string_value
                ))
            }),
            None => Ok(self.default),
        }
    }

    #[cfg(feature = "onnxruntime")]
    fn init_ort(&self) -> std::result::Result<Arc<dyn Engine>, String> {
        rampart_onnxruntime::OrtEngine::init(
            &self.backend_directory,
            self.onnxruntime_library.as_deref(),
            self.ort_options.clone(),
        )
        .map(|e| Arc::new(e) as Arc<dyn Engine>)
    }

    #[cfg(not(feature = "onnxruntime"))]
    fn init_ort(&self) -> std::result::Result<Arc<dyn Engine>, String> {
        Err(NO_ORT.to_string())
    }

    pub fn get(&self, choice: EngineChoice) -> Result<Arc<dyn Engine>> {
        match choice {
            EngineChoice::OnnxRuntime => {
                self.ort.get_or_init(|| self.init_ort()).clone().map_err(Error::unavailable)
            }
            EngineChoice::Tract => tract(),
        }
    }
}

#[cfg(feature = "tract")]
fn tract() -> Result<Arc<dyn Engine>> {
    Ok(Arc::new(rampart_tract::TractEngine))
}

#[cfg(not(feature = "tract"))]
fn tract() -> Result<Arc<dyn Engine>> {
    Err(Error::unsupported("this rampart build has no tract engine (cargo feature 'tract')"))
}
