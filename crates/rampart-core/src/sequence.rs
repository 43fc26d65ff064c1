//! Stateful models (`sequence_batching`): what a config asks of the sequence batcher (the policy), the
//! control tensors the server makes for every batch row (START, END, READY, CORRID), the implicit state
//! carried from one request of a sequence to the next, and a request's sequence parameters. The batcher
//! itself is `rampart_scheduler::sequence`; `sequence/exec.rs` runs its rows on an instance.

mod exec;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use rampart_model_config::ModelConfig;
use rampart_model_config::pb::model_config::SchedulingChoice;
use rampart_model_config::pb::model_sequence_batching::{StrategyChoice, control::Kind};
use rampart_scheduler::{SequenceId, SequencePolicy, Strategy};
use rampart_types::{DataType, Error, Result, Tensor};

use exec::SequenceInstance;

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

impl SequenceSpec {
    /// Every control and state the config names must be an input (and a state an output) of the model,
    /// with the config's data type (Triton's load errors).
    pub(crate) fn check_signature(
        &self,
        model: &str,
        sig: &rampart_types::ModelSignature,
    ) -> Result<()> {
        let find = |list: &[rampart_types::IoSpec], name: &str| {
            list.iter().find(|s| s.name == name).map(|s| s.datatype.clone().ok())
        };
        let named =
            self.controls.iter().map(|c| ("sequence control", &c.input, c.data_type, true)).chain(
                self.states.iter().flat_map(|st| {
                    [
                        ("state input", &st.input, st.data_type, true),
                        ("state output", &st.output, st.data_type, false),
                    ]
                }),
            );
        for (what, name, want, input) in named {
            let list = if input { &sig.inputs } else { &sig.outputs };
            let Some(got) = find(list, name) else {
                return Err(Error::invalid_arg(format!(
                    "configuration specified {what} '{name}', but model does not provide that {}",
                    if input { "input" } else { "output" }
                )));
            };
            if let Some(got) = got
                && got != want
            {
                return Err(Error::invalid_arg(format!(
                    "unable to load model '{model}', {what} '{name}', the model expects data-type {} but the model configuration specifies data-type {}",
                    got.config_name(),
                    want.config_name()
                )));
            }
        }
        Ok(())
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
            rampart_scheduler::Released::End => &self.ended,
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
    /// `TRITONSERVER_DELAY_SCHEDULER`: a sequence batcher forms no batch until this many requests wait
    /// (once; 0 = off).
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

/// The sequence batcher's policy and the model's controls and states, checked as Triton checks them.
pub(crate) fn spec(
    c: &ModelConfig,
    dir: &Path,
    limits: &SequenceLimits,
) -> Result<Option<(SequencePolicy, SequenceSpec)>> {
    let Some(SchedulingChoice::SequenceBatching(s)) = &c.scheduling_choice else {
        return Ok(None);
    };
    let name = &c.name;
    let invalid = |m: String| Err(Error::invalid_arg(m));
    let micros = Duration::from_micros;
    let strategy = match &s.strategy_choice {
        None => Strategy::Direct { max_delay: Duration::ZERO, min_utilization: 0.0 },
        Some(StrategyChoice::Direct(d)) => {
            let u = d.minimum_slot_utilization;
            if !(0.0..=1.0).contains(&u) {
                return invalid(format!(
                    "sequence batching minimum slot utilization must be in range (0.0, 1.0] for {name}"
                ));
            }
            Strategy::Direct {
                max_delay: micros(d.max_queue_delay_microseconds),
                min_utilization: u,
            }
        }
        Some(StrategyChoice::Oldest(o)) => {
            let mut preferred = Vec::new();
            for &p in &o.preferred_batch_size {
                if p <= 0 {
                    return invalid(format!(
                        "sequence batching preferred batch size must be positive for {name}"
                    ));
                }
                if p > c.max_batch_size.max(1) {
                    return invalid(format!(
                        "sequence batching preferred batch size must be <= max batch size for {name}"
                    ));
                }
                preferred.push(p as usize);
            }
            if preferred.is_empty() {
                preferred.push(c.max_batch_size.max(1) as usize);
            }
            // Triton: `max_candidate_sequences` slots, or one per batch row when it is not set.
            let candidates = match o.max_candidate_sequences {
                n if n > 0 => n as usize,
                _ => c.max_batch_size.max(1) as usize,
            };
            Strategy::Oldest {
                candidates: candidates.min(limits.max_sequences),
                preferred,
                max_delay: micros(o.max_queue_delay_microseconds),
            }
        }
    };
    let idle = match s.max_sequence_idle_microseconds {
        0 => Duration::from_secs(1),
        us => micros(us),
    };
    let policy = SequencePolicy {
        strategy,
        max_batch: c.max_batch_size.max(1) as usize,
        idle,
        max_sequences: limits.max_sequences,
        max_per_owner: limits.max_per_client,
        hold_until: limits.hold_until,
        hold_backlog: limits.hold_backlog,
    };
    if c.response_cache.as_ref().is_some_and(|r| r.enable) {
        return invalid(format!(
            "Response Cache does not currently support model {name} with sequence batching scheduler. Please disable the response cache."
        ));
    }
    let controls = controls(c, s)?;
    let states = states(c, s, dir)?;
    let batching = c.max_batch_size > 0;
    Ok(Some((policy, SequenceSpec { batching, controls, states })))
}

fn controls(
    c: &ModelConfig,
    s: &rampart_model_config::pb::ModelSequenceBatching,
) -> Result<Vec<Control>> {
    let name = &c.name;
    let invalid = |m: String| Err(Error::invalid_arg(m));
    let mut out: Vec<Control> = Vec::new();
    for ci in &s.control_input {
        if ci.name.is_empty() {
            return invalid(format!(
                "sequence batching control tensor must have a name for {name}"
            ));
        }
        if ci.control.len() > 1 || out.iter().any(|o| o.input == ci.name) {
            return invalid(format!(
                "sequence batching control tensor '{}' is specified for multiple control kinds for {name}",
                ci.name
            ));
        }
        let Some(ctl) = ci.control.first() else { continue };
        let kind = Kind::try_from(ctl.kind).unwrap_or(Kind::ControlSequenceStart);
        let kind_name = kind.as_str_name();
        if out.iter().any(|o| same_kind(&o.kind, kind)) {
            return invalid(format!(
                "sequence batching specifies multiple {kind_name} tensors for {name}"
            ));
        }
        let lists = [
            ("int32_false_true", ctl.int32_false_true.len()),
            ("fp32_false_true", ctl.fp32_false_true.len()),
            ("bool_false_true", ctl.bool_false_true.len()),
        ];
        let given: Vec<(&str, usize)> = lists.into_iter().filter(|l| l.1 > 0).collect();
        let (kind, data_type) = if kind == Kind::ControlSequenceCorrid {
            if !given.is_empty() {
                return invalid(format!(
                    "sequence batching must not specify either 'int32_false_true', 'fp32_false_true' or 'bool_false_true' for CONTROL_SEQUENCE_CORRID for {name}"
                ));
            }
            let dt = match DataType::from_config_enum(ctl.data_type) {
                Some(
                    d @ (DataType::Uint64
                    | DataType::Int64
                    | DataType::Uint32
                    | DataType::Int32
                    | DataType::Bytes),
                ) => d,
                _ => {
                    return invalid(format!(
                        "unexpected data type for control CONTROL_SEQUENCE_CORRID for {name}. Allowed data types are TYPE_UINT64, TYPE_INT64, TYPE_UINT32, TYPE_INT32 and TYPE_STRING"
                    ));
                }
            };
            (ControlKind::CorrId, dt)
        } else {
            let (list, n) = match given.as_slice() {
                [] => {
                    return invalid(format!(
                        "sequence batching must specify either 'int32_false_true', 'fp32_false_true' or 'bool_false_true' for {kind_name} for {name}"
                    ));
                }
                [one] => *one,
                _ => {
                    return invalid(format!(
                        "sequence batching specifies more than one from 'int32_false_true', 'fp32_false_true' and 'bool_false_true' for {kind_name} for {name}"
                    ));
                }
            };
            if n != 2 {
                return invalid(format!(
                    "sequence batching control '{list}' must have exactly 2 entries for {kind_name} for {name}"
                ));
            }
            let (dt, values) = match list {
                "int32_false_true" => {
                    (DataType::Int32, pair(&ctl.int32_false_true, |v| v.to_le_bytes().to_vec()))
                }
                "fp32_false_true" => {
                    (DataType::Fp32, pair(&ctl.fp32_false_true, |v| v.to_le_bytes().to_vec()))
                }
                _ => (DataType::Bool, pair(&ctl.bool_false_true, |v| vec![u8::from(*v)])),
            };
            let values = values.expect("two entries checked");
            (ControlKind::Flag { which: kind, values }, dt)
        };
        out.push(Control { input: ci.name.clone(), kind, data_type });
    }
    Ok(out)
}

fn same_kind(a: &ControlKind, b: Kind) -> bool {
    match a {
        ControlKind::Flag { which, .. } => *which == b,
        ControlKind::CorrId => b == Kind::ControlSequenceCorrid,
    }
}

fn pair<V>(v: &[V], bytes: impl Fn(&V) -> Vec<u8>) -> Option<[Bytes; 2]> {
    match v {
        [f, t] => Some([Bytes::from(bytes(f)), Bytes::from(bytes(t))]),
        _ => None,
    }
}

fn states(
    c: &ModelConfig,
    s: &rampart_model_config::pb::ModelSequenceBatching,
    dir: &Path,
) -> Result<Vec<StateSpec>> {
    let name = &c.name;
    let mut out: Vec<StateSpec> = Vec::new();
    for st in &s.state {
        let Some(dt) = DataType::from_config_enum(st.data_type) else {
            return Err(Error::invalid_arg(format!(
                "state '{}' of model '{name}' must set a valid data_type",
                st.input_name
            )));
        };
        if st.input_name.is_empty() || st.output_name.is_empty() {
            return Err(Error::invalid_arg(format!(
                "state of model '{name}' must set input_name and output_name"
            )));
        }
        if out.iter().any(|o| o.input == st.input_name || o.output == st.output_name) {
            return Err(Error::invalid_arg(format!(
                "state '{}' of model '{name}' is declared twice",
                st.input_name
            )));
        }
        if st.dims.is_empty() || st.dims.iter().any(|&d| d == 0 || d < -1) {
            return Err(Error::invalid_arg(format!(
                "state '{}' of model '{name}' must set dims (positive sizes or -1)",
                st.input_name
            )));
        }
        let initial = initial_state(name, st, dt, dir)?;
        out.push(StateSpec {
            input: st.input_name.clone(),
            output: st.output_name.clone(),
            data_type: dt,
            initial,
        });
    }
    Ok(out)
}

/// The value of a state at START: its `initial_state` (zeros, or a file under `<model>/initial_state/`),
/// or zeros of its `dims` (a variable dimension is 1).
fn initial_state(
    model: &str,
    st: &rampart_model_config::pb::model_sequence_batching::State,
    dt: DataType,
    dir: &Path,
) -> Result<Tensor> {
    use rampart_model_config::pb::model_sequence_batching::initial_state::StateData;
    let (dims, data) = match st.initial_state.as_slice() {
        [] => (st.dims.iter().map(|&d| d.max(1)).collect::<Vec<i64>>(), None),
        [init] => {
            if init.dims.iter().any(|&d| d <= 0) {
                return Err(Error::invalid_arg(format!(
                    "initial state '{}' of model '{model}' must set fixed dims",
                    init.name
                )));
            }
            match &init.state_data {
                Some(StateData::DataFile(f)) => (init.dims.clone(), Some(f.clone())),
                Some(StateData::ZeroData(_)) => (init.dims.clone(), None),
                None => {
                    return Err(Error::invalid_arg(format!(
                        "initial state '{}' of model '{model}' must set zero_data or data_file",
                        init.name
                    )));
                }
            }
        }
        _ => {
            return Err(Error::invalid_arg(format!(
                "state '{}' of model '{model}' may have at most one initial_state",
                st.input_name
            )));
        }
    };
    let count: u64 = dims.iter().map(|&d| d as u64).product();
    let Some(size) = dt.element_size() else {
        return Err(Error::unsupported(format!(
            "state '{}' of model '{model}': TYPE_STRING states are not supported",
            st.input_name
        )));
    };
    let bytes =
        count.checked_mul(size as u64).filter(|&b| b <= MAX_STATE_BYTES).ok_or_else(|| {
            Error::invalid_arg(format!(
                "state '{}' of model '{model}' is larger than {MAX_STATE_BYTES} bytes",
                st.input_name
            ))
        })?;
    let data = match data {
        None => Bytes::from(vec![0u8; bytes as usize]),
        Some(file) => read_initial_file(model, dir, &file, bytes)?,
    };
    Ok(Tensor::new(st.input_name.clone(), dt, dims, data))
}

/// A state is at most this large (it is kept per open sequence).
const MAX_STATE_BYTES: u64 = 64 << 20;

/// `data_file` is a plain file name inside `<model>/initial_state/`; nothing outside it is read.
fn read_initial_file(model: &str, dir: &Path, file: &str, bytes: u64) -> Result<Bytes> {
    let plain = !file.is_empty() && !file.contains('/') && file != "." && file != "..";
    if !plain {
        return Err(Error::invalid_arg(format!(
            "initial state data_file '{file}' of model '{model}' must be a file name inside '{}'",
            dir.join("initial_state").display()
        )));
    }
    let path = dir.join("initial_state").join(file);
    let meta = std::fs::symlink_metadata(&path).map_err(|e| {
        Error::invalid_arg(format!(
            "initial state file '{}' of model '{model}': {e}",
            path.display()
        ))
    })?;
    if !meta.is_file() || meta.len() != bytes {
        return Err(Error::invalid_arg(format!(
            "initial state file '{}' of model '{model}' must be a regular file of {bytes} bytes",
            path.display()
        )));
    }
    std::fs::read(&path).map(Bytes::from).map_err(|e| {
        Error::invalid_arg(format!(
            "initial state file '{}' of model '{model}': {e}",
            path.display()
        ))
    })
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
    Ok((pool, Held { states, audit }))
}

/// The sequence a request of stateful model `model` joins, with Triton's errors for a missing correlation
/// ID or a batch of more than one; `principal` becomes the sequence's owner.
pub(crate) fn admit(
    model: &str,
    config: &ModelConfig,
    req: &crate::infer::InferRequest,
    prepared: &crate::infer::Prepared,
) -> Result<rampart_scheduler::Membership> {
    let Some((id, start, end)) = membership(&req.parameters) else {
        // Without an ID the request counts as ID 0, which a string CORRID refuses by type first.
        check_corrid_type(model, config, req, &SequenceId::Number(0))?;
        return Err(Error::invalid_arg(format!(
            "inference request to model '{model}' must specify a non-zero or non-empty correlation ID"
        )));
    };
    check_corrid_type(model, config, req, &id)?;
    if config.max_batch_size > 0 && prepared.batch_size != 1 {
        return Err(Error::invalid_arg(format!(
            "inference request to model '{model}' must specify batch-size 1 due to requirements of sequence batcher"
        )));
    }
    Ok(rampart_scheduler::Membership { id, start, end, owner: req.principal.clone() })
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
    config: &ModelConfig,
    req: &crate::infer::InferRequest,
    id: &SequenceId,
) -> Result<()> {
    let Some(SchedulingChoice::SequenceBatching(s)) = &config.scheduling_choice else {
        return Ok(());
    };
    let corrid = s.control_input.iter().find(|ci| {
        ci.control.first().is_some_and(|c| c.kind == Kind::ControlSequenceCorrid as i32)
    });
    let Some(ci) = corrid else { return Ok(()) };
    let want = DataType::from_config_enum(ci.control[0].data_type).unwrap_or(DataType::Uint64);
    let got = match id {
        SequenceId::Text(_) => DataType::Bytes,
        SequenceId::Number(_) => DataType::Uint64,
    };
    if (got == DataType::Bytes) == (want == DataType::Bytes) {
        return Ok(());
    }
    let rid = if req.id.is_empty() { "<id_unknown>" } else { req.id.as_str() };
    Err(Error::invalid_arg(format!(
        "[request id: {rid}] sequence batching control '{}' data-type is '{}', but model '{model}' expects '{}'",
        ci.name,
        got.as_str(),
        want.as_str()
    )))
}
