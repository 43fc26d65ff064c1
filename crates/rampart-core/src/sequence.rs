//! Stateful models (`sequence_batching`): what a config asks of the sequence batcher (the policy), the
//! control tensors the server makes for every batch row (START, END, READY, CORRID), the implicit state
//! carried from one request of a sequence to the next, and a request's sequence parameters. The batcher
//! itself is `rampart_scheduler::sequence`; `sequence/spec.rs` reads a config's `sequence_batching`,
//! `sequence/exec.rs` runs the batcher's rows on an instance.

mod exec;
mod spec;

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use rampart_model_config::ModelConfig;
use rampart_model_config::pb::model_config::SchedulingChoice;
use rampart_model_config::pb::model_sequence_batching::control::Kind;
use rampart_scheduler::{SequenceId, SequencePolicy};
use rampart_types::{DataType, Error, Result, Tensor};

use exec::SequenceInstance;
pub(crate) use spec::spec;

use crate::infer::{ParamValue, Parameters};

/// One control tensor: what it carries and its [false, true] values.
#[derive(Clone, Debug)]
pub(crate) struct Control {
    pub input: String,
    pub kind: ControlKind,
    pub data_type: DataType,
}

#[derive(Clone, Debug)]
pub(crate) enum ControlKind {
    /// START, END or READY: one of two little-endian values.
    Flag { which: Kind, values: [Bytes; 2] },
    /// The sequence's correlation ID in `data_type`.
    CorrId,
}

/// One implicit state: the input that reads it, the output that writes it, and its value at START.
#[derive(Clone, Debug)]
pub(crate) struct StateSpec {
    pub input: String,
    pub output: String,
    pub data_type: DataType,
    /// The value at START, without the batch dimension.
    pub initial: Tensor,
}

/// What a model version's `sequence_batching` asks for.
pub(crate) struct SequenceSpec {
    pub batching: bool,
    pub controls: Vec<Control>,
    pub states: Vec<StateSpec>,
    /// The engine sees requests (a Python model): each request of a sequence batch goes to it as itself,
    /// with its correlation ID, flags and control tensors, and no null rows.
    pub requests: bool,
}

impl SequenceSpec {
    /// Input and output names the server supplies or keeps (never declared as `input`/`output`).
    pub(crate) fn internal_names(c: &ModelConfig) -> Vec<String> {
        let Some(SchedulingChoice::SequenceBatching(s)) = &c.scheduling_choice else {
            return vec![];
        };
        let controls = s.control_input.iter().map(|ci| ci.name.clone());
        let states = s.state.iter().flat_map(|st| [st.input_name.clone(), st.output_name.clone()]);
        controls.chain(states).collect()
    }
}

/// The implicit state of every open sequence of one model version, and how many sequences ended idle.
#[derive(Default)]
pub(crate) struct SequenceStates {
    /// By the batcher's sequence key (a reused correlation ID is a new sequence).
    values: Mutex<HashMap<u64, Vec<Tensor>>>,
    pub idle_released: AtomicU64,
    pub ended: AtomicU64,
}

impl SequenceStates {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Vec<Tensor>>> {
        self.values.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn take(&self, key: u64) -> Option<Vec<Tensor>> {
        self.lock().remove(&key)
    }

    pub(crate) fn put(&self, key: u64, values: Vec<Tensor>) {
        self.lock().insert(key, values);
    }

    /// A sequence ended: its state goes.
    pub(crate) fn release(&self, key: u64, why: rampart_scheduler::Released) {
        self.lock().remove(&key);
        let counter = match why {
            rampart_scheduler::Released::Idle => &self.idle_released,
            rampart_scheduler::Released::End | rampart_scheduler::Released::Expired => &self.ended,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Open sequences per model version and per caller when the server sets no other bound.
pub const DEFAULT_MAX_SEQUENCES: usize = 4096;
pub const DEFAULT_MAX_SEQUENCES_PER_CLIENT: usize = 1024;

/// How many sequences may be open, and Triton's scheduling-delay test hook.
#[derive(Debug, Clone)]
pub struct SequenceLimits {
    /// Open sequences per model version (`--max-sequences`); more STARTs are answered UNAVAILABLE.
    pub max_sequences: usize,
    /// Open sequences per caller and model version (`--max-sequences-per-client`).
    pub max_per_client: usize,
    /// `TRITONSERVER_DELAY_SCHEDULER`: a sequence batcher (and a dynamic batcher) forms no batch until
    /// this many requests wait (once; 0 = off).
    pub hold_until: usize,
    /// `TRITONSERVER_BACKLOG_DELAY_SCHEDULER`: with `hold_until`, also until this many requests wait in
    /// the backlog.
    pub hold_backlog: usize,
}

impl Default for SequenceLimits {
    fn default() -> Self {
        SequenceLimits {
            max_sequences: DEFAULT_MAX_SEQUENCES,
            max_per_client: DEFAULT_MAX_SEQUENCES_PER_CLIENT,
            hold_until: 0,
            hold_backlog: 0,
        }
    }
}

/// A request's place in its sequence (`sequence_id`, `sequence_start`, `sequence_end`); `None` without an
/// ID (0 or "").
pub(crate) fn membership(parameters: &Parameters) -> Option<(SequenceId, bool, bool)> {
    let id = match parameters.get("sequence_id")? {
        ParamValue::Uint(0) | ParamValue::Int(0) => return None,
        ParamValue::Uint(n) => SequenceId::Number(*n),
        ParamValue::Int(n) => SequenceId::Number(*n as u64),
        ParamValue::String(s) if s.is_empty() => return None,
        ParamValue::String(s) => SequenceId::Text(s.clone()),
        _ => return None,
    };
    let flag = |k: &str| matches!(parameters.get(k), Some(ParamValue::Bool(true)));
    Some((id, flag("sequence_start"), flag("sequence_end")))
}

/// What a served stateful version keeps: its spec and the state of its open sequences.
pub(crate) struct Held {
    /// The controls a request is checked against (the CORRID type) and whether the model batches.
    pub spec: std::sync::Arc<SequenceSpec>,
    pub states: std::sync::Arc<SequenceStates>,
    /// Where a refused foreign request is recorded.
    pub audit: Option<std::sync::Arc<crate::audit::AuditLog>>,
}

/// Starts the sequence batcher of one version over its instances.
pub(crate) fn start(
    label: String,
    instances: Vec<Box<dyn rampart_types::EngineInstance>>,
    stats: &std::sync::Arc<crate::stats::ModelStats>,
    capacity: usize,
    policy: SequencePolicy,
    spec: SequenceSpec,
    audit: Option<std::sync::Arc<crate::audit::AuditLog>>,
) -> Result<(rampart_scheduler::Scheduler<crate::executor::Job>, Held)> {
    use std::sync::Arc;
    let spec = Arc::new(spec);
    let states = Arc::new(SequenceStates::default());
    let executors: Vec<SequenceInstance> = instances
        .into_iter()
        .map(|engine| SequenceInstance {
            engine,
            stats: stats.clone(),
            spec: spec.clone(),
            states: states.clone(),
        })
        .collect();
    let kept = states.clone();
    let on_release: rampart_scheduler::OnRelease =
        Arc::new(move |key, _, why| kept.release(key, why));
    let pool = rampart_scheduler::Scheduler::start_sequences(
        label, executors, capacity, policy, on_release,
    )?;
    Ok((pool, Held { spec, states, audit }))
}

/// The sequence a request of stateful model `model` joins, with Triton's errors for a missing correlation
/// ID, a CORRID of the other kind or a batch of more than one; `principal` becomes the sequence's owner,
/// and `timeout_us` (its `timeout` parameter) bounds how long the sequence may wait in the backlog.
pub(crate) fn admit(
    model: &str,
    spec: &SequenceSpec,
    req: &crate::infer::InferRequest,
    batch_size: u64,
    timeout_us: Option<u64>,
) -> Result<rampart_scheduler::Membership> {
    let Some((id, start, end)) = membership(&req.parameters) else {
        // Without an ID the request counts as ID 0, which a string CORRID refuses by type first.
        check_corrid_type(model, spec, req, &SequenceId::Number(0))?;
        return Err(Error::invalid_arg(format!(
            "inference request to model '{model}' must specify a non-zero or non-empty correlation ID"
        )));
    };
    check_corrid_type(model, spec, req, &id)?;
    if spec.batching && batch_size != 1 {
        return Err(Error::invalid_arg(format!(
            "inference request to model '{model}' must specify batch-size 1 due to requirements of sequence batcher"
        )));
    }
    let deadline = timeout_us
        .filter(|&us| us > 0)
        .and_then(|us| std::time::Instant::now().checked_add(std::time::Duration::from_micros(us)));
    Ok(rampart_scheduler::Membership { id, start, end, owner: req.principal.clone(), deadline })
}

/// The error of a request its sequence did not take; a request into another client's sequence is audited.
pub(crate) fn refused(
    model: &str,
    id: &SequenceId,
    r: rampart_scheduler::Refusal,
    held: &Held,
) -> Error {
    use rampart_scheduler::Refusal;
    if r == Refusal::Foreign {
        tracing::warn!(model = %model.escape_debug(), "request refused: the sequence belongs to another client");
        if let Some(log) = &held.audit {
            log.record(&crate::audit::AuditEvent {
                event: "denied",
                model: Some(model.to_string()),
                target: Some(format!("sequence {id}")),
                outcome: Some("sequence started by another client".into()),
                ..Default::default()
            });
        }
    }
    match r {
        Refusal::NotStarted => Error::invalid_arg(format!(
            "inference request for sequence {id} to model '{model}' must specify the START flag on the first request of the sequence"
        )),
        Refusal::Foreign => Error::new(
            rampart_types::Code::PermissionDenied,
            format!("sequence {id} of model '{model}' was started by another client"),
        ),
        Refusal::TooMany(n) => Error::unavailable(format!(
            "model '{model}' has {n} open sequences, the most it may hold (--max-sequences); end one or wait for one to go idle"
        )),
        Refusal::TooManyForOwner(n) => Error::unavailable(format!(
            "this client has {n} open sequences of model '{model}', the most one client may hold (--max-sequences-per-client)"
        )),
        Refusal::Full(n) => Error::unavailable(format!(
            "inference queue of model '{model}' is full ({n} requests waiting; --max-queued-requests)"
        )),
        Refusal::Closed => Error::unavailable(format!("model '{model}' is unloading")),
    }
}

/// A string ID needs a TYPE_STRING CORRID control, a number one of the integer types (Triton's check).
fn check_corrid_type(
    model: &str,
    spec: &SequenceSpec,
    req: &crate::infer::InferRequest,
    id: &SequenceId,
) -> Result<()> {
    let Some(corrid) = spec.controls.iter().find(|c| matches!(c.kind, ControlKind::CorrId)) else {
        return Ok(());
    };
    let want = corrid.data_type;
    let got = match id {
        SequenceId::Text(_) => DataType::Bytes,
        SequenceId::Number(_) => DataType::Uint64,
    };
    if (got == DataType::Bytes) == (want == DataType::Bytes) {
        return Ok(());
    }
    Err(Error::invalid_arg(format!(
        "{}sequence batching control '{}' data-type is '{}', but model '{model}' expects '{}'",
        crate::infer::request_label(&req.id),
        corrid.input,
        got.as_str(),
        want.as_str()
    )))
}
