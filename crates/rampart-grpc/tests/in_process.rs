//! The gRPC front end in process: a tonic client against the services on a loopback listener, over a real
//! core serving the built-in backends (no model file, no native library). Checks that take seconds here
//! rather than a binary start per case: unary and streaming inference, decoupled models, errors through
//! the table, restricted protocols and statistics.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use rampart_core::access::{Protocol, Restrictions};
use rampart_core::{Server, ServerOptions};
use rampart_grpc::pb::{self, grpc_inference_service_client::GrpcInferenceServiceClient};
use rampart_grpc::{GrpcOptions, RestrictLayer};
use tokio_stream::StreamExt;
use tonic::transport::Channel;

const REPEAT: &str = r#"name: "repeat_int32"
backend: "repeat"
max_batch_size: 0
model_transaction_policy { decoupled: True }
input [
  { name: "IN" data_type: TYPE_INT32 dims: [ -1 ] },
  { name: "DELAY" data_type: TYPE_UINT32 dims: [ -1 ] },
  { name: "WAIT" data_type: TYPE_UINT32 dims: [ 1 ] }
]
output [
  { name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] },
  { name: "IDX" data_type: TYPE_UINT32 dims: [ 1 ] }
]
"#;

const IDENTITY: &str = r#"name: "identity_fp32"
backend: "identity"
max_batch_size: 8
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]
"#;

fn repo(dir: &Path) {
    for (name, config) in [("repeat_int32", REPEAT), ("identity_fp32", IDENTITY)] {
        std::fs::create_dir_all(dir.join(name).join("1")).unwrap();
        std::fs::write(dir.join(name).join("config.pbtxt"), config).unwrap();
    }
}

struct Running {
    client: GrpcInferenceServiceClient<Channel>,
    _repo: tempfile::TempDir,
}

/// A core over the built-in backends and its gRPC services on 127.0.0.1, with `restrictions`.
async fn start(restrictions: Restrictions) -> Running {
    let dir = tempfile::tempdir().unwrap();
    repo(dir.path());
    let mut backends = rampart_types::Backends::new();
    rampart_builtin::register(&mut backends);
    let options = ServerOptions {
        model_repositories: vec![dir.path().to_path_buf()],
        backends: Arc::new(backends),
        ..ServerOptions::default()
    };
    let server = tokio::task::spawn_blocking(move || Server::start(options)).await.unwrap();
    let server = server.expect("the built-in models load");
    let (inference, health) = rampart_grpc::services(server, &GrpcOptions::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let router = tonic::transport::Server::builder()
        .layer(rampart_grpc::StatusLayer)
        .layer(RestrictLayer::new(Arc::new(restrictions), None))
        .add_service(inference)
        .add_service(health);
    tokio::spawn(router.serve_with_incoming(incoming));
    let client = GrpcInferenceServiceClient::connect(format!("http://{addr}")).await.unwrap();
    Running { client, _repo: dir }
}

fn tensor(name: &str, datatype: &str, shape: &[i64]) -> pb::model_infer_request::InferInputTensor {
    pb::model_infer_request::InferInputTensor {
        name: name.into(),
        datatype: datatype.into(),
        shape: shape.to_vec(),
        ..Default::default()
    }
}

fn le<T: Copy>(values: &[T], bytes: fn(T) -> [u8; 4]) -> bytes::Bytes {
    values.iter().flat_map(|&v| bytes(v)).collect::<Vec<u8>>().into()
}

fn repeat_request(id: &str, values: &[i32], empty_final: bool) -> pb::ModelInferRequest {
    let n = values.len() as i64;
    let mut parameters = HashMap::new();
    if empty_final {
        let flag = pb::infer_parameter::ParameterChoice::BoolParam(true);
        let p = pb::InferParameter { parameter_choice: Some(flag) };
        parameters.insert("triton_enable_empty_final_response".to_string(), p);
    }
    pb::ModelInferRequest {
        model_name: "repeat_int32".into(),
        id: id.into(),
        inputs: vec![
            tensor("IN", "INT32", &[n]),
            tensor("DELAY", "UINT32", &[n]),
            tensor("WAIT", "UINT32", &[1]),
        ],
        raw_input_contents: vec![
            le(values, i32::to_le_bytes),
            le(&vec![0u32; values.len()], u32::to_le_bytes),
            le(&[0u32], u32::to_le_bytes),
        ],
        parameters,
        ..Default::default()
    }
}

/// What a stream response carried: its OUT value and its `triton_final_response`.
type Seen = (Option<i32>, Option<bool>);

fn final_flag(r: &pb::ModelInferResponse) -> Option<bool> {
    match r.parameters.get("triton_final_response")?.parameter_choice {
        Some(pb::infer_parameter::ParameterChoice::BoolParam(b)) => Some(b),
        _ => None,
    }
}

#[tokio::test]
async fn identity_echoes_raw_contents_over_model_infer() {
    let mut r = start(Restrictions::none(Protocol::Grpc)).await;
    let data = le(&[1.5f32, -2.0], f32::to_le_bytes);
    let request = pb::ModelInferRequest {
        model_name: "identity_fp32".into(),
        inputs: vec![tensor("INPUT0", "FP32", &[1, 2])],
        raw_input_contents: vec![data.clone()],
        ..Default::default()
    };
    let answer = r.client.model_infer(request).await.unwrap().into_inner();
    assert_eq!(answer.outputs[0].name, "OUTPUT0");
    assert_eq!(answer.outputs[0].shape, vec![1, 2]);
    assert_eq!(answer.raw_output_contents, vec![data]);
}

#[tokio::test]
async fn decoupled_models_are_unimplemented_on_model_infer() {
    let mut r = start(Restrictions::none(Protocol::Grpc)).await;
    let e = r.client.model_infer(repeat_request("x", &[1], false)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unimplemented);
    assert_eq!(
        e.message(),
        "ModelInfer RPC doesn't support models with decoupled transaction policy"
    );
}

#[tokio::test]
async fn a_decoupled_stream_answers_each_element_then_the_final_flag() {
    let mut r = start(Restrictions::none(Protocol::Grpc)).await;
    let requests = tokio_stream::iter(vec![
        repeat_request("a", &[7, 8, 9], true),
        repeat_request("b", &[], false),
        repeat_request("c", &[4], false),
    ]);
    let mut stream = r.client.model_stream_infer(requests).await.unwrap().into_inner();
    let mut by_id: HashMap<String, Vec<Seen>> = HashMap::new();
    while let Some(item) = stream.next().await {
        let item = item.unwrap();
        assert_eq!(item.error_message, "");
        let response = item.infer_response.unwrap();
        let out = response
            .raw_output_contents
            .first()
            .map(|b| i32::from_le_bytes(b[..4].try_into().unwrap()));
        by_id.entry(response.id.clone()).or_default().push((out, final_flag(&response)));
    }
    let flags = |v: &[i32]| v.iter().map(|&x| (Some(x), Some(false))).collect::<Vec<_>>();
    let mut a = flags(&[7, 8, 9]);
    a.push((None, Some(true)));
    assert_eq!(by_id["a"], a, "three responses, then the empty final response asked for");
    assert!(
        !by_id.contains_key("b"),
        "no responses and no empty final response: nothing is written"
    );
    assert_eq!(by_id["c"], flags(&[4]));
}

#[tokio::test]
async fn stream_errors_travel_in_error_message_and_name_the_problem() {
    let mut r = start(Restrictions::none(Protocol::Grpc)).await;
    let mut bad = repeat_request("bad", &[1, 2], false);
    bad.raw_input_contents[1] = le(&[0u32], u32::to_le_bytes);
    bad.inputs[1].shape = vec![1];
    let unknown =
        pb::ModelInferRequest { model_name: "nope".into(), id: "u".into(), ..Default::default() };
    let requests = tokio_stream::iter(vec![bad, unknown]);
    let mut stream = r.client.model_stream_infer(requests).await.unwrap().into_inner();
    let mut messages = Vec::new();
    while let Some(item) = stream.next().await {
        messages.push(item.unwrap().error_message);
    }
    messages.sort();
    assert_eq!(
        messages,
        vec![
            "Request for unknown model: 'nope' is not found".to_string(),
            "expected IN and DELAY shape to match, got [2] and [1]".to_string(),
        ]
    );
}

#[tokio::test]
async fn restricted_categories_are_refused_before_the_call_runs() {
    let specs = vec!["inference:infer-key=secret".to_string()];
    let rules = Restrictions::parse(Protocol::Grpc, &specs, &|v| Ok(v.to_string())).unwrap();
    let mut r = start(rules).await;
    let e = r.client.model_stream_infer(tokio_stream::iter(vec![repeat_request("x", &[1], false)]));
    let status = e.await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("This protocol is restricted"), "{status:?}");
    let ready = r.client.server_ready(pb::ServerReadyRequest {}).await.unwrap().into_inner();
    assert!(ready.ready, "health is not restricted");
}

#[tokio::test]
async fn statistics_count_every_response_of_a_decoupled_request() {
    let mut r = start(Restrictions::none(Protocol::Grpc)).await;
    let requests = tokio_stream::iter(vec![repeat_request("s", &[1, 2], false)]);
    let mut stream = r.client.model_stream_infer(requests).await.unwrap().into_inner();
    while stream.next().await.is_some() {}
    let request =
        pb::ModelStatisticsRequest { name: "repeat_int32".into(), version: String::new() };
    let stats = r.client.model_statistics(request).await.unwrap().into_inner();
    let s = &stats.model_stats[0];
    assert_eq!(s.inference_count, 1);
    let mut keys: Vec<&String> = s.response_stats.keys().collect();
    keys.sort();
    assert_eq!(keys, ["0", "1"]);
    assert_eq!(s.response_stats["1"].success.as_ref().unwrap().count, 1);
}
