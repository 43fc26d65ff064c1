//! Core rules checked in process, in seconds, over the built-in backends (a repository of `config.pbtxt`
//! files only): request validation, dynamic batching, decoupled requests and model control. The Python
//! suite checks the same behaviour through real clients against the binary.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use rampart_core::{
    InferRequest, InputTensor, LoadRequest, ModelControlMode, Server, ServerOptions,
};
use rampart_types::{Code, DataType};

fn identity(name: &str, extra: &str) -> String {
    format!(
        "name: \"{name}\"\nbackend: \"identity\"\nmax_batch_size: 8\n\
         input [ {{ name: \"INPUT0\" data_type: TYPE_INT32 dims: [ 2 ] }} ]\n\
         output [ {{ name: \"OUTPUT0\" data_type: TYPE_INT32 dims: [ 2 ] }} ]\n{extra}"
    )
}

const SQUARE: &str = "name: \"square_int32\"\nbackend: \"square\"\nmax_batch_size: 0\n\
    model_transaction_policy { decoupled: true }\n\
    input [ { name: \"IN\" data_type: TYPE_INT32 dims: [ 1 ] } ]\n\
    output [ { name: \"OUT\" data_type: TYPE_INT32 dims: [ 1 ] } ]\n";

fn write(dir: &Path, name: &str, config: &str) {
    std::fs::create_dir_all(dir.join(name).join("1")).unwrap();
    std::fs::write(dir.join(name).join("config.pbtxt"), config).unwrap();
}

fn start(dir: &Path, mode: ModelControlMode, startup: &[&str]) -> Server {
    let mut backends = rampart_types::Backends::new();
    rampart_builtin::register(&mut backends);
    Server::start(ServerOptions {
        model_repositories: vec![dir.to_path_buf()],
        backends: Arc::new(backends),
        model_control_mode: mode,
        startup_models: startup.iter().map(|s| s.to_string()).collect(),
        ..ServerOptions::default()
    })
    .expect("starts")
}

fn int32(values: &[i32]) -> Bytes {
    values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>().into()
}

fn request(model: &str, shape: Vec<i64>, values: &[i32]) -> InferRequest {
    InferRequest {
        model_name: model.into(),
        inputs: vec![InputTensor::new("INPUT0", DataType::Int32, shape, int32(values))],
        ..Default::default()
    }
}

fn repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "identity", &identity("identity", ""));
    let batching =
        "dynamic_batching { max_queue_delay_microseconds: 200000 preferred_batch_size: [ 4 ] }";
    write(dir.path(), "batched", &identity("batched", batching));
    write(dir.path(), "square_int32", SQUARE);
    let slow = "parameters { key: \"execute_delay_ms\" value: { string_value: \"300\" } }";
    write(dir.path(), "slow", &identity("slow", slow));
    dir
}

#[tokio::test]
async fn requests_are_validated_against_the_config_with_tritons_words() {
    let dir = repo();
    let server = start(dir.path(), ModelControlMode::None, &[]);
    let ok = server.infer(request("identity", vec![1, 2], &[3, 4])).await.unwrap();
    assert_eq!(ok.outputs[0].data, int32(&[3, 4]));
    let cases = [
        (
            request("identity", vec![1, 3], &[1, 2, 3]),
            "unexpected shape for input 'INPUT0' for model 'identity'",
        ),
        (
            request("identity", vec![9, 2], &[0; 18]),
            "inference request batch-size must be <= 8 for 'identity'",
        ),
        (request("nope", vec![1, 2], &[1, 2]), "Request for unknown model: 'nope' is not found"),
        (
            request("identity", vec![-1, 2], &[]),
            "invalid shape for input 'INPUT0': dimension -1 is negative",
        ),
    ];
    for (req, message) in cases {
        let e = server.infer(req).await.unwrap_err();
        assert!(e.message().starts_with(message), "{e}");
    }
    let mut wrong_type = request("identity", vec![1, 2], &[1, 2]);
    wrong_type.inputs[0].datatype = DataType::Fp32;
    let e = server.infer(wrong_type).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArg);
    assert_eq!(
        e.message(),
        "inference input 'INPUT0' data-type is 'FP32', but model 'identity' expects 'INT32'"
    );
}

#[tokio::test]
async fn the_dynamic_batcher_runs_concurrent_requests_as_one_execution() {
    let dir = repo();
    let server = start(dir.path(), ModelControlMode::None, &[]);
    let calls: Vec<_> = (0..4)
        .map(|i| {
            let server = server.clone();
            tokio::spawn(
                async move { server.infer(request("batched", vec![1, 2], &[i, -i])).await },
            )
        })
        .collect();
    for (i, call) in calls.into_iter().enumerate() {
        let answer = call.await.unwrap().unwrap();
        assert_eq!(answer.outputs[0].data, int32(&[i as i32, -(i as i32)]), "its own rows");
    }
    let stats = &server.statistics(Some("batched"), None).unwrap()[0].stats;
    assert_eq!(stats.inference_count, 4);
    assert_eq!(stats.execution_count, 1, "the preferred batch of 4 ran once: {:?}", stats.batch);
    assert_eq!(stats.batch.keys().copied().collect::<Vec<_>>(), vec![4]);
}

#[tokio::test]
async fn a_decoupled_model_streams_its_responses_and_refuses_unary_calls() {
    let dir = repo();
    let server = start(dir.path(), ModelControlMode::None, &[]);
    let square = |n: i32| InferRequest {
        model_name: "square_int32".into(),
        inputs: vec![InputTensor::new("IN", DataType::Int32, vec![1], int32(&[n]))],
        ..Default::default()
    };
    let e = server.infer_unary(square(2), "HTTP end point").await.unwrap_err();
    assert_eq!(e.code(), Code::Unsupported);
    assert_eq!(
        e.message(),
        "HTTP end point doesn't support models with decoupled transaction policy"
    );
    let mut stream = server.infer_stream(square(3)).await.unwrap();
    assert!(stream.decoupled());
    let mut got = Vec::new();
    while let Some(item) = stream.next().await {
        let item = item.unwrap();
        got.push((item.response.map(|r| r.outputs[0].data.clone()), item.last));
    }
    let three = (Some(int32(&[3])), false);
    assert_eq!(got, vec![three.clone(), three.clone(), three, (None, true)]);
    let stats = &server.statistics(Some("square_int32"), None).unwrap()[0].stats;
    assert_eq!(stats.responses.keys().copied().collect::<Vec<_>>(), vec![0, 1, 2]);
    assert_eq!(stats.success.count, 1, "one request");
}

#[tokio::test]
async fn explicit_model_control_loads_unloads_and_keeps_serving_on_a_bad_reload() {
    let dir = repo();
    let server = start(dir.path(), ModelControlMode::Explicit, &["identity"]);
    assert!(server.model_ready("identity", None).await.unwrap());
    assert!(!server.model_ready("batched", None).await.unwrap_or(false), "not loaded at startup");
    let s = server.clone();
    tokio::task::spawn_blocking(move || s.load_model("", "batched", LoadRequest::default()))
        .await
        .unwrap()
        .unwrap();
    assert!(server.model_ready("batched", None).await.unwrap());
    // A reload whose config fails keeps the served version.
    let bad = LoadRequest { config: Some(r#"{"backend": "nonesuch"}"#.into()), files: vec![] };
    let s = server.clone();
    let e = tokio::task::spawn_blocking(move || s.load_model("", "identity", bad)).await.unwrap();
    let e = e.unwrap_err();
    assert!(e.message().contains("backend 'nonesuch' is not supported"), "{e}");
    assert!(
        e.message().contains("identity, onnxruntime") || e.message().contains("identity, repeat"),
        "{e}"
    );
    assert!(server.infer(request("identity", vec![1, 2], &[5, 6])).await.is_ok(), "still served");
    let s = server.clone();
    tokio::task::spawn_blocking(move || s.unload_model("", "identity", false))
        .await
        .unwrap()
        .unwrap();
    let e = server.infer(request("identity", vec![1, 2], &[5, 6])).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e}");
    assert!(server.is_ready().unwrap(), "an unloaded model does not make the server unready");
}

#[tokio::test]
async fn a_request_whose_caller_goes_away_counts_as_cancelled() {
    let dir = repo();
    let server = start(dir.path(), ModelControlMode::None, &[]);
    let s = server.clone();
    let call = tokio::spawn(async move { s.infer(request("slow", vec![1, 2], &[1, 2])).await });
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    call.abort(); // the client went away while the instance works
    let _ = call.await;
    let stats = &server.statistics(Some("slow"), None).unwrap()[0].stats;
    assert_eq!((stats.success.count, stats.fail.count), (0, 1));
    assert_eq!(stats.failures, [0, 1, 0, 0], "REJECTED, CANCELED, BACKEND, OTHER");
}
