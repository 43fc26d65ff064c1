//! The checks of an ensemble config that need no other model: the fields an ensemble may not have, each
//! step's required fields, and the data-flow graph (every input used, every output written, no dangling
//! tensor). Messages are Triton's (docs/compatibility.md, "Ensembles").

use std::collections::{BTreeMap, BTreeSet};

use rampart_model_config::ModelConfig;
use rampart_model_config::pb::ModelEnsembling;
use rampart_model_config::pb::model_config::SchedulingChoice;
use rampart_types::{Error, Result};

pub(crate) const PLATFORM: &str = "ensemble";

/// The ensemble scheduling of `c`, if it is an ensemble.
pub(crate) fn scheduling(c: &ModelConfig) -> Option<&ModelEnsembling> {
    match &c.scheduling_choice {
        Some(SchedulingChoice::EnsembleScheduling(e)) if c.platform == PLATFORM => Some(e),
        _ => None,
    }
}

/// The composing model names of an ensemble config, each once, in step order.
pub(crate) fn step_models(c: &ModelConfig) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in scheduling(c).map(|e| e.step.as_slice()).unwrap_or_default() {
        if !out.contains(&s.model_name) {
            out.push(s.model_name.clone());
        }
    }
    out
}

/// Triton's static checks of the platform, backend and `ensemble_scheduling` of a raw config (before any
/// default is filled in).
pub(crate) fn check_static(c: &ModelConfig) -> Result<()> {
    let name = &c.name;
    let fail = |m: String| Err(Error::invalid_arg(m));
    let ensemble = c.platform == PLATFORM;
    if ensemble && !c.backend.is_empty() {
        return fail(format!(
            "Ensemble model '{name}' must have platform type 'ensemble' and empty backend type"
        ));
    }
    let Some(SchedulingChoice::EnsembleScheduling(e)) = &c.scheduling_choice else {
        if ensemble {
            return fail(format!(
                "ensemble scheduling must be set for ensemble {name} whose platform is ensemble"
            ));
        }
        return Ok(());
    };
    if !ensemble {
        return fail(format!(
            "ensemble scheduling cannot be set for model '{name}' whose platform is not ensemble"
        ));
    }
    if !c.instance_group.is_empty() {
        return fail(format!("instance group should not be specified for ensemble '{name}'"));
    }
    if c.optimization.is_some() {
        return fail(format!("optimization should not be specified for ensemble '{name}'"));
    }
    if !c.model_warmup.is_empty() {
        return fail(format!("model_warmup can not be specified for ensemble '{name}'"));
    }
    if e.step.is_empty() {
        return fail(format!("must specify 'step' for ensemble '{name}'"));
    }
    if e.step.len() > MAX_STEPS {
        return fail(format!(
            "ensemble '{name}' has {} steps; at most {MAX_STEPS} are supported",
            e.step.len()
        ));
    }
    let mut written = BTreeSet::new();
    for (i, s) in e.step.iter().enumerate() {
        for (field, empty) in [
            ("model_name", s.model_name.is_empty()),
            ("input_map", s.input_map.is_empty()),
            ("output_map", s.output_map.is_empty()),
        ] {
            if empty {
                return fail(format!("must specify '{field}' in step {i} of ensemble '{name}'"));
            }
        }
        for t in sorted_values(&s.output_map) {
            if !written.insert(t) {
                return fail(format!(
                    "ensemble tensor '{t}' can appear in an output map only once for ensemble '{name}' step {i}"
                ));
            }
        }
    }
    check_flow(c, e)
}

/// More steps than this are refused (each step is a node the request walks).
const MAX_STEPS: usize = 1024;

/// The values of a step map in a fixed order (protobuf maps have none), so messages do not vary.
pub(crate) fn sorted_values(map: &std::collections::HashMap<String, String>) -> Vec<&str> {
    let mut v: Vec<&str> = map.values().map(String::as_str).collect();
    v.sort_unstable();
    v
}

/// Every ensemble input feeds a step, every ensemble output is written from the inputs, and every other
/// tensor is both written and read.
fn check_flow(c: &ModelConfig, e: &ModelEnsembling) -> Result<()> {
    let name = &c.name;
    let inputs: BTreeSet<&str> = c.input.iter().map(|i| i.name.as_str()).collect();
    let outputs: BTreeSet<&str> = c.output.iter().map(|o| o.name.as_str()).collect();
    let consumed: BTreeSet<&str> =
        e.step.iter().flat_map(|s| s.input_map.values()).map(String::as_str).collect();
    // Tensor → the step writing it.
    let producer: BTreeMap<&str, usize> = e
        .step
        .iter()
        .enumerate()
        .flat_map(|(i, s)| s.output_map.values().map(move |t| (t.as_str(), i)))
        .collect();
    for i in &inputs {
        if !consumed.contains(i) {
            return Err(Error::invalid_arg(format!(
                "ensemble input '{i}' for ensemble {name}' is not used"
            )));
        }
    }
    // Flood-fill from the ensemble's inputs: a step runs once all its inputs are ready.
    let mut ready: BTreeSet<&str> = inputs.clone();
    let mut ran = vec![false; e.step.len()];
    loop {
        let mut progress = false;
        for (i, s) in e.step.iter().enumerate() {
            if !ran[i] && s.input_map.values().all(|t| ready.contains(t.as_str())) {
                ran[i] = true;
                progress = true;
                ready.extend(s.output_map.values().map(String::as_str));
            }
        }
        if !progress {
            break;
        }
    }
    for o in &outputs {
        if !producer.contains_key(o) && !inputs.contains(o) {
            return Err(Error::invalid_arg(format!(
                "ensemble output '{o}' for ensemble {name}' is not used"
            )));
        }
        if !ready.contains(o) {
            let detail = unconnected(o, e, &producer, &inputs)
                .map(|t| {
                    format!(": at least one of its depending tensors, '{t}', is not connected")
                })
                .unwrap_or_default();
            return Err(Error::invalid_arg(format!(
                "output '{o}' for ensemble '{name}' is not written{detail}"
            )));
        }
    }
    let all: BTreeSet<&str> = consumed.iter().chain(producer.keys()).copied().collect();
    for t in all {
        if inputs.contains(t) || outputs.contains(t) {
            continue;
        }
        if !ready.contains(t) || !consumed.contains(t) {
            return Err(Error::invalid_arg(format!(
                "ensemble tensor '{t}' is unused in ensemble '{name}'"
            )));
        }
    }
    Ok(())
}

/// A tensor `output` depends on that nothing writes (neither a step nor the ensemble's inputs).
fn unconnected<'a>(
    output: &'a str,
    e: &'a ModelEnsembling,
    producer: &BTreeMap<&'a str, usize>,
    inputs: &BTreeSet<&str>,
) -> Option<&'a str> {
    let mut seen = BTreeSet::new();
    let mut stack = vec![output];
    while let Some(t) = stack.pop() {
        if !seen.insert(t) || inputs.contains(t) {
            continue;
        }
        match producer.get(t) {
            None => return Some(t),
            Some(&i) => stack.extend(sorted_values(&e.step[i].input_map)),
        }
    }
    None
}
