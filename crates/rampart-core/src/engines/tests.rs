//! Which backend a config picks.

use super::*;

fn config(platform: &str, backend: &str, engine: Option<&str>) -> ModelConfig {
    let mut c =
        ModelConfig { platform: platform.into(), backend: backend.into(), ..Default::default() };
    if let Some(e) = engine {
        let value = rampart_model_config::pb::ModelParameter { string_value: e.into() };
        c.parameters.insert("engine".into(), value);
    }
    c
}

#[test]
fn onnx_models_use_the_default_or_their_engine_parameter() {
    assert_eq!(backend_name(&config("", "", None), "tract").unwrap(), "tract");
    assert_eq!(backend_name(&config("onnxruntime_onnx", "", None), "x").unwrap(), "x");
    assert_eq!(backend_name(&config("", "onnxruntime", Some("tract")), "x").unwrap(), "tract");
    let bad = backend_name(&config("", "", Some("gpu")), "x").unwrap_err();
    assert_eq!(bad.message(), "parameter 'engine' must be 'onnxruntime' or 'tract', got 'gpu'");
}

#[test]
fn other_backends_are_named_and_unknown_platforms_refused() {
    assert_eq!(backend_name(&config("", "identity", None), "x").unwrap(), "identity");
    assert_eq!(backend_name(&config("", "tract", Some("onnxruntime")), "x").unwrap(), "tract");
    let e = backend_name(&config("tensorflow_savedmodel", "", None), "x").unwrap_err();
    assert_eq!(e.code(), rampart_types::Code::Unsupported);
    assert!(e.message().starts_with("platform 'tensorflow_savedmodel' is not supported"), "{e}");
}
