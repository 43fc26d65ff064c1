//! Reading a model's `config.pbtxt`, filling in what Triton fills in, auto-completing from the model file's
//! signature, and checking the result against that signature.

pub(crate) mod ensemble;

use std::path::Path;

use rampart_model_config::pb::{
    self, model_instance_group::Kind, model_version_policy::PolicyChoice,
};
use rampart_model_config::{ModelConfig, parse_text};
use rampart_types::{DataType, Error, IoSpec, ModelSignature, Result};

/// `max_batch_size` that auto-complete gives a model whose inputs and outputs all have a variable first
/// dimension (Triton's `--backend-config=default-max-batch-size`, default 4).
pub const AUTOCOMPLETE_DEFAULT_MAX_BATCH_SIZE: i32 = 4;
pub(crate) const DEFAULT_MODEL_FILENAME: &str = "model.onnx";

pub(crate) struct RawConfig {
    pub config: ModelConfig,
    /// The text set `max_batch_size` (so auto-complete leaves it alone).
    pub explicit_max_batch: bool,
}

/// Reads `<dir>/config.pbtxt`. Without the file, an empty config is returned unless auto-complete is off.
pub(crate) fn read(dir: &Path, name: &str, autocomplete: bool) -> Result<RawConfig> {
    let path = dir.join("config.pbtxt");
    let raw = match std::fs::read(&path) {
        Ok(bytes) => {
            let text = String::from_utf8(bytes).map_err(|_| {
                Error::invalid_arg(format!("model '{name}': {} is not valid UTF-8", path.display()))
            })?;
            let parsed = parse_text(&text).map_err(|e| {
                Error::invalid_arg(format!("model '{name}': {}: {e}", path.display()))
            })?;
            RawConfig {
                explicit_max_batch: parsed.has_field("max_batch_size"),
                config: parsed.config,
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if !autocomplete {
                return Err(Error::invalid_arg(format!(
                    "model '{name}': {} not found, and auto-complete is disabled (--disable-auto-complete-config)",
                    path.display()
                )));
            }
            RawConfig { config: ModelConfig::default(), explicit_max_batch: false }
        }
        Err(e) => {
            return Err(Error::internal(format!(
                "model '{name}': cannot read {}: {e}",
                path.display()
            )));
        }
    };
    let mut raw = raw;
    let c = &raw.config;
    if c.backend.is_empty() && c.platform.is_empty() && holds_only_model_py(dir) {
        // As Triton's auto-fill: a model whose version folders hold model.py (and no model.onnx) is Python.
        raw.config.backend = "python".into();
    }
    // The directory's own name is accepted too: a model loaded from outside the repositories under another
    // name (the SageMaker multi-model load) keeps the config its directory has.
    let dir_name = dir.file_name().and_then(|n| n.to_str()).unwrap_or(name);
    finish_raw(raw, name, dir_name, &path)
}

/// Whether some version folder of `dir` holds `model.py` and none holds `model.onnx`.
fn holds_only_model_py(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else { return false };
    let versions: Vec<std::path::PathBuf> =
        entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect();
    versions.iter().any(|v| v.join("model.py").is_file())
        && !versions.iter().any(|v| v.join("model.onnx").exists())
}

/// A `config` override of a load request: ModelConfig as JSON (docs/protocol.md, "Model control"),
/// checked like a config.pbtxt.
pub(crate) fn from_json(json: &str, dir: &Path, name: &str) -> Result<RawConfig> {
    let invalid =
        |e: &dyn std::fmt::Display| Error::invalid_arg(format!("Invalid config override: {e}"));
    let value: serde_json::Value = serde_json::from_str(json).map_err(|e| invalid(&e))?;
    let explicit_max_batch = value.get("max_batch_size").is_some();
    let config = rampart_model_config::parse_json(json).map_err(|e| invalid(&e))?;
    finish_raw(RawConfig { config, explicit_max_batch }, name, name, &dir.join("<config override>"))
}

fn finish_raw(mut raw: RawConfig, name: &str, dir_name: &str, path: &Path) -> Result<RawConfig> {
    let c = &mut raw.config;
    if !c.name.is_empty() && c.name != name && c.name != dir_name {
        return Err(Error::invalid_arg(format!(
            "model '{name}': {}: field 'name' is '{}' but must match the model directory name '{name}'",
            path.display(),
            c.name
        )));
    }
    c.name = name.to_string();
    if c.max_batch_size < 0 {
        return Err(Error::invalid_arg(format!(
            "model '{name}': {}: field 'max_batch_size' must be >= 0, got {}",
            path.display(),
            c.max_batch_size
        )));
    }
    ensemble::check_static(c)?;
    fill_defaults(c);
    validate_static(c, path)?;
    Ok(raw)
}

/// What Triton fills into every config regardless of auto-complete.
fn fill_defaults(c: &mut ModelConfig) {
    if c.platform.is_empty() && (c.backend.is_empty() || c.backend == "onnxruntime") {
        c.platform = "onnxruntime_onnx".into();
    }
    if c.backend.is_empty() && c.platform == "onnxruntime_onnx" {
        c.backend = "onnxruntime".into();
    }
    if c.platform == ensemble::PLATFORM {
        // An ensemble gets only its version policy (and, once linked, its transaction policy).
        if c.version_policy.as_ref().and_then(|p| p.policy_choice.as_ref()).is_none() {
            c.version_policy = Some(pb::ModelVersionPolicy {
                policy_choice: Some(PolicyChoice::Latest(pb::model_version_policy::Latest {
                    num_versions: 1,
                })),
            });
        }
        return;
    }
    if c.default_model_filename.is_empty() {
        c.default_model_filename =
            if c.backend == "python" { "model.py" } else { DEFAULT_MODEL_FILENAME }.into();
    }
    if c.version_policy.as_ref().and_then(|p| p.policy_choice.as_ref()).is_none() {
        c.version_policy = Some(pb::ModelVersionPolicy {
            policy_choice: Some(PolicyChoice::Latest(pb::model_version_policy::Latest {
                num_versions: 1,
            })),
        });
    }
    if c.instance_group.is_empty() {
        c.instance_group.push(pb::ModelInstanceGroup { count: 1, ..Default::default() });
    }
    let model = c.name.clone();
    for (i, g) in c.instance_group.iter_mut().enumerate() {
        if g.name.is_empty() {
            g.name = format!("{model}_{i}");
        }
        if g.count == 0 {
            g.count = 1;
        }
        if g.kind == Kind::Auto as i32 {
            g.kind = Kind::Cpu as i32;
        }
    }
}

/// Checks that need no model file.
fn validate_static(c: &ModelConfig, path: &Path) -> Result<()> {
    let name = &c.name;
    let bad = |field: String, what: String| {
        Error::invalid_arg(format!("model '{name}': {}: {field}: {what}", path.display()))
    };
    if c.default_model_filename.contains('/') || c.default_model_filename == ".." {
        return Err(bad("default_model_filename".into(), "must be a plain file name".into()));
    }
    for (i, g) in c.instance_group.iter().enumerate() {
        if g.count < 0 {
            return Err(bad(
                format!("instance_group[{i}].count"),
                format!("must be >= 1, got {}", g.count),
            ));
        }
        if g.count > 64 {
            return Err(bad(
                format!("instance_group[{i}].count"),
                format!("at most 64 instances are supported, got {}", g.count),
            ));
        }
        if g.kind == Kind::Gpu as i32 {
            return Err(bad(
                format!("instance_group[{i}].kind"),
                "KIND_GPU is not supported: this server has no GPU support; use KIND_CPU".into(),
            ));
        }
    }
    if let Some(PolicyChoice::Latest(l)) =
        c.version_policy.as_ref().and_then(|p| p.policy_choice.as_ref())
        && l.num_versions == 0
    {
        return Err(bad("version_policy.latest.num_versions".into(), "must be >= 1".into()));
    }
    for (kind, list) in [
        ("input", io_names(&c.input)),
        ("output", c.output.iter().map(|o| (o.name.as_str(), o.data_type, &o.dims)).collect()),
    ] {
        let mut seen = std::collections::HashSet::new();
        for (i, (n, dt, dims)) in list.iter().enumerate() {
            if n.is_empty() {
                return Err(bad(format!("{kind}[{i}].name"), "must not be empty".into()));
            }
            if !seen.insert(*n) {
                return Err(bad(format!("{kind}[{i}].name"), format!("duplicate {kind} '{n}'")));
            }
            if DataType::from_config_enum(*dt).is_none() {
                return Err(bad(
                    format!("{kind} '{n}' data_type"),
                    "must be set to a valid TYPE_*".into(),
                ));
            }
            if let Some(d) = dims.iter().find(|&&d| d == 0 || d < -1) {
                return Err(bad(
                    format!("{kind} '{n}' dims"),
                    format!("dimension {d} is invalid; use a positive size or -1"),
                ));
            }
        }
    }
    for i in &c.input {
        if let Some(r) = &i.reshape {
            check_reshape(name, path, "input", &i.name, &i.dims, &r.shape)?;
        }
    }
    for o in &c.output {
        if let Some(r) = &o.reshape {
            check_reshape(name, path, "output", &o.name, &o.dims, &r.shape)?;
        }
    }
    Ok(())
}

fn io_names(inputs: &[pb::ModelInput]) -> Vec<(&str, i32, &Vec<i64>)> {
    inputs.iter().map(|i| (i.name.as_str(), i.data_type, &i.dims)).collect()
}

fn check_reshape(
    model: &str,
    path: &Path,
    kind: &str,
    name: &str,
    dims: &[i64],
    shape: &[i64],
) -> Result<()> {
    let fixed = |v: &[i64]| v.iter().all(|&d| d > 0);
    if fixed(dims) && fixed(shape) {
        let a: i64 = dims.iter().product();
        let b: i64 = shape.iter().product();
        if a != b {
            return Err(Error::invalid_arg(format!(
                "model '{model}': {}: {kind} '{name}' reshape: {shape:?} has {b} elements but dims {dims:?} have {a}",
                path.display()
            )));
        }
    }
    if shape.iter().filter(|&&d| d == -1).count() > 1 || shape.iter().any(|&d| d == 0 || d < -1) {
        return Err(Error::invalid_arg(format!(
            "model '{model}': {}: {kind} '{name}' reshape: shape {shape:?} is invalid",
            path.display()
        )));
    }
    Ok(())
}

/// `model_transaction_policy { decoupled: true }`: zero or more responses per request.
pub(crate) fn is_decoupled(c: &ModelConfig) -> bool {
    c.model_transaction_policy.as_ref().is_some_and(|p| p.decoupled)
}

/// The inputs and outputs a config declares, as an engine sees them: the batch dimension (-1) first when
/// the model batches, `reshape` not applied (engines without a model file answer this as their signature).
pub(crate) fn declared_signature(c: &ModelConfig) -> ModelSignature {
    let full = |dims: &[i64]| -> Vec<i64> {
        let batch: &[i64] = if c.max_batch_size > 0 { &[-1] } else { &[] };
        batch.iter().chain(dims).copied().collect()
    };
    let spec = |name: &str, dt: i32, dims: &[i64], optional: bool| IoSpec {
        name: name.to_string(),
        datatype: DataType::from_config_enum(dt)
            .ok_or_else(|| format!("data type {dt} is invalid")),
        dims: full(dims),
        optional,
    };
    ModelSignature {
        inputs: c.input.iter().map(|i| spec(&i.name, i.data_type, &i.dims, i.optional)).collect(),
        outputs: c.output.iter().map(|o| spec(&o.name, o.data_type, &o.dims, false)).collect(),
    }
}

fn sig_type(model: &str, s: &IoSpec) -> Result<DataType> {
    s.datatype
        .clone()
        .map_err(|why| Error::unsupported(format!("model '{model}': tensor '{}': {why}", s.name)))
}

/// Fills inputs, outputs and `max_batch_size` from the model file's signature (unless `autocomplete` is off),
/// then checks the config against it.
pub(crate) fn complete_and_validate(
    raw: RawConfig,
    sig: &ModelSignature,
    autocomplete: bool,
) -> Result<ModelConfig> {
    let RawConfig { mut config, explicit_max_batch } = raw;
    let model = config.name.clone();
    if autocomplete {
        let batchable =
            |v: &[IoSpec]| v.iter().filter(|s| !s.optional).all(|s| s.dims.first() == Some(&-1));
        let can_batch = !sig.inputs.is_empty() && batchable(&sig.inputs) && batchable(&sig.outputs);
        if !explicit_max_batch && config.max_batch_size == 0 && can_batch {
            // Only when the config's own dims (if any) leave the batch dimension out.
            let rank_ok = config.input.iter().all(|i| {
                let s = sig.inputs.iter().find(|s| s.name == i.name);
                i.reshape.is_some() || s.is_none_or(|s| i.dims.len() + 1 == s.dims.len())
            }) && config.output.iter().all(|o| {
                let s = sig.outputs.iter().find(|s| s.name == o.name);
                o.reshape.is_some() || s.is_none_or(|s| o.dims.len() + 1 == s.dims.len())
            });
            if rank_ok {
                config.max_batch_size = AUTOCOMPLETE_DEFAULT_MAX_BATCH_SIZE;
            }
        }
        let skip = usize::from(config.max_batch_size > 0);
        if config.input.is_empty() {
            for s in sig.inputs.iter().filter(|s| !s.optional) {
                config.input.push(pb::ModelInput {
                    name: s.name.clone(),
                    data_type: sig_type(&model, s)?.config_enum(),
                    dims: s.dims.iter().skip(skip).copied().collect(),
                    ..Default::default()
                });
            }
        }
        if config.output.is_empty() {
            for s in &sig.outputs {
                config.output.push(pb::ModelOutput {
                    name: s.name.clone(),
                    data_type: sig_type(&model, s)?.config_enum(),
                    dims: s.dims.iter().skip(skip).copied().collect(),
                    ..Default::default()
                });
            }
        }
    }
    validate_against(&config, sig)?;
    Ok(config)
}

fn validate_against(c: &ModelConfig, sig: &ModelSignature) -> Result<()> {
    let model = &c.name;
    // Python models may have no inputs or outputs (Triton loads them; model code decides what it answers).
    if (c.input.is_empty() || c.output.is_empty()) && c.backend != "python" {
        return Err(Error::invalid_arg(format!(
            "model '{model}': config.pbtxt must declare 'input' and 'output' when auto-complete is disabled"
        )));
    }
    let check = |kind: &str,
                 name: &str,
                 dt: i32,
                 dims: &[i64],
                 reshape: Option<&pb::ModelTensorReshape>,
                 specs: &[IoSpec]|
     -> Result<()> {
        let allowed = || specs.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ");
        let Some(s) = specs.iter().find(|s| s.name == name) else {
            // An optional input whose default the engine folded into the model (tract) is served without it.
            if kind == "input" && c.input.iter().any(|i| i.name == name && i.optional) {
                return Ok(());
            }
            return Err(Error::invalid_arg(format!(
                "model '{model}': unexpected inference {kind} '{name}' in config.pbtxt, allowed {kind}s are: {}",
                allowed()
            )));
        };
        let want = sig_type(model, s)?;
        if DataType::from_config_enum(dt) != Some(want) {
            let got =
                DataType::from_config_enum(dt).map(|d| d.config_name()).unwrap_or("TYPE_INVALID");
            return Err(Error::invalid_arg(format!(
                "model '{model}': unable to load model, configuration expects datatype {got} for {kind} '{name}', model provides {}",
                want.config_name()
            )));
        }
        let mut full: Vec<i64> = reshape.map(|r| r.shape.clone()).unwrap_or_else(|| dims.to_vec());
        if c.max_batch_size > 0 {
            full.insert(0, -1);
        }
        let compatible = full.len() == s.dims.len()
            && full.iter().zip(&s.dims).all(|(&cfg, &m)| m == -1 || cfg == m);
        if !compatible {
            return Err(Error::invalid_arg(format!(
                "model '{model}': {kind} '{name}': the model expects shape {:?} but the config gives {full:?} (max_batch_size {}{})",
                s.dims,
                c.max_batch_size,
                if c.max_batch_size > 0 { ", batch dimension prepended" } else { "" }
            )));
        }
        Ok(())
    };
    for i in &c.input {
        check("input", &i.name, i.data_type, &i.dims, i.reshape.as_ref(), &sig.inputs)?;
    }
    for o in &c.output {
        check("output", &o.name, o.data_type, &o.dims, o.reshape.as_ref(), &sig.outputs)?;
    }
    for s in sig.inputs.iter().filter(|s| !s.optional) {
        if !c.input.iter().any(|i| i.name == s.name) {
            return Err(Error::invalid_arg(format!(
                "model '{model}': the model requires input '{}' which config.pbtxt does not declare",
                s.name
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, dt: DataType, dims: &[i64]) -> IoSpec {
        IoSpec { name: name.into(), datatype: Ok(dt), dims: dims.to_vec(), optional: false }
    }

    fn sig() -> ModelSignature {
        ModelSignature {
            inputs: vec![spec("INPUT0", DataType::Int32, &[-1, 16])],
            outputs: vec![spec("OUTPUT0", DataType::Int32, &[-1, 16])],
        }
    }

    fn raw(text: &str) -> RawConfig {
        let p = parse_text(text).unwrap();
        let mut c = p.config.clone();
        c.name = "m".into();
        fill_defaults(&mut c);
        RawConfig { explicit_max_batch: p.has_field("max_batch_size"), config: c }
    }

    #[test]
    fn autocomplete_fills_io_and_batch() {
        let c = complete_and_validate(raw(""), &sig(), true).unwrap();
        assert_eq!(c.max_batch_size, AUTOCOMPLETE_DEFAULT_MAX_BATCH_SIZE);
        assert_eq!(c.input[0].dims, vec![16]);
        assert_eq!(c.input[0].data_type, DataType::Int32.config_enum());
        assert_eq!(c.backend, "onnxruntime");
        assert_eq!(c.instance_group[0].name, "m_0");
    }

    #[test]
    fn explicit_zero_batch_keeps_full_dims() {
        let c = complete_and_validate(
            raw(
                "max_batch_size: 0 input [{name: \"INPUT0\" data_type: TYPE_INT32 dims: [-1, 16]}]",
            ),
            &sig(),
            true,
        )
        .unwrap();
        assert_eq!(c.max_batch_size, 0);
        assert_eq!(c.output[0].dims, vec![-1, 16]);
    }

    #[test]
    fn mismatches_are_named() {
        let e = complete_and_validate(
            raw("max_batch_size: 8 input [{name: \"INPUT0\" data_type: TYPE_FP32 dims: [16]}]"),
            &sig(),
            true,
        )
        .unwrap_err();
        assert!(e.message().contains("TYPE_FP32") && e.message().contains("INPUT0"), "{e}");
        let e = complete_and_validate(
            raw("max_batch_size: 8 input [{name: \"X\" data_type: TYPE_INT32 dims: [16]}]"),
            &sig(),
            true,
        )
        .unwrap_err();
        assert!(e.message().contains("'X'") && e.message().contains("INPUT0"), "{e}");
        let e = complete_and_validate(
            raw("max_batch_size: 8 input [{name: \"INPUT0\" data_type: TYPE_INT32 dims: [15]}]"),
            &sig(),
            true,
        )
        .unwrap_err();
        assert!(e.message().contains("shape"), "{e}");
        let e = complete_and_validate(raw(""), &sig(), false).unwrap_err();
        assert!(e.message().contains("auto-complete"), "{e}");
    }
}
