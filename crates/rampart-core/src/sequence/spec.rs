//! A config's `sequence_batching` read and checked as Triton checks it: the batcher's policy, the control
//! tensors and their values, the implicit states and their initial values (read once, from the model's
//! `initial_state/` directory only), and the model file's agreement with them.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use rampart_model_config::ModelConfig;
use rampart_model_config::pb::model_config::SchedulingChoice;
use rampart_model_config::pb::model_sequence_batching::{StrategyChoice, control::Kind};
use rampart_scheduler::{SequencePolicy, Strategy};
use rampart_types::{DataType, Error, Result, Tensor};

use super::{Control, ControlKind, SequenceLimits, SequenceSpec, StateSpec};

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
    Ok(Some((policy, SequenceSpec { batching, controls, states, requests: false })))
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
