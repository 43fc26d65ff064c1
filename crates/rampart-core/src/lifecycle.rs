//! The model life cycle: the table of models, and load, reload, unload and repository polling. A load
//! builds a new entry off to the side ([`crate::load`]) and swaps the table in one step.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rampart_types::{Error, Result};

use crate::control::{self, LoadRequest, ModelControlMode};
use crate::model::{ModelState, ModelVersion};
use crate::repository;
use crate::server::{IndexEntry, Server};
use crate::table::{ModelEntry, Models, UNLOADED, log_outcome};

impl Server {
    /// Whether a model (or one version) is ready: loaded, and its own readiness check (a Python model's
    /// `is_ready()`) agrees.
    pub async fn model_ready(&self, name: &str, version: Option<i64>) -> Result<bool> {
        let Some(served) = self.ready_version(name, version)? else { return Ok(false) };
        if served.readiness.is_empty() {
            return Ok(true);
        }
        let checks = served.readiness.clone();
        Ok(tokio::task::spawn_blocking(move || checks.iter().all(|c| c.is_ready()))
            .await
            .unwrap_or(false))
    }

    /// [`Server::model_ready`] for a caller that may block (model code's `is_model_ready`).
    pub fn model_ready_blocking(&self, name: &str, version: Option<i64>) -> Result<bool> {
        Ok(self
            .ready_version(name, version)?
            .is_some_and(|m| m.readiness.iter().all(|c| c.is_ready())))
    }

    /// The version a readiness request is about, `None` when it is not ready.
    fn ready_version(&self, name: &str, version: Option<i64>) -> Result<Option<Arc<ModelVersion>>> {
        match self.model(name, version) {
            Ok(m) => Ok(Some(m)),
            Err(e) if e.code() == rampart_types::Code::Unavailable => Ok(None),
            Err(e) => {
                // A known model with no ready version is "not ready", not "unknown".
                if version.is_none() && self.inner.models.load().contains_key(name) {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    /// Triton's startup model table.
    pub fn model_status_table(&self) -> String {
        let rows: Vec<(String, String, String)> = self
            .repository_index(false)
            .into_iter()
            .filter_map(|e| {
                let status = match e.state? {
                    ModelState::Ready => "READY".to_string(),
                    s => format!("{}: {}", s.as_str(), e.reason),
                };
                Some((e.name, e.version, status))
            })
            .collect();
        let w0 = rows.iter().map(|r| r.0.len()).max().unwrap_or(0).max(5);
        let w1 = rows.iter().map(|r| r.1.len()).max().unwrap_or(0).max(7);
        let w2 = rows.iter().map(|r| r.2.len()).max().unwrap_or(0).max(6);
        let line = format!("+-{}-+-{}-+-{}-+\n", "-".repeat(w0), "-".repeat(w1), "-".repeat(w2));
        let mut out = String::new();
        out.push_str(&line);
        out.push_str(&format!("| {:w0$} | {:w1$} | {:w2$} |\n", "Model", "Version", "Status"));
        out.push_str(&line);
        for (m, v, s) in rows {
            out.push_str(&format!("| {m:w0$} | {v:w1$} | {s:w2$} |\n"));
        }
        out.push_str(&line);
        out
    }

    /// Loads or reloads model `name` (explicit mode; `repository` is the optional repository name of the
    /// request). The old versions serve until the new ones are READY; if the new ones fail, the old ones keep
    /// serving and the error is returned. Blocking: call it from a blocking thread.
    pub fn load_model(&self, repository: &str, name: &str, request: LoadRequest) -> Result<()> {
        self.check_model_control(repository)?;
        control::validate_model_name(name)?;
        let options = &self.inner.options;
        if !request.files.is_empty() {
            if !options.allow_model_file_override {
                return Err(Error::new(
                    rampart_types::Code::PermissionDenied,
                    format!(
                        "load of '{name}' refused: 'file:' parameters upload model files, which this server does not allow (start it with --allow-model-file-override=true to permit it)"
                    ),
                ));
            }
            if request.config.is_none() {
                return Err(Error::invalid_arg(
                    "Load parameter 'config' must be specified for model file override",
                ));
            }
        }
        let _control = self.inner.control.lock().unwrap_or_else(|e| e.into_inner());
        let (dir, files) = if request.files.is_empty() {
            (repository::locate(&options.model_repositories, name)?, None)
        } else {
            let tmp = control::write_override(&request.files)?;
            (tmp.path().to_path_buf(), Some(Arc::new(tmp)))
        };
        if files.is_none() {
            self.reload_unloaded_steps(name, &dir, request.config.as_deref());
        }
        self.load_locked(name, &dir, request.config.as_deref(), files)
    }

    /// Loads or reloads model `name` from `dir`, a model directory outside the repositories: the SageMaker
    /// multi-model load, whose front end decides which directories are acceptable. Explicit mode only.
    /// Blocking.
    /// The model is served as `name`; its config may name it after its directory instead. A failed first load
    /// leaves nothing behind (no UNAVAILABLE entry to turn readiness false).
    pub fn load_model_from(&self, name: &str, dir: &Path) -> Result<()> {
        self.check_model_control("")?;
        control::validate_model_name(name)?;
        let _control = self.inner.control.lock().unwrap_or_else(|e| e.into_inner());
        let known = self.inner.models.load().contains_key(name);
        let result = self.load_locked(name, dir, None, None);
        if result.is_err() && !known {
            self.inner.models.rcu(|models| {
                let mut next = Models::clone(models);
                next.remove(name);
                next
            });
        }
        result
    }

    /// The common end of a load; the caller holds the control lock.
    pub(crate) fn load_locked(
        &self,
        name: &str,
        dir: &Path,
        config: Option<&str>,
        files: Option<Arc<tempfile::TempDir>>,
    ) -> Result<()> {
        let previous = self.inner.models.load().get(name).cloned();
        if previous.as_ref().is_none_or(|p| p.served().next().is_none()) {
            self.set_entry(name, ModelEntry { loading: true, ..ModelEntry::empty() });
        }
        let entry = self.build_entry(name, dir, config, files, previous.as_deref());
        self.install(name, entry, previous)
    }

    /// Unloads model `name` (explicit mode): new requests for it are refused at once, and the call returns once
    /// its in-flight requests are answered (or after `unload_timeout`; they still finish). Unloading a model
    /// that is not loaded succeeds. Blocking.
    pub fn unload_model(
        &self,
        repository: &str,
        name: &str,
        unload_dependents: bool,
    ) -> Result<()> {
        self.check_model_control(repository)?;
        control::validate_model_name(name)?;
        let _control = self.inner.control.lock().unwrap_or_else(|e| e.into_inner());
        let Some(previous) = self.inner.models.load().get(name).cloned() else {
            return match repository::locate(&self.inner.options.model_repositories, name) {
                Ok(_) => Ok(()),
                Err(_) => Err(Error::not_found(format!(
                    "failed to unload '{name}': no model of that name is loaded or in the model repository"
                ))),
            };
        };
        self.unload_locked(name, &previous, self.inner.options.unload_timeout);
        if unload_dependents {
            // The composing models loaded only for this ensemble go with it.
            self.unload_steps_of(name, &previous);
        }
        Ok(())
    }

    /// Marks the versions of `previous` UNLOADING, waits up to `patience` for their requests, then records
    /// them as unloaded. The caller holds the control lock.
    pub(crate) fn unload_locked(&self, name: &str, previous: &Arc<ModelEntry>, patience: Duration) {
        let served: Vec<Arc<ModelVersion>> = previous.served().cloned().collect();
        self.set_entry(name, ModelEntry::retired(previous, ModelState::Unloading, "unloading"));
        let drained = control::drain(served, patience, &self.inner.reaper);
        if !drained {
            tracing::warn!(
                "model '{name}' unloaded with requests still running; they finish in the background"
            );
        }
        self.set_entry(name, ModelEntry::retired(previous, ModelState::Unavailable, UNLOADED));
        tracing::info!("successfully unloaded '{name}'");
        self.refresh_dependents(name);
    }

    /// Brings the served models in line with the repository (poll mode): new models load, removed ones
    /// unload, changed ones reload — each only if its files changed since the last look. Blocking.
    pub fn poll_repository(&self) -> Result<()> {
        let options = &self.inner.options;
        let _control = self.inner.control.lock().unwrap_or_else(|e| e.into_inner());
        // An unreachable store changes nothing (rather than unloading everything it holds).
        for r in &self.inner.remotes {
            r.sync()?;
        }
        let found = repository::scan(&options.model_repositories)?;
        let current = self.inner.models.load_full();
        for (name, entry) in current.iter() {
            if !found.contains_key(name) && !entry.is_unloaded() {
                self.unload_locked(name, entry, Duration::ZERO);
            }
        }
        for (name, dirs) in found {
            let previous = current.get(&name).cloned();
            if let [dir] = dirs.as_slice() {
                let unchanged = previous.as_ref().is_some_and(|p| {
                    let now = Some(control::fingerprint(dir));
                    !p.overridden && (p.fingerprint == now || p.failed_fingerprint == now)
                });
                if unchanged {
                    continue;
                }
                tracing::info!(
                    "model '{name}' {} in the repository: loading",
                    if previous.is_some() { "changed" } else { "appeared" }
                );
                let entry = self.build_entry(&name, dir, None, None, previous.as_deref());
                if let Err(e) = self.install(&name, entry, previous) {
                    tracing::error!("{}", e.message());
                }
            } else if previous.as_ref().is_none_or(|p| p.error.is_none()) {
                let message = repository::duplicate_message(&name, &dirs);
                tracing::error!("{message}");
                if previous.as_ref().is_none_or(|p| p.served().next().is_none()) {
                    self.set_entry(&name, ModelEntry::failed(message));
                }
            }
        }
        Ok(())
    }

    /// Puts a newly built entry in the table. A failed build never replaces served versions: the old ones
    /// stay and the error is returned.
    pub(crate) fn install(
        &self,
        name: &str,
        entry: ModelEntry,
        previous: Option<Arc<ModelEntry>>,
    ) -> Result<()> {
        log_outcome(name, &entry);
        let failure = entry.failure();
        let keep_old =
            failure.is_some() && previous.as_ref().is_some_and(|p| p.served().next().is_some());
        if keep_old {
            let reason = failure.unwrap_or_default();
            tracing::warn!(
                "model '{name}': the new files failed to load; the previous versions keep serving"
            );
            if let Some(previous) = previous {
                let failed_fingerprint = entry.fingerprint.clone();
                self.set_entry(
                    name,
                    ModelEntry { failed_fingerprint, ..ModelEntry::clone(&previous) },
                );
            }
            return Err(Error::invalid_arg(format!("failed to load '{name}': {reason}")));
        }
        let entry = Arc::new(entry);
        self.set_entry(name, entry.clone());
        self.refresh_dependents(name);
        if let Some(previous) = previous {
            // Versions the new entry did not take over finish their requests, then go.
            for old in previous.served() {
                if !entry.served().any(|new| Arc::ptr_eq(new, old)) {
                    self.inner.reaper.retire(old.clone());
                }
            }
        }
        match failure {
            Some(reason) => Err(Error::invalid_arg(format!("failed to load '{name}': {reason}"))),
            None => Ok(()),
        }
    }

    pub(crate) fn set_entry(&self, name: &str, entry: impl Into<Arc<ModelEntry>>) {
        let entry = entry.into();
        self.inner.models.rcu(|models| {
            let mut next = Models::clone(models);
            next.insert(name.to_string(), entry.clone());
            next
        });
    }

    /// Errors for load and unload requests the server does not take: a repository name, or a mode other than
    /// explicit. Front ends call it before they parse a request's parameters.
    pub fn check_model_control(&self, repository: &str) -> Result<()> {
        if !repository.is_empty() {
            return Err(Error::unsupported("'repository_name' specification is not supported"));
        }
        if self.inner.options.model_control_mode != ModelControlMode::Explicit {
            return Err(Error::unavailable(
                "explicit model load / unload is not allowed if polling is enabled",
            ));
        }
        Ok(())
    }

    /// Every model the server knows, and (as in Triton) every model directory in the repositories that is
    /// not loaded, without a state.
    pub fn repository_index(&self, ready_only: bool) -> Vec<IndexEntry> {
        let models = self.inner.models.load();
        let mut out = Vec::new();
        let on_disk = repository::scan(&self.inner.options.model_repositories).unwrap_or_default();
        let mut names: Vec<&String> =
            models.keys().chain(on_disk.keys().filter(|n| !models.contains_key(*n))).collect();
        names.sort();
        for name in names {
            let Some(m) = models.get(name) else {
                if !ready_only {
                    out.push(IndexEntry {
                        name: name.clone(),
                        version: String::new(),
                        state: None,
                        reason: String::new(),
                    });
                }
                continue;
            };
            if m.error.is_some() || m.loading {
                if !ready_only {
                    let (state, reason) = match &m.error {
                        Some(e) => (ModelState::Unavailable, e.clone()),
                        None => (ModelState::Loading, String::new()),
                    };
                    out.push(IndexEntry {
                        name: name.clone(),
                        version: String::new(),
                        state: Some(state),
                        reason,
                    });
                }
                continue;
            }
            for (v, ve) in &m.versions {
                if ready_only && ve.state != ModelState::Ready {
                    continue;
                }
                out.push(IndexEntry {
                    name: name.clone(),
                    version: v.to_string(),
                    state: Some(ve.state),
                    reason: ve.reason.clone(),
                });
            }
        }
        out
    }
}
