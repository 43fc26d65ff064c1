//! `EXECUTION_ENV_PATH`: a model's own Python environment (Triton's conda-pack archives), confined to the
//! model directory.
//!
//! The parameter names a directory holding `bin/python3` (an environment unpacked already, or a venv), or an
//! archive (`.tar.gz`, `.tgz`, `.tar`) that the server unpacks once into a private directory of its own,
//! bounded in size and entries, with no entry outside it. `$$TRITON_MODEL_DIRECTORY` stands for the model's
//! directory and a relative path is taken from there; the resolved path must stay inside it. The workers
//! of such a model run the environment's `bin/python3` under the same sandbox as any worker, with the
//! environment readable; nothing of it runs in the server or outside the sandbox, so its interpreter is not
//! probed beforehand: a missing numpy is the worker's load error.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rampart_types::{Error, InstanceSpec, Result};

use crate::worker::Setup;

pub(crate) const PARAMETER: &str = "EXECUTION_ENV_PATH";
/// The largest unpacked environment.
const MAX_BYTES: u64 = 16 << 30;
/// The most entries an archive may hold.
const MAX_ENTRIES: u64 = 500_000;

/// Environments unpacked for the engine's models, by archive (path, modification time), kept while the
/// engine lives.
#[derive(Default)]
pub(crate) struct Environments {
    unpacked: Mutex<HashMap<ArchiveVersion, Arc<tempfile::TempDir>>>,
}

/// An archive's path and modification time.
type ArchiveVersion = (PathBuf, Option<SystemTime>);

impl Environments {
    /// The setup of a model's workers: the engine's, or its own environment's.
    pub(crate) fn setup(&self, base: &Arc<Setup>, spec: &InstanceSpec) -> Result<Arc<Setup>> {
        let Some(value) = spec.parameters.get(PARAMETER) else { return Ok(base.clone()) };
        let path = confined(spec, value)?;
        let root = if path.is_dir() { path } else { self.unpack(spec, &path)? };
        let interpreter = root.join("bin").join("python3");
        if !interpreter.exists() {
            return Err(bad(
                spec,
                &format!("the environment has no bin/python3 ({})", root.display()),
            ));
        }
        let mut setup = Setup::clone(base);
        setup.interpreter = interpreter;
        setup.readable.push(root);
        Ok(Arc::new(setup))
    }

    /// The directory `archive` is unpacked in (once per archive version).
    fn unpack(&self, spec: &InstanceSpec, archive: &Path) -> Result<PathBuf> {
        let modified = std::fs::metadata(archive).and_then(|m| m.modified()).ok();
        let key = (archive.to_path_buf(), modified);
        let mut unpacked = self.unpacked.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(dir) = unpacked.get(&key) {
            return Ok(dir.path().to_path_buf());
        }
        let dir = tempfile::Builder::new()
            .prefix("rampart-python-env-")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .tempdir()
            .map_err(|e| bad(spec, &format!("cannot create a directory to unpack it in: {e}")))?;
        extract(archive, dir.path())
            .map_err(|e| bad(spec, &format!("unpacking {}: {e}", archive.display())))?;
        tracing::info!(
            "python model '{}': unpacked {} for its workers",
            spec.model_name,
            archive.display()
        );
        let path = dir.path().to_path_buf();
        unpacked.insert(key, Arc::new(dir));
        Ok(path)
    }
}

/// `value` with `$$TRITON_MODEL_DIRECTORY` replaced, resolved inside the model directory.
fn confined(spec: &InstanceSpec, value: &str) -> Result<PathBuf> {
    let dir = spec.model_dir.to_string_lossy();
    let text = value.trim().replace("$$TRITON_MODEL_DIRECTORY", &dir);
    let path = spec.model_dir.join(text);
    let real = std::fs::canonicalize(&path)
        .map_err(|e| bad(spec, &format!("'{}': {e}", path.display())))?;
    let model_dir =
        std::fs::canonicalize(&spec.model_dir).unwrap_or_else(|_| spec.model_dir.clone());
    if !real.starts_with(&model_dir) {
        return Err(bad(spec, &format!("'{value}' must stay within the model directory")));
    }
    Ok(real)
}

fn bad(spec: &InstanceSpec, what: &str) -> Error {
    Error::invalid_arg(format!("model '{}': parameter {PARAMETER}: {what}", spec.model_name))
}

/// Unpacks a tar archive (gzip-compressed unless it ends in `.tar`) into `dir`: entries stay inside it
/// (the `tar` crate refuses `..` and links that lead out), at most [`MAX_ENTRIES`] entries and
/// [`MAX_BYTES`] bytes, no set-user-ID, set-group-ID or sticky bit; then everything is made readable by the
/// workers' user (the server may have unpacked it as root).
fn extract(archive: &Path, dir: &Path) -> std::io::Result<()> {
    let file = std::fs::File::open(archive)?;
    let name = archive.to_string_lossy();
    let reader: Box<dyn Read> = if name.ends_with(".tar") {
        Box::new(file)
    } else if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
        Box::new(flate2::read::GzDecoder::new(file))
    } else {
        return Err(std::io::Error::other("an environment archive ends in .tar.gz, .tgz or .tar"));
    };
    let mut tar = tar::Archive::new(reader.take(MAX_BYTES));
    tar.set_preserve_permissions(false);
    tar.set_unpack_xattrs(false);
    tar.set_overwrite(false);
    let result = (|| {
        for (n, entry) in tar.entries()?.enumerate() {
            if n as u64 >= MAX_ENTRIES {
                return Err(std::io::Error::other(format!("more than {MAX_ENTRIES} entries")));
            }
            entry?.unpack_in(dir)?;
        }
        Ok(())
    })();
    if tar.into_inner().limit() == 0 {
        return Err(std::io::Error::other(format!("larger than {} GiB", MAX_BYTES >> 30)));
    }
    result?;
    open_up(dir)
}

/// Makes `dir` and what it holds readable (directories and executables also searchable/executable) by all.
fn open_up(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_symlink() {
            continue;
        }
        let mode = entry.metadata()?.permissions().mode() & 0o777;
        let more = if kind.is_dir() || mode & 0o111 != 0 { 0o555 } else { 0o444 };
        std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(mode | more))?;
        if kind.is_dir() {
            open_up(&entry.path())?;
        }
    }
    Ok(())
}
