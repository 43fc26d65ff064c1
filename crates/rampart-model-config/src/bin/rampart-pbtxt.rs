//! Test oracle helper: parses a `config.pbtxt` with Rampart's parser and writes the binary protobuf
//! encoding of the resulting ModelConfig to stdout (used by the differential tests against Triton's own
//! `model_config_pb2`). With `--json` it prints the JSON the config endpoint would serve.
use std::io::Write;
use std::process::ExitCode;

use prost::Message;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (json, path) = match args.as_slice() {
        [p] => (false, p),
        [flag, p] if flag == "--json" => (true, p),
        _ => {
            eprintln!("usage: rampart-pbtxt [--json] <config.pbtxt>");
            return ExitCode::from(2);
        }
    };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{path}: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rampart_model_config::parse_text(&text) {
        Ok(parsed) => {
            let out = if json {
                let mut s = rampart_model_config::to_json(&parsed.config).to_string();
                s.push('\n');
                s.into_bytes()
            } else {
                parsed.config.encode_to_vec()
            };
            std::io::stdout().write_all(&out).expect("write stdout");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{path}: {e}");
            ExitCode::FAILURE
        }
    }
}
