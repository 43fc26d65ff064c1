//! `model_warmup` (Triton's config field): each sample runs `count` times through the version's normal
//! request path before the version is READY; a failing sample fails the load. Statistics start from zero
//! afterwards, as if the warmup never happened.

use std::path::Path;

use bytes::Bytes;
use rampart_model_config::ModelConfig;
use rampart_model_config::pb::model_warmup::input::InputDataType;
use rampart_types::{DataType, Error, Result};

use crate::infer::{InferRequest, InputTensor};
use crate::model::ModelVersion;

/// Most executions one sample may ask for, and most elements one warmup input may have.
pub const MAX_WARMUP_COUNT: u32 = 1000;
pub const MAX_WARMUP_ELEMENTS: u64 = 64 << 20;

/// The requests of every sample, built and checked against the config (`dir`: the model directory, whose
/// `warmup/` folder holds `input_data_file`s).
fn requests(config: &ModelConfig, dir: &Path) -> Result<Vec<(String, u32, InferRequest)>> {
    let mut out = Vec::new();
    for sample in &config.model_warmup {
        let what =
            |msg: String| Error::invalid_arg(format!("model_warmup '{}': {msg}", sample.name));
        if sample.count > MAX_WARMUP_COUNT {
            return Err(what(format!("count {} is more than {MAX_WARMUP_COUNT}", sample.count)));
        }
        let batch = if config.max_batch_size > 0 {
            if sample.batch_size == 0 || sample.batch_size as i32 > config.max_batch_size {
                return Err(what(format!(
                    "batch_size must be in 1..={}, got {}",
                    config.max_batch_size, sample.batch_size
                )));
            }
            Some(i64::from(sample.batch_size))
        } else {
            None
        };
        let mut inputs = Vec::new();
        let mut names: Vec<&String> = sample.inputs.keys().collect();
        names.sort();
        for name in names {
            let input = &sample.inputs[name];
            let datatype = DataType::from_config_enum(input.data_type).ok_or_else(|| {
                what(format!("input '{name}': unknown data_type {}", input.data_type))
            })?;
            if input.dims.iter().any(|&d| d < 0) {
                return Err(what(format!(
                    "input '{name}': dims must be non-negative, got {:?}",
                    input.dims
                )));
            }
            let shape: Vec<i64> = batch.into_iter().chain(input.dims.iter().copied()).collect();
            let elements = shape
                .iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
                .filter(|&n| n <= MAX_WARMUP_ELEMENTS);
            let elements = elements.ok_or_else(|| {
                what(format!("input '{name}': more than {MAX_WARMUP_ELEMENTS} elements"))
            })?;
            // BYTES elements are length-prefixed: zeros are empty strings.
            let element_size = datatype.element_size().unwrap_or(4) as u64;
            let size = (elements * element_size) as usize;
            let data = match &input.input_data_type {
                Some(InputDataType::RandomData(true)) if datatype.element_size().is_some() => {
                    let mut buf = vec![0u8; size];
                    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut buf)
                        .map_err(|_| Error::internal("no random numbers for model_warmup"))?;
                    // Floating-point random bytes can be NaN or infinite; that is fine for a warmup.
                    Bytes::from(buf)
                }
                Some(InputDataType::InputDataFile(file)) => {
                    let rel = crate::repository::check_relative_path(file).map_err(|why| {
                        what(format!("input '{name}': input_data_file '{file}': {why}"))
                    })?;
                    let warmup_dir = dir.join("warmup");
                    let path = warmup_dir.join(rel);
                    let real = std::fs::canonicalize(&path).map_err(|e| {
                        what(format!("input '{name}': cannot read '{}': {e}", path.display()))
                    })?;
                    let root = std::fs::canonicalize(&warmup_dir)
                        .map_err(|e| what(format!("input '{name}': {e}")))?;
                    if !real.starts_with(&root) {
                        return Err(what(format!(
                            "input '{name}': '{file}' leaves the model's warmup folder"
                        )));
                    }
                    let len = std::fs::metadata(&real).map(|m| m.len()).unwrap_or(u64::MAX);
                    if datatype.element_size().is_some() && len != size as u64 {
                        return Err(what(format!(
                            "input '{name}': '{}' holds {len} bytes, the input needs {size}",
                            path.display()
                        )));
                    }
                    if len > MAX_WARMUP_ELEMENTS * 8 {
                        return Err(what(format!(
                            "input '{name}': '{}' is too large",
                            path.display()
                        )));
                    }
                    let raw =
                        std::fs::read(&real).map_err(|e| what(format!("input '{name}': {e}")))?;
                    if datatype.element_size().is_some() {
                        Bytes::from(raw)
                    } else {
                        // BYTES: the file is one element, repeated for every element of the input.
                        let mut buf = Vec::with_capacity((raw.len() + 4) * elements as usize);
                        for _ in 0..elements {
                            buf.extend_from_slice(&(raw.len() as u32).to_le_bytes());
                            buf.extend_from_slice(&raw);
                        }
                        Bytes::from(buf)
                    }
                }
                _ => Bytes::from(vec![0u8; size]),
            };
            inputs.push(InputTensor::new(name.clone(), datatype, shape, data));
        }
        let request =
            InferRequest { model_name: config.name.clone(), inputs, ..Default::default() };
        out.push((sample.name.clone(), sample.count.max(1), request));
    }
    Ok(out)
}

/// Runs every sample (blocking: called while the version loads, on a thread outside the async runtime).
pub(crate) fn run(version: &ModelVersion, dir: &Path) -> Result<()> {
    if version.config.model_warmup.is_empty() {
        return Ok(());
    }
    let samples = requests(&version.config, dir)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| Error::internal(format!("cannot run model_warmup: {e}")))?;
    for (name, count, request) in samples {
        for _ in 0..count {
            runtime.block_on(version.infer(request.clone())).map_err(|e| {
                Error::invalid_arg(format!("model_warmup '{name}' failed: {}", e.message()))
            })?;
        }
        tracing::info!(
            "model '{}' version {}: warmup '{name}' ran {count} time(s)",
            version.name,
            version.version
        );
    }
    version.stats.reset();
    Ok(())
}
