use std::sync::Arc;

use rampart_model_config::{ModelConfig, parse_text};

use super::link;
use crate::config::ensemble as graph;

fn config(text: &str) -> ModelConfig {
    parse_text(text).expect("a valid config.pbtxt").config
}

/// An identity-like model `name` with `INPUT0`..`INPUTn` → `OUTPUT0`..`OUTPUTn`.
fn model(
    name: &str,
    batch: i32,
    dtype: &str,
    dims: &str,
    n: usize,
    decoupled: bool,
) -> Arc<ModelConfig> {
    let io = |kind: &str| -> String {
        (0..n)
            .map(|i| format!("{{ name: \"{kind}{i}\" data_type: {dtype} dims: [ {dims} ] }}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let policy = if decoupled { "model_transaction_policy { decoupled: true }" } else { "" };
    Arc::new(config(&format!(
        "name: \"{name}\" backend: \"identity\" max_batch_size: {batch} input [ {} ] output [ {} ] {policy}",
        io("INPUT"),
        io("OUTPUT")
    )))
}

/// An ensemble over `steps` ("model: in->tensor,… / out->tensor,…").
fn ensemble(inputs: &[&str], outputs: &[&str], steps: &[(&str, &str, &str)]) -> ModelConfig {
    let io = |names: &[&str]| -> String {
        names
            .iter()
            .map(|n| format!("{{ name: \"{n}\" data_type: TYPE_FP32 dims: [ 16 ] }}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let map = |field: &str, pairs: &str| -> String {
        pairs
            .split(',')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once("->").expect("key->value");
                format!("{field} {{ key: \"{k}\" value: \"{v}\" }}")
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let steps: Vec<String> = steps
        .iter()
        .map(|(m, i, o)| {
            format!(
                "{{ model_name: \"{m}\" model_version: -1 {} {} }}",
                map("input_map", i),
                map("output_map", o)
            )
        })
        .collect();
    config(&format!(
        "name: \"e\" platform: \"ensemble\" max_batch_size: 4 input [ {} ] output [ {} ] ensemble_scheduling {{ step [ {} ] }}",
        io(inputs),
        io(outputs),
        steps.join(", ")
    ))
}

fn static_error(c: &ModelConfig) -> String {
    graph::check_static(c).expect_err("refused").message().to_string()
}

#[test]
fn a_chain_passes_and_plans_in_order() {
    let c = ensemble(
        &["IN"],
        &["OUT"],
        &[("b", "INPUT0->t", "OUTPUT0->OUT"), ("a", "INPUT0->IN", "OUTPUT0->t")],
    );
    graph::check_static(&c).unwrap();
    let m = model("m", 4, "TYPE_FP32", "16", 1, false);
    let plan = link::link(&c, &[m.clone(), m]).unwrap();
    assert!(!plan.decoupled);
    assert_eq!(graph::step_models(&c), vec!["b".to_string(), "a".to_string()]);
    // Asking for OUT needs both steps; asking for nothing needs none.
    assert_eq!(plan.needed(&["OUT".to_string()]), vec![true, true]);
    assert_eq!(plan.needed(&[]), vec![false, false]);
}

#[test]
fn flow_errors_name_the_tensor() {
    let unused_input = ensemble(&["IN", "X"], &["OUT"], &[("a", "INPUT0->IN", "OUTPUT0->OUT")]);
    assert_eq!(static_error(&unused_input), "ensemble input 'X' for ensemble e' is not used");
    let unwritten = ensemble(&["IN"], &["OUT"], &[("a", "INPUT0->IN,INPUT1->gap", "OUTPUT0->OUT")]);
    assert_eq!(
        static_error(&unwritten),
        "output 'OUT' for ensemble 'e' is not written: at least one of its depending tensors, 'gap', is not connected"
    );
    let self_loop = ensemble(
        &["IN"],
        &["OUT", "P"],
        &[("a", "INPUT0->IN", "OUTPUT0->OUT"), ("b", "INPUT0->P", "OUTPUT0->P")],
    );
    assert_eq!(static_error(&self_loop), "output 'P' for ensemble 'e' is not written");
    let dangling =
        ensemble(&["IN"], &["OUT"], &[("a", "INPUT0->IN", "OUTPUT0->OUT,OUTPUT1->extra")]);
    assert_eq!(static_error(&dangling), "ensemble tensor 'extra' is unused in ensemble 'e'");
    let twice = ensemble(
        &["IN"],
        &["OUT"],
        &[("a", "INPUT0->IN", "OUTPUT0->OUT"), ("b", "INPUT0->IN", "OUTPUT0->OUT")],
    );
    assert_eq!(
        static_error(&twice),
        "ensemble tensor 'OUT' can appear in an output map only once for ensemble 'e' step 1"
    );
}

#[test]
fn forbidden_fields_are_refused() {
    let mut c = ensemble(&["IN"], &["OUT"], &[("a", "INPUT0->IN", "OUTPUT0->OUT")]);
    c.backend = "onnxruntime".into();
    assert_eq!(
        static_error(&c),
        "Ensemble model 'e' must have platform type 'ensemble' and empty backend type"
    );
    c.backend.clear();
    c.instance_group.push(Default::default());
    assert_eq!(static_error(&c), "instance group should not be specified for ensemble 'e'");
    c.instance_group.clear();
    c.scheduling_choice = None;
    assert_eq!(
        static_error(&c),
        "ensemble scheduling must be set for ensemble e whose platform is ensemble"
    );
}

#[test]
fn links_check_batch_sizes_types_and_shapes() {
    let c = ensemble(&["IN"], &["OUT"], &[("a", "INPUT0->IN", "OUTPUT0->OUT")]);
    let small = model("a", 2, "TYPE_FP32", "16", 1, false);
    let e = link::link(&c, &[small]).err().unwrap();
    assert_eq!(
        e.message(),
        "ensemble e allows maximum batch size 4, but it contains model a which only allows maximum batch size to be 2"
    );
    let ints = model("a", 4, "TYPE_INT32", "16", 1, false);
    let e = link::link(&c, &[ints]).err().unwrap();
    assert_eq!(
        e.message(),
        "in ensemble e, ensemble tensor IN: inconsistent data type: TYPE_FP32 is inferred from model e while TYPE_INT32 is inferred from model a"
    );
    let cube = model("a", 4, "TYPE_FP32", "16, 16, 16", 1, false);
    let e = link::link(&c, &[cube]).err().unwrap();
    assert_eq!(
        e.message(),
        "in ensemble e, ensemble tensor IN: inconsistent shape: [-1,16] is inferred from model e while [-1,16,16,16] is inferred from model a"
    );
    // A batching [16] and a non-batching [-1,16] agree on the full shape.
    let unbatched = model("a", 0, "TYPE_FP32", "-1, 16", 1, false);
    link::link(&c, &[unbatched]).unwrap();
}

#[test]
fn two_decoupled_flows_cannot_meet() {
    let c = ensemble(
        &["IN"],
        &["OUT"],
        &[
            ("r1", "INPUT0->IN", "OUTPUT0->x"),
            ("r2", "INPUT0->IN", "OUTPUT0->y"),
            ("join", "INPUT0->x,INPUT1->y", "OUTPUT0->OUT"),
        ],
    );
    graph::check_static(&c).unwrap();
    let r = model("r", 4, "TYPE_FP32", "16", 1, true);
    let join = model("join", 4, "TYPE_FP32", "16", 2, false);
    let e = link::link(&c, &[r.clone(), r.clone(), join.clone()]).err().unwrap();
    assert_eq!(
        e.message(),
        "in ensemble e, step of model 'join' receives inputs originated from different decoupled models"
    );
    // One decoupled flow joined with itself is fine, and makes the ensemble decoupled.
    let c = ensemble(
        &["IN"],
        &["OUT"],
        &[
            ("r1", "INPUT0->IN", "OUTPUT0->x"),
            ("id", "INPUT0->x", "OUTPUT0->y"),
            ("join", "INPUT0->x,INPUT1->y", "OUTPUT0->OUT"),
        ],
    );
    let id = model("id", 4, "TYPE_FP32", "16", 1, false);
    assert!(link::link(&c, &[r, id, join]).unwrap().decoupled);
}
