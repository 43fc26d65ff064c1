//! Running the rows of a sequence batch on one instance: the requests' inputs (zeros for a null row), the
//! control tensors and state inputs of every row, one execution, then each request's outputs and each
//! sequence's next state.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rampart_model_config::pb::model_sequence_batching::control::Kind;
use rampart_scheduler::{Row, SequenceExecutor, SequenceId};
use rampart_types::{DataType, EngineInstance, Error, Result, Tensor};

use super::{ControlKind, SequenceSpec, SequenceStates};
use crate::executor::{Job, Reply};
use crate::stats::{ExecutionTimes, ModelStats};

/// One instance of a stateful model on its scheduler thread.
pub(crate) struct SequenceInstance {
    pub engine: Box<dyn EngineInstance>,
    pub stats: Arc<ModelStats>,
    pub spec: Arc<SequenceSpec>,
    pub states: Arc<SequenceStates>,
}

impl SequenceExecutor<Job> for SequenceInstance {
    fn execute_rows(&mut self, mut rows: Vec<Row<Job>>) {
        let start = Instant::now();
        for r in rows.iter_mut() {
            if let Some(job) = r.task.as_mut() {
                job.pending.take();
            }
        }
        let queues: Vec<Duration> = rows
            .iter()
            .filter_map(|r| r.task.as_ref())
            .map(|j| start.duration_since(j.enqueued))
            .collect();
        // The state each real row starts from (taken out; put back after the execution).
        let states: Vec<Option<Vec<Tensor>>> = rows
            .iter()
            .map(|r| match (&r.task, r.start) {
                (Some(_), false) => self.states.take(r.key),
                _ => None,
            })
            .collect();
        let result = self.execute(&rows, &states);
        let computed = start.elapsed();
        let real = rows.iter().filter(|r| r.task.is_some()).count() as u64;
        match result {
            Ok(mut per_row) => {
                let times = ExecutionTimes {
                    batch_size: real,
                    queue: Duration::ZERO,
                    compute_input: Duration::ZERO,
                    compute_infer: computed,
                    compute_output: Duration::ZERO,
                };
                self.stats.record_padded_batch(&times, &queues, rows.len() as u64);
                for (i, row) in rows.into_iter().enumerate() {
                    let Some(job) = row.task else { continue };
                    let outputs = std::mem::take(&mut per_row[i]);
                    let (state, answer): (Vec<Tensor>, Vec<Tensor>) =
                        outputs.into_iter().partition(|t| {
                            self.spec.states.iter().any(|s| s.output == t.name)
                                && !job.outputs.contains(&t.name)
                        });
                    if !row.end {
                        let next = self.next_state(state, answer.as_slice());
                        self.states.put(row.key, next);
                    }
                    answer_job(job, Ok(answer));
                }
            }
            Err(e) => {
                for (row, state) in rows.into_iter().zip(states) {
                    // A failed execution leaves each sequence's state as it was.
                    if let Some(state) = state {
                        self.states.put(row.key, state);
                    }
                    if let Some(job) = row.task {
                        answer_job(job, Err(e.clone()));
                    }
                }
            }
        }
    }
}

fn answer_job(job: Job, result: Result<Vec<Tensor>>) {
    match job.reply {
        Reply::Unary(tx) => {
            let _ = tx.send(result);
        }
        Reply::Stream(_) => {}
    }
}

impl SequenceInstance {
    /// The state values a sequence keeps: each state output, renamed to its input.
    fn next_state(&self, mut state: Vec<Tensor>, answered: &[Tensor]) -> Vec<Tensor> {
        // A state output the client asked for too was answered; keep a copy of it.
        for s in &self.spec.states {
            if !state.iter().any(|t| t.name == s.output)
                && let Some(t) = answered.iter().find(|t| t.name == s.output)
            {
                state.push(t.clone());
            }
        }
        state
            .into_iter()
            .filter_map(|mut t| {
                let s = self.spec.states.iter().find(|s| s.output == t.name)?;
                t.name = s.input.clone();
                if self.spec.batching {
                    t.shape.remove(0);
                }
                Some(t)
            })
            .collect()
    }

    fn execute(
        &mut self,
        rows: &[Row<Job>],
        states: &[Option<Vec<Tensor>>],
    ) -> Result<Vec<Vec<Tensor>>> {
        let first = rows
            .iter()
            .find_map(|r| r.task.as_ref())
            .ok_or_else(|| Error::internal("a sequence batch without a request"))?;
        let n = rows.len();
        let batching = self.spec.batching;
        let mut inputs: Vec<Tensor> = Vec::new();
        // The requests' own inputs; a null row repeats zeros shaped like the first request's.
        for (k, head) in first.inputs.iter().enumerate() {
            let parts: Vec<Tensor> = rows
                .iter()
                .map(|r| match &r.task {
                    Some(j) => j.inputs.get(k).cloned().unwrap_or_else(|| zeros_like(head)),
                    None => zeros_like(head),
                })
                .collect();
            inputs.push(stack(&head.name, head.datatype, &parts, batching, true)?);
        }
        for c in &self.spec.controls {
            let parts: Vec<Tensor> = rows.iter().map(|r| control_value(c, r)).collect();
            inputs.push(stack(&c.input, c.data_type, &parts, batching, false)?);
        }
        for s in &self.spec.states {
            let parts: Vec<Tensor> = rows
                .iter()
                .zip(states)
                .map(|(_, kept)| {
                    kept.as_ref()
                        .and_then(|v| v.iter().find(|t| t.name == s.input).cloned())
                        .unwrap_or_else(|| s.initial.clone())
                })
                .collect();
            inputs.push(stack(&s.input, s.data_type, &parts, batching, false)?);
        }
        let mut outputs: Vec<String> = first.outputs.clone();
        for r in rows.iter().filter_map(|r| r.task.as_ref()) {
            for o in &r.outputs {
                if !outputs.contains(o) {
                    outputs.push(o.clone());
                }
            }
        }
        for s in &self.spec.states {
            if !outputs.contains(&s.output) {
                outputs.push(s.output.clone());
            }
        }
        let produced = crate::executor::guarded(|| self.engine.execute(&inputs, &outputs))?;
        let per_row: Vec<Vec<Tensor>> =
            if batching { crate::batch::scatter(produced, &vec![1; n])? } else { vec![produced] };
        // Each request gets the outputs it asked for (and the states, which the caller separates).
        Ok(per_row
            .into_iter()
            .zip(rows)
            .map(|(outs, r)| match &r.task {
                Some(j) => outs
                    .into_iter()
                    .filter(|t| {
                        j.outputs.contains(&t.name)
                            || self.spec.states.iter().any(|s| s.output == t.name)
                    })
                    .collect(),
                None => vec![],
            })
            .collect())
    }
}

/// A row's value of control `c`, shaped `[1]`.
fn control_value(c: &super::Control, r: &Row<Job>) -> Tensor {
    let data = match &c.kind {
        ControlKind::Flag { which, values } => {
            let on = match which {
                Kind::ControlSequenceStart => r.start,
                Kind::ControlSequenceEnd => r.end,
                Kind::ControlSequenceReady => r.task.is_some(),
                Kind::ControlSequenceCorrid => false,
            };
            values[usize::from(on)].clone()
        }
        ControlKind::CorrId => corrid_bytes(c.data_type, r.id.as_ref()),
    };
    Tensor::new(c.input.clone(), c.data_type, vec![1], data)
}

/// A correlation ID in the CORRID control's type (32-bit types truncate, as in Triton; a null row is 0).
fn corrid_bytes(dt: DataType, id: Option<&SequenceId>) -> Bytes {
    let number = match id {
        Some(SequenceId::Number(n)) => *n,
        _ => 0,
    };
    match dt {
        DataType::Bytes => {
            let text = match id {
                Some(SequenceId::Text(s)) => s.clone(),
                Some(SequenceId::Number(n)) => n.to_string(),
                None => String::new(),
            };
            let mut b = BytesMut::with_capacity(4 + text.len());
            b.extend_from_slice(&(text.len() as u32).to_le_bytes());
            b.extend_from_slice(text.as_bytes());
            b.freeze()
        }
        DataType::Uint32 | DataType::Int32 => {
            Bytes::copy_from_slice(&(number as u32).to_le_bytes())
        }
        _ => Bytes::copy_from_slice(&number.to_le_bytes()),
    }
}

/// Zeros shaped like `t` (empty strings for BYTES).
fn zeros_like(t: &Tensor) -> Tensor {
    let count = t.element_count() as usize;
    let data = match t.datatype.element_size() {
        Some(size) => Bytes::from(vec![0u8; count * size]),
        None => Bytes::from(vec![0u8; count * 4]),
    };
    Tensor::new(t.name.clone(), t.datatype, t.shape.clone(), data)
}

/// One tensor from one part per row: along the batch dimension when the model batches (`has_batch`: the
/// parts already have one, of size 1), else the single row as it is.
fn stack(
    name: &str,
    dt: DataType,
    parts: &[Tensor],
    batching: bool,
    has_batch: bool,
) -> Result<Tensor> {
    if !batching {
        let mut t = parts[0].clone();
        t.name = name.to_string();
        return Ok(t);
    }
    let row: Vec<i64> =
        if has_batch { parts[0].shape[1..].to_vec() } else { parts[0].shape.clone() };
    if parts.iter().any(|p| {
        let r: &[i64] = if has_batch { &p.shape[1..] } else { &p.shape };
        r != row.as_slice()
    }) {
        return Err(Error::invalid_arg(format!(
            "the requests of one sequence batch give '{name}' different shapes"
        )));
    }
    let mut data = BytesMut::with_capacity(parts.iter().map(|p| p.data.len()).sum());
    for p in parts {
        data.extend_from_slice(&p.data);
    }
    let shape = std::iter::once(parts.len() as i64).chain(row).collect();
    Ok(Tensor::new(name.to_string(), dt, shape, data.freeze()))
}
