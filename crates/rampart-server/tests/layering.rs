//! The crate graph stays one-way (ARCHITECTURE.md, "Crate map"): `cargo metadata` lists every workspace
//! crate's normal dependencies, and this test fails when a layer reaches past its neighbours. Dev-
//! dependencies are free: a test may run a real engine.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

/// Workspace crate → the workspace crates it depends on (normal dependencies only).
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .current_dir(&root)
        .output()
        .expect("cargo metadata runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata is JSON");
    let packages = meta["packages"].as_array().expect("packages");
    let ours: BTreeSet<String> =
        packages.iter().map(|p| p["name"].as_str().unwrap().to_string()).collect();
    packages
        .iter()
        .map(|p| {
            let deps = p["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| d["kind"].is_null()) // normal, not dev or build
                .map(|d| d["name"].as_str().unwrap().to_string())
                .filter(|d| ours.contains(d))
                .collect();
            (p["name"].as_str().unwrap().to_string(), deps)
        })
        .collect()
}

const ENGINES: [&str; 4] =
    ["rampart-onnxruntime", "rampart-tract", "rampart-builtin", "rampart-python"];
const FRONT_ENDS: [&str; 2] = ["rampart-http", "rampart-grpc"];

fn deps<'a>(g: &'a BTreeMap<String, BTreeSet<String>>, name: &str) -> &'a BTreeSet<String> {
    g.get(name).unwrap_or_else(|| panic!("workspace crate {name} is missing"))
}

#[test]
fn the_scheduler_is_a_crate_that_knows_only_the_shared_types() {
    let g = graph();
    let scheduler = deps(&g, "rampart-scheduler");
    assert_eq!(scheduler.iter().collect::<Vec<_>>(), ["rampart-types"], "{scheduler:?}");
    assert!(deps(&g, "rampart-core").contains("rampart-scheduler"));
}

#[test]
fn the_core_depends_on_no_engine_and_no_front_end() {
    let g = graph();
    let core = deps(&g, "rampart-core");
    for other in ENGINES.iter().chain(&FRONT_ENDS).chain(&["rampart-tls", "rampart-server"]) {
        assert!(!core.contains(*other), "rampart-core depends on {other}");
    }
}

#[test]
fn front_ends_depend_on_neither_each_other_nor_an_engine() {
    let g = graph();
    for front in FRONT_ENDS {
        let d = deps(&g, front);
        for other in ENGINES.iter().chain(&FRONT_ENDS).chain(&["rampart-server"]) {
            assert!(!d.contains(*other), "{front} depends on {other}");
        }
    }
}

#[test]
fn engines_and_the_shared_types_stay_at_the_bottom() {
    let g = graph();
    assert!(deps(&g, "rampart-types").is_empty(), "rampart-types depends on a workspace crate");
    for engine in ENGINES {
        let d = deps(&g, engine);
        assert!(d.iter().all(|x| x == "rampart-types"), "{engine} depends on {d:?}");
    }
    // Only the binary (and the benchmark, which measures an engine alone) chooses engines.
    for (name, d) in &g {
        let allowed = ["rampart-server", "rampart-bench", "rampart-embedding-example"];
        if !allowed.contains(&name.as_str()) && !ENGINES.contains(&name.as_str()) {
            assert!(ENGINES.iter().all(|e| !d.contains(*e)), "{name} depends on an engine: {d:?}");
        }
    }
}
