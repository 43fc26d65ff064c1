//! The backend flags (heading "Backend"): where ONNX Runtime is looked for, and `--backend-config` into the
//! engine choice and its ONNX Runtime options.

use std::path::PathBuf;

use clap::Args;

use super::CliError;
use crate::backends::{EngineChoice, HAS_ONNXRUNTIME, OrtOptions, PythonOptions};

#[derive(Args, Debug)]
pub struct BackendFlags {
    /// Where the ONNX Runtime library (libonnxruntime.so) is looked for.
    #[arg(long, default_value = "/opt/tritonserver/backends", help_heading = "Backend")]
    pub backend_directory: PathBuf,
    /// `<backend>,<key>=<value>` or `<key>=<value>`. Supported: `onnxruntime,engine=onnxruntime|tract`,
    /// `onnxruntime,intra_op_thread_count=<n>` (default 1), `onnxruntime,inter_op_thread_count=<n>` (default 1),
    /// `onnxruntime,enable-global-threadpool=0|1`, `python,interpreter=<path>`, `python,user=<uid>[:<gid>]`, `python,allow-model-control=true`,
    /// `default-max-batch-size=<n>`.
    #[arg(long, help_heading = "Backend")]
    pub backend_config: Vec<String>,
}

impl BackendFlags {
    /// The engine for ONNX models (ONNX Runtime unless this build lacks it or `engine=tract` is given) and
    /// its settings.
    pub(super) fn engine(&self) -> Result<(EngineChoice, OrtOptions, PythonOptions), CliError> {
        let mut engine =
            if HAS_ONNXRUNTIME { EngineChoice::OnnxRuntime } else { EngineChoice::Tract };
        let mut onnxruntime = OrtOptions::default();
        let mut python = PythonOptions::default();
        for bc in &self.backend_config {
            let (backend, kv) = match bc.split_once(',') {
                Some((b, kv)) => (Some(b), kv),
                None => (None, bc.as_str()),
            };
            let Some((k, v)) = kv.split_once('=') else {
                return Err(CliError::BackendConfigFormat(bc.clone()));
            };
            match (backend, k) {
                (Some("onnxruntime"), "engine") => {
                    engine = EngineChoice::parse(v)
                        .ok_or_else(|| CliError::BackendConfigEngine(bc.clone()))?;
                }
                (Some("onnxruntime"), k)
                    if onnxruntime.set(k, v).map_err(|reason| {
                        CliError::BackendConfigValue { spec: bc.clone(), reason }
                    })? => {}
                (Some("python"), k)
                    if python.set(k, v).map_err(|reason| CliError::BackendConfigValue {
                        spec: bc.clone(),
                        reason,
                    })? => {}
                (None, "default-max-batch-size")
                    if v == rampart_core::AUTOCOMPLETE_DEFAULT_MAX_BATCH_SIZE.to_string() => {}
                _ => {
                    return Err(CliError::not_yet(
                        "backend-config",
                        bc,
                        "supported: onnxruntime,engine=onnxruntime|tract, onnxruntime,intra_op_thread_count=N, \
                         onnxruntime,inter_op_thread_count=N, onnxruntime,enable-global-threadpool=0|1, \
                         python,interpreter=PATH, python,user=UID[:GID], python,allow-model-control=true|false",
                    ));
                }
            }
        }
        Ok((engine, onnxruntime, python))
    }
}
