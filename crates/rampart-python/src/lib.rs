//! Triton's Python backend for Rampart: `backend: "python"` models (`<version>/model.py` with a
//! `TritonPythonModel` class) run unchanged.
//!
//! Each model instance is one worker process running the interpreter on Rampart's own runtime
//! (`python/rampart_ipc.py`) and its implementation of `triton_python_backend_utils`
//! (`python/triton_python_backend_utils.py`). The server supervises it: a worker that crashes or stops
//! answering is killed, the requests it held fail with UNAVAILABLE naming the model, and it is restarted with
//! backoff. Requests reach it through `ipc.rs` (sealed anonymous memory, never a named region); `spawn.rs`
//! starts it with an environment of its own and resource limits.
#![deny(unsafe_code)]

mod bls;
mod env;
mod instance;
mod ipc;
mod pending;
mod readiness;
mod sandbox;
mod spawn;
mod worker;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rampart_types::{Engine, EngineInstance, Error, InstanceSpec, Result};
use serde_json::json;

use instance::{PythonInstance, Timeouts};
use worker::{Setup, Worker, path_str};

/// The runtime files every worker imports.
const RUNTIME: [(&str, &str); 3] = [
    ("rampart_ipc.py", include_str!("../python/rampart_ipc.py")),
    ("rampart_dlpack.py", include_str!("../python/rampart_dlpack.py")),
    ("triton_python_backend_utils.py", include_str!("../python/triton_python_backend_utils.py")),
];

/// Settings of the backend (`--backend-config=python,<key>=<value>`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PythonOptions {
    /// The interpreter (`interpreter=<path>`); by default the `python3` on the server's `PATH`.
    pub interpreter: Option<PathBuf>,
    /// The user workers run as (`user=<uid>[:<gid>]`); by default 65534:65534 when the server runs as root,
    /// else the server's own.
    pub user: Option<(u32, u32)>,
    /// Whether model code may load and unload models (`allow-model-control=true`; off by default).
    pub allow_model_control: bool,
}

impl PythonOptions {
    /// Applies one `--backend-config=python,<key>=<value>`; `Ok(false)` for a key this backend does not
    /// have.
    pub fn set(&mut self, key: &str, value: &str) -> std::result::Result<bool, String> {
        match key {
            "interpreter" => {
                if value.is_empty() {
                    return Err("'interpreter' needs a path".into());
                }
                self.interpreter = Some(PathBuf::from(value));
                Ok(true)
            }
            "user" => {
                let (uid, gid) = value.split_once(':').unwrap_or((value, value));
                match (uid.parse(), gid.parse()) {
                    (Ok(u), Ok(g)) => {
                        self.user = Some((u, g));
                        Ok(true)
                    }
                    _ => Err(format!("'user' must be <uid>[:<gid>] in numbers, got '{value}'")),
                }
            }
            "allow-model-control" => {
                self.allow_model_control = match value {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    _ => {
                        return Err(format!(
                            "'allow-model-control' must be true or false, got '{value}'"
                        ));
                    }
                };
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

/// The user a server running as root starts workers as.
const NOBODY: (u32, u32) = (65534, 65534);

/// What the start-up check prints: the interpreter's installation, one directory per line.
const PROBE: &str = "import sys, numpy\nassert sys.version_info >= (3, 9), 'Python 3.9 or newer'\n\
for p in {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}: print(p)";

/// The `python` backend.
pub struct PythonEngine {
    setup: Arc<Setup>,
    /// Holds the runtime files for the engine's lifetime.
    _runtime: Arc<tempfile::TempDir>,
    /// A Python-based backend (Triton's `<backend-directory>/<name>/model.py`): the `model.py` every model
    /// that names the backend runs; `None` for `backend: "python"`, whose models bring their own.
    runtime_model: Option<PathBuf>,
    /// Models' own environments (`EXECUTION_ENV_PATH`).
    envs: Arc<env::Environments>,
}

impl std::fmt::Debug for PythonEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PythonEngine").field("setup", &self.setup).finish()
    }
}

/// What a Python model's parameters relax in its sandbox (empty: nothing), for the startup exposure report.
pub fn sandbox_relaxations(
    model: &str,
    parameters: &std::collections::HashMap<String, String>,
) -> Vec<String> {
    sandbox::Policy::from_parameters(model, parameters).map(|p| p.relaxed()).unwrap_or_default()
}

impl PythonEngine {
    /// Finds the interpreter, checks that it imports numpy, and writes the runtime. The error says in one
    /// line what is missing.
    pub fn init(options: &PythonOptions) -> std::result::Result<PythonEngine, String> {
        let interpreter = match &options.interpreter {
            Some(p) => p.clone(),
            None => find_on_path("python3").ok_or(
                "the python backend needs an interpreter: no python3 on PATH (set \
                 --backend-config=python,interpreter=<path>)",
            )?,
        };
        let is_root = nix::unistd::geteuid().is_root();
        let user = options
            .user
            .or(if is_root { Some(NOBODY) } else { None })
            .filter(|u| u.0 != 0 || !is_root || u.1 != 0);
        let mut readable = probe(&interpreter, user)?;
        let runtime = tempfile::Builder::new()
            .prefix("rampart-python-runtime-")
            .tempdir()
            .map_err(|e| format!("the python backend cannot write its runtime: {e}"))?;
        let write = || -> std::io::Result<()> {
            use std::os::unix::fs::PermissionsExt;
            for (name, text) in RUNTIME {
                std::fs::write(runtime.path().join(name), text)?;
            }
            // Readable by the workers' user; writable by nobody but the server.
            std::fs::set_permissions(runtime.path(), std::fs::Permissions::from_mode(0o755))
        };
        write().map_err(|e| format!("the python backend cannot write its runtime: {e}"))?;
        readable.push(runtime.path().to_path_buf());
        let setup = Setup {
            interpreter,
            runtime: runtime.path().to_path_buf(),
            user,
            readable,
            control_allowed: options.allow_model_control,
        };
        Ok(PythonEngine {
            setup: Arc::new(setup),
            _runtime: Arc::new(runtime),
            runtime_model: None,
            envs: Default::default(),
        })
    }

    /// The engine of a Python-based backend: the models that name it run `model_py` (which the workers may
    /// read, with the files beside it) instead of a `model.py` of their own.
    pub fn with_runtime_model(&self, model_py: PathBuf) -> PythonEngine {
        let mut setup = Setup::clone(&self.setup);
        setup.readable.extend(model_py.parent().map(Path::to_path_buf));
        PythonEngine {
            setup: Arc::new(setup),
            _runtime: self._runtime.clone(),
            runtime_model: Some(model_py),
            envs: self.envs.clone(),
        }
    }

    /// The `model.py` a model runs, and how the worker imports it: `default` (as `<version>.<stem>`, so
    /// relative imports work) or `backend` (a Python-based backend's, by its stem).
    fn model_py(&self, spec: &InstanceSpec) -> (PathBuf, &'static str) {
        match &self.runtime_model {
            Some(p) => (p.clone(), "backend"),
            None => (spec.model_file.clone(), "default"),
        }
    }

    /// The interpreter workers run.
    pub fn interpreter(&self) -> &Path {
        &self.setup.interpreter
    }
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

/// Runs `interpreter` as the workers' user: it must start, be Python 3.9 or newer and import numpy. Answers
/// the directories its installation reads (for the sandbox), or in one line what is missing.
pub(crate) fn probe(
    interpreter: &Path,
    user: Option<(u32, u32)>,
) -> std::result::Result<Vec<PathBuf>, String> {
    let code = PROBE.replace("\\n", "\n");
    let probe = spawn::probe(interpreter, &code, user)
        .map_err(|e| format!("the python backend cannot run {}: {e}", interpreter.display()))?;
    if !probe.status.success() {
        let err = String::from_utf8_lossy(&probe.stderr);
        let who = user.map(|(u, _)| format!(" as uid {u}")).unwrap_or_default();
        let why = if err.contains("Permission denied") {
            format!(
                "it cannot be read{who} (make it readable, or set --backend-config=python,user=<uid>)"
            )
        } else if err.contains("numpy") {
            "it cannot import numpy (install numpy for it, or set --backend-config=python,interpreter=<path>)".into()
        } else if err.contains("3.9") {
            "it is older than Python 3.9".into()
        } else {
            format!("it failed to start{who}: {}", err.lines().last().unwrap_or_default())
        };
        return Err(format!("the python backend cannot use {}: {why}", interpreter.display()));
    }
    let mut readable: Vec<PathBuf> =
        String::from_utf8_lossy(&probe.stdout).lines().map(PathBuf::from).collect();
    if let Ok(real) = std::fs::canonicalize(interpreter) {
        readable.extend(real.parent().map(Path::to_path_buf));
    }
    Ok(readable)
}

/// A duration parameter of the model config in seconds, or its default.
fn seconds(spec: &InstanceSpec, key: &str, default: u64) -> Result<Duration> {
    match spec.parameters.get(key) {
        None => Ok(Duration::from_secs(default)),
        Some(v) => match v.trim().parse::<f64>() {
            Ok(s) if s > 0.0 && s <= 86_400.0 => Ok(Duration::from_secs_f64(s)),
            _ => Err(Error::invalid_arg(format!(
                "model '{}': parameter '{key}' must be a number of seconds in (0, 86400], got '{v}'",
                spec.model_name
            ))),
        },
    }
}

/// `model_transaction_policy { decoupled: true }` in the completed config.
fn is_decoupled(spec: &InstanceSpec) -> bool {
    let config: serde_json::Value = serde_json::from_str(&spec.config_json).unwrap_or_default();
    config["model_transaction_policy"]["decoupled"].as_bool().unwrap_or(false)
}

fn timeouts(spec: &InstanceSpec) -> Result<Timeouts> {
    Ok(Timeouts {
        load: seconds(spec, "rampart_load_timeout_secs", 120)?,
        execute: seconds(spec, "rampart_execute_timeout_secs", 300)?,
        finalize: seconds(spec, "rampart_finalize_timeout_secs", 10)?,
    })
}

/// The `load` message: what the worker imports and the arguments of `initialize(args)` (Triton's keys,
/// every value a string).
fn load_message(
    spec: &InstanceSpec,
    mode: &str,
    model_py: &(PathBuf, &str),
) -> Result<serde_json::Value> {
    let (file, kind) = model_py;
    // A backend's models have no model file: their version directory is the spec's.
    let version_dir = match *kind {
        "backend" => spec.model_file.as_path(),
        _ => spec.model_file.parent().unwrap_or(Path::new(".")),
    };
    let instance_name = format!("{}_0_{}", spec.model_name, spec.instance_index);
    Ok(json!({
        "op": "load",
        "mode": mode,
        "model_name": spec.model_name,
        "model_file": path_str(file)?,
        "import": kind,
        "version_dir": path_str(version_dir)?,
        "config": spec.config_json,
        "args": {
            "model_config": spec.config_json,
            "model_instance_kind": "CPU",
            "model_instance_name": instance_name,
            "model_instance_device_id": "0",
            "model_repository": path_str(&spec.model_dir)?,
            "model_version": spec.version.to_string(),
            "model_name": spec.model_name,
        },
    }))
}

impl Engine for PythonEngine {
    fn name(&self) -> &'static str {
        "python"
    }

    fn takes_requests(&self) -> bool {
        true
    }

    fn needs_model_file(&self) -> bool {
        self.runtime_model.is_none()
    }

    fn auto_complete(&self, spec: &InstanceSpec) -> Result<Option<String>> {
        let setup = self.envs.setup(&self.setup, spec)?;
        let model_py = self.model_py(spec);
        // A model.py that never mentions auto_complete_config has none: no worker is started for it.
        let source = std::fs::read(&model_py.0).unwrap_or_default();
        if !source.windows(b"auto_complete_config".len()).any(|w| w == b"auto_complete_config") {
            return Ok(None);
        }
        let label = format!("python model '{}' (auto-complete)", spec.model_name);
        let load = load_message(spec, "auto_complete", &model_py)?;
        let policy = sandbox::Policy::of(spec)?;
        let (worker, reply) = Worker::start(
            &setup,
            label.clone(),
            &load,
            timeouts(spec)?.load,
            &policy,
            &spec.model_dir,
            bls::Calls {
                caller: None,
                depth: Default::default(),
                in_flight: Default::default(),
                label: label.clone(),
                control_allowed: false,
                cancels: Default::default(),
                readiness: Default::default(),
            },
        )?;
        drop(worker);
        match reply["op"].as_str() {
            Some("config") => Ok(reply["config"].as_str().map(str::to_string)),
            Some("failed") => Err(Error::invalid_arg(format!(
                "{label}: auto_complete_config failed:\n{}",
                reply["message"].as_str().unwrap_or_default()
            ))),
            _ => Err(Error::internal(format!("{label}: unexpected answer from its worker"))),
        }
    }

    fn load(&self, spec: &InstanceSpec) -> Result<Box<dyn EngineInstance>> {
        let setup = self.envs.setup(&self.setup, spec)?;
        let label =
            format!("python model '{}' (instance {})", spec.model_name, spec.instance_index);
        let mut instance = PythonInstance {
            setup,
            calls: bls::Calls {
                caller: spec.caller.clone(),
                depth: Default::default(),
                in_flight: Default::default(),
                label: label.clone(),
                control_allowed: self.setup.control_allowed,
                cancels: Default::default(),
                readiness: Default::default(),
            },
            label,
            load: load_message(spec, "serve", &self.model_py(spec))?,
            timeouts: timeouts(spec)?,
            signature: spec.declared.clone(),
            policy: sandbox::Policy::of(spec)?,
            model_dir: spec.model_dir.clone(),
            worker: None,
            failures: 0,
            not_before: Instant::now(),
            exec: 0,
            decoupled: is_decoupled(spec),
            has_is_ready: false,
        };
        let worker = instance.start()?;
        instance.has_is_ready = worker.has_is_ready;
        instance.worker = Some(worker);
        Ok(Box::new(instance))
    }
}
