//! ONNX Runtime engine, through `ort` with `load-dynamic`: the shared library is found at run time (from
//! `--backend-directory` or `ORT_DYLIB_PATH`), so the binary builds and starts without it and reports a clear
//! error when it is missing or too old.
//!
//! `unsafe` is denied everywhere but in [`strings`], the one module that calls ONNX Runtime's C API directly
//! (BYTES elements byte for byte, which `ort`'s safe string conversions cannot do).
#![deny(unsafe_code)]

mod strings;

use std::path::{Path, PathBuf};

use ort::session::SessionInputValue;
use ort::session::{Session, builder::GraphOptimizationLevel};
use ort::value::{DynValue, Tensor as OrtTensor, TensorElementType, TensorRef, ValueType};
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
        if let Ok(m) = std::fs::metadata(p)
            && m.permissions().mode() & 0o002 != 0
        {
            return Err(format!(
                "refusing to load ONNX Runtime from '{}': '{}' is writable by other users (chmod o-w it)",
                lib.display(),
                p.display()
            ));
        }
    }
    Ok(())
}

/// Engine-wide ONNX Runtime settings (`--backend-config=onnxruntime,<key>=<value>`). The thread counts are the
/// defaults of every session; a model's `intra_op_thread_count` / `inter_op_thread_count` parameters override
/// them, except under the global thread pool, where (as in Triton) only these apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrtOptions {
    /// Threads inside one operator. 1 by default: on small machines more threads per instance cost throughput
    /// (two threads halve it on 2 vCPUs); 0 lets ONNX Runtime pick (one per core).
    pub intra_op_threads: usize,
    /// Threads across operators; used only with `execution_mode` 1 (parallel).
    pub inter_op_threads: usize,
    /// One thread pool shared by every session (`enable-global-threadpool=1`).
    pub global_thread_pool: bool,
}

impl Default for OrtOptions {
    fn default() -> Self {
        OrtOptions { intra_op_threads: 1, inter_op_threads: 1, global_thread_pool: false }
    }
}

impl OrtOptions {
    /// Applies one `--backend-config=onnxruntime,<key>=<value>` setting; `Ok(false)` when the key is not an
    /// engine setting.
    pub fn set(&mut self, key: &str, value: &str) -> std::result::Result<bool, String> {
        match key {
            "intra_op_thread_count" => {
                self.intra_op_threads =
                    parse_count(key, value).map_err(|e| e.message().to_string())?
            }
            "inter_op_thread_count" => {
                self.inter_op_threads =
                    parse_count(key, value).map_err(|e| e.message().to_string())?
            }
            "enable-global-threadpool" => {
                self.global_thread_pool =
                    parse_flag(key, value).map_err(|e| e.message().to_string())?;
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// Thread counts above this are refused: they are a typo, not a tuning choice.
const MAX_THREADS: usize = 1024;

fn parse_count(key: &str, value: &str) -> Result<usize> {
    match value.trim().parse::<usize>() {
        Ok(n) if n <= MAX_THREADS => Ok(n),
        _ => Err(Error::invalid_arg(format!(
            "'{key}' must be an integer from 0 to {MAX_THREADS}, got '{value}'"
        ))),
    }
}

fn parse_flag(key: &str, value: &str) -> Result<bool> {
    match value.trim() {
        "1" | "true" | "True" | "TRUE" | "on" => Ok(true),
        "0" | "false" | "False" | "FALSE" | "off" => Ok(false),
        _ => Err(Error::invalid_arg(format!("'{key}' must be 0 or 1, got '{value}'"))),
    }
}

/// Per-session settings: the engine defaults, then the model's `parameters` and `optimization.graph.level`
/// (the keys of Triton's ONNX Runtime backend).
#[derive(Debug, Clone, PartialEq)]
pub struct SessionSettings {
    pub intra_op_threads: usize,
    pub inter_op_threads: usize,
    /// `execution_mode` 1: operators of independent branches run in parallel.
    pub parallel_execution: bool,
    pub memory_pattern: bool,
    pub optimization_level: GraphOptimizationLevel,
}

impl SessionSettings {
    pub fn resolve(options: &OrtOptions, spec: &InstanceSpec) -> Result<SessionSettings> {
        let param = |k: &str| spec.parameters.get(k).map(String::as_str);
        let mut s = SessionSettings {
            intra_op_threads: options.intra_op_threads,
            inter_op_threads: options.inter_op_threads,
            parallel_execution: false,
            memory_pattern: true,
            optimization_level: match spec.graph_optimization_level {
                -1 => GraphOptimizationLevel::Level1,
                1 => GraphOptimizationLevel::Level2,
                2 => GraphOptimizationLevel::Disable,
                _ => GraphOptimizationLevel::All,
            },
        };
        // Under the global thread pool the sessions have no threads of their own (Triton ignores the model's
        // thread counts then too).
        if !options.global_thread_pool {
            if let Some(v) = param("intra_op_thread_count") {
                s.intra_op_threads = parse_count("intra_op_thread_count", v)?;
            }
            if let Some(v) = param("inter_op_thread_count") {
                s.inter_op_threads = parse_count("inter_op_thread_count", v)?;
            }
        }
        if let Some(v) = param("execution_mode") {
            s.parallel_execution = match v.trim() {
                "0" => false,
                "1" => true,
                _ => {
                    return Err(Error::invalid_arg(format!(
                        "parameter 'execution_mode' must be 0 (sequential) or 1 (parallel), got '{v}'"
                    )));
                }
            };
        }
        if let Some(v) = param("enable_mem_pattern") {
            s.memory_pattern = parse_flag("enable_mem_pattern", v)?;
        }
        Ok(s)
    }
}

pub struct OrtEngine {
    env: ort::environment::Environment,
    options: OrtOptions,
}

impl OrtEngine {
    /// Loads the ONNX Runtime library: `library` when given (the binary passes `ORT_DYLIB_PATH`), otherwise
    /// the first `libonnxruntime.so*` in `backend_dir`.
    pub fn init(
        backend_dir: &Path,
        library: Option<&Path>,
        options: OrtOptions,
    ) -> std::result::Result<OrtEngine, String> {
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
        let builder = ort::init_from(&lib).map_err(|e| {
            format!("cannot load ONNX Runtime from '{}': {e}; {INSTALL_HINT}", lib.display())
        })?;
        let mut builder = builder.with_name("rampart").with_telemetry(false);
        if options.global_thread_pool {
            let pool = ort::environment::GlobalThreadPoolOptions::default()
                .with_intra_threads(options.intra_op_threads)
                .and_then(|p| p.with_inter_threads(options.inter_op_threads))
                .map_err(|e| {
                    format!("cannot configure the ONNX Runtime global thread pool: {e}")
                })?;
            builder = builder.with_global_thread_pool(pool);
        }
        let env = builder.build().map_err(|e| {
            format!("cannot initialise ONNX Runtime from '{}': {e}; {INSTALL_HINT}", lib.display())
        })?;
        Ok(OrtEngine { env, options })
    }

    /// The ONNX Runtime environment sessions are built in (the benchmark's raw-session ceiling uses it).
    pub fn environment(&self) -> &ort::environment::Environment {
        &self.env
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
        let settings = SessionSettings::resolve(&self.options, spec)?;
        let fail = |e: String| {
            Error::internal(format!("onnxruntime cannot load '{}': {e}", spec.model_file.display()))
        };
        let mut builder = Session::builder(&self.env)
            .map_err(|e| fail(e.to_string()))?
            .with_optimization_level(settings.optimization_level)
            .map_err(|e| fail(e.to_string()))?
            .with_parallel_execution(settings.parallel_execution)
            .map_err(|e| fail(e.to_string()))?
            .with_memory_pattern(settings.memory_pattern)
            .map_err(|e| fail(e.to_string()))?;
        if !self.options.global_thread_pool {
            builder = builder
                .with_intra_threads(settings.intra_op_threads)
                .map_err(|e| fail(e.to_string()))?
                .with_inter_threads(settings.inter_op_threads)
                .map_err(|e| fail(e.to_string()))?;
        }
        let session =
            builder.commit_from_file(&spec.model_file).map_err(|e| fail(e.to_string()))?;
        let signature = ModelSignature {
            // Graph inputs with an initializer are inputs a request may override (Triton's `optional`).
            inputs: session
                .inputs()
                .iter()
                .map(|o| io_spec(o.name(), o.dtype()))
                .chain(
                    session
                        .overridable_initializers()
                        .iter()
                        .map(|o| IoSpec { optional: true, ..io_spec(o.name(), o.dtype()) }),
                )
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

/// An input for ONNX Runtime. Numeric data whose wire bytes are already aligned for the element type is
/// passed as a borrowed view (no copy): the batcher's gathered buffers always are, request bodies often are.
/// Everything else (misaligned buffers, BOOL, BYTES) is converted into an owned tensor.
fn to_ort(t: &Tensor) -> Result<SessionInputValue<'_>> {
    let what = || format!("input '{}'", t.name);
    let err = |e: ort::Error| Error::internal(format!("onnxruntime rejected {}: {e}", what()));
    macro_rules! view_or_copy {
        ($T:ty) => {{
            match borrow_elements::<$T>(&t.data) {
                Some(view) => TensorRef::<$T>::from_array_view((t.shape.as_slice(), view))
                    .map(SessionInputValue::from)
                    .map_err(err),
                None => {
                    let v: Vec<$T> = wire::decode::<$T>(&t.data)?;
                    OrtTensor::<$T>::from_array((t.shape.clone(), v))
                        .map(SessionInputValue::from)
                        .map_err(err)
                }
            }
        }};
    }
    match t.datatype {
        DataType::Bool => {
            let v: Vec<bool> = wire::decode::<bool>(&t.data)?;
            OrtTensor::<bool>::from_array((t.shape.clone(), v))
                .map(SessionInputValue::from)
                .map_err(err)
        }
        DataType::Uint8 => view_or_copy!(u8),
        DataType::Uint16 => view_or_copy!(u16),
        DataType::Uint32 => view_or_copy!(u32),
        DataType::Uint64 => view_or_copy!(u64),
        DataType::Int8 => view_or_copy!(i8),
        DataType::Int16 => view_or_copy!(i16),
        DataType::Int32 => view_or_copy!(i32),
        DataType::Int64 => view_or_copy!(i64),
        DataType::Fp16 => view_or_copy!(half::f16),
        DataType::Bf16 => view_or_copy!(half::bf16),
        DataType::Fp32 => view_or_copy!(f32),
        DataType::Fp64 => view_or_copy!(f64),
        DataType::Bytes => {
            // Any bytes, NUL and invalid UTF-8 included: an ONNX Runtime string element is a `std::string`.
            let what = what();
            let els = split_bytes_elements(&t.data, t.element_count(), &what)?;
            strings::string_tensor(&t.shape, &els, &what).map(SessionInputValue::from)
        }
    }
}

/// The wire bytes as elements, when the buffer is aligned for `T` and the machine is little-endian (the wire
/// layout); `None` means the caller copies.
fn borrow_elements<T: bytemuck::Pod>(data: &[u8]) -> Option<&[T]> {
    if cfg!(target_endian = "little") { bytemuck::try_cast_slice(data).ok() } else { None }
}

fn extract<T: WireElement + ort::value::PrimitiveTensorElementType>(
    v: &DynValue,
) -> Result<(Vec<i64>, Vec<u8>)> {
    let (shape, data) = v
        .try_extract_tensor::<T>()
        .map_err(|e| Error::internal(format!("cannot read onnxruntime output: {e}")))?;
    Ok((shape.iter().copied().collect(), wire::encode(data)))
}

fn from_ort(name: &str, v: &DynValue) -> Result<Tensor> {
    let ty = match v.dtype() {
        ValueType::Tensor { ty, .. } => map_type(*ty).map_err(Error::internal)?,
        other => {
            return Err(Error::internal(format!(
                "output '{name}' is a non-tensor value {other:?}"
            )));
        }
    };
    let (shape, data) = with_element_type!(ty, T => extract::<T>(v)?, bytes => {
        strings::string_elements(v, &format!("onnxruntime output '{name}'"))?
    });
    Ok(Tensor::new(name, ty, shape, data.into()))
}

impl EngineInstance for OrtInstance {
    fn signature(&self) -> &ModelSignature {
        &self.signature
    }

    fn execute(&mut self, inputs: &[Tensor], outputs: &[String]) -> Result<Vec<Tensor>> {
        let mut values: Vec<(&str, SessionInputValue<'_>)> = Vec::with_capacity(inputs.len());
        for t in inputs {
            values.push((t.name.as_str(), to_ort(t)?));
        }
        let result = self
            .session
            .run(values)
            .map_err(|e| Error::internal(format!("onnxruntime execution failed: {e}")))?;
        outputs
            .iter()
            .map(|name| {
                let v = result.get(name).ok_or_else(|| {
                    Error::internal(format!("onnxruntime produced no output '{name}'"))
                })?;
                from_ort(name, v)
            })
            .collect()
    }
}

#[cfg(test)]
mod settings_tests {
    use super::*;

    fn spec(params: &[(&str, &str)], level: i32) -> InstanceSpec {
        InstanceSpec {
            model_name: "m".into(),
            version: 1,
            model_file: PathBuf::from("m.onnx"),
            parameters: params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            graph_optimization_level: level,
            ..Default::default()
        }
    }

    #[test]
    fn defaults_are_one_thread_sequential_all_optimizations() {
        let s = SessionSettings::resolve(&OrtOptions::default(), &spec(&[], 0)).unwrap();
        assert_eq!(
            (s.intra_op_threads, s.inter_op_threads, s.parallel_execution, s.memory_pattern),
            (1, 1, false, true)
        );
        assert_eq!(s.optimization_level, GraphOptimizationLevel::All);
    }

    #[test]
    fn tritons_graph_levels() {
        let level = |l| {
            SessionSettings::resolve(&OrtOptions::default(), &spec(&[], l))
                .unwrap()
                .optimization_level
        };
        assert_eq!(level(-1), GraphOptimizationLevel::Level1);
        assert_eq!(level(1), GraphOptimizationLevel::Level2);
        assert_eq!(level(2), GraphOptimizationLevel::Disable);
        assert_eq!(level(7), GraphOptimizationLevel::All);
    }

    #[test]
    fn model_parameters_override_the_backend_defaults_except_under_the_global_pool() {
        let mut o = OrtOptions::default();
        assert_eq!(o.set("intra_op_thread_count", "3"), Ok(true));
        assert_eq!(o.set("engine", "tract"), Ok(false), "not an engine setting");
        let p = [
            ("intra_op_thread_count", "2"),
            ("execution_mode", "1"),
            ("inter_op_thread_count", "4"),
            ("enable_mem_pattern", "0"),
        ];
        let s = SessionSettings::resolve(&o, &spec(&p, 0)).unwrap();
        assert_eq!(
            (s.intra_op_threads, s.inter_op_threads, s.parallel_execution, s.memory_pattern),
            (2, 4, true, false)
        );
        assert_eq!(SessionSettings::resolve(&o, &spec(&[], 0)).unwrap().intra_op_threads, 3);
        o.set("enable-global-threadpool", "1").unwrap();
        assert_eq!(SessionSettings::resolve(&o, &spec(&p, 0)).unwrap().intra_op_threads, 3);
    }

    #[test]
    fn bad_values_are_refused() {
        let o = OrtOptions::default();
        for p in [
            ("intra_op_thread_count", "x"),
            ("inter_op_thread_count", "1025"),
            ("execution_mode", "2"),
            ("enable_mem_pattern", "maybe"),
        ] {
            assert!(SessionSettings::resolve(&o, &spec(&[p], 0)).is_err(), "{p:?}");
        }
        assert!(OrtOptions::default().set("enable-global-threadpool", "2").is_err());
    }
}
