//! `repeat` (decoupled): one response per element of `IN`, each `OUT = IN[i]`, `IDX = i`, sent after
//! `DELAY[i]` ms; the instance is held at least `WAIT` ms.

use std::time::Instant;

use bytes::Bytes;
use rampart_types::{
    DataType, Engine, EngineInstance, EngineRequest, Error, InstanceSpec, ModelSignature,
    Responder, Result, Tensor,
};

use crate::{First, MAX_DELAY_MS, expect, input, shape, sleep, words};

/// The `repeat` backend.
pub struct Repeat;

impl Engine for Repeat {
    fn name(&self) -> &'static str {
        "repeat"
    }

    fn needs_model_file(&self) -> bool {
        false
    }

    fn load(&self, spec: &InstanceSpec) -> Result<Box<dyn EngineInstance>> {
        validate(spec)?;
        Ok(Box::new(RepeatInstance {
            signature: spec.declared.clone(),
            model: spec.model_name.clone(),
        }))
    }
}

/// Triton's repeat checks, in its order and words.
fn validate(spec: &InstanceSpec) -> Result<()> {
    if spec.max_batch_size != 0 {
        return Err(Error::invalid_arg(
            "repeat backend only supports models with max_batch_size == 0",
        ));
    }
    let sig = &spec.declared;
    if sig.inputs.len() != 3 {
        return Err(Error::invalid_arg(format!("expected 3 inputs, got {}", sig.inputs.len())));
    }
    if sig.outputs.len() != 2 {
        return Err(Error::invalid_arg(format!("expected 2 outputs, got {}", sig.outputs.len())));
    }
    let (i, o) = (&sig.inputs, &sig.outputs);
    expect("input", "first", &i[0], "IN", DataType::Int32, None)?;
    if i[0].dims.len() != 1 {
        return Err(Error::invalid_arg(format!(
            "expected IN shape to have one dimension, got {}",
            shape(&i[0].dims)
        )));
    }
    expect("input", "second", &i[1], "DELAY", DataType::Uint32, None)?;
    if i[1].dims != i[0].dims {
        return Err(Error::invalid_arg(format!(
            "expected IN and DELAY shape to match, got {} and {}",
            shape(&i[0].dims),
            shape(&i[1].dims)
        )));
    }
    expect("input", "third", &i[2], "WAIT", DataType::Uint32, Some(&[1]))?;
    expect("output", "first", &o[0], "OUT", DataType::Int32, Some(&[1]))?;
    expect("output", "second", &o[1], "IDX", DataType::Uint32, Some(&[1]))?;
    Ok(())
}

struct RepeatInstance {
    signature: ModelSignature,
    model: String,
}

impl EngineInstance for RepeatInstance {
    fn signature(&self) -> &ModelSignature {
        &self.signature
    }

    /// Not decoupled: the first response is the answer (Triton's front ends write only that one).
    fn execute(&mut self, inputs: &[Tensor], outputs: &[String]) -> Result<Vec<Tensor>> {
        let model = self.model.clone();
        First::answer_of(self, inputs, outputs, &model)
    }

    fn execute_decoupled(
        &mut self,
        request: &EngineRequest,
        responder: &dyn Responder,
    ) -> Result<()> {
        let (inputs, outputs) = (&request.inputs[..], &request.outputs[..]);
        let start = Instant::now();
        let wait = input(inputs, "WAIT")?;
        let [w] = words(wait).collect::<Vec<_>>()[..] else {
            return Err(Error::invalid_arg("unexpected size for WAIT input"));
        };
        let wait_ms = u64::from(u32::from_le_bytes(w));
        let (values, delays) = (input(inputs, "IN")?, input(inputs, "DELAY")?);
        if values.shape != delays.shape {
            return Err(Error::invalid_arg(format!(
                "expected IN and DELAY shape to match, got {} and {}",
                shape(&values.shape),
                shape(&delays.shape)
            )));
        }
        let delays: Vec<u64> = words(delays).map(|d| u64::from(u32::from_le_bytes(d))).collect();
        if let Some(d) = delays.iter().chain([&wait_ms]).find(|&&d| d > MAX_DELAY_MS) {
            return Err(Error::invalid_arg(format!(
                "DELAY and WAIT values are at most {MAX_DELAY_MS} ms, got {d}"
            )));
        }
        for (idx, (value, delay)) in words(values).zip(delays).enumerate() {
            sleep(delay, responder)?;
            let tensor = |name: &str| match name {
                "OUT" => Some(Tensor::new(
                    "OUT",
                    DataType::Int32,
                    vec![1],
                    Bytes::copy_from_slice(&value),
                )),
                "IDX" => {
                    let idx = (idx as u32).to_le_bytes();
                    Some(Tensor::new(
                        "IDX",
                        DataType::Uint32,
                        vec![1],
                        Bytes::copy_from_slice(&idx),
                    ))
                }
                _ => None,
            };
            responder.send(outputs.iter().filter_map(|o| tensor(o)).collect())?;
        }
        // WAIT: the instance stays busy at least this long after the request arrived.
        let waited = start.elapsed().as_millis() as u64;
        sleep(wait_ms.saturating_sub(waited), responder)
    }
}
