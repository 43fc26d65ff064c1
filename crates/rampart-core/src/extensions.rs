//! Protocol extensions around an inference: inputs and outputs in system shared memory, the
//! classification extension, raw binary request bodies, and the CUDA shared-memory answers of a build
//! without GPUs.

use rampart_types::{DataType, Error, Result};

use crate::infer::{InferRequest, InferResponse, InputTensor};
use crate::model::ModelVersion;
use crate::shm::SharedMemory;

/// Reads inputs held in shared memory into the request, and checks the outputs' extensions before the
/// model runs: regions are leased (bounds checked, held open) now, so an unregister during the
/// inference cannot take them away.
pub(crate) fn take(shm: &SharedMemory, req: &mut InferRequest) -> Result<Vec<OutputExtension>> {
    // Inputs are copied out of their regions, so what one request may read is bounded, and a fixed-size
    // tensor's byte size is checked against its shape (after the region's own checks) before anything is read.
    let mut total: u64 = 0;
    for input in req.inputs.iter_mut() {
        let Some(r) = &input.shm else { continue };
        let lease = shm.lease(r)?;
        let model = Some(req.model_name.as_str());
        let count = rampart_types::tensor::element_count(&input.shape, &input.name, model)?;
        if let Some(expected) =
            rampart_types::tensor::fixed_byte_size(input.datatype, count, &input.name, model)?
            && r.byte_size != expected
        {
            return Err(crate::infer::byte_size_mismatch(
                &input.name,
                &req.model_name,
                expected,
                r.byte_size,
            ));
        }
        total = total.saturating_add(r.byte_size);
        if total > crate::shm::MAX_REQUEST_INPUT_BYTES {
            return Err(Error::invalid_arg(format!(
                "the shared-memory inputs of one request exceed {} bytes",
                crate::shm::MAX_REQUEST_INPUT_BYTES
            )));
        }
        input.data = lease.read()?;
    }
    let mut out = Vec::new();
    for o in req.outputs.iter().filter(|o| o.classification.is_some() || o.shm.is_some()) {
        if o.classification.is_some() && o.shm.is_some() {
            return Err(Error::invalid_arg(format!(
                "output '{}' cannot combine 'shared_memory_region' with 'classification'",
                o.name
            )));
        }
        let shm = match &o.shm {
            Some(r) => Some((r.clone(), shm.lease(r)?)),
            None => None,
        };
        out.push(OutputExtension { name: o.name.clone(), classification: o.classification, shm });
    }
    Ok(out)
}

/// The input of a raw binary body (`Inference-Header-Content-Length: 0`, [`InferRequest::raw_input`]): the
/// model's single input, batch 1, its shape deduced from the config.
pub(crate) fn raw_input(m: &ModelVersion, mut data: bytes::Bytes) -> Result<InputTensor> {
    let name = &m.name;
    let c = &m.config;
    if c.input.len() != 1 {
        return Err(Error::invalid_arg(format!(
            "Raw request must only have 1 input (found 1) to be deduced but got {} inputs in '{name}' model configuration",
            c.input.len()
        )));
    }
    let input = &c.input[0];
    let datatype = DataType::from_config_enum(input.data_type).expect("validated at load");
    let mut shape = input.dims.clone();
    match datatype.element_size() {
        None => {
            if shape != [1] {
                return Err(Error::invalid_arg(format!(
                    "For BYTE datatype raw input '{}', the model must have input shape [1]",
                    input.name
                )));
            }
            // The body is the one element's bytes, as in Triton: give it its wire length prefix.
            let len = u32::try_from(data.len()).map_err(|_| {
                Error::invalid_arg(format!(
                    "raw input '{}' is longer than a BYTES element",
                    input.name
                ))
            })?;
            let mut element = bytes::BytesMut::with_capacity(4 + data.len());
            element.extend_from_slice(&len.to_le_bytes());
            element.extend_from_slice(&data);
            data = element.freeze();
        }
        Some(size) => {
            let variable = shape.iter().filter(|&&d| d == -1).count();
            if variable > 1 {
                return Err(Error::invalid_arg(format!(
                    "The shape of the raw input '{}' can not be deduced because there are more than one variable-sized dimension",
                    input.name
                )));
            }
            let known: u64 = shape.iter().filter(|&&d| d > 0).map(|&d| d as u64).product();
            let elements = data.len() as u64 / size as u64;
            if variable == 1 {
                if !data.len().is_multiple_of(size) || known == 0 || !elements.is_multiple_of(known)
                {
                    return Err(Error::invalid_arg(format!(
                        "unexpected raw input size {} for input '{}' of model '{name}': not a whole number of {datatype} elements of shape {:?}",
                        data.len(),
                        input.name,
                        input.dims
                    )));
                }
                let fill = (elements / known) as i64;
                shape.iter_mut().filter(|d| **d == -1).for_each(|d| *d = fill);
            }
        }
    }
    if c.max_batch_size > 0 {
        shape.insert(0, 1);
    }
    Ok(InputTensor::new(input.name.clone(), datatype, shape, data))
}

/// An output with a protocol extension, checked before the inference and applied to its result.
pub(crate) struct OutputExtension {
    name: String,
    classification: Option<u64>,
    shm: Option<(crate::shm::ShmRef, crate::shm::Lease)>,
}

pub(crate) fn finish(
    model: &ModelVersion,
    mut response: InferResponse,
    extensions: Vec<OutputExtension>,
) -> Result<InferResponse> {
    let batching = model.config.max_batch_size > 0;
    for e in extensions {
        let Some(t) = response.outputs.iter_mut().find(|t| t.name == e.name) else { continue };
        if let Some(k) = e.classification {
            *t = crate::classify::classify(
                t,
                k,
                batching,
                model.labels.get(&e.name).map(Vec::as_slice),
            )?;
        }
        if let Some((mut place, lease)) = e.shm {
            let size = t.data.len() as u64;
            if size > lease.len() {
                return Err(Error::invalid_arg(format!(
                    "shared memory size specified with the request for output '{}' ({} bytes) should be at least {size} bytes to hold the results",
                    e.name,
                    lease.len()
                )));
            }
            lease.write(&t.data)?;
            place.byte_size = size;
            t.data = bytes::Bytes::new();
            response.shm_outputs.insert(e.name, place);
        }
    }
    Ok(response)
}
