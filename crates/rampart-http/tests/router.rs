//! In-process tests of the HTTP router (`oneshot`) over a real core serving examples/models with the tract
//! engine (no native library needed).

use std::path::PathBuf;
use std::sync::OnceLock;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use rampart_core::{Server, ServerOptions};
use rampart_http::{HttpOptions, router};
use serde_json::{Value, json};
use tower::ServiceExt;

fn server() -> Server {
    static S: OnceLock<Server> = OnceLock::new();
    S.get_or_init(|| {
        let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/models");
        let mut backends = rampart_types::Backends::new();
        backends.register("tract", std::sync::Arc::new(rampart_tract::TractEngine));
        Server::start(ServerOptions {
            model_repositories: vec![repo],
            backends: std::sync::Arc::new(backends),
            default_onnx_backend: "tract".into(),
            ..ServerOptions::default()
        })
        .expect("examples load with tract")
    })
    .clone()
}

async fn call(method: &str, uri: &str, body: Body, max: usize) -> (StatusCode, Vec<u8>) {
    let app = router(server(), HttpOptions { max_input_size: max, ..HttpOptions::default() });
    let resp =
        app.oneshot(Request::builder().method(method).uri(uri).body(body).unwrap()).await.unwrap();
    let status = resp.status();
    (status, resp.into_body().collect().await.unwrap().to_bytes().to_vec())
}

async fn json_call(method: &str, uri: &str, body: Value) -> (StatusCode, Value) {
    let (s, b) = call(method, uri, Body::from(body.to_string()), 1 << 20).await;
    (s, if b.is_empty() { Value::Null } else { serde_json::from_slice(&b).unwrap() })
}

#[tokio::test]
async fn health_and_metadata() {
    assert_eq!(call("GET", "/v2/health/live", Body::empty(), 1024).await.0, StatusCode::OK);
    assert_eq!(call("GET", "/v2/health/ready", Body::empty(), 1024).await.0, StatusCode::OK);
    let (s, md) = json_call("GET", "/v2/models/simple", Value::Null).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(md["inputs"][0]["shape"], json!([-1, 16]));
    assert_eq!(md["platform"], "onnxruntime_onnx");
}

#[tokio::test]
async fn json_infer_adds_and_subtracts() {
    let a: Vec<i32> = (0..16).collect();
    let b: Vec<i32> = vec![2; 16];
    let req = json!({"id": "r1", "inputs": [
        {"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": a},
        {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "data": b},
    ]});
    let (s, r) = json_call("POST", "/v2/models/simple/infer", req).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["id"], "r1");
    assert_eq!(r["outputs"][0]["data"][3], 5);
    assert_eq!(r["outputs"][1]["data"][3], 1);
}

#[tokio::test]
async fn errors_use_the_code_table() {
    let (s, r) = json_call("GET", "/v2/models/nope", Value::Null).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(r["error"], "Request for unknown model: 'nope' is not found");
    let (s, r) = json_call("DELETE", "/v2/health/live", Value::Null).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r["error"], "Method Not Allowed");
    let (s, r) = json_call("GET", "/v2/nothing/here", Value::Null).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(r["error"], "Not Found");
    let (s, b) = call("POST", "/v2/models/simple/infer", Body::from("{not json"), 1024).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&b).contains("failed to parse the request JSON buffer"));
    let (s, b) = call("POST", "/v2/models/simple/infer", Body::from(vec![b' '; 2048]), 1024).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let r: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(
        r["error"],
        "request JSON size of more than 1024 bytes exceeds the maximum allowed input size of 1024 bytes. Use --http-max-input-size to increase the limit."
    );
    let (s, r) = json_call("POST", "/v2/repository/index", json!({"ready": 1})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(r["error"], "Invalid value for 'ready': expected a boolean");
}
