//! The built-in backends against Triton's configs and messages, with a recording responder.

use std::cell::RefCell;

use bytes::Bytes;
use rampart_types::{
    DataType, Engine, InstanceSpec, IoSpec, ModelSignature, Responder, Result, Tensor,
};

use crate::{Identity, Repeat, Square};

fn io(name: &str, datatype: DataType, dims: &[i64]) -> IoSpec {
    IoSpec { name: name.into(), datatype: Ok(datatype), dims: dims.to_vec(), optional: false }
}

fn spec(inputs: Vec<IoSpec>, outputs: Vec<IoSpec>) -> InstanceSpec {
    InstanceSpec {
        model_name: "m".into(),
        declared: ModelSignature { inputs, outputs },
        ..Default::default()
    }
}

fn repeat_int32() -> InstanceSpec {
    spec(
        vec![
            io("IN", DataType::Int32, &[-1]),
            io("DELAY", DataType::Uint32, &[-1]),
            io("WAIT", DataType::Uint32, &[1]),
        ],
        vec![io("OUT", DataType::Int32, &[1]), io("IDX", DataType::Uint32, &[1])],
    )
}

fn int32(name: &str, values: &[i32]) -> Tensor {
    let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    Tensor::new(name, DataType::Int32, vec![values.len() as i64], Bytes::from(data))
}

fn uint32(name: &str, values: &[u32]) -> Tensor {
    let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    Tensor::new(name, DataType::Uint32, vec![values.len() as i64], Bytes::from(data))
}

#[derive(Default)]
struct Record(RefCell<Vec<Vec<Tensor>>>, bool);

impl Responder for Record {
    fn send(&self, outputs: Vec<Tensor>) -> Result<()> {
        self.0.borrow_mut().push(outputs);
        Ok(())
    }
    fn is_cancelled(&self) -> bool {
        self.1
    }
}

fn load_error(engine: &dyn Engine, spec: &InstanceSpec) -> String {
    engine.load(spec).err().expect("refused").message().to_string()
}

#[test]
fn identity_echoes_every_type_and_checks_its_pairs() {
    let sig = |o: &str, t: DataType| {
        spec(vec![io("INPUT0", DataType::Bytes, &[-1])], vec![io(o, t, &[-1])])
    };
    let mut m = Identity.load(&sig("OUTPUT0", DataType::Bytes)).unwrap();
    let strings = Tensor::from_bytes_elements("INPUT0", vec![2], &["a", ""]);
    let out = m.execute(std::slice::from_ref(&strings), &["OUTPUT0".into()]).unwrap();
    assert_eq!(out, vec![Tensor { name: "OUTPUT0".into(), ..strings }]);
    assert_eq!(
        load_error(&Identity, &sig("OUT", DataType::Bytes)),
        "expected output name to follow OUTPUT<index> pattern, got 'OUT'"
    );
    assert_eq!(
        load_error(&Identity, &sig("OUTPUT1", DataType::Bytes)),
        "expected input and output indices to match"
    );
    assert_eq!(
        load_error(&Identity, &sig("OUTPUT0", DataType::Fp32)),
        "expected input and output datatype to match, got TYPE_STRING and TYPE_FP32"
    );
    let unequal = spec(vec![io("INPUT0", DataType::Fp32, &[1])], vec![]);
    assert_eq!(
        load_error(&Identity, &unequal),
        "model configuration must have equal input/output pairs"
    );
}

#[test]
fn identity_sleeps_execute_delay_ms_per_execution() {
    let mut s =
        spec(vec![io("INPUT0", DataType::Fp32, &[1])], vec![io("OUTPUT0", DataType::Fp32, &[1])]);
    s.parameters.insert("execute_delay_ms".into(), "30".into());
    let mut m = Identity.load(&s).unwrap();
    let x = Tensor::new("INPUT0", DataType::Fp32, vec![1], Bytes::from_static(&[0, 0, 128, 63]));
    let t = std::time::Instant::now();
    m.execute(&[x], &["OUTPUT0".into()]).unwrap();
    assert!(t.elapsed() >= std::time::Duration::from_millis(30), "{:?}", t.elapsed());
    s.parameters.insert("execute_delay_ms".into(), "soon".into());
    assert!(
        load_error(&Identity, &s).contains("'execute_delay_ms' must be a non-negative integer")
    );
}

#[test]
fn repeat_sends_one_response_per_element_then_returns() {
    let mut m = Repeat.load(&repeat_int32()).unwrap();
    let inputs = [int32("IN", &[4, -2, 9]), uint32("DELAY", &[0, 1, 0]), uint32("WAIT", &[0])];
    let record = Record::default();
    m.execute_decoupled(&req(&inputs, &["OUT".into(), "IDX".into()]), &record).unwrap();
    let sent = record.0.into_inner();
    assert_eq!(sent.len(), 3);
    for (i, (response, value)) in sent.iter().zip([4, -2, 9]).enumerate() {
        assert_eq!(response[0], int32("OUT", &[value]));
        assert_eq!(response[1], uint32("IDX", &[i as u32]));
    }
    let mismatched = [int32("IN", &[1]), uint32("DELAY", &[0, 0]), uint32("WAIT", &[0])];
    let e =
        m.execute_decoupled(&req(&mismatched, &["OUT".into()]), &Record::default()).unwrap_err();
    assert_eq!(e.message(), "expected IN and DELAY shape to match, got [1] and [2]");
    let cancelled = Record(RefCell::default(), true);
    let e = m.execute_decoupled(&req(&inputs, &["OUT".into()]), &cancelled).unwrap_err();
    assert_eq!(e.code(), rampart_types::Code::Cancelled);
}

#[test]
fn repeat_config_checks_use_tritons_words() {
    let mut s = repeat_int32();
    s.max_batch_size = 8;
    assert_eq!(
        load_error(&Repeat, &s),
        "repeat backend only supports models with max_batch_size == 0"
    );
    let mut s = repeat_int32();
    s.declared.inputs[2].dims = vec![2];
    assert_eq!(load_error(&Repeat, &s), "expected WAIT shape to be [1], got [2]");
    let mut s = repeat_int32();
    s.declared.outputs[1].datatype = Ok(DataType::Int32);
    assert_eq!(load_error(&Repeat, &s), "expected IDX datatype to be UINT32, got TYPE_INT32");
    let mut s = repeat_int32();
    s.declared.inputs.pop();
    assert_eq!(load_error(&Repeat, &s), "expected 3 inputs, got 2");
}

#[test]
fn square_sends_in_responses_and_refuses_negative_counts() {
    let s = spec(vec![io("IN", DataType::Int32, &[1])], vec![io("OUT", DataType::Int32, &[1])]);
    let mut m = Square.load(&s).unwrap();
    for n in [0, 3] {
        let record = Record::default();
        m.execute_decoupled(&req(&[int32("IN", &[n])], &["OUT".into()]), &record).unwrap();
        let sent = record.0.into_inner();
        assert_eq!(sent, vec![vec![int32("OUT", &[n])]; n as usize]);
    }
    let e = m.execute_decoupled(&req(&[int32("IN", &[-1])], &["OUT".into()]), &Record::default());
    assert!(e.unwrap_err().message().starts_with("IN must be between 0 and"));
    assert_eq!(m.execute(&[int32("IN", &[2])], &["OUT".into()]).unwrap(), vec![int32("OUT", &[2])]);
    assert!(
        m.execute(&[int32("IN", &[0])], &["OUT".into()]).is_err(),
        "no response to answer with"
    );
    let bad = spec(vec![io("IN", DataType::Int32, &[2])], vec![io("OUT", DataType::Int32, &[1])]);
    assert_eq!(load_error(&Square, &bad), "expected IN shape to be [1], got [2]");
}

fn req(inputs: &[Tensor], outputs: &[String]) -> rampart_types::EngineRequest {
    rampart_types::EngineRequest::new(inputs.to_vec(), outputs.to_vec())
}
