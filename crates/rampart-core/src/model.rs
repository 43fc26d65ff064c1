//! A served model version: its final config, its instance pool and its statistics.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rampart_model_config::ModelConfig;
use rampart_types::{Error, Result};
use tokio::sync::oneshot;

use crate::infer::{self, EngineInputs, InferRequest, InferResponse};
use crate::scheduler::{InstancePool, Job};
use crate::stats::ModelStats;

/// Model version states reported by the repository index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelState {
    Ready,
    Unavailable,
    Loading,
    Unloading,
}

impl ModelState {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelState::Ready => "READY",
            ModelState::Unavailable => "UNAVAILABLE",
            ModelState::Loading => "LOADING",
            ModelState::Unloading => "UNLOADING",
        }
    }
}

pub struct ModelVersion {
    pub name: String,
    pub version: i64,
    pub config: Arc<ModelConfig>,
    pub stats: Arc<ModelStats>,
    pub load_duration: Duration,
    engine_inputs: EngineInputs,
    pool: InstancePool,
}

impl ModelVersion {
    pub(crate) fn new(
        config: Arc<ModelConfig>,
        version: i64,
        pool: InstancePool,
        stats: Arc<ModelStats>,
        load_duration: Duration,
        engine_inputs: EngineInputs,
    ) -> Self {
        ModelVersion { name: config.name.clone(), version, config, stats, load_duration, engine_inputs, pool }
    }

    pub(crate) fn label(name: &str, version: i64) -> String {
        format!("model '{name}' version {version}")
    }

    pub(crate) async fn infer(&self, req: InferRequest) -> Result<InferResponse> {
        let start = Instant::now();
        let result = self.infer_inner(req).await;
        self.stats.record_request(result.is_ok(), start.elapsed());
        result
    }

    async fn infer_inner(&self, req: InferRequest) -> Result<InferResponse> {
        let prepared = infer::prepare(&self.config, &self.engine_inputs, &req)?;
        let (tx, rx) = oneshot::channel();
        self.pool.submit(Job {
            inputs: prepared.inputs,
            outputs: prepared.outputs,
            batch_size: prepared.batch_size,
            enqueued: Instant::now(),
            reply: tx,
        })?;
        let outputs = rx
            .await
            .map_err(|_| Error::internal(format!("{} stopped before answering", Self::label(&self.name, self.version))))??;
        Ok(InferResponse {
            model_name: self.name.clone(),
            model_version: self.version,
            id: req.id,
            parameters: Default::default(),
            outputs: infer::finish_outputs(&self.config, outputs, prepared.batch_size),
        })
    }
}
