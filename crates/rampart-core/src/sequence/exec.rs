//! Running the rows of a sequence batch on one instance: the requests' inputs (zeros for a null row), the
//! control tensors and state inputs of every row, one execution, then each request's outputs and each
//! sequence's next state. Rows whose inputs or states cannot share an execution (other names, types or
//! shapes) run in executions of their own, the other rows null there, as Triton runs such a row later.

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

/// What must agree for rows to share an execution: each input's and state's name, type and row shape.
type Shape = Vec<(String, DataType, Vec<i64>)>;

impl SequenceExecutor<Job> for SequenceInstance {
    fn execute_rows(&mut self, mut rows: Vec<Row<Job>>) {
        for r in rows.iter_mut() {
            if let Some(job) = r.task.as_mut() {
                job.pending.take();
            }
        }
        if self.spec.requests {
            return self.submit_rows(rows);
        }
        // The state each real row starts from (taken out; put back after the execution).
        let mut states: Vec<Option<Vec<Tensor>>> = rows
            .iter()
            .map(|r| match (&r.task, r.start) {
                (Some(_), false) => self.states.take(r.key),
                _ => None,
            })
            .collect();
        let shapes: Vec<Option<Shape>> = rows
            .iter()
            .zip(&states)
            .map(|(r, s)| r.task.as_ref().map(|j| self.shape(j, s)))
            .collect();
        let mut groups: Vec<&Shape> = Vec::new();
        for s in shapes.iter().flatten() {
            if !groups.contains(&s) {
                groups.push(s);
            }
        }
        let groups: Vec<Shape> = groups.into_iter().cloned().collect();
        let mut jobs: Vec<Option<Job>> = rows.iter_mut().map(|r| r.task.take()).collect();
        for group in groups {
            let members: Vec<bool> = shapes.iter().map(|s| s.as_ref() == Some(&group)).collect();
            self.run_group(&rows, &mut jobs, &mut states, &members);
        }
    }
}

impl SequenceInstance {
    /// The requests of a sequence batch, each with its control tensors, handed to an engine that sees
    /// requests (their correlation IDs and flags are in their `RequestInfo`).
    fn submit_rows(&mut self, rows: Vec<Row<Job>>) {
        let jobs: Vec<Job> = rows
            .into_iter()
            .filter_map(|mut r| {
                let mut job = r.task.take()?;
                for c in &self.spec.controls {
                    let mut t = control_value(c, &r, true);
                    if self.spec.batching {
                        t.shape.insert(0, 1);
                    }
                    job.inputs.push(t);
                }
                Some(job)
            })
            .collect();
        crate::executor::submit_jobs(self.engine.as_mut(), &self.stats, jobs);
    }

    fn shape(&self, job: &Job, state: &Option<Vec<Tensor>>) -> Shape {
        let batched = |t: &Tensor| {
            let dims =
                if self.spec.batching { t.shape.get(1..).unwrap_or_default() } else { &t.shape };
            (t.name.clone(), t.datatype, dims.to_vec())
        };
        let mut shape: Shape = job.inputs.iter().map(batched).collect();
        shape.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for s in &self.spec.states {
            let value = state.as_ref().and_then(|v| v.iter().find(|t| t.name == s.input));
            let t = value.unwrap_or(&s.initial);
            shape.push((s.input.clone(), t.datatype, t.shape.clone()));
        }
        shape
    }

    /// One execution of the rows in `members` (the others are null rows in it); answers their jobs.
    fn run_group(
        &mut self,
        rows: &[Row<Job>],
        jobs: &mut [Option<Job>],
        states: &mut [Option<Vec<Tensor>>],
        members: &[bool],
    ) {
        let start = Instant::now();
        let view: Vec<Option<&Job>> =
            jobs.iter().zip(members).map(|(j, &m)| j.as_ref().filter(|_| m)).collect();
        let queues: Vec<Duration> =
            view.iter().flatten().map(|j| start.duration_since(j.enqueued)).collect();
        let result = self.execute(rows, &view, states);
        let computed = start.elapsed();
        match result {
            Ok(mut per_row) => {
                let times = ExecutionTimes {
                    batch_size: queues.len() as u64,
                    queue: Duration::ZERO,
                    compute_input: Duration::ZERO,
                    compute_infer: computed,
                    compute_output: Duration::ZERO,
                };
                self.stats.record_padded_batch(&times, &queues, rows.len() as u64);
                for (i, row) in rows.iter().enumerate() {
                    let Some(job) = jobs[i].take_if(|_| members[i]) else { continue };
                    let outputs = std::mem::take(&mut per_row[i]);
                    states[i] = None;
                    if !row.end {
                        self.states.put(row.key, self.next_state(&outputs));
                    }
                    let answer: Vec<Tensor> =
                        outputs.into_iter().filter(|t| job.outputs.contains(&t.name)).collect();
                    answer_job(job, Ok(answer));
                }
            }
            Err(e) => {
                for (i, row) in rows.iter().enumerate() {
                    let Some(job) = jobs[i].take_if(|_| members[i]) else { continue };
                    // A failed execution leaves the sequence's state as it was.
                    if let Some(state) = states[i].take() {
                        self.states.put(row.key, state);
                    }
                    answer_job(job, Err(e.clone()));
                }
            }
        }
    }

    /// The state values a sequence keeps: each state output of its row, renamed to its input.
    fn next_state(&self, outputs: &[Tensor]) -> Vec<Tensor> {
        self.spec
            .states
            .iter()
            .filter_map(|s| {
                let mut t = outputs.iter().find(|t| t.name == s.output)?.clone();
                t.name = s.input.clone();
                if self.spec.batching {
                    t.shape.remove(0);
                }
                Some(t)
            })
            .collect()
    }

    /// One execution: `view[i]` is row `i`'s request in it (`None`: a null row).
    fn execute(
        &mut self,
        rows: &[Row<Job>],
        view: &[Option<&Job>],
        states: &[Option<Vec<Tensor>>],
    ) -> Result<Vec<Vec<Tensor>>> {
        let first = view
            .iter()
            .flatten()
            .next()
            .ok_or_else(|| Error::internal("a sequence batch without a request"))?;
        let batching = self.spec.batching;
        let mut inputs: Vec<Tensor> = Vec::new();
        // The requests' own inputs, by name; a null row repeats zeros shaped like the first request's.
        for head in &first.inputs {
            let parts: Vec<Tensor> = view
                .iter()
                .map(|j| {
                    j.and_then(|j| j.inputs.iter().find(|t| t.name == head.name).cloned())
                        .unwrap_or_else(|| zeros_like(head))
                })
                .collect();
            inputs.push(stack(&head.name, head.datatype, &parts, batching, true)?);
        }
        for c in &self.spec.controls {
            let parts: Vec<Tensor> =
                rows.iter().zip(view).map(|(r, j)| control_value(c, r, j.is_some())).collect();
            inputs.push(stack(&c.input, c.data_type, &parts, batching, false)?);
        }
        for s in &self.spec.states {
            let parts: Vec<Tensor> = view
                .iter()
                .zip(states)
                .map(|(j, kept)| {
                    j.and(kept.as_ref())
                        .and_then(|v| v.iter().find(|t| t.name == s.input).cloned())
                        .unwrap_or_else(|| s.initial.clone())
                })
                .collect();
            inputs.push(stack(&s.input, s.data_type, &parts, batching, false)?);
        }
        let mut outputs: Vec<String> = first.outputs.clone();
        for j in view.iter().flatten() {
            for o in &j.outputs {
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
        let per_row: Vec<Vec<Tensor>> = if batching {
            crate::batch::scatter(produced, &vec![1; rows.len()])?
        } else {
            vec![produced]
        };
        // A null row's outputs are dropped; a request's are sorted by the caller (states kept, the rest
        // answered as asked).
        Ok(per_row
            .into_iter()
            .zip(view)
            .map(|(outs, j)| if j.is_some() { outs } else { vec![] })
            .collect())
    }
}

fn answer_job(job: Job, result: Result<Vec<Tensor>>) {
    match job.reply {
        Reply::Unary(tx) => {
            let _ = tx.send(result.map(Into::into));
        }
        // Decoupled models are refused at load with sequence batching.
        Reply::Stream(_) => {}
    }
}

/// A row's value of control `c`, shaped `[1]` (`real`: the row holds a request in this execution).
fn control_value(c: &super::Control, r: &Row<Job>, real: bool) -> Tensor {
    let data = match &c.kind {
        ControlKind::Flag { which, values } => {
            let on = real
                && match which {
                    Kind::ControlSequenceStart => r.start,
                    Kind::ControlSequenceEnd => r.end,
                    Kind::ControlSequenceReady => true,
                    Kind::ControlSequenceCorrid => false,
                };
            values[usize::from(on)].clone()
        }
        ControlKind::CorrId => corrid_bytes(c.data_type, r.id.as_ref().filter(|_| real)),
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
        r != row.as_slice() || p.datatype != dt
    }) {
        return Err(Error::internal(format!(
            "the rows of one sequence batch give '{name}' different shapes or types"
        )));
    }
    let mut data = BytesMut::with_capacity(parts.iter().map(|p| p.data.len()).sum());
    for p in parts {
        data.extend_from_slice(&p.data);
    }
    let shape = std::iter::once(parts.len() as i64).chain(row).collect();
    Ok(Tensor::new(name.to_string(), dt, shape, data.freeze()))
}
