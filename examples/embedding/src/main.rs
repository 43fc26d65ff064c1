//! Rampart embedded in an application (docs/deployment.md, "Embedding"): open a model repository, list its
//! models, read a model's metadata, run an inference, read the statistics, shut down — in process, with no
//! network listener. The `rampart` binary is built on the same `rampart_core::Server` API.
//!
//! Run: `cargo run --release -p rampart-embedding-example -- examples/models`
//! It exits non-zero when a result is not what the `simple` model must compute (CI runs it).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use rampart_core::{InferRequest, InputTensor, RequestedOutput, Server, ServerOptions};
use rampart_types::DataType;

fn int32_bytes(values: &[i32]) -> Bytes {
    values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>().into()
}

fn int32_values(data: &[u8]) -> Vec<i32> {
    data.chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let repo = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "examples/models".into()));

    // 1. Open the repository: every model is loaded (model control mode `none`), here with tract.
    // The engines this application runs models on, by backend name.
    let mut backends = rampart_types::Backends::new();
    backends.register("tract", std::sync::Arc::new(rampart_tract::TractEngine));
    let options = ServerOptions {
        model_repositories: vec![repo],
        backends: std::sync::Arc::new(backends),
        default_onnx_backend: "tract".into(),
        ..Default::default()
    };
    let server = match Server::start(options) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };

    // 2. List the models.
    for m in server.repository_index(false) {
        let state = m.state.map_or("(not loaded)", |s| s.as_str());
        println!("model {} version {} {state} {}", m.name, m.version, m.reason);
    }

    // 3. A model's metadata.
    let meta = match server.model_metadata("simple", None) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("no model 'simple' in the repository: {e}");
            return ExitCode::FAILURE;
        }
    };
    for t in meta.inputs.iter().chain(&meta.outputs) {
        println!("simple: {} {} {:?}", t.name, t.datatype, t.shape);
    }

    // 4. An inference: OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1.
    let a: Vec<i32> = (0..16).collect();
    let b: Vec<i32> = vec![3; 16];
    let request = InferRequest {
        model_name: "simple".into(),
        inputs: vec![
            InputTensor::new("INPUT0", DataType::Int32, vec![1, 16], int32_bytes(&a)),
            InputTensor::new("INPUT1", DataType::Int32, vec![1, 16], int32_bytes(&b)),
        ],
        outputs: vec![RequestedOutput::new("OUTPUT0"), RequestedOutput::new("OUTPUT1")],
        ..Default::default()
    };
    let response = match server.infer(request).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("inference failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    let sum = int32_values(&response.outputs[0].data);
    let difference = int32_values(&response.outputs[1].data);
    println!("simple version {}: OUTPUT0 {sum:?}", response.model_version);
    println!("simple version {}: OUTPUT1 {difference:?}", response.model_version);
    let want_sum: Vec<i32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
    let want_difference: Vec<i32> = a.iter().zip(&b).map(|(x, y)| x - y).collect();
    if sum != want_sum || difference != want_difference {
        eprintln!("wrong results: expected {want_sum:?} and {want_difference:?}");
        return ExitCode::FAILURE;
    }

    // 5. Statistics: the one inference is counted.
    let stats = match server.statistics(Some("simple"), None) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("statistics: {e}");
            return ExitCode::FAILURE;
        }
    };
    let count: u64 = stats.iter().map(|s| s.stats.inference_count).sum();
    println!(
        "simple: inference_count {count}, success {}",
        stats.iter().map(|s| s.stats.success.count).sum::<u64>()
    );
    if count != 1 {
        eprintln!("expected one counted inference, got {count}");
        return ExitCode::FAILURE;
    }

    // 6. Shut down: new requests are refused, in-flight ones finish (none here).
    let left = server.shutdown(Duration::from_secs(5)).await;
    println!("shut down ({left} requests left in flight)");
    if left == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
