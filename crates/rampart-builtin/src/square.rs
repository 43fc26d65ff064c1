//! `square` (decoupled): `IN` responses, each with `OUT = IN`; `IN = 0` sends only the final flag.

use bytes::Bytes;
use rampart_types::{
    DataType, Engine, EngineInstance, EngineRequest, Error, InstanceSpec, ModelSignature,
    Responder, Result, Tensor,
};

use crate::{First, expect, input, words};

/// The `square` backend.
pub struct Square;

/// Most responses one request may ask for (a client controls `IN`).
pub const MAX_RESPONSES: i32 = 1 << 20;

impl Engine for Square {
    fn name(&self) -> &'static str {
        "square"
    }

    fn needs_model_file(&self) -> bool {
        false
    }

    fn load(&self, spec: &InstanceSpec) -> Result<Box<dyn EngineInstance>> {
        let sig = &spec.declared;
        if sig.inputs.len() != 1 {
            return Err(Error::invalid_arg(format!("expected 1 input, got {}", sig.inputs.len())));
        }
        if sig.outputs.len() != 1 {
            return Err(Error::invalid_arg(format!(
                "expected 1 output, got {}",
                sig.outputs.len()
            )));
        }
        // Triton checks the dims without the batch dimension.
        let skip = usize::from(spec.max_batch_size > 0);
        let unbatched = |s: &rampart_types::IoSpec| rampart_types::IoSpec {
            dims: s.dims[skip.min(s.dims.len())..].to_vec(),
            ..s.clone()
        };
        expect("input", "first", &unbatched(&sig.inputs[0]), "IN", DataType::Int32, Some(&[1]))?;
        expect("output", "first", &unbatched(&sig.outputs[0]), "OUT", DataType::Int32, Some(&[1]))?;
        Ok(Box::new(SquareInstance { signature: sig.clone(), model: spec.model_name.clone() }))
    }
}

struct SquareInstance {
    signature: ModelSignature,
    model: String,
}

impl EngineInstance for SquareInstance {
    fn signature(&self) -> &ModelSignature {
        &self.signature
    }

    /// Not decoupled: the first response is the answer.
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
        let t = input(inputs, "IN")?;
        let batched = t.shape.len() == 2;
        if batched && t.shape[0] != 1 {
            return Err(Error::invalid_arg("unexpected shape for IN input"));
        }
        let Some(value) = words(t).next() else {
            return Err(Error::invalid_arg("unexpected shape for IN input"));
        };
        let n = i32::from_le_bytes(value);
        if !(0..=MAX_RESPONSES).contains(&n) {
            return Err(Error::invalid_arg(format!(
                "IN must be between 0 and {MAX_RESPONSES} (the number of responses), got {n}"
            )));
        }
        let shape = if batched { vec![1, 1] } else { vec![1] };
        for _ in 0..n {
            if responder.is_cancelled() {
                return Err(Error::new(rampart_types::Code::Cancelled, "cancelled"));
            }
            let out =
                Tensor::new("OUT", DataType::Int32, shape.clone(), Bytes::copy_from_slice(&value));
            responder
                .send(outputs.iter().filter(|o| *o == "OUT").map(|_| out.clone()).collect())?;
        }
        Ok(())
    }
}
