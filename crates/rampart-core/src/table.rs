//! The model table's entries: what the server knows of each model and its versions. Entries are immutable;
//! the life cycle (`lifecycle.rs`) builds new ones and swaps the table.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::control;
use crate::model::{ModelState, ModelVersion};

#[derive(Clone)]
pub(crate) struct VersionEntry {
    pub(crate) state: ModelState,
    pub(crate) reason: String,
    pub(crate) served: Option<Arc<ModelVersion>>,
}

/// One model as the server knows it. Entries are immutable: a load, reload or unload builds a new one and
/// swaps the whole table, so a request sees either the old model or the new one, never a mix.
#[derive(Clone)]
pub(crate) struct ModelEntry {
    pub(crate) versions: BTreeMap<i64, VersionEntry>,
    /// Set when the model failed before any version could be considered (bad config, duplicate name, …), or
    /// while its first load runs.
    pub(crate) error: Option<String>,
    pub(crate) loading: bool,
    /// The files this entry was built from, for polling to tell what changed.
    pub(crate) fingerprint: Option<control::Fingerprint>,
    /// Files that failed to load over this entry (which kept serving): polling retries only once they change.
    pub(crate) failed_fingerprint: Option<control::Fingerprint>,
    /// Built from a `config` or `file:` override: a later load reloads it even if the repository is unchanged.
    pub(crate) overridden: bool,
    /// The directory of a `file:` override, removed once no table refers to this entry.
    pub(crate) _files: Option<Arc<tempfile::TempDir>>,
    /// An ensemble's composing models: when one of them loads, reloads or unloads, this entry is built
    /// again (an explicit unload of the ensemble clears it).
    pub(crate) depends_on: Vec<String>,
    /// Loaded only because an ensemble needed it (explicit mode): `unload_dependents` takes it along.
    pub(crate) implicit: bool,
}

impl ModelEntry {
    pub(crate) fn failed(reason: String) -> Self {
        ModelEntry { error: Some(reason), ..Self::empty() }
    }

    pub(crate) fn empty() -> Self {
        ModelEntry {
            versions: BTreeMap::new(),
            error: None,
            loading: false,
            fingerprint: None,
            failed_fingerprint: None,
            overridden: false,
            _files: None,
            depends_on: Vec::new(),
            implicit: false,
        }
    }

    pub(crate) fn served(&self) -> impl Iterator<Item = &Arc<ModelVersion>> {
        self.versions.values().filter_map(|v| v.served.as_ref())
    }

    /// Every version was unloaded (on request, or with its ensemble's composing model).
    pub(crate) fn is_unloaded(&self) -> bool {
        self.error.is_none()
            && !self.versions.is_empty()
            && self.versions.values().all(VersionEntry::is_unloaded)
    }

    /// The first failure of this entry, if any.
    pub(crate) fn failure(&self) -> Option<String> {
        self.error.clone().or_else(|| {
            self.versions.values().find(|v| v.state != ModelState::Ready).map(|v| v.reason.clone())
        })
    }

    /// Every version of `from` marked `state`, none served.
    pub(crate) fn retired(from: &ModelEntry, state: ModelState, reason: &str) -> ModelEntry {
        let versions = from
            .versions
            .keys()
            .map(|&v| (v, VersionEntry { state, reason: reason.to_string(), served: None }))
            .collect();
        ModelEntry { versions, ..Self::empty() }
    }
}

/// The reason an unloaded version reports (Triton's wording; strict readiness accepts it).
pub(crate) const UNLOADED: &str = "unloaded";

impl VersionEntry {
    /// Unloaded: on request, or (reason "unloaded: …") because an ensemble's composing model went away.
    pub(crate) fn is_unloaded(&self) -> bool {
        self.state == ModelState::Unavailable
            && (self.reason == UNLOADED || self.reason.starts_with("unloaded: "))
    }
}

pub(crate) type Models = BTreeMap<String, Arc<ModelEntry>>;

/// Logs how a load went, version by version.
pub(crate) fn log_outcome(name: &str, entry: &ModelEntry) {
    if let Some(e) = &entry.error {
        tracing::error!("failed to load '{name}': {e}");
    }
    for (v, ve) in &entry.versions {
        match ve.state {
            ModelState::Ready => tracing::info!("successfully loaded '{name}' version {v}"),
            _ => tracing::error!("failed to load '{name}' version {v}: {}", ve.reason),
        }
    }
}
