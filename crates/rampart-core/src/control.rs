//! Model control (docs/protocol.md, "Model control"): the control modes, load requests, model-name
//! checks, the fingerprints polling compares, `file:` overrides written into a fresh directory, and
//! the reaper that lets replaced versions finish their requests off the request path.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rampart_types::{Error, Result};

use crate::model::ModelVersion;

/// `--model-control-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ModelControlMode {
    /// Load every model at startup; nothing changes afterwards.
    #[default]
    None,
    /// Load every model at startup, then follow the repository (`--repository-poll-secs`).
    Poll,
    /// Load `--load-model` models at startup; the repository API loads and unloads.
    Explicit,
}

impl ModelControlMode {
    pub fn parse(s: &str) -> Option<ModelControlMode> {
        match s {
            "none" => Some(ModelControlMode::None),
            "poll" => Some(ModelControlMode::Poll),
            "explicit" => Some(ModelControlMode::Explicit),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ModelControlMode::None => "none",
            ModelControlMode::Poll => "poll",
            ModelControlMode::Explicit => "explicit",
        }
    }
}

/// The parameters of a load request.
#[derive(Debug, Clone, Default)]
pub struct LoadRequest {
    /// `config`: a ModelConfig as JSON that replaces the model's config.pbtxt for this load.
    pub config: Option<String>,
    /// `file:<path>` entries: the model's files, written to a fresh directory (needs
    /// `--allow-model-file-override`).
    pub files: Vec<(String, Vec<u8>)>,
}

/// Most files one `file:` override may carry.
pub const MAX_OVERRIDE_FILES: usize = 256;
/// Most bytes one `file:` override may write in total.
pub const MAX_OVERRIDE_BYTES: u64 = 2 << 30;
/// Longest `file:` path, and longest component in it (bytes).
pub use crate::repository::MAX_OVERRIDE_PATH;
pub use crate::repository::MAX_PATH_COMPONENT;
pub use crate::repository::{MAX_MODEL_NAME, validate_model_name};

/// Writes the files of a `file:` override into a fresh private directory (mode 0700), refusing any path that
/// could leave it. The directory is removed when the returned handle drops.
pub(crate) fn write_override(files: &[(String, Vec<u8>)]) -> Result<tempfile::TempDir> {
    if files.len() > MAX_OVERRIDE_FILES {
        return Err(Error::invalid_arg(format!(
            "model file override carries {} files, at most {MAX_OVERRIDE_FILES} are allowed",
            files.len()
        )));
    }
    let total: u64 = files.iter().map(|(_, d)| d.len() as u64).sum();
    if total > MAX_OVERRIDE_BYTES {
        return Err(Error::invalid_arg(format!(
            "model file override carries {total} bytes, at most {MAX_OVERRIDE_BYTES} are allowed"
        )));
    }
    let checked: Vec<(&Path, &[u8])> = files
        .iter()
        .map(|(rel, data)| {
            let path = crate::repository::check_relative_path(rel).map_err(|why| {
                Error::invalid_arg(format!("Invalid file parameter 'file:{rel}': {why}"))
            })?;
            Ok((path, data.as_slice()))
        })
        .collect::<Result<_>>()?;
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("rampart-model-")
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir()
        .map_err(|e| {
            Error::internal(format!("cannot create a directory for the model file override: {e}"))
        })?;
    let root = dir.path().to_path_buf();
    for (rel, data) in checked {
        let target = root.join(rel);
        let write = || -> std::io::Result<()> {
            // Only directories and regular files are ever created here, and never through an existing
            // entry: `create_new` fails on anything already present, symlinks included.
            let mut at = root.clone();
            if let Some(parent) = rel.parent() {
                for c in parent.components() {
                    at.push(c);
                    match std::fs::symlink_metadata(&at) {
                        Ok(m) if m.is_dir() => {}
                        Ok(_) => {
                            return Err(std::io::Error::other(
                                "a file is in the way of a directory",
                            ));
                        }
                        Err(_) => std::fs::create_dir(&at)?,
                    }
                }
            }
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().write(true).create_new(true).open(&target)?;
            f.write_all(data)
        };
        write().map_err(|e| {
            Error::invalid_arg(format!(
                "Invalid file parameter 'file:{}': cannot write it: {e}",
                rel.display()
            ))
        })?;
    }
    Ok(dir)
}

/// What a model directory looked like: one hash for its own files (config, labels, …) and one per version
/// folder. Sizes, modification times and the contents of small top-level files go in.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Fingerprint {
    pub model: u64,
    pub versions: BTreeMap<i64, u64>,
}

/// How deep and how wide a fingerprint walk goes; a tree beyond that hashes as "truncated" (still stable).
const WALK_DEPTH: usize = 8;
const WALK_ENTRIES: usize = 20_000;
const HASH_CONTENT_BELOW: u64 = 1 << 20;

pub(crate) fn fingerprint(dir: &Path) -> Fingerprint {
    let mut out = Fingerprint::default();
    let mut model = std::hash::DefaultHasher::new();
    let mut entries: Vec<_> =
        std::fs::read_dir(dir).into_iter().flatten().filter_map(|e| e.ok()).collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name();
        let path = e.path();
        let Ok(meta) = std::fs::metadata(&path) else { continue };
        if meta.is_dir() {
            let version = name
                .to_str()
                .filter(|n| crate::repository::is_version_dir(n))
                .and_then(|n| n.parse::<i64>().ok());
            match version {
                Some(v) => {
                    let mut h = std::hash::DefaultHasher::new();
                    let mut budget = WALK_ENTRIES;
                    walk(&path, Path::new(""), 0, &mut budget, &mut h);
                    out.versions.insert(v, h.finish());
                }
                None => {
                    let mut budget = WALK_ENTRIES;
                    walk(&path, Path::new(&name), 0, &mut budget, &mut model);
                }
            }
        } else {
            name.hash(&mut model);
            hash_file(&path, &meta, true, &mut model);
        }
    }
    out.model = model.finish();
    out
}

fn hash_file(path: &Path, meta: &std::fs::Metadata, content: bool, h: &mut impl Hasher) {
    meta.len().hash(h);
    meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).hash(h);
    if content && meta.len() < HASH_CONTENT_BELOW {
        std::fs::read(path).ok().hash(h);
    }
}

fn walk(dir: &Path, rel: &Path, depth: usize, budget: &mut usize, h: &mut impl Hasher) {
    if depth > WALK_DEPTH {
        "truncated".hash(h);
        return;
    }
    let mut entries: Vec<_> =
        std::fs::read_dir(dir).into_iter().flatten().filter_map(|e| e.ok()).collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        if *budget == 0 {
            "truncated".hash(h);
            return;
        }
        *budget -= 1;
        let rel = rel.join(e.file_name());
        rel.hash(h);
        let Ok(meta) = std::fs::metadata(e.path()) else { continue };
        if meta.is_dir() {
            walk(&e.path(), &rel, depth + 1, budget, h);
        } else {
            hash_file(&e.path(), &meta, false, h);
        }
    }
}

/// Waits until none of `versions` is answering a request (up to `patience`), then hands them to the reaper.
/// Returns whether all were idle.
pub(crate) fn drain(versions: Vec<Arc<ModelVersion>>, patience: Duration, reaper: &Reaper) -> bool {
    let deadline = Instant::now() + patience;
    let idle = loop {
        if !versions.iter().any(|v| v.busy()) {
            break true;
        }
        if Instant::now() >= deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    for v in versions {
        reaper.retire(v);
    }
    idle
}

/// A thread that holds replaced model versions until their last request is answered, then drops them, so
/// an instance pool never shuts down (joining its threads) on an async worker.
pub(crate) struct Reaper {
    tx: std::sync::Mutex<Option<crossbeam_channel::Sender<Arc<ModelVersion>>>>,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Reaper {
    pub fn new() -> Reaper {
        Reaper { tx: std::sync::Mutex::new(None), thread: std::sync::Mutex::new(None) }
    }

    pub fn retire(&self, v: Arc<ModelVersion>) {
        let mut tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        let sender = tx.get_or_insert_with(|| {
            let (tx, rx) = crossbeam_channel::unbounded::<Arc<ModelVersion>>();
            let handle = std::thread::Builder::new()
                .name("rampart-reaper".into())
                .spawn(move || {
                    let mut held: Vec<Arc<ModelVersion>> = Vec::new();
                    loop {
                        match rx.recv_timeout(Duration::from_millis(20)) {
                            Ok(v) => held.push(v),
                            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                            Err(crossbeam_channel::RecvTimeoutError::Disconnected)
                                if held.is_empty() =>
                            {
                                return;
                            }
                            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                                std::thread::sleep(Duration::from_millis(20))
                            }
                        }
                        held.retain(|v| Arc::strong_count(v) > 1);
                    }
                })
                .expect("spawn the reaper thread");
            *self.thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
            tx
        });
        if let Err(e) = sender.send(v) {
            // The reaper is gone (only at shutdown): dropping here is the fallback.
            drop(e.into_inner());
        }
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        self.tx.get_mut().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = self.thread.get_mut().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_names() {
        for ok in ["simple", "a.b", "x-1_2", "ünïcode", "..a", "a.."] {
            assert!(validate_model_name(ok).is_ok(), "{ok}");
        }
        let msg = |n: &str| validate_model_name(n).unwrap_err().message().to_string();
        assert!(msg("").contains("cannot be empty"));
        assert!(msg("  ").contains("cannot be empty"));
        assert!(msg("..").contains("path traversal"));
        assert!(msg(".").contains("path traversal"));
        assert!(msg("a/b").contains("path traversal"));
        assert!(msg("a\\b").contains("path traversal"));
        assert!(msg("a\nb").contains("control characters"));
        assert!(msg("a\0").contains("control characters"));
        assert!(msg(&"x".repeat(256)).contains("at most 255"));
    }

    #[test]
    fn override_paths_stay_inside() {
        for bad in
            ["", "/etc/passwd", "../x", "1/../../x", "1/..", "a\\b", "a\0b", &"x/".repeat(600)]
        {
            let e = write_override(&[(bad.to_string(), b"x".to_vec())]).unwrap_err();
            assert_eq!(e.code(), rampart_types::Code::InvalidArg, "{bad}: {e}");
        }
        let dir = write_override(&[
            ("1/model.onnx".into(), b"abc".to_vec()),
            ("./labels.txt".into(), b"a\nb".to_vec()),
            ("1/sub/x.bin".into(), vec![]),
        ])
        .unwrap();
        assert_eq!(std::fs::read(dir.path().join("1/model.onnx")).unwrap(), b"abc");
        assert_eq!(std::fs::read(dir.path().join("labels.txt")).unwrap(), b"a\nb");
        assert!(dir.path().join("1/sub/x.bin").is_file());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(dir.path()).unwrap().permissions().mode() & 0o077,
            0,
            "private directory"
        );
        // The same path twice, or a file where a directory must go, is refused rather than overwritten.
        assert!(write_override(&[("a".into(), vec![1]), ("a".into(), vec![2])]).is_err());
        assert!(write_override(&[("a".into(), vec![1]), ("a/b".into(), vec![2])]).is_err());
        let many: Vec<(String, Vec<u8>)> =
            (0..=MAX_OVERRIDE_FILES).map(|i| (format!("f{i}"), vec![])).collect();
        assert!(write_override(&many).unwrap_err().message().contains("at most"));
        let path = dir.path().to_path_buf();
        drop(dir);
        assert!(!path.exists(), "removed with its handle");
    }

    #[test]
    fn fingerprints_follow_changes() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("1")).unwrap();
        std::fs::write(d.join("config.pbtxt"), "max_batch_size: 0").unwrap();
        std::fs::write(d.join("1/model.onnx"), "one").unwrap();
        let a = fingerprint(d);
        assert_eq!(a, fingerprint(d), "stable");
        assert_eq!(a.versions.keys().copied().collect::<Vec<_>>(), vec![1]);
        // A config edit of the same size and within the same clock tick still shows (small files are hashed).
        std::fs::write(d.join("config.pbtxt"), "max_batch_size: 8").unwrap();
        let b = fingerprint(d);
        assert_ne!(a.model, b.model);
        assert_eq!(a.versions, b.versions);
        std::fs::create_dir(d.join("2")).unwrap();
        std::fs::write(d.join("2/model.onnx"), "two").unwrap();
        let c = fingerprint(d);
        assert_eq!(c.versions.len(), 2);
        assert_eq!(c.versions[&1], b.versions[&1]);
        std::fs::write(d.join("1/model.onnx"), "one, longer").unwrap();
        assert_ne!(fingerprint(d).versions[&1], c.versions[&1]);
        // Folders that are not versions count as the model's own files.
        std::fs::create_dir(d.join("01")).unwrap();
        std::fs::write(d.join("01/x"), "x").unwrap();
        let e = fingerprint(d);
        assert_eq!(e.versions.len(), 2);
        assert_ne!(e.model, c.model);
    }
}
