//! The in-process engine ceiling: how fast ONNX Runtime itself runs a model on one thread, with no server in
//! between. `bench/run.sh` compares the server's throughput with this.
//!
//! Two measurements, each a JSON line on stdout:
//! - `raw`: an `ort` session (1 intra-op and 1 inter-op thread, all graph optimizations) running one input
//!   tensor built once — the engine alone;
//! - `rampart`: the same model through Rampart's engine wrapper (`EngineInstance::execute` with wire-layout
//!   tensors, as the scheduler calls it) — the engine plus input binding and output copies.
//!
//! Usage: `engine-ceiling --model FILE [--backend-directory DIR] [--batch N] [--seconds S] [--mode raw|rampart|both]`
//! Every input must be FP32 with a dynamic first (batch) dimension and fixed other dimensions.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::{Tensor as OrtTensor, TensorElementType, ValueType};
use rampart_onnxruntime::{OrtEngine, OrtOptions};
use rampart_types::{DataType, Engine, InstanceSpec, Tensor};

struct Args {
    model: PathBuf,
    backend_directory: PathBuf,
    batch: usize,
    seconds: f64,
    mode: String,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        model: PathBuf::new(),
        backend_directory: PathBuf::from("third_party/onnxruntime"),
        batch: 1,
        seconds: 5.0,
        mode: "both".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let (k, inline) = match flag.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (flag.clone(), None),
        };
        let mut value =
            || inline.clone().or_else(|| it.next()).ok_or_else(|| format!("{k} needs a value"));
        match k.as_str() {
            "--model" => a.model = PathBuf::from(value()?),
            "--backend-directory" => a.backend_directory = PathBuf::from(value()?),
            "--batch" => a.batch = value()?.parse().map_err(|e| format!("--batch: {e}"))?,
            "--seconds" => a.seconds = value()?.parse().map_err(|e| format!("--seconds: {e}"))?,
            "--mode" => a.mode = value()?,
            _ => return Err(format!("unknown argument '{flag}'")),
        }
    }
    if a.model.as_os_str().is_empty() {
        return Err("--model FILE is required".into());
    }
    if a.batch == 0
        || a.seconds.is_nan()
        || a.seconds <= 0.0
        || !matches!(a.mode.as_str(), "raw" | "rampart" | "both")
    {
        return Err("--batch must be ≥ 1, --seconds > 0, --mode raw|rampart|both".into());
    }
    Ok(a)
}

/// Runs `step` repeatedly for `seconds` after a short warm-up; returns runs per second and latency
/// percentiles (µs) of single runs.
fn measure(seconds: f64, mut step: impl FnMut()) -> (f64, [f64; 3]) {
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_millis(300) {
        step();
    }
    let mut lat = Vec::with_capacity(1 << 16);
    let start = Instant::now();
    let budget = Duration::from_secs_f64(seconds);
    while start.elapsed() < budget {
        let t = Instant::now();
        step();
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let runs = lat.len() as f64 / start.elapsed().as_secs_f64();
    lat.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    (runs, [pct(0.50), pct(0.95), pct(0.99)])
}

fn report(mode: &str, model: &std::path::Path, batch: usize, runs: f64, p: [f64; 3]) {
    println!(
        "{{\"mode\":\"{mode}\",\"model\":\"{}\",\"batch\":{batch},\"threads\":1,\"runs_per_sec\":{runs:.1},\"infer_per_sec\":{:.1},\"p50_us\":{:.1},\"p95_us\":{:.1},\"p99_us\":{:.1}}}",
        model.display(),
        runs * batch as f64,
        p[0],
        p[1],
        p[2]
    );
}

#[allow(unsafe_code)] // the one unsafe call: see SAFETY below
fn main() -> std::process::ExitCode {
    if std::env::var_os("ORT_DISABLE_TELEMETRY").is_none() {
        // SAFETY: first thing in main, single-threaded (as in the server: no usage database in $HOME).
        unsafe { std::env::set_var("ORT_DISABLE_TELEMETRY", "1") };
    }
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("engine-ceiling: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("engine-ceiling: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    let engine = OrtEngine::init(
        &args.backend_directory,
        std::env::var_os("ORT_DYLIB_PATH").as_deref().map(std::path::Path::new),
        OrtOptions::default(),
    )?;
    let fail = |e: String| format!("cannot load '{}': {e}", args.model.display());
    let session = Session::builder(engine.environment())
        .map_err(|e| fail(e.to_string()))?
        .with_optimization_level(GraphOptimizationLevel::All)
        .map_err(|e| fail(e.to_string()))?
        .with_intra_threads(1)
        .map_err(|e| fail(e.to_string()))?
        .with_inter_threads(1)
        .map_err(|e| fail(e.to_string()))?
        .commit_from_file(&args.model)
        .map_err(|e| fail(e.to_string()))?;
    // One FP32 input per model input: deterministic, non-trivial values.
    let mut inputs: Vec<(String, Vec<i64>, Vec<f32>)> = Vec::new();
    for o in session.inputs() {
        let ValueType::Tensor { ty, shape, .. } = o.dtype() else {
            return Err(format!("input '{}' is not a tensor", o.name()));
        };
        if !matches!(ty, TensorElementType::Float32) {
            return Err(format!("input '{}' is {ty:?}; engine-ceiling feeds FP32 only", o.name()));
        }
        let mut dims: Vec<i64> = shape.iter().copied().collect();
        if dims.is_empty() || dims[1..].iter().any(|d| *d < 0) {
            return Err(format!(
                "input '{}' needs a batch dimension and fixed others, has {dims:?}",
                o.name()
            ));
        }
        dims[0] = args.batch as i64;
        let n: usize = dims.iter().product::<i64>() as usize;
        let data = (0..n).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect();
        inputs.push((o.name().to_string(), dims, data));
    }
    let output_names: Vec<String> =
        session.outputs().iter().map(|o| o.name().to_string()).collect();

    if args.mode != "rampart" {
        let mut session = session;
        let tensors: Vec<(String, OrtTensor<f32>)> = inputs
            .iter()
            .map(|(n, d, v)| OrtTensor::from_array((d.clone(), v.clone())).map(|t| (n.clone(), t)))
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;
        let mut failed = None;
        let (runs, p) = measure(args.seconds, || {
            let feed: Vec<(&str, &OrtTensor<f32>)> =
                tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
            if let Err(e) = session.run(feed) {
                failed.get_or_insert(e.to_string());
            }
        });
        if let Some(e) = failed {
            return Err(format!("raw run failed: {e}"));
        }
        report("raw", &args.model, args.batch, runs, p);
    }
    if args.mode != "raw" {
        let spec = InstanceSpec {
            model_name: "ceiling".into(),
            version: 1,
            model_file: args.model.clone(),
            parameters: Default::default(),
            graph_optimization_level: 0,
            ..Default::default()
        };
        let mut instance = engine.load(&spec).map_err(|e| e.message().to_string())?;
        let tensors: Vec<Tensor> = inputs
            .iter()
            .map(|(n, d, v)| {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                Tensor::new(n.clone(), DataType::Fp32, d.clone(), bytes::Bytes::from(bytes))
            })
            .collect();
        let mut failed = None;
        let (runs, p) = measure(args.seconds, || {
            if let Err(e) = instance.execute(&tensors, &output_names) {
                failed.get_or_insert(e.message().to_string());
            }
        });
        if let Some(e) = failed {
            return Err(format!("rampart engine run failed: {e}"));
        }
        report("rampart", &args.model, args.batch, runs, p);
    }
    Ok(())
}
