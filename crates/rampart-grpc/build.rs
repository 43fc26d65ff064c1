//! Generates the gRPC service (server side, and the client the in-process tests use) from our own `.proto` files with protox (no `protoc`). The
//! ModelConfig types come from `rampart-model-config`, not generated twice.
fn main() {
    println!("cargo:rerun-if-changed=proto/grpc_service.proto");
    println!("cargo:rerun-if-changed=proto/health.proto");
    println!("cargo:rerun-if-changed=../rampart-model-config/proto/model_config.proto");
    let fds = protox::compile(
        ["grpc_service.proto", "health.proto"],
        ["proto", "../rampart-model-config/proto"],
    )
    .expect("compile gRPC protos");
    let mut builder =
        tonic_prost_build::configure().build_client(true).build_server(true).bytes(".inference");
    // Every type of model_config.proto is the one rampart-model-config already generated.
    for file in fds.file.iter().filter(|f| f.name() == "model_config.proto") {
        let names = file
            .message_type
            .iter()
            .map(|m| m.name())
            .chain(file.enum_type.iter().map(|e| e.name()));
        for name in names {
            builder = builder.extern_path(
                format!(".inference.{name}"),
                format!("::rampart_model_config::pb::{name}"),
            );
        }
    }
    builder.compile_fds(fds).expect("generate gRPC code");
}
