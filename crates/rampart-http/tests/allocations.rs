//! The hot path's weight, counted instead of timed (issue 19's regression guard): heap allocations per
//! `/infer` request through the real router and core, in process. A counting global allocator
//! (`stats_alloc`) sees every allocation of this test binary; each row sends the same request many times and divides. Counts do not
//! depend on the machine's speed, so a change that makes the path heavier fails here on any machine.
//!
//! The budgets are today's counts plus a small margin: when a change lowers a count, lower its budget in
//! the same commit (docs/performance.md, "Allocations per request", records each step).

use std::alloc::System;
use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use rampart_core::{Server, ServerOptions};
use rampart_http::{HttpOptions, router};
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};
use tower::ServiceExt;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Allocations (reallocations count as one each) and bytes allocated so far.
fn counts() -> (u64, u64) {
    let s = GLOBAL.stats();
    (
        (s.allocations + s.reallocations) as u64,
        (s.bytes_allocated + s.bytes_reallocated.max(0) as usize) as u64,
    )
}

const IDENTITY: &str = r#"name: "builtin_identity"
backend: "identity"
max_batch_size: 8
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]
"#;

/// A core serving examples/models on tract and `builtin_identity` on the built-in identity backend.
fn server(extra: &std::path::Path) -> Server {
    let examples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/models");
    std::fs::create_dir_all(extra.join("builtin_identity/1")).unwrap();
    std::fs::write(extra.join("builtin_identity/config.pbtxt"), IDENTITY).unwrap();
    let mut backends = rampart_types::Backends::new();
    backends.register("tract", Arc::new(rampart_tract::TractEngine));
    rampart_builtin::register(&mut backends);
    Server::start(ServerOptions {
        model_repositories: vec![examples, extra.to_path_buf()],
        backends: Arc::new(backends),
        default_onnx_backend: "tract".into(),
        ..ServerOptions::default()
    })
    .expect("the models load")
}

/// `<uri>:<header length>` (empty: no `Inference-Header-Content-Length`) and the body.
type Target = (String, Vec<u8>);

/// An `/infer` request as perf_analyzer sends it: a JSON header, binary inputs after it, binary outputs.
fn binary_request(
    model: &str,
    inputs: &[(&str, &str, usize)],
    outputs: &[&str],
) -> (String, Vec<u8>) {
    let mut header = String::from("{\"inputs\":[");
    let mut data = Vec::new();
    for (i, (name, datatype, bytes)) in inputs.iter().enumerate() {
        let sep = if i > 0 { "," } else { "" };
        let elements = bytes / 4;
        header += &format!(
            "{sep}{{\"name\":\"{name}\",\"shape\":[1,{elements}],\"datatype\":\"{datatype}\",\
             \"parameters\":{{\"binary_data_size\":{bytes}}}}}"
        );
        data.extend((0..*bytes).map(|b| (b % 7) as u8));
    }
    header += "],\"outputs\":[";
    for (i, name) in outputs.iter().enumerate() {
        let sep = if i > 0 { "," } else { "" };
        header += &format!("{sep}{{\"name\":\"{name}\",\"parameters\":{{\"binary_data\":true}}}}");
    }
    header += "]}";
    let mut body = header.clone().into_bytes();
    body.extend(data);
    (format!("/v2/models/{model}/infer:{}", header.len()), body)
}

/// `/infer` with a JSON body (`data` arrays), as tritonclient sends without binary data.
fn json_request() -> Target {
    let a: Vec<String> = (0..16).map(|i| i.to_string()).collect();
    let body = format!(
        "{{\"inputs\":[{{\"name\":\"INPUT0\",\"shape\":[1,16],\"datatype\":\"INT32\",\"data\":[{0}]}},\
         {{\"name\":\"INPUT1\",\"shape\":[1,16],\"datatype\":\"INT32\",\"data\":[{0}]}}]}}",
        a.join(",")
    );
    ("/v2/models/simple/infer:".into(), body.into_bytes())
}

/// Allocations and bytes per request: `rounds` requests after a warm-up, the fewest of three runs (a
/// background allocation, such as a timer wheel growing, lands in one run, not in all three).
async fn per_request(app: &axum::Router, target: &str, body: &[u8]) -> (u64, u64) {
    let (uri, header_len) = target.split_once(':').unwrap();
    let request = || {
        let mut b = Request::builder().method("POST").uri(uri);
        if !header_len.is_empty() {
            b = b.header("Inference-Header-Content-Length", header_len);
        }
        b.body(Body::from(body.to_vec())).unwrap()
    };
    let rounds = 200u64;
    let mut best = (u64::MAX, u64::MAX);
    for run in 0..4 {
        let requests: Vec<_> = (0..rounds).map(|_| request()).collect();
        let (a0, b0) = counts();
        for r in requests {
            let resp = app.clone().oneshot(r).await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK, "{uri}");
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            assert!(!body.is_empty());
        }
        let (a1, b1) = counts();
        // The first run warms the path up (lazy statistics rows, caches of the router).
        if run > 0 {
            best = best.min(((a1 - a0) / rounds, (b1 - b0) / rounds));
        }
    }
    best
}

/// One test function: the counter is global, so nothing else may run while it counts.
#[tokio::test(flavor = "current_thread")]
async fn allocations_per_request_stay_within_budget() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path());
    let app = router(server, HttpOptions::default());
    // (row, request, budget in allocations per request)
    let rows: [(&str, Target, u64); 3] = [
        (
            "builtin_identity, binary, 64 B",
            binary_request("builtin_identity", &[("INPUT0", "FP32", 64)], &["OUTPUT0"]),
            BUDGET_IDENTITY_BINARY,
        ),
        (
            "simple (tract), binary, 2 × 64 B",
            binary_request(
                "simple",
                &[("INPUT0", "INT32", 64), ("INPUT1", "INT32", 64)],
                &["OUTPUT0", "OUTPUT1"],
            ),
            BUDGET_SIMPLE_BINARY,
        ),
        ("simple (tract), JSON", json_request(), BUDGET_SIMPLE_JSON),
    ];
    let mut report = String::new();
    let mut over = Vec::new();
    for (row, (target, body), budget) in &rows {
        let (allocations, bytes) = per_request(&app, target, body).await;
        assert!(allocations > 0, "the counting allocator is not the global one");
        report += &format!(
            "{row}: {allocations} allocations, {bytes} bytes per request (budget {budget})\n"
        );
        if allocations > *budget {
            over.push(*row);
        }
    }
    println!("{report}");
    assert!(over.is_empty(), "over budget: {over:?}\n{report}");
}

const BUDGET_IDENTITY_BINARY: u64 = 53;
const BUDGET_SIMPLE_BINARY: u64 = 85;
const BUDGET_SIMPLE_JSON: u64 = 91;
