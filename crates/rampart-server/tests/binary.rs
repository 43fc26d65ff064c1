//! Integration tests of the real `rampart` binary: startup on port 0, a request over a real socket, the
//! refusals of the command line, and graceful exit on SIGTERM. Uses the tract engine so no native library
//! is needed.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_rampart");

fn examples() -> String {
    format!("{}/../../examples/models", env!("CARGO_MANIFEST_DIR"))
}

fn spawn(extra: &[&str]) -> (Child, u16) {
    let mut child = Command::new(BIN)
        .arg(format!("--model-repository={}", examples()))
        .args([
            "--http-address=127.0.0.1",
            "--http-port=0",
            "--allow-grpc=false",
            "--allow-metrics",
            "false",
        ])
        .args(["--backend-config=onnxruntime,engine=tract"])
        .args(extra)
        .stderr(Stdio::piped())
        .spawn()
        .expect("start rampart");
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let port = loop {
        let line = lines.next().expect("rampart exited before listening").unwrap();
        if let Some(rest) = line.split("Started HTTPService at ").nth(1) {
            break rest.rsplit(':').next().unwrap().trim().parse::<u16>().unwrap();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (child, port)
}

fn get(port: u16, path: &str) -> (u16, String) {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .new_agent();
    let mut r = agent.get(&format!("http://127.0.0.1:{port}{path}")).call().unwrap();
    (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
}

fn sigterm(child: &Child) {
    let ok =
        Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success();
    assert!(ok);
}

#[test]
fn serves_on_port_zero_and_exits_cleanly_on_sigterm() {
    let (mut child, port) = spawn(&["--id=rampart-test"]);
    assert_eq!(get(port, "/v2/health/ready").0, 200);
    let (s, body) = get(port, "/v2");
    assert_eq!(s, 200);
    assert!(body.contains("\"name\":\"rampart-test\""), "{body}");
    sigterm(&child);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn command_line_refusals() {
    let run = |args: &[&str]| Command::new(BIN).args(args).output().unwrap();
    let out = run(&["--model-repository=/x", "--no-such-flag"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Usage"));
    let out = run(&[
        "--model-repository=/x",
        "--allow-sagemaker=true",
        "--sagemaker-safe-port-range=1-2",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not supported yet"));
    let out = run(&["--model-repository=/x", "--allow-vertex-ai=true"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("AIP_PREDICT_ROUTE"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out =
        run(&["--model-repository=/does/not/exist", "--allow-grpc=false", "--allow-metrics=false"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("error: creating server"));
}
