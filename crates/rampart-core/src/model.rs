//! A served model version: its final config, its instance pool and its statistics.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rampart_model_config::ModelConfig;
use rampart_types::{Error, Result};
use tokio::sync::oneshot;

use crate::infer::{self, EngineInputs, InferRequest, InferResponse};
use crate::scheduler::{InstancePool, Job};
use crate::stats::{FailureReason, ModelStats};

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
    /// The server's response cache, when this model enables it.
    cache: Option<crate::cache::ResponseCache>,
    /// Each output's `label_filename` lines (the classification extension).
    pub labels: Arc<crate::classify::Labels>,
    /// Requests inside `infer`, so an unload can wait for them.
    in_flight: std::sync::atomic::AtomicUsize,
}

/// Counts one request in `ModelVersion::in_flight` until dropped.
struct Busy<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

impl ModelVersion {
    pub(crate) fn new(
        config: Arc<ModelConfig>,
        version: i64,
        pool: InstancePool,
        stats: Arc<ModelStats>,
        load_duration: Duration,
        engine_inputs: EngineInputs,
        cache: Option<crate::cache::ResponseCache>,
    ) -> Self {
        ModelVersion {
            name: config.name.clone(),
            version,
            config,
            stats,
            load_duration,
            engine_inputs,
            pool,
            cache,
            labels: Default::default(),
            in_flight: Default::default(),
        }
    }

    /// Whether a request is being answered by this version.
    pub(crate) fn busy(&self) -> bool {
        self.in_flight.load(std::sync::atomic::Ordering::Acquire) > 0
    }

    pub(crate) fn label(name: &str, version: i64) -> String {
        format!("model '{name}' version {version}")
    }

    pub(crate) async fn infer(&self, req: InferRequest) -> Result<InferResponse> {
        self.in_flight.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        let _busy = Busy(&self.in_flight);
        let start = Instant::now();
        let trace = req.trace.clone();
        if let Some(t) = &trace {
            t.set_version(self.version);
            t.stamp_at("REQUEST_START", start);
        }
        let mut reason = FailureReason::Other;
        let result = self.infer_inner(req, &mut reason).await;
        if let Some(t) = &trace {
            t.stamp("REQUEST_END");
        }
        self.stats.record_request(result.as_ref().map(|_| ()).map_err(|_| reason), start.elapsed());
        result
    }

    /// Accepted requests that no execution has taken yet (queued, or held by the batcher).
    pub fn pending(&self) -> u64 {
        self.stats.pending()
    }

    /// Whether this version answers from the response cache.
    pub fn uses_cache(&self) -> bool {
        self.cache.is_some()
    }

    /// `reason` says why a failure failed: set as the request moves past each stage.
    async fn infer_inner(
        &self,
        req: InferRequest,
        reason: &mut FailureReason,
    ) -> Result<InferResponse> {
        let prepared = infer::prepare(&self.config, &self.engine_inputs, &req)?;
        // Response cache: a hit answers without the engine (and, as in Triton, counts in neither the
        // inference nor the execution count); a miss runs the request and stores its outputs.
        let cached = self.cache.as_ref().map(|cache| {
            let looked_up = Instant::now();
            let key =
                crate::cache::key(&self.name, self.version, &prepared.inputs, &prepared.outputs);
            (cache, key, cache.get(&key), looked_up)
        });
        if let Some((_, _, Some(outputs), looked_up)) = &cached {
            let outputs = outputs.as_ref().clone();
            // Triton counts a hit in the queue statistics too (with no wait); perf_analyzer finds the model
            // version whose queue count moved.
            self.stats.queue.record(Duration::ZERO);
            self.stats.cache_hit.record(looked_up.elapsed());
            return Ok(self.response(req.id, outputs, prepared.batch_size));
        }
        let (tx, rx) = oneshot::channel();
        let unsigned = |key: &str| match req.parameters.get(key) {
            Some(infer::ParamValue::Uint(v)) => Some(*v),
            Some(infer::ParamValue::Int(v)) => u64::try_from(*v).ok(),
            _ => None,
        };
        let (level, deadline, delay_on_timeout) =
            self.pool.schedule(unsigned("priority"), unsigned("timeout"));
        *reason = FailureReason::Rejected;
        let enqueued = Instant::now();
        if let Some(t) = &req.trace {
            t.stamp_at("QUEUE_START", enqueued);
        }
        self.pool.submit(Job {
            trace: req.trace.clone(),
            pending: Some(crate::stats::Pending::new(self.stats.clone())),
            inputs: prepared.inputs,
            outputs: prepared.outputs,
            batch_size: prepared.batch_size,
            enqueued,
            level,
            deadline,
            delay_on_timeout,
            reply: tx,
        })?;
        let outputs = rx
            .await
            .map_err(|_| {
                Error::internal(format!(
                    "{} stopped before answering",
                    Self::label(&self.name, self.version)
                ))
            })?
            .inspect_err(|e| {
                // The scheduler answers queue timeouts UNAVAILABLE; anything else came from the engine.
                if e.code() != rampart_types::Code::Unavailable {
                    *reason = FailureReason::Backend;
                }
            })?;
        if let Some((cache, key, None, looked_up)) = cached {
            let lookup = looked_up.elapsed();
            let stored = Instant::now();
            cache.insert(key, Arc::new(outputs.clone()));
            self.stats.cache_miss.record(lookup + stored.elapsed());
        }
        Ok(self.response(req.id, outputs, prepared.batch_size))
    }

    fn response(
        &self,
        id: String,
        outputs: Vec<rampart_types::Tensor>,
        batch_size: u64,
    ) -> InferResponse {
        InferResponse {
            model_name: self.name.clone(),
            model_version: self.version,
            id,
            parameters: Default::default(),
            outputs: infer::finish_outputs(&self.config, outputs, batch_size),
            shm_outputs: Default::default(),
        }
    }
}
