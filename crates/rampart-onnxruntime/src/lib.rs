//! ONNX Runtime engine, through `ort` with `load-dynamic`: the shared library is found at run time (from
//! `--backend-directory` or `ORT_DYLIB_PATH`), so the binary builds and starts without it and reports a clear
//! error when it is missing or too old.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

use ort::session::{Session, builder::GraphOptimizationLevel};
use ort::value::{DynValue, Tensor as OrtTensor, TensorElementType, ValueType};
use rampart_types::wire::{self, WireElement};
use rampart_types::{
    DataType, Engine, EngineInstance, Error, InstanceSpec, IoSpec, ModelSignature, Result, Tensor,
    tensor::split_bytes_elements, with_element_type,
};

/// The ONNX Runtime release whose PyPI wheel the setup script fetches; the ort crate is built for API ≥ 24.
pub const RECOMMENDED_VERSION: &str = "1.32.0";
const INSTALL_HINT: &str = "install it with scripts/setup.sh (ONNX Runtime >= 1.24 from the `onnxruntime` PyPI \
                            wheel) and pass its directory with --backend-directory, or set ORT_DYLIB_PATH";

/// Finds `libonnxruntime.so*` in `dir` or `dir/onnxruntime`.
pub fn locate_library(dir: &Path) -> Option<PathBuf> {
    for d in [dir.to_path_buf(), dir.join("onnxruntime")] {
        let plain = d.join("libonnxruntime.so");
        if plain.is_file() {
            return Some(plain);
        }
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        let mut found: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("libonnxruntime.so."))
            })
            .collect();
        found.sort();
        if let Some(p) = found.pop() {
            return Some(p);
        }
    }
    None
}

/// Loading a shared library runs its code: refuse one that other users could have replaced.
fn refuse_writable_by_others(lib: &Path) -> std::result::Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let dir = lib.parent().unwrap_or(Path::new("."));
    for p in [lib, dir] {
        if let Ok(m) = std::fs::metadata(p) {
            if m.permissions().mode() & 0o002 != 0 {
                return Err(format!(
                    "refusing to load ONNX Runtime from '{}': '{}' is writable by other users (chmod o-w it)",
                    lib.display(),
                    p.display()
                ));
            }
        }
    }
    Ok(())
}

pub struct OrtEngine {
    env: ort::environment::Environment,
    intra_op_threads: usize,
}

impl OrtEngine {
    /// Loads the ONNX Runtime library: `library` when given (the binary passes `ORT_DYLIB_PATH`), otherwise
    /// the first `libonnxruntime.so*` in `backend_dir`.
    pub fn init(backend_dir: &Path, library: Option<&Path>) -> std::result::Result<OrtEngine, String> {
        let lib = match library {
            Some(p) => p.to_path_buf(),
            None => locate_library(backend_dir).ok_or_else(|| {
                format!(
                    "ONNX Runtime library (libonnxruntime.so) not found in '{}'; {INSTALL_HINT}",
                    backend_dir.display()
                )
            })?,
        };
        refuse_writable_by_others(&lib)?;
        let builder = ort::init_from(&lib)
            .map_err(|e| format!("cannot load ONNX Runtime from '{}': {e}; {INSTALL_HINT}", lib.display()))?;
        let env = builder
            .with_name("rampart")
            .with_telemetry(false)
            .build()
            .map_err(|e| format!("cannot initialise ONNX Runtime from '{}': {e}; {INSTALL_HINT}", lib.display()))?;
        Ok(OrtEngine { env, intra_op_threads: 1 })
    }
}

fn map_type(t: TensorElementType) -> std::result::Result<DataType, String> {
    Ok(match t {
        TensorElementType::Bool => DataType::Bool,
        TensorElementType::Uint8 => DataType::Uint8,
        TensorElementType::Uint16 => DataType::Uint16,
        TensorElementType::Uint32 => DataType::Uint32,
        TensorElementType::Uint64 => DataType::Uint64,
        TensorElementType::Int8 => DataType::Int8,
        TensorElementType::Int16 => DataType::Int16,
        TensorElementType::Int32 => DataType::Int32,
        TensorElementType::Int64 => DataType::Int64,
        TensorElementType::Float16 => DataType::Fp16,
        TensorElementType::Float32 => DataType::Fp32,
        TensorElementType::Float64 => DataType::Fp64,
        TensorElementType::String => DataType::Bytes,
        TensorElementType::Bfloat16 => DataType::Bf16,
        other => return Err(format!("ONNX element type {other:?} has no Triton data type")),
    })
}

fn io_spec(name: &str, ty: &ValueType) -> IoSpec {
    match ty {
        ValueType::Tensor { ty, shape, .. } => IoSpec {
            name: name.to_string(),
            datatype: map_type(*ty),
            dims: shape.iter().copied().collect(),
            optional: false,
        },
        other => IoSpec {
            name: name.to_string(),
            datatype: Err(format!("non-tensor ONNX value type {other:?} is not supported")),
            dims: vec![],
            optional: false,
        },
    }
}

impl Engine for OrtEngine {
    fn name(&self) -> &'static str {
        "onnxruntime"
    }

    fn load(&self, spec: &InstanceSpec) -> Result<Box<dyn EngineInstance>> {
        let threads = match spec.parameters.get("intra_op_thread_count") {
            Some(v) => v.parse::<usize>().map_err(|_| {
                Error::invalid_arg(format!("parameter 'intra_op_thread_count' must be an integer, got '{v}'"))
            })?,
            None => self.intra_op_threads,
        };
        let fail = |e: String| Error::internal(format!("onnxruntime cannot load '{}': {e}", spec.model_file.display()));
        let session = Session::builder(&self.env)
            .map_err(|e| fail(e.to_string()))?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(|e| fail(e.to_string()))?
            .with_intra_threads(threads)
            .map_err(|e| fail(e.to_string()))?
            .commit_from_file(&spec.model_file)
            .map_err(|e| fail(e.to_string()))?;
        let signature = ModelSignature {
            // Graph inputs with an initializer are inputs a request may override (Triton's `optional`).
            inputs: session
                .inputs()
                .iter()
                .map(|o| io_spec(o.name(), o.dtype()))
                .chain(session.overridable_initializers().iter().map(|o| IoSpec { optional: true, ..io_spec(o.name(), o.dtype()) }))
                .collect(),
            outputs: session.outputs().iter().map(|o| io_spec(o.name(), o.dtype())).collect(),
        };
        Ok(Box::new(OrtInstance { session, signature }))
    }
}

struct OrtInstance {
    session: Session,
    signature: ModelSignature,
}

fn to_ort(t: &Tensor) -> Result<DynValue> {
    let shape: Vec<i64> = t.shape.clone();
    let what = format!("input '{}'", t.name);
    let err = |e: ort::Error| Error::internal(format!("onnxruntime rejected {what}: {e}"));
    with_element_type!(t.datatype, T => {
        let v: Vec<T> = wire::decode::<T>(&t.data)?;
        OrtTensor::<T>::from_array((shape, v)).map(|x| x.into_dyn()).map_err(err)
    }, bytes => {
        let els = split_bytes_elements(&t.data, t.element_count(), &what)?;
        let mut strings = Vec::with_capacity(els.len());
        for (i, e) in els.into_iter().enumerate() {
            let s = std::str::from_utf8(e).map_err(|_| {
                Error::invalid_arg(format!("{what}: BYTES element {i} is not valid UTF-8, which ONNX Runtime string tensors require"))
            })?;
            if s.contains('\0') {
                return Err(Error::invalid_arg(format!("{what}: BYTES element {i} contains a NUL byte, which ONNX Runtime string tensors cannot hold")));
            }
            strings.push(s.to_string());
        }
        OrtTensor::from_string_array((shape, &strings[..])).map(|x| x.into_dyn()).map_err(err)
    })
}

fn extract<T: WireElement + ort::value::PrimitiveTensorElementType>(v: &DynValue) -> Result<(Vec<i64>, Vec<u8>)> {
    let (shape, data) = v
        .try_extract_tensor::<T>()
        .map_err(|e| Error::internal(format!("cannot read onnxruntime output: {e}")))?;
    Ok((shape.iter().copied().collect(), wire::encode(data)))
}

fn from_ort(name: &str, v: &DynValue) -> Result<Tensor> {
    let ty = match v.dtype() {
        ValueType::Tensor { ty, .. } => map_type(*ty).map_err(Error::internal)?,
        other => return Err(Error::internal(format!("output '{name}' is a non-tensor value {other:?}"))),
    };
    let (shape, data) = with_element_type!(ty, T => extract::<T>(v)?, bytes => {
        let (shape, strings) = v
            .try_extract_strings()
            .map_err(|e| Error::internal(format!("cannot read onnxruntime string output '{name}': {e}")))?;
        (shape.iter().copied().collect(), rampart_types::tensor::encode_bytes_elements(&strings))
    });
    Ok(Tensor::new(name, ty, shape, data.into()))
}

impl EngineInstance for OrtInstance {
    fn signature(&self) -> &ModelSignature {
        &self.signature
    }

    fn execute(&mut self, inputs: &[Tensor], outputs: &[String]) -> Result<Vec<Tensor>> {
        let mut values: Vec<(String, DynValue)> = Vec::with_capacity(inputs.len());
        for t in inputs {
            values.push((t.name.clone(), to_ort(t)?));
        }
        let result = self
            .session
            .run(values)
            .map_err(|e| Error::internal(format!("onnxruntime execution failed: {e}")))?;
        outputs
            .iter()
            .map(|name| {
                let v = result
                    .get(name)
                    .ok_or_else(|| Error::internal(format!("onnxruntime produced no output '{name}'")))?;
                from_ort(name, v)
            })
            .collect()
    }
}
