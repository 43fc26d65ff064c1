//! The engines this binary was built with, registered by backend name for the core
//! (`rampart_types::Backends`): `onnxruntime` and `tract` behind their cargo features, and the built-in
//! test backends `identity`, `repeat` and `square` always, and `python` (Triton's Python backend) behind its
//! feature.

use std::path::PathBuf;
use std::sync::Arc;

use rampart_types::{Backends, Engine};

/// Which engine runs ONNX models by default.
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

    /// The backend name it is registered under.
    pub fn backend(self) -> &'static str {
        match self {
            EngineChoice::OnnxRuntime => "onnxruntime",
            EngineChoice::Tract => "tract",
        }
    }
}

/// Whether this build has the ONNX Runtime engine.
pub const HAS_ONNXRUNTIME: bool = cfg!(feature = "onnxruntime");

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

#[cfg(feature = "python")]
pub use rampart_python::PythonOptions;

/// The python backend's settings in a build without it: every setting is refused.
#[cfg(not(feature = "python"))]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PythonOptions;

#[cfg(not(feature = "python"))]
impl PythonOptions {
    pub fn set(&mut self, key: &str, _value: &str) -> std::result::Result<bool, String> {
        Err(format!("'{key}': {NO_PYTHON}"))
    }
}

#[cfg(not(feature = "python"))]
const NO_PYTHON: &str = "this rampart build has no python backend (cargo feature 'python')";

#[cfg(not(feature = "tract"))]
const NO_TRACT: &str = "this rampart build has no tract engine (cargo feature 'tract')";

/// Where the ONNX Runtime engine finds its library, and its settings.
pub struct OrtSetup {
    /// `--backend-directory`.
    pub backend_directory: PathBuf,
    /// `ORT_DYLIB_PATH`, when set.
    pub library: Option<PathBuf>,
    pub options: OrtOptions,
    /// The python backend's settings.
    pub python: PythonOptions,
}

/// Every engine of this build. ONNX Runtime loads its library when the first model needs it; an engine
/// left out of the build is registered all the same, and a model that asks for it fails to load with a
/// message saying which cargo feature it needs.
pub fn registry(ort: OrtSetup) -> Backends {
    let mut backends = Backends::new();
    rampart_builtin::register(&mut backends);
    let python = ort.python.clone();
    let dir = ort.backend_directory.clone();
    backends.register_lazy("onnxruntime", Box::new(move || onnxruntime(&ort)));
    #[cfg(feature = "tract")]
    backends.register("tract", Arc::new(rampart_tract::TractEngine));
    #[cfg(not(feature = "tract"))]
    backends.register_lazy("tract", Box::new(|| Err(NO_TRACT.to_string())));
    backends.register_lazy(
        "python",
        Box::new({
            let python = python.clone();
            move || python_engine(&python)
        }),
    );
    python_based(&mut backends, &dir, &python);
    backends
}

/// The startup exposure report's line on Python models (`backend: "python"` or a Python-based backend):
/// which relax their sandbox through model parameters, and how. Silent when no Python model is loaded.
pub fn python_sandbox_report(server: &rampart_core::Server, backend_directory: &std::path::Path) {
    let mut names: Vec<String> = server
        .repository_index(false)
        .into_iter()
        .filter(|e| e.state == Some(rampart_core::ModelState::Ready))
        .map(|e| e.name)
        .collect();
    names.dedup();
    let mut python = 0;
    let mut relaxed = Vec::new();
    for name in names {
        let Ok(config) = server.model_config(&name, None) else { continue };
        let based = backend_directory.join(&config.backend).join("model.py");
        if config.backend != "python" && (config.backend.is_empty() || !based.is_file()) {
            continue;
        }
        python += 1;
        let parameters =
            config.parameters.iter().map(|(k, v)| (k.clone(), v.string_value.clone())).collect();
        let what = sandbox_relaxations(&name, &parameters);
        if !what.is_empty() {
            relaxed.push(format!("'{name}' ({})", what.join(", ")));
        }
    }
    if relaxed.is_empty() && python > 0 {
        tracing::info!("python models: {python}, every one in the default sandbox");
    } else if !relaxed.is_empty() {
        tracing::warn!(
            "python models relaxing their sandbox by model parameter: {}",
            relaxed.join("; ")
        );
    }
}

#[cfg(feature = "python")]
fn sandbox_relaxations(
    model: &str,
    parameters: &std::collections::HashMap<String, String>,
) -> Vec<String> {
    rampart_python::sandbox_relaxations(model, parameters)
}

#[cfg(not(feature = "python"))]
fn sandbox_relaxations(_: &str, _: &std::collections::HashMap<String, String>) -> Vec<String> {
    Vec::new()
}

/// Triton's Python-based backends: each `<backend-directory>/<name>/model.py` is a backend of that name,
/// run by the python backend, for the models that name it (`backend: "<name>"`). A built-in backend keeps
/// its name. The directory is the operator's: a model repository cannot add a backend.
fn python_based(backends: &mut Backends, dir: &std::path::Path, python: &PythonOptions) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let model_py = entry.path().join("model.py");
        if backends.contains(&name) || !model_py.is_file() {
            continue;
        }
        let python = python.clone();
        let factory = move || python_based_engine(&python, model_py.clone());
        backends.register_lazy(&name, Box::new(factory));
    }
}

#[cfg(feature = "python")]
fn python_based_engine(
    options: &PythonOptions,
    model_py: PathBuf,
) -> Result<Arc<dyn Engine>, String> {
    let engine = rampart_python::PythonEngine::init(options)?;
    Ok(Arc::new(engine.with_runtime_model(model_py)))
}

#[cfg(not(feature = "python"))]
fn python_based_engine(_: &PythonOptions, _: PathBuf) -> Result<Arc<dyn Engine>, String> {
    Err(NO_PYTHON.to_string())
}

#[cfg(feature = "onnxruntime")]
fn onnxruntime(ort: &OrtSetup) -> Result<Arc<dyn Engine>, String> {
    let engine = rampart_onnxruntime::OrtEngine::init(
        &ort.backend_directory,
        ort.library.as_deref(),
        ort.options.clone(),
    )?;
    Ok(Arc::new(engine))
}

#[cfg(not(feature = "onnxruntime"))]
fn onnxruntime(_: &OrtSetup) -> Result<Arc<dyn Engine>, String> {
    Err(NO_ORT.to_string())
}

#[cfg(feature = "python")]
fn python_engine(options: &PythonOptions) -> Result<Arc<dyn Engine>, String> {
    Ok(Arc::new(rampart_python::PythonEngine::init(options)?))
}

#[cfg(not(feature = "python"))]
fn python_engine(_: &PythonOptions) -> Result<Arc<dyn Engine>, String> {
    Err(NO_PYTHON.to_string())
}
