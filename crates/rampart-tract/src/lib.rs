//! tract engine: pure-Rust ONNX execution, no native library. One optimized plan per instance keeps the batch
//! dimension symbolic, so a single plan serves every batch size.
#![forbid(unsafe_code)]

use std::sync::Arc;

use rampart_types::tensor::{encode_bytes_elements, split_bytes_elements};
use rampart_types::wire::{self, WireElement};
use rampart_types::{
    DataType, Engine, EngineInstance, Error, InstanceSpec, IoSpec, ModelSignature, Result,
    Tensor as RTensor,
};
use tract_onnx::prelude::*;

pub struct TractEngine;

type Plan = Arc<TypedRunnableModel>;

fn map_type(dt: DatumType) -> std::result::Result<DataType, String> {
    Ok(match dt {
        DatumType::Bool => DataType::Bool,
        DatumType::U8 => DataType::Uint8,
        DatumType::U16 => DataType::Uint16,
        DatumType::U32 => DataType::Uint32,
        DatumType::U64 => DataType::Uint64,
        DatumType::I8 => DataType::Int8,
        DatumType::I16 => DataType::Int16,
        DatumType::I32 => DataType::Int32,
        DatumType::I64 => DataType::Int64,
        DatumType::F16 => DataType::Fp16,
        DatumType::F32 => DataType::Fp32,
        DatumType::F64 => DataType::Fp64,
        DatumType::String => DataType::Bytes,
        other => return Err(format!("tract datum type {other:?} has no Triton data type")),
    })
}

fn io_spec(model: &TypedModel, outlet: OutletId) -> Result<IoSpec> {
    let fact = model.outlet_fact(outlet).map_err(|e| Error::internal(format!("tract: {e}")))?;
    let name = model
        .outlet_label(outlet)
        .map(str::to_string)
        .unwrap_or_else(|| model.node(outlet.node).name.clone());
    let dims = fact.shape.iter().map(|d| d.to_i64().unwrap_or(-1)).collect();
    // tract turns graph inputs that have an initializer into constants, so they never appear here.
    Ok(IoSpec { name, datatype: map_type(fact.datum_type), dims, optional: false })
}

impl Engine for TractEngine {
    fn name(&self) -> &'static str {
        "tract"
    }

    fn supports(&self, datatype: DataType) -> bool {
        datatype != DataType::Bf16
    }

    fn load(&self, spec: &InstanceSpec) -> Result<Box<dyn EngineInstance>> {
        if let Some((name, _)) = spec.declared_types().find(|(_, t)| !self.supports(*t)) {
            return Err(Error::unsupported(format!(
                "the tract engine does not support data type BF16 (tensor '{name}'); use the onnxruntime engine"
            )));
        }
        let fail = |e: anyhow::Error| {
            Error::internal(format!("tract cannot load '{}': {e:#}", spec.model_file.display()))
        };
        let model = tract_onnx::onnx().model_for_path(&spec.model_file).map_err(fail)?;
        // Keep the ONNX input/output names: tract renames nodes while optimizing.
        let input_names: Vec<String> = model
            .input_outlets()
            .map_err(fail)?
            .iter()
            .map(|o| model.node(o.node).name.clone())
            .collect();
        let output_names: Vec<String> = model
            .output_outlets()
            .map_err(fail)?
            .iter()
            .map(|&o| {
                model
                    .outlet_label(o)
                    .map(str::to_string)
                    .unwrap_or_else(|| model.node(o.node).name.clone())
            })
            .collect();
        let typed = model.into_optimized().map_err(fail)?;
        let mut signature = ModelSignature::default();
        for (i, &o) in typed.input_outlets().map_err(fail)?.iter().enumerate() {
            let mut s = io_spec(&typed, o)?;
            s.name = input_names[i].clone();
            signature.inputs.push(s);
        }
        for (i, &o) in typed.output_outlets().map_err(fail)?.iter().enumerate() {
            let mut s = io_spec(&typed, o)?;
            s.name = output_names[i].clone();
            signature.outputs.push(s);
        }
        let plan: Plan = typed.into_runnable().map_err(fail)?;
        Ok(Box::new(TractInstance { plan, signature }))
    }
}

struct TractInstance {
    plan: Plan,
    signature: ModelSignature,
}

/// `with_element_type!` for the types tract has: BF16 is refused at load, so it cannot reach execution.
macro_rules! tract_type {
    ($dt:expr, $T:ident => $body:expr, bytes => $bytes:expr) => {
        match $dt {
            DataType::Bool => {
                type $T = bool;
                $body
            }
            DataType::Uint8 => {
                type $T = u8;
                $body
            }
            DataType::Uint16 => {
                type $T = u16;
                $body
            }
            DataType::Uint32 => {
                type $T = u32;
                $body
            }
            DataType::Uint64 => {
                type $T = u64;
                $body
            }
            DataType::Int8 => {
                type $T = i8;
                $body
            }
            DataType::Int16 => {
                type $T = i16;
                $body
            }
            DataType::Int32 => {
                type $T = i32;
                $body
            }
            DataType::Int64 => {
                type $T = i64;
                $body
            }
            DataType::Fp16 => {
                type $T = f16;
                $body
            }
            DataType::Fp32 => {
                type $T = f32;
                $body
            }
            DataType::Fp64 => {
                type $T = f64;
                $body
            }
            DataType::Bytes => $bytes,
            DataType::Bf16 => {
                return Err(Error::unsupported("the tract engine does not support BF16"))
            }
        }
    };
}

fn to_tract(t: &RTensor) -> Result<TValue> {
    let shape: Vec<usize> = t.shape.iter().map(|&d| d as usize).collect();
    let what = format!("input '{}'", t.name);
    let err = |e: anyhow::Error| Error::internal(format!("tract rejected {what}: {e}"));
    let tensor = tract_type!(t.datatype, T => {
        let v: Vec<T> = wire::decode::<T>(&t.data)?;
        Tensor::from_shape::<T>(&shape, &v).map_err(err)?
    }, bytes => {
        let els = split_bytes_elements(&t.data, t.element_count(), &what)?;
        let mut strings = Vec::with_capacity(els.len());
        for (i, e) in els.into_iter().enumerate() {
            strings.push(String::from_utf8(e.to_vec()).map_err(|_| {
                Error::invalid_arg(format!("{what}: BYTES element {i} is not valid UTF-8, which tract string tensors require"))
            })?);
        }
        tract_ndarray::ArrayD::from_shape_vec(tract_ndarray::IxDyn(&shape), strings)
            .map_err(|e| Error::internal(format!("{what}: {e}")))?
            .into_tensor()
    });
    Ok(tensor.into_tvalue())
}

fn extract<T: Datum + WireElement>(v: &Tensor) -> Result<Vec<u8>> {
    let view =
        v.to_plain_array_view::<T>().map_err(|e| Error::internal(format!("tract output: {e}")))?;
    let mut out = Vec::with_capacity(view.len() * T::SIZE);
    for &x in view.iter() {
        x.write(&mut out);
    }
    Ok(out)
}

impl EngineInstance for TractInstance {
    fn signature(&self) -> &ModelSignature {
        &self.signature
    }

    fn execute(&mut self, inputs: &[RTensor], outputs: &[String]) -> Result<Vec<RTensor>> {
        let mut ordered: TVec<TValue> = tvec![];
        for spec in &self.signature.inputs {
            let t = inputs
                .iter()
                .find(|t| t.name == spec.name)
                .ok_or_else(|| Error::invalid_arg(format!("missing input '{}'", spec.name)))?;
            ordered.push(to_tract(t)?);
        }
        let result = self
            .plan
            .run(ordered)
            .map_err(|e| Error::internal(format!("tract execution failed: {e:#}")))?;
        outputs
            .iter()
            .map(|name| {
                let ix = self
                    .signature
                    .outputs
                    .iter()
                    .position(|o| &o.name == name)
                    .ok_or_else(|| Error::internal(format!("tract model has no output '{name}'")))?;
                let v: &Tensor = &result[ix];
                let dt = map_type(v.datum_type()).map_err(Error::internal)?;
                let shape = v.shape().iter().map(|&d| d as i64).collect();
                let data = tract_type!(dt, T => extract::<T>(v)?, bytes => {
                    let view = v.to_plain_array_view::<String>().map_err(|e| Error::internal(format!("tract output: {e}")))?;
                    let els: Vec<&[u8]> = view.iter().map(|s| s.as_bytes()).collect();
                    encode_bytes_elements(&els)
                });
                Ok(RTensor::new(name.clone(), dt, shape, data.into()))
            })
            .collect()
    }
}
