//! The gRPC hot path's weight, counted instead of timed (issue 19's regression guard, as
//! `rampart-http/tests/allocations.rs` for HTTP): heap allocations per `ModelInfer` call through tonic's
//! generated service (gRPC framing, prost decoding and encoding, Rampart's conversion and the core), in
//! process, without the HTTP/2 connection. The budget is today's count plus a small margin; lower it when a
//! change lowers the count.

use std::alloc::System;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use prost::Message;
use rampart_core::{Server, ServerOptions};
use rampart_grpc::GrpcOptions;
use rampart_grpc::pb;
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};
use tower::{Service, ServiceExt};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const BUDGET_IDENTITY: u64 = 42;

const IDENTITY: &str = r#"name: "builtin_identity"
backend: "identity"
max_batch_size: 8
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]
"#;

fn counts() -> u64 {
    let s = GLOBAL.stats();
    (s.allocations + s.reallocations) as u64
}

/// A `ModelInfer` call as perf_analyzer sends it: 64 bytes of FP32 in `raw_input_contents`.
fn frame() -> Bytes {
    let request = pb::ModelInferRequest {
        model_name: "builtin_identity".into(),
        inputs: vec![pb::model_infer_request::InferInputTensor {
            name: "INPUT0".into(),
            datatype: "FP32".into(),
            shape: vec![1, 16],
            ..Default::default()
        }],
        raw_input_contents: vec![Bytes::from(vec![1u8; 64])],
        ..Default::default()
    };
    let body = request.encode_to_vec();
    let mut framed = BytesMut::with_capacity(body.len() + 5);
    framed.put_u8(0);
    framed.put_u32(body.len() as u32);
    framed.put_slice(&body);
    framed.freeze()
}

/// One test function: the counter is global, so nothing else may run while it counts.
#[tokio::test(flavor = "current_thread")]
async fn allocations_per_model_infer_stay_within_budget() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("builtin_identity/1")).unwrap();
    std::fs::write(dir.path().join("builtin_identity/config.pbtxt"), IDENTITY).unwrap();
    let mut backends = rampart_types::Backends::new();
    rampart_builtin::register(&mut backends);
    let server = Server::start(ServerOptions {
        model_repositories: vec![dir.path().to_path_buf()],
        backends: Arc::new(backends),
        ..ServerOptions::default()
    })
    .expect("the built-in model loads");
    let (mut inference, _) = rampart_grpc::services(server, &GrpcOptions::default());
    let frame = frame();
    let request = || {
        http::Request::builder()
            .method("POST")
            .uri("/inference.GRPCInferenceService/ModelInfer")
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(Full::new(frame.clone()))
            .unwrap()
    };
    let rounds = 200u64;
    let mut best = u64::MAX;
    for run in 0..4 {
        let requests: Vec<_> = (0..rounds).map(|_| request()).collect();
        let before = counts();
        for r in requests {
            let response = ServiceExt::<http::Request<Full<Bytes>>>::ready(&mut inference)
                .await
                .unwrap()
                .call(r)
                .await
                .unwrap();
            let collected = response.into_body().collect().await.unwrap();
            let status = collected.trailers().and_then(|t| t.get("grpc-status")).cloned();
            assert_eq!(status.as_ref().map(|s| s.as_bytes()), Some(&b"0"[..]), "{status:?}");
            assert!(collected.to_bytes().len() > 64);
        }
        if run > 0 {
            best = best.min((counts() - before) / rounds);
        }
    }
    assert!(best > 0, "the counting allocator is not the global one");
    println!(
        "builtin_identity over gRPC, 64 B: {best} allocations per request (budget {BUDGET_IDENTITY})"
    );
    assert!(best <= BUDGET_IDENTITY, "{best} allocations per request, budget {BUDGET_IDENTITY}");
}
