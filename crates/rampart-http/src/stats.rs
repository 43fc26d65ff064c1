//! The statistics extension's JSON (docs/protocol.md, "Statistics"), rendered from the core's snapshots.

use rampart_core::stats::{DurationSnapshot, VersionStats};
use serde_json::{Value, json};

fn dur(d: &DurationSnapshot) -> Value {
    json!({ "count": d.count, "ns": d.ns })
}

pub(crate) fn stats_json(stats: &[VersionStats]) -> Value {
    let models: Vec<Value> = stats
        .iter()
        .map(|v| {
            let s = &v.stats;
            let batch: Vec<Value> = s
                .batch
                .iter()
                .map(|(size, d)| json!({
                    "batch_size": size, "compute_input": dur(&d[0]), "compute_infer": dur(&d[1]), "compute_output": dur(&d[2]),
                }))
                .collect();
            json!({
                "name": v.name, "version": v.version,
                "last_inference": s.last_inference_ms,
                "inference_count": s.inference_count,
                "execution_count": s.execution_count,
                "inference_stats": {
                    "success": dur(&s.success), "fail": dur(&s.fail), "queue": dur(&s.queue),
                    "compute_input": dur(&s.compute_input), "compute_infer": dur(&s.compute_infer),
                    "compute_output": dur(&s.compute_output),
                    "cache_hit": dur(&s.cache_hit), "cache_miss": dur(&s.cache_miss),
                },
                "response_stats": s.responses.iter().map(|(index, r)| (index.to_string(), json!({
                    "compute_infer": dur(&r.compute_infer), "compute_output": dur(&r.compute_output),
                    "success": dur(&r.success), "fail": dur(&r.fail),
                    "empty_response": dur(&r.empty_response), "cancel": dur(&r.cancel),
                }))).collect::<serde_json::Map<String, Value>>(),
                "batch_stats": batch,
                "memory_usage": [],
            })
        })
        .collect();
    json!({ "model_stats": models })
}
