//! Loading an ensemble: its composing models first (those not loaded yet), no cycle between ensembles,
//! the link against the composing models' completed configs; and keeping loaded ensembles in step with
//! their composing models: a change builds the ensemble again, a composing model gone unloads it, its
//! return loads it back (Triton's dependency graph).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use rampart_model_config::ModelConfig;
use rampart_model_config::pb;
use rampart_types::{Error, Result};

use crate::config::ensemble as graph;
use crate::ensemble::{Answer, Boxed, Composer, Responses, link};
use crate::model::{ModelState, ModelVersion, Run};
use crate::repository;
use crate::server::Server;
use crate::stats::ModelStats;
use crate::table::{ModelEntry, UNLOADED, VersionEntry};

/// Nested ensembles deeper than this are refused (each level is a request inside a request).
const MAX_DEPTH: usize = 16;

impl Server {
    /// Builds the entry of ensemble `name` from its statically valid config and selected versions
    /// (`signature_verified`: its own directory's signature state, for the gauge).
    pub(crate) fn build_ensemble(
        &self,
        config: ModelConfig,
        selected: Vec<i64>,
        signature_verified: Option<bool>,
    ) -> ModelEntry {
        let name = config.name.clone();
        let depends_on = graph::step_models(&config);
        let built = self.link_ensemble(config, &selected, signature_verified);
        let mut entry = match built {
            Ok(versions) => ModelEntry { versions, ..ModelEntry::empty() },
            Err(e) => ModelEntry::failed(e.message().to_string()),
        };
        tracing::debug!("ensemble '{name}' depends on {depends_on:?}");
        entry.depends_on = depends_on;
        entry
    }

    fn link_ensemble(
        &self,
        mut config: ModelConfig,
        selected: &[i64],
        signature_verified: Option<bool>,
    ) -> Result<BTreeMap<i64, VersionEntry>> {
        let started = Instant::now();
        let name = config.name.clone();
        // Refuses cycles and nesting deeper than MAX_DEPTH, before any composing model loads.
        self.check_cycles(&name, &config)?;
        self.load_missing_steps(&config);
        let e = graph::scheduling(&config).expect("an ensemble config").clone();
        let models = self.inner.models.load();
        let mut missing: Vec<&str> = Vec::new();
        for s in &e.step {
            let gone = models.get(&s.model_name).is_none_or(|m| m.is_unloaded());
            if gone && !missing.contains(&s.model_name.as_str()) {
                missing.push(&s.model_name);
            }
        }
        if !missing.is_empty() {
            return Err(Error::invalid_arg(format!(
                "ensemble {name} contains models that are not available or ambiguous: {}",
                missing.join(", ")
            )));
        }
        let mut composing = Vec::with_capacity(e.step.len());
        for s in &e.step {
            let m = &models[&s.model_name];
            let version = (s.model_version >= 0).then_some(s.model_version);
            let served = match version {
                Some(v) => m.versions.get(&v).and_then(|ve| ve.served.clone()),
                None => m.served().last().cloned(),
            };
            let Some(served) = served else {
                let model = &s.model_name;
                return Err(Error::invalid_arg(match (version, m.failure()) {
                    (Some(v), _) if !m.versions.is_empty() || m.error.is_none() => format!(
                        "ensemble '{name}' depends on '{model}' whose required version {v} is not loaded."
                    ),
                    (_, Some(why)) => format!(
                        "ensemble '{name}' depends on '{model}' which has no loaded version. Model '{model}' loading failed with error: {why}"
                    ),
                    (_, None) => {
                        format!(
                            "ensemble '{name}' depends on '{model}' which has no loaded version."
                        )
                    }
                }));
            };
            composing.push(served.config.clone());
        }
        drop(models);
        let mut plan = link(&config, &composing)?;
        plan.composer = Some(Arc::new(ServerModels(Arc::downgrade(&self.inner))));
        config.model_transaction_policy =
            Some(pb::ModelTransactionPolicy { decoupled: plan.decoupled });
        if e.max_inflight_requests > 0 {
            tracing::info!(
                "Ensemble model '{name}' configured with max_inflight_requests: {}",
                e.max_inflight_requests
            );
        }
        let plan = Arc::new(plan);
        let config = Arc::new(config);
        let options = &self.inner.options;
        let engine_inputs = crate::infer::EngineInputs {
            engine: "ensemble",
            names: config.input.iter().map(|i| i.name.clone()).collect(),
        };
        let mut versions = BTreeMap::new();
        for &v in selected {
            let stats = Arc::new(ModelStats::with_latency_metrics(
                options.metrics.summaries.clone().map(crate::stats::LatencyWindows::new),
                options.metrics.histograms.then(Default::default),
            ));
            let mut version = ModelVersion::new(
                config.clone(),
                v,
                Run::Ensemble(plan.clone()),
                stats,
                started.elapsed(),
                engine_inputs.clone(),
            );
            version.signature_verified = signature_verified;
            let served = Some(Arc::new(version));
            versions.insert(
                v,
                VersionEntry { state: ModelState::Ready, reason: String::new(), served },
            );
        }
        Ok(versions)
    }

    /// Every model the steps of ensemble `name` reach, nested ensembles included (none for a model that
    /// is not an ensemble), over all its served versions.
    pub fn composing_models(&self, name: &str) -> Vec<String> {
        let models = self.inner.models.load();
        let mut out: Vec<String> = Vec::new();
        let mut stack = vec![name.to_string()];
        while let Some(m) = stack.pop() {
            let Some(entry) = models.get(&m) else { continue };
            for version in entry.served() {
                for step in graph::step_models(&version.config) {
                    if step != name && !out.contains(&step) {
                        out.push(step.clone());
                        stack.push(step);
                    }
                }
            }
        }
        out
    }

    /// The composing models of model `name` as the server would load it: `config` for the ensemble being
    /// loaded, a loaded version's config, or the config in the repository.
    fn steps_of(&self, name: &str, loading: &str, config: &ModelConfig) -> Vec<String> {
        if name == loading {
            return graph::step_models(config);
        }
        if let Some(m) = self.inner.models.load().get(name)
            && let Some(v) = m.served().last()
        {
            return graph::step_models(&v.config);
        }
        let options = &self.inner.options;
        repository::locate(&options.model_repositories, name)
            .ok()
            .and_then(|dir| crate::config::read(&dir, name, options.autocomplete).ok())
            .map(|raw| graph::step_models(&raw.config))
            .unwrap_or_default()
    }

    /// Triton's "circular dependency between ensembles: A -> ... -> B -> A".
    fn check_cycles(&self, name: &str, config: &ModelConfig) -> Result<()> {
        let mut path: Vec<String> = Vec::new();
        let mut done: std::collections::HashSet<String> = Default::default();
        self.visit(name, name, config, &mut path, &mut done)
    }

    fn visit(
        &self,
        node: &str,
        loading: &str,
        config: &ModelConfig,
        path: &mut Vec<String>,
        done: &mut std::collections::HashSet<String>,
    ) -> Result<()> {
        if done.contains(node) {
            return Ok(());
        }
        if path.len() > MAX_DEPTH {
            return Err(Error::invalid_arg(format!(
                "ensemble '{loading}' nests ensembles more than {MAX_DEPTH} deep"
            )));
        }
        path.push(node.to_string());
        for step in self.steps_of(node, loading, config) {
            if path.contains(&step) {
                return Err(Error::invalid_arg(format!(
                    "circular dependency between ensembles: {step} -> ... -> {node} -> {step}"
                )));
            }
            self.visit(&step, loading, config, path, done)?;
        }
        path.pop();
        done.insert(node.to_string());
        Ok(())
    }

    /// Loads the composing models the server does not know yet from the repository (Triton loads an
    /// ensemble's steps with it). A model it knows, failed or unloaded, is left as it is.
    fn load_missing_steps(&self, config: &ModelConfig) {
        let options = &self.inner.options;
        for step in graph::step_models(config) {
            if self.inner.models.load().contains_key(&step) {
                continue;
            }
            let Ok(dir) = repository::locate(&options.model_repositories, &step) else { continue };
            tracing::info!("loading '{step}', a composing model of ensemble '{}'", config.name);
            let mut entry = self.build_entry(&step, &dir, None, None, None);
            entry.implicit = true;
            crate::table::log_outcome(&step, &entry);
            self.set_entry(&step, entry);
        }
    }

    /// Before an explicit load of ensemble `name`: its composing models that were unloaded load again, as
    /// Triton's load of an ensemble loads its steps. The caller holds the control lock.
    pub(crate) fn reload_unloaded_steps(
        &self,
        name: &str,
        dir: &std::path::Path,
        config: Option<&str>,
    ) {
        let options = &self.inner.options;
        let raw = match config {
            Some(json) => crate::config::from_json(json, dir, name),
            None => crate::config::read(dir, name, options.autocomplete),
        };
        let Ok(raw) = raw else { return };
        for step in graph::step_models(&raw.config) {
            let unloaded = self.inner.models.load().get(&step).is_some_and(|e| e.is_unloaded());
            if !unloaded || step == name {
                continue;
            }
            let Ok(step_dir) = repository::locate(&options.model_repositories, &step) else {
                continue;
            };
            tracing::info!("loading '{step}', a composing model of ensemble '{name}'");
            if let Err(e) = self.load_locked(&step, &step_dir, None, None) {
                tracing::error!("{}", e.message());
            }
        }
    }

    /// Builds again every ensemble that depends on `changed` (after it loaded, reloaded or unloaded), and
    /// the ensembles that depend on those, each once. An ensemble whose composing model is gone is unloaded
    /// with the reason; it loads again when the model returns. An ensemble loaded with a `config` override
    /// keeps what it was loaded with (its steps answer clear errors while a composing model is away). The
    /// caller holds the control lock.
    pub(crate) fn refresh_dependents(&self, changed: &str) {
        let mut done: std::collections::HashSet<String> = [changed.to_string()].into();
        let mut queue: std::collections::VecDeque<String> = [changed.to_string()].into();
        while let Some(changed) = queue.pop_front() {
            let models = self.inner.models.load_full();
            for (name, entry) in models.iter() {
                if done.contains(name) || entry.overridden || !entry.depends_on.contains(&changed) {
                    continue;
                }
                done.insert(name.clone());
                let Ok(dir) = repository::locate(&self.inner.options.model_repositories, name)
                else {
                    continue;
                };
                let mut rebuilt = self.build_entry(name, &dir, None, None, None);
                rebuilt.implicit = entry.implicit;
                let next = match rebuilt.failure() {
                    None => rebuilt,
                    Some(reason) => {
                        tracing::error!("ensemble '{name}' unloaded: {reason}");
                        if entry.served().next().is_none() {
                            rebuilt
                        } else {
                            let why = format!("{UNLOADED}: {reason}");
                            let mut retired =
                                ModelEntry::retired(entry, ModelState::Unavailable, &why);
                            retired.depends_on = rebuilt.depends_on;
                            retired.implicit = entry.implicit;
                            retired
                        }
                    }
                };
                crate::table::log_outcome(name, &next);
                for old in entry.served() {
                    self.inner.reaper.retire(old.clone());
                }
                self.set_entry(name, next);
                queue.push_back(name.clone());
            }
        }
    }

    /// `unload_dependents`: the composing models of ensemble entry `previous` that were loaded only for it
    /// and that no other ensemble uses are unloaded too.
    pub(crate) fn unload_steps_of(&self, name: &str, previous: &ModelEntry) {
        for step in &previous.depends_on {
            let models = self.inner.models.load_full();
            let Some(entry) = models.get(step) else { continue };
            let used = models.iter().any(|(n, e)| {
                n != name && e.served().next().is_some() && e.depends_on.contains(step)
            });
            if entry.implicit && !used {
                self.unload_locked(step, entry, self.inner.options.unload_timeout);
                self.unload_steps_of(step, entry);
            }
        }
    }
}

/// The steps of a loaded ensemble call the server's models (held weakly: the server owns the plan).
struct ServerModels(std::sync::Weak<crate::server::Inner>);

impl Composer for ServerModels {
    fn call(&self, request: crate::infer::InferRequest) -> Boxed<'static, Result<Answer>> {
        let inner = self.0.upgrade();
        Box::pin(async move {
            let server =
                Server { inner: inner.ok_or_else(|| Error::unavailable("Server exiting"))? };
            let model = server.model(&request.model_name, request.model_version)?;
            if model.decoupled {
                Ok(Answer::Many(Box::new(model.infer_decoupled(request)?)))
            } else {
                Ok(Answer::One(model.infer(request).await?.outputs))
            }
        })
    }
}

impl Responses for crate::model::DecoupledStream {
    fn next(&mut self) -> Boxed<'_, Option<Result<Vec<rampart_types::Tensor>>>> {
        Box::pin(async move {
            match crate::model::DecoupledStream::next(self).await? {
                Ok(crate::model::StreamedResponse { response: Some(r), .. }) => Some(Ok(r.outputs)),
                Ok(_) => None,
                Err(e) => Some(Err(e)),
            }
        })
    }
}
