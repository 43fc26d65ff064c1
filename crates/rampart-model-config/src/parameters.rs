//! The `parameters` keys of a model config that mean something to a backend, so that a key one or two
//! letters away from one of them (`intra_op_thread_cout`) can be pointed out instead of being silently
//! ignored. Keys are free-form (a `model.py` reads any it likes), so a near miss is a warning, never an error.

/// Keys read by Rampart's backends and the server, plus Triton's ONNX Runtime, Python and identity backend
/// keys that Rampart accepts and ignores (so that they are not mistaken for misspellings of ours).
pub const KNOWN_PARAMETERS: &[&str] = &[
    // Which engine runs an ONNX model (rampart-core engines.rs).
    "engine",
    // ONNX Runtime (rampart-onnxruntime SessionSettings).
    "intra_op_thread_count",
    "inter_op_thread_count",
    "execution_mode",
    "enable_mem_pattern",
    // Triton's ONNX Runtime backend keys without meaning on a CPU-only server.
    "enable_mem_arena",
    "memory.enable_memory_arena_shrinkage",
    "arena_extend_strategy",
    "cudnn_conv_algo_search",
    "gpu_mem_limit",
    "do_copy_in_default_stream",
    "cudnn_conv_use_max_workspace",
    "session.use_device_allocator_for_initializers",
    // Python backend (rampart-python).
    "EXECUTION_ENV_PATH",
    "FORCE_CPU_ONLY_INPUT_TENSORS",
    "rampart_load_timeout_secs",
    "rampart_execute_timeout_secs",
    "rampart_finalize_timeout_secs",
    "rampart_sandbox_network",
    "rampart_memory_limit_mb",
    "rampart_open_files_limit",
    "rampart_processes_limit",
    "rampart_cpu_limit_secs",
    // Built-in identity backend (rampart-builtin), as Triton's.
    "execute_delay_ms",
    "instance_wise_delay_multiplier",
    "creation_delay_sec",
];

/// The known key that `key` probably misspells: not a known key itself, and at most two edits (one for
/// keys under eight letters) from one.
pub fn parameter_suggestion(key: &str) -> Option<&'static str> {
    if KNOWN_PARAMETERS.contains(&key) {
        return None;
    }
    let (distance, known) =
        KNOWN_PARAMETERS.iter().map(|k| (crate::edit_distance(key, k), *k)).min()?;
    let allowed = if known.len() < 8 { 1 } else { 2 };
    (distance <= allowed).then_some(known)
}

#[cfg(test)]
mod tests {
    use super::parameter_suggestion;

    #[test]
    fn near_misses_are_suggested_and_other_keys_are_left_alone() {
        assert_eq!(parameter_suggestion("intra_op_thread_cout"), Some("intra_op_thread_count"));
        assert_eq!(parameter_suggestion("EXECUTION_ENV_PAHT"), Some("EXECUTION_ENV_PATH"));
        assert_eq!(parameter_suggestion("engines"), Some("engine"));
        assert_eq!(parameter_suggestion("engine"), None, "a known key is not a typo");
        assert_eq!(parameter_suggestion("my_threshold"), None, "a model's own key");
        assert_eq!(parameter_suggestion("enigne_x"), None, "too far from a short key");
    }
}
