//! `identity`: every requested `OUTPUT<k>` is the request's `INPUT<k>`, byte for byte, whatever its data
//! type and shape.

use std::time::Duration;

use bytes::Bytes;
use rampart_types::{
    DataType, Engine, EngineInstance, Error, InstanceSpec, ModelSignature, Result, Tensor,
};

use crate::{shape, type_name};

/// The `identity` backend.
pub struct Identity;

impl Engine for Identity {
    fn name(&self) -> &'static str {
        "identity"
    }

    fn needs_model_file(&self) -> bool {
        false
    }

    fn load(&self, spec: &InstanceSpec) -> Result<Box<dyn EngineInstance>> {
        validate(&spec.declared)?;
        let number = |key: &str| -> Result<u64> {
            match spec.parameters.get(key) {
                None => Ok(0),
                Some(v) => v.trim().parse::<u64>().map_err(|_| {
                    Error::invalid_arg(format!(
                        "model '{}': parameter '{key}' must be a non-negative integer, got '{v}'",
                        spec.model_name
                    ))
                }),
            }
        };
        let delay = number("execute_delay_ms")?;
        let multiplier = number("instance_wise_delay_multiplier")?;
        let creation = number("creation_delay_sec")?;
        if creation > 0 {
            std::thread::sleep(Duration::from_secs(creation));
        }
        // Triton: the delay of instance i is execute_delay_ms * max(multiplier * i, 1).
        let factor = (multiplier * spec.instance_index as u64).max(1);
        Ok(Box::new(IdentityInstance {
            signature: spec.declared.clone(),
            delay: Duration::from_millis(delay.saturating_mul(factor)),
        }))
    }
}

/// Triton's identity checks: `INPUT<k>` / `OUTPUT<k>` pairs with the same data type and shape.
fn validate(sig: &ModelSignature) -> Result<()> {
    if sig.inputs.len() != sig.outputs.len() {
        return Err(Error::invalid_arg("model configuration must have equal input/output pairs"));
    }
    for output in &sig.outputs {
        let Some(index) = output.name.strip_prefix("OUTPUT") else {
            return Err(Error::invalid_arg(format!(
                "expected output name to follow OUTPUT<index> pattern, got '{}'",
                output.name
            )));
        };
        for input in &sig.inputs {
            if !input.name.starts_with("INPUT") {
                return Err(Error::invalid_arg(format!(
                    "expected input name to follow INPUT<index> pattern, got '{}'",
                    input.name
                )));
            }
        }
        let Some(input) = sig.inputs.iter().find(|i| i.name[5..] == *index) else {
            return Err(Error::invalid_arg("expected input and output indices to match"));
        };
        if input.datatype != output.datatype {
            return Err(Error::invalid_arg(format!(
                "expected input and output datatype to match, got {} and {}",
                type_name(input),
                type_name(output)
            )));
        }
        if input.dims != output.dims {
            return Err(Error::invalid_arg(format!(
                "expected input and output shape to match, got {} and {}",
                shape(&input.dims),
                shape(&output.dims)
            )));
        }
    }
    Ok(())
}

struct IdentityInstance {
    signature: ModelSignature,
    delay: Duration,
}

impl EngineInstance for IdentityInstance {
    fn signature(&self) -> &ModelSignature {
        &self.signature
    }

    fn execute(&mut self, inputs: &[Tensor], outputs: &[String]) -> Result<Vec<Tensor>> {
        if !self.delay.is_zero() {
            std::thread::sleep(self.delay);
        }
        outputs.iter().map(|name| self.output(inputs, name)).collect()
    }
}

impl IdentityInstance {
    fn output(&self, inputs: &[Tensor], name: &str) -> Result<Tensor> {
        let input_name = format!("INPUT{}", name.strip_prefix("OUTPUT").unwrap_or(name));
        if let Some(t) = inputs.iter().find(|t| t.name == input_name) {
            return Ok(Tensor::new(name, t.datatype, t.shape.clone(), t.data.clone()));
        }
        // An optional input the request left out: zeros (empty strings) of its declared type, with each
        // open dimension 1.
        let declared = self.signature.inputs.iter().find(|s| s.name == input_name);
        let Some((spec, Ok(datatype))) = declared.map(|s| (s, s.datatype.clone())) else {
            return Err(Error::unsupported(format!("failed to get input '{input_name}'")));
        };
        let dims: Vec<i64> = spec.dims.iter().map(|&d| d.max(1)).collect();
        let count: u64 = dims.iter().map(|&d| d as u64).product();
        let bytes = match datatype {
            DataType::Bytes => count * 4,
            t => count * t.element_size().expect("fixed size") as u64,
        };
        Ok(Tensor::new(name, datatype, dims, Bytes::from(vec![0u8; bytes as usize])))
    }
}
