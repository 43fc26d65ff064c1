//! Local model repositories (docs/protocol.md, "Model repository"): one directory per model,
//! numeric version folders inside.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use rampart_model_config::ModelConfig;
use rampart_model_config::pb::model_version_policy::PolicyChoice;
use rampart_types::{Error, Result};

/// Longest relative path a client or a remote store may name inside a model directory.
pub const MAX_OVERRIDE_PATH: usize = 1024;
/// Longest component of such a path.
pub const MAX_PATH_COMPONENT: usize = 255;

/// Checks a path that comes from a client or a remote store: relative, plain components only, bounded
/// lengths.
/// The error says why, without naming the path (callers say what the path was for).
pub(crate) fn check_relative_path(rel: &str) -> std::result::Result<&Path, String> {
    let bad = |why: &str| why.to_string();
    if rel.is_empty() {
        return Err(bad("the path is empty"));
    }
    if rel.len() > MAX_OVERRIDE_PATH {
        return Err(bad(&format!("the path is longer than {MAX_OVERRIDE_PATH} bytes")));
    }
    if rel.chars().any(char::is_control) || rel.contains('\\') {
        return Err(bad("control characters and backslashes are not allowed"));
    }
    let path = Path::new(rel);
    for c in path.components() {
        match c {
            Component::Normal(part) if part.len() <= MAX_PATH_COMPONENT => {}
            Component::Normal(_) => {
                return Err(bad(&format!(
                    "a path component is longer than {MAX_PATH_COMPONENT} bytes"
                )));
            }
            Component::CurDir => {}
            _ => {
                return Err(bad(
                    "the path must stay within the model directory (no '..', no absolute path)",
                ));
            }
        }
    }
    Ok(path)
}

/// Longest model name (bytes): a model name is a directory name.
pub const MAX_MODEL_NAME: usize = 255;

/// Model names are directory names: checked on every API that takes one.
pub fn validate_model_name(name: &str) -> Result<()> {
    if name.trim().is_empty() {
        return Err(Error::invalid_arg(
            "Model name cannot be empty. Please enter a valid name to deploy.",
        ));
    }
    // Control characters first: the traversal message repeats the name.
    if name.chars().any(char::is_control) {
        return Err(Error::invalid_arg(format!(
            "invalid model name {name:?}: control characters are not allowed"
        )));
    }
    if name == ".." || name == "." || name.contains('/') || name.contains('\\') {
        return Err(Error::invalid_arg(format!(
            "invalid model name '{name}', model name must not contain path traversal characters"
        )));
    }
    if name.len() > MAX_MODEL_NAME {
        return Err(Error::invalid_arg(format!(
            "invalid model name: {} bytes long, at most {MAX_MODEL_NAME} are allowed",
            name.len()
        )));
    }
    Ok(())
}

/// Every model directory found, by name. A name found in two repositories maps to all its directories.
pub(crate) fn scan(repositories: &[PathBuf]) -> Result<BTreeMap<String, Vec<PathBuf>>> {
    let mut models: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for repo in repositories {
        let rd = std::fs::read_dir(repo).map_err(|e| {
            Error::internal(format!("failed to open model repository '{}': {e}", repo.display()))
        })?;
        for entry in rd {
            let entry = entry.map_err(|e| {
                Error::internal(format!("failed to read '{}': {e}", repo.display()))
            })?;
            let Ok(name) = entry.file_name().into_string() else { continue };
            if name.starts_with('.') || !entry.path().is_dir() {
                continue;
            }
            if let Err(e) = validate_model_name(&name) {
                tracing::warn!(
                    "ignoring directory {:?} in model repository '{}': {}",
                    name,
                    repo.display(),
                    e.message()
                );
                continue;
            }
            models.entry(name).or_default().push(entry.path());
        }
    }
    Ok(models)
}

/// Version folders: decimal names without a leading zero.
pub(crate) fn versions(model_dir: &Path) -> Vec<i64> {
    let mut out: Vec<i64> = std::fs::read_dir(model_dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| is_version_dir(n))
        .filter_map(|n| n.parse::<i64>().ok())
        .collect();
    out.sort_unstable();
    out
}

/// Version folder names are decimal, without a leading zero.
pub(crate) fn is_version_dir(n: &str) -> bool {
    !n.starts_with('0') && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())
}

/// The directory of model `name`: it must be in exactly one repository.
pub(crate) fn locate(repositories: &[PathBuf], name: &str) -> Result<PathBuf> {
    let found: Vec<PathBuf> =
        repositories.iter().map(|r| r.join(name)).filter(|d| d.is_dir()).collect();
    match found.len() {
        0 => Err(Error::invalid_arg(format!(
            "failed to load '{name}': there is no model directory '{name}' in the model repository"
        ))),
        1 => Ok(found.into_iter().next().expect("one")),
        _ => Err(Error::invalid_arg(duplicate_message(name, &found))),
    }
}

pub(crate) fn duplicate_message(name: &str, dirs: &[PathBuf]) -> String {
    let list: Vec<String> = dirs.iter().map(|d| format!("'{}'", d.display())).collect();
    format!("model '{name}' appears in more than one model repository ({})", list.join(", "))
}

/// Applies the config's version policy to the available versions.
pub(crate) fn select_versions(config: &ModelConfig, available: &[i64]) -> Result<Vec<i64>> {
    let name = &config.name;
    if available.is_empty() {
        return Err(Error::invalid_arg(format!(
            "model '{name}': no version directories found (expected numeric folders such as '1/')"
        )));
    }
    match config.version_policy.as_ref().and_then(|p| p.policy_choice.as_ref()) {
        Some(PolicyChoice::All(_)) => Ok(available.to_vec()),
        Some(PolicyChoice::Specific(s)) => {
            let mut out = Vec::new();
            for v in &s.versions {
                if !available.contains(v) {
                    return Err(Error::invalid_arg(format!(
                        "model '{name}': version_policy.specific lists version {v}, but there is no folder '{v}/'"
                    )));
                }
                out.push(*v);
            }
            out.sort_unstable();
            out.dedup();
            Ok(out)
        }
        Some(PolicyChoice::Latest(l)) => {
            let n = (l.num_versions as usize).max(1);
            Ok(available[available.len().saturating_sub(n)..].to_vec())
        }
        None => Ok(available[available.len() - 1..].to_vec()),
    }
}
