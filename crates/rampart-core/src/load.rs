//! Loading one model directory into a [`ModelEntry`]: config, versions, the backend's instances, the
//! scheduler, the cache and warm-up; and the `dynamic_batching` policy of a config.

mod ensemble;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use rampart_model_config::ModelConfig;
use rampart_types::{DataType, Error, InstanceSpec, Result};

use crate::config;
use crate::control;
use crate::executor::Instance;
use crate::model::{ModelState, ModelVersion};
use crate::repository;
use crate::server::Server;
use crate::signatures::Checked;
use crate::stats::ModelStats;
use crate::table::{ModelEntry, VersionEntry};

impl Server {
    /// Loads one model directory: config (or the `config` override), versions per policy, instances per
    /// `instance_group`. Versions of `previous` whose files did not change are taken over, not reloaded.
    pub(crate) fn build_entry(
        &self,
        name: &str,
        dir: &std::path::Path,
        config_override: Option<&str>,
        files: Option<Arc<tempfile::TempDir>>,
        previous: Option<&ModelEntry>,
    ) -> ModelEntry {
        let options = &self.inner.options;
        let cache = self.inner.cache.as_ref();
        let overridden = config_override.is_some() || files.is_some();
        let fingerprint = control::fingerprint(dir);
        // Under a signature policy the model loads from a snapshot of the bytes that verified, which the
        // entry holds (as it holds the files of a `file:` override).
        let (snapshot, signature_verified) = match self.check_signature(name, dir, config_override)
        {
            Checked::Refused(reason) => {
                let mut e = ModelEntry::failed(reason);
                e.fingerprint = Some(fingerprint);
                e.overridden = overridden;
                return e;
            }
            Checked::Snapshot(s) => (Some(s), Some(true)),
            Checked::Unverified => (None, Some(false)),
            Checked::Unchecked => (None, None),
        };
        let signed = snapshot.is_some();
        // A verified override is the signed config.pbtxt: the snapshot's file is read.
        let config_override = config_override.filter(|_| !signed);
        let files = snapshot.clone().or(files);
        let dir = snapshot.as_deref().map_or(dir, tempfile::TempDir::path);
        let origin = |mut e: ModelEntry| {
            e.fingerprint = Some(fingerprint.clone());
            e.overridden = overridden;
            e._files = files.clone();
            e
        };
        // Versions that can be taken over as they are: same model files and config, same version folder.
        let reusable = |v: i64| -> Option<Arc<ModelVersion>> {
            // A version loaded from an earlier snapshot would outlive it.
            if signed {
                return None;
            }
            let p = previous?;
            let pf = p.fingerprint.as_ref()?;
            if overridden
                || p.overridden
                || pf.model != fingerprint.model
                || pf.versions.get(&v) != fingerprint.versions.get(&v)
            {
                return None;
            }
            p.versions.get(&v)?.served.clone()
        };
        let raw = match config_override {
            Some(json) => config::from_json(json, dir, name),
            None => config::read(dir, name, options.autocomplete),
        };
        let raw = match raw {
            Ok(r) => r,
            Err(e) => return origin(ModelEntry::failed(e.message().to_string())),
        };
        // Repository agents (the checksum agent) check the files before anything reads them.
        if let Err(e) = crate::agents::run(&raw.config, dir) {
            return origin(ModelEntry::failed(format!("model '{name}': {}", e.message())));
        }
        let selected = match repository::select_versions(&raw.config, &repository::versions(dir)) {
            Ok(v) => v,
            Err(e) => return origin(ModelEntry::failed(e.message().to_string())),
        };
        if raw.config.platform == config::ensemble::PLATFORM {
            return origin(self.build_ensemble(raw.config, selected, signature_verified));
        }
        let chosen = crate::engines::backend_name(&raw.config, &options.default_onnx_backend)
            .and_then(|backend| options.backends.get(backend));
        let engine = match chosen {
            Ok(e) => e,
            Err(e) => {
                return origin(ModelEntry::failed(format!("model '{name}': {}", e.message())));
            }
        };
        let takes_requests = engine.takes_requests();
        let mut final_config: Option<Arc<ModelConfig>> = None;
        let mut raw = Some(raw);
        if takes_requests {
            // Model code completes its config before any instance loads, and each instance is handed
            // the completed config.
            let r = raw.take().expect("read above");
            match self.complete_by_model_code(engine.as_ref(), r, dir, selected.iter().max()) {
                Ok(c) => final_config = Some(Arc::new(c)),
                Err(e) => return origin(ModelEntry::failed(model_message(name, &e))),
            }
        }
        let base = match (&final_config, &raw) {
            (Some(c), _) => c.as_ref(),
            (None, Some(r)) => &r.config,
            (None, None) => unreachable!("a config was read"),
        };
        let instance_count: usize =
            base.instance_group.iter().map(|g| g.count.max(1) as usize).sum();
        let parameters: std::collections::HashMap<String, String> =
            base.parameters.iter().map(|(k, v)| (k.clone(), v.string_value.clone())).collect();
        let declared = config::declared_signature(base);
        let graph_level =
            base.optimization.as_ref().and_then(|o| o.graph.as_ref()).map_or(0, |g| g.level);
        let config_json = match &final_config {
            Some(c) if takes_requests => rampart_model_config::to_json(c).to_string(),
            _ => String::new(),
        };
        let mut labels: Option<Arc<crate::classify::Labels>> = None;
        let mut versions = BTreeMap::new();
        for v in selected {
            if let Some(kept) = reusable(v) {
                versions.insert(
                    v,
                    VersionEntry {
                        state: ModelState::Ready,
                        reason: String::new(),
                        served: Some(kept),
                    },
                );
                continue;
            }
            let started = Instant::now();
            let label = ModelVersion::label(name, v);
            let result = (|| -> Result<Arc<ModelVersion>> {
                let version_dir = dir.join(v.to_string());
                let model_file = if engine.needs_model_file() {
                    let file = version_dir.join(
                        final_config
                            .as_ref()
                            .map(|c| c.default_model_filename.clone())
                            .or_else(|| {
                                raw.as_ref().map(|r| r.config.default_model_filename.clone())
                            })
                            .unwrap_or_default(),
                    );
                    if !file.is_file() {
                        return Err(Error::invalid_arg(format!(
                            "model file '{}' not found",
                            file.display()
                        )));
                    }
                    file
                } else {
                    version_dir
                };
                let max_batch_size = final_config
                    .as_ref()
                    .map(|c| c.max_batch_size)
                    .or_else(|| raw.as_ref().map(|r| r.config.max_batch_size))
                    .unwrap_or_default();
                let mut spec = InstanceSpec {
                    model_name: name.to_string(),
                    version: v,
                    model_file,
                    parameters: parameters.clone(),
                    declared: declared.clone(),
                    max_batch_size: max_batch_size.max(0) as u64,
                    graph_optimization_level: graph_level,
                    instance_index: 0,
                    config_json: config_json.clone(),
                    model_dir: dir.to_path_buf(),
                    caller: takes_requests.then(|| self.caller(name)),
                };
                let mut instances = Vec::with_capacity(instance_count);
                instances.push(engine.load(&spec)?);
                let cfg = match &final_config {
                    Some(c) => c.clone(),
                    None => {
                        let raw = raw.take().expect("raw config consumed once");
                        // Control and state tensors are the server's, never declared as inputs/outputs.
                        // A state output the config also declares as an output is returned to the client.
                        let mut internal =
                            crate::sequence::SequenceSpec::internal_names(&raw.config);
                        internal.retain(|n| !raw.config.output.iter().any(|o| &o.name == n));
                        let signature = instances[0].signature().without(&internal);
                        let c = Arc::new(config::complete_and_validate(
                            raw,
                            &signature,
                            options.autocomplete,
                        )?);
                        final_config = Some(c.clone());
                        c
                    }
                };
                // The completed config too (auto-complete may add types the engine cannot run).
                let types = cfg.input.iter().map(|i| i.data_type);
                let types = types.chain(cfg.output.iter().map(|o| o.data_type));
                if let Some(t) =
                    types.filter_map(DataType::from_config_enum).find(|&t| !engine.supports(t))
                {
                    return Err(Error::unsupported(format!(
                        "the {} engine does not support data type {}",
                        engine.name(),
                        t.as_str()
                    )));
                }
                let engine_inputs = crate::infer::EngineInputs {
                    engine: engine.name(),
                    names: instances[0].signature().inputs.iter().map(|s| s.name.clone()).collect(),
                };
                for i in 1..instance_count {
                    spec.instance_index = i;
                    instances.push(engine.load(&spec)?);
                }
                let readiness: Vec<_> = instances.iter().filter_map(|i| i.readiness()).collect();
                let decoupled = config::is_decoupled(&cfg);
                let mut stats = ModelStats::with_latency_metrics(
                    options.metrics.summaries.clone().map(crate::stats::LatencyWindows::new),
                    options.metrics.histograms.then(Default::default),
                );
                if decoupled {
                    stats = stats.with_response_stats();
                }
                let stats = Arc::new(stats);
                let sequence = crate::sequence::spec(&cfg, dir, &options.sequences)?;
                if sequence.is_some() && decoupled {
                    return Err(Error::unsupported(format!(
                        "model '{name}': decoupled models with sequence_batching are not supported"
                    )));
                }
                let (pool, sequences) = match sequence {
                    Some((policy, mut spec)) => {
                        // Model code has no file signature to check controls and states against.
                        if !takes_requests {
                            spec.check_signature(name, instances[0].signature())?;
                        }
                        if takes_requests && !spec.states.is_empty() {
                            return Err(Error::unsupported(format!(
                                "model '{name}': implicit state (sequence_batching.state) is not supported \
                                 for a model whose code sees its requests (the python backend)"
                            )));
                        }
                        spec.requests = takes_requests;
                        let (pool, held) = crate::sequence::start(
                            format!("{name}-{v}"),
                            instances,
                            &stats,
                            options.max_queued_requests,
                            policy,
                            spec,
                            options.audit.clone(),
                        )?;
                        (pool, Some(held))
                    }
                    None => {
                        let batching = batch_policy(&cfg, options.sequences.hold_until)?;
                        let executors: Vec<Instance> = instances
                            .into_iter()
                            .map(|engine| Instance { engine, stats: stats.clone(), takes_requests })
                            .collect();
                        let pool = crate::model::Scheduler::start(
                            format!("{name}-{v}"),
                            executors,
                            options.max_queued_requests,
                            batching,
                        )?;
                        (pool, None)
                    }
                };
                // A stateful model's answers depend on more than its inputs: never cached.
                let wants_cache =
                    cfg.response_cache.as_ref().is_some_and(|c| c.enable) && sequences.is_none();
                if wants_cache && cache.is_none() {
                    tracing::warn!(
                        "model '{name}' enables response_cache but the server has no cache (--cache-config local,size=N)"
                    );
                }
                let cache = cache.filter(|_| wants_cache).cloned();
                let labels = match &labels {
                    Some(l) => Arc::clone(l),
                    None => {
                        labels.insert(Arc::new(crate::classify::load_labels(&cfg, dir)?)).clone()
                    }
                };
                let run = crate::model::Run::Engine { pool, cache };
                let mut version =
                    ModelVersion::new(cfg, v, run, stats, started.elapsed(), engine_inputs);
                version.labels = labels;
                version.sequences = sequences;
                version.takes_requests = takes_requests;
                version.readiness = readiness;
                version.signature_verified = signature_verified;
                crate::warmup::run(&version, dir)?;
                version.load_duration = started.elapsed();
                Ok(Arc::new(version))
            })();
            let entry = match result {
                Ok(m) => VersionEntry {
                    state: ModelState::Ready,
                    reason: String::new(),
                    served: Some(m),
                },
                Err(e) => {
                    let msg = e.message();
                    let reason = if msg.starts_with("model '") {
                        msg.to_string()
                    } else {
                        format!("{label}: {msg}")
                    };
                    // A config that fails validation fails every version the same way: report it once.
                    if final_config.is_none() && raw.is_none() {
                        return origin(ModelEntry::failed(reason));
                    }
                    VersionEntry { state: ModelState::Unavailable, reason, served: None }
                }
            };
            versions.insert(v, entry);
        }
        origin(ModelEntry { versions, ..ModelEntry::empty() })
    }
}

impl Server {
    /// The config of a model whose code sees requests: what its `auto_complete_config` made of the config
    /// read (while auto-complete is on), completed and checked against its own declarations.
    fn complete_by_model_code(
        &self,
        engine: &dyn rampart_types::Engine,
        mut raw: config::RawConfig,
        dir: &std::path::Path,
        latest: Option<&i64>,
    ) -> Result<ModelConfig> {
        let autocomplete = self.inner.options.autocomplete;
        if let (true, Some(v)) = (autocomplete, latest) {
            let spec = InstanceSpec {
                model_name: raw.config.name.clone(),
                version: *v,
                model_file: dir.join(v.to_string()).join(&raw.config.default_model_filename),
                config_json: rampart_model_config::to_json(&raw.config).to_string(),
                model_dir: dir.to_path_buf(),
                ..Default::default()
            };
            if let Some(json) = engine.auto_complete(&spec)? {
                raw = config::from_json(&json, dir, &raw.config.name)?;
            }
        }
        // Batching is the model code's choice: the server does not turn it on from the shapes.
        raw.explicit_max_batch = true;
        let declared = config::declared_signature(&raw.config);
        config::complete_and_validate(raw, &declared, autocomplete)
    }
}

impl Server {
    /// How the code of model `name` calls the server's models (BLS).
    fn caller(&self, name: &str) -> Arc<dyn rampart_types::ModelCaller> {
        Arc::new(crate::bls::ServerCaller {
            inner: Arc::downgrade(&self.inner),
            caller: name.to_string(),
        })
    }
}

/// A load error as the model's reason: prefixed with the model unless it names it already.
fn model_message(name: &str, e: &Error) -> String {
    let msg = e.message();
    if msg.starts_with("model '") { msg.to_string() } else { format!("model '{name}': {msg}") }
}

/// The `dynamic_batching` settings of a config, checked as Triton checks them; `None` runs every request
/// alone (no `dynamic_batching`, or a model without a batch dimension).
fn batch_policy(
    cfg: &ModelConfig,
    hold_until: usize,
) -> Result<Option<rampart_scheduler::BatchPolicy>> {
    use rampart_model_config::pb::model_config::SchedulingChoice;
    let Some(SchedulingChoice::DynamicBatching(d)) = &cfg.scheduling_choice else {
        return Ok(None);
    };
    if cfg.max_batch_size <= 0 {
        tracing::warn!(
            "model '{}': dynamic_batching has no effect without max_batch_size > 0",
            cfg.name
        );
        return Ok(None);
    }
    let mut preferred = Vec::with_capacity(d.preferred_batch_size.len());
    for &p in &d.preferred_batch_size {
        if p <= 0 {
            return Err(Error::invalid_arg(format!(
                "dynamic batching preferred size must be positive for {}",
                cfg.name
            )));
        }
        if p > cfg.max_batch_size {
            return Err(Error::invalid_arg(format!(
                "dynamic batching preferred size must be <= max batch size for {}",
                cfg.name
            )));
        }
        preferred.push(p as u64);
    }
    preferred.sort_unstable();
    preferred.dedup();
    let name = &cfg.name;
    let levels = d.priority_levels;
    if levels > MAX_PRIORITY_LEVELS {
        return Err(Error::invalid_arg(format!(
            "dynamic batching priority_levels must be at most {MAX_PRIORITY_LEVELS} for {name}"
        )));
    }
    if levels != 0 {
        if d.default_priority_level == 0 || d.default_priority_level > levels {
            return Err(Error::invalid_arg(format!(
                "default priority level must be in range [1, {levels}] for {name}"
            )));
        }
        if d.priority_queue_policy.keys().any(|&l| l == 0 || l > levels) {
            return Err(Error::invalid_arg(format!(
                "priority queue policy must have priority level in range [1, {levels}] for {name}"
            )));
        }
    }
    use rampart_model_config::pb::model_queue_policy::TimeoutAction;
    let default = d.default_queue_policy.unwrap_or_default();
    if d.preserve_ordering {
        if levels > 1 {
            return Err(Error::invalid_arg(format!(
                "Only one priority level is allowed when 'preserve_ordering' is true for {name}"
            )));
        }
        let delays = |p: &rampart_model_config::pb::ModelQueuePolicy| {
            p.default_timeout_microseconds != 0 && p.timeout_action == TimeoutAction::Delay as i32
        };
        if delays(&default) || d.priority_queue_policy.values().any(delays) {
            return Err(Error::invalid_arg(format!(
                "Queue policy can not have DELAY as timeout action when 'preserve_ordering' is true for {name}"
            )));
        }
    }
    let queue_policy =
        |p: &rampart_model_config::pb::ModelQueuePolicy| rampart_scheduler::QueuePolicy {
            timeout: (p.default_timeout_microseconds > 0)
                .then(|| std::time::Duration::from_micros(p.default_timeout_microseconds)),
            allow_timeout_override: p.allow_timeout_override,
            reject_on_timeout: p.timeout_action == TimeoutAction::Reject as i32,
            max_queue_size: p.max_queue_size as usize,
        };
    // Without priority levels there is one queue with the default policy (Triton ignores
    // `priority_queue_policy` then).
    let levels: Vec<rampart_scheduler::QueuePolicy> = if levels == 0 {
        vec![queue_policy(&default)]
    } else {
        (1..=levels)
            .map(|l| queue_policy(d.priority_queue_policy.get(&l).unwrap_or(&default)))
            .collect()
    };
    Ok(Some(rampart_scheduler::BatchPolicy {
        max_batch_size: cfg.max_batch_size as u64,
        preferred,
        max_delay: std::time::Duration::from_micros(d.max_queue_delay_microseconds),
        levels,
        // Triton reads `default_priority_level` only with `priority_levels`; without, the one queue is level 0.
        hold_until,
        default_level: if d.priority_levels == 0 {
            0
        } else {
            (d.default_priority_level - 1) as usize
        },
    }))
}

/// More priority levels than this are refused at load (each level is a queue).
const MAX_PRIORITY_LEVELS: u64 = 1 << 16;

#[cfg(test)]
mod tests {
    use super::*;

    /// Triton checks `default_priority_level` only when `priority_levels` is set; without levels there is one
    /// queue, and every request must find it.
    #[test]
    fn default_priority_level_without_priority_levels_is_ignored() {
        let cfg = rampart_model_config::parse_json(
            r#"{"name": "m", "max_batch_size": 8,
                "dynamic_batching": {"priority_levels": 0, "default_priority_level": 3}}"#,
        )
        .unwrap();
        let policy = batch_policy(&cfg, 0).unwrap().expect("a batch policy");
        assert_eq!(policy.levels.len(), 1);
        let ticket = policy.ticket(Instant::now(), None, None);
        assert_eq!(ticket.level, 0);
        assert_eq!(policy.ticket(Instant::now(), Some(7), None).level, 0);
    }
}
