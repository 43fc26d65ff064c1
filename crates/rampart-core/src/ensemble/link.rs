//! Linking an ensemble to its composing models: the checks that need their completed configs (batch sizes,
//! mappings, data types and shapes, decoupled flows), with Triton's messages, and the resulting [`Plan`].

use std::collections::HashMap;
use std::sync::Arc;

use rampart_model_config::ModelConfig;
use rampart_model_config::pb;
use rampart_types::{Error, Result};

use super::{Plan, Step};
use crate::config::ensemble as graph;

/// What the link needs of a composing model: its completed config.
pub(crate) type Composing = Arc<ModelConfig>;

/// The type and full shape (batch dimension included) an ensemble tensor was first seen with, and by whom.
struct Seen {
    data_type: i32,
    dims: Vec<i64>,
    full: Vec<i64>,
    model: String,
}

fn type_name(dt: i32) -> &'static str {
    pb::DataType::try_from(dt).map(|d| d.as_str_name()).unwrap_or("TYPE_INVALID")
}

fn shape(dims: &[i64]) -> String {
    let parts: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
    format!("[{}]", parts.join(","))
}

/// Same rank and every dimension equal, or either of them variable.
fn fits(a: &[i64], b: &[i64]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(&x, &y)| x == y || x == -1 || y == -1)
}

/// The tensors of one ensemble and what was inferred about them.
struct Tensors<'a> {
    ensemble: &'a str,
    seen: HashMap<String, Seen>,
}

impl Tensors<'_> {
    /// Records that `model` (whose batch dimension is `batching`) sees `tensor` as `data_type` × `dims`.
    fn touch(
        &mut self,
        tensor: &str,
        model: &str,
        batching: bool,
        data_type: i32,
        dims: &[i64],
    ) -> Result<()> {
        let mut full = dims.to_vec();
        if batching {
            full.insert(0, -1);
        }
        let Some(first) = self.seen.get(tensor) else {
            let seen = Seen { data_type, dims: dims.to_vec(), full, model: model.to_string() };
            self.seen.insert(tensor.to_string(), seen);
            return Ok(());
        };
        let e = self.ensemble;
        if first.data_type != data_type {
            return Err(Error::invalid_arg(format!(
                "in ensemble {e}, ensemble tensor {tensor}: inconsistent data type: {} is inferred from model {} while {} is inferred from model {model}",
                type_name(first.data_type),
                first.model,
                type_name(data_type)
            )));
        }
        if !fits(&first.dims, dims) && !fits(&first.full, &full) {
            return Err(Error::invalid_arg(format!(
                "in ensemble {e}, ensemble tensor {tensor}: inconsistent shape: {} is inferred from model {} while {} is inferred from model {model}",
                shape(&first.full),
                first.model,
                shape(&full)
            )));
        }
        Ok(())
    }
}

/// Checks ensemble `c` (statically valid) against its composing models' configs, one per step, and builds
/// its plan. `composing[i]` is the model step `i` runs.
pub(crate) fn link(c: &ModelConfig, composing: &[Composing]) -> Result<Plan> {
    let e = graph::scheduling(c).expect("an ensemble config");
    let name = &c.name;
    let batching = c.max_batch_size > 0;
    let mut tensors = Tensors { ensemble: name, seen: HashMap::new() };
    for i in &c.input {
        let dims = i.reshape.as_ref().map_or(&i.dims, |r| &r.shape);
        tensors.touch(&i.name, name, batching, i.data_type, dims)?;
    }
    for o in &c.output {
        let dims = o.reshape.as_ref().map_or(&o.dims, |r| &r.shape);
        tensors.touch(&o.name, name, batching, o.data_type, dims)?;
    }
    for (s, m) in e.step.iter().zip(composing) {
        let model = &s.model_name;
        if m.max_batch_size != 0 && m.max_batch_size < c.max_batch_size {
            return Err(Error::invalid_arg(format!(
                "ensemble {name} allows maximum batch size {}, but it contains model {model} which only allows maximum batch size to be {}",
                c.max_batch_size, m.max_batch_size
            )));
        }
        let mut keys: Vec<(&String, &String)> = s.input_map.iter().collect();
        keys.sort_unstable();
        for (k, t) in &keys {
            let Some(input) = m.input.iter().find(|i| &&i.name == k) else {
                return Err(Error::invalid_arg(format!(
                    "in ensemble {name}, ensemble tensor {t} is mapping to non-existing input {k} in model {model}"
                )));
            };
            tensors.touch(t, model, m.max_batch_size > 0, input.data_type, &input.dims)?;
        }
        if let Some(i) = m.input.iter().find(|i| !i.optional && !s.input_map.contains_key(&i.name))
        {
            return Err(Error::invalid_arg(format!(
                "in ensemble {name}, input {} in model {model} is not mapped to any ensemble tensors",
                i.name
            )));
        }
        let mut keys: Vec<(&String, &String)> = s.output_map.iter().collect();
        keys.sort_unstable();
        for (k, t) in &keys {
            let Some(output) = m.output.iter().find(|o| &&o.name == k) else {
                return Err(Error::invalid_arg(format!(
                    "in ensemble {name}, ensemble tensor {t} is mapped from non-existing output {k} in model {model}"
                )));
            };
            tensors.touch(t, model, m.max_batch_size > 0, output.data_type, &output.dims)?;
        }
    }
    plan(c, e, composing)
}

/// The plan: tensors numbered, steps with their tensors; checked that no step (nor the ensemble's outputs)
/// joins the flows of two decoupled steps (a tensor's flow: which decoupled step's responses it follows,
/// 0 = the request itself).
fn plan(c: &ModelConfig, e: &pb::ModelEnsembling, composing: &[Composing]) -> Result<Plan> {
    let name = &c.name;
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut names: Vec<String> = Vec::new();
    let mut id = |t: &str| -> usize {
        if let Some(&i) = index.get(t) {
            return i;
        }
        names.push(t.to_string());
        index.insert(t.to_string(), names.len() - 1);
        names.len() - 1
    };
    let inputs: Vec<(String, usize)> =
        c.input.iter().map(|i| (i.name.clone(), id(&i.name))).collect();
    let outputs: Vec<(String, usize)> =
        c.output.iter().map(|o| (o.name.clone(), id(&o.name))).collect();
    let mut steps: Vec<Step> = Vec::with_capacity(e.step.len());
    for (s, m) in e.step.iter().zip(composing) {
        let map = |m: &std::collections::HashMap<String, String>,
                   id: &mut dyn FnMut(&str) -> usize| {
            let mut v: Vec<(String, usize)> = m.iter().map(|(k, t)| (k.clone(), id(t))).collect();
            v.sort_unstable();
            v
        };
        steps.push(Step {
            model: s.model_name.clone(),
            version: (s.model_version >= 0).then_some(s.model_version),
            inputs: map(&s.input_map, &mut id),
            outputs: map(&s.output_map, &mut id),
            decoupled: crate::config::is_decoupled(m),
        });
    }
    // Each tensor's flow label, in data-flow order (the graph checks guarantee every step becomes ready): a
    // step, and the ensemble's outputs, may only combine tensors of one flow.
    let one_flow = |labels: Vec<usize>, model: &str| -> Result<usize> {
        let mut labels = labels;
        labels.sort_unstable();
        labels.dedup();
        match labels.as_slice() {
            [] => Ok(0),
            [one] => Ok(*one),
            _ => Err(Error::invalid_arg(format!(
                "in ensemble {name}, step of model '{model}' receives inputs originated from different decoupled models"
            ))),
        }
    };
    let mut label: Vec<Option<usize>> = vec![None; names.len()];
    for (_, t) in &inputs {
        label[*t] = Some(0);
    }
    let mut next_label = 1;
    let mut done = vec![false; steps.len()];
    let mut left = steps.len();
    while left > 0 {
        let before = left;
        for (i, s) in steps.iter().enumerate() {
            if done[i] || s.inputs.iter().any(|(_, t)| label[*t].is_none()) {
                continue;
            }
            let flow =
                one_flow(s.inputs.iter().filter_map(|(_, t)| label[*t]).collect(), &s.model)?;
            let out = if s.decoupled {
                next_label += 1;
                next_label - 1
            } else {
                flow
            };
            for (_, t) in &s.outputs {
                label[*t] = Some(out);
            }
            done[i] = true;
            left -= 1;
        }
        if left == before {
            return Err(Error::internal(format!(
                "ensemble '{name}': steps that never become ready"
            )));
        }
    }
    one_flow(outputs.iter().filter_map(|(_, t)| label[*t]).collect(), name)?;
    Ok(Plan::new(name.clone(), names, inputs, outputs, steps, e.max_inflight_requests))
}
