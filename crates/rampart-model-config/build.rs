//! Compiles `proto/model_config.proto` with protox (pure Rust, no `protoc`): prost types for the code, and the
//! encoded descriptor set for prost-reflect's text-format and JSON handling.
use prost::Message;

fn main() {
    println!("cargo:rerun-if-changed=proto/model_config.proto");
    let fds = protox::compile(["model_config.proto"], ["proto"])
        .expect("compile proto/model_config.proto");
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").unwrap());
    std::fs::write(out.join("model_config.fds"), fds.encode_to_vec()).unwrap();
    prost_build::Config::new().compile_fds(fds).expect("generate ModelConfig types");
}
