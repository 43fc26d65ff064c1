//! A served model version: its final config, its instance pool and its statistics.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rampart_model_config::ModelConfig;
use rampart_types::{Error, Result};
use tokio::sync::oneshot;

use crate::executor::{Job, Reply, Streamed};
use crate::infer::{self, EngineInputs, InferRequest, InferResponse};
use crate::stats::{FailureReason, ModelStats};

/// The scheduler of one model version.
pub(crate) type Scheduler = rampart_scheduler::Scheduler<Job>;

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
    run: Run,
    /// `model_transaction_policy { decoupled: true }`: zero or more responses per request.
    pub decoupled: bool,
    /// Each output's `label_filename` lines (the classification extension).
    pub labels: Arc<crate::classify::Labels>,
    /// Requests being answered (decoupled ones until their last response), so an unload can wait for them.
    in_flight: Arc<std::sync::atomic::AtomicUsize>,
    /// A stateful model's spec and the state of its open sequences (`sequence_batching`).
    pub(crate) sequences: Option<crate::sequence::Held>,
    /// Its engine sees requests (`Engine::takes_requests`): each job carries the request's metadata.
    pub(crate) takes_requests: bool,
    /// The model's own readiness checks (one per instance that has one), asked by readiness requests.
    pub(crate) readiness: Vec<Arc<dyn rampart_types::ReadinessCheck>>,
    /// Under a signature policy: whether it loaded from verified bytes (`None`: the policy is off).
    pub(crate) signature_verified: Option<bool>,
}

/// What answers a version's requests (one per version, so the variants' sizes do not matter).
#[allow(clippy::large_enum_variant)]
pub(crate) enum Run {
    /// Instances of a backend behind the version's scheduler, and the server's response cache when the
    /// model enables it.
    Engine { pool: Scheduler, cache: Option<crate::cache::ResponseCache> },
    /// An ensemble's steps.
    Ensemble(Arc<crate::ensemble::Plan>),
}

/// A request whose caller went away before its answer (the future was dropped) still counts: as a
/// failure for reason CANCELED, as Triton counts it.
struct Unanswered<'a> {
    stats: &'a ModelStats,
    start: Instant,
    armed: bool,
}

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.stats.record_request(Err(FailureReason::Canceled), self.start.elapsed());
        }
    }
}

/// Counts one request in `ModelVersion::in_flight` until dropped.
struct Busy(Arc<std::sync::atomic::AtomicUsize>);

impl Busy {
    fn new(count: &Arc<std::sync::atomic::AtomicUsize>) -> Self {
        count.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Busy(count.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

impl ModelVersion {
    pub(crate) fn new(
        config: Arc<ModelConfig>,
        version: i64,
        run: Run,
        stats: Arc<ModelStats>,
        load_duration: Duration,
        engine_inputs: EngineInputs,
    ) -> Self {
        let decoupled = crate::config::is_decoupled(&config);
        ModelVersion {
            decoupled,
            name: config.name.clone(),
            version,
            config,
            stats,
            load_duration,
            engine_inputs,
            run,
            labels: Default::default(),
            in_flight: Default::default(),
            sequences: None,
            takes_requests: false,
            readiness: Vec::new(),
            signature_verified: None,
        }
    }

    /// Whether a request is being answered by this version.
    pub(crate) fn busy(&self) -> bool {
        self.in_flight.load(std::sync::atomic::Ordering::Acquire) > 0
    }

    pub(crate) fn label(name: &str, version: i64) -> String {
        format!("model '{name}' version {version}")
    }

    /// One request of a model with one response per request.
    pub(crate) async fn infer(&self, req: InferRequest) -> Result<InferResponse> {
        let _busy = Busy::new(&self.in_flight);
        let start = Instant::now();
        let trace = req.trace.clone();
        if let Some(t) = &trace {
            t.set_version(self.version);
            t.stamp_at("REQUEST_START", start);
        }
        let mut reason = FailureReason::Other;
        let mut unanswered = Unanswered { stats: &self.stats, start, armed: true };
        let result = self.infer_inner(req, &mut reason).await;
        unanswered.armed = false;
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

    /// Open sequences of a stateful version (0 otherwise).
    pub fn open_sequences(&self) -> usize {
        match &self.run {
            Run::Engine { pool, .. } => pool.open_sequences(),
            Run::Ensemble(_) => 0,
        }
    }

    /// Whether this version answers from the response cache.
    pub fn uses_cache(&self) -> bool {
        matches!(self.run, Run::Engine { cache: Some(_), .. })
    }

    /// `reason` says why a failure failed: set as the request moves past each stage.
    async fn infer_inner(
        &self,
        req: InferRequest,
        reason: &mut FailureReason,
    ) -> Result<InferResponse> {
        let prepared = infer::prepare(&self.config, &self.engine_inputs, &req)?;
        let (pool, cache) = match &self.run {
            Run::Engine { pool, cache } => (pool, cache),
            Run::Ensemble(plan) => {
                let batch_size = prepared.batch_size;
                let sequence = crate::ensemble::sequence_parameters(&req.parameters);
                let call = crate::ensemble::Call::new(&req, prepared);
                let mut sink = crate::ensemble::Sink::One(None);
                let took = plan.run(call, &mut sink).await?;
                crate::ensemble::record_success(&self.stats, batch_size, took);
                let crate::ensemble::Sink::One(Some(outputs)) = sink else {
                    unreachable!("an ensemble without decoupled steps answers once")
                };
                let mut response = self.response(req.id, outputs, batch_size);
                response.parameters = sequence;
                return Ok(response);
            }
        };
        // Response cache: a hit answers without the engine (and, as in Triton, counts in neither the
        // inference nor the execution count); a miss runs the request and stores its outputs.
        let cached = cache.as_ref().map(|cache| {
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
        *reason = FailureReason::Rejected;
        let batch_size = prepared.batch_size;
        self.submit(pool, &req, prepared, Reply::Unary(tx))?;
        let answer = rx
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
            cache.insert(key, Arc::new(answer.outputs.clone()));
            self.stats.cache_miss.record(lookup + stored.elapsed());
        }
        let mut response = self.response(req.id, answer.outputs, batch_size);
        response.parameters = answer.parameters;
        Ok(response)
    }

    /// Queues a validated request with the queue ticket its `priority` and `timeout` parameters ask for.
    fn submit(
        &self,
        pool: &Scheduler,
        req: &InferRequest,
        prepared: infer::Prepared,
        reply: Reply,
    ) -> Result<()> {
        let unsigned = |key: &str| match req.parameters.get(key) {
            Some(infer::ParamValue::Uint(v)) => Some(*v),
            Some(infer::ParamValue::Int(v)) => u64::try_from(*v).ok(),
            _ => None,
        };
        let timeout = unsigned("timeout");
        let ticket = pool.ticket(unsigned("priority"), timeout);
        let enqueued = Instant::now();
        if let Some(t) = &req.trace {
            t.stamp_at("QUEUE_START", enqueued);
        }
        let membership = match &self.sequences {
            Some(held) => {
                let batch = prepared.batch_size;
                Some((held, crate::sequence::admit(&self.name, &held.spec, req, batch, timeout)?))
            }
            None => None,
        };
        let info = if self.takes_requests { infer::request_info(req) } else { Default::default() };
        let job = Job {
            info,
            trace: req.trace.clone(),
            pending: Some(crate::stats::Pending::new(self.stats.clone())),
            inputs: prepared.inputs,
            outputs: prepared.outputs,
            batch_size: prepared.batch_size,
            enqueued,
            reply,
            cancelled: req.cancelled.clone(),
        };
        match membership {
            Some((held, m)) => {
                let id = m.id.clone();
                pool.submit_in_sequence(job, m)
                    .map_err(|r| crate::sequence::refused(&self.name, &id, r, held))
            }
            None => pool.submit(job, ticket),
        }
    }

    /// One request of a decoupled model: its responses arrive through the returned stream as the instance
    /// sends them. Validation and queueing errors are returned at once.
    pub(crate) fn infer_decoupled(self: &Arc<Self>, req: InferRequest) -> Result<DecoupledStream> {
        let busy = Busy::new(&self.in_flight);
        let start = Instant::now();
        if let Some(t) = &req.trace {
            t.set_version(self.version);
            t.stamp_at("REQUEST_START", start);
        }
        let fail = |e: Error, reason| {
            self.stats.record_request(Err(reason), start.elapsed());
            e
        };
        let prepared = infer::prepare(&self.config, &self.engine_inputs, &req)
            .map_err(|e| fail(e, FailureReason::Other))?;
        let batch_size = prepared.batch_size;
        // One response waits here at most: the instance blocks until the front end takes it, so what a slow
        // reader holds is bounded by the front end's own buffer.
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        // Every response of an ensemble echoes the request's sequence parameters.
        let parameters = match &self.run {
            Run::Engine { pool, .. } => {
                self.submit(pool, &req, prepared, Reply::Stream(tx))
                    .map_err(|e| fail(e, FailureReason::Rejected))?;
                Default::default()
            }
            Run::Ensemble(plan) => {
                crate::ensemble::spawn_stream(plan, &self.stats, &req, prepared, tx);
                crate::ensemble::sequence_parameters(&req.parameters)
            }
        };
        Ok(DecoupledStream {
            model: self.clone(),
            rx,
            parameters,
            id: req.id,
            batch_size,
            start,
            trace: req.trace,
            cancelled: req.cancelled,
            done: false,
            _busy: busy,
        })
    }

    pub(crate) fn response(
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

/// The responses of one request, in the order the model sent them: one for most models, zero or more for
/// a decoupled one. The last item is flagged [`StreamedResponse::last`] (for a decoupled model it carries no
/// response: Triton's final flag), or is an error. Dropping the stream cancels the request.
pub struct ResponseStream {
    kind: Kind,
    _server: Option<Box<dyn Send + Sync>>,
}

enum Kind {
    One(Option<InferResponse>),
    Many(DecoupledStream),
}

impl ResponseStream {
    pub(crate) fn one(response: InferResponse) -> Self {
        ResponseStream { kind: Kind::One(Some(response)), _server: None }
    }

    /// `guard` is held until the stream is dropped (the server counts the request in flight).
    pub(crate) fn many(stream: DecoupledStream, guard: Box<dyn Send + Sync>) -> Self {
        ResponseStream { kind: Kind::Many(stream), _server: Some(guard) }
    }

    /// Whether the model is decoupled (its responses end with a separate final flag).
    pub fn decoupled(&self) -> bool {
        matches!(self.kind, Kind::Many(_))
    }

    /// The next response; `None` after the last one.
    pub async fn next(&mut self) -> Option<Result<StreamedResponse>> {
        match &mut self.kind {
            Kind::One(r) => {
                r.take().map(|r| Ok(StreamedResponse { response: Some(r), last: true }))
            }
            Kind::Many(s) => s.next().await,
        }
    }
}

/// The responses of one decoupled request.
pub(crate) struct DecoupledStream {
    model: Arc<ModelVersion>,
    rx: tokio::sync::mpsc::Receiver<Streamed>,
    /// Response parameters every response carries (an ensemble's sequence parameters).
    parameters: crate::infer::Parameters,
    id: String,
    batch_size: u64,
    start: Instant,
    trace: Option<Arc<crate::trace::Trace>>,
    /// [`infer::InferRequest::cancelled`]: a request dropped unexecuted ends CANCELLED.
    cancelled: Option<Arc<std::sync::atomic::AtomicBool>>,
    done: bool,
    _busy: Busy,
}

/// One item of a [`ResponseStream`].
#[derive(Debug)]
pub struct StreamedResponse {
    /// `None`: the final flag alone (Triton's empty final response).
    pub response: Option<InferResponse>,
    /// No more responses follow.
    pub last: bool,
}

impl DecoupledStream {
    pub(crate) async fn next(&mut self) -> Option<Result<StreamedResponse>> {
        if self.done {
            return None;
        }
        let item = match self.rx.recv().await {
            Some(Streamed::Response(answer)) => {
                let response = self.response(answer);
                return Some(Ok(StreamedResponse { response: Some(response), last: false }));
            }
            Some(Streamed::Last(answer)) => {
                Ok(StreamedResponse { response: Some(self.response(answer)), last: true })
            }
            Some(Streamed::Final) => Ok(StreamedResponse { response: None, last: true }),
            Some(Streamed::Error(e)) => Err(e),
            None if crate::executor::flagged(&self.cancelled) => Err(crate::executor::cancelled()),
            None => Err(Error::internal(format!(
                "{} stopped before answering",
                ModelVersion::label(&self.model.name, self.model.version)
            ))),
        };
        self.finish(item.as_ref().map(|_| ()).map_err(|e| match e.code() {
            rampart_types::Code::Unavailable => FailureReason::Rejected,
            rampart_types::Code::Cancelled => FailureReason::Canceled,
            _ => FailureReason::Backend,
        }));
        Some(item)
    }

    /// A response: the stream's parameters, then the ones model code set on it.
    fn response(&self, answer: crate::executor::Answer) -> InferResponse {
        let mut response = self.model.response(self.id.clone(), answer.outputs, self.batch_size);
        response.parameters.clone_from(&self.parameters);
        response.parameters.extend(answer.parameters);
        response
    }

    fn finish(&mut self, outcome: std::result::Result<(), FailureReason>) {
        self.done = true;
        if let Some(t) = &self.trace {
            t.stamp("REQUEST_END");
        }
        self.model.stats.record_request(outcome, self.start.elapsed());
    }
}

impl Drop for DecoupledStream {
    /// A stream dropped before its last response: the caller went away, and the request is cancelled.
    fn drop(&mut self) {
        if !self.done {
            self.finish(Err(FailureReason::Canceled));
        }
    }
}
